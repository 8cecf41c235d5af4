//! The `vigil` command. Everything lives in the library; see `cli.rs`.

/// Counts allocated bytes for `vigil bench` (one relaxed atomic add per
/// allocation; the hot path does not allocate per point).
#[global_allocator]
static ALLOC: vigil::alloc::Counting = vigil::alloc::Counting;

fn main() -> std::process::ExitCode {
    vigil::cli::main()
}
