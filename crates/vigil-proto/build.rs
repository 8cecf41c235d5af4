//! Compiles `proto/vigil/v1/*.proto` and the vendored OpenTelemetry OTLP
//! metrics definitions (`proto/opentelemetry/`) with protox (pure Rust, no
//! system `protoc`) and generates prost types.

/// The OTLP files Vigil reads (see `proto/opentelemetry/README.md`).
const OTLP: [&str; 4] = [
    "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
    "opentelemetry/proto/metrics/v1/metrics.proto",
    "opentelemetry/proto/common/v1/common.proto",
    "opentelemetry/proto/resource/v1/resource.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut files = vec![root.join("vigil/v1/telemetry.proto")];
    files.extend(OTLP.iter().map(|f| root.join(f)));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    // The OTLP files' comments hold ASCII diagrams and indented lists
    // that rustdoc would run as doc-tests and clippy rejects: the types
    // are documented by the vendored .proto files instead.
    prost_build::Config::new()
        .disable_comments([".opentelemetry"])
        .compile_fds(fds)?;
    Ok(())
}
