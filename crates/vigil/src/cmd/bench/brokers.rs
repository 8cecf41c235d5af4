//! `vigil bench --brokers`: the whole pipeline through a real broker, with
//! the real worker (the code of `vigil run`) running in this process.
//!
//! ```text
//!  Fleet (generated into memory) ──produce──▶ <topic> (N partitions, new)
//!                                               │ new group <topic>.bench
//!                                               ▼
//!  Worker: consume → pipeline → Parquet (temporary dir) → alerts to <topic>.alerts,
//!          acknowledged → checkpoint → commit        (dead letters to <topic>.dlq)
//!  side loop, every second: high watermarks, committed offsets and the
//!  worker's processed count → lag; a row printed every --sample-every
//! ```
//!
//! Two modes:
//! - **backlog** (no `--rate`): the whole fleet is produced first, then the
//!   worker drains it as fast as it can: the worker's capacity.
//! - **rate** (`--rate P --duration D`): the worker joins first, then the
//!   fleet is produced at P points per second for D seconds while the
//!   worker consumes it: the lag samples show whether it keeps up, and the
//!   drain time after the producer stops is how far behind it was.
//!
//! `--threads 1,2` measures the worker with each number of members
//! (`worker.threads`) in one run, each on a topic of its own that its
//! members join before the fleet is produced as fast as it goes: with
//! several members on a ready backlog, the first member to join would
//! start alone and hand partitions over mid-run. Each run reports the
//! share of the members' time spent at flush points (sealing a flush, or
//! waiting for the one before it to be published: their partitions are
//! not consumed then), and the share their publishing threads worked
//! beside them.
//!
//! Reported: the worker's points and batches per second from its first
//! record to its last commit (everything published, acknowledged,
//! checkpointed and committed; also as a share of the raw protobuf decode
//! rate of the same bytes, measured here), the
//! lag over time with its least-squares trend, and the p50/p99 time from
//! the pipeline emitting an alert (a window closed) to the broker
//! acknowledging it.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use vigil_kafka::admin::{create_topics, delete_topics, OffsetProbe, TopicOutcome};
use vigil_kafka::{AckedProducer, KafkaSettings};
use vigil_ops::otlp::InputFormat;
use vigil_sim::{Expect, Fleet, FleetConfig, SimRecord};

use super::{best, points_of, raw_decode, tempfile_dir, Args};
use crate::cmd::simulate::{produce, Pace, Produced};
use crate::settings::Settings;
use crate::worker::{Worker, WorkerProgress};

/// Timeout of one offsets request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of the lag samples (rows are printed every `--sample-every`).
const SAMPLE_TICK: Duration = Duration::from_secs(1);
/// Longest wait for the worker to be assigned the partitions.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The run fails when the worker processes nothing for this long while
/// records wait.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Fewest lag samples a trend is computed from.
const MIN_TREND_SAMPLES: usize = 5;

/// One lag sample.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Seconds since the measurement started.
    at: f64,
    /// Records on the topic (sum of the high watermarks; the topic is new).
    produced: u64,
    /// Records the worker's pipeline processed.
    processed: u64,
    /// Points the worker's pipeline processed.
    points: u64,
    /// Records after the group's committed offsets.
    committed_lag: u64,
    /// Whether the producer was still sending.
    producing: bool,
}

impl Sample {
    /// Records on the topic the worker has not processed yet.
    fn lag(&self) -> u64 {
        self.produced.saturating_sub(self.processed)
    }
}

/// The least-squares slope of `y` over `x`, or `None` with fewer than
/// two distinct `x`.
fn slope(xy: &[(f64, f64)]) -> Option<f64> {
    let n = xy.len() as f64;
    if xy.len() < 2 {
        return None;
    }
    let mx = xy.iter().map(|p| p.0).sum::<f64>() / n;
    let my = xy.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = xy.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = xy.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Whether a lag trend of `slope` records/s over `span` seconds of input
/// at `input` records/s means the worker falls behind: the trend adds
/// more than one second of input over the run (more than a flush pause
/// explains) and more than 1 % of the input rate.
fn lag_grows(slope: f64, input: f64, span: f64) -> bool {
    slope * span > input && slope > 0.01 * input
}

/// A positive number of seconds from an option, or the default.
fn seconds(flag: &str, v: Option<f64>, default: f64) -> Result<f64> {
    let s = v.unwrap_or(default);
    ensure!(
        s.is_finite() && s > 0.0,
        "{flag} must be a positive number of seconds, not {s}"
    );
    Ok(s)
}

/// The fleet in memory, with the points of each record that the pipeline
/// accepts as a batch (what the worker counts and `--rate` paces): 0 for
/// duplicates and refused records, some of which are deliberately huge.
fn generate(cfg: &FleetConfig) -> (Vec<SimRecord>, Vec<u64>) {
    let records: Vec<SimRecord> = Fleet::new(cfg.clone()).collect();
    let mut b = vigil_proto::v1::TelemetryBatch::default();
    let points = records
        .iter()
        .map(|r| match r.expect {
            Expect::Accept | Expect::Late | Expect::Future => points_of(&mut b, &r.payload),
            Expect::Duplicate | Expect::SeqTooOld | Expect::Reject(_) => 0,
        })
        .collect();
    (records, points)
}

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Deletes the topics the bench created when dropped (also on errors).
struct Cleanup {
    kafka: KafkaSettings,
    topics: Vec<String>,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.topics.is_empty() {
            return;
        }
        if self.keep {
            println!("topics        kept: {}", self.topics.join(", "));
            return;
        }
        let names: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        match delete_topics(&self.kafka, &names, Duration::from_secs(30)) {
            Ok(()) => println!(
                "topics        deleted {} (--keep-topics keeps them)",
                names.join(", ")
            ),
            Err(e) => eprintln!("warning: could not delete the bench topics: {e}"),
        }
    }
}

/// What the measurement loop saw.
struct Measured {
    samples: Vec<Sample>,
    /// Records on the topic at the end of production.
    target: u64,
    /// In rate mode: what the producer sent and when it finished.
    produced: Option<(Produced, Instant)>,
    /// When the worker had processed every record.
    all_processed: Instant,
}

/// Runs `vigil bench --brokers`.
pub(super) fn run(config: Option<&Path>, a: &Args) -> Result<()> {
    let brokers = a.brokers.as_deref().context("--brokers is required")?;
    ensure!(
        a.format == InputFormat::Vigil,
        "--brokers measures Vigil's own format only; run `vigil bench --format otlp` without \
         --brokers for the OTLP decode, chain and end-to-end rates"
    );
    let mut settings = Settings::load(config)?;
    settings.kafka.brokers = brokers.to_string();
    let rules = settings.load_rules(None)?;
    let partitions = a.partitions.unwrap_or(2);
    ensure!(partitions >= 1, "--partitions must be at least 1");
    let sample_every = seconds("--sample-every", a.sample_every, 5.0)?;
    let rate = match a.rate {
        Some(r) => {
            ensure!(
                r.is_finite() && r > 0.0,
                "--rate must be a positive number of points per second, not {r}"
            );
            Some((r, seconds("--duration", a.duration, 60.0)?))
        }
        None => None,
    };
    let topic = a.topic.clone().unwrap_or_else(|| {
        format!(
            "vigil-bench-{}-{}",
            wall_ms().div_euclid(1000),
            std::process::id()
        )
    });
    vigil_kafka::config::check_topic_name(&topic).map_err(|e| anyhow!("--topic: {e}"))?;
    let mut kafka = settings.kafka.clone();
    kafka.alert_topic = format!("{topic}.alerts");
    if !kafka.dlq_topic.is_empty() {
        kafka.dlq_topic = format!("{topic}.dlq");
    }
    kafka.group_id = format!("{topic}.bench");
    kafka.telemetry_topic = topic.clone();
    kafka.create_topics = false;

    // The fleet, in memory, long enough for a rate run.
    let mut fleet_cfg = a.fleet.fleet_config()?;
    // Metric batches only, unless asked (`--posture true`).
    fleet_cfg.posture = a.fleet.posture.unwrap_or(false);
    let started = Instant::now();
    let (mut records, mut points) = generate(&fleet_cfg);
    if let Some((r, d)) = rate {
        let need = (r * d).ceil() as u64;
        let have: u64 = points.iter().sum();
        if have < need {
            let hours =
                fleet_cfg.duration_ms as f64 / 3.6e6 * need as f64 / have.max(1) as f64 * 1.05;
            fleet_cfg.duration_ms = (hours * 3.6e6).ceil() as i64;
            fleet_cfg
                .validate()
                .map_err(|e| anyhow!("lengthening the fleet to {hours:.1} h: {e}"))?;
            ensure!(
                fleet_cfg.start_ms + fleet_cfg.duration_ms < wall_ms(),
                "the fleet holds {have} points and a run at {r} points/s for {d} s needs {need}; \
                 lengthening it to {hours:.1} h would put its event time after now: give more --agents \
                 or an earlier --start-ms"
            );
            eprintln!(
                "the fleet holds {have} points, the run needs {need}: lengthened to {hours:.1} h"
            );
            (records, points) = generate(&fleet_cfg);
        }
    }
    let generated = started.elapsed();
    let batch_points: u64 = points.iter().sum();
    let bytes: u64 = records.iter().map(|r| r.payload.len() as u64).sum();
    println!(
        "vigil bench --brokers {brokers}: {} agents, {:.1} h, seed {}; topic {topic} ({partitions} partitions); {}; fsync {}",
        fleet_cfg.agents,
        fleet_cfg.duration_ms as f64 / 3.6e6,
        fleet_cfg.seed,
        match rate {
            Some((r, d)) => format!("produce at {r} points/s for {d} s while the worker consumes"),
            None if a.threads.len() > 1 => "for each --threads value: the worker joins, then the fleet is produced as fast as it goes and drained".into(),
            None => "produce everything, then let the worker drain the backlog".into(),
        },
        if settings.storage.parquet.sync { "on" } else { "off" },
    );
    let (t_decode, decoded_points) = best(a.runs, || {
        Ok(raw_decode(records.iter().map(|r| r.payload.as_slice())))
    })?;
    println!(
        "fleet         {} records, {:.1} MB, {batch_points} points in valid batches ({decoded_points} decoded, \
         with the malformed records) (generated in {:.1} s)",
        records.len(),
        bytes as f64 / 1e6,
        generated.as_secs_f64()
    );
    let decode_rate = decoded_points as f64 / t_decode;
    println!(
        "raw decode    {:.2} M points/s in this process (best of {}): the baseline of the ratios below",
        decode_rate / 1e6,
        a.runs.max(1)
    );

    let threads = if a.threads.is_empty() {
        vec![settings.worker.threads]
    } else {
        a.threads.clone()
    };
    ensure!(
        rate.is_none() || threads.len() == 1,
        "--rate measures one worker: give one --threads value"
    );
    // Several member counts: each drains a topic of its own, joining it
    // before the fleet is produced, so every member owns its partitions
    // from the first record (on a backlog, the first member to join would
    // start alone and hand partitions over mid-run).
    let join_first = threads.len() > 1;
    let mut capacities = Vec::new();
    for &n in &threads {
        let mut kafka = kafka.clone();
        let topic = if join_first {
            format!("{topic}-t{n}")
        } else {
            topic.clone()
        };
        kafka.telemetry_topic = topic.clone();
        kafka.alert_topic = format!("{topic}.alerts");
        if !kafka.dlq_topic.is_empty() {
            kafka.dlq_topic = format!("{topic}.dlq");
        }
        kafka.group_id = format!("{topic}.bench");
        let mut ws = settings.clone();
        ws.kafka = kafka.clone();
        ws.worker.threads = n;
        let members = ws.worker.member_threads();
        if join_first {
            println!(
                "--- worker.threads = {n} ({members} member{}), topic {topic}: the members join, then the fleet is produced as fast as it goes ---",
                if members == 1 { "" } else { "s" }
            );
        }
        // Topics: new (or empty), deleted at the end of the run.
        let _cleanup = bench_topics(&kafka, partitions, a.keep_topics)?;
        let probe = OffsetProbe::new(&kafka, &topic, PROBE_TIMEOUT)
            .with_context(|| format!("reading the offsets of {topic} on {brokers}"))?;
        let on_topic: u64 = probe
            .sample(PROBE_TIMEOUT)
            .with_context(|| format!("reading the offsets of {topic}"))?
            .iter()
            .map(|p| p.high.max(0) as u64)
            .sum();
        ensure!(
            on_topic == 0,
            "topic {topic} already holds {on_topic} records; the bench needs a new or empty topic \
             (leave out --topic for a new one)"
        );
        let new_producer = || {
            AckedProducer::new(&kafka, Duration::from_secs(60))
                .context("creating the telemetry producer")
        };
        let mut backlog_points = 0;
        if rate.is_none() && !join_first {
            let p = produce(
                &mut new_producer()?,
                &topic,
                records.iter().zip(points.iter().copied()),
                Pace::default(),
            )
            .with_context(|| format!("producing to {topic} on {brokers}"))?;
            print_produced(&p, None);
            backlog_points = p.weight;
        }
        let run = Run {
            ws,
            rules: rules.clone(),
            probe: &probe,
            records: &records,
            points: &points,
            topic: &topic,
            rate,
            join_first,
            backlog_points,
            sample_every,
            decode_rate,
            new_producer: &new_producer,
        };
        let rate = run
            .measure()
            .with_context(|| format!("measuring with {members} members on {topic}"))?;
        capacities.push((members, rate));
    }
    if capacities.len() > 1 {
        let (m1, r1) = capacities[0];
        let line: Vec<String> = capacities
            .iter()
            .map(|(m, r)| {
                format!(
                    "{m} member{}: {:.3} M points/s ({:.2} × {m1})",
                    if *m == 1 { "" } else { "s" },
                    r / 1e6,
                    r / r1.max(1e-9)
                )
            })
            .collect();
        println!("capacity      {}", line.join("; "));
    }
    Ok(())
}

/// Creates the bench's topics (telemetry, alerts and, if set, dead
/// letters) with `partitions` each; the guard deletes those it created.
fn bench_topics(kafka: &KafkaSettings, partitions: i32, keep: bool) -> Result<Cleanup> {
    let mut wanted = vec![
        (kafka.telemetry_topic.as_str(), partitions),
        (kafka.alert_topic.as_str(), partitions),
    ];
    if !kafka.dlq_topic.is_empty() {
        wanted.push((kafka.dlq_topic.as_str(), partitions));
    }
    let outcome = create_topics(kafka, &wanted, Duration::from_secs(30))
        .with_context(|| format!("creating the bench topics on {}", kafka.brokers))?;
    Ok(Cleanup {
        kafka: kafka.clone(),
        topics: outcome
            .iter()
            .filter(|(_, o)| matches!(o, TopicOutcome::Created(_)))
            .map(|(t, _)| t.clone())
            .collect(),
        keep,
    })
}

/// One measured worker run over the bench topic.
struct Run<'a, P> {
    ws: Settings,
    rules: Arc<vigil_ops::rules::RuleSet>,
    probe: &'a OffsetProbe,
    records: &'a [SimRecord],
    points: &'a [u64],
    topic: &'a str,
    rate: Option<(f64, f64)>,
    /// Produce the fleet (as fast as it goes) once the members own the
    /// partitions, instead of before the worker starts.
    join_first: bool,
    /// Points produced before the worker started (backlog mode).
    backlog_points: u64,
    sample_every: f64,
    decode_rate: f64,
    new_producer: &'a P,
}

impl<P: Fn() -> Result<AckedProducer> + Sync> Run<'_, P> {
    /// Runs the worker until it has processed everything on the topic
    /// (producing at the rate first, in rate mode), stops it, reports, and
    /// returns its rate in points per second.
    fn measure(&self) -> Result<f64> {
        let dir = tempfile_dir()?;
        let mut ws = self.ws.clone();
        ws.data_dir = dir.path().join("data").into();
        ws.worker.state_dir = dir.path().join("state").into();
        let (rate, probe, topic) = (self.rate, self.probe, self.topic);
        let progress = Arc::new(WorkerProgress::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let stop_producing = AtomicBool::new(false);
        let members = ws.worker.member_threads();
        let (measured, stopped) = std::thread::scope(|sc| -> Result<(Measured, Instant)> {
            let worker = {
                let (ws, rules, shutdown, progress) = (
                    ws.clone(),
                    self.rules.clone(),
                    shutdown.clone(),
                    progress.clone(),
                );
                std::thread::Builder::new()
                    .name("vigil-worker".into())
                    .spawn_scoped(sc, move || {
                        Worker::run_with_progress(ws, rules, shutdown, progress)
                    })
                    .context("starting the worker thread")?
            };
            let measured = (|| -> Result<Measured> {
                // The worker owns every partition before the clock starts,
                // spread over as many members as can have one (the first
                // member to join is given them all, then hands some over).
                let joining = Instant::now();
                let n = probe.partitions().len() as u64;
                let busy = n.min(members as u64);
                while progress.partitions() < n || progress.busy_members() < busy {
                    if worker.is_finished() {
                        bail!("the worker stopped before it was assigned the partitions");
                    }
                    if joining.elapsed() > JOIN_TIMEOUT {
                        bail!(
                            "the worker's {members} member(s) were not assigned the {n} partitions \
                             of {topic} within {} s",
                            JOIN_TIMEOUT.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                println!(
                    "worker        owns the {n} partitions after {:.2} s ({members} member{})",
                    joining.elapsed().as_secs_f64(),
                    if members == 1 { "" } else { "s" }
                );
                let pace = match rate {
                    Some((r, d)) => Some((Some(r), Some(Duration::from_secs_f64(d)))),
                    None if self.join_first => Some((None, None)),
                    None => None,
                };
                let producer_thread = match pace {
                    Some((per_second, until)) => {
                        let mut producer = (self.new_producer)()?;
                        let (records, points, stop) = (self.records, self.points, &stop_producing);
                        Some(
                            std::thread::Builder::new()
                                .name("vigil-bench-producer".into())
                                .spawn_scoped(sc, move || {
                                    let p = produce(
                                        &mut producer,
                                        topic,
                                        records.iter().zip(points.iter().copied()),
                                        Pace {
                                            per_second,
                                            until,
                                            stop: Some(stop),
                                        },
                                    );
                                    (p, Instant::now())
                                })
                                .context("starting the producer thread")?,
                        )
                    }
                    None => None,
                };
                let r = sample_until_processed(
                    probe,
                    &progress,
                    producer_thread,
                    &worker,
                    self.sample_every,
                );
                if r.is_err() {
                    stop_producing.store(true, Ordering::Relaxed);
                }
                r
            })();
            // Final flush: Parquet published, alerts acknowledged,
            // checkpoint, commit; then the worker leaves the group.
            shutdown.store(true, Ordering::Relaxed);
            let summary = worker
                .join()
                .map_err(|_| anyhow!("the worker thread panicked"))?;
            let stopped = Instant::now();
            let summary = summary.context("the worker failed")?;
            tracing::debug!(flushes = summary.flushes, "worker stopped");
            Ok((measured?, stopped))
        })?;

        // Committed offsets after the final flush.
        let committed_lag: u64 = probe
            .sample(PROBE_TIMEOUT)
            .with_context(|| format!("reading the offsets of {topic}"))?
            .iter()
            .map(|p| p.lag())
            .sum();

        Ok(report(&Report {
            m: &measured,
            rate,
            progress: &progress,
            members,
            backlog_points: self.backlog_points,
            decode_rate: self.decode_rate,
            stopped,
            committed_lag,
        }))
    }
}

fn print_produced(p: &Produced, target: Option<f64>) {
    let secs = p.elapsed.as_secs_f64().max(1e-9);
    let share = target
        .map(|t| {
            format!(
                " ({:.1} % of the target)",
                100.0 * p.weight as f64 / secs / t
            )
        })
        .unwrap_or_default();
    println!(
        "producer      {} records, {} points, {:.1} MB in {:.2} s: {:.3} M points/s{share}, {:.0} batches/s, all acknowledged",
        p.records,
        p.weight,
        p.bytes as f64 / 1e6,
        secs,
        p.weight as f64 / secs / 1e6,
        p.records as f64 / secs
    );
    if p.too_large > 0 {
        println!(
            "              {} record(s) over the producer's message.max.bytes skipped (the simulator's too_large faults)",
            p.too_large
        );
    }
}

/// Samples the lag every [`SAMPLE_TICK`] (printing a row every
/// `sample_every` seconds) until the producer has finished and the worker
/// has processed every record on the topic.
fn sample_until_processed<W>(
    probe: &OffsetProbe,
    progress: &WorkerProgress,
    mut producer: Option<std::thread::ScopedJoinHandle<'_, (Result<Produced>, Instant)>>,
    worker: &std::thread::ScopedJoinHandle<'_, W>,
    sample_every: f64,
) -> Result<Measured> {
    let t0 = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut produced: Option<(Produced, Instant)> = None;
    // Records on the topic once the producer has finished.
    let mut target: Option<u64> = None;
    let mut next_sample = t0;
    let mut next_row = 0.0f64;
    let mut printed: Option<Sample> = None;
    let mut last_moved = (progress.records(), Instant::now());
    // Progress is the records processed and still held by their owners
    // (`offsets_reached`): a record read again after a partition moved
    // counts once.
    println!(
        "lag every {sample_every} s, in records (lag: on the topic, not yet processed; committed lag: after the group's committed offsets, which advance at each flush):"
    );
    println!(
        "{:>8} {:>12} {:>12} {:>10} {:>14} {:>16}",
        "t (s)", "produced", "processed", "lag", "committed lag", "worker points/s"
    );
    let row = |s: &Sample, prev: Option<&Sample>| {
        let rate = prev
            .filter(|p| s.at > p.at)
            .map(|p| (s.points - p.points) as f64 / (s.at - p.at))
            .unwrap_or(0.0);
        println!(
            "{:>8.1} {:>12} {:>12} {:>10} {:>14} {:>14.3} M",
            s.at,
            s.produced,
            s.processed,
            s.lag(),
            s.committed_lag,
            rate / 1e6
        );
        let _ = std::io::stdout().flush();
    };
    loop {
        if producer.as_ref().is_some_and(|h| h.is_finished()) {
            if let Some(h) = producer.take() {
                let (p, at) = h
                    .join()
                    .map_err(|_| anyhow!("the producer thread panicked"))?;
                let p = p.context("producing the fleet")?;
                produced = Some((p, at));
            }
        }
        if worker.is_finished() {
            bail!("the worker stopped before it processed every record");
        }
        let now = Instant::now();
        let producing = producer.is_some();
        if now >= next_sample || (!producing && target.is_none()) {
            // The worker's count first: it can only grow while the offsets
            // are read, so the lag is never under-estimated.
            let (processed, points) = (progress.offsets_reached(), progress.points());
            let offsets = probe
                .sample(PROBE_TIMEOUT)
                .context("sampling the consumer lag")?;
            let s = Sample {
                at: now.duration_since(t0).as_secs_f64(),
                produced: offsets.iter().map(|p| p.high.max(0) as u64).sum(),
                processed,
                points,
                committed_lag: offsets.iter().map(|p| p.lag()).sum(),
                producing,
            };
            if !producing && target.is_none() {
                // Every record is acknowledged: the topic's end is final.
                target = Some(s.produced);
            }
            if s.at >= next_row {
                row(&s, printed.as_ref());
                printed = Some(s);
                next_row += sample_every;
            }
            samples.push(s);
            while next_sample <= now {
                next_sample += SAMPLE_TICK;
            }
        }
        let processed = progress.offsets_reached();
        if let Some(t) = target {
            if processed >= t {
                let all_processed = Instant::now();
                let s = Sample {
                    at: all_processed.duration_since(t0).as_secs_f64(),
                    produced: t,
                    processed,
                    points: progress.points(),
                    committed_lag: samples.last().map_or(0, |s| s.committed_lag),
                    producing: false,
                };
                row(&s, printed.as_ref());
                samples.push(s);
                return Ok(Measured {
                    samples,
                    target: t,
                    produced,
                    all_processed,
                });
            }
        }
        // Any record, also one read again, shows the worker is not stuck.
        let moved = progress.records();
        if moved != last_moved.0 {
            last_moved = (moved, Instant::now());
        } else if last_moved.1.elapsed() > STALL_TIMEOUT
            && samples.last().is_some_and(|s| s.lag() > 0)
        {
            bail!(
                "the worker processed nothing for {} s with {} records waiting",
                STALL_TIMEOUT.as_secs(),
                samples.last().map_or(0, |s| s.lag())
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Everything the final report needs.
struct Report<'a> {
    m: &'a Measured,
    rate: Option<(f64, f64)>,
    progress: &'a WorkerProgress,
    /// Consumer-group members the worker ran.
    members: usize,
    /// Points produced before the worker started (backlog mode).
    backlog_points: u64,
    decode_rate: f64,
    stopped: Instant,
    committed_lag: u64,
}

/// Prints the run's figures; returns the worker's rate (points per
/// second, first record to last commit).
fn report(r: &Report<'_>) -> f64 {
    let m = r.m;
    if let Some((p, _)) = &m.produced {
        print_produced(p, r.rate.map(|(target, _)| target));
    }
    // The records on the topic, each counted once: a record read again
    // (its partition moved between members before its flush) is work
    // done twice, not output.
    let records = m.target;
    let points = match &m.produced {
        Some((p, _)) => p.weight,
        None => r.backlog_points,
    };
    let first = r.progress.first_record().unwrap_or(m.all_processed);
    // Everything durable: the last commit ends the final flush.
    let span = r
        .stopped
        .saturating_duration_since(first)
        .as_secs_f64()
        .max(1e-9);
    let worker_rate = points as f64 / span;
    println!(
        "worker        {points} points, {records} batches from its first record to its last commit in {span:.2} s: \
         {:.3} M points/s, {:.0} batches/s ({:.1} % of raw decode)",
        worker_rate / 1e6,
        records as f64 / span,
        100.0 * worker_rate / r.decode_rate
    );
    println!(
        "              of which {:.2} s to process the last record, then {:.2} s for the final flush \
         (Parquet, alert acks, checkpoint, commit); {} flushes in all",
        m.all_processed
            .saturating_duration_since(first)
            .as_secs_f64(),
        r.stopped
            .saturating_duration_since(m.all_processed)
            .as_secs_f64(),
        r.progress.flushes()
    );
    let reread = r.progress.records().saturating_sub(records);
    if reread > 0 {
        println!(
            "              {reread} records read twice: partitions moved between members before \
             their flush (the first member to join starts alone, then hands some over)"
        );
    }
    let (checkpoints, bytes) = r.progress.checkpoints();
    let (bases, base_bytes) = r.progress.checkpoint_bases();
    let deltas = checkpoints - bases;
    let mb = |b: u64, n: u64| b as f64 / n.max(1) as f64 / 1e6;
    println!(
        "checkpoints   {checkpoints} written, {:.1} MB in all, {:.2} MB each on average: {bases} new bases \
         (the whole state of a partition) of {:.2} MB, {deltas} deltas (the agents changed since the \
         partition's last checkpoint) of {:.2} MB",
        bytes as f64 / 1e6,
        mb(bytes, checkpoints),
        mb(base_bytes, bases),
        mb(bytes - base_bytes, deltas)
    );
    // While a member seals a flush, or waits for the one before it to be
    // published, none of its partitions is consumed; the publishing
    // itself runs beside it.
    let member_time = span * r.members.max(1) as f64;
    println!(
        "flushing      {:.1} % of the members' time ({:.2} s over {} member{}): the share a partition is not consumed \
         (sealing a flush, or waiting for the one before it); publishing beside it {:.1} % ({:.2} s)",
        100.0 * r.progress.flushing().as_secs_f64() / member_time,
        r.progress.flushing().as_secs_f64(),
        r.members,
        if r.members == 1 { "" } else { "s" },
        100.0 * r.progress.publishing().as_secs_f64() / member_time,
        r.progress.publishing().as_secs_f64(),
    );

    // Lag: during production in rate mode; the backlog draining otherwise.
    let during: Vec<&Sample> = m.samples.iter().filter(|s| s.producing).collect();
    match (&m.produced, r.rate) {
        (Some((p, done)), Some(_)) => {
            let input = p.records as f64 / p.elapsed.as_secs_f64().max(1e-9);
            let max = during.iter().map(|s| s.lag()).max().unwrap_or(0);
            let last = during.last().map_or(0, |s| s.lag());
            let xy: Vec<(f64, f64)> = during.iter().map(|s| (s.at, s.lag() as f64)).collect();
            let span = p.elapsed.as_secs_f64();
            let verdict = match slope(&xy) {
                Some(k) if xy.len() >= MIN_TREND_SAMPLES => format!(
                    "trend {k:+.0} records/s ({:+.0} over the {span:.0} s) from {} samples: {}",
                    k * span,
                    xy.len(),
                    if lag_grows(k, input, span) {
                        "GROWING (the worker does not keep up)"
                    } else {
                        "not growing"
                    }
                ),
                _ => "too few samples for a trend (run longer)".into(),
            };
            println!(
                "lag           max {max} records ({:.2} s of input), {last} at the last sample of production; {verdict}",
                max as f64 / input.max(1e-9)
            );
            println!(
                "drain         the worker processed the last record {:.2} s after the producer's last acknowledgement",
                m.all_processed.saturating_duration_since(*done).as_secs_f64()
            );
        }
        (Some(_), None) => {
            let max = m.samples.iter().map(|s| s.lag()).max().unwrap_or(0);
            println!(
                "lag           at most {max} records while the fleet was produced as fast as it goes, drained to 0"
            );
        }
        _ => {
            let max = m.samples.iter().map(|s| s.lag()).max().unwrap_or(0);
            println!(
                "lag           {max} records at the start, drained to 0 (backlog mode; --rate shows whether lag grows under a steady input)"
            );
        }
    }
    match r.progress.ack_latency().summary() {
        Some(s) => println!(
            "alert ack     {} alerts, window close → broker ack: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (mean {:.1} ms)",
            s.count,
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            s.max.as_secs_f64() * 1e3,
            s.mean.as_secs_f64() * 1e3
        ),
        None => println!("alert ack     0 alerts: no latency to report (a larger or longer fleet raises some)"),
    }
    println!(
        "committed     {} of {} records (committed lag {})",
        m.target.saturating_sub(r.committed_lag),
        m.target,
        r.committed_lag
    );
    worker_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_the_least_squares_trend() {
        assert_eq!(slope(&[]), None);
        assert_eq!(slope(&[(1.0, 5.0)]), None);
        assert_eq!(slope(&[(1.0, 5.0), (1.0, 7.0)]), None);
        let k = slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((k - 2.0).abs() < 1e-12);
        // A spike in the middle does not tilt a flat series.
        let k = slope(&[
            (0.0, 10.0),
            (1.0, 10.0),
            (2.0, 1000.0),
            (3.0, 10.0),
            (4.0, 10.0),
        ])
        .unwrap();
        assert!(k.abs() < 1e-9);
    }

    #[test]
    fn lag_grows_only_beyond_a_second_of_input_and_one_percent() {
        // 20,000 records/s for 60 s: +400 records/s adds 24,000 (1.2 s).
        assert!(lag_grows(400.0, 20_000.0, 60.0));
        // +300 records/s adds 18,000 (0.9 s): a flush pause explains it.
        assert!(!lag_grows(300.0, 20_000.0, 60.0));
        // Over ten minutes, 1 % of the input is the bound.
        assert!(!lag_grows(150.0, 20_000.0, 600.0));
        assert!(lag_grows(250.0, 20_000.0, 600.0));
        assert!(!lag_grows(-50.0, 20_000.0, 60.0));
    }

    #[test]
    fn seconds_must_be_positive_and_finite() {
        assert_eq!(seconds("--x", None, 5.0).unwrap(), 5.0);
        assert_eq!(seconds("--x", Some(0.5), 5.0).unwrap(), 0.5);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = seconds("--x", Some(bad), 5.0).unwrap_err().to_string();
            assert!(e.contains("--x"), "{e}");
        }
    }
}
