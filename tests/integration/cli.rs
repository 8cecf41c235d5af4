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

/// Simulates 4 agents for 72 h from `start_ms` into the file `out`.
fn simulate_three_days(start_ms: &str, out: &str) {
    let o = vigil(&[
        "simulate",
        "--agents",
        "4",
        "--hours",
        "72",
        "--start-ms",
        start_ms,
        "--out",
        out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
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
    // Bad SQL: one clear error line with the position, no backtrace.
    let o = vigil(&["sql", "--data-dir", &d("data"), "SELEC 1"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.starts_with("error: query failed: SQL error"), "{e}");
    assert!(
        e.contains("SELEC") && !e.contains("panicked") && !e.contains("backtrace"),
        "{e}"
    );
    // Named parameters: typed by the query, a literal whatever they hold.
    let count = |params: &[&str]| {
        let dd = d("data");
        let mut args = vec!["sql", "--data-dir", &dd, "--format", "csv"];
        args.extend_from_slice(params);
        args.push("SELECT count(*) AS n FROM aggregates WHERE metric = $m AND mean >= $min");
        let o = vigil(&args);
        (o.status.code(), stdout(&o), stderr(&o))
    };
    let (code, all, _) = count(&["--param", "m=cpu_pct", "--param", "min=0"]);
    assert_eq!(code, Some(0));
    let (_, some, _) = count(&["--param", "m=cpu_pct", "--param", "$min=50"]);
    let n = |out: &str| out.lines().nth(1).unwrap().parse::<u64>().unwrap();
    assert!(n(&all) > n(&some) && n(&some) > 0, "{all} {some}");
    let (_, none, _) = count(&["--param", "m=cpu_pct' OR '1'='1", "--param", "min=0"]);
    assert_eq!(n(&none), 0);
    let (code, _, e) = count(&["--param", "m=cpu_pct"]);
    assert_eq!(code, Some(1));
    assert!(e.contains("parameter $min: no value given"), "{e}");
    let (code, _, e) = count(&["--param", "m=cpu_pct", "--param", "min=high"]);
    assert_eq!(code, Some(1));
    assert!(e.contains("\"high\" is not a Float64"), "{e}");
    let (code, _, e) = count(&["--param", "1x=2"]);
    assert_eq!(code, Some(2), "a usage error");
    assert!(e.contains("parameter name"), "{e}");
    // The plan, and what running it did.
    let o = vigil(&[
        "sql",
        "--data-dir",
        &d("data"),
        "--explain",
        "SELECT count(*) FROM aggregates WHERE date = '2026-11-02'",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("physical_plan"), "{}", stdout(&o));
    let o = vigil(&[
        "sql",
        "--data-dir",
        &d("data"),
        "--analyze",
        "--param",
        "m=mem_pct",
        "SELECT avg(mean) FROM aggregates WHERE metric = $m",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("output_rows="), "{}", stdout(&o));

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
fn truncated_input_is_a_dead_letter_and_a_corrupt_prefix_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.bin");
    let data = dir.path().join("d");
    let ingest = || {
        vigil(&[
            "ingest",
            "--input",
            &f.display().to_string(),
            "--data-dir",
            &data.display().to_string(),
        ])
    };
    // A length prefix of 100 followed by 3 bytes: the input ends inside
    // the record, which becomes a dead letter.
    std::fs::write(&f, [100u8, 1, 2, 3]).unwrap();
    let o = ingest();
    assert!(o.status.success(), "{}", stderr(&o));
    let letters = crate::common::dead_letters(&data);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let l = &letters[0];
    assert_eq!(l["reason"], "decode");
    assert_eq!(l["offset"], 0);
    assert_eq!(l["original_bytes"], 3);
    assert_eq!(l["digest"], vigil_store::digest(&[1, 2, 3]));
    assert!(
        l["detail"]
            .as_str()
            .unwrap()
            .contains("ends after 3 of its 100 bytes"),
        "{l}"
    );
    // A length prefix that never ends: no record boundary after it.
    std::fs::write(&f, [0xffu8; 12]).unwrap();
    let o = ingest();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.bin") && stderr(&o).contains("record 0"),
        "{}",
        stderr(&o)
    );
}

/// Issue 18 item 9: a record whose length prefix is over the reader's
/// limit stopped the whole ingest with nothing written. It is now skipped
/// (read through, never held) to a `too_large` dead letter, and the
/// records before and after it are ingested as without it.
#[test]
fn ingest_skips_a_record_over_the_reader_limit_and_keeps_the_records_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let o = vigil(&[
        "simulate",
        "--agents",
        "4",
        "--hours",
        "1",
        "--out",
        &d("good.bin"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let good = std::fs::read(d("good.bin")).unwrap();
    let records: Vec<&[u8]> = vigil_sim::read_delimited_slice(&good)
        .map(|r| r.unwrap())
        .collect();
    let half = records.len() / 2;
    let over = vigil_sim::MAX_DELIMITED_RECORD + 1;
    {
        use std::io::{Read as _, Write as _};
        let mut f = std::io::BufWriter::new(std::fs::File::create(d("bad.bin")).unwrap());
        for r in &records[..half] {
            vigil_sim::write_delimited(&mut f, r).unwrap();
        }
        let mut prefix = Vec::new();
        prost::encoding::encode_varint(over, &mut prefix);
        f.write_all(&prefix).unwrap();
        std::io::copy(&mut std::io::repeat(7).take(over), &mut f).unwrap();
        for r in &records[half..] {
            vigil_sim::write_delimited(&mut f, r).unwrap();
        }
    }
    for name in ["good", "bad"] {
        let o = vigil(&[
            "ingest",
            "--input",
            &d(&format!("{name}.bin")),
            "--data-dir",
            &d(name),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
    }
    let rows = |dir: &str| -> usize {
        crate::common::sql(std::path::Path::new(&d(dir)), "SELECT * FROM aggregates")
            .iter()
            .map(|b| b.num_rows())
            .sum()
    };
    assert!(rows("good") > 100);
    assert_eq!(rows("good"), rows("bad"));
    let (good_letters, bad_letters) = (
        crate::common::dead_letters(std::path::Path::new(&d("good"))),
        crate::common::dead_letters(std::path::Path::new(&d("bad"))),
    );
    assert_eq!(bad_letters.len(), good_letters.len() + 1);
    let skipped: Vec<_> = bad_letters
        .iter()
        .filter(|l| l["reason"] == "too_large" && l["original_bytes"] == over)
        .collect();
    assert_eq!(skipped.len(), 1);
    let l = skipped[0];
    assert_eq!(l["truncated"], true);
    assert_eq!(l["offset"], half);
    assert_eq!(l["original_bytes"], over);
    // The input file holds the record: no copy of it.
    assert_eq!(l["full_path"], serde_json::Value::Null);
    assert_eq!(
        l["head"].as_str().unwrap().len(),
        vigil_store::bound::HEAD_BYTES / 3 * 4 + 4
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
    // Every family is counted, the invalid-input rule too.
    let summary = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        summary.contains(" 1 offline, 1 invalid_input, "),
        "{summary}"
    );
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

/// `vigil retention` on real output: three days of aggregates and alerts
/// (a few points fall on the days around them: clock skew), a 4-day limit
/// on aggregates only. The dry run lists the days past the limit and
/// removes nothing; the real run removes exactly those directories, and
/// `vigil sql` no longer sees them.
#[test]
fn retention_removes_only_days_past_the_limit_and_dry_run_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    const DAY_MS: i64 = 86_400_000;
    let today = chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS);
    let date = |day: i64| {
        chrono::DateTime::from_timestamp(day * 86_400, 0)
            .unwrap()
            .format("%Y-%m-%d")
            .to_string()
    };
    // Days today-5, today-4 and today-3. With a 4-day limit, a day goes
    // once its end (next midnight) is 4 days old: today-5 and before.
    let start = ((today - 5) * DAY_MS).to_string();
    let last_expired = date(today - 5);
    simulate_three_days(&start, &d("f.bin"));
    let o = vigil(&["ingest", "--input", &d("f.bin"), "--data-dir", &d("data")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dates = |table: &str| {
        let o = vigil(&[
            "sql",
            "--data-dir",
            &d("data"),
            "--format",
            "csv",
            &format!("SELECT DISTINCT CAST(date AS VARCHAR) AS d FROM {table} ORDER BY d"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let before = dates("aggregates");
    let (expired, kept): (Vec<String>, Vec<String>) =
        before.iter().cloned().partition(|d| *d <= last_expired);
    assert!(
        !expired.is_empty() && kept.len() >= 2,
        "{before:?} around {last_expired}"
    );
    let alerts_before = dates("alerts");
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[retention]\naggregates = \"4d\"\n").unwrap();
    let retention = |extra: &[&str]| {
        let data = d("data");
        let mut args = vec![
            "--config",
            config.to_str().unwrap(),
            "retention",
            "--data-dir",
            &data,
        ];
        args.extend_from_slice(extra);
        let o = vigil(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let out = retention(&["--dry-run"]);
    for day in &expired {
        assert!(
            out.contains(&format!("would remove aggregates date={day}")),
            "{out}"
        );
    }
    assert!(
        out.contains(&format!("would remove {} entries", expired.len())),
        "{out}"
    );
    assert_eq!(dates("aggregates"), before, "the dry run removed something");
    let out = retention(&[]);
    for day in &expired {
        assert!(
            out.contains(&format!("removed aggregates date={day}")),
            "{out}"
        );
        assert!(!dir
            .path()
            .join("data/aggregates")
            .join(format!("date={day}"))
            .exists());
    }
    assert!(out.contains("alerts forever"), "{out}");
    assert_eq!(dates("aggregates"), kept);
    assert_eq!(dates("alerts"), alerts_before, "alerts have no limit");
    // Nothing left to do.
    assert!(retention(&[]).contains("removed 0 entries"));

    // A limit under a day is refused, naming the key.
    std::fs::write(&config, "[retention]\ndlq = \"12h\"\n").unwrap();
    let o = vigil(&["--config", config.to_str().unwrap(), "retention"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("retention.dlq"), "{}", stderr(&o));
}

/// `vigil compact` on real output (a replay cut into many small flushes
/// over three past days): every query result is the same afterwards
/// (aggregates, the report, a full sorted dump of the alerts), the files
/// of each date shrink to one per dataset, a second run does nothing,
/// `--date` limits it to one day, and the metrics file counts what it did.
#[test]
fn compact_merges_small_files_without_changing_any_query_result() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    const DAY_MS: i64 = 86_400_000;
    let today = chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS);
    let start = ((today - 4) * DAY_MS).to_string();
    simulate_three_days(&start, &d("f.bin"));
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        "[storage]\nflush_records = 300\n[compaction]\nmin_files = 2\nsettle = \"0s\"\n",
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let o = vigil(&[
        "--config",
        cfg,
        "ingest",
        "--input",
        &d("f.bin"),
        "--data-dir",
        &d("data"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files = |dataset: &str| -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> =
            std::fs::read_dir(dir.path().join("data").join(dataset))
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    let n = std::fs::read_dir(&p)
                        .unwrap()
                        .filter(|f| {
                            f.as_ref()
                                .unwrap()
                                .file_name()
                                .to_string_lossy()
                                .ends_with(".parquet")
                        })
                        .count();
                    (p.file_name().unwrap().to_string_lossy().into_owned(), n)
                })
                .collect();
        out.sort();
        out
    };
    // Exact results only: a float sum's last bits depend on the order
    // DataFusion adds the values in, which follows the file layout.
    let queries = [
        "SELECT CAST(date AS VARCHAR) AS d, count(*), sum(count), min(min), max(max), \
         count(DISTINCT agent) FROM aggregates GROUP BY date ORDER BY d",
        "SELECT * FROM aggregates ORDER BY tenant, agent, metric, labels, window_start",
        "SELECT * FROM alerts ORDER BY id, status",
        "SELECT count(*) FROM (SELECT DISTINCT tenant, agent, metric, labels, window_start \
         FROM aggregates)",
    ];
    let results = || -> Vec<String> {
        let mut out: Vec<String> = queries
            .iter()
            .map(|q| {
                let o = vigil(&["sql", "--data-dir", &d("data"), "--format", "csv", q]);
                assert!(o.status.success(), "{}", stderr(&o));
                stdout(&o)
            })
            .collect();
        let o = vigil(&["report", "--data-dir", &d("data")]);
        assert!(o.status.success(), "{}", stderr(&o));
        out.push(stdout(&o));
        out
    };
    let before = results();
    let agg_before = files("aggregates");
    // A day around the three (clock skew) may hold a single file.
    let multi: Vec<&(String, usize)> = agg_before.iter().filter(|(_, n)| *n >= 2).collect();
    assert!(multi.len() >= 3, "{agg_before:?}");
    let compact = |extra: &[&str]| {
        let data = d("data");
        let state = d("no-state");
        let mut args = vec![
            "--config",
            cfg,
            "compact",
            "--data-dir",
            &data,
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(extra);
        let o = vigil(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // One past day first.
    let first_day = multi[0].0.trim_start_matches("date=").to_string();
    let out = compact(&["--date", &first_day]);
    assert!(
        out.contains(&format!("compacted aggregates date={first_day}")),
        "{out}"
    );
    for ((date, n), (_, n_before)) in files("aggregates").iter().zip(&agg_before) {
        let want = if *date == multi[0].0 { 1 } else { *n_before };
        assert_eq!(
            *n, want,
            "{date}: --date touched another day, or missed its own"
        );
    }
    assert_eq!(results(), before);
    // Then every settled day (today's is not settled).
    let metrics = d("compact.prom");
    let out = compact(&["--metrics-file", &metrics]);
    assert!(out.contains("compact: merged"), "{out}");
    for (date, n) in files("aggregates").into_iter().chain(files("alerts")) {
        let day = date.trim_start_matches("date=");
        let past = agg_before.iter().any(|(d, _)| d == &date)
            && day < chrono::Utc::now().format("%Y-%m-%d").to_string().as_str();
        if past {
            assert_eq!(n, 1, "{date}");
        }
    }
    assert_eq!(results(), before, "a query result changed");
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("vigil_compact_files_merged_total{dataset=\"aggregates\"}")
            && prom.contains("vigil_compact_bytes_written_total")
            && prom.contains("vigil_compact_duration_seconds"),
        "{prom}"
    );
    // Nothing left to do.
    let out = compact(&[]);
    assert!(out.contains("compact: merged 0 files"), "{out}");

    // A bad date and a foreign URL scheme are refused.
    let o = vigil(&["compact", "--data-dir", &d("data"), "--date", "2026-13-01"]);
    assert_eq!(o.status.code(), Some(1));
    // (s3:// is supported: tests/integration/s3.rs.)
    let o = vigil(&["compact", "--data-dir", "gs://bucket/vigil"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unsupported scheme"), "{}", stderr(&o));
}

/// `simulate --points-per-batch`, `--series-per-batch` and
/// `--point-interval` shape the batches written; bad shapes are refused.
#[test]
fn simulate_batch_shape_options() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    // (points of each series) of every record that decodes, and the truth.
    let simulate = |extra: &[&str]| -> (Vec<Vec<usize>>, serde_json::Value) {
        let (out, truth) = (d("f.bin"), d("t.json"));
        let mut args = vec![
            "simulate", "--agents", "12", "--hours", "1", "--out", &out, "--truth", &truth,
        ];
        args.extend_from_slice(extra);
        let o = vigil(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let bytes = std::fs::read(&out).unwrap();
        let shapes = vigil_sim::read_delimited_slice(&bytes)
            .map(|r| r.unwrap())
            .filter_map(|r| vigil_proto::v1::TelemetryBatch::decode(r).ok())
            .map(|b| {
                // The slow collector's series keeps its own 5-minute cycle.
                b.series
                    .iter()
                    .filter(|s| !s.metric.starts_with(vigil_sim::SLOW_METRIC_PREFIX))
                    .map(|s| s.timestamps_ms.len())
                    .collect()
            })
            .collect();
        let truth = std::fs::read_to_string(&truth).unwrap();
        (shapes, serde_json::from_str(&truth).unwrap())
    };
    let count = |t: &serde_json::Value, kind: &str| t["counts"][kind]["records"].as_u64().unwrap();
    let rejected = |t: &serde_json::Value| -> u64 {
        t["counts"]["reject"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v["records"].as_u64().unwrap())
            .sum()
    };

    // The agent tick: every accepted batch holds one point per series;
    // only late and malformed records hold another shape.
    let (shapes, t) = simulate(&["--points-per-batch", "1"]);
    let ticks = shapes
        .iter()
        .filter(|s| s.len() >= 6 && s.iter().all(|&n| n == 1));
    assert!(ticks.count() as u64 >= count(&t, "accept") + count(&t, "duplicate"));
    let other = shapes.iter().filter(|s| !s.iter().all(|&n| n == 1)).count() as u64;
    assert!(
        other <= count(&t, "late") + rejected(&t),
        "{other} other batches"
    );
    // 12 agents × 360 ticks of 10 s, less offline time.
    assert!(count(&t, "accept") > 3_000, "{}", count(&t, "accept"));

    // Two points per series at a 30 s sampling interval: a batch a minute.
    let (shapes, t) = simulate(&["--points-per-batch", "2", "--point-interval", "30s"]);
    let pairs = shapes.iter().filter(|s| s.iter().all(|&n| n == 2)).count() as u64;
    assert!(
        pairs + 12 >= count(&t, "accept"),
        "{pairs} batches of 2 points"
    );
    assert!(count(&t, "accept") < 12 * 61, "{}", count(&t, "accept"));

    // At most two series per batch (the deliberate oversized faults aside).
    let (shapes, t) = simulate(&["--series-per-batch", "2"]);
    let wide = shapes.iter().filter(|s| s.len() > 2).count() as u64;
    assert!(
        wide <= rejected(&t),
        "{wide} batches with more than 2 series"
    );
    assert!(shapes.iter().filter(|s| s.len() == 2).count() as u64 > count(&t, "accept") / 2);

    for (args, want) in [
        (vec!["--points-per-batch", "0"], "--points-per-batch"),
        (vec!["--series-per-batch", "0"], "--series-per-batch"),
        (vec!["--point-interval", "0s"], "at least 1ms"),
        (
            vec!["--point-interval", "1500us"],
            "whole number of milliseconds",
        ),
        (
            vec!["--point-interval", "2m"],
            "give --points-per-batch too",
        ),
    ] {
        let out = d("bad.bin");
        let mut a = vec!["simulate", "--agents", "2", "--hours", "0.1", "--out", &out];
        a.extend_from_slice(&args);
        let o = vigil(&a);
        assert!(!o.status.success(), "{args:?} accepted");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}

/// The rules audit trail through the binary: `vigil ingest` twice with
/// the same rules (reformatted the second time), then with an edited
/// rules file carrying `[meta]`; `vigil sql` over `audit` shows one
/// `rules_loaded` row per start, the same digest for the unchanged
/// restart, and one row per change with who and when.
#[test]
fn ingest_records_rule_changes_in_the_audit_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let o = vigil(&[
        "simulate",
        "--agents",
        "2",
        "--hours",
        "0.2",
        "--out",
        &d("f.bin"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rules = "[[threshold]]\nname = \"cpu_high\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\n\
                 op = \">\"\nvalue = 90\nfor = 5\nclear = 80\nseverity = \"warning\"\n\n\
                 [offline]\nafter = \"10m\"\nseverity = \"critical\"\n";
    let reordered = "# same rules, other order and spelling\n[offline]\nseverity = \"critical\"\n\
                     after = \"600s\"\n\n[[threshold]]\nseverity = \"warning\"\nclear = 80.0\n\
                     for = 5\nvalue = 90.0\nop = \">\"\naggregate = \"mean\"\nmetric = \"cpu_pct\"\n\
                     name = \"cpu_high\"\n";
    let edited = format!(
        "[meta]\nchanged_by = \"ops@example.com\"\nchange_ref = \"CHG-1234\"\n\
         changed_at = 2026-12-01T10:00:00Z\n\n{}\n[[maintenance]]\ntenant = \"t0\"\n\
         start = 2026-12-05T22:00:00Z\nend = 2026-12-06T02:00:00Z\n",
        rules.replace("value = 90", "value = 85")
    );
    let ingest = |text: &str| {
        std::fs::write(d("rules.toml"), text).unwrap();
        let o = vigil(&[
            "ingest",
            "--input",
            &d("f.bin"),
            "--data-dir",
            &d("data"),
            "--rules",
            &d("rules.toml"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    ingest(rules);
    ingest(reordered);
    ingest(&edited);
    let o = vigil(&[
        "sql",
        "--data-dir",
        &d("data"),
        "--format",
        "json",
        "SELECT event, rules_digest, previous_digest, rules, maintenance_windows, changes, family, \
         rule, fields, changed_by, change_ref, CAST(changed_at AS VARCHAR) AS changed_at, command \
         FROM audit ORDER BY event_time, seq",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let col = |k: &str| {
        rows.iter()
            .map(|r| r[k].as_str().unwrap_or("-").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        col("event"),
        [
            "rules_loaded",
            "rules_loaded",
            "rules_loaded",
            "rule_changed",
            "maintenance_added"
        ],
        "{rows:#?}"
    );
    let digest = col("rules_digest");
    let previous = col("previous_digest");
    assert_eq!(previous[0], "-", "first start: nothing recorded before");
    assert_eq!(digest[1], digest[0], "reformatted rules, same digest");
    assert_eq!(previous[1], digest[0]);
    assert_ne!(digest[2], digest[1], "edited rules, new digest");
    assert_eq!(previous[2], digest[1]);
    assert_eq!(col("rule")[3..], ["cpu_high", "t0"]);
    assert_eq!(col("family")[3..], ["threshold", "maintenance"]);
    assert_eq!(col("fields")[3], "value");
    assert_eq!(col("changed_by")[2..], ["ops@example.com"; 3]);
    assert_eq!(col("change_ref")[2..], ["CHG-1234"; 3]);
    assert!(
        col("changed_at")[2].starts_with("2026-12-01T10:00:00"),
        "{rows:#?}"
    );
    assert_eq!(col("command"), ["ingest"; 5]);
    let n = |k: &str| {
        rows.iter()
            .map(|r| r[k].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(n("rules"), [2, 2, 2, 2, 2]);
    assert_eq!(n("maintenance_windows"), [0, 0, 1, 1, 1]);
    assert_eq!(n("changes"), [0, 0, 2, 2, 2]);
}
