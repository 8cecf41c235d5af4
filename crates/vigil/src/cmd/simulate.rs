//! `vigil simulate`: write a seeded simulated fleet as a file of
//! length-delimited `TelemetryBatch` records (and optionally its ground
//! truth as JSON).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use vigil_kafka::AckedProducer;
use vigil_ops::otlp::InputFormat;
use vigil_sim::otlp::OtlpEncoder;
use vigil_sim::{Fleet, FleetConfig, SimRecord};

/// Fleet shape options shared by `simulate` and `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Number of agents.
    #[arg(long, default_value_t = 1000, env = "VIGIL_SIM_AGENTS")]
    pub agents: usize,
    /// Hours of event time to simulate.
    #[arg(long, default_value_t = 6.0, env = "VIGIL_SIM_HOURS")]
    pub hours: f64,
    /// Number of tenants.
    #[arg(long, default_value_t = 20, env = "VIGIL_SIM_TENANTS")]
    pub tenants: usize,
    /// RNG seed (same seed, same bytes).
    #[arg(long, default_value_t = 42, env = "VIGIL_SIM_SEED")]
    pub seed: u64,
    /// Start of event time, ms since the Unix epoch (default 2026-11-02T00:00:00Z).
    #[arg(long, env = "VIGIL_SIM_START_MS")]
    pub start_ms: Option<i64>,
    /// Sampling interval of every series, e.g. `10s`, `1m`, `500ms` (whole
    /// milliseconds).
    #[arg(long, default_value = "10s", value_parser = parse_interval, env = "VIGIL_SIM_POINT_INTERVAL")]
    pub point_interval: std::time::Duration,
    /// Batch shape: every batch carries exactly N points per series (an
    /// agent sends every N samples: the batch interval is N × the point
    /// interval); 1 is the agent tick real RMM agents send. Default: a
    /// batch every 60 s whose point count per series drifts around 60 s /
    /// the point interval (5 to 7 at 10 s), about 48 points per batch.
    /// `vigil bench` without a shape option measures both 1 and the
    /// default; with one, only the shape given.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000), env = "VIGIL_SIM_POINTS_PER_BATCH")]
    pub points_per_batch: Option<u32>,
    /// Batch shape: at most N series per batch. An agent with more series
    /// (they have 6 to 9) sends each batch as several, each with its own
    /// sequence number, at the same time. Default: all of an agent's
    /// series in one batch.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000), env = "VIGIL_SIM_SERIES_PER_BATCH")]
    pub series_per_batch: Option<u32>,
    /// Agents also send status reports (hourly: patches, antivirus,
    /// backups) and security events (logins), about 15 % of them in breach
    /// of a default rule, so `vigil report compliance` and `security` have
    /// data (the series are the same either way). Default true for `vigil
    /// demo` and `vigil simulate`, false for `vigil bench` (its figures are
    /// of metric batches).
    #[arg(long, env = "VIGIL_SIM_POSTURE", action = clap::ArgAction::Set)]
    pub posture: Option<bool>,
}

/// Parses a `--point-interval` (humantime syntax, at least 1 ms, whole ms).
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 10s, 1m, 500ms)"))?;
    if d < std::time::Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("must be a whole number of milliseconds".into());
    }
    if d > std::time::Duration::from_secs(86_400) {
        return Err("must be at most 1 day".into());
    }
    Ok(d)
}

impl FleetArgs {
    /// The simulator configuration these options describe.
    pub fn fleet_config(&self) -> Result<FleetConfig> {
        self.fleet_config_shaped(self.points_per_batch)
    }

    /// Whether a batch shape (`--points-per-batch`, `--series-per-batch`)
    /// was given explicitly.
    pub fn shape_given(&self) -> bool {
        self.points_per_batch.is_some() || self.series_per_batch.is_some()
    }

    /// The simulator configuration these options describe, with
    /// `points_per_batch` in place of `--points-per-batch`.
    pub fn fleet_config_shaped(&self, points_per_batch: Option<u32>) -> Result<FleetConfig> {
        let mut c = FleetConfig {
            agents: self.agents,
            tenants: self.tenants,
            seed: self.seed,
            ..FleetConfig::default()
        };
        c.duration_ms = (self.hours * 3_600_000.0).round() as i64;
        if let Some(s) = self.start_ms {
            c.start_ms = s;
        }
        c.point_interval_ms = i64::try_from(self.point_interval.as_millis())
            .context("--point-interval is too long")?;
        if let Some(n) = points_per_batch {
            c.batch_interval_ms = c.point_interval_ms * i64::from(n);
            c.aligned_batches = true;
        } else {
            anyhow::ensure!(
                c.point_interval_ms <= c.batch_interval_ms,
                "--point-interval {} is longer than the default batch interval of 60s: \
                 give --points-per-batch too",
                humantime::format_duration(self.point_interval)
            );
        }
        c.series_per_batch = self.series_per_batch.map(|n| n as usize);
        c.posture = self.posture.unwrap_or(true);
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid fleet: {e}"))?;
        Ok(c)
    }

    /// A short description of the batch shape, e.g. `1 point per series
    /// per batch, every 10s`.
    pub fn shape_label(cfg: &FleetConfig) -> String {
        let every = humantime::format_duration(std::time::Duration::from_millis(
            cfg.batch_interval_ms.max(0) as u64,
        ));
        let points = if cfg.aligned_batches {
            let n = cfg.batch_interval_ms / cfg.point_interval_ms.max(1);
            format!(
                "{n} point{} per series per batch",
                if n == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "about {} points per series per batch",
                cfg.batch_interval_ms / cfg.point_interval_ms.max(1)
            )
        };
        let series = match cfg.series_per_batch {
            Some(s) => format!(", at most {s} series per batch"),
            None => String::new(),
        };
        format!("{points}{series}, a batch every {every} per agent")
    }
}

/// Arguments of `vigil simulate`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("sink").required(true).args(["out", "brokers"])))]
pub struct Args {
    /// Output file of length-delimited batches, or `-` for standard output
    /// (the report then goes to standard error), e.g. to pipe a fleet into
    /// `vigil ingest --input -`.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Produce to Kafka instead: bootstrap servers (other client
    /// properties, TLS and SASL included, come from the config's `[kafka]`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic to produce to (default: `kafka.telemetry_topic`).
    #[arg(long, requires = "brokers")]
    pub topic: Option<String>,
    /// Target rate in records per second (default: as fast as possible).
    #[arg(long, requires = "brokers")]
    pub rate: Option<f64>,
    /// Also write the ground truth (scenarios, expected outcomes) as JSON.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Record format: `vigil` (`TelemetryBatch`) or `otlp` (each batch as
    /// the `ExportMetricsServiceRequest` the OpenTelemetry Collector's
    /// hostmetrics receiver would send; read it with `vigil ingest
    /// --input-format otlp` or a worker topic in OTLP format). The ground
    /// truth's record counts describe the Vigil format.
    #[arg(long, default_value = "vigil")]
    pub format: InputFormat,
    /// Fleet shape.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Runs `vigil simulate`.
pub fn run(config: Option<&std::path::Path>, a: Args) -> Result<()> {
    let cfg = a.fleet.fleet_config()?;
    if let Some(brokers) = &a.brokers {
        return to_kafka(config, &a, cfg, brokers);
    }
    let Some(out) = &a.out else {
        anyhow::bail!("give --out FILE or --brokers HOST:PORT");
    };
    let started = Instant::now();
    let stdout = out.as_os_str() == "-";
    let sink: Box<dyn Write> = if stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(out).with_context(|| format!("creating {}", out.display()))?)
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    let mut fleet = Fleet::new(cfg);
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut otlp = (a.format == InputFormat::Otlp).then(OtlpEncoder::new);
    for rec in fleet.by_ref() {
        let payload = match otlp.as_mut() {
            Some(e) => std::borrow::Cow::Owned(e.encode(&rec.payload)),
            None => std::borrow::Cow::Borrowed(&rec.payload),
        };
        vigil_sim::write_delimited(&mut w, &payload)
            .with_context(|| format!("writing {}", out.display()))?;
        records += 1;
        bytes += payload.len() as u64;
    }
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    let truth = fleet.truth();
    write_truth(a.truth.as_deref(), truth)?;
    drop(w);
    let secs = started.elapsed().as_secs_f64();
    let report = format!(
        "wrote {records} {} records ({bytes} bytes) to {} in {secs:.2}s ({:.0} records/s)\n{}",
        match a.format {
            InputFormat::Vigil => "vigil",
            InputFormat::Otlp => "otlp",
        },
        if stdout {
            "standard output".into()
        } else {
            out.display().to_string()
        },
        records as f64 / secs.max(1e-9),
        super::truth_summary(truth)
    );
    if stdout {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    Ok(())
}

fn write_truth(path: Option<&std::path::Path>, truth: &vigil_sim::FleetTruth) -> Result<()> {
    if let Some(p) = path {
        let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
        serde_json::to_writer_pretty(BufWriter::new(f), truth)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Produces the fleet to Kafka (key = agent id), paced to `--rate`
/// records per second when given, and reports the rate achieved, counting
/// only records the broker acknowledged.
fn to_kafka(
    config: Option<&std::path::Path>,
    a: &Args,
    cfg: FleetConfig,
    brokers: &str,
) -> Result<()> {
    let mut settings = crate::settings::Settings::load(config)?;
    settings.kafka.brokers = brokers.to_string();
    let topic = a
        .topic
        .clone()
        .unwrap_or_else(|| settings.kafka.telemetry_topic.clone());
    let mut producer =
        vigil_kafka::AckedProducer::new(&settings.kafka, std::time::Duration::from_secs(60))
            .context("creating the producer")?;
    let mut fleet = Fleet::new(cfg);
    let pace = Pace {
        per_second: a.rate,
        ..Pace::default()
    };
    let mut otlp = (a.format == InputFormat::Otlp).then(OtlpEncoder::new);
    let records = fleet.by_ref().map(|mut r| {
        if let Some(e) = otlp.as_mut() {
            r.payload = e.encode(&r.payload);
        }
        (r, 1)
    });
    let done = produce(&mut producer, &topic, records, pace)
        .with_context(|| format!("producing to {topic} on {brokers}"))?;
    let secs = done.elapsed.as_secs_f64().max(1e-9);
    let truth = fleet.truth();
    write_truth(a.truth.as_deref(), truth)?;
    let c = &truth.counts;
    let points = c.accept.points
        + c.duplicate.points
        + c.late.points
        + c.future.points
        + c.seq_too_old.points
        + c.rejected().points;
    println!(
        "produced {} records ({} bytes, {points} points) to {topic} on {brokers} in {secs:.2}s: \
         {:.0} records/s, {:.0} points/s, {:.1} MB/s (all acknowledged)",
        done.records,
        done.bytes,
        done.records as f64 / secs,
        points as f64 / secs,
        done.bytes as f64 / secs / 1e6
    );
    if done.too_large > 0 {
        println!(
            "skipped {} record(s) larger than the producer's message.max.bytes (the simulator's too_large faults)",
            done.too_large
        );
    }
    println!("{}", super::truth_summary(truth));
    Ok(())
}

/// How fast [`produce`] sends, and when it stops early.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pace<'a> {
    /// Target rate in weight units per second (each record carries its
    /// weight: 1 for records per second, its point count for points per
    /// second); `None`: as fast as possible.
    pub per_second: Option<f64>,
    /// Stop sending after this long (the records left are not sent).
    pub until: Option<std::time::Duration>,
    /// Stop sending when this is set (by another thread).
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

/// What [`produce`] sent, every record acknowledged by the broker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Produced {
    /// Records sent and acknowledged.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Their total weight (see [`Pace`]).
    pub weight: u64,
    /// Records skipped because they exceed the producer's
    /// `message.max.bytes` (the simulator's deliberate `too_large` faults).
    pub too_large: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: std::time::Duration,
}

/// Sends `(record, weight)` pairs to `topic` (key = the record's agent id)
/// at `pace`, then waits until the broker acknowledged every one. Records
/// too large for the producer are skipped and counted: the broker would
/// refuse them before any worker saw them. Shared by `vigil simulate
/// --brokers` and `vigil bench --brokers`.
pub fn produce<R: std::borrow::Borrow<SimRecord>>(
    producer: &mut AckedProducer,
    topic: &str,
    records: impl IntoIterator<Item = (R, u64)>,
    pace: Pace<'_>,
) -> Result<Produced> {
    if let Some(r) = pace.per_second {
        anyhow::ensure!(
            r.is_finite() && r > 0.0,
            "--rate must be a positive number per second, not {r}"
        );
    }
    let started = Instant::now();
    let mut done = Produced::default();
    // Weight sent so far, including skipped records (they were due too).
    let mut due_weight = 0u64;
    for (rec, weight) in records {
        let rec = rec.borrow();
        if pace.until.is_some_and(|u| started.elapsed() >= u)
            || pace
                .stop
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        {
            break;
        }
        if let Some(rate) = pace.per_second {
            // Sleep only when a millisecond or more ahead: at tens of
            // thousands of records per second, one sleep per record would
            // cost more than the sending.
            let due = std::time::Duration::from_secs_f64(due_weight as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                if wait >= std::time::Duration::from_millis(1) {
                    std::thread::sleep(wait);
                }
            }
        }
        due_weight += weight;
        match producer.send(topic, Some(rec.key.as_bytes()), &rec.payload, &[]) {
            Ok(()) => {}
            Err(vigil_kafka::Error::TooLarge { .. }) => {
                done.too_large += 1;
                continue;
            }
            Err(e) => return Err(e).context("sending a record"),
        }
        done.records += 1;
        done.bytes += rec.payload.len() as u64;
        done.weight += weight;
    }
    producer
        .flush(std::time::Duration::from_secs(120))
        .context("waiting for the broker to acknowledge")?;
    done.elapsed = started.elapsed();
    Ok(done)
}
