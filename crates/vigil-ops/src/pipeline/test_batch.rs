//! A test batch builder shared by the pipeline's test modules.

use prost::Message;
use vigil_proto::v1::{Series, TelemetryBatch};

/// One encoded batch of `tenant`/`agent` with boot id `boot`, sent at
/// `sent_at_ms`: one series per (metric, ts, value), one point each.
pub(super) fn batch_of(
    tenant: &str,
    agent: &str,
    boot: u64,
    seq: u64,
    sent_at_ms: i64,
    pts: &[(&str, i64, f64)],
) -> Vec<u8> {
    TelemetryBatch {
        status: Vec::new(),
        security_events: Vec::new(),
        tenant_id: tenant.into(),
        agent_id: agent.into(),
        seq,
        sent_at_ms,
        boot_id: boot,
        agent: None,
        series: pts
            .iter()
            .map(|(m, ts, v)| Series {
                metric: (*m).into(),
                labels: vec![],
                timestamps_ms: vec![*ts],
                values: vec![*v],
            })
            .collect(),
    }
    .encode_to_vec()
}
