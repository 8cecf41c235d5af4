//! One module per subcommand. Each has an `Args` (clap) and a `run`.

pub mod bench;
pub mod compact;
pub mod demo;
pub mod export;
pub mod ingest;
pub mod retention;
pub mod rules;
pub mod run;
pub mod simulate;
pub mod sql;
pub mod topics;

use vigil_ops::RejectReason;

use vigil_sim::{DiskScenario, Expect, FleetTruth};

use crate::replay::ReplaySummary;

/// Prints the OTLP conversion counters of a replay (after
/// [`print_summary`]).
pub fn print_otlp_summary(otlp: &vigil_ops::otlp::OtlpStats) {
    println!(
        "otlp           {:>12}  resources, {} points in: {} duplicate, {} first of a counter, \
         {} resets, {} superseded, {} shadowed, {} without value; {} points out",
        otlp.resources,
        otlp.points_in,
        otlp.duplicate_points,
        otlp.first_points,
        otlp.resets,
        otlp.superseded_points,
        otlp.shadowed_points,
        otlp.no_value_points,
        otlp.points_out
    );
}

/// Prints what a replay did, one fact per line.
pub fn print_summary(s: &ReplaySummary, elapsed: std::time::Duration) {
    let st = &s.stats;
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "records        {:>12}  ({:.0}/s)",
        st.records,
        st.records as f64 / secs
    );
    println!(
        "batches        {:>12}  accepted, {} duplicates dropped",
        st.batches_accepted, st.duplicates
    );
    println!(
        "points         {:>12}  accepted of {} in accepted batches ({:.2} M/s)",
        st.points_accepted,
        st.points_in,
        st.points_accepted as f64 / secs / 1e6
    );
    let refused: Vec<String> = RejectReason::ALL
        .iter()
        .filter(|r| st.rejected_records(**r) + st.rejected_points(**r) > 0)
        .map(|r| {
            if r.is_batch_level() {
                format!("{}={} records", r.as_str(), st.rejected_records(*r))
            } else {
                format!("{}={} points", r.as_str(), st.rejected_points(*r))
            }
        })
        .collect();
    println!(
        "refused        {:>12}  dead letters: {}",
        s.dlq_records,
        if refused.is_empty() {
            "none".into()
        } else {
            refused.join(", ")
        }
    );
    if s.dlq_truncated > 0 {
        println!(
            "               {:>12}  dead letters truncated (over storage.dlq_max_record_bytes)",
            s.dlq_truncated
        );
    }
    println!(
        "windows        {:>12}  closed ({} by watermark, {} idle/end)",
        st.windows_closed + st.windows_closed_idle,
        st.windows_closed,
        st.windows_closed_idle
    );
    println!(
        "alert events   {:>12}  ({} firing, {} resolved)",
        st.alerts_firing + st.alerts_resolved,
        st.alerts_firing,
        st.alerts_resolved
    );
    println!("agents/series  {:>12}  / {}", st.agents, st.series);
    println!(
        "parquet rows   {:>12}  aggregates, {} alerts, in {} files",
        s.aggregate_rows, s.alert_rows, s.files
    );
    println!("elapsed        {:>12.2}s", secs);
}

/// A few lines on what the simulator generated (its ground truth).
pub fn truth_summary(t: &FleetTruth) -> String {
    let c = &t.counts;
    let mut lines = vec![format!(
        "records: {} ({} accept, {} duplicate, {} late, {} future, {} seq_too_old, {} malformed)",
        c.records(),
        c.accept.records,
        c.duplicate.records,
        c.late.records,
        c.future.records,
        c.seq_too_old.records,
        c.rejected().records
    )];
    lines.push(format!(
        "points: {} in accepted batches, {} of them non-finite",
        c.get(Expect::Accept).points,
        c.accept.non_finite
    ));
    let disks: Vec<String> = DiskScenario::ALL
        .iter()
        .map(|s| format!("{} {}", t.disks_of(*s).count(), s.as_str()))
        .collect();
    lines.push(format!("disks: {}", disks.join(", ")));
    lines.push(format!(
        "episodes: {} cpu/memory/service, {} offline, {} agents with skewed clocks",
        t.episodes.len(),
        t.offline.len(),
        t.skewed.len()
    ));
    if !t.posture.is_empty() {
        let mut by: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for p in &t.posture {
            if let Some(rule) = p.scenario.rule() {
                *by.entry(rule).or_default() += 1;
            }
        }
        let breaches: Vec<String> = by.iter().map(|(r, n)| format!("{n} {r}")).collect();
        lines.push(format!(
            "posture: {} agents in breach of a status or security rule ({})",
            by.values().sum::<usize>(),
            breaches.join(", ")
        ));
    }
    lines.join("\n")
}
