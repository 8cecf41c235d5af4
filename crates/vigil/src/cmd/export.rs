//! `vigil export`: alert events from the Parquet `alerts` dataset, or
//! security events from `security_events` (`--dataset security_events`),
//! in event-time order, encoded (json, ocsf, cef, ecs) and sent to
//! stdout, a file, a syslog receiver (TCP or TLS) or a Kafka topic.
//!
//! ```text
//!  alerts/          ─vigil_query::alerts (DataFusion)──────────▶ AlertEvents    ─┐
//!  security_events/ ─vigil_query::security_events (DataFusion)─▶ SecurityEvents ─┴▶ vigil_sink::Exporter ─▶ stdout | file | syslog | KafkaSink
//! ```
//!
//! Time bounds are RFC 3339 (`2026-11-02T00:00:00Z`, any offset), a date
//! (`2026-11-02`, midnight UTC), `now`, or relative to now (`-24h`,
//! `-7d 12h`; humantime's duration syntax). `--from` is inclusive, the
//! time bound of `--to` exclusive. `--to` takes both the end of the range
//! and the destination (as the issue spelled the command): a value of the
//! form `stdout`, `file:…`, `syslog+tcp://…`, `syslog+tls://…` or
//! `kafka://…` is the destination, any other value the time bound.
//! Delivery, batching and retries: `vigil_sink::export`; the syslog
//! message: `vigil_sink::export::syslog`; `docs/siem.md` "Export".

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use vigil_kafka::AckedProducer;
use vigil_query::security_events::{kind_names, kind_of};
use vigil_query::{AlertFilter, QuerySession, SecurityFilter};
use vigil_sink::export::lines::{FileSink, StdoutSink};
use vigil_sink::export::syslog::{Facility, SyslogOptions, SyslogSink, TlsOptions};
use vigil_sink::{
    Encoding, Envelope, ExportOptions, ExportSink, Exportable, Exporter, SendError, Target,
};

use crate::settings::Settings;

/// Arguments of `vigil export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root of the datasets, a directory or `s3://bucket/prefix`
    /// (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub data_dir: Option<String>,
    /// Which events: alerts (alert events, the `alerts` dataset) or
    /// security_events (what agents reported: logins, remote sessions,
    /// privilege changes).
    #[arg(long, value_enum, default_value = "alerts")]
    pub dataset: ExportDataset,
    /// Encoding of each event: json, ocsf, cef or ecs.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Earliest event time, inclusive: RFC 3339, a date, `now`, or
    /// relative (`-24h`).
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// The destination (stdout, file:PATH, syslog+tcp://HOST:PORT,
    /// syslog+tls://HOST:PORT, kafka://TOPIC; default stdout) and/or the
    /// latest event time, exclusive (as --from): may be given twice.
    #[arg(long = "to", allow_hyphen_values = true)]
    pub to: Vec<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this rule (alerts).
    #[arg(long)]
    pub rule: Option<String>,
    /// Only this kind of security event (security_events):
    /// login_failure, login_success, remote_session_start,
    /// remote_session_end or privilege_change.
    #[arg(long)]
    pub kind: Option<String>,
    /// syslog+tls: CA certificates (PEM) to verify the receiver with
    /// (default: the system's trust store).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// syslog+tls: client certificate chain (PEM), with --key.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// syslog+tls: private key (PEM) of --cert.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// syslog: facility, a name (local0, authpriv, audit…) or 0-23.
    #[arg(long, default_value = "local0")]
    pub facility: Facility,
    /// Events per confirmed batch (also the most a retry can deliver twice).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Retries of a batch after a dropped connection or a failed
    /// acknowledgement, with exponential backoff.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Wait before the first retry (doubled each retry).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    pub backoff: Duration,
    /// syslog: bound on connecting, writing and the receiver's
    /// confirmation; kafka: on the acknowledgement of a batch.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The dataset `vigil export` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportDataset {
    /// Alert events (`alerts/`).
    Alerts,
    /// Security events (`security_events/`).
    #[value(name = "security_events", alias = "security-events")]
    SecurityEvents,
}

/// Parses a time bound (see the module docs) against `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(rel) = s.strip_prefix('-') {
        let d = humantime::parse_duration(rel)
            .with_context(|| format!("bad relative time {s:?} (like -24h or -7d)"))?;
        let ms = i64::try_from(d.as_millis()).map_err(|_| anyhow!("{s:?} is too far back"))?;
        return Ok(now_ms - ms);
    }
    let full = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    let t = chrono::DateTime::parse_from_rfc3339(&full).with_context(|| {
        format!("bad time {s:?}: expected RFC 3339 (2026-11-02T00:00:00Z), a date (2026-11-02), now, or -DURATION (-24h)")
    })?;
    Ok(t.timestamp_millis())
}

/// `--to` values split into the destination and the time bound.
fn split_to(values: &[String]) -> Result<(Target, Option<String>)> {
    let mut target = None;
    let mut time = None;
    for v in values {
        if Target::looks_like(v) {
            if target.is_some() {
                bail!("--to names two destinations; export goes to one");
            }
            target = Some(v.parse::<Target>()?);
        } else {
            if time.is_some() {
                bail!("--to names two end times");
            }
            time = Some(v.clone());
        }
    }
    Ok((target.unwrap_or(Target::Stdout), time))
}

/// Events to a Kafka topic through the acknowledged producer (the
/// `[kafka]` settings), keyed by the envelope's key (an alert's
/// fingerprint, a security event's agent id), with the `content-type` and
/// `vigil.encoding` headers of routed alerts. A commit waits for the
/// broker's acknowledgement of every event of the batch.
struct KafkaSink {
    producer: AckedProducer,
    topic: String,
    encoding: &'static dyn Encoding,
    timeout: Duration,
}

impl ExportSink for KafkaSink {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn send(&mut self, env: &Envelope<'_>, payload: &[u8]) -> Result<(), SendError> {
        let headers = [
            (
                vigil_kafka::headers::CONTENT_TYPE,
                self.encoding.content_type().as_bytes(),
            ),
            (
                vigil_kafka::headers::ENCODING,
                self.encoding.name().as_bytes(),
            ),
        ];
        let ctx = || format!("producing to {}", self.topic);
        match self
            .producer
            .send(&self.topic, Some(env.key.as_bytes()), payload, &headers)
        {
            Ok(()) => Ok(()),
            Err(e @ vigil_kafka::Error::Kafka { .. }) => Err(SendError::transient(ctx(), e)),
            Err(e) => Err(SendError::permanent(ctx(), e)),
        }
    }

    fn commit(&mut self) -> Result<(), SendError> {
        self.producer.flush(self.timeout).map_err(|e| {
            SendError::transient(
                format!("waiting for acknowledgements from {}", self.topic),
                e,
            )
        })
    }

    fn reset(&mut self) {}

    fn finish(&mut self) -> Result<(), SendError> {
        self.commit()
    }
}

/// The sink of `target`.
fn sink(
    target: &Target,
    a: &Args,
    config: Option<&Path>,
    encoding: &'static dyn Encoding,
) -> Result<Box<dyn ExportSink>> {
    let tls_flags = a.ca.is_some() || a.cert.is_some() || a.key.is_some();
    if tls_flags && !matches!(target, Target::Syslog { tls: true, .. }) {
        bail!("--ca, --cert and --key are for syslog+tls:// destinations");
    }
    Ok(match target {
        Target::Stdout => Box::new(StdoutSink::default()),
        Target::File(p) => Box::new(FileSink::create(p)?),
        Target::Syslog { host, port, tls } => Box::new(SyslogSink::new(SyslogOptions {
            host: host.clone(),
            port: *port,
            tls: tls.then(|| TlsOptions {
                ca: a.ca.clone(),
                cert: a.cert.clone(),
                key: a.key.clone(),
            }),
            facility: a.facility,
            timeout: a.timeout,
        })?),
        Target::Kafka(topic) => {
            vigil_kafka::config::check_topic_name(topic)
                .map_err(|e| anyhow!("kafka://{topic}: {e}"))?;
            let settings = Settings::load(config)?;
            let producer = AckedProducer::new(&settings.kafka, a.timeout)
                .context("creating the Kafka producer ([kafka] settings)")?;
            Box::new(KafkaSink {
                producer,
                topic: topic.clone(),
                encoding,
                timeout: a.timeout,
            })
        }
    })
}

/// Runs `vigil export`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let encoding = vigil_sink::encoding(&a.format).ok_or_else(|| {
        anyhow!(
            "unknown --format {:?} (one of {})",
            a.format,
            vigil_sink::encoding_names().join(", ")
        )
    })?;
    let (target, to) = split_to(&a.to)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let time = |flag: &str, v: Option<&str>| {
        v.map(|s| parse_time(s, now_ms))
            .transpose()
            .with_context(|| format!("--{flag}"))
    };
    let (from_ms, to_ms) = (time("from", a.from.as_deref())?, time("to", to.as_deref())?);
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if f >= t {
            bail!("--from must be before --to (the range is [from, to))");
        }
    }
    match a.dataset {
        ExportDataset::Alerts if a.kind.is_some() => {
            bail!("--kind selects security events: add --dataset security_events")
        }
        ExportDataset::SecurityEvents if a.rule.is_some() => {
            bail!("--rule selects alert events; security events have no rule (use --kind)")
        }
        _ => {}
    }
    let kind = a
        .kind
        .as_deref()
        .map(|k| {
            kind_of(k)
                .ok_or_else(|| anyhow!("unknown --kind {k:?} (one of {})", kind_names().join(", ")))
        })
        .transpose()?;
    let dir = match crate::settings::location_arg(a.data_dir.clone())? {
        Some(d) => d,
        None => Settings::load(config)?.data_dir,
    };
    let _span = tracing::info_span!("export", dataset = ?a.dataset, format = encoding.name(), destination = ?target).entered();
    let mut sink = sink(&target, &a, config, encoding)?;
    let opts = ExportOptions {
        batch: a.batch,
        retries: a.retries,
        backoff: a.backoff,
    };
    let rt = super::sql::runtime()?;
    let session = QuerySession::open_location(&dir)
        .with_context(|| format!("opening datasets under {dir}"))?;
    let started = Instant::now();
    let mut exporter = Exporter::new(sink.as_mut(), encoding, opts);
    let what = match a.dataset {
        ExportDataset::Alerts => {
            let filter = AlertFilter {
                from_ms,
                to_ms,
                tenant: a.tenant.clone(),
                rule: a.rule.clone(),
            };
            let mut events = rt
                .block_on(session.alert_events(&filter))
                .context("reading alert events")?;
            let total = events.total;
            pump(&mut exporter, total, || {
                rt.block_on(events.next_batch())
                    .context("reading alert events")
            })?;
            "alert events"
        }
        ExportDataset::SecurityEvents => {
            let filter = SecurityFilter {
                from_ms,
                to_ms,
                tenant: a.tenant.clone(),
                kind,
            };
            let mut events = rt
                .block_on(session.security_events(&filter))
                .context("reading security events")?;
            let total = events.total;
            pump(&mut exporter, total, || {
                rt.block_on(events.next_batch())
                    .context("reading security events")
            })?;
            "security events"
        }
    };
    let report = exporter.finish()?;
    eprintln!(
        "exported {} {what} ({} bytes, {}) to {} in {:.2}s; {} batch retries",
        report.events,
        report.bytes,
        encoding.name(),
        describe(&target),
        started.elapsed().as_secs_f64(),
        report.retries
    );
    Ok(())
}

/// Sends every batch `next` yields through `exporter`, with a progress
/// bar on a terminal (`total` events).
fn pump<T: Exportable>(
    exporter: &mut Exporter<'_>,
    total: u64,
    mut next: impl FnMut() -> Result<Option<Vec<T>>>,
) -> Result<()> {
    let bar = if total > 0 && std::io::stderr().is_terminal() {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    while let Some(batch) = next()? {
        let sent = exporter.send(&batch);
        bar.set_position(exporter.report().events);
        if let Err(e) = sent {
            bar.abandon();
            return Err(e.into());
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn describe(t: &Target) -> String {
    match t {
        Target::Stdout => "stdout".into(),
        Target::File(p) => p.display().to_string(),
        Target::Syslog { host, port, tls } => {
            format!(
                "syslog+{}://{host}:{port}",
                if *tls { "tls" } else { "tcp" }
            )
        }
        Target::Kafka(t) => format!("kafka://{t}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_793_664_000_000; // 2026-11-03T00:00:00Z

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("-24h", NOW).unwrap(), NOW - 86_400_000);
        assert_eq!(parse_time("-1d 30m", NOW).unwrap(), NOW - 88_200_000);
        assert_eq!(parse_time("2026-11-03T00:00:00Z", 0).unwrap(), NOW);
        assert_eq!(parse_time("2026-11-03T01:00:00+01:00", 0).unwrap(), NOW);
        assert_eq!(
            parse_time("2026-11-03T00:00:00.250Z", 0).unwrap(),
            NOW + 250
        );
        assert_eq!(parse_time("2026-11-03", 0).unwrap(), NOW);
        for bad in ["yesterday", "-24x", "2026-13-01", "2026-11-03 00:00"] {
            assert!(parse_time(bad, NOW).is_err(), "{bad}");
        }
    }

    #[test]
    fn to_takes_a_destination_and_a_time() {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (t, time) = split_to(&v(&["-1h", "syslog+tcp://127.0.0.1:514"])).unwrap();
        assert_eq!(
            t,
            Target::Syslog {
                host: "127.0.0.1".into(),
                port: 514,
                tls: false
            }
        );
        assert_eq!(time.as_deref(), Some("-1h"));
        let (t, time) = split_to(&[]).unwrap();
        assert_eq!((t, time), (Target::Stdout, None));
        assert!(split_to(&v(&["stdout", "kafka://x"])).is_err());
        assert!(split_to(&v(&["now", "-1h"])).is_err());
        assert!(split_to(&v(&["syslog+tcp://nohost"])).is_err());
    }
}
