//! Kafka end to end against the real test broker (nisshi, started on
//! 127.0.0.1 by `scripts/test.sh`, which sets `VIGIL_TEST_BROKERS`).
//!
//! Each test has its own topics, group, data and state directories, and
//! runs `vigil run` as a child process (stopped with SIGTERM, or killed
//! with SIGKILL). Input is produced by a plain rdkafka producer from a
//! fleet built here, not by the simulator, and the expected windows are
//! computed here independently of vigil-ops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use vigil_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use vigil_kafka::rdkafka::message::Headers;
use vigil_kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use vigil_kafka::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use vigil_kafka::KafkaSettings;
use vigil_proto::v1::{AgentInfo, Label, Series, TelemetryBatch};

use crate::common::{alert_schema, free_port, sql, vigil_bin};

mod chaos;
mod crash;
mod fence;
mod otlp;
mod outage;

/// 2026-11-02T00:00:00Z: a window-aligned start, in the past (so nothing
/// is `future` against the wall clock) but recent.
const T0: i64 = 1_793_577_600_000;
const MIN: i64 = 60_000;
const PARTITIONS: i32 = 4;

/// The test broker, or `None` (test skipped) when there is none and none
/// is required.
fn brokers() -> Option<String> {
    match std::env::var("VIGIL_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("VIGIL_REQUIRE_BROKER").as_deref() != Ok("1"),
                "VIGIL_REQUIRE_BROKER=1 but VIGIL_TEST_BROKERS is not set"
            );
            eprintln!("skipped: no test broker; scripts/test.sh starts one");
            None
        }
    }
}

/// One test's Kafka names and directories.
struct Env {
    brokers: String,
    topic: String,
    alerts: String,
    dlq: String,
    group: String,
    dir: tempfile::TempDir,
    /// Partitions of each topic.
    partitions: i32,
}

/// A `vigil run` child process.
struct WorkerProc {
    child: Option<Child>,
    log: PathBuf,
    metrics_port: u16,
}

impl WorkerProc {
    /// Sends the process signal `sig` (`kill` syntax: `-STOP`, `-CONT`).
    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let st = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success(), "kill {sig} {pid}");
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    fn stop(self) -> String {
        let (status, log) = self.terminate();
        assert!(status.success(), "worker exited with {status}:\n{log}");
        log
    }

    /// SIGTERM, then waits for the process to exit (a minute at most: then
    /// it panics with the worker's log and thread stacks); its exit status
    /// and log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                // Its stacks and its log say where it hangs.
                let stacks = Command::new("gdb")
                    .args([
                        "-p",
                        &child.id().to_string(),
                        "-batch",
                        "-ex",
                        "thread apply all bt",
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!(
                    "worker did not stop after SIGTERM; its log:\n{log}\nits threads:\n{stacks}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            status,
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }

    /// SIGKILL: no flush, no commit, no goodbye.
    fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The worker's Prometheus exposition.
    fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    /// `GET path` on the worker's HTTP listener: status code and body
    /// (status 0 while nothing listens yet).
    fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return (0, String::new());
        };
        let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_string())
    }

    /// Polls `path` until `want(status, body)` holds or `within` passes;
    /// returns the last answer.
    fn get_until(
        &self,
        path: &str,
        within: Duration,
        want: impl Fn(u16, &str) -> bool,
    ) -> (u16, String) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (code, body) = self.get(path);
            if want(code, &body) || std::time::Instant::now() > deadline {
                return (code, body);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A record as read back from a topic.
#[derive(Debug, Clone)]
struct Rec {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

impl Env {
    fn new(name: &str) -> Option<Env> {
        Some(Env::on(name, brokers()?))
    }

    /// [`Env::new`] on the broker at `brokers`.
    fn on(name: &str, brokers: String) -> Env {
        Env::with_partitions(name, brokers, PARTITIONS)
    }

    /// [`Env::on`] with `partitions` partitions per topic.
    fn with_partitions(name: &str, brokers: String, partitions: i32) -> Env {
        let unique = crate::common::unique_name(name);
        let env = Env {
            brokers,
            topic: format!("tel-{unique}"),
            alerts: format!("alerts-{unique}"),
            dlq: format!("dlq-{unique}"),
            group: format!("vigil-{unique}"),
            dir: tempfile::tempdir().unwrap(),
            partitions,
        };
        let s = env.kafka_settings();
        vigil_kafka::admin::create_topics(
            &s,
            &[
                (&env.topic, partitions),
                (&env.alerts, partitions),
                (&env.dlq, partitions),
            ],
            Duration::from_secs(30),
        )
        .unwrap();
        env
    }

    fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.brokers.clone(),
            telemetry_topic: self.topic.clone(),
            alert_topic: self.alerts.clone(),
            dlq_topic: self.dlq.clone(),
            group_id: self.group.clone(),
            ..KafkaSettings::default()
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts `vigil run` with this test's names; `extra` are more
    /// environment variables.
    fn worker(&self, label: &str, extra: &[(&str, &str)]) -> WorkerProc {
        self.worker_with_config(label, "", extra)
    }

    /// [`Env::worker`] with `toml` appended to its config file.
    fn worker_with_config(&self, label: &str, toml: &str, extra: &[(&str, &str)]) -> WorkerProc {
        let log = self.dir.path().join(format!("{label}.log"));
        let port = free_port();
        // Dead members must leave the group fast (the SIGKILL test): a short
        // session timeout, given in a config file because property names
        // have dots.
        let config = self.dir.path().join(format!("{label}.toml"));
        // A `toml` that sets its own session timeout gives the whole table.
        let config_text = if toml.contains("session.timeout.ms") {
            toml.to_string()
        } else {
            format!("[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n{toml}")
        };
        std::fs::write(&config, config_text).unwrap();
        let mut cmd = Command::new(vigil_bin());
        cmd.arg("--config")
            .arg(&config)
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("VIGIL_KAFKA__BROKERS", &self.brokers)
            .env("VIGIL_KAFKA__TELEMETRY_TOPIC", &self.topic)
            .env("VIGIL_KAFKA__ALERT_TOPIC", &self.alerts)
            .env("VIGIL_KAFKA__DLQ_TOPIC", &self.dlq)
            .env("VIGIL_KAFKA__GROUP_ID", &self.group)
            .env("VIGIL_DATA_DIR", self.data())
            .env("VIGIL_WORKER__STATE_DIR", self.dir.path().join("state"))
            .env("VIGIL_WORKER__FLUSH_INTERVAL", "200ms")
            .env("VIGIL_WORKER__METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env("VIGIL_STORAGE__PARQUET__SYNC", "false")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        WorkerProc {
            child: Some(cmd.spawn().unwrap()),
            log,
            metrics_port: port,
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }

    /// Produces `(key, value)` records to the telemetry topic and waits
    /// for every acknowledgement.
    fn produce(&self, records: &[(String, Vec<u8>)]) {
        let p: BaseProducer = self
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .create()
            .unwrap();
        for (k, v) in records {
            let mut rec = BaseRecord::to(&self.topic).key(k.as_bytes()).payload(v);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        rec = back;
                        p.poll(Duration::from_millis(10));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    /// High watermark of each partition of `topic`.
    fn ends(&self, topic: &str) -> Vec<i64> {
        let c: BaseConsumer = self.client().create().unwrap();
        (0..self.partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .collect()
    }

    /// The group's committed offset of each partition (-1: none).
    fn committed(&self) -> Vec<i64> {
        self.committed_by(&self.group_client())
    }

    /// A client of the group, for reading its committed offsets.
    fn group_client(&self) -> BaseConsumer {
        self.client().set("group.id", &self.group).create().unwrap()
    }

    /// [`Env::committed`] through an existing group client (no client
    /// start-up per call, for polling).
    fn committed_by(&self, c: &BaseConsumer) -> Vec<i64> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        (0..self.partitions)
            .map(
                |p| match got.find_partition(&self.topic, p).unwrap().offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
            .collect()
    }

    /// Waits until the group committed everything produced so far.
    fn wait_committed(&self, worker: &[&WorkerProc]) {
        self.wait_committed_within(Duration::from_secs(120), || {
            let logs: Vec<String> = worker.iter().map(|w| w.log()).collect();
            logs.join("\n----\n")
        });
    }

    /// Waits (at most `within`) until the group committed every record of
    /// the topic; on timeout panics with what `logs` returns.
    fn wait_committed_within(&self, within: Duration, logs: impl Fn() -> String) {
        let ends = self.ends(&self.topic);
        let deadline = Instant::now() + within;
        loop {
            let c = self.committed();
            if c.iter().zip(&ends).all(|(c, e)| *e == 0 || *c == *e) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "committed {c:?}, want {ends:?}; worker logs:\n{}",
                logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every record of `topic`, read with a throwaway consumer.
    fn consume(&self, topic: &str) -> Vec<Rec> {
        let ends = self.ends(topic);
        let c: BaseConsumer = self
            .client()
            .set("group.id", format!("reader-{}", self.group))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut seen = vec![0i64; self.partitions as usize];
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.iter().zip(&ends).any(|(s, e)| s < e) {
            assert!(Instant::now() < deadline, "could not read back {topic}");
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            let mut headers = BTreeMap::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    headers.insert(
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            seen[m.partition() as usize] = m.offset() + 1;
            out.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
        out
    }
}

/// Waits (at most `within`) until `done` holds, else fails showing `logs`.
fn wait_for(what: &str, within: Duration, logs: &[&WorkerProc], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            let l: Vec<String> = logs.iter().map(|w| w.log()).collect();
            panic!("{what}: timed out; worker logs:\n{}", l.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the unlabelled metric `name` in a Prometheus exposition
/// (panics, showing the exposition, when it is not there).
fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}:\n{exposition}"))
}

// ---------------------------------------------------------------- the fleet

fn series(metric: &str, labels: &[(&str, &str)], pts: &[(i64, f64)]) -> Series {
    Series {
        metric: metric.into(),
        labels: labels
            .iter()
            .map(|(k, v)| Label {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
        timestamps_ms: pts.iter().map(|p| p.0).collect(),
        values: pts.iter().map(|p| p.1).collect(),
    }
}

fn agent_name(i: usize) -> String {
    format!("a{i}")
}

/// Batch `m` of agent `i`: six points 10 s apart per series, starting
/// 30 s into minute `m`, so every window takes points from two batches
/// (and a stop between batches cuts windows in half). Agent a3 runs its
/// CPU at 97 % in minutes 30..45 (one `cpu_high` incident, fired and
/// resolved); agent a5's memory is at 95 % from minute 100 on (one
/// `mem_high` incident, still firing). Everything else stays well inside
/// every rule.
fn fleet_batch(i: usize, m: i64) -> (String, Vec<u8>) {
    let agent = agent_name(i);
    let ts: Vec<i64> = (0..6).map(|j| T0 + m * MIN + 30_000 + j * 10_000).collect();
    let cpu: Vec<(i64, f64)> = ts
        .iter()
        .enumerate()
        .map(|(j, &t)| {
            let hot = i == 3 && (30..45).contains(&((t - T0) / MIN));
            let v = if hot {
                97.0
            } else {
                10.0 + ((i as i64 * 13 + m * 7 + j as i64 * 3) % 40) as f64 + 0.25
            };
            (t, v)
        })
        .collect();
    let mem: Vec<(i64, f64)> = ts
        .iter()
        .enumerate()
        .map(|(j, &t)| {
            let v = if i == 5 && (t - T0) / MIN >= 100 {
                95.0
            } else {
                30.0 + ((i as i64 * 5 + m + j as i64) % 20) as f64
            };
            (t, v)
        })
        .collect();
    let disk: Vec<(i64, f64)> = ts.iter().map(|&t| (t, 40.0 + i as f64)).collect();
    let b = TelemetryBatch {
        status: Vec::new(),
        security_events: Vec::new(),
        tenant_id: if i.is_multiple_of(2) {
            "acme"
        } else {
            "globex"
        }
        .into(),
        agent_id: agent.clone(),
        seq: m as u64 + 1,
        sent_at_ms: ts[5] + 1_000,
        boot_id: 0,
        agent: (m == 0).then(|| AgentInfo {
            hostname: format!("host-{i}"),
            ..AgentInfo::default()
        }),
        series: vec![
            series("cpu_pct", &[("core", "all")], &cpu),
            series("mem_pct", &[], &mem),
            series("disk_used_pct", &[("mount", "/")], &disk),
        ],
    };
    (agent, b.encode_to_vec())
}

/// All agents' batches for minutes in `minutes`, in arrival order.
fn fleet(agents: usize, minutes: std::ops::Range<i64>) -> Vec<(String, Vec<u8>)> {
    minutes
        .flat_map(|m| (0..agents).map(move |i| fleet_batch(i, m)))
        .collect()
}

/// One window row: (tenant, agent, metric, labels, start) → (count, sum,
/// min, max, last).
type Windows = BTreeMap<(String, String, String, String, i64), (u64, f64, f64, f64, f64)>;

/// The oracle: the windows every agent's watermark (its greatest timestamp
/// minus 30 s) has closed, aggregated from the input records directly.
fn expected_windows(records: &[(String, Vec<u8>)]) -> Windows {
    let (mut w, max_ts) = every_window(records);
    w.retain(|k, _| k.4 + MIN <= max_ts[&k.1] - 30_000);
    w
}

/// Every window of `records`, closed or not (what a worker publishes once
/// every agent went idle), and each agent's greatest timestamp.
fn every_window(records: &[(String, Vec<u8>)]) -> (Windows, BTreeMap<String, i64>) {
    let mut max_ts: BTreeMap<String, i64> = BTreeMap::new();
    let mut w = Windows::new();
    for (_, bytes) in records {
        let b = TelemetryBatch::decode(bytes.as_slice()).unwrap();
        for s in &b.series {
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .map(|l| format!("{}={}", l.key, l.value))
                .collect();
            labels.sort();
            for (&t, &v) in s.timestamps_ms.iter().zip(&s.values) {
                let e = max_ts.entry(b.agent_id.clone()).or_insert(i64::MIN);
                *e = (*e).max(t);
                let key = (
                    b.tenant_id.clone(),
                    b.agent_id.clone(),
                    s.metric.clone(),
                    labels.join(","),
                    t.div_euclid(MIN) * MIN,
                );
                let r = w.entry(key).or_insert((0, 0.0, f64::MAX, f64::MIN, 0.0));
                r.0 += 1;
                r.1 += v;
                r.2 = r.2.min(v);
                r.3 = r.3.max(v);
                r.4 = v;
            }
        }
    }
    (w, max_ts)
}

/// The `aggregates` dataset as the same rows.
fn actual_windows(env: &Env) -> (Windows, usize) {
    windows_in(&env.data())
}

/// The `aggregates` dataset under `dir` as window rows, and the row count.
fn windows_in(dir: &std::path::Path) -> (Windows, usize) {
    let batches = sql(
        dir,
        "SELECT tenant, agent, metric, labels, CAST(window_start AS BIGINT), count, sum, min, max, last
         FROM aggregates",
    );
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type, UInt64Type};
    let mut w = Windows::new();
    let mut rows = 0;
    for b in &batches {
        let s = |c: usize, i: usize| b.column(c).as_string::<i32>().value(i).to_string();
        let f = |c: usize, i: usize| b.column(c).as_primitive::<Float64Type>().value(i);
        for i in 0..b.num_rows() {
            rows += 1;
            w.insert(
                (
                    s(0, i),
                    s(1, i),
                    s(2, i),
                    s(3, i),
                    b.column(4).as_primitive::<Int64Type>().value(i),
                ),
                (
                    b.column(5).as_primitive::<UInt64Type>().value(i),
                    f(6, i),
                    f(7, i),
                    f(8, i),
                    f(9, i),
                ),
            );
        }
    }
    (w, rows)
}

/// Parquet equals the oracle row by row, with no duplicate rows.
fn assert_windows(env: &Env, records: &[(String, Vec<u8>)]) {
    assert_windows_are(env, &expected_windows(records));
}

/// Like [`assert_windows`], for a worker that may have stayed up past
/// `pipeline.idle_timeout` after its last record: besides the windows the
/// watermark closed, the dataset may hold windows the idle timeout closed
/// (agents' last windows, each with every point of the records).
fn assert_windows_or_idle_closed(env: &Env, records: &[(String, Vec<u8>)]) {
    let (got, _) = actual_windows(env);
    let (every, _) = every_window(records);
    let mut want = expected_windows(records);
    for k in got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .cloned()
        .collect::<Vec<_>>()
    {
        let w = every
            .get(&k)
            .unwrap_or_else(|| panic!("{k:?} is not a window of the records"));
        want.insert(k, *w);
    }
    assert_windows_are(env, &want);
}

/// The `aggregates` dataset equals `want` row for row, each row once.
fn assert_windows_are(env: &Env, want: &Windows) {
    let (got, rows) = actual_windows(env);
    assert_eq!(rows, got.len(), "duplicate window rows in Parquet");
    assert_eq!(got.len(), want.len(), "number of windows differs");
    for ((k, g), (wk, w)) in got.iter().zip(want) {
        assert_eq!(k, wk);
        assert_eq!((g.0, g.2, g.3, g.4), (w.0, w.2, w.3, w.4), "{k:?}");
        assert!(
            (g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0),
            "sum of {k:?}"
        );
    }
}

/// Alert events on the topic, validated against the JSON Schema, as
/// (agent, rule, status) → events (several only when redelivered).
fn alert_events(env: &Env) -> BTreeMap<(String, String, String), Vec<serde_json::Value>> {
    let validator = alert_schema();
    let mut out: BTreeMap<_, Vec<serde_json::Value>> = BTreeMap::new();
    for r in env.consume(&env.alerts) {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{v}: {errors:?}");
        assert_eq!(
            r.key.as_deref(),
            Some(v["fingerprint"].as_str().unwrap().as_bytes()),
            "alert key must be the fingerprint"
        );
        out.entry((
            v["agent"].as_str().unwrap().to_string(),
            v["rule"].as_str().unwrap().to_string(),
            v["status"].as_str().unwrap().to_string(),
        ))
        .or_default()
        .push(v);
    }
    out
}

/// The designed incidents, each event exactly once unless `redelivery`
/// is allowed (then every copy must be identical).
fn assert_incidents(env: &Env, redelivery: bool) {
    let events = alert_events(env);
    let keys: BTreeSet<(String, String, String)> = events.keys().cloned().collect();
    let want: BTreeSet<(String, String, String)> = [
        ("a3", "cpu_high", "firing"),
        ("a3", "cpu_high", "resolved"),
        ("a5", "mem_high", "firing"),
    ]
    .iter()
    .map(|(a, r, s)| (a.to_string(), r.to_string(), s.to_string()))
    .collect();
    assert_eq!(keys, want, "incidents on the alert topic");
    for (k, v) in &events {
        if redelivery {
            assert!(v.iter().all(|e| e == &v[0]), "redelivered {k:?} differs");
        } else {
            assert_eq!(v.len(), 1, "{k:?} delivered {} times", v.len());
        }
    }
    let fire = &events[&("a3".into(), "cpu_high".into(), "firing".into())][0];
    let res = &events[&("a3".into(), "cpu_high".into(), "resolved".into())][0];
    assert_eq!(fire["id"], res["id"], "one incident, one id");
    assert_eq!(fire["started_at_ms"], T0 + 30 * MIN);
    // Resolved at the end of the first window back under `clear` (docs/rules.md).
    assert_eq!(res["resolved_at_ms"], T0 + 46 * MIN);
    assert_eq!(fire["hostname"], "host-3");
    assert_eq!(fire["labels"]["core"], "all");
    // The alerts dataset holds the same events, once each.
    let count = |q: &str| -> usize { sql(&env.data(), q).iter().map(|b| b.num_rows()).sum() };
    assert_eq!(
        count("SELECT DISTINCT agent, rule, status FROM alerts"),
        3,
        "alerts dataset"
    );
    assert_eq!(
        count("SELECT id, status FROM alerts GROUP BY 1, 2 HAVING count(*) > 1"),
        0,
        "duplicate rows in the alerts dataset"
    );
}

const AGENTS: usize = 8;
const MINUTES: i64 = 120;

#[test]
fn kafka_worker_output_equals_oracle_and_alert_topic_holds_the_incidents() {
    let Some(env) = Env::new("oracle") else {
        return;
    };
    let records = fleet(AGENTS, 0..MINUTES);
    env.produce(&records);
    let w = env.worker("w", &[]);
    env.wait_committed(&[&w]);
    // The group sees a commit before the worker has read the answer and
    // counted it: poll the exposition for a counted commit.
    let counted = |b: &str| {
        b.lines().any(|l| {
            l.strip_prefix("vigil_worker_commits_total ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        })
    };
    let (_, metrics) = w.get_until("/metrics", Duration::from_secs(20), |_, b| counted(b));
    let log = w.stop();
    assert_windows(&env, &records);
    assert_incidents(&env, false);
    assert!(
        metrics.contains("vigil_pipeline_records_in_total") && counted(&metrics),
        "metrics:\n{metrics}"
    );
    assert!(log.contains("worker stopped"), "{log}");
    // Checkpoints exist for the partitions that had data.
    let ckpts = std::fs::read_dir(env.dir.path().join("state").join(&env.topic))
        .unwrap()
        .count();
    assert!(ckpts >= 1);
}

/// Alert routes (docs/siem.md, "Routing"): each designed event reaches
/// exactly the topics of the routes it matches, in their encodings, keyed
/// by fingerprint; the unmatched one reaches the default route; each route
/// counts its events.
#[test]
fn kafka_alert_routes_send_each_event_to_its_topics_and_encodings() {
    let Some(env) = Env::new("routes") else {
        return;
    };
    let soc = format!("soc-{}", env.alerts);
    let cef = format!("cef-{}", env.alerts);
    vigil_kafka::admin::create_topics(
        &env.kafka_settings(),
        &[(&soc, PARTITIONS), (&cef, PARTITIONS)],
        Duration::from_secs(30),
    )
    .unwrap();
    let routes = format!(
        r#"
[[alerts.route]]
name = "cpu-firing"
topic = "{soc}"
encoding = "ocsf"
rule = ["cpu_high"]
status = ["firing"]

[[alerts.route]]
name = "mem-cef"
topic = "{cef}"
encoding = "cef"
rule = ["mem_high"]
"#
    );
    let records = fleet(AGENTS, 0..MINUTES);
    env.produce(&records);
    let w = env.worker_with_config("w", &routes, &[]);
    env.wait_committed(&[&w]);
    let route_count = |b: &str, route: &str| -> f64 {
        let prefix = format!("vigil_alert_route_events_total{{route=\"{route}\"}} ");
        b.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let (_, metrics) = w.get_until("/metrics", Duration::from_secs(20), |_, b| {
        ["cpu-firing", "mem-cef", "default"]
            .iter()
            .all(|r| route_count(b, r) >= 1.0)
    });
    w.stop();
    for r in ["cpu-firing", "mem-cef", "default"] {
        assert_eq!(route_count(&metrics, r), 1.0, "route {r}:\n{metrics}");
    }

    // Default route: kafka.alert_topic as Vigil's JSON, only the event no
    // route took (the resolved cpu_high).
    let json = alert_events(&env);
    let keys: Vec<_> = json.keys().cloned().collect();
    assert_eq!(
        keys,
        [(
            "a3".to_string(),
            "cpu_high".to_string(),
            "resolved".to_string()
        )]
    );
    let resolved = &json.values().next().unwrap()[0];

    // cpu-firing: OCSF, the firing event of the same incident.
    let ocsf = env.consume(&soc);
    assert_eq!(ocsf.len(), 1, "{ocsf:?}");
    let v: serde_json::Value = serde_json::from_slice(&ocsf[0].payload).unwrap();
    assert_eq!(v["class_uid"], 2004);
    assert_eq!(v["activity_id"], 1);
    assert_eq!(v["finding_info"]["uid"], resolved["id"]);
    assert_eq!(v["finding_info"]["title"], "cpu_high");
    assert_eq!(ocsf[0].headers["vigil.encoding"], "ocsf");
    assert_eq!(ocsf[0].headers["content-type"], "application/json");
    assert_eq!(
        ocsf[0].key.as_deref(),
        Some(resolved["fingerprint"].as_str().unwrap().as_bytes()),
        "key = fingerprint on every route"
    );

    // mem-cef: CEF, the mem_high firing event.
    let lines = env.consume(&cef);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = String::from_utf8(lines[0].payload.clone()).unwrap();
    assert!(line.starts_with("CEF:0|Vigil|Vigil|"), "{line}");
    assert!(line.contains("|mem_high|"), "{line}");
    assert!(
        line.contains(" act=firing ") && line.contains(" cs2=a5 "),
        "{line}"
    );
    assert!(lines[0].key.is_some());
    assert_eq!(lines[0].headers["vigil.encoding"], "cef");
    assert!(lines[0].headers["content-type"].starts_with("text/plain"));
    let json_rec = env.consume(&env.alerts);
    assert_eq!(json_rec[0].headers["vigil.encoding"], "json");
}

/// Every metric name the PrometheusRule and the Grafana dashboard query
/// (deploy/queried-metrics.txt, listed by scripts/check-deploy.py) is in
/// a live worker's scrape after it processed a fleet with incidents.
#[test]
fn kafka_worker_exports_every_metric_the_deploy_files_query() {
    let Some(env) = Env::new("deploy-metrics") else {
        return;
    };
    let list = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/queried-metrics.txt"),
    )
    .unwrap();
    let wanted: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(wanted.len() >= 20, "{wanted:?}");
    let records = fleet(AGENTS, 0..60);
    env.produce(&records);
    let w = env.worker("w", &[]);
    env.wait_committed(&[&w]);
    // Series names of an exposition: the token before labels or value.
    let exported = |body: &str| -> BTreeSet<String> {
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect()
    };
    let missing = |body: &str| -> Vec<String> {
        let have = exported(body);
        wanted
            .iter()
            .filter(|n| !have.contains(**n))
            .map(|n| n.to_string())
            .collect()
    };
    // Lag gauges come with librdkafka's statistics (every 5 s), the ack
    // latency with the alerts' acknowledgements, readiness with the lag
    // read from them: poll until all are there (a loaded runner takes a
    // while).
    let ready = |b: &str| b.lines().any(|l| l.trim() == "vigil_worker_ready 1");
    let (_, body) = w.get_until("/metrics", Duration::from_secs(60), |_, b| {
        missing(b).is_empty() && ready(b)
    });
    let log = w.stop();
    assert!(
        missing(&body).is_empty(),
        "not exported: {:?}\nscrape:\n{body}\nlog:\n{log}",
        missing(&body)
    );
    // The readiness series says ready, as /readyz does.
    assert!(ready(&body), "{body}");
}

/// `/healthz` answers while the worker runs; `/readyz` turns ready once
/// the worker is in its group with a reachable broker, and names the
/// reason while no broker can be reached (a worker pointed at a port
/// where nothing listens: alive, never ready).
#[test]
fn kafka_worker_probes_report_alive_ready_and_an_unreachable_broker() {
    let Some(env) = Env::new("probes") else {
        return;
    };
    env.produce(&fleet(AGENTS, 0..2));
    let w = env.worker("w", &[]);
    let (code, body) = w.get_until("/healthz", Duration::from_secs(30), |c, _| c != 0);
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    // Statistics come every 5 s: ready within a few intervals.
    let (code, body) = w.get_until("/readyz", Duration::from_secs(60), |c, _| c == 200);
    assert_eq!((code, body.as_str()), (200, "ok\n"), "{}", w.log());
    let (code, _) = w.get("/nowhere");
    assert_eq!(code, 404);
    assert!(w.metrics().contains("vigil_worker_partitions_owned"));
    w.stop();

    let dead = format!("127.0.0.1:{}", free_port());
    let z = env.worker("unreachable", &[("VIGIL_KAFKA__BROKERS", dead.as_str())]);
    let (code, _) = z.get_until("/healthz", Duration::from_secs(30), |c, _| c != 0);
    assert_eq!(code, 200, "alive without a broker: {}", z.log());
    let (code, body) = z.get_until("/readyz", Duration::from_secs(30), |_, b| {
        b.contains("no broker reachable")
    });
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no broker reachable"), "{body}");
    assert!(
        body.contains("no assignment from the consumer group"),
        "{body}"
    );
    drop(z);
}

#[test]
fn kafka_graceful_stop_and_kill9_lose_and_duplicate_nothing() {
    let Some(env) = Env::new("restart") else {
        return;
    };
    let first = fleet(AGENTS, 0..50);
    let second = fleet(AGENTS, 50..MINUTES);
    env.produce(&first);
    let w1 = env.worker("w1", &[]);
    env.wait_committed(&[&w1]);
    w1.stop();
    // Windows around minute 50 are open at the stop: they live on in the
    // checkpoint and must close with the points that come later.
    env.produce(&second);
    // Small poll batches and frequent flushes: many commits, so the
    // SIGKILL lands mid-stream, after output was published past a
    // checkpoint at least sometimes.
    let small = [
        ("VIGIL_WORKER__MAX_POLL_RECORDS", "8"),
        ("VIGIL_STORAGE__FLUSH_RECORDS", "8"),
        ("VIGIL_WORKER__FLUSH_INTERVAL", "20ms"),
    ];
    // One client polls the commits, so the first one is seen within a
    // round trip (a new client per poll took long enough, on a loaded
    // runner, for the worker to finish the stream first).
    let watch = env.group_client();
    let before = env.committed_by(&watch);
    let w2 = env.worker("w2", &small);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.committed_by(&watch) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    w2.kill9();
    let (left, ends) = (env.committed(), env.ends(&env.topic));
    assert_ne!(left, ends, "the SIGKILL must land mid-stream");
    let w3 = env.worker("w3", &[]);
    env.wait_committed(&[&w3]);
    let log = w3.stop();
    // What the recovery did (visible with --nocapture).
    for l in log.lines().filter(|l| {
        l.contains("restored the partition")
            || l.contains("removed output")
            || l.contains("skipping")
    }) {
        eprintln!("w3: {l}");
    }
    assert!(log.contains("restored the partition"), "{log}");
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    assert_windows(&env, &all);
    // After a SIGKILL, alert events may be delivered again, always with
    // the same content and id.
    assert_incidents(&env, true);
}

/// The worker on an object store (moto, see `s3.rs`): Parquet and
/// checkpoints go to `s3://`, a graceful stop and a SIGKILL mid-stream
/// are followed by workers that restore the checkpoints from the store
/// (nothing on local disk), and the aggregates equal, row for row, those
/// of a run on a local directory over the same records (and the oracle).
#[test]
fn kafka_worker_on_s3_restores_its_checkpoint_from_the_store() {
    let Some(s3) = crate::s3::S3::new("worker") else {
        return;
    };
    let Some(env) = Env::new("s3") else {
        return;
    };
    let mut vars = s3.env();
    vars.push(("VIGIL_DATA_DIR", s3.location("data")));
    vars.push(("VIGIL_WORKER__STATE_DIR", s3.location("state")));
    let with = |more: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
        let mut v = vars.clone();
        v.extend(more.iter().map(|(k, x)| (*k, x.to_string())));
        v
    };
    let start = |label: &str, v: &[(&'static str, String)]| {
        let pairs: Vec<(&str, &str)> = v.iter().map(|(k, x)| (*k, x.as_str())).collect();
        env.worker(label, &pairs)
    };
    let first = fleet(AGENTS, 0..50);
    let second = fleet(AGENTS, 50..MINUTES);
    env.produce(&first);
    let w1 = start("w1", &with(&[]));
    env.wait_committed(&[&w1]);
    let mut logs = vec![w1.stop()];
    env.produce(&second);
    let small = with(&[
        ("VIGIL_WORKER__MAX_POLL_RECORDS", "8"),
        ("VIGIL_STORAGE__FLUSH_RECORDS", "8"),
        ("VIGIL_WORKER__FLUSH_INTERVAL", "20ms"),
    ]);
    let watch = env.group_client();
    let before = env.committed_by(&watch);
    let w2 = start("w2", &small);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.committed_by(&watch) == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    logs.push(w2.log());
    w2.kill9();
    let (left, ends) = (env.committed(), env.ends(&env.topic));
    assert_ne!(left, ends, "the SIGKILL must land mid-stream");
    // Output a dead worker published past its checkpoint, for certain:
    // a copy of one of partition 0's files under a range after any
    // checkpoint, on a day partition 0's intent record names (a dead
    // worker writes its intent before its files). Unless the restarted
    // worker's sweep (a listing of those days in the store) removes it,
    // its rows count twice.
    let data_root = s3.root("data");
    let store = data_root.as_object().unwrap();
    let intent = vigil_store::CheckpointStore::at(&s3.root("state"))
        .load_intent(&env.topic, 0)
        .unwrap()
        .expect("partition 0's intent record");
    let named: Vec<String> = intent
        .days
        .days(vigil_store::Dataset::Aggregates)
        .map(|d| vigil_store::naming::partition_dir(d).unwrap())
        .collect();
    let part0 = store
        .list("aggregates/")
        .unwrap()
        .into_iter()
        .map(|o| o.location.to_string())
        .find(|k| k.contains("-p00000-") && named.iter().any(|d| k.contains(d.as_str())))
        .unwrap();
    let stale = format!(
        "{}/part-{}-p00000-{:020}-{:020}.parquet",
        part0.rsplit_once('/').unwrap().0,
        env.topic,
        1_000_000,
        1_000_005
    );
    let bytes = store.get(&part0).unwrap().unwrap();
    data_root.write_file(&stale, &bytes, false).unwrap();
    let w3 = start("w3", &with(&[]));
    env.wait_committed(&[&w3]);
    let metrics = w3.metrics();
    let timings = |m: &str| -> Vec<String> {
        m.lines()
            .filter(|l| {
                (l.starts_with("vigil_store_flush_duration_seconds")
                    || l.starts_with("vigil_checkpoint_write_duration_seconds")
                    || l.starts_with("vigil_store_object_request_duration_seconds"))
                    && (l.contains("quantile=\"0.5\"") || l.contains("quantile=\"0.99\""))
            })
            .map(str::to_owned)
            .collect()
    };
    eprintln!("s3 worker:\n  {}", timings(&metrics).join("\n  "));
    for op in ["put", "get", "list", "delete"] {
        let series = format!("vigil_store_object_requests_total{{op=\"{op}\",status=\"ok\"}}");
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    let log = w3.stop();
    for l in log.lines().filter(|l| {
        l.contains("restored the partition")
            || l.contains("removed output")
            || l.contains("skipping")
    }) {
        eprintln!("w3: {l}");
    }
    assert!(log.contains("restored the partition"), "{log}");
    assert!(log.contains("removed output"), "{log}");
    logs.push(log);
    for l in &logs {
        assert!(
            !l.contains(crate::s3::SECRET_MARKER) && !l.contains(crate::s3::TOKEN_MARKER),
            "a credential leaked:\n{l}"
        );
    }
    // Checkpoints live in the store only.
    assert!(!env.dir.path().join("state").exists());
    assert!(!env.data().exists());
    let copy = env.dir.path().join("from-s3");
    let state = s3.download("state", &copy.join("state"));
    // Each partition's newest checkpoint, the one before it, its intent
    // record, and the state files they name (a base and its deltas: at
    // least one, and no other object).
    for p in 0..PARTITIONS {
        let states = state
            .iter()
            .filter(|k| {
                k.rsplit('/')
                    .next()
                    .is_some_and(|n| vigil_store::is_state_file_of(n, p))
            })
            .count();
        assert!(states >= 1, "partition {p}: {state:?}");
    }
    assert!(
        state.iter().all(|k| {
            let n = k.rsplit('/').next().unwrap_or_default();
            n.ends_with(".ckpt")
                || n.ends_with(".ckpt.prev")
                || n.ends_with(".intent")
                || (0..PARTITIONS).any(|p| vigil_store::is_state_file_of(n, p))
        }),
        "{state:?}"
    );
    for p in 0..PARTITIONS {
        for name in [
            format!("p{p:05}.ckpt"),
            format!("p{p:05}.ckpt.prev"),
            format!("p{p:05}.intent"),
        ] {
            assert!(
                state.iter().any(|k| k.ends_with(&name)),
                "{name}: {state:?}"
            );
        }
    }
    let keys = s3.download("data", &copy.join("data"));
    assert!(
        keys.iter().all(|k| !k.contains(".tmp-")),
        "no temporary object: {keys:?}"
    );
    assert!(!keys.contains(&stale), "the sweep removed {stale}");
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let (got, rows) = windows_in(&copy.join("data"));
    assert_eq!(rows, got.len(), "duplicate window rows in Parquet");

    // The same records through a worker on a local directory.
    let local = Env::new("s3-local").unwrap();
    local.produce(&all);
    let w = local.worker("local", &[]);
    local.wait_committed(&[&w]);
    eprintln!("local worker:\n  {}", timings(&w.metrics()).join("\n  "));
    w.stop();
    let (want, _) = actual_windows(&local);
    assert_eq!(got.len(), want.len(), "number of windows differs");
    for ((k, g), (wk, w)) in got.iter().zip(&want) {
        assert_eq!(k, wk);
        assert_eq!((g.0, g.2, g.3, g.4), (w.0, w.2, w.3, w.4), "{k:?}");
        assert!(
            (g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0),
            "sum of {k:?}"
        );
    }
    assert_windows(&local, &all);
}

#[test]
fn kafka_two_workers_share_partitions_and_match_the_oracle() {
    let Some(env) = Env::new("pair") else {
        return;
    };
    let a = env.worker("a", &[]);
    let b = env.worker("b", &[]);
    // Both members hold partitions before any data arrives.
    let deadline = Instant::now() + Duration::from_secs(60);
    let owned = |w: &WorkerProc| w.log().matches("partition assigned").count();
    while (owned(&a) == 0 || owned(&b) == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let records = fleet(AGENTS * 3, 0..MINUTES);
    env.produce(&records);
    env.wait_committed(&[&a, &b]);
    let (la, lb) = (a.stop(), b.stop());
    let processed = |log: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix("vigil run: stopped after "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (na, nb) = (processed(&la), processed(&lb));
    assert!(
        na > 0 && nb > 0,
        "both workers must process records: {na} and {nb}\n{la}\n----\n{lb}"
    );
    assert!(na + nb >= records.len() as u64);
    assert_windows(&env, &records);
    let events = alert_events(&env);
    assert!(events.contains_key(&("a3".into(), "cpu_high".into(), "resolved".into())));
    assert!(events.contains_key(&("a5".into(), "mem_high".into(), "firing".into())));
}

/// `text` without its ANSI escape sequences (the worker's log is coloured).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Issue 19 item 1: one worker process runs `worker.threads` members,
/// each a consumer of its own on a thread of its own. With two threads,
/// both own partitions, both process records, and the output is the
/// oracle's row for row, as with one.
#[test]
fn kafka_one_worker_with_two_threads_owns_partitions_on_both_and_matches_the_oracle() {
    let Some(env) = Env::new("threads") else {
        return;
    };
    let w = env.worker("w", &[("VIGIL_WORKER__THREADS", "2")]);
    let assigned = |k: usize| {
        plain(&w.log())
            .lines()
            .filter(|l| {
                l.contains(&format!("member{{member={k}}}")) && l.contains("partition assigned")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while (assigned(0) == 0 || assigned(1) == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        assigned(0) > 0 && assigned(1) > 0,
        "both members hold partitions:\n{}",
        w.log()
    );
    let records = fleet(AGENTS * 3, 0..MINUTES);
    env.produce(&records);
    env.wait_committed(&[&w]);
    let log = plain(&w.stop());
    // Each member reports what it processed when it stops.
    let processed = |k: usize| -> u64 {
        log.lines()
            .filter(|l| {
                l.contains(&format!("member{{member={k}}}")) && l.contains("worker stopped")
            })
            .find_map(|l| l.split("records=").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (n0, n1) = (processed(0), processed(1));
    assert!(
        n0 > 0 && n1 > 0,
        "both members process records: {n0} and {n1}\n{log}"
    );
    assert!(n0 + n1 >= records.len() as u64);
    assert!(log.contains("members=2"), "{log}");
    assert_windows(&env, &records);
    let events = alert_events(&env);
    assert!(events.contains_key(&("a3".into(), "cpu_high".into(), "resolved".into())));
    assert!(events.contains_key(&("a5".into(), "mem_high".into(), "firing".into())));
}

#[test]
fn kafka_malformed_records_land_in_the_dlq_topic_with_reason_and_source() {
    let Some(env) = Env::new("dlq") else {
        return;
    };
    let ok = |agent: &str, seq: u64, ts: &[(i64, f64)]| -> Vec<u8> {
        TelemetryBatch {
            status: Vec::new(),
            security_events: Vec::new(),
            tenant_id: "acme".into(),
            agent_id: agent.into(),
            seq,
            sent_at_ms: ts.iter().map(|p| p.0).max().unwrap_or(T0),
            agent: None,
            boot_id: 0,
            series: vec![series("cpu_pct", &[], ts)],
        }
        .encode_to_vec()
    };
    let mut bad_metric = TelemetryBatch::decode(ok("m", 1, &[(T0, 1.0)]).as_slice()).unwrap();
    bad_metric.series[0].metric = "cpu pct!".into();
    let mut mismatch = TelemetryBatch::decode(ok("l", 1, &[(T0, 1.0)]).as_slice()).unwrap();
    mismatch.series[0].values.push(2.0);
    let mut no_tenant = TelemetryBatch::decode(ok("n", 1, &[(T0, 1.0)]).as_slice()).unwrap();
    no_tenant.tenant_id.clear();
    let big: Vec<(i64, f64)> = (0..400).map(|k| (T0 + k * 100, k as f64)).collect();
    let far_future = chrono_now_ms() + 86_400_000;
    let records: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("g", b"\xff\xff not protobuf".to_vec(), Some("decode")),
        ("n", no_tenant.encode_to_vec(), Some("missing_id")),
        ("m", bad_metric.encode_to_vec(), Some("invalid_metric")),
        ("l", mismatch.encode_to_vec(), Some("length_mismatch")),
        ("b", ok("b", 1, &big), Some("too_large")),
        (
            "p",
            ok("p", 1, &[(T0, 1.0), (T0 + 1_000, f64::NAN)]),
            Some("non_finite"),
        ),
        (
            "p",
            ok("p", 2, &[(T0 + 2_000, 1.0), (far_future, 1.0)]),
            Some("future"),
        ),
        ("p", ok("p", 3, &[(T0 + 10 * MIN, 5.0)]), None),
        ("p", ok("p", 3, &[(T0 + 10 * MIN, 5.0)]), None), // resend: dropped, counted
        ("p", ok("p", 4, &[(T0 + 3_000, 7.0)]), Some("late")),
        ("s", ok("s", 5000, &[(T0, 1.0)]), None),
        // Far below seq 5000 and sent before it: an old resend, not a
        // restart (one sent after it would be taken as a restart).
        ("s", ok("s", 10, &[(T0 - 1_000, 1.0)]), Some("seq_too_old")),
        // The worker keeps consuming: these close p's and s's windows.
        ("p", ok("p", 5, &[(T0 + 20 * MIN, 1.0)]), None),
        ("s", ok("s", 5001, &[(T0 + 20 * MIN, 1.0)]), None),
    ];
    let produced: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|(k, v, _)| (k.to_string(), v.clone()))
        .collect();
    env.produce(&produced);
    let w = env.worker("w", &[("VIGIL_PIPELINE__LIMITS__MAX_BATCH_BYTES", "2000")]);
    env.wait_committed(&[&w]);
    let metrics = w.metrics();
    w.stop();

    // Where each input record landed, to check the source headers.
    let input = env.consume(&env.topic);
    let dlq = env.consume(&env.dlq);
    let mut by_reason: BTreeMap<String, Vec<Rec>> = BTreeMap::new();
    for r in dlq {
        by_reason
            .entry(r.headers["vigil.reason"].clone())
            .or_default()
            .push(r);
    }
    for (_, bytes, reason) in &records {
        let Some(reason) = reason else { continue };
        let got = by_reason
            .get(*reason)
            .unwrap_or_else(|| panic!("no dead letter for {reason}; have {:?}", by_reason.keys()));
        assert_eq!(got.len(), 1, "{reason}");
        let d = &got[0];
        let src = input.iter().find(|r| &r.payload == bytes).unwrap();
        assert_eq!(d.headers["vigil.source.topic"], env.topic, "{reason}");
        assert_eq!(
            d.headers["vigil.source.partition"],
            src.partition.to_string(),
            "{reason}"
        );
        assert_eq!(
            d.headers["vigil.source.offset"],
            src.offset.to_string(),
            "{reason}"
        );
        assert!(!d.headers["vigil.detail"].is_empty(), "{reason}");
        if matches!(*reason, "non_finite" | "future" | "late") {
            assert_eq!(d.headers["content-type"], vigil_kafka::headers::JSON);
            let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
            assert_eq!(v["reason"], *reason);
            assert_eq!(v["point_count"], 1);
        } else {
            assert_eq!(d.headers["content-type"], vigil_kafka::headers::PROTOBUF);
            assert_eq!(
                &d.payload, bytes,
                "{reason}: the original record, byte for byte"
            );
        }
    }
    assert_eq!(by_reason.values().map(Vec::len).sum::<usize>(), 9);
    for line in [
        "vigil_pipeline_rejected_records_total{reason=\"decode\"} 1",
        "vigil_pipeline_rejected_points_total{reason=\"late\"} 1",
        "vigil_pipeline_duplicate_batches_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    // The good points after the bad records made it to Parquet.
    let rows = sql(
        &env.data(),
        "SELECT agent, count FROM aggregates WHERE agent = 'p' AND CAST(window_start AS BIGINT) = 1793578200000",
    );
    assert_eq!(
        rows.iter().map(|b| b.num_rows()).sum::<usize>(),
        1,
        "p's minute-10 window"
    );
}

/// A batch of agent `agent` whose encoded size is exactly `target` bytes,
/// padded through its agent info (which no rule checks).
fn padded_to(mut b: TelemetryBatch, target: usize) -> Vec<u8> {
    for os in 0..4 {
        let mut k = 0usize;
        for _ in 0..8 {
            b.agent = Some(AgentInfo {
                hostname: "h".repeat(k),
                os: "o".repeat(os),
                ..AgentInfo::default()
            });
            let len = b.encoded_len();
            if len == target {
                return b.encode_to_vec();
            }
            k = (k as i64 + target as i64 - len as i64).max(0) as usize;
        }
    }
    panic!("cannot pad a batch to {target} bytes");
}

/// A batch with `n` one-point series (more than the 10,000 a batch may
/// have: refused as `too_many_series`), padded to `target` bytes.
fn many_series(agent: &str, seq: u64, n: usize, target: usize) -> Vec<u8> {
    let b = TelemetryBatch {
        status: Vec::new(),
        security_events: Vec::new(),
        tenant_id: "acme".into(),
        agent_id: agent.into(),
        seq,
        sent_at_ms: T0,
        boot_id: 0,
        agent: None,
        series: (0..n)
            .map(|i| series("service_up", &[("service", &format!("s{i}"))], &[(T0, 1.0)]))
            .collect(),
    };
    padded_to(b, target)
}

/// Issue 19 item 2: no poison pill. With the default limits (the
/// pipeline's 1 MiB `max_batch_bytes`, librdkafka's 1,000,000-byte
/// `message.max.bytes`), refused records at every size boundary (exactly
/// at the pipeline's limit, one byte over it, exactly at the dead-letter
/// budget and one byte over it, and a series of 50,000 refused points)
/// each produce one bounded dead letter, the full record is kept under
/// `dlq/full/` when the letter is truncated, and the partition goes on:
/// the good record after them lands in Parquet and every offset is
/// committed.
#[test]
fn kafka_poison_records_at_every_size_boundary_leave_the_partition_consuming() {
    let Some(env) = Env::new("poison") else {
        return;
    };
    let max_batch = vigil_ops::config::Limits::default().max_batch_bytes;
    let message_max = env.kafka_settings().producer_message_max_bytes().unwrap();
    assert_eq!(
        (max_batch, message_max),
        (1 << 20, 1_000_000),
        "default limits"
    );
    let budget = vigil_kafka::headers::dead_letter_value_budget(message_max);
    let batch = |seq: u64, pts: &[(i64, f64)]| -> Vec<u8> {
        TelemetryBatch {
            status: Vec::new(),
            security_events: Vec::new(),
            tenant_id: "acme".into(),
            agent_id: "z".into(),
            seq,
            sent_at_ms: pts.iter().map(|p| p.0).max().unwrap_or(T0),
            boot_id: 0,
            agent: None,
            series: vec![series("cpu_pct", &[], pts)],
        }
        .encode_to_vec()
    };
    let nans: Vec<(i64, f64)> = (0..50_000).map(|k| (T0 + 60_000 + k, f64::NAN)).collect();
    // (payload, reason, truncated on the topic)
    let poison: Vec<(Vec<u8>, &str, bool)> = vec![
        (
            many_series("z", 2, 10_001, max_batch),
            "too_many_series",
            true,
        ),
        (
            many_series("z", 3, 10_001, max_batch + 1),
            "too_large",
            true,
        ),
        (
            many_series("z", 4, 10_001, budget),
            "too_many_series",
            false,
        ),
        (
            many_series("z", 5, 10_001, budget + 1),
            "too_many_series",
            true,
        ),
        (batch(6, &nans), "non_finite", true),
    ];
    let mut records = vec![("z".to_string(), batch(1, &[(T0, 5.0)]))];
    records.extend(poison.iter().map(|(p, _, _)| ("z".to_string(), p.clone())));
    // After the poison: points in minute 10, then one that closes it.
    records.push(("z".into(), batch(7, &[(T0 + 10 * MIN, 7.0)])));
    records.push(("z".into(), batch(8, &[(T0 + 20 * MIN, 1.0)])));
    // Records over 1,000,000 bytes need a producer with a larger
    // message.max.bytes; zstd keeps the batches under the broker's limit.
    let p: BaseProducer = env
        .client()
        .set("message.max.bytes", "2000000")
        .set("compression.type", "zstd")
        .create()
        .unwrap();
    for (k, v) in &records {
        p.send(BaseRecord::to(&env.topic).key(k.as_bytes()).payload(v))
            .map_err(|(e, _)| e)
            .unwrap();
        p.flush(Duration::from_secs(30)).unwrap();
    }

    let w = env.worker("w", &[]);
    env.wait_committed(&[&w]);
    let metrics = w.metrics();
    let log = w.stop();

    let input = env.consume(&env.topic);
    let dlq = env.consume(&env.dlq);
    assert_eq!(dlq.len(), poison.len(), "one dead letter each:\n{log}");
    for (bytes, reason, truncated) in &poison {
        let src = input.iter().find(|r| &r.payload == bytes).unwrap();
        let d = dlq
            .iter()
            .find(|d| d.headers["vigil.source.offset"] == src.offset.to_string())
            .unwrap_or_else(|| panic!("no dead letter for offset {}", src.offset));
        let what = format!("{reason} of {} bytes", bytes.len());
        assert_eq!(d.headers["vigil.reason"], *reason, "{what}");
        assert_eq!(
            d.headers["vigil.source.partition"],
            src.partition.to_string()
        );
        let hs: Vec<(&str, &[u8])> = d
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let wire = vigil_kafka::headers::wire_size(
            d.key.as_ref().map_or(0, Vec::len),
            d.payload.len(),
            &hs,
        );
        assert!(wire <= message_max, "{what}: {wire} bytes on the wire");
        if !truncated {
            assert_eq!(d.headers["content-type"], vigil_kafka::headers::PROTOBUF);
            assert!(!d.headers.contains_key("vigil.truncated"));
            assert_eq!(&d.payload, bytes, "{what}: the record, byte for byte");
            continue;
        }
        assert_eq!(
            d.headers["content-type"],
            vigil_kafka::headers::JSON,
            "{what}"
        );
        assert_eq!(d.headers["vigil.truncated"], "true", "{what}");
        let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
        assert!(d.payload.len() <= budget, "{what}");
        assert_eq!(v["truncated"], true, "{what}");
        assert_eq!(v["reason"], *reason);
        assert_eq!(v["offset"], src.offset);
        if *reason != "too_large" {
            assert_eq!(v["agent"], "z", "{what}");
        }
        let full = std::fs::read(env.data().join(v["full_path"].as_str().unwrap())).unwrap();
        assert_eq!(v["original_bytes"], full.len(), "{what}");
        assert_eq!(v["digest"], vigil_store::digest(&full), "{what}");
        if *reason == "non_finite" {
            // The full copy is the whole letter: every refused point.
            let all: serde_json::Value = serde_json::from_slice(&full).unwrap();
            assert_eq!(all["points"].as_array().unwrap().len(), 50_000);
            assert_eq!(v["point_count"], 50_000);
            let kept = v["points"].as_array().unwrap().len();
            assert!(kept > 10_000 && kept < 50_000, "{kept}");
        } else {
            assert_eq!(&full, bytes, "{what}: the full record under dlq/full");
            assert!(!v["head"].as_str().unwrap().is_empty());
        }
    }
    assert!(
        metrics.contains("vigil_dlq_letters_truncated_total{sink=\"topic\"} 4"),
        "{metrics}"
    );
    // The partition kept consuming: the window after the poison records.
    let rows = sql(
        &env.data(),
        "SELECT count FROM aggregates WHERE agent = 'z' AND CAST(window_start AS BIGINT) = 1793578200000",
    );
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1, "{log}");
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn kafka_cli_creates_topics_and_simulates_into_them() {
    let Some(brokers) = brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unique = format!("{}-{}", std::process::id(), chrono_now_ms() % 1_000_000_000);
    let (tel, alerts) = (format!("cli-tel-{unique}"), format!("cli-alerts-{unique}"));
    let vigil = |args: &[&str]| {
        let out = Command::new(vigil_bin())
            .args(args)
            .current_dir(dir.path())
            .env("VIGIL_KAFKA__BROKERS", &brokers)
            .env("VIGIL_KAFKA__TELEMETRY_TOPIC", &tel)
            .env("VIGIL_KAFKA__ALERT_TOPIC", &alerts)
            .env("VIGIL_KAFKA__DLQ_TOPIC", "")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "vigil {args:?}:\n{text}");
        text
    };
    let first = vigil(&["topics", "create", "--partitions", "3"]);
    assert!(
        first.contains(&format!("created topic {tel} (3 partitions)")),
        "{first}"
    );
    let again = vigil(&["topics", "create"]);
    assert!(
        again.contains(&format!("topic {tel} already exists")),
        "{again}"
    );

    let out = vigil(&[
        "simulate",
        "--brokers",
        &brokers,
        "--agents",
        "20",
        "--hours",
        "0.5",
        "--rate",
        "5000",
    ]);
    let produced: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        out.contains("records/s") && out.contains("all acknowledged"),
        "{out}"
    );
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let on_topic: i64 = (0..3)
        .map(|p| {
            c.fetch_watermarks(&tel, p, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum();
    assert_eq!(on_topic as u64, produced, "{out}");
}

/// The number just before `unit` on the first line that starts with
/// `prefix` and has `unit`.
fn figure(out: &str, prefix: &str, unit: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(prefix) && l.contains(unit))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} with {unit:?} in:\n{out}"));
    let before = line.split(unit).next().unwrap_or_default();
    before
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {unit:?} in {line:?}"))
}

/// The lag table's rows: (t, produced, processed, lag, committed lag).
fn lag_rows(out: &str) -> Vec<[f64; 5]> {
    out.lines()
        .filter_map(|l| {
            let v: Vec<f64> = l
                .split_whitespace()
                .take(5)
                .map(|w| w.parse().ok())
                .collect::<Option<_>>()?;
            (v.len() == 5 && l.trim_end().ends_with(" M")).then(|| [v[0], v[1], v[2], v[3], v[4]])
        })
        .collect()
}

#[test]
fn kafka_bench_reports_worker_rate_lag_and_alert_ack_latency() {
    let Some(brokers) = brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bench = |extra: &[&str]| -> String {
        // A fleet whose first 2 h raise threshold incidents (10 alert
        // events in process), small enough for a debug build.
        let mut args = vec![
            "bench",
            "--brokers",
            &brokers,
            "--agents",
            "20",
            "--hours",
            "2",
            "--seed",
            "1",
            "--runs",
            "1",
            "--sample-every",
            "1",
        ];
        args.extend_from_slice(extra);
        let out = Command::new(vigil_bin())
            .args(&args)
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .env("VIGIL_STORAGE__PARQUET__SYNC", "false")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "vigil {args:?}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };

    // Rate mode: 40,000 points/s for 3 s while the worker consumes (the
    // 112,000-point fleet is lengthened to hold 120,000).
    let out = bench(&["--rate", "40000", "--duration", "3", "--partitions", "3"]);
    let produced = figure(&out, "producer ", "records,");
    assert!(produced > 2000.0, "{out}");
    let rate = figure(&out, "producer ", "M points/s");
    assert!(rate > 0.0 && rate < 0.1, "paced at 0.04 M points/s:\n{out}");
    let worker = figure(&out, "worker ", "M points/s");
    assert!(worker > 0.0, "{out}");
    let rows = lag_rows(&out);
    assert!(rows.len() >= 3, "lag rows every second:\n{out}");
    for r in &rows {
        assert!(
            r[2] <= r[1] && r[3] == r[1] - r[2],
            "lag = produced - processed: {r:?}\n{out}"
        );
    }
    let last = rows.last().unwrap();
    assert_eq!(
        last[1], produced,
        "everything produced is on the topic:\n{out}"
    );
    assert_eq!((last[2], last[3]), (produced, 0.0), "and processed:\n{out}");
    assert!(out.contains("lag           max "), "{out}");
    assert!(out.contains("drain         "), "{out}");
    let alerts = figure(&out, "alert ack ", "alerts,");
    assert!(alerts > 0.0, "the fleet raises alerts:\n{out}");
    let (p50, p99, max) = (
        figure(&out, "alert ack ", "ms, p99"),
        figure(&out, "alert ack ", "ms, max"),
        figure(&out, "alert ack ", "ms (mean"),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max && max < 60_000.0,
        "p50 {p50} p99 {p99} max {max}:\n{out}"
    );
    assert!(
        out.contains(&format!(
            "committed     {produced} of {produced} records (committed lag 0)"
        )),
        "{out}"
    );
    assert!(out.contains("topics        deleted "), "{out}");

    // Backlog mode: produce first, then drain.
    let out = bench(&[]);
    assert!(figure(&out, "worker ", "M points/s") > 0.0, "{out}");
    assert!(out.contains("drained to 0 (backlog mode"), "{out}");
    assert!(figure(&out, "alert ack ", "alerts,") > 0.0, "{out}");
    assert!(out.contains("(committed lag 0)"), "{out}");

    // Issue 19 item 1: capacity with 1 and 2 threads in one run, each on
    // a topic of its own that its members join before the fleet comes;
    // every record processed and committed in both, and the share of the
    // members' time spent flushing.
    let out = bench(&["--threads", "1,2", "--partitions", "4"]);
    assert_eq!(out.matches("(committed lag 0)").count(), 2, "{out}");
    assert!(out.contains("owns the 4 partitions after"), "{out}");
    assert!(out.contains("(2 members)"), "{out}");
    let flushing: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("flushing "))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(flushing.len(), 2, "{out}");
    assert!(flushing.iter().all(|f| (0.0..=100.0).contains(f)), "{out}");
    // The publishing threads worked beside the members.
    let publishing: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("flushing "))
        .filter_map(|l| {
            l.split("publishing beside it ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(publishing.len(), 2, "{out}");
    assert!(publishing.iter().all(|p| *p > 0.0), "{out}");
    let one = figure(&out, "capacity ", "M points/s (1.00 × 1)");
    assert!(one > 0.0, "{out}");
    assert!(out.contains("2 members: "), "{out}");
    assert_eq!(out.matches("topics        deleted ").count(), 2, "{out}");
    // A checkpoint per partition with records (20 agents may leave one
    // of the 4 partitions empty), in each run.
    assert_eq!(out.matches("checkpoints   ").count(), 2, "{out}");
    assert!(figure(&out, "checkpoints ", "written") >= 1.0, "{out}");
}

/// The rules audit trail of `vigil run` (docs/storage.md, "`audit`"):
/// two workers of one group that start at once each record their start
/// under their own worker id (no file name collides), both under the
/// same digest; a restart under an edited rules file with `[meta]`
/// records the change with who made it, and counts it in
/// `vigil_rules_changes_total`.
#[test]
fn kafka_workers_record_their_rules_in_the_audit_trail() {
    use datafusion::arrow::array::AsArray;

    let Some(env) = Env::new("audit") else {
        return;
    };
    env.produce(&fleet(AGENTS, 0..10));
    let rules = env.dir.path().join("rules.toml");
    std::fs::write(&rules, vigil_ops::rules::DEFAULT_RULES_TOML).unwrap();
    let r = rules.to_str().unwrap().to_owned();
    let a = env.worker("a", &[("VIGIL_WORKER__ID", "pod-a"), ("VIGIL_RULES", &r)]);
    let b = env.worker("b", &[("VIGIL_WORKER__ID", "pod-b"), ("VIGIL_RULES", &r)]);
    env.wait_committed(&[&a, &b]);
    let (log_a, log_b) = (a.stop(), b.stop());
    for log in [&log_a, &log_b] {
        assert!(log.contains("rules recorded in the audit trail"), "{log}");
    }
    let edited = format!(
        "[meta]\nchanged_by = \"ops@example.com\"\nchange_ref = \"CHG-9\"\n\n{}",
        vigil_ops::rules::DEFAULT_RULES_TOML.replacen("value = 90", "value = 85", 1)
    );
    std::fs::write(&rules, edited).unwrap();
    let c = env.worker("c", &[("VIGIL_WORKER__ID", "pod-a"), ("VIGIL_RULES", &r)]);
    let (_, metrics) = c.get_until("/metrics", Duration::from_secs(30), |_, body| {
        body.contains("vigil_rules_changes_total{kind=\"rule_changed\"} 1")
    });
    let log_c = c.stop();
    assert!(
        metrics.contains("vigil_rules_changes_total{kind=\"rule_changed\"} 1"),
        "{metrics}\n{log_c}"
    );
    let rows = sql(
        &env.data(),
        "SELECT worker, event, command, rules_digest, coalesce(previous_digest, '-') AS p, \
         coalesce(rule, '-') AS rule, coalesce(changed_by, '-') AS who \
         FROM audit ORDER BY event_time, seq",
    );
    let mut got: Vec<[String; 7]> = Vec::new();
    for b in &rows {
        for i in 0..b.num_rows() {
            got.push(std::array::from_fn(|c| {
                b.column(c).as_string::<i32>().value(i).to_owned()
            }));
        }
    }
    assert_eq!(got.len(), 4, "{got:?}");
    let firsts: BTreeSet<&str> = got[..2].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(firsts, BTreeSet::from(["pod-a", "pod-b"]), "{got:?}");
    assert!(got.iter().all(|r| r[2] == "run"), "{got:?}");
    assert_eq!(got[0][3], got[1][3], "the same rules, the same digest");
    assert_eq!(
        [
            got[2][0].as_str(),
            got[2][1].as_str(),
            got[3][1].as_str(),
            got[3][5].as_str()
        ],
        ["pod-a", "rules_loaded", "rule_changed", "cpu_high"],
        "{got:?}"
    );
    assert_eq!(
        got[2][4], got[0][3],
        "the edit is diffed against the recorded rules"
    );
    assert_ne!(got[2][3], got[0][3]);
    assert_eq!(
        [got[2][6].as_str(), got[3][6].as_str()],
        ["ops@example.com"; 2]
    );
}
