//! `vigil bench`: the whole in-process pipeline on a generated fleet, with
//! every rate measured in the same run next to the raw protobuf decode
//! rate of the same bytes (ratios travel between machines; absolute
//! numbers on shared machines do not).
//!
//! Stages, each over the same records held in memory:
//! 1. raw decode: prost decode of every record the pipeline decodes (all
//!    but those over `limits.max_batch_bytes`), nothing else (of a
//!    `TelemetryBatch`, or with `--format otlp` of an OTLP
//!    `ExportMetricsServiceRequest`: the fleet re-encoded as the
//!    Collector's hostmetrics would send it);
//! 2. operator chain: decode → validate → dedup → windows → detectors →
//!    alerts, one thread, no I/O;
//! 3. end to end: the chain plus Arrow building, Parquet encoding and
//!    atomic publication (a replay into a temporary directory).
//! 4. end to end on two threads: the same replay with publishing (Arrow,
//!    Parquet, files) on a second thread ([`Replay::threaded`], what
//!    `vigil ingest` and `vigil demo` do).
//!
//! "vs raw decode" is the raw decode's time over the stage's time for the
//! same records: in OTLP one source point is not one Vigil point (a
//! CPU's idle, user and system times make one `cpu_pct`), so rates in
//! points are not comparable across the two, while times are.
//!
//! Also reported: batches per second, bytes of operator state per series
//! (allocator-counted, after stage 2) and the peak RSS.
//!
//! Without an explicit batch shape (`--points-per-batch`,
//! `--series-per-batch`) every stage runs over two fleets that differ only
//! in how agents batch: `tick`, one point per series per batch (what real
//! RMM agents send), and `batch`, the simulator's default of a batch every
//! 60 s (about 6 points per series, ~48 points per batch).
//!
//! With `--brokers`, the same fleet goes through a real broker and the
//! real worker instead: see the `brokers` module.

mod brokers;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use prost::Message;
use vigil_ops::config::ClockMode;
use vigil_ops::otlp::InputFormat;
use vigil_ops::pipeline::{Outputs, Pipeline};
use vigil_ops::Position;
use vigil_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vigil_proto::v1::TelemetryBatch;
use vigil_sim::Fleet;

use super::simulate::FleetArgs;
use crate::replay::Replay;
use crate::settings::Settings;

/// Arguments of `vigil bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fleet shape (defaults: 1,000 agents, 6 h).
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Repeat each stage this many times and keep the fastest run (with
    /// `--brokers`: the raw decode baseline only).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Record format the fleet is encoded in: `vigil` (`TelemetryBatch`)
    /// or `otlp` (each batch as the hostmetrics `ExportMetricsServiceRequest`
    /// of `vigil simulate --format otlp`; with `--brokers`, the worker reads
    /// the topic as OTLP).
    #[arg(long, default_value = "vigil")]
    pub format: InputFormat,
    /// Run the whole pipeline through this Kafka broker instead: produce
    /// the fleet to a new topic and run the worker on it in-process
    /// (other client properties come from the config's `[kafka]`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Telemetry topic for `--brokers` (default: a new
    /// `vigil-bench-<time>-<pid>`); it must be new or empty. The alerts go
    /// to `<topic>.alerts`, dead letters to `<topic>.dlq`.
    #[arg(long, requires = "brokers")]
    pub topic: Option<String>,
    /// Partitions of the topics `--brokers` creates [default: 2].
    #[arg(long, requires = "brokers")]
    pub partitions: Option<i32>,
    /// Produce at this many points per second while the worker consumes,
    /// for `--duration` (default: produce the whole fleet first, then let
    /// the worker consume the backlog as fast as it can). The fleet is
    /// lengthened when it holds fewer points than the run needs.
    #[arg(long, requires = "brokers")]
    pub rate: Option<f64>,
    /// Seconds to produce at `--rate` [default: 60].
    #[arg(long, requires = "rate")]
    pub duration: Option<f64>,
    /// Seconds between the printed lag samples [default: 5].
    #[arg(long, requires = "brokers")]
    pub sample_every: Option<f64>,
    /// Keep the topics `--brokers` created (default: delete them at the
    /// end; a broker that keeps every record in memory fills up).
    #[arg(long, requires = "brokers")]
    pub keep_topics: bool,
    /// Worker threads (`worker.threads`, consumer-group members) to
    /// measure, comma separated: `--threads 1,2` drains the same backlog
    /// once with each, in a new group every time [default: the
    /// configuration's]. One value with `--rate`.
    #[arg(long, requires = "brokers", value_delimiter = ',')]
    pub threads: Vec<usize>,
}

/// One stage's best time.
fn best<T>(runs: u32, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut best: Option<(f64, T)> = None;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let v = f()?;
        let s = t.elapsed().as_secs_f64().max(1e-9);
        if best.as_ref().is_none_or(|(b, _)| s < *b) {
            best = Some((s, v));
        }
    }
    best.context("no run")
}

/// Points in a record (0 when it does not decode), reusing `b`.
fn points_of(b: &mut TelemetryBatch, record: &[u8]) -> u64 {
    b.clear();
    if b.merge(record).is_err() {
        return 0;
    }
    b.series
        .iter()
        .map(|s| s.timestamps_ms.len() as u64)
        .sum::<u64>()
}

/// Stage 1, raw protobuf decode: the points in `records`.
fn raw_decode<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut b = TelemetryBatch::default();
    records.into_iter().map(|r| points_of(&mut b, r)).sum()
}

/// Data points of every type in an OTLP request (0 when it does not
/// decode), reusing `req`.
fn otlp_points_of(req: &mut ExportMetricsServiceRequest, record: &[u8]) -> u64 {
    req.clear();
    if req.merge(record).is_err() {
        return 0;
    }
    let mut n = 0u64;
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                n += vigil_ops::otlp::metric_points(m) as u64;
            }
        }
    }
    n
}

/// Stage 1 on OTLP records: the OTLP data points in `records`.
fn raw_decode_otlp<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut req = ExportMetricsServiceRequest::default();
    records
        .into_iter()
        .map(|r| otlp_points_of(&mut req, r))
        .sum()
}

/// One batch shape's figures.
struct ShapeRun {
    /// `tick` or `batch` (or `given` for an explicit shape).
    name: &'static str,
    format: InputFormat,
    records: usize,
    bytes: usize,
    points: u64,
    /// Points of the batches the chain took in (not resends, late or
    /// refused ones), Vigil points.
    points_in: u64,
    /// (stage, points per second, seconds of the best run). In Vigil's
    /// format every stage counts the input's points; in OTLP raw decode
    /// counts OTLP data points and the other stages the Vigil points the
    /// chain took in.
    stages: [(&'static str, f64, f64); 4],
    /// Operator state after the chain (bytes), series and agents.
    state_bytes: usize,
    series: u64,
    agents: u64,
    aggregate_rows: u64,
    alert_rows: u64,
    files: u64,
}

/// Runs the three stages over one generated fleet.
fn bench_shape(
    name: &'static str,
    settings: &Settings,
    rules: &std::sync::Arc<vigil_ops::rules::RuleSet>,
    fleet_cfg: vigil_sim::FleetConfig,
    format: InputFormat,
    runs: u32,
) -> Result<ShapeRun> {
    let fleet = Fleet::new(fleet_cfg);
    let records: Vec<Vec<u8>> = match format {
        InputFormat::Vigil => fleet.map(|r| r.payload).collect(),
        InputFormat::Otlp => {
            let mut e = vigil_sim::otlp::OtlpEncoder::new();
            fleet.map(|r| e.encode(&r.payload)).collect()
        }
    };
    let bytes: usize = records.iter().map(Vec::len).sum();

    // 1. Raw decode, of the records the pipeline decodes: it refuses
    // those over `limits.max_batch_bytes` (the simulator's deliberately
    // huge ones) by their length alone.
    let max_bytes = settings.pipeline.limits.max_batch_bytes;
    let (t_decode, points) = best(runs, || {
        let records = records
            .iter()
            .filter(|r| r.len() <= max_bytes)
            .map(Vec::as_slice);
        Ok(match format {
            InputFormat::Vigil => raw_decode(records),
            InputFormat::Otlp => raw_decode_otlp(records),
        })
    })?;

    // 2. Operator chain, no I/O; then state measured in one more,
    // untimed run (the heap it leaves: see `crate::alloc`).
    let mut cfg = settings.pipeline.clone();
    cfg.clock = ClockMode::Replay;
    let chain = || -> Result<Pipeline> {
        let mut p =
            Pipeline::new(cfg.clone(), rules.clone()).map_err(crate::settings::invalid_pipeline)?;
        let mut out = Outputs::default();
        for (i, r) in records.iter().enumerate() {
            let pos = Position {
                partition: 0,
                offset: i as i64,
            };
            match format {
                InputFormat::Vigil => p.process(pos, r, 0, &mut out),
                InputFormat::Otlp => p.process_otlp(pos, r, 0, &mut out),
            }
            out.clear();
        }
        Ok(p)
    };
    let (t_chain, stats) = best(runs, || Ok(chain()?.stats().clone()))?;
    let (p, state_bytes) = crate::alloc::heap_growth(chain);
    let state_bytes = state_bytes.unwrap_or(0);
    let series = p?.stats().series;

    // 3. End to end into Parquet.
    let dir = tempfile_dir()?;
    let (t_e2e, summary) = best(runs, || {
        let mut r =
            Replay::new(settings, dir.path(), "bench", rules.clone())?.with_input_format(format);
        for rec in &records {
            r.push(rec)?;
        }
        r.finish()
    })?;

    // 4. The same on two threads.
    let (t_e2e2, summary2) = best(runs, || {
        let mut r = Replay::new(settings, dir.path(), "bench", rules.clone())?
            .with_input_format(format)
            .threaded(settings, dir.path())?;
        for rec in &records {
            r.push(rec)?;
        }
        r.finish()
    })?;
    anyhow::ensure!(
        summary2 == summary,
        "the threaded replay wrote other output than the single-threaded one"
    );

    let rate = |n: u64, t: f64| n as f64 / t;
    // Every stage consumes the same records: in Vigil's format its rate is
    // of the same points as raw decode's (the input, resends and refused
    // batches included), so a rate ratio is the time ratio. OTLP source
    // points are not Vigil points: there the stages count what the chain
    // took in.
    let consumed = |taken: u64| match format {
        InputFormat::Vigil => points,
        InputFormat::Otlp => taken,
    };
    Ok(ShapeRun {
        name,
        format,
        records: records.len(),
        bytes,
        points,
        points_in: stats.points_in,
        stages: [
            ("raw protobuf decode", rate(points, t_decode), t_decode),
            (
                "operator chain (no I/O)",
                rate(consumed(stats.points_in), t_chain),
                t_chain,
            ),
            (
                "end to end (Parquet)",
                rate(consumed(summary.stats.points_in), t_e2e),
                t_e2e,
            ),
            (
                "end to end, 2 threads",
                rate(consumed(summary2.stats.points_in), t_e2e2),
                t_e2e2,
            ),
        ],
        state_bytes,
        series,
        agents: stats.agents,
        aggregate_rows: summary.aggregate_rows,
        alert_rows: summary.alert_rows,
        files: summary.files,
    })
}

/// Runs `vigil bench`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    if a.brokers.is_some() {
        return brokers::run(config, &a);
    }
    let mut settings = Settings::load(config)?;
    settings.storage.parquet.sync = false;
    let rules = settings.load_rules(None)?;
    // Without an explicit shape: the agent tick (one point per series per
    // batch) and the default larger batches, one after the other.
    let mut shapes: Vec<(&'static str, vigil_sim::FleetConfig)> = if a.fleet.shape_given() {
        vec![("given", a.fleet.fleet_config()?)]
    } else {
        vec![
            ("tick", a.fleet.fleet_config_shaped(Some(1))?),
            ("batch", a.fleet.fleet_config_shaped(None)?),
        ]
    };
    // Metric batches only, unless asked (`--posture true`).
    for (_, c) in &mut shapes {
        c.posture = a.fleet.posture.unwrap_or(false);
    }
    let first = &shapes[0].1;
    println!(
        "vigil bench: {} agents, {:.1} h, seed {}, a point every {}, {} records; best of {} runs per stage; one thread but for the last stage",
        first.agents,
        first.duration_ms as f64 / 3.6e6,
        first.seed,
        humantime::format_duration(a.fleet.point_interval),
        format_name(a.format),
        a.runs
    );
    let mut done = Vec::new();
    for (name, cfg) in shapes {
        println!("{name:<6} {}", FleetArgs::shape_label(&cfg));
        done.push(bench_shape(name, &settings, &rules, cfg, a.format, a.runs)?);
    }
    print_report(&done);
    Ok(())
}

fn format_name(f: InputFormat) -> &'static str {
    match f {
        InputFormat::Vigil => "vigil",
        InputFormat::Otlp => "otlp",
    }
}

/// Prints the shapes' figures: one table of the inputs, one of the stages.
fn print_report(done: &[ShapeRun]) {
    println!();
    println!("shape       records        points   points/batch       MB   state bytes/series");
    for s in done {
        let state = if s.state_bytes > 0 && s.series > 0 {
            format!("{:.0}", s.state_bytes as f64 / s.series as f64)
        } else {
            "not measured".to_string()
        };
        println!(
            "{:<6} {:>12} {:>13} {:>14.1} {:>8.1}   {state:>18}",
            s.name,
            s.records,
            s.points,
            s.points as f64 / s.records.max(1) as f64,
            s.bytes as f64 / 1e6,
        );
    }
    println!();
    println!("shape  stage                      points/s    batches/s   vs raw decode");
    for s in done {
        let t_decode = s.stages[0].2;
        for (i, (stage, r, t)) in s.stages.into_iter().enumerate() {
            let unit = match (s.format, i) {
                (InputFormat::Otlp, 0) => " (OTLP data points)",
                (InputFormat::Otlp, _) => " (Vigil points)",
                _ => "",
            };
            println!(
                "{:<6} {stage:<24} {:>10.2} M {:>12.0}   {:>6.1} %{unit}",
                s.name,
                r / 1e6,
                s.records as f64 / t,
                100.0 * t_decode / t
            );
        }
    }
    println!();
    for s in done {
        if s.format == InputFormat::Vigil {
            println!(
                "{:<6} points/s are of the input's {} points; the chain took in {} ({:.1} %; the rest were in resent or refused batches)",
                s.name,
                s.points,
                s.points_in,
                100.0 * s.points_in as f64 / s.points.max(1) as f64
            );
        }
        if s.state_bytes > 0 && s.series > 0 {
            println!(
                "{:<6} operator state {:.1} MB for {} series of {} agents: {:.0} bytes per series \
                 (open windows, dedup state, detector and alert state)",
                s.name,
                s.state_bytes as f64 / 1e6,
                s.series,
                s.agents,
                s.state_bytes as f64 / s.series as f64
            );
        } else {
            println!(
                "{:<6} operator state not measured (needs glibc's mallinfo2)",
                s.name
            );
        }
        println!(
            "{:<6} parquet        {} aggregate rows, {} alert rows, {} files",
            s.name, s.aggregate_rows, s.alert_rows, s.files
        );
    }
    if let Some(rss) = crate::alloc::peak_rss() {
        let held = done.iter().map(|s| s.bytes).max().unwrap_or(0);
        println!(
            "peak RSS {:.0} MB (includes the records of one shape held in memory: up to {:.0} MB)",
            rss as f64 / 1e6,
            held as f64 / 1e6
        );
    }
}

fn tempfile_dir() -> Result<TempDir> {
    let p = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(TempDir(p))
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
