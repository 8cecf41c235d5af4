//! `vigil export` end to end: alert events written to the `alerts`
//! dataset (and security events written to `security_events`, with
//! `--dataset security_events`), exported by the binary, and read back
//! by real receivers:
//! rsyslog (Debian's package, extracted by `scripts/test.sh`, which sets
//! `VIGIL_RSYSLOG_ROOT`) over TCP and TLS, which parses each RFC 5424
//! message and writes its fields as JSON; files and stdout; and the test
//! Kafka broker (`VIGIL_TEST_BROKERS`).
//!
//! A test whose service is missing is skipped loudly, or fails when
//! `VIGIL_REQUIRE_SYSLOG=1` / `VIGIL_REQUIRE_BROKER=1`.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vigil_ops::model::{AlertEvent, AlertStatus, DetectorKind, ResolveReason, Severity};
use vigil_store::{AlertsWriter, SourceRange, WriterConfig};

use crate::common::{free_port, posture_data, security_event_schema, vigil_bin};

/// 2026-11-03T00:00:00Z.
const MIDNIGHT: i64 = 1_793_664_000_000;
const SEC: i64 = 1000;

/// `n` alert events one second apart from `start`, in two tenants and
/// three rules, firing then resolved, with awkward text (quotes,
/// brackets, pipes, equals signs, non-ASCII) in the fields the syslog
/// and CEF escaping must handle. Returned in export order.
fn events(n: usize, start: i64) -> Vec<AlertEvent> {
    let rules = [
        ("disk_high", DetectorKind::Threshold, Severity::Warning),
        ("agent_offline", DetectorKind::Offline, Severity::Critical),
        ("cpu_anomaly", DetectorKind::Anomaly, Severity::Info),
    ];
    (0..n)
        .map(|i| {
            let (rule, kind, severity) = rules[i % 3];
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            let agent = format!("agent-{}", i % 7);
            let resolved = i % 5 == 4;
            let t = start + i as i64 * SEC;
            let fingerprint = vigil_ops::model::fingerprint(rule, tenant, &agent, "m", "");
            let started = if resolved { t - 60 * SEC } else { t };
            AlertEvent {
                id: vigil_ops::model::incident_id(&fingerprint, started),
                fingerprint,
                rule: rule.into(),
                kind,
                severity,
                status: if resolved {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Firing
                },
                suppressed: i % 11 == 0,
                tenant: tenant.into(),
                agent: agent.clone(),
                hostname: (i % 4 != 0).then(|| format!("host-{}.{tenant}.example", i % 7)),
                metric: (kind != DetectorKind::Offline).then(|| "disk_used_pct".into()),
                labels: if kind == DetectorKind::Offline {
                    String::new()
                } else {
                    "mount=/data".into()
                },
                value: (kind != DetectorKind::Offline).then_some(90.0 + (i % 10) as f64),
                threshold: (kind == DetectorKind::Threshold).then_some(90.0),
                predicted_at_ms: None,
                window_start_ms: (kind != DetectorKind::Offline).then_some(t - 60 * SEC),
                window_end_ms: (kind != DetectorKind::Offline).then_some(t),
                started_at_ms: started,
                resolved_at_ms: resolved.then_some(t),
                resolve_reason: resolved.then_some(ResolveReason::Cleared),
                flaps: (resolved && kind == DetectorKind::Threshold).then_some(i as u32 % 3),
                event_time_ms: t,
                summary: format!("{rule} on \"{agent}\" [x|y=z] ünï #{i}"),
            }
        })
        .collect()
}

/// Writes `evs` into the alerts dataset under `dir`.
fn store(dir: &Path, evs: &[AlertEvent]) {
    let mut w = AlertsWriter::new(
        dir,
        WriterConfig {
            sync: false,
            ..WriterConfig::default()
        },
    )
    .unwrap();
    for a in evs {
        w.push(a);
    }
    w.flush(SourceRange {
        source: "export-test",
        partition: 0,
        first_offset: 0,
        last_offset: evs.len() as i64,
        tick: 0,
    })
    .unwrap();
}

fn encode(format: &str, a: &AlertEvent) -> String {
    let mut out = Vec::new();
    vigil_sink::encoding(format).unwrap().encode(a, &mut out);
    String::from_utf8(out).unwrap()
}

fn export(data: &Path, args: &[&str]) -> Output {
    Command::new(vigil_bin())
        .arg("export")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Starts `vigil export` over `data` with `args` in the background
/// (stdout discarded, stderr kept), for tests that act on the receiver
/// while it runs.
fn spawn_export(data: &Path, args: &[&str]) -> std::process::Child {
    Command::new(vigil_bin())
        .arg("export")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "export failed: {err}");
    err
}

// ---------------------------------------------------------------- rsyslog

/// The rsyslogd binary, its module directory and library path; `None`
/// (test skipped) when absent and not required.
fn rsyslog() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let root = std::env::var_os("VIGIL_RSYSLOG_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    let bin = root.join("usr/sbin/rsyslogd");
    // usr/lib/<multiarch>/rsyslog holds the modules.
    let lib = std::fs::read_dir(root.join("usr/lib"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .find(|d| d.join("rsyslog/lmnsd_ossl.so").exists());
    if let (true, Some(lib)) = (bin.exists(), lib) {
        return Some((bin, lib.join("rsyslog"), lib));
    }
    assert!(
        std::env::var("VIGIL_REQUIRE_SYSLOG").as_deref() != Ok("1"),
        "VIGIL_REQUIRE_SYSLOG=1 but rsyslogd (with rsyslog-openssl) is not under {}",
        root.display()
    );
    eprintln!("skipped: no rsyslogd; scripts/test.sh extracts Debian's rsyslog and sets VIGIL_RSYSLOG_ROOT");
    None
}

/// TLS files made with the openssl command-line tool: a CA, a server
/// certificate for 127.0.0.1, a client certificate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("the openssl command-line tool");
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=vigil test CA",
        ]);
        std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for who in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN=vigil test {who}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

/// One rsyslogd on 127.0.0.1, writing every message it parses as one
/// JSON line (its RFC 5424 fields) to `out`.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    out: PathBuf,
    tls: bool,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, pki: Option<&Pki>) -> Rsyslog {
        let (bin, modules, lib) = rsyslog().expect("checked by the caller");
        std::fs::create_dir_all(dir).unwrap();
        let out = dir.join("received.jsonl");
        let tls = match pki {
            None => String::new(),
            Some(p) => format!(
                "DefaultNetstreamDriver=\"ossl\" DefaultNetstreamDriverCAFile=\"{}\" \
                 DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                p.path("ca.pem"),
                p.path("server.pem"),
                p.path("server.key")
            ),
        };
        // Client certificates are required and checked against the CA.
        let driver = if pki.is_some() {
            "StreamDriver.Name=\"ossl\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"x509/certvalid\""
        } else {
            ""
        };
        let conf = format!(
            r#"global(workDirectory="{dir}" maxMessageSize="256k" {tls})
main_queue(queue.type="Direct")
module(load="imtcp" {driver})
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="time" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
action(type="omfile" file="{out}" template="fields" flushOnTXEnd="on" asyncWriting="off")
"#,
            dir = dir.display(),
            out = out.display(),
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("rsyslogd.log")).unwrap();
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .arg("-M")
            .arg(modules)
            .env("LD_LIBRARY_PATH", lib)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut r = Rsyslog {
            child: Some(child),
            dir: dir.to_owned(),
            port,
            out,
            tls: pki.is_some(),
        };
        r.wait_listening();
        r
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rsyslogd exited ({st}): {}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it with SIGTERM: it stores every message it read before it
    /// exits (SIGKILL can lose the last batch it read and closed on, which
    /// an export counts as sent: TCP has no acknowledgement; docs/siem.md).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// What it received so far, one JSON object per message. rsyslog may
    /// be writing the file while it is read: a last line without its
    /// newline is still being written and is left for the next read.
    fn received(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits until at least `n` messages arrived (rsyslog writes after
    /// the sender's connection ends) and returns them.
    fn wait_for(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages arrived: {}",
                got.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "tcp" };
        format!("syslog+{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The incident id in a received message's structured data.
fn incident(m: &serde_json::Value) -> String {
    let sd = m["sd"].as_str().unwrap();
    let start = sd.find("incident=\"").unwrap() + "incident=\"".len();
    sd[start..start + 32].to_owned()
}

/// Checks that `got` holds `want`, one message each, in order, with every
/// RFC 5424 field as documented and MSG the event in `format`.
fn check_messages(got: &[serde_json::Value], want: &[AlertEvent], format: &str) {
    assert_eq!(got.len(), want.len());
    for (m, a) in got.iter().zip(want) {
        let sev = match (a.status, a.severity) {
            (AlertStatus::Resolved, _) => 5,
            (_, Severity::Critical) => 2,
            (_, Severity::Warning) => 4,
            (_, Severity::Info) => 6,
        };
        assert_eq!(m["pri"], (16 * 8 + sev).to_string(), "{m}");
        let t = chrono::DateTime::parse_from_rfc3339(m["time"].as_str().unwrap()).unwrap();
        assert_eq!(t.timestamp_millis(), a.event_time_ms, "{m}");
        assert_eq!(
            m["host"],
            a.hostname.clone().unwrap_or(a.agent.clone()),
            "{m}"
        );
        assert_eq!(m["app"], "vigil");
        assert_eq!(m["procid"], "-");
        assert_eq!(m["msgid"], a.rule.as_str());
        assert_eq!(incident(m), a.id);
        let sd = m["sd"].as_str().unwrap();
        assert!(sd.starts_with("[vigil@32473 "), "{sd}");
        for (k, v) in [
            ("status", a.status.as_str()),
            ("severity", a.severity.as_str()),
            ("tenant", &a.tenant),
            ("fingerprint", &a.fingerprint),
        ] {
            assert!(sd.contains(&format!("{k}=\"{v}\"")), "{k} in {sd}");
        }
        assert_eq!(m["msg"].as_str().unwrap(), encode(format, a), "{m}");
    }
}

#[test]
fn export_to_rsyslog_over_tcp_in_cef() {
    if rsyslog().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let evs = events(300, MIDNIGHT - 100 * SEC);
    store(&data, &evs);
    let r = Rsyslog::start(&dir.path().join("rsyslog"), free_port(), None);
    let err = ok(&export(
        &data,
        &["--format", "cef", "--to", &r.url(), "--batch", "64"],
    ));
    assert!(err.contains("exported 300 alert events"), "{err}");
    eprintln!("{err}");
    let got = r.wait_for(evs.len());
    check_messages(&got, &evs, "cef");
}

#[test]
fn export_to_rsyslog_over_tls_with_a_client_certificate_and_filters() {
    if rsyslog().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let evs = events(200, MIDNIGHT - 100 * SEC);
    store(&data, &evs);
    let pki = Pki::new(dir.path());
    let r = Rsyslog::start(&dir.path().join("rsyslog"), free_port(), Some(&pki));
    // [midnight - 10 s, midnight + 50 s) of tenant acme.
    let from = "2026-11-02T23:59:50Z";
    let to = "2026-11-03T01:00:50+01:00";
    let o = export(
        &data,
        &[
            "--format",
            "json",
            "--from",
            from,
            "--to",
            to,
            "--tenant",
            "acme",
            "--to",
            &r.url(),
            "--ca",
            &pki.path("ca.pem"),
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client.key"),
        ],
    );
    ok(&o);
    let want: Vec<AlertEvent> = evs
        .iter()
        .filter(|a| {
            a.tenant == "acme"
                && a.event_time_ms >= MIDNIGHT - 10 * SEC
                && a.event_time_ms < MIDNIGHT + 50 * SEC
        })
        .cloned()
        .collect();
    assert_eq!(want.len(), 30);
    let got = r.wait_for(want.len());
    check_messages(&got, &want, "json");

    // With the wrong CA, Vigil refuses the receiver: the export fails
    // loudly at once (a certificate problem is not retried) and sends
    // nothing.
    let o = export(
        &data,
        &[
            "--to",
            &r.url(),
            "--ca",
            &pki.path("server.pem"),
            "--retries",
            "1",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("after 0 events were sent"), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert_eq!(r.received().len(), want.len());
}

#[test]
fn a_receiver_killed_mid_export_gets_every_event_at_least_once() {
    if rsyslog().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let evs = events(20_000, MIDNIGHT);
    store(&data, &evs);
    let port = free_port();
    let rdir = dir.path().join("rsyslog");
    let mut r = Rsyslog::start(&rdir, port, None);
    let url = r.url();
    let child = spawn_export(
        &data,
        &[
            "--format",
            "cef",
            "--batch",
            "500",
            "--retries",
            "8",
            "--backoff",
            "100ms",
            "--to",
            &url,
        ],
    );
    // Take the receiver down once the first batches arrived (mid-export:
    // the connection in flight is dropped), restart it a second later on
    // the same port. SIGTERM, not SIGKILL: a receiver killed after it read
    // a batch and before it stored it loses that batch, which TCP cannot
    // tell the sender (docs/siem.md); that case needs application
    // acknowledgements and is not what this test checks.
    r.wait_for(1000);
    r.stop();
    let at_kill = r.received().len();
    std::thread::sleep(Duration::from_secs(1));
    let r2 = Rsyslog::start(&rdir, port, None);
    let o = child.wait_with_output().unwrap();
    let err = ok(&o);
    assert!(
        at_kill < evs.len(),
        "the export ended before the kill ({at_kill} received)"
    );
    assert!(err.contains("exported 20000 alert events"), "{err}");
    assert!(!err.contains("; 0 batch retries"), "no retry: {err}");
    assert!(
        err.contains("reconnecting and sending the batch again"),
        "{err}"
    );
    let got = r2.wait_for(evs.len());
    // Every event at least once, and in order once duplicates (the
    // re-sent batch) are dropped.
    let mut seen = HashSet::new();
    let order: Vec<String> = got
        .iter()
        .map(incident)
        .zip(got.iter().map(|m| m["time"].as_str().unwrap().to_owned()))
        .filter(|k| seen.insert(k.clone()))
        .map(|(id, _)| id)
        .collect();
    let want: Vec<String> = evs.iter().map(|a| a.id.clone()).collect();
    assert_eq!(order, want);
    eprintln!(
        "{}\nkilled at {at_kill} received; {} messages for {} events ({} duplicates)",
        err.lines().last().unwrap_or_default(),
        got.len(),
        evs.len(),
        got.len() - evs.len()
    );
}

#[test]
fn an_export_whose_receiver_stays_down_fails_with_the_count_sent() {
    if rsyslog().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let evs = events(20_000, MIDNIGHT);
    store(&data, &evs);
    let mut r = Rsyslog::start(&dir.path().join("rsyslog"), free_port(), None);
    let url = r.url();
    let child = spawn_export(
        &data,
        &[
            "--batch",
            "500",
            "--retries",
            "2",
            "--backoff",
            "50ms",
            "--to",
            &url,
        ],
    );
    r.wait_for(1000);
    r.stop();
    let received = r.received().len();
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let sent: usize = err
        .split("failed after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in: {err}"));
    assert!(sent > 0 && sent.is_multiple_of(500), "{err}");
    assert!(
        sent <= received && received < evs.len(),
        "{sent} sent, {received} received"
    );
    // The resume point is the first unconfirmed event.
    let next = &evs[sent];
    assert!(err.contains(&format!("incident {}", next.id)), "{err}");
    assert!(err.contains("3 attempts"), "{err}");
}

// ------------------------------------------------------- stdout and files

#[test]
fn export_to_stdout_and_file_with_exact_time_bounds_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let evs = events(120, MIDNIGHT - 60 * SEC);
    store(&data, &evs);

    // stdout, every event, JSON: one line each, in event-time order.
    let o = export(&data, &[]);
    ok(&o);
    let text = String::from_utf8(o.stdout).unwrap();
    let want: Vec<String> = evs.iter().map(|a| encode("json", a)).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), want);
    // Rebuilt from Parquet, each is a whole alert event: valid against
    // the alert JSON Schema, resolved ones with their reason.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../schemas/alert.v1.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}: {line}");
        if v["status"] == "resolved" {
            assert_eq!(v["resolve_reason"], "cleared", "{line}");
        }
    }

    // --from is inclusive, --to exclusive, at the exact millisecond.
    let path = dir.path().join("out/alerts.ocsf.jsonl");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = format!("file:{}", path.display());
    let o = export(
        &data,
        &[
            "--format",
            "ocsf",
            "--from",
            "2026-11-03T00:00:00Z",
            "--to",
            "2026-11-03T00:00:10Z",
            "--rule",
            "disk_high",
            "--to",
            &file,
        ],
    );
    ok(&o);
    assert!(o.stdout.is_empty());
    let got = std::fs::read_to_string(&path).unwrap();
    let want: Vec<String> = evs
        .iter()
        .filter(|a| {
            a.rule == "disk_high"
                && a.event_time_ms >= MIDNIGHT
                && a.event_time_ms < MIDNIGHT + 10 * SEC
        })
        .map(|a| encode("ocsf", a))
        .collect();
    // 00:00:00, :03, :06, :09 (every third second is disk_high).
    assert_eq!(want.len(), 4);
    assert_eq!(got.lines().collect::<Vec<_>>(), want);
    // Only the published file: no partial left.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    // A range that selects nothing writes an empty file; bad input is a
    // usage error naming the problem.
    ok(&export(&data, &["--from", "2030-01-01", "--to", &file]));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    for (args, needle) in [
        (vec!["--format", "xml"], "unknown --format"),
        (vec!["--from", "yesterday"], "bad time"),
        (
            vec!["--from", "-1h", "--to", "-2h"],
            "--from must be before --to",
        ),
        (vec!["--to", "syslog+udp://h:1"], "bad destination"),
        (vec!["--ca", "x.pem"], "syslog+tls"),
    ] {
        let o = export(&data, &args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

// ------------------------------------------------------------------ kafka

/// The test broker from scripts/test.sh; `None` (the test skips) only
/// when no broker is required.
fn test_brokers() -> Option<String> {
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

/// One record read back from a topic: key, payload, and the
/// `vigil.encoding` and `content-type` headers.
type ReadBack = (Option<String>, String, Option<String>, Option<String>);

/// Runs `vigil export --to kafka://<new topic>` with `args` over the
/// datasets under `data`, then reads the topic's `n` records back from
/// its start (one partition, so in the order sent).
fn export_to_kafka_and_read(brokers: &str, data: &Path, args: &[&str], n: usize) -> Vec<ReadBack> {
    use vigil_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    use vigil_kafka::rdkafka::message::Headers;
    use vigil_kafka::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    let topic = crate::common::unique_name("export");
    let settings = vigil_kafka::KafkaSettings {
        brokers: brokers.to_owned(),
        ..vigil_kafka::KafkaSettings::default()
    };
    vigil_kafka::admin::create_topics(&settings, &[(&topic, 1)], Duration::from_secs(30)).unwrap();
    let o = Command::new(vigil_bin())
        .arg("export")
        .args(args)
        .arg("--to")
        .arg(format!("kafka://{topic}"))
        .arg("--data-dir")
        .arg(data)
        .env("VIGIL_KAFKA__BROKERS", brokers)
        .output()
        .unwrap();
    ok(&o);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(Instant::now() < deadline, "{} of {n} read back", got.len());
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let header = |k: &str| {
            m.headers()
                .and_then(|hs| hs.iter().find(|h| h.key == k))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        got.push((
            m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            header("vigil.encoding"),
            header("content-type"),
        ));
    }
    // Nothing more than the events: a short poll finds no extra record.
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            panic!("record {} past the {n} exported", m.unwrap().offset());
        }
    }
    let _ = std::io::stderr().flush();
    got
}

#[test]
fn export_to_kafka_with_headers_keys_and_order() {
    let Some(brokers) = test_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let evs = events(250, MIDNIGHT);
    store(&data, &evs);
    let got = export_to_kafka_and_read(
        &brokers,
        &data,
        &["--format", "ecs", "--batch", "100"],
        evs.len(),
    );
    for (g, a) in got.iter().zip(&evs) {
        assert_eq!(g.0.as_deref(), Some(a.fingerprint.as_str()));
        assert_eq!(g.1, encode("ecs", a));
        assert_eq!(g.2.as_deref(), Some("ecs"));
        assert!(
            g.3.as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{g:?}"
        );
    }
}

/// The posture lab's security events to Kafka through the broker, in
/// OCSF: every event once, in export order, keyed by its agent (the
/// order per agent the telemetry topic has), with the encoding headers.
#[test]
fn export_security_events_to_kafka() {
    let Some(brokers) = test_brokers() else {
        return;
    };
    let data = posture_data();
    let mut all = data.security.clone();
    export_order(&mut all);
    assert!(all.len() > 1000, "{} events", all.len());
    let got = export_to_kafka_and_read(
        &brokers,
        data.dir.path(),
        &["--dataset", "security_events", "--format", "ocsf"],
        all.len(),
    );
    for (g, e) in got.iter().zip(&all) {
        assert_eq!(g.0.as_deref(), Some(e.agent.as_str()));
        assert_eq!(g.1, encode_security("ocsf", e));
        assert_eq!(g.2.as_deref(), Some("ocsf"));
        assert!(
            g.3.as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{g:?}"
        );
    }
}

// -------------------------------------------------------- security events

/// The export order of security events: event time, tenant, agent, kind,
/// then the other fields, nulls (empty strings) first.
fn export_order(rows: &mut [vigil_ops::SecurityEventRow]) {
    use vigil_proto::v1::SecurityEventKind;
    rows.sort_by_key(|r| {
        let e = &r.event;
        let kind = SecurityEventKind::try_from(e.kind).map(vigil_ops::decode::kind_name);
        let granted = (e.kind == SecurityEventKind::PrivilegeChange as i32).then_some(e.granted);
        (
            e.timestamp_ms,
            r.tenant.clone(),
            r.agent.clone(),
            kind.unwrap_or(""),
            e.user.clone(),
            e.technician.clone(),
            e.session_id.clone(),
            e.source_address.clone(),
            e.privilege.clone(),
            e.actor.clone(),
            granted,
        )
    });
}

fn encode_security(format: &str, e: &vigil_ops::SecurityEventRow) -> String {
    let mut out = Vec::new();
    vigil_sink::encoding(format)
        .unwrap()
        .encode_security_event(e, &mut out);
    String::from_utf8(out).unwrap()
}

/// The posture lab's security events (`common::posture_data`), exported
/// whole and filtered, in every encoding, to stdout and files.
#[test]
fn export_security_events_whole_and_filtered() {
    use vigil_proto::v1::SecurityEventKind;
    let data = posture_data();
    let root = data.dir.path();
    let mut all = data.security.clone();
    export_order(&mut all);
    assert!(all.len() > 1000, "{} events", all.len());

    // stdout, every event, JSON: one line each, in export order, each
    // valid against the security-event JSON Schema.
    let o = export(root, &["--dataset", "security_events"]);
    let err = ok(&o);
    assert!(
        err.contains(&format!("exported {} security events", all.len())),
        "{err}"
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let want: Vec<String> = all.iter().map(|e| encode_security("json", e)).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), want);
    let validator = security_event_schema();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}: {line}");
    }

    // One tenant's failed logins of one day, [from, to) exact, in each
    // other encoding, to a file.
    let day = all[all.len() / 2].event.timestamp_ms / 86_400_000 * 86_400_000;
    let from = chrono::DateTime::from_timestamp_millis(day)
        .unwrap()
        .to_rfc3339();
    let to = chrono::DateTime::from_timestamp_millis(day + 86_400_000)
        .unwrap()
        .to_rfc3339();
    let dir = tempfile::tempdir().unwrap();
    for format in ["ocsf", "cef", "ecs"] {
        let path = dir.path().join(format!("failed.{format}"));
        let file = format!("file:{}", path.display());
        ok(&export(
            root,
            &[
                "--dataset",
                "security_events",
                "--format",
                format,
                "--tenant",
                "eu",
                "--kind",
                "login_failure",
                "--from",
                &from,
                "--to",
                &to,
                "--to",
                &file,
            ],
        ));
        let want: Vec<String> = all
            .iter()
            .filter(|e| {
                e.tenant == "eu"
                    && e.event.kind == SecurityEventKind::LoginFailure as i32
                    && (day..day + 86_400_000).contains(&e.event.timestamp_ms)
            })
            .map(|e| encode_security(format, e))
            .collect();
        assert!(want.len() >= 10, "{format}: {}", want.len());
        let got = std::fs::read_to_string(&path).unwrap();
        assert_eq!(got.lines().collect::<Vec<_>>(), want, "{format}");
    }

    // Flags of the other dataset are refused, with the reason.
    for (args, needle) in [
        (vec!["--kind", "login_failure"], "--dataset security_events"),
        (
            vec!["--dataset", "security_events", "--rule", "r"],
            "security events have no rule",
        ),
        (
            vec!["--dataset", "security_events", "--kind", "logon"],
            "unknown --kind",
        ),
        (vec!["--dataset", "events"], "invalid value"),
    ] {
        let o = export(root, &args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Security events with every character the syslog header, the
/// structured data and CEF escape, to rsyslog over TCP: one RFC 5424
/// message each, in order, header and structured data from the event.
#[test]
fn export_security_events_to_rsyslog() {
    use vigil_proto::v1::{SecurityEvent, SecurityEventKind as K};
    if rsyslog().is_none() {
        return;
    }
    let kinds = [
        K::LoginFailure,
        K::LoginSuccess,
        K::RemoteSessionStart,
        K::RemoteSessionEnd,
        K::PrivilegeChange,
    ];
    let mut evs: Vec<vigil_ops::SecurityEventRow> = (0..150i64)
        .map(|i| {
            let kind = kinds[i as usize % kinds.len()];
            let session = matches!(kind, K::RemoteSessionStart | K::RemoteSessionEnd);
            let text = |yes: bool, s: String| if yes { s } else { String::new() };
            vigil_ops::SecurityEventRow {
                tenant: if i % 2 == 0 { "acme" } else { "globex" }.into(),
                agent: format!("agent-{}", i % 7),
                hostname: (i % 4 != 0).then(|| format!("host {i} ünï")),
                event: SecurityEvent {
                    timestamp_ms: MIDNIGHT + i * SEC,
                    kind: kind as i32,
                    user: text(!session, format!("u\"{i}]|=\\")),
                    source_address: text(kind == K::LoginFailure, "203.0.113.9".into()),
                    technician: text(session, "tech \"ana\"".into()),
                    session_id: text(session, format!("s{}", i / 5)),
                    privilege: text(kind == K::PrivilegeChange, "Admins|x=y".into()),
                    granted: i % 10 == 4,
                    actor: String::new(),
                },
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut w = vigil_store::SecurityEventsWriter::new(
        &data,
        WriterConfig {
            sync: false,
            ..WriterConfig::default()
        },
    )
    .unwrap();
    evs.iter().for_each(|e| w.push(e));
    w.flush(SourceRange {
        source: "export-test",
        partition: 0,
        first_offset: 0,
        last_offset: evs.len() as i64,
        tick: 0,
    })
    .unwrap();
    export_order(&mut evs);
    let r = Rsyslog::start(&dir.path().join("rsyslog"), free_port(), None);
    let err = ok(&export(
        &data,
        &[
            "--dataset",
            "security_events",
            "--format",
            "cef",
            "--to",
            &r.url(),
            "--batch",
            "40",
        ],
    ));
    assert!(err.contains("exported 150 security events"), "{err}");
    let got = r.wait_for(evs.len());
    assert_eq!(got.len(), evs.len());
    for (m, e) in got.iter().zip(&evs) {
        let kind = vigil_ops::decode::kind_name(K::try_from(e.event.kind).unwrap());
        let sev = match e.event.kind {
            k if k == K::LoginFailure as i32 || k == K::PrivilegeChange as i32 => 4,
            _ => 6,
        };
        assert_eq!(m["pri"], (16 * 8 + sev).to_string(), "{m}");
        let t = chrono::DateTime::parse_from_rfc3339(m["time"].as_str().unwrap()).unwrap();
        assert_eq!(t.timestamp_millis(), e.event.timestamp_ms, "{m}");
        let host: String = e
            .hostname
            .clone()
            .unwrap_or(e.agent.clone())
            .chars()
            .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
            .collect();
        assert_eq!(m["host"], host.as_str(), "{m}");
        assert_eq!(m["msgid"], kind, "{m}");
        let sd = m["sd"].as_str().unwrap();
        assert!(sd.starts_with("[vigil@32473 "), "{sd}");
        for (k, v) in [("kind", kind), ("tenant", &e.tenant), ("agent", &e.agent)] {
            assert!(sd.contains(&format!("{k}=\"{v}\"")), "{k} in {sd}");
        }
        assert_eq!(m["msg"].as_str().unwrap(), encode_security("cef", e), "{m}");
    }
}
