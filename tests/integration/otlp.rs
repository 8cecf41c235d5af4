//! OTLP input through `vigil ingest --input-format otlp`: requests built
//! from the official OTLP types, shaped as the Collector's hostmetrics
//! receiver emits them, land in the Parquet datasets with the aggregates
//! of an independent computation, and the default rules fire on them.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::otlp::common::v1::{any_value, AnyValue, KeyValue};
use vigil_proto::otlp::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::prost::Message;

use crate::common::vigil_bin;

/// A window-aligned start (ms).
const T0: i64 = 1_800_000_000_000;
const STEP_MS: i64 = 10_000;
const STEPS: i64 = 6 * 20;

fn vigil(args: &[&str]) -> Output {
    Command::new(vigil_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A string attribute.
pub(crate) fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..KeyValue::default()
    }
}

fn point(attrs: &[(&str, &str)], start_ns: u64, t_ms: i64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        start_time_unix_nano: start_ns,
        time_unix_nano: t_ms as u64 * 1_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..NumberDataPoint::default()
    }
}

/// `/data` fill fraction at step `i`: 80 % rising to about 97 %.
fn fill(i: i64) -> f64 {
    0.80 + 0.17 * i as f64 / STEPS as f64
}

/// One hostmetrics scrape at step `i`: `system.cpu.time` (2 CPUs, 97 %
/// busy, cumulative since boot) and `system.filesystem.utilization`.
fn scrape(i: i64) -> Vec<u8> {
    let t = T0 + i * STEP_MS;
    let boot_ns = (T0 as u64 - 3_600_000) * 1_000_000;
    let secs = i as f64 * STEP_MS as f64 / 1000.0;
    let mut cpu = Vec::new();
    for c in ["cpu0", "cpu1"] {
        for (state, share) in [("idle", 0.03), ("user", 0.90), ("system", 0.07)] {
            cpu.push(point(
                &[("cpu", c), ("state", state)],
                boot_ns,
                t,
                1_000.0 + share * secs,
            ));
        }
    }
    let fs = |mp: &str, v: f64| {
        point(
            &[
                ("device", "sdb1"),
                ("mode", "rw"),
                ("mountpoint", mp),
                ("type", "ext4"),
            ],
            0,
            t,
            v,
        )
    };
    let metrics = vec![
        Metric {
            name: "system.cpu.time".into(),
            unit: "s".into(),
            data: Some(Data::Sum(Sum {
                data_points: cpu,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Metric::default()
        },
        Metric {
            name: "system.filesystem.utilization".into(),
            unit: "1".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![fs("/", 0.4), fs("/data", fill(i))],
            })),
            ..Metric::default()
        },
    ];
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("host.name", "db1"),
                    kv("host.id", "0b7e"),
                    kv("vigil.tenant", "acme"),
                ],
                ..Resource::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
    .encode_to_vec()
}

fn sql(dir: &str, q: &str) -> Vec<Vec<String>> {
    let o = vigil(&["sql", "--data-dir", dir, "--format", "csv", q]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn ingest_otlp_hostmetrics_aggregates_and_default_rules() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let mut file = Vec::new();
    // Length-delimited framing: a varint length, then the encoded request.
    let frame = |file: &mut Vec<u8>, r: &[u8]| {
        vigil_proto::prost::encoding::encode_varint(r.len() as u64, file);
        file.extend_from_slice(r);
    };
    for i in 0..STEPS {
        frame(&mut file, &scrape(i));
        if i == 30 {
            // The Collector resends a request after a failed export.
            frame(&mut file, &scrape(29));
        }
    }
    // A record that is not OTLP: a length prefix, then the bytes.
    let garbage = b"\xff\xff not otlp";
    vigil_proto::prost::encoding::encode_varint(garbage.len() as u64, &mut file);
    file.extend_from_slice(garbage);
    std::fs::write(d("otlp.bin"), &file).unwrap();

    let o = vigil(&[
        "ingest",
        "--input-format",
        "otlp",
        "--input",
        &d("otlp.bin"),
        "--data-dir",
        &d("data"),
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("decode=1 records"), "{out}");
    assert!(out.contains("1 duplicates dropped"), "{out}");

    // Independent computation of the /data windows: count and mean.
    let mut want: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
    for i in 0..STEPS {
        let w = (T0 + i * STEP_MS) / 60_000 * 60_000;
        let e = want.entry(w).or_default();
        e.0 += 1;
        e.1 += 100.0 * fill(i);
    }
    let got = sql(
        &d("data"),
        "SELECT CAST(window_start AS BIGINT), count, mean FROM aggregates \
         WHERE metric = 'disk_used_pct' AND labels = 'mount=/data' ORDER BY 1",
    );
    assert_eq!(got.len(), want.len());
    for (row, (w, (n, s))) in got.iter().zip(&want) {
        assert_eq!(row[0].parse::<i64>().unwrap(), *w);
        assert_eq!(row[1].parse::<u64>().unwrap(), *n);
        let mean: f64 = row[2].parse().unwrap();
        assert!((mean - s / *n as f64).abs() < 1e-9, "{row:?}");
    }
    // cpu_pct: 97 % in every window; the first scrape gives no rate.
    let cpu = sql(
        &d("data"),
        "SELECT count, min, max FROM aggregates WHERE metric = 'cpu_pct' ORDER BY window_start",
    );
    assert_eq!(cpu.len(), 20);
    assert_eq!(cpu[0][0], "5");
    for row in &cpu {
        for v in &row[1..] {
            assert!((v.parse::<f64>().unwrap() - 97.0).abs() < 1e-9, "{row:?}");
        }
    }
    let fired = sql(
        &d("data"),
        "SELECT rule, labels, hostname FROM alerts WHERE status = 'firing' ORDER BY rule, labels",
    );
    let fired: Vec<(&str, &str, &str)> = fired
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str()))
        .collect();
    assert!(fired.contains(&("cpu_high", "", "db1")), "{fired:?}");
    assert!(
        fired.contains(&("disk_high", "mount=/data", "db1")),
        "{fired:?}"
    );
    assert!(!fired.iter().any(|f| f.1 == "mount=/"), "{fired:?}");
}

/// Writes records as a length-delimited file.
fn write_records<'a>(path: &std::path::Path, records: impl IntoIterator<Item = &'a [u8]>) {
    let mut file = Vec::new();
    for r in records {
        vigil_proto::prost::encoding::encode_varint(r.len() as u64, &mut file);
        file.extend_from_slice(r);
    }
    std::fs::write(path, file).unwrap();
}

/// Per (agent, metric, labels, window start): (count, mean).
type Windows = BTreeMap<(String, String, String, String), (u64, f64)>;

fn windows(dir: &str) -> Windows {
    sql(
        dir,
        "SELECT agent, metric, labels, CAST(window_start AS BIGINT), count, mean FROM aggregates",
    )
    .into_iter()
    .map(|r| {
        (
            (r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()),
            (r[4].parse().unwrap(), r[5].parse().unwrap()),
        )
    })
    .collect()
}

/// The simulated fleet re-encoded as hostmetrics OTLP (`vigil simulate
/// --format otlp`) gives the windows of the same fleet in Vigil's format:
/// every gauge window with the same count and mean. Network counters lose
/// exactly the points docs/otlp.md says give no rate (the first of each
/// counter, and points not newer than the counter's previous one: batches
/// the simulator delivers out of order), and where no point is missing
/// the rate is the same. Faults that Vigil's format judges by sequence
/// number are off; resends stay on.
#[test]
fn simulated_fleet_as_otlp_gives_the_same_windows() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let cfg = vigil_sim::FleetConfig {
        agents: 12,
        tenants: 3,
        duration_ms: 2 * 3_600_000,
        seed: 7,
        scenarios: vigil_sim::ScenarioMix {
            late_rate: 0.0,
            seq_too_old_rate: 0.0,
            malformed_rate: 0.0,
            oversized_rate: 0.0,
            non_finite_rate: 0.0,
            future_skew_agents: 0.0,
            ..vigil_sim::ScenarioMix::default()
        },
        ..vigil_sim::FleetConfig::default()
    };
    let run = crate::common::simulate(cfg);
    assert!(
        run.truth.counts.duplicate.records > 0,
        "the fleet must resend some batches"
    );
    let mut enc = vigil_sim::otlp::OtlpEncoder::new();
    let otlp: Vec<Vec<u8>> = run.records.iter().map(|r| enc.encode(&r.payload)).collect();
    let vigil_path = dir.path().join("vigil.bin");
    let otlp_path = dir.path().join("otlp.bin");
    write_records(
        &vigil_path,
        run.records.iter().map(|r| r.payload.as_slice()),
    );
    write_records(&otlp_path, otlp.iter().map(Vec::as_slice));
    let mut report = String::new();
    for (input, format, data) in [(&vigil_path, "vigil", "a"), (&otlp_path, "otlp", "b")] {
        let o = vigil(&[
            "ingest",
            "--input-format",
            format,
            "--input",
            &input.display().to_string(),
            "--data-dir",
            &d(data),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        report = String::from_utf8_lossy(&o.stdout).into_owned();
    }
    // "... N first of a counter, ... M superseded, ..." of the OTLP run.
    let stat = |what: &str| -> u64 {
        let at = report
            .find(what)
            .unwrap_or_else(|| panic!("{what}: {report}"));
        let n = report[..at].trim_end().rsplit(' ').next().unwrap();
        n.parse().unwrap()
    };
    let (first, superseded) = (stat(" first of a counter"), stat(" superseded"));
    let (want, got) = (windows(&d("a")), windows(&d("b")));
    assert!(want.len() > 1000, "{} windows", want.len());
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same windows"
    );
    let (mut missing, mut same_count, mut same_rate) = (0, 0, 0);
    for (k, (n, mean)) in &want {
        let (m, gmean) = got[k];
        if k.1.starts_with("net_") {
            assert!(m <= *n, "{k:?}: {m} > {n}");
            missing += n - m;
            if m == *n {
                // Whole bytes: a rate is within 0.8 bit/s, unless the
                // point before it was out of order (two intervals in one).
                same_count += 1;
                same_rate += u32::from((gmean - mean).abs() <= 1.0);
            }
        } else {
            assert_eq!(m, *n, "{k:?}");
            // v/100 and back: a few ulps.
            let tolerance = 1e-9 * mean.abs().max(1.0);
            assert!(
                (gmean - mean).abs() <= tolerance,
                "{k:?}: {gmean} vs {mean}"
            );
        }
    }
    // Every counter's first point, and out-of-order points (superseded
    // also counts resent points Vigil's format drops as duplicates).
    assert_eq!(first, 2 * 12, "{report}");
    assert!(
        missing >= first && missing <= first + superseded,
        "{missing} points missing: {report}"
    );
    assert!(
        f64::from(same_rate) >= 0.95 * f64::from(same_count),
        "{same_rate} of {same_count} counter windows with the same rate"
    );
}

/// `vigil simulate --format otlp` writes exactly the encoder's requests for
/// the fleet its options describe.
#[test]
fn simulate_format_otlp_writes_the_encoders_requests() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("otlp.bin");
    let o = vigil(&[
        "simulate",
        "--format",
        "otlp",
        "--agents",
        "5",
        "--hours",
        "0.5",
        "--seed",
        "3",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" otlp records"));
    let cfg = vigil_sim::FleetConfig {
        agents: 5,
        duration_ms: 1_800_000,
        seed: 3,
        ..vigil_sim::FleetConfig::default()
    };
    let mut enc = vigil_sim::otlp::OtlpEncoder::new();
    let want: Vec<Vec<u8>> = vigil_sim::Fleet::new(cfg)
        .map(|r| enc.encode(&r.payload))
        .collect();
    let path = dir.path().join("want.bin");
    write_records(&path, want.iter().map(Vec::as_slice));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&path).unwrap());
    let bad = vigil(&["simulate", "--format", "csv", "--out", "-"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown input format"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `vigil demo --format otlp` runs the fleet through the OTLP path: its
/// windows are those of `vigil ingest --input-format otlp` over `vigil
/// simulate --format otlp` of the same fleet, and it prints the
/// conversion counters.
#[test]
fn demo_format_otlp_equals_ingest_of_the_simulated_otlp_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    let fleet = ["--agents", "8", "--hours", "1", "--seed", "7"];
    let mut args = vec!["demo", "--format", "otlp", "--quiet", "--data-dir"];
    let demo_dir = d("demo");
    args.push(&demo_dir);
    args.extend(fleet);
    let o = vigil(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("otlp records"), "{out}");
    assert!(
        out.contains("resources,") && out.contains("points out"),
        "{out}"
    );

    let file = d("fleet.otlp");
    let mut args = vec!["simulate", "--format", "otlp", "--out", &file];
    args.extend(fleet);
    let o = vigil(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ingest_dir = d("ingest");
    let o = vigil(&[
        "ingest",
        "--input-format",
        "otlp",
        "--input",
        &file,
        "--data-dir",
        &ingest_dir,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (windows(&demo_dir), windows(&ingest_dir));
    assert!(a.len() > 1_000, "{} windows", a.len());
    assert_eq!(a, b);
}
