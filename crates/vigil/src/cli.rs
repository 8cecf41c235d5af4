//! Command-line interface: argument parsing (clap, every option with an
//! environment variable), dispatch, and exit codes (0 success, 1 failure,
//! 2 usage). Errors are printed with their full context chain.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;
use crate::obs::{self, LogFormat};

/// Vigil: event-time telemetry processing for Remote Monitoring and Management.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Config file (TOML) layered over the built-in defaults; VIGIL_
    /// environment variables override both.
    #[arg(long, global = true, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "VIGIL_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a simulated fleet's telemetry into a file of length-delimited batches.
    Simulate(cmd::simulate::Args),
    /// The Kafka worker: consume telemetry, write Parquet, publish alerts and dead letters.
    Run(cmd::run::Args),
    /// Manage the Kafka topics (create).
    Topics(cmd::topics::Args),
    /// Run a file of length-delimited batches through the pipeline into Parquet.
    Ingest(cmd::ingest::Args),
    /// Embedded end to end: simulated fleet → pipeline → Parquet → report. No Kafka needed.
    Demo(cmd::demo::Args),
    /// Run SQL over the `aggregates` and `alerts` tables.
    Sql(cmd::sql::SqlArgs),
    /// Reports over the datasets: health (default), alerts, capacity, compliance or security, as a table, CSV,
    /// JSON or one self-contained HTML file with charts.
    Report(cmd::sql::ReportArgs),
    /// Export alert events or security events from Parquet (json, ocsf, cef, ecs) to stdout, a
    /// file, a syslog receiver (RFC 5424 over TCP or TLS) or a Kafka topic.
    Export(cmd::export::Args),
    /// Measure the pipeline: in process (decode, operator chain, end to end, as ratios), or
    /// with --brokers through a Kafka broker (worker rate, lag, alert ack latency).
    Bench(cmd::bench::Args),
    /// Check a rules file and list its rules.
    Rules(cmd::rules::Args),
    /// Remove date partitions and dead letters older than the `[retention]` limits.
    Retention(cmd::retention::Args),
    /// Merge the small Parquet files of each source partition and date into large ones.
    Compact(cmd::compact::Args),
}

/// Entry point of the `vigil` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Long-running and scheduled commands log what they do; others warn only.
    let level = if matches!(
        cli.command,
        Command::Run(_) | Command::Retention(_) | Command::Compact(_)
    ) {
        "info"
    } else {
        "warn"
    };
    obs::init_tracing(cli.log_format, level);
    let result = match cli.command {
        Command::Simulate(a) => cmd::simulate::run(cli.config.as_deref(), a),
        Command::Run(a) => cmd::run::run(cli.config.as_deref(), a),
        Command::Topics(a) => cmd::topics::run(cli.config.as_deref(), a),
        Command::Ingest(a) => cmd::ingest::run(cli.config.as_deref(), a),
        Command::Demo(a) => cmd::demo::run(cli.config.as_deref(), a),
        Command::Sql(a) => cmd::sql::run_sql(cli.config.as_deref(), a),
        Command::Report(a) => cmd::sql::run_report(cli.config.as_deref(), a),
        Command::Export(a) => cmd::export::run(cli.config.as_deref(), a),
        Command::Rules(a) => cmd::rules::run(a),
        Command::Bench(a) => cmd::bench::run(cli.config.as_deref(), a),
        Command::Retention(a) => cmd::retention::run(cli.config.as_deref(), a),
        Command::Compact(a) => cmd::compact::run(cli.config.as_deref(), a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
