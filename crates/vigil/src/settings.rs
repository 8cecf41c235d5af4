//! Configuration: one serde tree, defaults embedded from
//! `config/default.toml`, overridden by an optional file (`--config`) and
//! then by `VIGIL_` environment variables (nested keys joined with `__`,
//! e.g. `VIGIL_PIPELINE__WINDOW=30s`). Validation reports every problem.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use vigil_kafka::KafkaSettings;
use vigil_ops::config::PipelineConfig;
use vigil_ops::rules::{RuleSet, RulesMeta};
use vigil_sink::route::AlertSettings;
use vigil_store::{Location, WriterConfig};

/// Settings of the Kafka worker (`vigil run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Record format of `kafka.telemetry_topic`: `vigil` (`TelemetryBatch`)
    /// or `otlp` (OTLP `ExportMetricsServiceRequest`, as the Collector's
    /// Kafka exporter writes them; docs/otlp.md). One topic holds one
    /// format: the two cannot be told apart by their bytes.
    #[serde(default)]
    pub input_format: vigil_ops::otlp::InputFormat,
    /// Where the per-partition checkpoints (operator state and the
    /// offset it continues from) are kept: a directory, or an object store
    /// location `s3://bucket/prefix` (credentials from the `AWS_*`
    /// environment variables).
    pub state_dir: Location,
    /// Longest time between flushes (Parquet published, alerts
    /// acknowledged, state checkpointed, offsets committed).
    #[serde(with = "humantime_serde")]
    pub flush_interval: std::time::Duration,
    /// Most records handled per poll batch before housekeeping runs.
    pub max_poll_records: usize,
    /// How long a flush waits for the broker to acknowledge alerts and
    /// dead letters before the worker gives up (and exits, uncommitted).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: std::time::Duration,
    /// Longest shutdown drain after SIGTERM (last flush, checkpoints,
    /// commits); keep it below the pod's termination grace period.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: std::time::Duration,
    /// Address of the HTTP listener serving `/metrics`, `/healthz` and
    /// `/readyz`; empty to disable.
    pub metrics_listen: String,
    /// `/healthz` fails when the worker's loop made no progress for this
    /// long. Must exceed `delivery_timeout` + `flush_interval` (a flush may
    /// wait that long for acknowledgements).
    #[serde(with = "humantime_serde")]
    pub stall_timeout: std::time::Duration,
    /// `/readyz` fails while an owned partition is more records behind than
    /// this (0: lag does not affect readiness).
    pub ready_max_lag: u64,
    /// This worker's id in the `audit/` dataset (and its file names);
    /// empty for the host name (`HOSTNAME`, the pod name on Kubernetes).
    #[serde(default)]
    pub id: String,
    /// Consumer-group members this process runs, one thread each, every
    /// one owning its partitions alone (0: one per core). See
    /// docs/kafka.md, "Threads".
    #[serde(default)]
    pub threads: usize,
}

/// Most member threads one worker process runs.
pub const MAX_WORKER_THREADS: usize = 256;

impl WorkerSettings {
    /// The number of member threads: `threads`, or the number of cores
    /// the process may use when it is 0.
    pub fn member_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The worker id the audit trail records: `id`, else the host name,
    /// else `unknown`.
    pub fn worker_id(&self) -> String {
        let id = self.id.trim();
        if !id.is_empty() {
            return id.to_owned();
        }
        std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// The embedded defaults.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// Parses a `--data-dir` value (a directory or `s3://bucket/prefix`).
/// Flags take it as a string and call this rather than letting clap
/// parse it: clap's error echoes the value, which for an `s3://` URL
/// with user information holds a secret; this error never does.
pub fn location_arg(value: Option<String>) -> Result<Option<Location>> {
    value
        .map(|s| s.parse::<Location>().context("--data-dir"))
        .transpose()
}

/// Top-level keys that environment variables may set.
const ENV_KEYS: [&str; 9] = [
    "data_dir",
    "rules",
    "pipeline",
    "storage",
    "kafka",
    "alerts",
    "worker",
    "retention",
    "compaction",
];

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Input records between flushes in replays (and per partition, at
    /// most, in the worker).
    pub flush_records: u64,
    /// Aggregate rows buffered (over all partitions) that trigger a flush
    /// early: bounds the output buffers' memory.
    pub flush_rows: u64,
    /// Bytes of dead-letter lines buffered (in one replay, or over the
    /// partitions of a worker writing `dlq/` files) that trigger a flush
    /// early: bounds the dead-letter buffers' memory.
    pub dlq_flush_bytes: u64,
    /// Most bytes of one line of the `dlq/` files: a longer dead letter is
    /// truncated (reason, coordinates, digest, first bytes) and its full
    /// content kept under `dlq/full/` (see `docs/storage.md`).
    pub dlq_max_record_bytes: usize,
    /// Parquet writer settings.
    pub parquet: WriterConfig,
    /// Bounds of every object store request (when `data_dir` or
    /// `worker.state_dir` is `s3://`).
    #[serde(default)]
    pub object_store: ObjectStoreSettings,
}

/// How long one object store request may take (see
/// `vigil_store::ObjectStoreOptions`): per attempt, and with retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectStoreSettings {
    /// Longest time of one attempt, connection to last response byte.
    #[serde(with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
    /// Longest time to connect (within `request_timeout`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: std::time::Duration,
    /// Most retries of a failed request (0: none).
    pub max_retries: usize,
    /// No retry starts once this long has passed since the first attempt.
    #[serde(with = "humantime_serde")]
    pub retry_timeout: std::time::Duration,
    /// Longest pause between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: std::time::Duration,
}

impl Default for ObjectStoreSettings {
    fn default() -> Self {
        let d = vigil_store::ObjectStoreOptions::default();
        ObjectStoreSettings {
            request_timeout: d.request_timeout,
            connect_timeout: d.connect_timeout,
            max_retries: d.max_retries,
            retry_timeout: d.retry_timeout,
            max_backoff: d.max_backoff,
        }
    }
}

impl ObjectStoreSettings {
    /// The options the store's client is built with.
    pub fn options(&self) -> vigil_store::ObjectStoreOptions {
        vigil_store::ObjectStoreOptions {
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
            max_backoff: self.max_backoff,
        }
    }
}

impl StorageSettings {
    /// The budget of one `dlq/` line (validated by [`Settings::validate`]).
    pub fn dlq_budget(&self) -> Result<vigil_store::LetterBudget> {
        vigil_store::LetterBudget::new(self.dlq_max_record_bytes)
            .context("storage.dlq_max_record_bytes")
    }
}

/// How long `vigil retention` keeps each dataset; an absent limit keeps
/// the dataset forever. Each limit is at least one day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Limit of `aggregates/` (whole `date=` partitions).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub aggregates: Option<std::time::Duration>,
    /// Limit of `alerts/` (whole `date=` partitions).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub alerts: Option<std::time::Duration>,
    /// Limit of `dlq/` files (by modification time: they have no date
    /// directory).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub dlq: Option<std::time::Duration>,
    /// Limit of `audit/` (whole `date=` partitions); 400 days in the
    /// embedded defaults.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub audit: Option<std::time::Duration>,
    /// Limit of `status/` (whole `date=` partitions): the status reports
    /// behind the compliance report.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<std::time::Duration>,
    /// Limit of `security_events/` (whole `date=` partitions).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub security_events: Option<std::time::Duration>,
}

impl RetentionSettings {
    /// The limits as the store applies them.
    pub fn limits(&self) -> vigil_store::retention::RetentionLimits {
        vigil_store::retention::RetentionLimits {
            aggregates: self.aggregates,
            alerts: self.alerts,
            dlq: self.dlq,
            audit: self.audit,
            status: self.status,
            security_events: self.security_events,
        }
    }
}

/// How `vigil compact` merges small files (see `docs/storage.md`,
/// "Compaction").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionSettings {
    /// Size a compacted file aims for, in bytes (at least 1 MiB): inputs
    /// are merged until their sizes add up to this; larger files are left
    /// alone.
    pub target_file_bytes: u64,
    /// Fewest files merged into one (at least 2).
    pub min_files: usize,
    /// How long a day rests after it ended before its directory is
    /// compacted (without `--date`), and a file of a source without a
    /// checkpoint (a replay) after it was written.
    #[serde(with = "humantime_serde")]
    pub settle: std::time::Duration,
}

impl Default for CompactionSettings {
    fn default() -> Self {
        let d = vigil_store::compact::CompactOptions::default();
        CompactionSettings {
            target_file_bytes: d.target_file_bytes,
            min_files: d.min_files,
            settle: d.settle,
        }
    }
}

impl CompactionSettings {
    /// The options the store applies, writing with `writer` (the workers'
    /// Parquet settings).
    pub fn options(&self, writer: &WriterConfig) -> vigil_store::compact::CompactOptions {
        vigil_store::compact::CompactOptions {
            target_file_bytes: self.target_file_bytes,
            min_files: self.min_files,
            settle: self.settle,
            writer: writer.clone(),
        }
    }
}

/// The whole configuration tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Root of the datasets and dead letters: a directory, or an object
    /// store location `s3://bucket/prefix` (credentials from the `AWS_*`
    /// environment variables).
    pub data_dir: Location,
    /// Rules file; empty for the built-in rules.
    pub rules: String,
    /// Operator settings.
    pub pipeline: PipelineConfig,
    /// Storage settings.
    pub storage: StorageSettings,
    /// Kafka connection, topics and client properties.
    pub kafka: KafkaSettings,
    /// Routing of alert events to topics and encodings.
    pub alerts: AlertSettings,
    /// The Kafka worker.
    pub worker: WorkerSettings,
    /// Retention limits (`vigil retention`).
    #[serde(default)]
    pub retention: RetentionSettings,
    /// Compaction settings (`vigil compact`).
    #[serde(default)]
    pub compaction: CompactionSettings,
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the environment, and
    /// validates the result.
    pub fn load(file: Option<&Path>) -> Result<Settings> {
        let mut fig = Figment::new().merge(Toml::string(DEFAULT_CONFIG));
        if let Some(f) = file {
            if !f.exists() {
                bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(
            Env::prefixed("VIGIL_")
                .filter(|k| {
                    ENV_KEYS
                        .iter()
                        .any(|top| k.as_str().to_ascii_lowercase().starts_with(top))
                })
                .split("__"),
        );
        let s: Settings = fig.extract().map_err(|e| {
            let all: Vec<String> = e.into_iter().map(|e| describe_config_error(&e)).collect();
            anyhow::anyhow!("invalid configuration:\n  {}", all.join("\n  "))
        })?;
        s.validate()?;
        Ok(s)
    }

    /// How long a revoke waits at most for the member's flush in flight
    /// (worker docs, "Double-buffered output"): twice the longest a flush
    /// may wait, plus 30 s for its files and checkpoints.
    pub fn revoke_wait(&self) -> std::time::Duration {
        self.flush_wait_bound() * 2 + std::time::Duration::from_secs(30)
    }

    /// How long one flush may wait at most: `worker.delivery_timeout`
    /// for acknowledgements, and on an object store one failing request
    /// takes up to the store's worst case before the flush reports it.
    pub fn flush_wait_bound(&self) -> std::time::Duration {
        let w = &self.worker;
        let on_store = self.data_dir.is_object_store() || w.state_dir.is_object_store();
        let store_wait = if on_store {
            self.storage.object_store.options().worst_case()
        } else {
            std::time::Duration::ZERO
        };
        w.delivery_timeout + store_wait
    }

    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems: Vec<String> = self
            .pipeline
            .validate()
            .iter()
            .map(|p| p.to_string())
            .collect();
        if let Err(e) = self.storage.parquet.validate() {
            problems.push(format!("storage.parquet: {e}"));
        }
        if self.storage.flush_records == 0 {
            problems.push("storage.flush_records: must be positive".into());
        }
        if self.storage.flush_rows == 0 {
            problems.push("storage.flush_rows: must be positive".into());
        }
        if self.storage.dlq_flush_bytes == 0 {
            problems.push("storage.dlq_flush_bytes: must be positive".into());
        }
        if let Err(e) = vigil_store::LetterBudget::new(self.storage.dlq_max_record_bytes) {
            problems.push(format!("storage.dlq_max_record_bytes: {e}"));
        }
        match self.kafka.producer_message_max_bytes() {
            Some(m) => {
                let budget = vigil_kafka::headers::dead_letter_value_budget(m);
                if let Err(e) = vigil_store::LetterBudget::new(budget) {
                    problems.push(format!(
                        "kafka message.max.bytes = {m}: dead letters would have {budget} bytes: {e}"
                    ));
                }
            }
            None => problems.push("kafka message.max.bytes: must be a positive integer".into()),
        }
        problems.extend(self.kafka.validate());
        problems.extend(self.alerts.validate());
        for (i, r) in self.alerts.route.iter().enumerate() {
            if !r.topic.is_empty() {
                if let Err(e) = vigil_kafka::config::check_topic_name(&r.topic) {
                    problems.push(format!("alerts.route[{i}].topic: {e}"));
                }
            }
        }
        if !self.alerts.default.topic.is_empty() {
            if let Err(e) = vigil_kafka::config::check_topic_name(&self.alerts.default.topic) {
                problems.push(format!("alerts.default.topic: {e}"));
            }
        }
        if self.worker.flush_interval.is_zero() {
            problems.push("worker.flush_interval: must be positive".into());
        }
        if self.worker.max_poll_records == 0 {
            problems.push("worker.max_poll_records: must be positive".into());
        }
        if self.worker.delivery_timeout < std::time::Duration::from_secs(1) {
            problems.push("worker.delivery_timeout: must be at least 1s".into());
        }
        if self.worker.shutdown_timeout < std::time::Duration::from_secs(1) {
            problems.push("worker.shutdown_timeout: must be at least 1s".into());
        }
        let store = self.storage.object_store.options();
        problems.extend(
            store
                .validate()
                .into_iter()
                .map(|p| format!("storage.object_store.{p}")),
        );
        let w = &self.worker;
        let on_store = self.data_dir.is_object_store() || w.state_dir.is_object_store();
        let store_wait = self.flush_wait_bound() - w.delivery_timeout;
        let budget = w.delivery_timeout + w.flush_interval + store_wait;
        if w.stall_timeout <= budget {
            let what = if on_store {
                format!(
                    "delivery_timeout + flush_interval + the object store's worst-case request \
                     time ({} from storage.object_store)",
                    humantime::format_duration(store_wait)
                )
            } else {
                "delivery_timeout + flush_interval".to_owned()
            };
            problems.push(format!(
                "worker.stall_timeout: {} must exceed {what} = {}, or a worker waiting for \
                 acknowledgements or for the store is reported dead before its flush fails",
                humantime::format_duration(w.stall_timeout),
                humantime::format_duration(budget)
            ));
        }
        // A revoke waits inside the rebalance callback, which must return
        // before the consumer's max.poll.interval.ms.
        match self.kafka.consumer_max_poll_interval() {
            Some(max_poll) if self.revoke_wait() >= max_poll => problems.push(format!(
                "worker.delivery_timeout: a revoke may wait {} for a flush being published \
                 (twice delivery_timeout, plus the object store's worst-case request on s3://, \
                 plus 30 s), which must stay under the consumer's max.poll.interval.ms ({})",
                humantime::format_duration(self.revoke_wait()),
                humantime::format_duration(max_poll)
            )),
            Some(_) => {}
            None => problems.push(
                "kafka max.poll.interval.ms: must be a positive integer (milliseconds)".into(),
            ),
        }
        if w.threads > MAX_WORKER_THREADS {
            problems.push(format!(
                "worker.threads: {} is more than {MAX_WORKER_THREADS} (0 runs one per core)",
                w.threads
            ));
        }
        if self.kafka.consumer_stats_interval_ms() <= 0 {
            problems.push(
                "kafka.consumer_properties.\"statistics.interval.ms\": must be positive \
                 (the lag gauges and /readyz read the statistics)"
                    .into(),
            );
        }
        if !self.worker.metrics_listen.is_empty()
            && self
                .worker
                .metrics_listen
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            problems.push(format!(
                "worker.metrics_listen: {:?} is not an address like 127.0.0.1:9464",
                self.worker.metrics_listen
            ));
        }
        problems.extend(
            self.retention
                .limits()
                .validate()
                .into_iter()
                .map(|p| format!("retention.{p}")),
        );
        problems.extend(
            self.compaction
                .options(&self.storage.parquet)
                .validate()
                .into_iter()
                .filter(|p| !p.starts_with("writer:"))
                .map(|p| format!("compaction.{p}")),
        );
        if !problems.is_empty() {
            bail!("invalid configuration:\n  {}", problems.join("\n  "));
        }
        Ok(())
    }

    /// Loads the rules: the file named by `override_path` or `self.rules`,
    /// or the built-in rules when neither is set.
    pub fn load_rules(&self, override_path: Option<&Path>) -> Result<Arc<RuleSet>> {
        self.load_rules_with_meta(override_path).map(|l| l.rules)
    }

    /// [`Settings::load_rules`], with the file's `[meta]` table and its
    /// path (for the audit trail).
    pub fn load_rules_with_meta(&self, override_path: Option<&Path>) -> Result<LoadedRules> {
        let path = override_path
            .map(Path::to_path_buf)
            .or_else(|| (!self.rules.is_empty()).then(|| PathBuf::from(&self.rules)));
        match path {
            None => Ok(LoadedRules {
                rules: Arc::new(RuleSet::default_rules()),
                meta: RulesMeta::default(),
                origin: None,
            }),
            Some(p) => {
                let (rules, meta) = load_rules_file_with_meta(&p)?;
                Ok(LoadedRules {
                    rules: Arc::new(rules),
                    meta,
                    origin: Some(p),
                })
            }
        }
    }
}

/// One configuration error as text. An error about a secret property
/// (`kafka.properties."sasl.password" = 123`) may quote the value it
/// refused, so only its key and the kind of problem are kept.
fn describe_config_error(e: &figment::Error) -> String {
    if e.path
        .iter()
        .any(|p| vigil_kafka::config::is_secret_property(p))
    {
        format!(
            "{}: invalid value for a secret property (value not shown)",
            e.path.join(".")
        )
    } else {
        e.to_string()
    }
}

/// The error for pipeline settings that do not validate, listing every
/// problem.
pub fn invalid_pipeline(problems: Vec<vigil_ops::config::ConfigProblem>) -> anyhow::Error {
    anyhow::anyhow!(
        "invalid pipeline settings: {}",
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    )
}

/// Reads and validates a rules file.
pub fn load_rules_file(p: &Path) -> Result<RuleSet> {
    load_rules_file_with_meta(p).map(|(rules, _)| rules)
}

/// Reads and validates a rules file, with its `[meta]` table.
pub fn load_rules_file_with_meta(p: &Path) -> Result<(RuleSet, RulesMeta)> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading rules file {}", p.display()))?;
    RuleSet::from_toml_with_meta(&text, &p.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Rules as loaded at start: the rules, the file's `[meta]` table, and
/// the file (`None`: the built-in rules).
#[derive(Debug, Clone)]
pub struct LoadedRules {
    /// The validated rules.
    pub rules: Arc<RuleSet>,
    /// The file's `[meta]` table (empty without one).
    pub meta: RulesMeta,
    /// The rules file, `None` for the built-in rules.
    pub origin: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load(None).unwrap();
        assert_eq!(s.pipeline, PipelineConfig::default());
        assert_eq!(s.storage.parquet, WriterConfig::default());
    }

    #[test]
    fn file_overrides_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "[pipeline]\nwindow = \"30s\"\n").unwrap();
        assert_eq!(
            Settings::load(Some(&f)).unwrap().pipeline.window_ms(),
            30_000
        );
        std::fs::write(&f, "[pipeline]\nwindw = \"30s\"\n").unwrap();
        let e = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(e.contains("windw"), "{e}");
        std::fs::write(&f, "[pipeline]\nwindow = \"0s\"\ndedup_window = 3\n").unwrap();
        let e = Settings::load(Some(&f)).unwrap_err().to_string();
        assert!(
            e.contains("pipeline.window") && e.contains("pipeline.dedup_window"),
            "{e}"
        );
    }

    /// Alert routes load from the file and are validated at start: every
    /// problem with its TOML path, Kafka topic names included.
    #[test]
    fn alert_routes_load_and_every_problem_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        let routes = "[[alerts.route]]\nname = \"soc\"\ntopic = \"soc.critical\"\nencoding = \"ocsf\"\nseverity = [\"critical\"]\n";
        std::fs::write(&f, routes).unwrap();
        let s = Settings::load(Some(&f)).unwrap();
        assert_eq!(s.alerts.route.len(), 1);
        assert_eq!(s.alerts.default.encoding, "json");
        let router = s.alerts.router(&s.kafka.alert_topic).unwrap();
        let topics: Vec<&str> = router.routes().map(|r| r.topic()).collect();
        assert_eq!(topics, ["soc.critical", "rmm.alerts.v1"]);
        std::fs::write(
            &f,
            "[alerts.default]\nencoding = \"xml\"\n[[alerts.route]]\nname = \"soc\"\ntopic = \"bad topic\"\nstatus = [\"open\"]\n",
        )
        .unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        for want in [
            "alerts.default.encoding",
            "alerts.route[0].topic",
            "alerts.route[0].status",
        ] {
            assert!(e.contains(want), "{want} not in {e}");
        }
        std::fs::write(
            &f,
            "[[alerts.route]]\nname = \"soc\"\ntopic = \"t\"\nseverty = []\n",
        )
        .unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("severty"), "{e}");
    }

    /// Regression: a refused value of a secret property was quoted in the
    /// configuration error.
    #[test]
    fn config_errors_do_not_quote_secret_values() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "[kafka.properties]\n\"sasl.password\" = 987654321\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(!e.contains("987654321"), "{e}");
        assert!(
            e.contains("sasl.password") && e.contains("value not shown"),
            "{e}"
        );
        // Other keys keep their whole message.
        std::fs::write(&f, "[kafka.properties]\n\"linger.ms\" = 12345\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("12345"), "{e}");
    }

    /// Settings from a config file holding `text` in `dir` (the error's
    /// whole message when refused).
    fn load_in(dir: &std::path::Path, text: &str) -> Result<Settings, String> {
        let f = dir.join("v.toml");
        std::fs::write(&f, text).unwrap();
        Settings::load(Some(&f)).map_err(|e| format!("{e:#}"))
    }

    /// `worker.threads`: 0 is one member per core, 256 the most; 257 is
    /// refused with the limit in the message.
    #[test]
    fn worker_threads_default_to_the_cores_and_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let load = |text: &str| load_in(d.path(), text);
        let s = load("").unwrap();
        assert_eq!(s.worker.threads, 0);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(s.worker.member_threads(), cores);
        let s = load("[worker]\nthreads = 3\n").unwrap();
        assert_eq!(s.worker.member_threads(), 3);
        let s = load(&format!("[worker]\nthreads = {MAX_WORKER_THREADS}\n")).unwrap();
        assert_eq!(s.worker.member_threads(), MAX_WORKER_THREADS);
        let e = load(&format!("[worker]\nthreads = {}\n", MAX_WORKER_THREADS + 1)).unwrap_err();
        assert!(e.contains("worker.threads: 257 is more than 256"), "{e}");
    }

    /// A revoke waits up to twice the longest flush wait plus 30 s inside
    /// the rebalance callback: it must stay under max.poll.interval.ms
    /// (librdkafka's 300 s by default). Locally, with the default 10 s
    /// delivery timeout, 50 s; refused exactly at the limit, accepted
    /// 1 ms under it; on an object store its worst-case request counts.
    #[test]
    fn a_revoke_waits_less_than_the_max_poll_interval() {
        let d = tempfile::tempdir().unwrap();
        let load = |text: &str| load_in(d.path(), text);
        let s = load("").unwrap();
        assert_eq!(s.revoke_wait(), std::time::Duration::from_secs(50));
        let max_poll =
            |ms: u64| format!("[kafka.consumer_properties]\n\"max.poll.interval.ms\" = \"{ms}\"\n");
        let e = load(&max_poll(50_000)).unwrap_err();
        assert!(
            e.contains("max.poll.interval.ms") && e.contains("worker.delivery_timeout"),
            "{e}"
        );
        load(&max_poll(50_001)).unwrap();
        // On s3:// the store's 70 s worst case counts twice: 190 s.
        let s3 = "data_dir = \"s3://b/p\"\n[worker]\nstall_timeout = \"90s\"\n";
        let s = load(s3).unwrap();
        assert_eq!(s.revoke_wait(), std::time::Duration::from_secs(190));
        let e = load(&format!("{s3}{}", max_poll(190_000))).unwrap_err();
        assert!(e.contains("max.poll.interval.ms"), "{e}");
        let e = load(&max_poll(0)).unwrap_err();
        assert!(e.contains("must be a positive integer"), "{e}");
    }

    /// With an object store, the liveness budget must exceed delivery
    /// wait + flush interval + the store's worst-case request time
    /// (defaults: 10 s + 5 s + 70 s = 85 s): refused at exactly 85 s,
    /// accepted 1 ms above; a local data_dir does not count the store.
    #[test]
    fn stall_timeout_covers_the_object_stores_worst_case_request() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("v.toml");
        let store = vigil_store::ObjectStoreOptions::default().worst_case();
        assert_eq!(store, std::time::Duration::from_secs(70));
        let load = |extra: &str| {
            std::fs::write(&f, extra).unwrap();
            Settings::load(Some(&f)).map_err(|e| format!("{e:#}"))
        };
        let s3 = "data_dir = \"s3://b/p\"\n[worker]\n";
        let e = load(&format!("{s3}stall_timeout = \"85s\"\n")).unwrap_err();
        assert!(
            e.contains("worker.stall_timeout") && e.contains("worst-case request time (1m 10s"),
            "{e}"
        );
        load(&format!("{s3}stall_timeout = \"85001ms\"\n")).unwrap();
        // The state dir alone on the store counts too.
        let e = load("[worker]\nstate_dir = \"s3://b/s\"\nstall_timeout = \"85s\"\n").unwrap_err();
        assert!(e.contains("worker.stall_timeout"), "{e}");
        // Locally only delivery_timeout + flush_interval (15 s) count.
        load("[worker]\nstall_timeout = \"16s\"\n").unwrap();
        // Tighter store bounds leave room for a shorter stall timeout.
        load(&format!(
            "{s3}stall_timeout = \"40s\"\n[storage.object_store]\nrequest_timeout = \"5s\"\n\
             max_retries = 2\nretry_timeout = \"10s\"\nmax_backoff = \"1s\"\n"
        ))
        .unwrap();
        let e = load("[storage.object_store]\nconnect_timeout = \"30s\"\n").unwrap_err();
        assert!(e.contains("storage.object_store.connect_timeout"), "{e}");
    }

    #[test]
    fn retention_limits_are_optional_and_validated() {
        let s = Settings::load(None).unwrap();
        // Only the audit trail has a default limit.
        assert_eq!(
            s.retention,
            RetentionSettings {
                audit: Some(std::time::Duration::from_secs(400 * 86_400)),
                ..RetentionSettings::default()
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "[retention]\naggregates = \"400d\"\ndlq = \"30days\"\n").unwrap();
        let r = Settings::load(Some(&f)).unwrap().retention;
        assert_eq!(
            r.aggregates,
            Some(std::time::Duration::from_secs(400 * 86_400))
        );
        assert_eq!(r.alerts, None);
        assert_eq!(r.dlq, Some(std::time::Duration::from_secs(30 * 86_400)));
        std::fs::write(&f, "[retention]\nalerts = \"12h\"\ndlq = \"1h\"\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(
            e.contains("retention.alerts") && e.contains("retention.dlq"),
            "{e}"
        );
        std::fs::write(&f, "[retention]\naggregate = \"2d\"\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("aggregate"), "{e}");
        std::fs::write(&f, "[retention]\nalerts = \"soon\"\n").unwrap();
        assert!(Settings::load(Some(&f)).is_err());
        std::fs::write(
            &f,
            "[retention]\nstatus = \"400d\"\nsecurity_events = \"23h\"\n",
        )
        .unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("retention.security_events"), "{e}");
        assert!(!e.contains("retention.status"), "{e}");
        std::fs::write(
            &f,
            "[retention]\nstatus = \"400d\"\nsecurity_events = \"90d\"\n",
        )
        .unwrap();
        let l = Settings::load(Some(&f)).unwrap().retention.limits();
        assert_eq!(l.status, Some(std::time::Duration::from_secs(400 * 86_400)));
        assert_eq!(
            l.security_events,
            Some(std::time::Duration::from_secs(90 * 86_400))
        );
    }

    #[test]
    fn compaction_settings_default_load_and_are_validated() {
        let s = Settings::load(None).unwrap();
        assert_eq!(s.compaction, CompactionSettings::default());
        assert_eq!(s.compaction.min_files, 4);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(
            &f,
            "[compaction]\ntarget_file_bytes = 268435456\nmin_files = 8\nsettle = \"3h\"\n",
        )
        .unwrap();
        let c = Settings::load(Some(&f)).unwrap().compaction;
        assert_eq!(
            (c.target_file_bytes, c.min_files, c.settle),
            (256 << 20, 8, std::time::Duration::from_secs(3 * 3600))
        );
        std::fs::write(
            &f,
            "[compaction]\ntarget_file_bytes = 1000\nmin_files = 1\n",
        )
        .unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(
            e.contains("compaction.target_file_bytes") && e.contains("compaction.min_files"),
            "{e}"
        );
        std::fs::write(&f, "[compaction]\nmin_file = 3\n").unwrap();
        let e = format!("{:#}", Settings::load(Some(&f)).unwrap_err());
        assert!(e.contains("min_file"), "{e}");
    }

    /// The production overlay's config file (deploy/overlays/production)
    /// loads and validates, and its drain fits the Deployment's 40 s
    /// grace period.
    #[test]
    fn the_production_overlay_config_loads() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/overlays/production/vigil.toml");
        let s = Settings::load(Some(&f)).unwrap();
        assert_eq!(
            s.kafka.secret_env.get("sasl.password").map(String::as_str),
            Some("KAFKA_SASL_PASSWORD")
        );
        assert!(s.retention.aggregates.is_some() && s.retention.dlq.is_some());
        assert!(
            s.worker.shutdown_timeout + std::time::Duration::from_secs(5)
                <= std::time::Duration::from_secs(40)
        );
    }

    /// The default drain fits Kubernetes' default 30 s grace period with
    /// 5 s to spare for leaving the group, and leaves at least 10 s of it
    /// for publishing, checkpointing and committing after the longest wait
    /// for acknowledgements (the budget in docs/kafka.md, "Shutdown").
    #[test]
    fn the_default_shutdown_drain_fits_the_kubernetes_grace_period() {
        let w = Settings::load(None).unwrap().worker;
        let grace = std::time::Duration::from_secs(30);
        assert!(w.shutdown_timeout + std::time::Duration::from_secs(5) <= grace);
        assert!(w.delivery_timeout + std::time::Duration::from_secs(10) <= w.shutdown_timeout);
    }
}
