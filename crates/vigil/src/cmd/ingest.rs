//! `vigil ingest`: run a file of length-delimited records (Vigil batches or
//! OTLP export requests) through the pipeline (backfill, replay of
//! captured telemetry, tests).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use vigil_ops::RejectReason;
use vigil_sim::{Frame, SkipKind, Skipped};

use vigil_ops::otlp::InputFormat;

use crate::replay::Replay;
use crate::settings::Settings;

/// Arguments of `vigil ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// File of length-delimited records (see `--input-format`), or `-`
    /// for standard input (read as a stream: memory does not grow with
    /// the input).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Root of the output datasets, a local directory (default:
    /// `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<String>,
    /// Rules file (default: `rules` from the config, else the built-in rules).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Wire format of the records: `vigil` (`vigil.v1.TelemetryBatch`) or
    /// `otlp` (OpenTelemetry `ExportMetricsServiceRequest`, as the
    /// Collector's Kafka exporter writes them; see docs/otlp.md). Never
    /// guessed from the bytes.
    #[arg(long, env = "VIGIL_INPUT_FORMAT", default_value = "vigil")]
    pub input_format: InputFormat,
    /// Threads: 2 publishes each range's Parquet files (sorting,
    /// encoding, writing) on a second thread while the first decodes and
    /// runs the operator chain; 1 does everything on one thread. The
    /// files are the same, byte for byte, either way.
    #[arg(long, env = "VIGIL_REPLAY_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub threads: u8,
}

/// Runs `vigil ingest`.
pub fn run(config: Option<&Path>, a: Args) -> Result<()> {
    let settings = Settings::load(config)?;
    let loaded = settings.load_rules_with_meta(a.rules.as_deref())?;
    let data_dir = crate::settings::location_arg(a.data_dir.clone())?
        .unwrap_or_else(|| settings.data_dir.clone())
        .local_dir("vigil ingest")?
        .to_path_buf();
    crate::audit::record_rules_start(
        &vigil_store::Root::local(&data_dir),
        &settings,
        &loaded,
        "ingest",
    )?;
    let rules = loaded.rules;
    let (reader, source): (Box<dyn std::io::Read>, String) = if a.input.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), "stdin".into())
    } else {
        let file = std::fs::File::open(&a.input)
            .with_context(|| format!("opening {}", a.input.display()))?;
        let stem = a
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned());
        (Box::new(file), stem.unwrap_or_else(|| "input".into()))
    };
    let started = Instant::now();
    let span = tracing::info_span!("ingest", input = %a.input.display());
    let _g = span.enter();
    let mut replay =
        Replay::new(&settings, &data_dir, &source, rules)?.with_input_format(a.input_format);
    if a.threads > 1 {
        replay = replay.threaded(&settings, &data_dir)?;
    }
    if a.input.as_os_str() != "-" {
        // The file holds every record: truncated dead letters name it by
        // offset instead of copying it.
        replay = replay.input_is_kept();
    }
    let mut records = vigil_sim::read_delimited(std::io::BufReader::with_capacity(1 << 20, reader));
    let mut payload = Vec::new();
    let corrupt = loop {
        match records.read_frame(&mut payload, vigil_store::bound::HEAD_BYTES) {
            Ok(None) => break None,
            Ok(Some(Frame::Record)) => replay.push(&payload)?,
            Ok(Some(Frame::Skipped(s))) => {
                let (reason, detail) = skipped_detail(&s);
                replay.push_unread(
                    reason,
                    &detail,
                    &payload,
                    s.got,
                    &vigil_store::format_digest(s.digest),
                )?;
            }
            // No record boundary can be found after a corrupt prefix:
            // publish what came before it, then fail.
            Err(e) => break Some(e),
        }
    };
    let otlp = replay.otlp_stats().clone();
    let summary = replay.finish()?;
    println!("ingested {} into {}", a.input.display(), data_dir.display());
    super::print_summary(&summary, started.elapsed());
    if a.input_format == InputFormat::Otlp {
        super::print_otlp_summary(&otlp);
    }
    if let Some(rss) = crate::alloc::peak_rss() {
        println!("peak RSS       {:>12.0} MB", rss as f64 / 1e6);
    }
    match corrupt {
        None => Ok(()),
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "{}: bad length-delimited input (the records before it were ingested)",
            a.input.display()
        ))),
    }
}

/// The reason and detail of a record the reader skipped.
fn skipped_detail(s: &Skipped) -> (RejectReason, String) {
    match (s.kind, s.len) {
        (SkipKind::TooLong, Some(len)) => (
            RejectReason::TooLarge,
            format!(
                "record {} at byte {} announces {len} bytes, above the reader's limit of {}; \
                 skipped ({} bytes read)",
                s.index,
                s.offset,
                vigil_sim::MAX_DELIMITED_RECORD,
                s.got
            ),
        ),
        (_, Some(len)) => (
            RejectReason::Decode,
            format!(
                "record {} at byte {}: the input ends after {} of its {len} bytes",
                s.index, s.offset, s.got
            ),
        ),
        (_, None) => (
            RejectReason::Decode,
            format!(
                "record {} at byte {}: the input ends inside its length prefix",
                s.index, s.offset
            ),
        ),
    }
}
