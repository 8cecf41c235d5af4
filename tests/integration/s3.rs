//! Object storage against a real S3-compatible server: moto's server mode,
//! installed and started on 127.0.0.1 by `scripts/test.sh`, which creates
//! the bucket and sets `VIGIL_TEST_S3_ENDPOINT` and `VIGIL_TEST_S3_BUCKET`.
//! Each test works under a prefix of its own.
//!
//! `vigil` runs as a child process with the standard `AWS_*` variables;
//! the secret key and session token are marker values that no output may
//! contain. The tests' own uploads and downloads use a client configured
//! in code (no environment), through `vigil_store::Root`.
//!
//! The worker's run on `s3://` (restart from a checkpoint in the store) is
//! in `kafka.rs`, next to the other worker tests.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Instant;

use vigil_store::object_store::aws::AmazonS3Builder;
use vigil_store::Root;

use crate::common::vigil_bin;

/// The secret access key the tests give: never in any output.
pub const SECRET_MARKER: &str = "vigil-secret-marker-7f3a1c";
/// The session token the tests give: never in any output.
pub const TOKEN_MARKER: &str = "vigil-token-marker-91c2e8";

/// The test server and a prefix of this test's own.
pub struct S3 {
    endpoint: String,
    bucket: String,
    prefix: String,
}

impl S3 {
    /// The server, or `None` (test skipped) when there is none and none
    /// is required (`VIGIL_REQUIRE_S3=1`, set by scripts/test.sh).
    pub fn new(name: &str) -> Option<S3> {
        let endpoint = std::env::var("VIGIL_TEST_S3_ENDPOINT").unwrap_or_default();
        let bucket = std::env::var("VIGIL_TEST_S3_BUCKET").unwrap_or_default();
        if endpoint.is_empty() || bucket.is_empty() {
            assert!(
                std::env::var("VIGIL_REQUIRE_S3").as_deref() != Ok("1"),
                "VIGIL_REQUIRE_S3=1 but VIGIL_TEST_S3_ENDPOINT or VIGIL_TEST_S3_BUCKET is not set"
            );
            eprintln!("skipped: no S3 test server; scripts/test.sh starts one");
            return None;
        }
        let prefix = crate::common::unique_name(name);
        Some(S3 {
            endpoint,
            bucket,
            prefix,
        })
    }

    /// `s3://bucket/<test prefix>/sub`.
    pub fn location(&self, sub: &str) -> String {
        format!("s3://{}/{}/{sub}", self.bucket, self.prefix)
    }

    /// The environment a `vigil` process reaches the server with.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "vigil-test".into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_MARKER.into()),
            ("AWS_SESSION_TOKEN", TOKEN_MARKER.into()),
        ]
    }

    /// The root `sub` under the test prefix, through a client configured
    /// here (not from the environment).
    pub fn root(&self, sub: &str) -> Root {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(&self.bucket)
            .with_access_key_id("vigil-test")
            .with_secret_access_key(SECRET_MARKER)
            .build()
            .unwrap();
        Root::s3_with_store(
            &self.bucket,
            &format!("{}/{sub}", self.prefix),
            Arc::new(store),
        )
    }

    /// Copies every file under `local` to the root `sub`, same layout.
    pub fn upload(&self, local: &Path, sub: &str) -> usize {
        let root = self.root(sub);
        let mut n = 0;
        for rel in files(local) {
            let bytes = std::fs::read(local.join(&rel)).unwrap();
            root.write_file(&rel, &bytes, false).unwrap();
            n += 1;
        }
        n
    }

    /// Copies every object under the root `sub` to `local`, same layout.
    pub fn download(&self, sub: &str, local: &Path) -> Vec<String> {
        let root = self.root(sub);
        let obj = root.as_object().unwrap();
        let mut keys: Vec<String> = obj
            .list("")
            .unwrap()
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        keys.sort();
        for k in &keys {
            let bytes = obj.get(k).unwrap().unwrap();
            let path = local.join(k);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, &bytes).unwrap();
        }
        keys
    }
}

/// Files under `dir`, as `/`-separated relative paths, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Runs `vigil args` with `env` (and nothing of the test's own
/// environment but PATH).
fn vigil(args: &[&str], env: &[(&'static str, String)]) -> Output {
    let mut c = Command::new(vigil_bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Stdout of a successful run.
fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_no_secret(&o);
    text(&o.stdout)
}

/// Neither marker in stdout or stderr.
fn assert_no_secret(o: &Output) {
    for out in [&o.stdout, &o.stderr] {
        let t = text(out);
        assert!(
            !t.contains(SECRET_MARKER) && !t.contains(TOKEN_MARKER),
            "a credential leaked:\n{t}"
        );
    }
}

#[test]
fn s3_sql_report_and_export_read_an_object_store_root_like_a_directory() {
    let Some(s3) = S3::new("read") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    ok(vigil(
        &[
            "demo",
            "--quiet",
            "--agents",
            "16",
            "--tenants",
            "4",
            "--hours",
            "3",
            "--seed",
            "7",
            "--data-dir",
            d,
        ],
        &[],
    ));
    let count = "SELECT count(*) AS n FROM aggregates";
    let before = ok(vigil(
        &["sql", "--format", "csv", "--data-dir", d, count],
        &[],
    ));
    // The reader rule on the store: a second copy of a file under a name
    // whose range lies inside the original's is hidden (as a compaction
    // input is once the compacted file is published), there as here.
    let part = files(&data)
        .into_iter()
        .find(|f| f.starts_with("aggregates/") && f.ends_with(".parquet"))
        .unwrap();
    let (date_dir, name) = part.rsplit_once('/').unwrap();
    let inner = name
        .rsplitn(3, '-')
        .nth(2)
        .map(|head| format!("{head}-{:020}-{:020}.parquet", 1, 2))
        .unwrap();
    std::fs::copy(data.join(&part), data.join(date_dir).join(&inner)).unwrap();
    let uploaded = s3.upload(&data, "data");
    assert!(uploaded >= 3, "{uploaded} files");
    let loc = s3.location("data");
    let env = s3.env();
    let n_s3 = ok(vigil(
        &["sql", "--format", "csv", "--data-dir", &loc, count],
        &env,
    ));
    assert_eq!(n_s3, before, "the covered copy is not read twice");

    let queries = [
        "SELECT date, tenant, metric, count(*) AS windows, sum(count) AS points, min(min) AS lo, max(max) AS hi \
         FROM aggregates GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        "SELECT date, rule, status, count(*) AS events FROM alerts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        "SELECT * FROM aggregates WHERE date = DATE '2026-11-02' ORDER BY tenant, agent, metric, labels, window_start LIMIT 50",
    ];
    for q in queries {
        let local = ok(vigil(&["sql", "--format", "csv", "--data-dir", d, q], &[]));
        let remote = ok(vigil(
            &["sql", "--format", "csv", "--data-dir", &loc, q],
            &env,
        ));
        assert!(local.lines().count() > 1, "{q}: no rows");
        assert_eq!(remote, local, "{q}");
    }
    // A parameter and VIGIL_DATA_DIR instead of the flag.
    let mut with_var = env.clone();
    with_var.push(("VIGIL_DATA_DIR", loc.clone()));
    let q = "SELECT count(*) AS n FROM alerts WHERE tenant = $t";
    let local = ok(vigil(
        &[
            "sql",
            "--format",
            "csv",
            "--param",
            "t=tenant-01",
            "--data-dir",
            d,
            q,
        ],
        &[],
    ));
    let remote = ok(vigil(
        &["sql", "--format", "csv", "--param", "t=tenant-01", q],
        &with_var,
    ));
    assert_eq!(remote, local);

    let mut timings = Vec::new();
    for kind in ["health", "alerts", "capacity"] {
        let t = Instant::now();
        let local = ok(vigil(
            &["report", kind, "--format", "csv", "--data-dir", d],
            &[],
        ));
        let local_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let remote = ok(vigil(
            &["report", kind, "--format", "csv", "--data-dir", &loc],
            &env,
        ));
        let remote_s = t.elapsed().as_secs_f64();
        assert!(local.lines().count() > 3, "{kind}: {local}");
        assert_eq!(remote, local, "{kind} report");
        timings.push(format!("{kind} {local_s:.2}s local, {remote_s:.2}s s3"));
    }
    eprintln!("vigil report over {uploaded} files: {}", timings.join("; "));

    let local = ok(vigil(&["export", "--data-dir", d], &[]));
    let remote = ok(vigil(&["export", "--data-dir", &loc], &env));
    assert!(!local.is_empty());
    assert_eq!(remote, local, "vigil export");

    // A prefix with nothing under it is empty tables, as a new directory.
    let empty = ok(vigil(
        &[
            "sql",
            "--format",
            "csv",
            "--data-dir",
            &s3.location("nothing"),
            "SELECT (SELECT count(*) FROM aggregates) + (SELECT count(*) FROM alerts) AS n",
        ],
        &env,
    ));
    assert_eq!(empty.lines().nth(1), Some("0"), "{empty}");
}

#[test]
fn s3_credentials_never_appear_in_logs_or_errors() {
    let Some(s3) = S3::new("secrets") else {
        return;
    };
    let mut env = s3.env();
    env.push(("RUST_LOG", "trace".into()));
    // A bucket that does not exist: the error names it, not the keys.
    let o = vigil(
        &[
            "sql",
            "--data-dir",
            "s3://vigil-no-such-bucket/x",
            "SELECT count(*) FROM aggregates",
        ],
        &env,
    );
    assert!(!o.status.success());
    assert_no_secret(&o);
    let err = text(&o.stderr);
    assert!(err.contains("NoSuchBucket"), "{err}");
    // A successful query, every request traced.
    let o = vigil(
        &[
            "sql",
            "--data-dir",
            &s3.location("empty"),
            "SELECT count(*) FROM alerts",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_no_secret(&o);
    assert!(
        text(&o.stderr).contains("starting new connection"),
        "trace logging of the HTTP client was on"
    );
    // Credentials in the URL are refused, and not echoed.
    let o = vigil(
        &[
            "sql",
            "--data-dir",
            &format!("s3://vigil-test:{SECRET_MARKER}@bucket/x"),
            "SELECT 1",
        ],
        &env,
    );
    assert!(!o.status.success());
    assert_no_secret(&o);
    assert!(
        text(&o.stderr).contains("environment"),
        "{}",
        text(&o.stderr)
    );
    // Nor from a config file or a VIGIL_ variable.
    let cfg = tempfile::tempdir().unwrap();
    let file = cfg.path().join("vigil.toml");
    std::fs::write(
        &file,
        format!("data_dir = \"s3://vigil-test:{SECRET_MARKER}@bucket/x\"\n"),
    )
    .unwrap();
    let o = vigil(
        &["--config", file.to_str().unwrap(), "sql", "SELECT 1"],
        &env,
    );
    assert!(!o.status.success());
    assert_no_secret(&o);
    let mut with_var = env.clone();
    with_var.push((
        "VIGIL_WORKER__STATE_DIR",
        format!("s3://vigil-test:{SECRET_MARKER}@bucket/x"),
    ));
    let o = vigil(&["retention", "--dry-run"], &with_var);
    assert!(!o.status.success());
    assert_no_secret(&o);
    // A command that works on local directories says so.
    let mut with_var = env.clone();
    with_var.push(("VIGIL_DATA_DIR", s3.location("data")));
    let o = vigil(&["retention", "--dry-run"], &with_var);
    assert!(!o.status.success());
    assert_no_secret(&o);
    assert!(
        text(&o.stderr).contains("works on a local directory only"),
        "{}",
        text(&o.stderr)
    );
}

/// A checkpoint larger than a part goes up as a multipart upload (never
/// held whole in memory) and reads back whole; a failed one leaves the
/// last checkpoint in place.
#[test]
fn s3_a_large_checkpoint_goes_up_in_parts_and_a_failed_one_changes_nothing() {
    let Some(s3) = S3::new("ckpt") else {
        return;
    };
    let store = vigil_store::CheckpointStore::at(&s3.root("state"));
    let chunk: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let parts = 2 * vigil_store::location::PART_BYTES / chunk.len() + 3;
    let t = Instant::now();
    let (path, n) = store
        .save_with("rmm.telemetry.v1", 7, |w| {
            for _ in 0..parts {
                w.write_all(&chunk)?;
            }
            Ok(())
        })
        .unwrap();
    let put_s = t.elapsed().as_secs_f64();
    assert_eq!(n as usize, parts * chunk.len());
    assert!(path
        .to_string_lossy()
        .ends_with("/state/rmm.telemetry.v1/p00007.ckpt"));
    let t = Instant::now();
    let back = store.load("rmm.telemetry.v1", 7).unwrap().unwrap();
    eprintln!(
        "a {} MiB checkpoint: {put_s:.2}s up in parts, {:.2}s down",
        back.len() >> 20,
        t.elapsed().as_secs_f64()
    );
    assert_eq!(back.len(), parts * chunk.len());
    assert!(back.chunks(chunk.len()).all(|c| c == &chunk[..]));
    let failed = store.save_with("rmm.telemetry.v1", 7, |w| {
        for _ in 0..parts {
            w.write_all(b"new")?;
            w.write_all(&chunk)?;
        }
        Err(std::io::Error::other("encoder failed"))
    });
    assert!(failed.is_err());
    assert_eq!(store.load("rmm.telemetry.v1", 7).unwrap().unwrap(), back);
}
