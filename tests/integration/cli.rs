//! The `vigil` command as a user runs it: exit codes, outputs, errors.

use std::process::{Command, Output};

use crate::common::vigil_bin;

fn vigil(args: &[&str]) -> Output {
    Command::new(vigil_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn simulate_ingest_sql_report_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let o = vigil(&[
        "simulate",
        "--agents",
        "8",
        "--hours",
        "1",
        "--out",
        &d("f.bin"),
        "--truth",
        &d("t.json"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d("t.json")).unwrap()).unwrap();
    assert_eq!(truth["agents"].as_array().unwrap().len(), 8);

    let o = vigil(&["ingest", "--input", &d("f.bin"), "--data-dir", &d("data")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("duplicates dropped"), "{}", stdout(&o));

    let o = vigil(&[
        "sql",
        "--data-dir",
        &d("data"),
        "--format",
        "csv",
        "SELECT count(*) AS n FROM aggregates WHERE count > 0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("n"));
    assert!(lines.next().unwrap().parse::<u64>().unwrap() > 1000);

    let o = vigil(&[
        "sql",
        "--data-dir",
        &d("data"),
        "SELECT nope FROM aggregates",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));

    let o = vigil(&["report", "--data-dir", &d("data")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).is_empty());
}

/// `simulate --out -` and `ingest --input -` stream through a pipe with
/// the same bytes and the same result as files.
#[test]
fn simulate_and_ingest_stream_through_standard_io() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let fleet = ["--agents", "6", "--hours", "0.5", "--seed", "7"];
    let o = vigil(&[&["simulate", "--out", &d("f.bin")][..], &fleet[..]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let piped = vigil(&[&["simulate", "--out", "-"][..], &fleet[..]].concat());
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert_eq!(piped.stdout, std::fs::read(d("f.bin")).unwrap());
    assert!(
        stderr(&piped).contains("standard output"),
        "{}",
        stderr(&piped)
    );

    let from_file = vigil(&["ingest", "--input", &d("f.bin"), "--data-dir", &d("a")]);
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    let mut child = Command::new(vigil_bin())
        .args(["ingest", "--input", "-", "--data-dir", &d("b")])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&piped.stdout)
        .unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
    let points = |o: &Output| {
        stdout(o)
            .lines()
            .find(|l| l.starts_with("points"))
            .map(|l| l.split("accepted").next().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(points(&from_file), points(&from_stdin));
    assert!(
        stdout(&from_stdin).contains("peak RSS"),
        "{}",
        stdout(&from_stdin)
    );
    let count = |dir: &str| {
        let o = vigil(&[
            "sql",
            "--data-dir",
            dir,
            "--format",
            "csv",
            "SELECT count(*) AS n, sum(count) AS p FROM aggregates",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(count(&d("a")), count(&d("b")));
}

#[test]
fn truncated_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.bin");
    // A length prefix of 100 followed by 3 bytes.
    std::fs::write(&f, [100u8, 1, 2, 3]).unwrap();
    let o = vigil(&[
        "ingest",
        "--input",
        &f.display().to_string(),
        "--data-dir",
        &dir.path().join("d").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.bin") && stderr(&o).contains("record 0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_rules_file_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad-rules.toml");
    std::fs::write(
        &f,
        "[[threshold]]\nname = \"cpu\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\nop = \">\"\nvalue = 90\nfor = 0\nseverity = \"warning\"\n",
    )
    .unwrap();
    let o = vigil(&["rules", "check", &f.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("bad-rules.toml:7:") && e.contains("for"), "{e}");

    let o = vigil(&["rules", "default"]);
    assert!(o.status.success());
    let f2 = dir.path().join("default.toml");
    std::fs::write(&f2, o.stdout).unwrap();
    let o = vigil(&["rules", "check", &f2.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_config_is_reported_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vigil.toml");
    std::fs::write(&f, "[pipeline]\nwindow = \"0s\"\ndedup_window = 10\n").unwrap();
    let o = vigil(&[
        "--config",
        &f.display().to_string(),
        "ingest",
        "--input",
        "/nonexistent.bin",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("pipeline.window") && e.contains("pipeline.dedup_window"),
        "{e}"
    );
    let o = Command::new(vigil_bin())
        .args(["ingest", "--input", "/nonexistent.bin"])
        .env("VIGIL_PIPELINE__WINDOW", "soon")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).to_lowercase().contains("pipeline.window"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn demo_runs_end_to_end_and_guards_foreign_directories() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo").display().to_string();
    let o = vigil(&[
        "demo",
        "--agents",
        "30",
        "--hours",
        "2",
        "--quiet",
        "--data-dir",
        &data,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("== pipeline ==") && out.contains("ground truth"),
        "{out}"
    );
    // A second run clears its own earlier output.
    let o = vigil(&[
        "demo",
        "--agents",
        "10",
        "--hours",
        "1",
        "--quiet",
        "--data-dir",
        &data,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // It refuses to clear a directory it did not create.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("precious.txt"), "keep").unwrap();
    let o = vigil(&[
        "demo",
        "--agents",
        "5",
        "--hours",
        "1",
        "--quiet",
        "--data-dir",
        &foreign.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(foreign.join("precious.txt").exists());
}

/// Regression: librdkafka's configuration errors quote the refused value
/// and `vigil run` printed the whole error chain, so a secret
/// (`sasl.oauthbearer.client.secret`, unsupported in this build) reached
/// stderr. For every secret property, a marker value read from a secret
/// file appears nowhere in the output of a `vigil run` that fails to
/// create its clients, with debug logs on.
#[test]
fn run_prints_no_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    for name in vigil_kafka::config::SECRET_PROPERTIES {
        let marker = format!("SECRET-MARKER-{name}");
        let secret = dir.path().join(format!("{name}.secret"));
        std::fs::write(&secret, format!("{marker}\n")).unwrap();
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
[kafka]
brokers = "127.0.0.1:1"
[kafka.properties]
"security.protocol" = "ssl"
"ssl.ca.location" = "/nonexistent/vigil-ca.pem"
"debug" = "conf,security"
[kafka.secret_files]
"{name}" = "{secret}"
[worker]
state_dir = "{state}"
metrics_listen = ""
"#,
                data = dir.path().join("data").display(),
                state = dir.path().join("state").display(),
                secret = secret.display(),
            ),
        )
        .unwrap();
        let o = Command::new(vigil_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(err.contains("error: "), "{name}: {err}");
        assert!(
            !out.contains(&marker) && !err.contains(&marker),
            "{name}: the secret was printed:\n{out}\n{err}"
        );
    }
}
