//! The audit trail of rule changes at start (issue 24, "auditable
//! trails"): every command that runs the pipeline (`vigil run`, `vigil
//! ingest`, `vigil demo`) records, before it processes anything, the
//! digest of the rules it runs under and what changed since the rules
//! recorded last, in the `audit/` dataset of its output root
//! ([`vigil_store::audit`]), with who and when from the rules file's
//! `[meta]` table. A start whose record cannot be written fails: no data
//! is processed under rules the trail does not show.

use anyhow::{Context, Result};
use vigil_ops::rules::audit::summarize;
use vigil_ops::rules::ChangeKind;
use vigil_store::{AuditReport, AuditStart, Root};

use crate::obs;
use crate::settings::{LoadedRules, Settings};

/// Records the start of `command` under `rules` in `root`'s `audit/`
/// dataset; logs the digest and a summary of the changes and counts
/// them in [`obs::RULES_CHANGES`] and [`obs::RULES_LOADED`].
pub fn record_rules_start(
    root: &Root,
    settings: &Settings,
    rules: &LoadedRules,
    command: &str,
) -> Result<AuditReport> {
    let worker = settings.worker.worker_id();
    let origin = rules.origin.as_ref().map(|p| p.display().to_string());
    let span = tracing::info_span!("rules_audit", command, worker = %worker);
    let _g = span.enter();
    let start = AuditStart {
        at_ms: chrono::Utc::now().timestamp_millis(),
        worker: &worker,
        pid: std::process::id(),
        command,
        vigil_version: env!("CARGO_PKG_VERSION"),
        rules_origin: origin.as_deref(),
        meta: &rules.meta,
    };
    let report = vigil_store::record_start(root, &settings.storage.parquet, &start, &rules.rules)
        .with_context(|| {
        format!(
            "recording the rules in the audit trail under {}",
            root.display_path("audit").display()
        )
    })?;
    if let Some(why) = &report.previous_unreadable {
        tracing::warn!(
            snapshot = %root.display_path(vigil_store::audit::SNAPSHOT_PATH).display(),
            reason = %why,
            "the rules recorded last cannot be read; recorded as a first start"
        );
    }
    let changed = match &report.previous_digest {
        None => "unknown",
        Some(p) if *p == report.digest => "false",
        Some(_) => "true",
    };
    metrics::counter!(obs::RULES_LOADED, "changed" => changed).increment(1);
    for kind in ChangeKind::ALL {
        let n = report.changes.iter().filter(|c| c.kind == kind).count() as u64;
        metrics::counter!(obs::RULES_CHANGES, "kind" => kind.as_str()).increment(n);
    }
    let summary = summarize(&report.changes)
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(
        digest = %report.digest,
        previous_digest = report.previous_digest.as_deref().unwrap_or("none"),
        changes = report.changes.len(),
        summary = if summary.is_empty() { "unchanged" } else { summary.as_str() },
        rules_origin = origin.as_deref().unwrap_or("built-in"),
        changed_by = rules.meta.changed_by.as_deref().unwrap_or(""),
        change_ref = rules.meta.change_ref.as_deref().unwrap_or(""),
        "rules recorded in the audit trail"
    );
    for c in &report.changes {
        tracing::info!(
            kind = c.kind.as_str(),
            family = %c.family,
            rule = %c.name,
            fields = %c.fields.join(","),
            "rule change"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use metrics_exporter_prometheus::PrometheusBuilder;
    use vigil_ops::rules::{RuleSet, RulesMeta};

    use super::*;

    fn loaded(value: &str) -> LoadedRules {
        let text = format!(
            "[[threshold]]\nname = \"cpu_high\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\n\
             op = \">\"\nvalue = {value}\nseverity = \"warning\"\n"
        );
        LoadedRules {
            rules: Arc::new(RuleSet::from_toml(&text, "rules.toml").unwrap()),
            meta: RulesMeta::default(),
            origin: None,
        }
    }

    /// Each start counts in `vigil_rules_loaded_total{changed}` and its
    /// changes in `vigil_rules_changes_total{kind}`.
    #[test]
    fn starts_and_changes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::local(dir.path());
        let mut settings = Settings::load(None).unwrap();
        settings.worker.id = "w-test".into();
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let reports = metrics::with_local_recorder(&recorder, || {
            ["90", "90", "85"]
                .map(|v| record_rules_start(&root, &settings, &loaded(v), "ingest").unwrap())
        });
        assert_eq!(
            reports[1].previous_digest.as_ref(),
            Some(&reports[0].digest)
        );
        assert_eq!(reports[2].changes.len(), 1);
        let text = handle.render();
        for want in [
            "vigil_rules_loaded_total{changed=\"unknown\"} 1",
            "vigil_rules_loaded_total{changed=\"false\"} 1",
            "vigil_rules_loaded_total{changed=\"true\"} 1",
            "vigil_rules_changes_total{kind=\"rule_changed\"} 1",
            "vigil_rules_changes_total{kind=\"rule_added\"} 0",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        let files = std::fs::read_dir(dir.path().join("audit"))
            .unwrap()
            .filter_map(|e| e.ok())
            .count();
        assert_eq!(files, 2, "one date directory and the rules snapshot");
    }
}
