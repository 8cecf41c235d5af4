//! `vigil sql` and `vigil report`: DataFusion over the Parquet datasets.
//!
//! `vigil report [health|alerts|capacity|compliance|security]` (health
//! when none is named)
//! runs the report's SQL (`vigil_query::report`) over the rows of the
//! scope (`--from`, `--to`, `--tenant`; times as `vigil export` parses
//! them) and prints it, or writes it atomically to `--out`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use vigil_query::report::{ComplianceLimits, ReportKind, Scope};
use vigil_query::{render, Format, QuerySession};
use vigil_store::Location;

use crate::settings::Settings;

/// Arguments of `vigil sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Root of the datasets, a directory or `s3://bucket/prefix`
    /// (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub data_dir: Option<String>,
    /// Output format: table, csv, json (JSON Lines) or html (a table).
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// A value for the placeholder `$NAME` in the query, as `NAME=VALUE`
    /// (repeatable). The value is bound as a literal of the type the query
    /// expects there (`mean > $limit`: a number; `tenant = $t`: a string),
    /// never pasted into the SQL, so no quoting is needed and none can
    /// break out.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Print the query's logical and physical plans instead of its rows.
    #[arg(long)]
    pub explain: bool,
    /// Run the query and print its physical plan with what each step did
    /// (rows, files and row groups pruned, time): `EXPLAIN ANALYZE`.
    #[arg(long, conflicts_with = "explain")]
    pub analyze: bool,
    /// The query, over the tables `aggregates` and `alerts`.
    pub query: String,
}

/// Parses `--param NAME=VALUE` (NAME: letters, digits and `_`, not
/// starting with a digit; VALUE: anything, possibly empty).
fn parse_param(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=VALUE"))?;
    let name = name.strip_prefix('$').unwrap_or(name);
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "{name:?}: a parameter name is letters, digits and _, not starting with a digit"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Arguments of `vigil report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Which report: health (agents seen and offline, availability,
    /// resources in trouble, predicted disk fills), alerts (counts,
    /// incidents, time to resolve, rules to tune, incident list),
    /// capacity (disk and memory use per tenant, trend), compliance
    /// (patch compliance, agents out of SLA, antivirus and backup
    /// coverage, agent versions) or security (failed logins, remote
    /// sessions by technician, off-hours sessions).
    #[arg(default_value = "health")]
    pub report: ReportKind,
    /// Root of the datasets, a directory or `s3://bucket/prefix`
    /// (default: `data_dir` from the config).
    #[arg(long, env = "VIGIL_DATA_DIR", value_name = "DIR|s3://BUCKET/PREFIX")]
    pub data_dir: Option<String>,
    /// Output format: table, csv, json (JSON Lines) or html (one
    /// self-contained file with charts).
    #[arg(long, default_value = "table")]
    pub format: Format,
    /// Earliest time, inclusive: RFC 3339, a date, `now`, or relative
    /// (`-7d`); as `vigil export --from`.
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// Latest time, exclusive (as --from).
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<String>,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Write the report to this file (atomically: a temporary file in the
    /// same directory, then a rename) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rules file whose limits the compliance report judges by (patch
    /// SLA days, antivirus definition age, backup age; default: `rules`
    /// from the config, else the built-in rules), so the report agrees
    /// with the alerts.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

fn data_dir(config: Option<&Path>, flag: Option<String>) -> Result<Location> {
    match crate::settings::location_arg(flag)? {
        Some(d) => Ok(d),
        None => Ok(Settings::load(config)?.data_dir),
    }
}

/// A multi-threaded runtime for DataFusion's CPU-bound work.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the query runtime")
}

/// Runs `vigil sql`.
pub fn run_sql(config: Option<&Path>, a: SqlArgs) -> Result<()> {
    let dir = data_dir(config, a.data_dir)?;
    let rt = runtime()?;
    let session = QuerySession::open_location(&dir)
        .with_context(|| format!("opening datasets under {dir}"))?;
    let batches = if a.explain || a.analyze {
        rt.block_on(session.explain(&a.query, &a.params, a.analyze))?
    } else {
        rt.block_on(session.sql_with_params(&a.query, &a.params))?
    };
    print!("{}", render(&batches, a.format)?);
    Ok(())
}

/// Runs `vigil report`.
pub fn run_report(config: Option<&Path>, a: ReportArgs) -> Result<()> {
    let dir = data_dir(config, a.data_dir)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let time = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| super::export::parse_time(s, now_ms).with_context(|| format!("--{flag}")))
            .transpose()
    };
    let scope = Scope {
        from_ms: time("from", &a.from)?,
        to_ms: time("to", &a.to)?,
        tenant: a.tenant,
    };
    if let (Some(f), Some(t)) = (scope.from_ms, scope.to_ms) {
        if f >= t {
            bail!("--from must be before --to");
        }
    }
    let limits = if a.report == ReportKind::Compliance {
        let rules = Settings::load(config)?.load_rules(a.rules.as_deref())?;
        ComplianceLimits::from_rules(&rules)
    } else {
        ComplianceLimits::default()
    };
    let text = make_report(&dir, a.report, &scope, &limits, a.format)?;
    match a.out {
        None => print!("{text}"),
        Some(path) => write_out(&path, text.as_bytes())?,
    }
    Ok(())
}

/// Computes and renders one report over the datasets under `dir`.
pub fn make_report(
    dir: &Location,
    kind: ReportKind,
    scope: &Scope,
    limits: &ComplianceLimits,
    format: Format,
) -> Result<String> {
    let rt = runtime()?;
    let session = QuerySession::open_location(dir)
        .with_context(|| format!("opening datasets under {dir}"))?;
    let mut report = rt
        .block_on(vigil_query::report::run_with(&session, kind, scope, limits))
        .with_context(|| format!("{kind} report queries failed"))?;
    report.generated_at = Some(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
    Ok(vigil_query::report::render_report(&report, format)?)
}

/// Writes `bytes` to `path` atomically: readers see the old file or the
/// whole new one, never a partial report.
fn write_out(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--out {}: not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    vigil_store::replace::write_file_atomic(dir, name, bytes, true)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Prints the health report (as a table) for the datasets under `dir`:
/// the summary at the end of `vigil demo`.
pub fn print_report(dir: &Path, format: Format) -> Result<()> {
    print!(
        "{}",
        make_report(
            &Location::from(dir),
            ReportKind::Health,
            &Scope::default(),
            &ComplianceLimits::default(),
            format
        )?
    );
    Ok(())
}
