//! State that ends (docs/semantics.md): agents and series evicted after the
//! state TTL, their incidents resolved as `stale`, the agent and tenant
//! limits, checkpoints with vacant slots, and flat state under churn.

use super::*;
use crate::model::ResolveReason;

/// A window-aligned start time.
const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const POS: Position = Position {
    partition: 0,
    offset: 0,
};

/// The default state TTL in ms.
fn default_ttl() -> i64 {
    PipelineConfig::default().state_ttl.as_millis() as i64
}

fn cfg() -> PipelineConfig {
    PipelineConfig {
        clock: ClockMode::Wall,
        ..PipelineConfig::default()
    }
}

/// One batch of `tenant`/`agent`: one point per (metric, ts, value), sent
/// at its newest point.
fn rec(tenant: &str, agent: &str, seq: u64, pts: &[(&str, i64, f64)]) -> Vec<u8> {
    let sent = pts.iter().map(|p| p.1).max().unwrap_or(0);
    super::test_batch::batch_of(tenant, agent, 7, seq, sent, pts)
}

fn rules(text: &str) -> Arc<RuleSet> {
    Arc::new(RuleSet::from_toml(text, "t.toml").unwrap())
}

const RULES: &str = "[offline]\nafter = \"10m\"\nseverity = \"warning\"\n\
    [[threshold]]\nname = \"cpu_high\"\nmetric = \"cpu_pct\"\naggregate = \"mean\"\n\
    op = \">\"\nvalue = 90\nfor = 2\nclear = 80\nseverity = \"warning\"\n\
    [[threshold]]\nname = \"disk_high\"\nmetric = \"disk_pct\"\naggregate = \"mean\"\n\
    op = \">\"\nvalue = 90\nfor = 2\nclear = 80\nseverity = \"warning\"\n\
    [[trend]]\nname = \"disk_full\"\nmetric = \"disk_pct\"\nlimit = 100\n\
    horizon = \"24h\"\nlookback = \"1h\"\nseverity = \"warning\"\n";

/// An agent is evicted at the first tick `state_ttl` (default) after its
/// last batch, not a millisecond before; another agent is untouched, and
/// everything the evicted agent held is released.
#[test]
fn agent_evicted_exactly_at_the_default_ttl() {
    let ttl = default_ttl();
    assert_eq!(ttl, 72 * HOUR);
    let mut p = Pipeline::new(cfg(), rules(RULES)).unwrap();
    let mut out = Outputs::default();
    p.process(
        POS,
        &rec("t1", "a", 1, &[("cpu_pct", T0, 5.0)]),
        T0,
        &mut out,
    );
    let last_b = T0 + HOUR;
    p.process(
        POS,
        &rec("t2", "b", 1, &[("cpu_pct", last_b, 5.0)]),
        last_b,
        &mut out,
    );
    assert_eq!(
        (p.agents_held(), p.series_held(), p.tenants_held()),
        (2, 2, 2)
    );
    p.tick(T0 + ttl - 1, &mut out);
    assert_eq!(p.agents_held(), 2, "evicted before the TTL");
    p.tick(T0 + ttl, &mut out);
    assert_eq!(
        (p.agents_held(), p.series_held(), p.tenants_held()),
        (1, 1, 1)
    );
    assert_eq!(p.stats().agents_evicted, 1);
    assert_eq!(p.stats().series_evicted, 1);
    assert_eq!(
        p.tenant_series.len(),
        1,
        "the evicted tenant's id is released"
    );
    assert!(p.find_agent("t1", "a").is_none());
    assert!(p.find_agent("t2", "b").is_some());
    // b was seen an hour later: still there just before its own TTL.
    p.tick(last_b + ttl - 1, &mut out);
    assert_eq!(p.agents_held(), 1);
    p.tick(last_b + ttl, &mut out);
    assert_eq!(
        (p.agents_held(), p.series_held(), p.tenants_held()),
        (0, 0, 0)
    );
    // Keys still held by closed windows in the output are dropped at the
    // next series sweep after the output was drained.
    out.clear();
    p.tick(last_b + ttl + MIN, &mut out);
    assert_eq!(p.keys_held(), 0, "no series key outlives its series");
    // An evicted agent that comes back is new, and counted again.
    let back = last_b + ttl + 2 * MIN;
    p.process(
        POS,
        &rec("t1", "a", 1, &[("cpu_pct", back, 5.0)]),
        back,
        &mut out,
    );
    assert_eq!(
        (p.agents_held(), p.series_held(), p.tenants_held()),
        (1, 1, 1)
    );
    assert_eq!(
        p.stats().batches_accepted,
        3,
        "seq 1 again is not a duplicate"
    );
    assert_eq!(p.agents.len(), 2, "the new agent reuses a free slot");
}

/// A firing threshold incident, a firing offline incident and the trend
/// state of an agent that goes away resolve as `stale` when the agent is
/// evicted: same ids as their firing events, threshold at the end of the
/// last window its rule saw, offline at the eviction.
#[test]
fn eviction_resolves_open_incidents_as_stale() {
    let mut p = Pipeline::new(cfg(), rules(RULES)).unwrap();
    let mut out = Outputs::default();
    let mut seq = 0;
    for k in 0..4 {
        seq += 1;
        let ts = T0 + k * MIN;
        p.process(
            POS,
            &rec(
                "t1",
                "a",
                seq,
                &[("cpu_pct", ts, 95.0), ("disk_pct", ts, 50.0)],
            ),
            ts + 1_000,
            &mut out,
        );
    }
    let last_seen = T0 + 3 * MIN + 1_000;
    // Silence: the idle timeout closes the open windows, the offline rule
    // fires after 10 min.
    for t in (last_seen..last_seen + 12 * MIN).step_by(5_000) {
        p.tick(t, &mut out);
    }
    let firing: Vec<_> = out
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .map(|a| (a.rule.clone(), a.id.clone()))
        .collect();
    assert_eq!(
        firing.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["cpu_high", "agent_offline"]
    );
    out.clear();
    let ttl = default_ttl();
    p.tick(last_seen + ttl - 1, &mut out);
    assert!(out.alerts.is_empty());
    p.tick(last_seen + ttl, &mut out);
    let resolved: Vec<_> = out
        .alerts
        .iter()
        .map(|a| {
            (
                a.rule.clone(),
                a.id.clone(),
                a.status,
                a.resolve_reason,
                a.event_time_ms,
            )
        })
        .collect();
    assert_eq!(
        resolved,
        [
            (
                "agent_offline".to_string(),
                firing[1].1.clone(),
                AlertStatus::Resolved,
                Some(ResolveReason::Stale),
                last_seen + ttl
            ),
            (
                "cpu_high".to_string(),
                firing[0].1.clone(),
                AlertStatus::Resolved,
                Some(ResolveReason::Stale),
                T0 + 4 * MIN
            ),
        ]
    );
    assert_eq!(p.stats().incidents_expired, 2);
    assert_eq!(p.detectors.series_states(), 0, "no detector state is left");
    assert_eq!(
        p.detectors.free_trend_slots(),
        1,
        "the trend slot is kept for reuse"
    );
    // A new series with a trend rule reuses the freed slot.
    let t = last_seen + ttl + MIN;
    p.process(
        POS,
        &rec("t1", "c", 1, &[("disk_pct", t, 50.0)]),
        t,
        &mut out,
    );
    assert_eq!(p.detectors.free_trend_slots(), 0);
    assert_eq!(p.detectors.series_states(), 1);
}

/// A series that stops (a disk removed) while its agent reports on is
/// evicted once its last window ended `state_ttl` (default) of the agent's
/// event time ago: its firing incident resolves as `stale`, its count
/// towards the tenant limit is released, and when it comes back it is a
/// new series.
#[test]
fn series_of_a_live_agent_evicted_after_the_ttl() {
    let mut p = Pipeline::new(cfg(), rules(RULES)).unwrap();
    let mut out = Outputs::default();
    let ttl = default_ttl();
    let mut seq = 0;
    let mut send = |p: &mut Pipeline, out: &mut Outputs, ts: i64, disk: bool| {
        seq += 1;
        let mut pts = vec![("cpu_pct", ts, 5.0)];
        if disk {
            pts.push(("disk_pct", ts, 97.0));
        }
        p.process(POS, &rec("t1", "a", seq, &pts), ts + 1_000, out);
    };
    for k in 0..4 {
        send(&mut p, &mut out, T0 + k * MIN, true);
    }
    assert!(out
        .alerts
        .iter()
        .any(|a| a.rule == "disk_high" && a.status == AlertStatus::Firing));
    // The disk's last point is in the window [T0 + 3 min, T0 + 4 min).
    let disk_end = T0 + 4 * MIN;
    out.clear();
    let mut k = 4;
    // cpu only, one point a minute: the disk is evicted at the first
    // series sweep after the agent's event time reaches disk_end + ttl.
    while T0 + k * MIN < disk_end + ttl - MIN {
        send(&mut p, &mut out, T0 + k * MIN, false);
        k += 1;
    }
    assert_eq!(p.series_held(), 2, "evicted before the TTL");
    assert!(out.alerts.is_empty());
    for _ in 0..3 {
        send(&mut p, &mut out, T0 + k * MIN, false);
        k += 1;
    }
    assert_eq!(p.series_held(), 1);
    assert_eq!(p.stats().series_evicted, 1);
    assert_eq!(
        p.tenant_series.get("t1"),
        Some(&1),
        "the tenant count is released"
    );
    let stale: Vec<_> = out
        .alerts
        .iter()
        .map(|a| (a.rule.as_str(), a.resolve_reason, a.event_time_ms))
        .collect();
    assert_eq!(stale, [("disk_high", Some(ResolveReason::Stale), disk_end)]);
    // The disk comes back: a new series, windows as usual.
    out.clear();
    let back = T0 + k * MIN;
    for i in 0..3 {
        send(&mut p, &mut out, back + i * MIN, true);
    }
    assert_eq!(p.series_held(), 2);
    assert_eq!(p.stats().series, 3);
    assert!(out.windows.iter().any(|w| w.series.metric() == "disk_pct"));
}

/// The agent limit refuses a new agent at the limit, not before; the
/// agents held keep sending; an eviction makes room. The tenant limit is
/// tested at its default (10 000).
#[test]
fn agent_and_tenant_limits_refuse_new_agents_only() {
    let mut c = cfg();
    // The agent limit lowered for the test's memory (its default is
    // 250 000 agents); the tenant limit stays at its default.
    c.limits.max_agents = 3;
    let mut p = Pipeline::new(c, rules(RULES)).unwrap();
    let mut out = Outputs::default();
    for (i, a) in ["a", "b", "c"].iter().enumerate() {
        p.process(
            POS,
            &rec("t1", a, 1, &[("cpu_pct", T0, 5.0)]),
            T0 + i as i64,
            &mut out,
        );
    }
    assert_eq!(p.agents_held(), 3);
    assert!(out.rejected.is_empty());
    p.process(
        POS,
        &rec("t1", "d", 1, &[("cpu_pct", T0, 5.0)]),
        T0 + 10,
        &mut out,
    );
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].reason, RejectReason::AgentLimit);
    assert!(out.rejected[0].raw.is_some());
    assert_eq!(p.stats().rejected_records(RejectReason::AgentLimit), 1);
    assert!(
        p.find_agent("t1", "d").is_none(),
        "a refused agent is not created"
    );
    // Agents held are not affected.
    p.process(
        POS,
        &rec("t1", "a", 2, &[("cpu_pct", T0 + MIN, 5.0)]),
        T0 + MIN,
        &mut out,
    );
    assert_eq!(p.stats().batches_accepted, 4);
    // b and c go away; a keeps sending: after the TTL there is room.
    let ttl = default_ttl();
    let mut seq = 2;
    let mut t = T0 + MIN;
    while t < T0 + ttl + HOUR {
        t += HOUR;
        seq += 1;
        p.process(
            POS,
            &rec("t1", "a", seq, &[("cpu_pct", t, 5.0)]),
            t,
            &mut out,
        );
    }
    assert_eq!(p.agents_held(), 1);
    out.clear();
    p.process(POS, &rec("t1", "d", 1, &[("cpu_pct", t, 5.0)]), t, &mut out);
    assert!(out.rejected.is_empty());
    assert_eq!(p.agents_held(), 2);

    // Tenants, at the default limit.
    let mut p = Pipeline::new(cfg(), Arc::new(RuleSet::default())).unwrap();
    let max = PipelineConfig::default().limits.max_tenants;
    assert_eq!(max, 10_000);
    out.clear();
    for i in 0..max {
        let t = format!("t{i}");
        p.process(POS, &rec(&t, "a", 1, &[("cpu_pct", T0, 5.0)]), T0, &mut out);
    }
    assert!(out.rejected.is_empty());
    assert_eq!(p.tenants_held(), max);
    p.process(
        POS,
        &rec("one-too-many", "a", 1, &[("cpu_pct", T0, 5.0)]),
        T0,
        &mut out,
    );
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].reason, RejectReason::AgentLimit);
    assert!(out.rejected[0].detail.contains("max_tenants"));
    // A new agent of a tenant held is not a new tenant.
    p.process(
        POS,
        &rec("t5", "b", 1, &[("cpu_pct", T0, 5.0)]),
        T0,
        &mut out,
    );
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(p.agents_held(), max + 1);
}

/// A checkpoint holding vacant agent and series slots restores to the same
/// future: at every checkpoint position of a churning run, the output
/// equals the uninterrupted run's.
#[test]
fn checkpoints_with_vacant_slots_continue_identically() {
    let mut c = cfg();
    c.state_ttl = std::time::Duration::from_secs(3600);
    // Agents a0..a5 of two tenants: each reports for 40 minutes (cpu, and
    // a disk for the first 20), then leaves; a new one starts every 30
    // minutes, so evictions and reuse interleave with the input.
    let mut input = Vec::new();
    for n in 0..6i64 {
        let agent = format!("a{n}");
        let tenant = if n % 2 == 0 { "t1" } else { "t2" };
        for k in 0..40 {
            let ts = T0 + n * 30 * MIN + k * MIN;
            let mut pts = vec![("cpu_pct".to_string(), ts, 91.0 + (k % 3) as f64)];
            if k < 20 {
                pts.push(("disk_pct".to_string(), ts, 50.0 + k as f64));
            }
            input.push((
                ts + 2_000,
                tenant.to_string(),
                agent.clone(),
                k as u64 + 1,
                pts,
            ));
        }
    }
    input.sort_by_key(|r| r.0);
    let end = input.last().unwrap().0 + 3 * HOUR;
    let run = |at: Option<usize>| {
        let mut p = Pipeline::new(c.clone(), rules(RULES)).unwrap();
        let mut out = Outputs::default();
        for (i, (now, tenant, agent, seq, pts)) in input.iter().enumerate() {
            if Some(i) == at {
                let snap = serde_json::to_vec(&p).unwrap();
                p = serde_json::from_slice(&snap).unwrap();
                p.attach_rules(rules(RULES));
            }
            let pts: Vec<_> = pts.iter().map(|(m, t, v)| (m.as_str(), *t, *v)).collect();
            p.process(POS, &rec(tenant, agent, *seq, &pts), *now, &mut out);
        }
        let mut t = input.last().unwrap().0;
        while t < end {
            t += 5_000;
            p.tick(t, &mut out);
        }
        let windows: Vec<_> = out
            .windows
            .iter()
            .map(|w| {
                (
                    w.series.agent().to_string(),
                    w.series.metric().to_string(),
                    w.start_ms,
                    w.agg.count,
                )
            })
            .collect();
        (windows, out.alerts.clone(), p.stats().clone())
    };
    let straight = run(None);
    assert_eq!(straight.2.agents_evicted, 6);
    assert!(straight.2.series_evicted >= 12);
    assert!(straight
        .1
        .iter()
        .any(|a| a.resolve_reason == Some(ResolveReason::Stale)));
    for at in (0..input.len()).step_by(7) {
        assert_eq!(run(Some(at)), straight, "restored at record {at}");
    }
}

/// Churn: new agents arrive every hour while as many go away, for a
/// simulated day. The state (agent slots, series, keys, tenants, detector
/// arenas) stops growing once the first agents are evicted, instead of
/// growing with every agent ever seen.
#[test]
fn state_is_flat_under_churn() {
    let per_hour: i64 = std::env::var("VIGIL_CHURN_PER_HOUR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut c = cfg();
    c.state_ttl = std::time::Duration::from_secs(2 * 3600);
    let mut p = Pipeline::new(c, rules(RULES)).unwrap();
    let mut out = Outputs::default();
    // Each agent reports for an hour (a batch every 10 minutes: cpu, a
    // disk and one of 50 service metrics; its own tenant for one agent in
    // ten), then stops for good.
    let mut sizes = Vec::new();
    for hour in 0..24i64 {
        for step in 0..6i64 {
            let now = T0 + hour * HOUR + step * 10 * MIN;
            for i in 0..per_hour {
                let id = hour * per_hour + i;
                let tenant = format!("t{}", if id % 10 == 0 { id } else { 0 });
                let agent = format!("a{id}");
                let svc = format!("svc_{}", id % 50);
                let ts = now - (i % 60) * 1_000;
                let pts = [
                    ("cpu_pct", ts, 5.0),
                    ("disk_pct", ts, 40.0),
                    (svc.as_str(), ts, 1.0),
                ];
                p.process(
                    POS,
                    &rec(&tenant, &agent, (step + 1) as u64, &pts),
                    now,
                    &mut out,
                );
            }
            p.tick(now + 1, &mut out);
            out.clear();
        }
        sizes.push((
            p.agents.len(),
            p.series_held(),
            p.keys_held(),
            p.tenant_series.len(),
            p.detectors.series_states() + p.detectors.free_trend_slots(),
        ));
    }
    let seen = p.stats().agents as usize;
    eprintln!(
        "churn {per_hour} agents/hour, per hour (agent slots, series, keys, tenant series, \
         detector states + free trend slots): {sizes:?}"
    );
    assert_eq!(seen, (24 * per_hour) as usize);
    let settled = sizes[5];
    for (h, s) in sizes.iter().enumerate().skip(5) {
        assert!(
            s.0 <= settled.0
                && s.1 <= settled.1 + per_hour as usize
                && s.2 <= settled.2
                && s.3 <= settled.3 + 1
                && s.4 <= settled.4 + 2 * per_hour as usize,
            "state grew at hour {h}: {s:?} after {settled:?} at hour 5"
        );
    }
    // At most the agents of the last TTL plus one hour are held.
    assert!(
        p.agents_held() <= 4 * per_hour as usize,
        "{}",
        p.agents_held()
    );
    assert!(
        p.agents.len() < seen / 4,
        "{} slots for {seen} agents",
        p.agents.len()
    );
    assert!(p.stats().agents_evicted as usize >= seen - 4 * per_hour as usize);
}

/// A checkpoint written before this change (17 reject counters, no
/// idle-since marks, no free lists) restores; its idle series count as
/// active at their agent's latest window, so nothing is evicted at once
/// (with the marks, the same state evicts the idle series at once).
#[test]
fn older_checkpoints_restore_without_evicting_at_once() {
    // The writer keeps everything (as a Vigil without eviction did).
    let mut keep = cfg();
    keep.state_ttl = std::time::Duration::from_secs(365 * 86_400);
    let mut p = Pipeline::new(keep, rules(RULES)).unwrap();
    let mut out = Outputs::default();
    // A disk reporting once, then only cpu for 80 hours: the disk's last
    // window is past the default TTL behind the agent.
    p.process(
        POS,
        &rec("t1", "a", 1, &[("disk_pct", T0, 5.0)]),
        T0,
        &mut out,
    );
    let last = 80;
    for k in 1..=last {
        let t = T0 + k * HOUR;
        p.process(
            POS,
            &rec("t1", "a", k as u64 + 1, &[("cpu_pct", t, 5.0)]),
            t,
            &mut out,
        );
    }
    assert_eq!(p.series_held(), 2);
    let now = T0 + last * HOUR + MIN;
    let restore = |text: &str| {
        let back: Pipeline = serde_json::from_str(text).unwrap();
        let mut back = back.resume(cfg(), rules(RULES)).unwrap();
        let mut out = Outputs::default();
        back.tick(now, &mut out);
        back
    };
    let current = serde_json::to_string(&p).unwrap();
    assert!(current.contains("idle_since"));
    assert_eq!(
        restore(&current).series_held(),
        1,
        "with its mark the idle disk goes"
    );

    let mut v = serde_json::to_value(&p).unwrap();
    let stats = v["stats"].as_object_mut().unwrap();
    for k in ["rejected_records", "rejected_points"] {
        stats[k].as_array_mut().unwrap().truncate(17);
    }
    for k in ["agents_evicted", "series_evicted", "incidents_expired"] {
        stats.remove(k);
    }
    let obj = v.as_object_mut().unwrap();
    obj.remove("free_agents");
    obj.remove("last_sweep_ms");
    let old = strip_numeric_field(&serde_json::to_string(&v).unwrap(), "\"idle_since\":");
    assert!(!old.contains("idle_since"));
    let mut back = restore(&old);
    assert_eq!(back.stats().rejected_records(RejectReason::AgentLimit), 0);
    assert_eq!(
        back.series_held(),
        2,
        "restored idle series restart their TTL"
    );
    // ... and go at the first batch a TTL after the end of the agent's
    // latest window at the checkpoint (hourly batches here).
    let mut k = last + 1;
    while back.series_held() == 2 {
        let t = T0 + k * HOUR;
        back.process(
            POS,
            &rec("t1", "a", k as u64 + 1, &[("cpu_pct", t, 5.0)]),
            t,
            &mut out,
        );
        k += 1;
    }
    let after = (k - 1 - last) * HOUR;
    assert!(
        after >= default_ttl() + MIN && after - HOUR < default_ttl() + MIN,
        "{after}"
    );
    // Too many counters (a newer Vigil's checkpoint) is an error.
    let mut v = serde_json::to_value(&p).unwrap();
    v["stats"]["rejected_records"]
        .as_array_mut()
        .unwrap()
        .push(0.into());
    let e = serde_json::from_value::<Pipeline>(v).unwrap_err();
    assert!(e.to_string().contains("reject counters"), "{e}");
}

/// Removes every `"key":number` field from compact JSON.
fn strip_numeric_field(text: &str, key: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i]);
        let after = &rest[i + key.len()..];
        let end = after.find([',', '}']).expect("a value ends");
        rest = &after[end..];
        if out.ends_with(',') && rest.starts_with('}') {
            out.pop();
        } else if rest.starts_with(',') {
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}
