//! Builders of records the pipeline must refuse as a whole, one per reason.
//! Each breaks exactly one rule so that the expected reason does not depend
//! on the order in which the pipeline checks its rules.

use prost::Message;
use rand::Rng;
use vigil_proto::v1::{Label, Series, TelemetryBatch};

use crate::model::{uniform, uniform_i, SimRng};
use crate::truth::reason;
use crate::{MAX_METRIC_LEN, MAX_POINTS_PER_BATCH, MAX_RECORD_BYTES, MAX_SERIES_PER_BATCH};

/// Bytes that do not decode as a `TelemetryBatch` (verified with prost):
/// a truncated batch, a non-UTF-8 tenant id, a JSON body or random bytes.
pub(crate) fn decode_garbage(rng: &mut SimRng, last: &[u8], agent: &str) -> Vec<u8> {
    let candidate: Vec<u8> = match rng.random_range(0..4u8) {
        0 if last.len() > 8 => {
            let cut = uniform_i(rng, 2, last.len() as i64 - 1) as usize;
            last[..cut].to_vec()
        }
        1 => {
            let mut v = vec![0x0A, 0x03, 0xFF, 0xFE, 0xFD];
            v.extend_from_slice(last);
            v
        }
        2 => format!(
            "{{\"agent_id\":\"{agent}\",\"cpu_pct\":{:.1}}}",
            uniform(rng, 0.0, 100.0)
        )
        .into_bytes(),
        _ => Vec::new(),
    };
    if !candidate.is_empty() && TelemetryBatch::decode(&candidate[..]).is_err() {
        return candidate;
    }
    // Field number 0 is never valid: the first key already fails.
    let n = uniform_i(rng, 16, 64) as usize;
    let mut v = Vec::with_capacity(n + 1);
    v.push(0x00);
    v.extend((0..n).map(|_| rng.random::<u8>()));
    v
}

const BAD_METRICS: [&str; 5] = ["cpu pct", "disk-used-pct", "mem%", "", "cpu_pct_\u{e9}"];
const BAD_LABEL_KEYS: [&str; 4] = ["mount-point", "", "iface name", "s\u{e9}rvice"];

/// Breaks `batch` (a valid batch with at least one point) so that it fails
/// exactly the rule of `why` (one of `missing_id`, `invalid_metric`,
/// `invalid_labels`, `length_mismatch`).
pub(crate) fn mutate(why: &'static str, batch: &mut TelemetryBatch, rng: &mut SimRng) {
    let n = batch.series.len();
    if n == 0 {
        batch.series.push(Series {
            metric: "cpu_pct".to_string(),
            labels: Vec::new(),
            timestamps_ms: vec![batch.sent_at_ms],
            values: vec![1.0],
        });
    }
    let pick = rng.random_range(0..batch.series.len());
    match why {
        reason::MISSING_ID => {
            if rng.random::<bool>() {
                batch.tenant_id.clear();
            } else {
                batch.agent_id.clear();
            }
        }
        reason::INVALID_METRIC => {
            let k = rng.random_range(0..=BAD_METRICS.len());
            batch.series[pick].metric = match BAD_METRICS.get(k) {
                Some(m) => (*m).to_string(),
                None => format!("cpu_pct_{}", "x".repeat(MAX_METRIC_LEN)),
            };
        }
        reason::INVALID_LABELS => {
            let s = &mut batch.series[pick];
            let k = rng.random_range(0..=BAD_LABEL_KEYS.len());
            match BAD_LABEL_KEYS.get(k) {
                Some(bad) => s.labels.push(Label {
                    key: (*bad).to_string(),
                    value: "x".to_string(),
                }),
                None => match s.labels.first().cloned() {
                    // A repeated key: the same label twice with two values.
                    Some(l) => s.labels.push(Label {
                        key: l.key,
                        value: format!("{}2", l.value),
                    }),
                    None => {
                        for v in ["0", "1"] {
                            s.labels.push(Label {
                                key: "core".to_string(),
                                value: v.to_string(),
                            });
                        }
                    }
                },
            }
        }
        _ => {
            // length_mismatch: one series loses a value or gains a timestamp.
            let idx = batch
                .series
                .iter()
                .position(|s| !s.values.is_empty())
                .unwrap_or(pick);
            let s = &mut batch.series[idx];
            if !s.values.is_empty() && rng.random::<bool>() {
                s.values.pop();
            } else {
                let last = s.timestamps_ms.last().copied().unwrap_or(batch.sent_at_ms);
                s.timestamps_ms.push(last + 1);
            }
        }
    }
}

fn header(tenant: &str, agent: &str, seq: u64, sent_at_ms: i64) -> TelemetryBatch {
    TelemetryBatch {
        status: Vec::new(),
        security_events: Vec::new(),
        tenant_id: tenant.to_string(),
        agent_id: agent.to_string(),
        seq,
        sent_at_ms,
        agent: None,
        boot_id: 0,
        series: Vec::new(),
    }
}

/// A valid batch above 1 MiB: a misconfigured 1 kHz per-core CPU sampler,
/// 90 series × 1000 points of the last second (90 000 points, ~1.26 MB).
pub(crate) fn too_large(
    tenant: &str,
    agent: &str,
    seq: u64,
    sent_at_ms: i64,
    rng: &mut SimRng,
) -> TelemetryBatch {
    let mut b = header(tenant, agent, seq, sent_at_ms);
    let per = 1000usize;
    let mut core = 0usize;
    while (b.encoded_len() <= MAX_RECORD_BYTES || core < 90)
        && (core + 1) * per <= MAX_POINTS_PER_BATCH
        && core < MAX_SERIES_PER_BATCH
    {
        let base = uniform(rng, 5.0, 60.0);
        b.series.push(Series {
            metric: "cpu_pct".to_string(),
            labels: vec![Label {
                key: "core".to_string(),
                value: core.to_string(),
            }],
            timestamps_ms: (0..per as i64).map(|i| sent_at_ms - 1000 + i).collect(),
            values: (0..per)
                .map(|_| (base + uniform(rng, -5.0, 5.0)).clamp(0.0, 100.0))
                .collect(),
        });
        core += 1;
    }
    b
}

/// A batch with more than 100 000 points that stays below 1 MiB: a device
/// dumping its ring buffer with boot-relative millisecond timestamps
/// (small varints), 11 series × 9100 points.
pub(crate) fn too_many_points(
    tenant: &str,
    agent: &str,
    seq: u64,
    sent_at_ms: i64,
    rng: &mut SimRng,
) -> TelemetryBatch {
    let mut b = header(tenant, agent, seq, sent_at_ms);
    let per: usize = 9100;
    let n = MAX_POINTS_PER_BATCH / per + 1;
    for core in 0..n {
        let base = uniform(rng, 5.0, 60.0);
        b.series.push(Series {
            metric: "cpu_pct".to_string(),
            labels: vec![Label {
                key: "core".to_string(),
                value: core.to_string(),
            }],
            timestamps_ms: (0..per as i64).collect(),
            values: (0..per).map(|i| base + (i % 7) as f64).collect(),
        });
    }
    b
}

/// A batch with 10 001 series of one point each (~0.4 MB).
pub(crate) fn too_many_series(
    tenant: &str,
    agent: &str,
    seq: u64,
    sent_at_ms: i64,
    now_e: i64,
) -> TelemetryBatch {
    let mut b = header(tenant, agent, seq, sent_at_ms);
    b.series = (0..=MAX_SERIES_PER_BATCH)
        .map(|i| Series {
            metric: "service_up".to_string(),
            labels: vec![Label {
                key: "service".to_string(),
                value: format!("svc{i:05}"),
            }],
            timestamps_ms: vec![now_e - 1000],
            values: vec![1.0],
        })
        .collect();
    b
}
