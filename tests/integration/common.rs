//! Helpers shared by the integration tests.

use std::path::Path;
use std::sync::Arc;

use vigil::replay::{Replay, ReplaySummary};
use vigil::settings::Settings;
use vigil_ops::rules::RuleSet;
use vigil_sim::{Fleet, FleetConfig, FleetTruth, SimRecord};

/// A simulated fleet, fully generated.
pub struct SimRun {
    pub records: Vec<SimRecord>,
    pub truth: FleetTruth,
}

/// Generates a fleet.
pub fn simulate(cfg: FleetConfig) -> SimRun {
    let mut fleet = Fleet::new(cfg);
    let records: Vec<SimRecord> = fleet.by_ref().collect();
    SimRun {
        records,
        truth: fleet.truth().clone(),
    }
}

/// A small fleet with every scenario: `agents` agents for `hours`.
pub fn small_fleet(agents: usize, hours: f64, seed: u64) -> FleetConfig {
    FleetConfig {
        agents,
        tenants: 4,
        duration_ms: (hours * 3_600_000.0) as i64,
        seed,
        ..FleetConfig::default()
    }
}

/// Test settings: defaults, no fsync (tests need atomicity, not power-loss durability).
pub fn settings() -> Settings {
    let mut s = Settings::load(None).unwrap();
    s.storage.parquet.sync = false;
    s
}

/// Runs records through a replay into `dir`.
pub fn replay(
    dir: &Path,
    source: &str,
    records: &[SimRecord],
    settings: &Settings,
    rules: Arc<RuleSet>,
) -> ReplaySummary {
    let mut r = Replay::new(settings, dir, source, rules).unwrap();
    for rec in records {
        r.push(&rec.payload).unwrap();
    }
    r.finish().unwrap()
}

/// Runs a SQL query over the datasets under `dir`.
pub fn sql(dir: &Path, q: &str) -> Vec<datafusion::arrow::record_batch::RecordBatch> {
    let session = vigil_query::QuerySession::open(dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(session.sql(q)).unwrap()
}

/// Reads every dead-letter line under `dir/dlq`.
pub fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join("dlq")) else {
        return out;
    };
    // Only the .jsonl files: dlq/full/ and dlq/undelivered/ hold copies.
    let mut files: Vec<_> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

/// The Python of `VIGIL_PYTHON` (a venv with pyarrow, duckdb and the
/// validators, which scripts/test.sh sets up), or `None` with a SKIPPED
/// line naming `needs` when it is not set; with `VIGIL_REQUIRE_INTEROP`
/// set (CI) a missing one fails the test instead.
pub fn interop_python(needs: &str) -> Option<String> {
    match std::env::var("VIGIL_PYTHON") {
        Ok(p) => Some(p),
        Err(_) => {
            assert!(
                std::env::var("VIGIL_REQUIRE_INTEROP").is_err(),
                "VIGIL_REQUIRE_INTEROP is set but VIGIL_PYTHON is not"
            );
            eprintln!("SKIPPED: set VIGIL_PYTHON to a python with {needs} (scripts/test.sh does)");
            None
        }
    }
}

/// The `vigil` binary built for these tests.
pub fn vigil_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vigil")
}

/// A validator of Vigil's alert JSON (schemas/alert.v1.schema.json).
pub fn alert_schema() -> jsonschema::Validator {
    schema_validator("alert.v1.schema.json")
}

/// A validator of Vigil's security-event JSON
/// (schemas/security_event.v1.schema.json).
pub fn security_event_schema() -> jsonschema::Validator {
    schema_validator("security_event.v1.schema.json")
}

fn schema_validator(file: &str) -> jsonschema::Validator {
    let path = format!("{}/../../schemas/{file}", env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// The posture lab of the integration tests: `vigil_sim::posture` (seed
/// 3, 120 agents, 10 days) through a pipeline as the worker runs it
/// (processing time = arrival) with the lab's rules, written to the
/// `status/`, `security_events/` and `alerts/` datasets under `dir`.
pub struct PostureData {
    /// The datasets' root.
    pub dir: tempfile::TempDir,
    /// The lab: its records and its truth.
    pub lab: vigil_sim::posture::PostureLab,
    /// The security events the pipeline took, in the order it took them.
    pub security: Vec<vigil_ops::SecurityEventRow>,
}

/// The posture lab's datasets, made once per test binary.
pub fn posture_data() -> &'static PostureData {
    use vigil_ops::config::ClockMode;
    use vigil_ops::pipeline::{Outputs, Pipeline};
    use vigil_sim::posture::{generate, PostureConfig, RULES_TOML};
    use vigil_store::{AlertsWriter, SecurityEventsWriter, SourceRange, StatusWriter};

    static DATA: std::sync::OnceLock<PostureData> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let lab = generate(&PostureConfig {
            seed: 3,
            agents: 120,
            days: 10,
            ..PostureConfig::default()
        });
        let mut cfg = settings().pipeline;
        cfg.clock = ClockMode::Wall;
        let rules = Arc::new(RuleSet::from_toml(RULES_TOML, "posture.toml").unwrap());
        let mut p = Pipeline::new(cfg, rules).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wcfg = settings().storage.parquet;
        let mut status = StatusWriter::new(dir.path(), wcfg.clone()).unwrap();
        let mut sec = SecurityEventsWriter::new(dir.path(), wcfg.clone()).unwrap();
        let mut alerts = AlertsWriter::new(dir.path(), wcfg).unwrap();
        let mut security = Vec::new();
        let mut out = Outputs::default();
        for (i, r) in lab.records.iter().enumerate() {
            let pos = vigil_ops::Position {
                partition: 0,
                offset: i as i64,
            };
            p.process(pos, &r.payload, r.arrival_ms, &mut out);
            assert!(out.rejected.is_empty(), "{:?}", out.rejected);
            out.status.iter().for_each(|x| status.push(x));
            out.security.iter().for_each(|x| sec.push(x));
            out.alerts.iter().for_each(|x| alerts.push(x));
            security.append(&mut out.security);
            out.clear();
        }
        let range = SourceRange {
            source: "posture",
            partition: 0,
            first_offset: 0,
            last_offset: lab.records.len() as i64 - 1,
            tick: 0,
        };
        status.flush(range).unwrap();
        sec.flush(range).unwrap();
        alerts.flush(range).unwrap();
        PostureData { dir, lab, security }
    })
}

/// A TCP port free on 127.0.0.1 right now (for a test's own server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `name` made unique to this process and moment, for names on shared
/// servers (topics, groups, object prefixes) that tests must not reuse.
pub fn unique_name(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    )
}
