//! `vigil simulate`: write a seeded simulated fleet as a file of
//! length-delimited `TelemetryBatch` records (and optionally its ground
//! truth as JSON).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use vigil_sim::{Fleet, FleetConfig};

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
}

impl FleetArgs {
    /// The simulator configuration these options describe.
    pub fn fleet_config(&self) -> Result<FleetConfig> {
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
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid fleet: {e}"))?;
        Ok(c)
    }
}

/// Arguments of `vigil simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output file of length-delimited batches.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Also write the ground truth (scenarios, expected outcomes) as JSON.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Fleet shape.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// Runs `vigil simulate`.
pub fn run(a: Args) -> Result<()> {
    let cfg = a.fleet.fleet_config()?;
    let started = Instant::now();
    let file = File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut fleet = Fleet::new(cfg);
    let (mut records, mut bytes) = (0u64, 0u64);
    for rec in fleet.by_ref() {
        vigil_sim::write_delimited(&mut w, &rec.payload)
            .with_context(|| format!("writing {}", a.out.display()))?;
        records += 1;
        bytes += rec.payload.len() as u64;
    }
    w.flush()
        .with_context(|| format!("writing {}", a.out.display()))?;
    let truth = fleet.truth();
    if let Some(p) = &a.truth {
        let f = File::create(p).with_context(|| format!("creating {}", p.display()))?;
        serde_json::to_writer_pretty(BufWriter::new(f), truth)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {records} records ({bytes} bytes of batches) to {} in {secs:.2}s ({:.0} records/s)",
        a.out.display(),
        records as f64 / secs.max(1e-9)
    );
    println!("{}", super::truth_summary(truth));
    Ok(())
}
