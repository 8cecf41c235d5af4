//! Behaviour of the fleet simulator: determinism, ordering, labels that
//! match the pipeline's rules, scenario truth, and delimited framing.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;
use vigil_proto::v1::TelemetryBatch;
use vigil_sim::{
    read_delimited, read_delimited_slice, reason, write_delimited, DelimitedError, DiskScenario,
    EmittedCounts, EpisodeKind, Expect, Fleet, FleetConfig, ScenarioMix, SimRecord, HOUR_MS,
    MAX_METRIC_LEN, MAX_POINTS_PER_BATCH, MAX_RECORD_BYTES, MAX_SERIES_PER_BATCH, MINUTE_MS,
    PIPELINE_ALLOWED_LATENESS_MS, PIPELINE_DEDUP_WINDOW, PIPELINE_MAX_CLOCK_SKEW_MS,
    PIPELINE_SLOW_LATENESS_MS, PIPELINE_WINDOW_MS, SLOW_METRIC_PREFIX,
};

fn small(agents: usize, hours: i64, seed: u64) -> FleetConfig {
    FleetConfig {
        agents,
        tenants: 5,
        duration_ms: hours * HOUR_MS,
        seed,
        ..FleetConfig::default()
    }
}

/// A fleet with fault rates raised so that every path is exercised often.
fn noisy(agents: usize, hours: i64, seed: u64) -> FleetConfig {
    FleetConfig {
        scenarios: ScenarioMix {
            duplicate_rate: 0.02,
            late_rate: 0.01,
            seq_too_old_rate: 0.005,
            malformed_rate: 0.02,
            oversized_rate: 0.0005,
            non_finite_rate: 0.001,
            offline_per_day: 3.0,
            future_skew_agents: 0.05,
            small_skew_agents: 0.1,
            ..ScenarioMix::default()
        },
        ..small(agents, hours, seed)
    }
}

fn run(cfg: FleetConfig) -> (Vec<SimRecord>, vigil_sim::FleetTruth) {
    let mut f = Fleet::new(cfg);
    let recs: Vec<SimRecord> = f.by_ref().collect();
    (recs, f.into_truth())
}

fn window_end(ts: i64) -> i64 {
    ts.div_euclid(PIPELINE_WINDOW_MS) * PIPELINE_WINDOW_MS + PIPELINE_WINDOW_MS
}

fn metric_ok(m: &str) -> bool {
    let mut cs = m.chars();
    match cs.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    m.len() <= MAX_METRIC_LEN && cs.all(|c| c.is_ascii_alphanumeric() || "_.:".contains(c))
}

fn key_ok(k: &str) -> bool {
    let mut cs = k.chars();
    match cs.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every batch-level rule the record breaks, as the pipeline states them.
fn violations(payload: &[u8]) -> Vec<&'static str> {
    let Ok(b) = TelemetryBatch::decode(payload) else {
        return vec![reason::DECODE];
    };
    let mut v = Vec::new();
    if payload.len() > MAX_RECORD_BYTES {
        v.push(reason::TOO_LARGE);
    }
    if b.series.len() > MAX_SERIES_PER_BATCH {
        v.push(reason::TOO_MANY_SERIES);
    }
    let points: usize = b.series.iter().map(|s| s.timestamps_ms.len()).sum();
    if points > MAX_POINTS_PER_BATCH {
        v.push(reason::TOO_MANY_POINTS);
    }
    if b.tenant_id.is_empty() || b.agent_id.is_empty() {
        v.push(reason::MISSING_ID);
    }
    if b.series.iter().any(|s| !metric_ok(&s.metric)) {
        v.push(reason::INVALID_METRIC);
    }
    if b.series.iter().any(|s| {
        let mut keys: Vec<&str> = s.labels.iter().map(|l| l.key.as_str()).collect();
        keys.sort_unstable();
        keys.iter().any(|k| !key_ok(k)) || keys.windows(2).any(|w| w[0] == w[1])
    }) {
        v.push(reason::INVALID_LABELS);
    }
    if b.series
        .iter()
        .any(|s| s.timestamps_ms.len() != s.values.len())
    {
        v.push(reason::LENGTH_MISMATCH);
    }
    v
}

#[test]
fn same_seed_gives_identical_bytes_and_other_seed_differs() {
    let (a, ta) = run(small(30, 1, 7));
    let (b, tb) = run(small(30, 1, 7));
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    let (c, _) = run(small(30, 1, 8));
    assert_ne!(a, c);
}

#[test]
fn arrival_order_is_non_decreasing() {
    let (recs, _) = run(noisy(50, 2, 3));
    assert!(recs.windows(2).all(|w| w[0].arrival_ms <= w[1].arrival_ms));
}

#[test]
fn every_expect_kind_appears_in_a_small_fleet() {
    for seed in [1, 2, 42] {
        let (recs, truth) = run(small(20, 1, seed));
        let seen: HashSet<&str> = recs.iter().map(|r| r.expect.as_str()).collect();
        let mut want = vec!["accept", "duplicate", "late", "future", "seq_too_old"];
        want.extend(reason::ALL);
        for w in want {
            assert!(seen.contains(w), "seed {seed}: no {w} record");
        }
        for kind in [
            EpisodeKind::CpuSaturation,
            EpisodeKind::MemoryLeak,
            EpisodeKind::ServiceDown,
        ] {
            assert!(truth.episodes.iter().any(|e| e.kind == kind), "no {kind:?}");
        }
        assert!(!truth.offline.is_empty());
        for sc in DiskScenario::ALL {
            assert!(
                truth.disks_of(sc).next().is_some(),
                "seed {seed}: no {sc:?} disk"
            );
        }
    }
}

#[test]
fn two_hundred_agents_have_several_of_each_disk_scenario() {
    let f = Fleet::new(small(200, 6, 42));
    for sc in DiskScenario::ALL {
        let n = f.truth().disks_of(sc).count();
        assert!(n >= 5, "{sc:?}: {n}");
    }
}

#[test]
fn counters_match_the_emitted_records() {
    check_counters(noisy(40, 2, 11));
}

/// The truth's counters equal a count of the records by label.
fn check_counters(cfg: FleetConfig) {
    let (recs, truth) = run(cfg);
    let mut by_kind: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for r in &recs {
        let (points, nf) = match TelemetryBatch::decode(&r.payload[..]) {
            Ok(b) if r.expect != Expect::Reject(reason::DECODE) => (
                b.series.iter().map(|s| s.timestamps_ms.len() as u64).sum(),
                b.series
                    .iter()
                    .flat_map(|s| &s.values)
                    .filter(|v| !v.is_finite())
                    .count() as u64,
            ),
            _ => (0, 0),
        };
        let e = by_kind.entry(r.expect.as_str()).or_default();
        e.0 += 1;
        e.1 += points;
        e.2 += nf;
    }
    for (k, (records, points, nf)) in by_kind {
        let want = match k {
            "accept" => truth.counts.accept,
            "duplicate" => truth.counts.duplicate,
            "late" => truth.counts.late,
            "future" => truth.counts.future,
            "seq_too_old" => truth.counts.seq_too_old,
            r => truth.counts.get(Expect::Reject(reason::lookup(r).unwrap())),
        };
        assert_eq!(
            (records, points, nf),
            (want.records, want.points, want.non_finite),
            "{k}"
        );
    }
    assert_eq!(truth.counts.records(), recs.len() as u64);
    assert!(truth.counts.accept.non_finite > 0);
    assert_eq!(truth.counts.duplicate.non_finite, 0);
    assert_eq!(truth.counts.late.non_finite, 0);
    assert_eq!(truth.counts.future.non_finite, 0);
}

/// Replays the pipeline's semantics over the stream and checks each label.
#[test]
fn labels_match_pipeline_semantics() {
    for seed in [5, 6] {
        check_labels(noisy(60, 3, seed));
    }
}

/// Replays the pipeline's semantics over `cfg`'s stream: every label holds.
fn check_labels(cfg: FleetConfig) {
    {
        let (recs, truth) = run(cfg);
        // Per agent: max point ts of accepted batches, seen seqs, highest seq.
        let mut max_ts: HashMap<String, i64> = HashMap::new();
        let mut seen: HashMap<String, HashSet<u64>> = HashMap::new();
        let mut highest: HashMap<String, u64> = HashMap::new();
        for r in &recs {
            if let Expect::Reject(why) = r.expect {
                assert_eq!(violations(&r.payload), vec![why], "record of {}", r.key);
                continue;
            }
            assert!(
                violations(&r.payload).is_empty(),
                "{:?} breaks a rule",
                r.expect
            );
            let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
            assert_eq!(b.agent_id, r.key);
            let agent = b.agent_id.clone();
            let seqs = seen.entry(agent.clone()).or_default();
            let high = highest.get(&agent).copied();
            // Each point with the lateness of its series' metric.
            let ts = b.series.iter().flat_map(|s| {
                let lateness = if s.metric.starts_with(SLOW_METRIC_PREFIX) {
                    PIPELINE_SLOW_LATENESS_MS
                } else {
                    PIPELINE_ALLOWED_LATENESS_MS
                };
                s.timestamps_ms.iter().map(move |&t| (t, lateness))
            });
            match r.expect {
                Expect::Duplicate => {
                    assert!(seqs.contains(&b.seq));
                    assert!(b.seq + PIPELINE_DEDUP_WINDOW > high.unwrap());
                }
                Expect::SeqTooOld => {
                    // Delivered long before or never (an agent that sent
                    // more than the window's batches): refused either way.
                    assert!(b.seq + PIPELINE_DEDUP_WINDOW < high.unwrap());
                }
                Expect::Accept | Expect::Late | Expect::Future => {
                    assert!(seqs.insert(b.seq), "fresh seq reused");
                    highest.insert(agent.clone(), high.map_or(b.seq, |h| h.max(b.seq)));
                    let limit = r.arrival_ms + PIPELINE_MAX_CLOCK_SKEW_MS;
                    let mut batch_max = None::<i64>;
                    for (t, lateness) in ts {
                        let wm = max_ts.get(&agent).map(|m| m - lateness);
                        let closed = wm.is_some_and(|w| window_end(t) <= w);
                        match r.expect {
                            Expect::Accept => {
                                assert!(!closed, "late point in accept batch");
                                assert!(t <= limit, "future point in accept batch");
                                // Margin: on time even if "passes" means >=.
                                assert!(wm.is_none_or(|w| window_end(t) > w + 1));
                            }
                            Expect::Late => assert!(closed && t <= limit),
                            _ => assert!(t > limit, "future batch point not in the future"),
                        }
                        batch_max = Some(batch_max.map_or(t, |m: i64| m.max(t)));
                    }
                    if r.expect == Expect::Accept {
                        if let Some(m) = batch_max {
                            let e = max_ts.entry(agent).or_insert(m);
                            *e = (*e).max(m);
                        }
                    }
                }
                Expect::Reject(_) => unreachable!(),
            }
        }
        // Future agents are exactly the skewed ones marked so.
        let futures: HashSet<&str> = recs
            .iter()
            .filter(|r| r.expect == Expect::Future)
            .map(|r| r.key.as_str())
            .collect();
        let want: HashSet<&str> = truth
            .skewed
            .iter()
            .filter(|s| s.future)
            .map(|s| s.agent.as_str())
            .collect();
        assert_eq!(futures, want);
    }
}

#[test]
fn accept_batches_round_trip_with_sorted_labels_and_values_in_range() {
    let (recs, truth) = run(small(40, 2, 9));
    let hosts: HashMap<&str, &str> = truth
        .agents
        .iter()
        .map(|a| (a.agent.as_str(), a.hostname.as_str()))
        .collect();
    let mut infos: HashMap<String, usize> = HashMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for r in recs.iter().filter(|r| r.expect == Expect::Accept) {
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        assert_eq!(b.encode_to_vec(), r.payload, "canonical re-encode");
        assert!(!b.tenant_id.is_empty());
        assert_eq!(b.agent_id, r.key);
        if let Some(prev) = last_seq.insert(b.agent_id.clone(), b.seq) {
            assert!(b.seq > prev, "seq must grow in arrival order");
        }
        if let Some(info) = &b.agent {
            assert_eq!(info.hostname, hosts[b.agent_id.as_str()]);
            assert!(info.hostname.starts_with(&b.tenant_id));
            assert!(!info.os.is_empty() && !info.agent_version.is_empty());
            *infos.entry(b.agent_id.clone()).or_default() += 1;
        }
        for s in &b.series {
            assert!(s.labels.windows(2).all(|w| w[0].key < w[1].key));
            assert_eq!(s.timestamps_ms.len(), s.values.len());
            for &v in s.values.iter().filter(|v| v.is_finite()) {
                match s.metric.as_str() {
                    "cpu_pct" | "mem_pct" | "disk_used_pct" => {
                        assert!((0.0..=100.0).contains(&v), "{} {v}", s.metric)
                    }
                    "service_up" => assert!(v == 0.0 || v == 1.0),
                    _ => assert!(v >= 0.0),
                }
            }
        }
    }
    // AgentInfo on the first batch and about every 30 batches after.
    for a in truth
        .agents
        .iter()
        .filter(|a| !truth.is_future_agent(&a.agent))
    {
        assert!(
            infos.get(&a.agent).copied().unwrap_or(0) >= 4,
            "{}",
            a.agent
        );
    }
}

#[test]
fn fill_disks_cross_100_near_fill_at() {
    let mut cfg = small(40, 12, 4);
    cfg.scenarios.disk_fill = 0.3;
    let end = cfg.start_ms + cfg.duration_ms;
    let mut fleet = Fleet::new(cfg);
    let fills: Vec<_> = fleet
        .truth()
        .disks_of(DiskScenario::Fill)
        .filter(|d| !fleet.truth().is_future_agent(&d.agent))
        .filter(|d| d.fill_at_ms.is_some_and(|f| f < end - HOUR_MS))
        .cloned()
        .collect();
    assert!(
        fills.len() >= 2,
        "only {} fills inside the run",
        fills.len()
    );
    let mut points: HashMap<(String, String), Vec<(i64, f64)>> = HashMap::new();
    for r in fleet.by_ref().filter(|r| r.expect == Expect::Accept) {
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        for s in b.series.iter().filter(|s| s.metric == "disk_used_pct") {
            let key = (b.agent_id.clone(), s.labels[0].value.clone());
            let v = points.entry(key).or_default();
            v.extend(
                s.timestamps_ms
                    .iter()
                    .copied()
                    .zip(s.values.iter().copied()),
            );
        }
    }
    for d in &fills {
        let f = d.fill_at_ms.unwrap();
        let pts = &points[&(d.agent.clone(), d.mount.clone())];
        let skew = fleet
            .truth()
            .agents
            .iter()
            .find(|a| a.agent == d.agent)
            .unwrap()
            .clock_skew_ms;
        let start_e = fleet.config().start_ms + skew;
        let rate = (100.0 - d.start_pct) / (f - start_e) as f64;
        let slack = (d.noise_pct / rate) as i64 + MINUTE_MS;
        for &(t, v) in pts.iter().filter(|(_, v)| v.is_finite()) {
            if t >= f + slack {
                assert_eq!(v, 100.0, "{} after fill", d.agent);
            }
            if t <= f - slack {
                assert!(v < 100.0, "{} full too early", d.agent);
            }
        }
        // A least-squares fit of the pre-fill points predicts fill_at closely.
        let pre: Vec<(f64, f64)> = pts
            .iter()
            .filter(|(t, v)| *t < f && v.is_finite())
            .map(|&(t, v)| ((t - f) as f64, v))
            .collect();
        let n = pre.len() as f64;
        let (sx, sy) = pre.iter().fold((0.0, 0.0), |a, p| (a.0 + p.0, a.1 + p.1));
        let (mx, my) = (sx / n, sy / n);
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (x, y) in &pre {
            sxy += (x - mx) * (y - my);
            sxx += (x - mx) * (x - mx);
        }
        let slope = sxy / sxx;
        let cross = mx + (100.0 - my) / slope; // relative to fill_at
        let span = (f - start_e) as f64;
        assert!(
            cross.abs() < 0.05 * span,
            "{}: fit crosses {cross} ms off",
            d.agent
        );
    }
}

#[test]
fn offline_agents_send_nothing_while_offline() {
    let (recs, truth) = run(noisy(40, 3, 21));
    assert!(!truth.offline.is_empty());
    for o in &truth.offline {
        let during = recs.iter().filter(|r| {
            r.key == o.agent && r.arrival_ms >= o.start_ms + 10_000 && r.arrival_ms < o.end_ms
        });
        assert_eq!(during.count(), 0, "{} offline {o:?}", o.agent);
        let back = recs
            .iter()
            .find(|r| r.key == o.agent && r.arrival_ms >= o.end_ms && r.expect == Expect::Accept);
        if let Some(r) = back {
            let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
            assert!(b.agent.is_some(), "AgentInfo after reconnect");
            let skew = truth
                .agents
                .iter()
                .find(|a| a.agent == o.agent)
                .unwrap()
                .clock_skew_ms;
            for s in &b.series {
                assert!(s
                    .timestamps_ms
                    .iter()
                    .all(|&t| t >= o.end_ms + skew - 12_000));
            }
        }
    }
}

#[test]
fn episodes_show_in_the_data() {
    let (recs, truth) = run(small(60, 6, 13));
    let sat: Vec<_> = truth
        .episodes
        .iter()
        .filter(|e| e.kind == EpisodeKind::CpuSaturation && !truth.is_future_agent(&e.agent))
        .collect();
    assert!(!sat.is_empty());
    let mut checked = 0;
    for r in recs.iter().filter(|r| r.expect == Expect::Accept) {
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        for e in sat.iter().filter(|e| e.agent == b.agent_id) {
            for s in b.series.iter().filter(|s| s.metric == "cpu_pct") {
                for (&t, &v) in s.timestamps_ms.iter().zip(&s.values) {
                    // Timestamps carry up to +1 s / -12 s of jitter.
                    if t >= e.start_ms + 1_000 && t < e.end_ms - 12_000 && v.is_finite() {
                        assert!(v > 95.0, "cpu {v} inside saturation");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn delimited_round_trip_and_truncation_is_an_error() {
    let (recs, _) = run(small(5, 1, 1));
    let mut buf = Vec::new();
    for r in &recs {
        write_delimited(&mut buf, &r.payload).unwrap();
    }
    let back: Vec<Vec<u8>> = read_delimited(&buf[..]).map(|r| r.unwrap()).collect();
    assert_eq!(back.len(), recs.len());
    assert!(back.iter().zip(&recs).all(|(a, b)| *a == b.payload));
    let slices: Vec<&[u8]> = read_delimited_slice(&buf).map(|r| r.unwrap()).collect();
    assert_eq!(slices.len(), recs.len());

    for cut in [buf.len() - 1, buf.len() - 30, 1] {
        let t = &buf[..cut];
        let res: Vec<_> = read_delimited(t).collect();
        assert!(
            matches!(res.last(), Some(Err(DelimitedError::Truncated { .. }))),
            "cut at {cut}"
        );
        let res: Vec<_> = read_delimited_slice(t).collect();
        assert!(matches!(
            res.last(),
            Some(Err(DelimitedError::Truncated { .. }))
        ));
    }
    // A varint that never ends.
    let bad = [0xffu8; 12];
    assert!(matches!(
        read_delimited(&bad[..]).next(),
        Some(Err(DelimitedError::BadLength { .. }))
    ));
    assert!(read_delimited(&[][..]).next().is_none());
}

#[test]
fn invalid_config_lists_every_problem() {
    let cfg = FleetConfig {
        tenants: 0,
        point_interval_ms: 0,
        scenarios: ScenarioMix {
            disk_fill: 1.5,
            late_rate: -1.0,
            ..ScenarioMix::default()
        },
        ..FleetConfig::default()
    };
    let err = Fleet::try_new(cfg.clone()).unwrap_err();
    assert!(err.problems.len() >= 4, "{err}");
    // `new` normalises instead and still works.
    let mut f = Fleet::new(FleetConfig {
        agents: 3,
        duration_ms: 5 * MINUTE_MS,
        ..cfg
    });
    assert!(f.by_ref().count() > 0);
}

#[test]
fn default_start_is_2026_11_02_midnight_utc() {
    // 2026-11-02 is 20_759 days after 1970-01-01.
    assert_eq!(FleetConfig::default().start_ms, 20_759 * 86_400_000);
}

#[test]
fn empty_and_tiny_fleets_do_not_panic() {
    assert_eq!(Fleet::new(small(0, 1, 1)).count(), 0);
    assert!(Fleet::new(small(1, 1, 1)).count() > 0);
    let zero = FleetConfig {
        duration_ms: 0,
        ..small(10, 1, 1)
    };
    assert_eq!(Fleet::new(zero).count(), 0);
}

/// Release-mode generation rate of the default fleet:
/// `cargo test -p vigil-sim --release -- --ignored --nocapture generation_rate`.
#[test]
#[ignore]
fn generation_rate() {
    let t = std::time::Instant::now();
    let mut f = Fleet::new(FleetConfig::default());
    let est = f.estimated_records();
    let mut bytes = 0u64;
    let mut n = 0u64;
    for r in f.by_ref() {
        bytes += r.payload.len() as u64;
        n += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    let c = &f.truth().counts;
    let points: u64 = c.accept.points
        + c.duplicate.points
        + c.late.points
        + c.future.points
        + c.seq_too_old.points
        + c.rejected().points;
    println!(
        "{n} records (estimated {est}), {points} points, {:.1} MB in {secs:.2} s: {:.0} records/s, {:.2} M points/s",
        bytes as f64 / 1e6,
        n as f64 / secs,
        points as f64 / secs / 1e6
    );
    println!("{}", serde_json_like(c));
}

fn serde_json_like(c: &EmittedCounts) -> String {
    format!("{c:?}")
}

/// Rebooting agents restart their numbering from 0 or 1, with a new boot
/// id when they send one; every reboot is in the truth; a resend repeats a
/// delivered (boot id, seq) byte for byte; the default fleet has none.
#[test]
fn rebooting_agents_restart_their_numbering() {
    let mut cfg = small(30, 6, 4);
    cfg.scenarios.reboot_agents = 0.5;
    cfg.scenarios.reboot_rate = 0.05;
    cfg.scenarios.boot_id_agents = 0.5;
    cfg.scenarios.duplicate_rate = 0.02;
    let (recs, truth) = run(cfg);
    let with_id = truth.reboots.iter().filter(|r| r.boot_id != 0).count();
    assert!(with_id >= 5, "{with_id} reboots with boot id");
    assert!(
        truth.reboots.len() - with_id >= 5,
        "reboots without boot id"
    );
    let mut boots: HashMap<String, (u64, u64)> = HashMap::new();
    let mut delivered: HashMap<(String, u64, u64), Vec<u8>> = HashMap::new();
    let mut restarts = 0;
    for r in &recs {
        if r.expect.is_reject() {
            continue;
        }
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        let key = (b.agent_id.clone(), b.boot_id, b.seq);
        match r.expect {
            Expect::Duplicate => assert_eq!(delivered.get(&key), Some(&r.payload)),
            Expect::Accept => {
                let prev = boots.insert(b.agent_id.clone(), (b.boot_id, b.seq));
                if let Some((boot, _)) = prev.filter(|p| b.seq < p.1) {
                    restarts += 1;
                    assert!(b.seq <= 1, "numbering restarts from 0 or 1");
                    if b.boot_id != 0 {
                        assert_ne!(boot, b.boot_id, "a reboot changes the boot id");
                    }
                }
                delivered.insert(key, r.payload.clone());
            }
            _ => {}
        }
    }
    assert!(restarts <= truth.reboots.len() && restarts * 10 >= truth.reboots.len() * 9);
    // Each reboot's first batch is there, with its seq and boot id.
    for rb in &truth.reboots {
        let first = recs
            .iter()
            .filter(|r| {
                r.expect == Expect::Accept && r.key == rb.agent && r.arrival_ms == rb.arrival_ms
            })
            .map(|r| TelemetryBatch::decode(&r.payload[..]).unwrap())
            .find(|b| b.seq == rb.first_seq);
        let first = first.unwrap_or_else(|| panic!("no first batch for {rb:?}"));
        assert_eq!(first.boot_id, rb.boot_id);
        assert!(
            first.agent.is_some(),
            "an agent sends its info after a start"
        );
    }
    assert!(run(small(30, 6, 4)).1.reboots.is_empty());
}

/// Mixed collection cycles: the slow collector's SMART points go out
/// minutes behind the agent's fast series (behind by more than the
/// default lateness, within the `smart_*` override), every 5 minutes, in
/// `Accept` batches.
#[test]
fn slow_collector_points_arrive_minutes_behind_the_fast_series() {
    let (recs, _) = run(noisy(40, 2, 7));
    let (mut slow_points, mut behind_default, mut agents) = (0, 0, HashSet::new());
    for r in recs.iter().filter(|r| r.expect == Expect::Accept) {
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        let fast_max = b
            .series
            .iter()
            .filter(|s| !s.metric.starts_with(SLOW_METRIC_PREFIX))
            .flat_map(|s| s.timestamps_ms.iter().copied())
            .max();
        for s in b
            .series
            .iter()
            .filter(|s| s.metric.starts_with(SLOW_METRIC_PREFIX))
        {
            for &t in &s.timestamps_ms {
                slow_points += 1;
                agents.insert(b.agent_id.clone());
                let lag = fast_max.unwrap_or(t) - t;
                assert!(lag < PIPELINE_SLOW_LATENESS_MS - 2 * MINUTE_MS, "lag {lag}");
                if lag > PIPELINE_ALLOWED_LATENESS_MS + MINUTE_MS {
                    behind_default += 1;
                }
            }
        }
    }
    assert!(
        agents.len() >= 5,
        "{} agents with a slow collector",
        agents.len()
    );
    // About one read per agent every 5 minutes over 2 hours.
    assert!(slow_points >= agents.len() * 20, "{slow_points} points");
    assert!(
        behind_default * 2 > slow_points,
        "{behind_default} of {slow_points} behind"
    );
}

/// `noisy` with aligned batches of `n` points per series.
fn aligned(n: i64, agents: usize, hours: i64, seed: u64) -> FleetConfig {
    let mut cfg = noisy(agents, hours, seed);
    cfg.batch_interval_ms = n * cfg.point_interval_ms;
    cfg.aligned_batches = true;
    cfg
}

/// Points per series of every `Accept` batch, grouped by agent in order;
/// the slow collector's series (its own 5-minute cycle) are left out.
fn accept_shapes(recs: &[SimRecord]) -> HashMap<String, Vec<Vec<usize>>> {
    let mut by_agent: HashMap<String, Vec<Vec<usize>>> = HashMap::new();
    for r in recs.iter().filter(|r| r.expect == Expect::Accept) {
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        let lens = b
            .series
            .iter()
            .filter(|s| !s.metric.starts_with(SLOW_METRIC_PREFIX))
            .map(|s| s.timestamps_ms.len())
            .collect();
        by_agent.entry(b.agent_id).or_default().push(lens);
    }
    by_agent
}

/// The agent tick: with aligned batches of one point, every accepted batch
/// carries exactly one point per series (after offline episodes too), and
/// the labels and counters still hold.
#[test]
fn aligned_batches_carry_exactly_n_points_per_series() {
    let cfg = aligned(1, 40, 3, 21);
    let (recs, truth) = run(cfg.clone());
    let shapes = accept_shapes(&recs);
    assert_eq!(
        shapes.len(),
        40 - truth.skewed.iter().filter(|s| s.future).count()
    );
    let batches: usize = shapes.values().map(Vec::len).sum();
    // About one batch per agent per 10 s over 3 h, less offline time.
    assert!(batches > 30 * 1080, "{batches} accepted batches");
    for (agent, v) in &shapes {
        for lens in v {
            assert!(lens.len() >= 6, "{agent}: {lens:?}");
            assert!(lens.iter().all(|&n| n == 1), "{agent}: {lens:?}");
        }
    }
    assert!(truth.offline.len() >= 5, "offline episodes exercised");
    check_labels(cfg.clone());
    check_counters(cfg);

    // Three points per series: all but an agent's last batch (cut by the
    // end of the range) hold exactly three.
    let (recs, _) = run(aligned(3, 30, 2, 22));
    for (agent, v) in accept_shapes(&recs) {
        let (last, rest) = v.split_last().unwrap();
        assert!(last.iter().all(|&n| (1..=3).contains(&n)), "{agent}");
        for lens in rest {
            assert!(lens.iter().all(|&n| n == 3), "{agent}: {lens:?}");
        }
    }
    check_labels(aligned(3, 30, 2, 23));
}

/// Split batches: at most `series_per_batch` series in each (the
/// deliberate oversized faults aside), each part with its own
/// sequence number, the parts of a tick arriving together and together
/// holding every series of the agent; labels and counters hold.
#[test]
fn series_per_batch_splits_each_tick() {
    let mut cfg = aligned(1, 40, 2, 31);
    cfg.series_per_batch = Some(3);
    let (recs, truth) = run(cfg.clone());
    let mut ticks: HashMap<(String, i64), (usize, usize)> = HashMap::new();
    // Agents with a slow collector carry its series in every tick too.
    let mut slow: HashSet<String> = HashSet::new();
    for r in &recs {
        if let Expect::Reject(why) = r.expect {
            if why == reason::DECODE || reason::OVERSIZED.contains(&why) {
                continue;
            }
        }
        let b = TelemetryBatch::decode(&r.payload[..]).unwrap();
        assert!(
            b.series.len() <= 3,
            "{:?}: {} series",
            r.expect,
            b.series.len()
        );
        if r.expect == Expect::Accept {
            if b.series
                .iter()
                .any(|s| s.metric.starts_with(SLOW_METRIC_PREFIX))
            {
                slow.insert(r.key.clone());
            }
            let e = ticks.entry((r.key.clone(), r.arrival_ms)).or_default();
            e.0 += 1;
            e.1 += b.series.len();
        }
    }
    let series: HashMap<&str, usize> = truth
        .agents
        .iter()
        .map(|a| (a.agent.as_str(), 4 + a.mounts.len() + a.services.len()))
        .collect();
    for ((agent, at), (parts, n)) in &ticks {
        let want = series[agent.as_str()] + usize::from(slow.contains(agent));
        assert_eq!(*n, want, "{agent} at {at}");
        assert_eq!(*parts, n.div_ceil(3), "{agent} at {at}");
    }
    check_labels(cfg.clone());
    check_counters(cfg);
    // Without a limit above the agents' series count, nothing changes.
    let mut wide = small(10, 1, 3);
    wide.series_per_batch = Some(100);
    assert_eq!(run(wide).0, run(small(10, 1, 3)).0);
}

#[test]
fn batch_shape_config_is_validated() {
    let mut c = small(5, 1, 1);
    c.aligned_batches = true;
    c.batch_interval_ms = 25_000;
    let e = c.validate().unwrap_err();
    assert!(e.problems[0].contains("multiple"), "{e}");
    assert_eq!(c.normalized().batch_interval_ms, 30_000);
    c.batch_interval_ms = 30_000;
    c.series_per_batch = Some(0);
    let e = c.validate().unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert!(e.problems[0].contains("series_per_batch"), "{e}");
    assert_eq!(c.normalized().series_per_batch, Some(1));
}

/// Status reports and security events (`FleetConfig::posture`) ride on
/// the same records: arrival, key, expectation and every field but the
/// two they add are the same as without them, also with batches split by
/// `series_per_batch` and with every fault raised.
#[test]
fn posture_changes_nothing_else() {
    let mut events = 0;
    for base in [
        small(60, 3, 5),
        noisy(60, 3, 6),
        FleetConfig {
            series_per_batch: Some(4),
            ..small(30, 2, 7)
        },
    ] {
        let plain: Vec<SimRecord> = Fleet::new(base.clone()).collect();
        let mut with = Fleet::new(FleetConfig {
            posture: true,
            ..base
        });
        let posture: Vec<SimRecord> = with.by_ref().collect();
        assert_eq!(plain.len(), posture.len());
        let mut reports = 0;
        for (a, b) in plain.iter().zip(&posture) {
            assert_eq!(
                (a.arrival_ms, &a.key, a.expect),
                (b.arrival_ms, &b.key, b.expect)
            );
            if matches!(b.expect, Expect::Reject(_)) {
                // Refused whole; some malformed records are made from the
                // agent's previous batch, status report included.
                continue;
            }
            let mut pb = TelemetryBatch::decode(b.payload.as_slice()).unwrap();
            reports += pb.status.len();
            events += pb.security_events.len();
            pb.status.clear();
            pb.security_events.clear();
            // Bytes, not structs: NaN values never compare equal.
            assert_eq!(pb.encode_to_vec(), a.payload);
        }
        let truth = with.into_truth();
        assert_eq!(truth.posture.len(), truth.agents.len());
        // At least one report per agent and hour (resends carry copies).
        assert!(reports >= truth.agents.len(), "{reports} reports");
    }
    assert!(events > 0);
}
