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
    let o = vigil(&["ingest", "--input", "/nonexistent/fleet.bin"], &with_var);
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

/// Object count and bytes of the `.parquet` objects under the root `sub`.
fn parquet_objects(s3: &S3, sub: &str) -> (usize, u64) {
    let root = s3.root(sub);
    let all = root.as_object().unwrap().list("").unwrap();
    let p: Vec<_> = all
        .iter()
        .filter(|o| o.location.as_ref().ends_with(".parquet"))
        .collect();
    (p.len(), p.iter().map(|o| o.size).sum())
}

/// Local `.parquet` files and bytes under `dir`.
fn parquet_files(dir: &Path) -> (usize, u64) {
    let f: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    let bytes = f
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    (f.len(), bytes)
}

/// Queries whose results must not change when files are compacted: every
/// row of both datasets (CSV, ordered by the unique keys) and aggregates
/// over them.
const SAME_RESULTS: [&str; 4] = [
    "SELECT date, tenant, agent, metric, labels, window_start, window_end, count, min, max, mean, last, last_ts \
     FROM aggregates ORDER BY tenant, agent, metric, labels, window_start",
    "SELECT date, id, status, rule, kind, severity, tenant, agent, metric, labels, value, event_time \
     FROM alerts ORDER BY id, status",
    "SELECT date, metric, count(*) AS windows, sum(count) AS points, min(min) AS lo, max(max) AS hi \
     FROM aggregates GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT date, count(*) AS n FROM alerts GROUP BY 1 ORDER BY 1",
];

fn results(loc: &str, env: &[(&'static str, String)]) -> Vec<String> {
    SAME_RESULTS
        .iter()
        .map(|q| {
            ok(vigil(
                &["sql", "--format", "csv", "--data-dir", loc, q],
                env,
            ))
        })
        .collect()
}

/// Three days of a fleet ingested with small flushes: many small files
/// per date directory (a replay's source, which compaction merges once
/// `compaction.settle` old).
fn small_files(dir: &Path) -> std::path::PathBuf {
    let fleet = dir.join("fleet.bin");
    ok(vigil(
        &[
            "simulate",
            "--agents",
            "12",
            "--hours",
            "60",
            "--seed",
            "11",
            // 2026-11-01T00:00Z
            "--start-ms",
            "1793491200000",
            "--out",
            fleet.to_str().unwrap(),
        ],
        &[],
    ));
    let data = dir.join("data");
    ok(vigil(
        &[
            "ingest",
            "--input",
            fleet.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[("VIGIL_STORAGE__FLUSH_RECORDS", "400".into())],
    ));
    data
}

/// `vigil compact` on `s3://` merges the small objects of each date
/// directory into one, and every query result stays identical (all rows
/// of both datasets compared before and after); a second run changes
/// nothing. Then the state a run interrupted between the output's PUT and
/// the inputs' DELETEs leaves (output and inputs side by side, its lease
/// still there) reads the same, keeps a rerun out while the lease is
/// live, and a rerun after it expired removes the leftovers and changes no
/// result. The same data compacted in a local directory gives the same
/// files (timings printed).
#[test]
fn s3_compaction_keeps_every_query_result_and_an_interrupted_run_is_safe_to_rerun() {
    let Some(s3) = S3::new("compact") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = small_files(dir.path());
    // The ingest's start record (one file of today, which is not settled
    // and never merged) is not what this test counts.
    std::fs::remove_dir_all(data.join("audit")).unwrap();
    let pristine = dir.path().join("pristine");
    std::fs::create_dir_all(&pristine).unwrap();
    for f in files(&data) {
        let to = pristine.join(&f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(data.join(&f), to).unwrap();
    }
    s3.upload(&data, "data");
    let loc = s3.location("data");
    let mut env = s3.env();
    env.push(("VIGIL_COMPACTION__SETTLE", "0s".into()));
    env.push(("VIGIL_WORKER__STATE_DIR", s3.location("state")));
    let before = results(&loc, &env);
    let (files_before, bytes_before) = parquet_objects(&s3, "data");
    assert!(files_before >= 20, "{files_before} small files");
    // Dataset and date directories holding Parquet: every dataset the
    // fleet fills (aggregates, alerts, status reports, security events).
    let dirs: std::collections::BTreeSet<String> = s3
        .root("data")
        .as_object()
        .unwrap()
        .list("")
        .unwrap()
        .iter()
        .map(|o| o.location.as_ref().to_owned())
        .filter(|k| k.ends_with(".parquet"))
        .filter_map(|k| k.rsplit_once('/').map(|(d, _)| d.to_owned()))
        .collect();
    assert!(dirs.len() >= 6, "{dirs:?}");

    let t = Instant::now();
    let out = ok(vigil(&["compact", "--data-dir", &loc], &env));
    let s3_secs = t.elapsed().as_secs_f64();
    assert!(out.contains("compacted aggregates"), "{out}");
    let (files_after, bytes_after) = parquet_objects(&s3, "data");
    // One file per dataset and date.
    assert!(
        files_after == dirs.len() && files_after < files_before,
        "{files_after} files in {dirs:?}"
    );
    assert_eq!(results(&loc, &env), before, "a query result changed");
    let again = ok(vigil(&["compact", "--data-dir", &loc], &env));
    assert!(again.contains("merged 0 files"), "{again}");
    let compacted_keys = s3.root("data").as_object().unwrap().list("").unwrap().len();

    // The same locally: same file count, timing for comparison.
    let t = Instant::now();
    let local_out = ok(vigil(
        &["compact", "--data-dir", data.to_str().unwrap()],
        &[
            ("VIGIL_COMPACTION__SETTLE", "0s".into()),
            (
                "VIGIL_WORKER__STATE_DIR",
                dir.path().join("state").display().to_string(),
            ),
        ],
    ));
    let local_secs = t.elapsed().as_secs_f64();
    let (local_files, local_bytes) = parquet_files(&data);
    assert_eq!(local_files, files_after, "{local_out}");
    eprintln!(
        "compaction: {files_before} files, {bytes_before} bytes -> {files_after} files, \
         {bytes_after} bytes on s3 in {s3_secs:.2}s; locally {local_files} files, {local_bytes} \
         bytes in {local_secs:.2}s"
    );

    // Interrupted between the PUT and the DELETEs: every input is back
    // next to its output, and the crashed run's lease is still there.
    // dataset/date=…/part-….parquet, from a local path or an object key.
    let keys = |names: Vec<String>| -> std::collections::BTreeSet<String> {
        names
            .into_iter()
            .filter(|k| k.ends_with(".parquet"))
            .map(|k| {
                let parts: Vec<&str> = k.rsplitn(4, '/').collect();
                parts[..3]
                    .iter()
                    .rev()
                    .copied()
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect()
    };
    let compacted = keys(
        s3.root("data")
            .as_object()
            .unwrap()
            .list("")
            .unwrap()
            .iter()
            .map(|o| o.location.as_ref().to_owned())
            .collect(),
    );
    s3.upload(&pristine, "data");
    // A date directory that held one file keeps it under its name.
    let inputs = keys(files(&pristine));
    assert_eq!(inputs.len(), files_before);
    assert_eq!(
        parquet_objects(&s3, "data").0,
        inputs.union(&compacted).count()
    );
    let lease = |expires_ms: i64| {
        serde_json::to_vec(&serde_json::json!({"owner": "crashed", "expires_ms": expires_ms}))
            .unwrap()
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let root = s3.root("data");
    root.write_file(".vigil-compact.lock", &lease(now_ms + 600_000), false)
        .unwrap();
    assert_eq!(
        results(&loc, &env),
        before,
        "mid-compaction state, reader rule"
    );
    let held = vigil(&["compact", "--data-dir", &loc], &env);
    assert!(!held.status.success());
    assert!(
        text(&held.stderr).contains("another vigil compact"),
        "{}",
        text(&held.stderr)
    );
    root.write_file(".vigil-compact.lock", &lease(now_ms - 1), false)
        .unwrap();
    let rerun = ok(vigil(&["compact", "--data-dir", &loc], &env));
    assert!(
        rerun.contains(&format!(
            "{} leftovers of an interrupted run removed",
            inputs.difference(&compacted).count()
        )),
        "{rerun}"
    );
    assert_eq!(parquet_objects(&s3, "data"), (files_after, bytes_after));
    assert_eq!(
        s3.root("data").as_object().unwrap().list("").unwrap().len(),
        compacted_keys,
        "the lease is gone, nothing else left"
    );
    assert_eq!(results(&loc, &env), before, "after the rerun");
}

/// `vigil retention` on `s3://` removes exactly the date partitions past
/// the limit: with `aggregates = "3d"` and `alerts = "3d"`, the boundary
/// day (today − 4, whose end is more than 3 days ago) and the one before
/// go, the one after (today − 3) stays;
/// the dry run lists the same and removes nothing; what was removed is
/// printed; a partition left half-removed by an interrupted run (its
/// marker still in it) reads as empty and is finished by the next run.
#[test]
fn s3_retention_removes_exactly_the_partitions_past_the_limit() {
    let Some(s3) = S3::new("retention") else {
        return;
    };
    let day_ms = 86_400_000i64;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        / day_ms;
    let date = |d: i64| {
        chrono::DateTime::from_timestamp_millis(d * day_ms)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    let root = s3.root("data");
    // Three files per partition from today − 6 to today.
    for ds in ["aggregates", "alerts"] {
        for d in today - 6..=today {
            for k in 0..3 {
                root.write_file(
                    &format!(
                        "{ds}/date={}/part-t-p00000-{:020}-{:020}.parquet",
                        date(d),
                        k * 10,
                        k * 10 + 9
                    ),
                    b"not read by retention",
                    false,
                )
                .unwrap();
            }
        }
    }
    // A recent dead letter stays.
    root.write_file(
        "dlq/dlq-t-p00000-00000000000000000000-00000000000000000009.jsonl",
        b"{}\n",
        false,
    )
    .unwrap();
    let loc = s3.location("data");
    let mut env = s3.env();
    env.push(("VIGIL_RETENTION__AGGREGATES", "3d".into()));
    env.push(("VIGIL_RETENTION__ALERTS", "3d".into()));
    env.push(("VIGIL_RETENTION__DLQ", "7d".into()));
    let keys = || -> Vec<String> {
        let mut k: Vec<String> = root
            .as_object()
            .unwrap()
            .list("")
            .unwrap()
            .into_iter()
            .map(|o| o.location.to_string())
            .collect();
        k.sort();
        k
    };
    let all = keys();
    let dry = ok(vigil(&["retention", "--dry-run", "--data-dir", &loc], &env));
    assert_eq!(keys(), all, "the dry run removed something");
    // Past the limit: today − 4 (the boundary: its end, today − 3 at
    // 00:00, is at least 3 days ago) and older; today − 3 is kept.
    let gone: Vec<i64> = (today - 6..=today - 4).collect();
    for ds in ["aggregates", "alerts"] {
        for d in &gone {
            assert!(
                dry.contains(&format!("would remove {ds:<10} date={}", date(*d))),
                "{dry}"
            );
        }
        assert!(!dry.contains(&format!("date={}", date(today - 3))), "{dry}");
    }
    assert!(dry.contains("would remove 6 entries (18 files"), "{dry}");

    // A run interrupted in the partition today − 5: its marker is in,
    // one file deleted. Readers skip the whole day.
    let obj = root.as_object().unwrap();
    let half = format!("aggregates/date={}", date(today - 5));
    obj.put(
        &format!("{half}/.vigil-retention"),
        Vec::new(),
        vigil_store::object_store::PutMode::Overwrite,
    )
    .unwrap();
    obj.delete(&format!("{half}/part-t-p00000-{:020}-{:020}.parquet", 0, 9))
        .unwrap();

    let out = ok(vigil(&["retention", "--data-dir", &loc], &env));
    for ds in ["aggregates", "alerts"] {
        for d in &gone {
            assert!(
                out.contains(&format!("removed {ds:<10} date={}", date(*d))),
                "{out}"
            );
        }
    }
    let left = keys();
    for ds in ["aggregates", "alerts"] {
        for d in today - 6..=today {
            let n = left
                .iter()
                .filter(|k| k.starts_with(&format!("{ds}/date={}/", date(d))))
                .count();
            assert_eq!(n, if d <= today - 4 { 0 } else { 3 }, "{ds} {}", date(d));
        }
    }
    assert!(
        left.iter().any(|k| k.starts_with("dlq/")),
        "the recent dead letter is kept"
    );
    let again = ok(vigil(&["retention", "--data-dir", &loc], &env));
    assert!(again.contains("removed 0 entries"), "{again}");
}
