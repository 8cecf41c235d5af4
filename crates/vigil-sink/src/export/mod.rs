//! Exports: alert events or security events read back from storage,
//! encoded with one of the [`mod@crate::encoding`]s and sent to one
//! destination (`vigil export`).
//!
//! ```text
//!  AlertEvents | SecurityEvents ─▶ Exporter (encode, batch, retry) ─▶ ExportSink: stdout | file | syslog TCP/TLS | (Kafka: the binary's)
//! ```
//!
//! What the exporter and the sinks need of an event is [`Exportable`]:
//! its encoding, and an [`Envelope`] (time, key, host, what it is,
//! severity, identity) that the syslog header and the Kafka key are
//! made of.
//!
//! The [`Exporter`] sends events in batches of [`ExportOptions::batch`].
//! After each batch it asks the sink to [`ExportSink::commit`]: the point
//! where the destination has confirmed, as far as it can, that it holds
//! every event sent so far (stdout/file: flushed; syslog: the receiver
//! read up to the end of the connection; Kafka: the broker acknowledged).
//! A transient failure anywhere in a batch drops the connection, waits
//! (exponential backoff) and sends the whole batch again, at most
//! [`ExportOptions::retries`] times: delivery is at-least-once, and the
//! events of a retried batch that had reached the destination arrive
//! twice. When the retries run out the export stops with
//! [`ExportError::Failed`], which says how many events were confirmed and
//! the event time to resume from; it is never silently partial.
//!
//! Sinks: [`lines`] (stdout and files, one event per line), [`syslog`]
//! (RFC 5424 over TCP or TLS, octet-counting framing). The Kafka sink is
//! the binary's (it owns the producer).

pub mod lines;
pub mod syslog;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use vigil_ops::model::AlertEvent;
use vigil_ops::SecurityEventRow;

use crate::encoding::{security as sec, Encoding};
use crate::time::rfc3339_ms;

/// What a destination needs of an exported event besides its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Event time, ms since the epoch (the syslog TIMESTAMP).
    pub event_time_ms: i64,
    /// Message key (Kafka): an alert's fingerprint (ordering per
    /// incident, as on the alert topic), a security event's agent id
    /// (ordering per agent, as on the telemetry topic).
    pub key: &'a str,
    /// The host the event is about: the agent's hostname, else its id
    /// (the syslog HOSTNAME).
    pub host: &'a str,
    /// What it is, in a word: an alert's rule, a security event's kind
    /// (the syslog MSGID).
    pub msgid: &'a str,
    /// Syslog severity (0-7).
    pub severity: u8,
    /// Its identity as name/value pairs, in order (the syslog
    /// structured data); empty values are left out.
    pub params: Vec<(&'static str, &'a str)>,
}

/// An event `vigil export` sends: an [`AlertEvent`] or a security event
/// ([`SecurityEventRow`]).
pub trait Exportable {
    /// Appends its encoding in `encoding` to `out` (one record, no
    /// newline).
    fn encode_with(&self, encoding: &dyn Encoding, out: &mut Vec<u8>);

    /// What the destinations need of it.
    fn envelope(&self) -> Envelope<'_>;

    /// How an error message names it (`incident <id>`).
    fn describe(&self) -> String;
}

impl Exportable for AlertEvent {
    fn encode_with(&self, encoding: &dyn Encoding, out: &mut Vec<u8>) {
        encoding.encode(self, out);
    }

    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            event_time_ms: self.event_time_ms,
            key: &self.fingerprint,
            host: self.hostname.as_deref().unwrap_or(&self.agent),
            msgid: &self.rule,
            severity: syslog::severity(self),
            params: vec![
                ("incident", self.id.as_str()),
                ("fingerprint", &self.fingerprint),
                ("status", self.status.as_str()),
                ("severity", self.severity.as_str()),
                ("tenant", &self.tenant),
                ("agent", &self.agent),
            ],
        }
    }

    fn describe(&self) -> String {
        format!("incident {}", self.id)
    }
}

impl Exportable for SecurityEventRow {
    fn encode_with(&self, encoding: &dyn Encoding, out: &mut Vec<u8>) {
        encoding.encode_security_event(self, out);
    }

    fn envelope(&self) -> Envelope<'_> {
        let e = &self.event;
        let params = [
            ("kind", sec::kind_str(self)),
            ("severity", sec::severity(self).as_str()),
            ("tenant", &self.tenant),
            ("agent", &self.agent),
            ("user", &e.user),
            ("technician", &e.technician),
            ("session", &e.session_id),
        ];
        Envelope {
            event_time_ms: e.timestamp_ms,
            key: &self.agent,
            host: self.hostname.as_deref().unwrap_or(&self.agent),
            msgid: sec::kind_str(self),
            severity: syslog::severity_of(sec::severity(self)),
            params: params.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} event of agent {} at {}",
            sec::kind_str(self),
            self.agent,
            rfc3339_ms(self.event.timestamp_ms)
        )
    }
}

/// Counter of events an export's destination confirmed, by destination kind.
pub const EXPORT_EVENTS: &str = "vigil_export_events_total";
/// Counter of batches sent again after a transient failure, by destination kind.
pub const EXPORT_RETRIES: &str = "vigil_export_retries_total";
/// Counter of exports that stopped on an error, by destination kind.
pub const EXPORT_FAILURES: &str = "vigil_export_failures_total";

/// A failure of one sink operation.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct SendError {
    /// What the sink was doing.
    pub context: String,
    /// Whether trying again (after a reconnect) may succeed.
    pub transient: bool,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl SendError {
    /// A failure that a retry may fix (a dropped connection).
    pub fn transient(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> SendError {
        SendError {
            context: context.into(),
            transient: true,
            source: source.into(),
        }
    }

    /// A failure that a retry will not fix (a bad certificate, a full disk).
    pub fn permanent(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> SendError {
        SendError {
            context: context.into(),
            transient: false,
            source: source.into(),
        }
    }
}

/// Where an export's events go.
pub trait ExportSink {
    /// The destination kind for logs and metrics (`stdout`, `file`,
    /// `syslog`, `kafka`).
    fn kind(&self) -> &'static str;

    /// Sends one event; `payload` is its encoding (one record, no newline),
    /// `env` what else the destination needs of it.
    fn send(&mut self, env: &Envelope<'_>, payload: &[u8]) -> Result<(), SendError>;

    /// Returns once every event sent so far is confirmed delivered, as far
    /// as the destination can tell (see the module docs).
    fn commit(&mut self) -> Result<(), SendError>;

    /// Forgets the connection after a failed send or commit; the next
    /// send reconnects.
    fn reset(&mut self);

    /// Ends the export after the last commit (a file is published here).
    fn finish(&mut self) -> Result<(), SendError>;
}

/// How an export batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// Events per confirmed batch (at least 1): also the most events that
    /// a retry can deliver twice.
    pub batch: usize,
    /// Retries of one batch after a transient failure.
    pub retries: u32,
    /// Wait before the first retry; doubled each retry, capped at 30 s.
    pub backoff: Duration,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            batch: 1000,
            retries: 5,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Sending failed for good: retries ran out, or the failure was not
    /// transient.
    #[error(
        "export to {kind} failed after {confirmed} events were sent and confirmed \
         ({attempts} attempts at the next batch); {resume}"
    )]
    Failed {
        /// The destination kind.
        kind: &'static str,
        /// Events confirmed delivered before the failure.
        confirmed: u64,
        /// Attempts at the failed batch.
        attempts: u32,
        /// How to resume (`--from <event time of the first unconfirmed event>`).
        resume: String,
        /// The last failure.
        #[source]
        source: SendError,
    },
}

impl ExportError {
    /// Events confirmed before the export stopped.
    pub fn confirmed(&self) -> u64 {
        match self {
            ExportError::Failed { confirmed, .. } => *confirmed,
        }
    }
}

/// What an export did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Events sent and confirmed.
    pub events: u64,
    /// Batches sent again after a transient failure.
    pub retries: u64,
    /// Bytes of encoded events (without framing).
    pub bytes: u64,
}

/// Encodes events and sends them to one sink in confirmed batches, with
/// retries. See the module docs.
pub struct Exporter<'a> {
    sink: &'a mut dyn ExportSink,
    encoding: &'static dyn Encoding,
    opts: ExportOptions,
    report: ExportReport,
    payloads: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Exporter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("sink", &self.sink.kind())
            .field("encoding", &self.encoding.name())
            .field("opts", &self.opts)
            .field("report", &self.report)
            .finish()
    }
}

impl<'a> Exporter<'a> {
    /// An exporter of `encoding` to `sink`.
    pub fn new(
        sink: &'a mut dyn ExportSink,
        encoding: &'static dyn Encoding,
        opts: ExportOptions,
    ) -> Exporter<'a> {
        Exporter {
            sink,
            encoding,
            opts: ExportOptions {
                batch: opts.batch.max(1),
                ..opts
            },
            report: ExportReport::default(),
            payloads: Vec::new(),
        }
    }

    /// What was sent and confirmed so far.
    pub fn report(&self) -> ExportReport {
        self.report
    }

    /// Sends `events` (in order) in confirmed batches; returns once all
    /// are confirmed, or fails with the count confirmed so far.
    pub fn send<T: Exportable>(&mut self, events: &[T]) -> Result<(), ExportError> {
        for chunk in events.chunks(self.opts.batch) {
            self.send_batch(chunk)?;
        }
        Ok(())
    }

    fn send_batch<T: Exportable>(&mut self, chunk: &[T]) -> Result<(), ExportError> {
        let _span = tracing::debug_span!(
            "export_batch",
            sink = self.sink.kind(),
            events = chunk.len()
        )
        .entered();
        self.payloads.resize_with(chunk.len(), Vec::new);
        for (a, p) in chunk.iter().zip(&mut self.payloads) {
            p.clear();
            a.encode_with(self.encoding, p);
        }
        let mut attempt = 1u32;
        let mut wait = self.opts.backoff;
        loop {
            let result = self.try_batch(chunk);
            match result {
                Ok(()) => break,
                Err(e) if e.transient && attempt <= self.opts.retries => {
                    tracing::warn!(
                        sink = self.sink.kind(),
                        attempt,
                        confirmed = self.report.events,
                        wait_ms = wait.as_millis() as u64,
                        error = %e,
                        cause = %e.source,
                        "export batch failed; reconnecting and sending the batch again"
                    );
                    metrics::counter!(EXPORT_RETRIES, "destination" => self.sink.kind())
                        .increment(1);
                    self.report.retries += 1;
                    self.sink.reset();
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                Err(source) => {
                    self.sink.reset();
                    metrics::counter!(EXPORT_FAILURES, "destination" => self.sink.kind())
                        .increment(1);
                    let first = &chunk[0];
                    return Err(ExportError::Failed {
                        kind: self.sink.kind(),
                        confirmed: self.report.events,
                        attempts: attempt,
                        resume: format!(
                            "resume with --from {} (the first unconfirmed event, {})",
                            rfc3339_ms(first.envelope().event_time_ms),
                            first.describe()
                        ),
                        source,
                    });
                }
            }
        }
        let n = chunk.len() as u64;
        self.report.events += n;
        self.report.bytes += self.payloads[..chunk.len()]
            .iter()
            .map(|p| p.len() as u64)
            .sum::<u64>();
        metrics::counter!(EXPORT_EVENTS, "destination" => self.sink.kind()).increment(n);
        Ok(())
    }

    fn try_batch<T: Exportable>(&mut self, chunk: &[T]) -> Result<(), SendError> {
        for (a, p) in chunk.iter().zip(&self.payloads) {
            self.sink.send(&a.envelope(), p)?;
        }
        self.sink.commit()
    }

    /// Ends the export (publishes a file) and returns what it did.
    pub fn finish(self) -> Result<ExportReport, ExportError> {
        let kind = self.sink.kind();
        let confirmed = self.report.events;
        self.sink.finish().map_err(|source| {
            metrics::counter!(EXPORT_FAILURES, "destination" => kind).increment(1);
            ExportError::Failed {
                kind,
                confirmed,
                attempts: 1,
                resume: "finishing the export failed".into(),
                source,
            }
        })?;
        tracing::info!(
            destination = kind,
            events = self.report.events,
            retries = self.report.retries,
            bytes = self.report.bytes,
            "export done"
        );
        Ok(self.report)
    }
}

/// An export destination as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `stdout`: one event per line.
    Stdout,
    /// `file:PATH`: one event per line, published atomically at the end.
    File(PathBuf),
    /// `syslog+tcp://HOST:PORT` or `syslog+tls://HOST:PORT`.
    Syslog {
        /// Receiver host (name or IP address).
        host: String,
        /// Receiver port.
        port: u16,
        /// TLS (`syslog+tls`) or plain TCP (`syslog+tcp`).
        tls: bool,
    },
    /// `kafka://TOPIC`: the `[kafka]` brokers of the configuration.
    Kafka(String),
}

impl Target {
    /// Whether `s` has the form of a destination (as opposed to a time:
    /// `--to` takes both).
    pub fn looks_like(s: &str) -> bool {
        // No time has a scheme, so a mistyped destination
        // (`syslog+udp://…`) is reported as a bad destination.
        s == "stdout" || s.starts_with("file:") || s.contains("://")
    }
}

/// A destination that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("bad destination {given:?}: {why} (expected stdout, file:PATH, syslog+tcp://HOST:PORT, syslog+tls://HOST:PORT or kafka://TOPIC)")]
pub struct BadTarget {
    /// What was given.
    pub given: String,
    /// What is wrong.
    pub why: String,
}

impl FromStr for Target {
    type Err = BadTarget;

    fn from_str(s: &str) -> Result<Target, BadTarget> {
        let bad = |why: &str| BadTarget {
            given: s.to_owned(),
            why: why.to_owned(),
        };
        if s == "stdout" {
            return Ok(Target::Stdout);
        }
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err(bad("empty path"));
            }
            return Ok(Target::File(PathBuf::from(p)));
        }
        if let Some(t) = s.strip_prefix("kafka://") {
            if t.is_empty() {
                return Err(bad("empty topic"));
            }
            return Ok(Target::Kafka(t.to_owned()));
        }
        for (prefix, tls) in [("syslog+tcp://", false), ("syslog+tls://", true)] {
            if let Some(hp) = s.strip_prefix(prefix) {
                let hp = hp.trim_end_matches('/');
                let (host, port) = hp.rsplit_once(':').ok_or_else(|| bad("no port"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    return Err(bad("empty host"));
                }
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad("port is not 1-65535"))?;
                return Ok(Target::Syslog {
                    host: host.to_owned(),
                    port,
                    tls,
                });
            }
        }
        Err(bad("unknown scheme"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::testing::firing;

    #[test]
    fn targets_parse() {
        assert_eq!("stdout".parse::<Target>().unwrap(), Target::Stdout);
        assert_eq!(
            "file:/tmp/a.jsonl".parse::<Target>().unwrap(),
            Target::File("/tmp/a.jsonl".into())
        );
        assert_eq!(
            "syslog+tls://siem.example:6514".parse::<Target>().unwrap(),
            Target::Syslog {
                host: "siem.example".into(),
                port: 6514,
                tls: true
            }
        );
        assert_eq!(
            "syslog+tcp://[::1]:514".parse::<Target>().unwrap(),
            Target::Syslog {
                host: "::1".into(),
                port: 514,
                tls: false
            }
        );
        assert_eq!(
            "kafka://soc.alerts".parse::<Target>().unwrap(),
            Target::Kafka("soc.alerts".into())
        );
        for bad in [
            "syslog+tcp://host",
            "syslog+tcp://:514",
            "syslog+udp://h:514",
            "file:",
            "kafka://",
            "syslog+tcp://h:0",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert!(Target::looks_like("kafka://x"));
        assert!(Target::looks_like("syslog+udp://h:1"));
        assert!(!Target::looks_like("-24h"));
        assert!(!Target::looks_like("2026-11-02T00:00:00Z"));
    }

    /// A sink that fails the commit of its first `fail` batches, and
    /// keeps what it was sent.
    struct Flaky {
        ok_first: u32,
        fail: u32,
        permanent: bool,
        pending: Vec<String>,
        delivered: Vec<String>,
        resets: u32,
    }

    impl ExportSink for Flaky {
        fn kind(&self) -> &'static str {
            "test"
        }
        fn send(&mut self, env: &Envelope<'_>, _: &[u8]) -> Result<(), SendError> {
            self.pending.push(env.params[0].1.to_string());
            Ok(())
        }
        fn commit(&mut self) -> Result<(), SendError> {
            // What was sent arrives even when the commit fails (the
            // at-least-once case).
            self.delivered.append(&mut self.pending);
            if self.ok_first > 0 {
                self.ok_first -= 1;
                return Ok(());
            }
            if self.fail > 0 {
                self.fail -= 1;
                let e = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                return Err(if self.permanent {
                    SendError::permanent("commit", e)
                } else {
                    SendError::transient("commit", e)
                });
            }
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
        }
        fn finish(&mut self) -> Result<(), SendError> {
            Ok(())
        }
    }

    fn events(n: usize) -> Vec<AlertEvent> {
        (0..n)
            .map(|i| AlertEvent {
                id: format!("e{i}"),
                event_time_ms: 1_793_664_000_000 + i as i64,
                ..firing()
            })
            .collect()
    }

    #[test]
    fn a_failed_batch_is_sent_again_whole() {
        let mut sink = Flaky {
            ok_first: 0,
            fail: 2,
            permanent: false,
            pending: vec![],
            delivered: vec![],
            resets: 0,
        };
        let opts = ExportOptions {
            batch: 3,
            retries: 2,
            backoff: Duration::from_millis(1),
        };
        let mut x = Exporter::new(&mut sink, crate::encoding("json").unwrap(), opts);
        x.send(&events(5)).unwrap();
        let r = x.finish().unwrap();
        assert_eq!((r.events, r.retries), (5, 2));
        assert!(r.bytes > 0);
        // The first batch arrived three times, the second once.
        let want: Vec<String> = ["e0", "e1", "e2"]
            .repeat(3)
            .into_iter()
            .chain(["e3", "e4"])
            .map(String::from)
            .collect();
        assert_eq!(sink.delivered, want);
        assert_eq!(sink.resets, 2);
    }

    #[test]
    fn retries_run_out_with_the_count_confirmed() {
        let mut sink = Flaky {
            ok_first: 1,
            fail: 5,
            permanent: false,
            pending: vec![],
            delivered: vec![],
            resets: 0,
        };
        let opts = ExportOptions {
            batch: 2,
            retries: 1,
            backoff: Duration::from_millis(1),
        };
        let mut x = Exporter::new(&mut sink, crate::encoding("cef").unwrap(), opts);
        let e = x.send(&events(6)).unwrap_err();
        assert_eq!(e.confirmed(), 2);
        let msg = e.to_string();
        assert!(msg.contains("after 2 events"), "{msg}");
        assert!(msg.contains("2 attempts"), "{msg}");
        assert!(msg.contains("--from 2026-11-03T00:00:00.002Z"), "{msg}");
        assert!(msg.contains("incident e2"), "{msg}");
    }

    #[test]
    fn security_events_export_with_their_envelope() {
        let rows = crate::encoding::security::testing::every_kind();
        let mut sink = Flaky {
            ok_first: 0,
            fail: 1,
            permanent: false,
            pending: vec![],
            delivered: vec![],
            resets: 0,
        };
        let opts = ExportOptions {
            batch: 4,
            retries: 1,
            backoff: Duration::from_millis(1),
        };
        let mut x = Exporter::new(&mut sink, crate::encoding("ocsf").unwrap(), opts);
        x.send(&rows).unwrap();
        assert_eq!(x.finish().unwrap().events, 6);
        // The first param is the kind; the first batch came twice.
        assert_eq!(sink.delivered.len(), 10);
        assert_eq!(sink.delivered[0], "login_failure");
        let env = rows[2].envelope();
        assert_eq!(
            (env.key, env.host, env.msgid, env.severity),
            ("agent-7", "db-1.acme.example", "remote_session_start", 6)
        );
        assert_eq!(
            env.params,
            vec![
                ("kind", "remote_session_start"),
                ("severity", "info"),
                ("tenant", "acme"),
                ("agent", "agent-7"),
                ("technician", "tech.ana"),
                ("session", "s-42"),
            ]
        );
        assert_eq!(rows[0].envelope().severity, 4);
        assert!(rows[0]
            .describe()
            .starts_with("login_failure event of agent agent-7 at "));
    }

    #[test]
    fn a_permanent_failure_is_not_retried() {
        let mut sink = Flaky {
            ok_first: 0,
            fail: 1,
            permanent: true,
            pending: vec![],
            delivered: vec![],
            resets: 0,
        };
        let mut x = Exporter::new(
            &mut sink,
            crate::encoding("json").unwrap(),
            ExportOptions::default(),
        );
        let e = x.send(&events(3)).unwrap_err();
        assert!(e.to_string().contains("1 attempts"), "{e}");
        assert_eq!(sink.delivered.len(), 3);
    }
}
