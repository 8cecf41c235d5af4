//! The fleet: planning (agents, scenarios, episodes, forced faults) and the
//! streaming generator.
//!
//! Generation is driven by a binary heap of pending events keyed by
//! (arrival time, agent index, serial). Each agent has exactly one pending
//! regular batch, plus the few extra records (resends, late batches,
//! malformed records) already scheduled for it, so memory is
//! O(agents), independent of the duration. A regular batch is generated
//! when it is popped, from the agent's own ChaCha8 stream, which makes the
//! output a pure function of the configuration.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use prost::Message;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Geometric, Poisson};
use vigil_proto::v1::{AgentInfo, Label, Series, TelemetryBatch};

use crate::config::{FleetConfig, DAY_MS, HOUR_MS, MINUTE_MS};
use crate::fleet_posture::AgentPostureGen;
use crate::malformed;
use crate::model::{uniform, uniform_i, Cpu, Disk, Leak, Mem, Model, Net, SeriesKind, SimRng};
use crate::truth::{
    reason, AgentTruth, DiskScenario, DiskTruth, Episode, EpisodeKind, Expect, FleetTruth,
    OfflineEpisode, SkewedAgent,
};
use crate::{PIPELINE_ALLOWED_LATENESS_MS, PIPELINE_DEDUP_WINDOW, PIPELINE_WINDOW_MS};

/// Clock skew of the agents whose batches are all [`Expect::Future`].
pub const FUTURE_SKEW_MS: i64 = 15 * MINUTE_MS;
/// Clock skews of the agents whose skew stays harmless (`Accept`).
pub const SMALL_SKEWS_MS: [i64; 2] = [2 * MINUTE_MS, -20 * MINUTE_MS];
/// An agent sends its `AgentInfo` on its first batch, after each offline
/// episode, and every this many batches.
pub const AGENT_INFO_EVERY: u64 = 30;

/// Margin by which every point of a `Late` batch is older than the end of
/// the last window the agent's watermark has closed.
const LATE_MARGIN_MS: i64 = 60_000;
/// Largest backwards jitter of an on-time point relative to its nominal
/// sampling time (out-of-order within and between batches).
const MAX_BACK_JITTER_MS: i64 = 12_000;

/// One simulated Kafka record.
#[derive(Debug, Clone, PartialEq)]
pub struct SimRecord {
    /// Arrival (processing) time at the broker, ms since the epoch. Records
    /// come out of [`Fleet`] in non-decreasing `arrival_ms` order.
    pub arrival_ms: i64,
    /// Agent id: the Kafka record key (also for malformed records).
    pub key: String,
    /// The encoded `TelemetryBatch`, or the malformed bytes.
    pub payload: Vec<u8>,
    /// What the pipeline must do with it.
    pub expect: Expect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    Duplicate,
    Late,
    SeqTooOld,
    Reject(&'static str),
}

#[derive(Debug)]
struct Ready {
    payload: Vec<u8>,
    expect: Expect,
    points: u64,
    non_finite: u64,
}

#[derive(Debug)]
enum EventKind {
    Regular { send_ms: i64, k: i64 },
    Ready(Box<Ready>),
}

#[derive(Debug)]
struct Event {
    arrival_ms: i64,
    agent: u32,
    serial: u64,
    kind: EventKind,
}

impl Event {
    fn key(&self) -> (i64, u32, u64) {
        (self.arrival_ms, self.agent, self.serial)
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

#[derive(Debug)]
struct Tenant {
    name: String,
    tz: i64,
}

#[derive(Debug)]
struct Agent {
    rng: SimRng,
    tenant: usize,
    id: String,
    skew: i64,
    future: bool,
    /// Template: ids and series (metric, labels) fixed; points refilled per batch.
    batch: TelemetryBatch,
    kinds: Vec<SeriesKind>,
    info: AgentInfo,
    model: Model,
    mounts: Vec<String>,
    services: Vec<String>,
    /// Offline episodes, true time, sorted.
    offline: Vec<(i64, i64)>,
    phase_sample: i64,
    phase_send: i64,
    next_j: i64,
    collect_from: i64,
    next_seq: u64,
    batches_sent: u64,
    info_due: bool,
    /// Highest / lowest point timestamp of the agent's delivered `Accept` batches.
    max_ts: Option<i64>,
    first_ts: Option<i64>,
    /// Highest seq of the agent's delivered `Accept` batches.
    max_seq: Option<u64>,
    nf_countdown: u64,
    /// Faults forced for this agent: (due time, kind).
    forced: Vec<(i64, Extra)>,
    /// Reboots now and then (numbering from 1, restarted at each reboot).
    reboots: bool,
    /// Sends a boot id (`TelemetryBatch.boot_id`).
    sends_boot_id: bool,
    /// Seed of its boot ids.
    boot_key: u64,
    /// Reboots so far.
    boot_no: u64,
    /// Arrival of its latest scheduled resend, and of the latest resend
    /// of the boot before the current one.
    dup_until: i64,
    prev_dup_until: i64,
    /// Most series in one of its batches (`usize::MAX`: no limit).
    max_series: usize,
    /// A collector on a slow cycle, if the agent has one.
    slow: Option<SlowCollector>,
    /// Status reports and security events ([`FleetConfig::posture`]).
    posture: Option<AgentPostureGen>,
}

/// Cycle of the slow collector's reads.
const SLOW_CYCLE_MS: i64 = 5 * MINUTE_MS;
/// A finished read older than this when a batch goes out is dropped (an
/// agent back from an outage does not send stale reads).
const SLOW_STALE_MS: i64 = 5 * MINUTE_MS;
/// Salt of the draw that gives an agent a slow collector.
const SLOW_SALT: u64 = 0x534C_4F57;
/// Salt of an agent's posture stream ([`FleetConfig::posture`]).
const POSTURE_SALT: u64 = 0x0050_4F53_5455_5245;
/// Salt of the busy-host draws (`ScenarioMix::busy_cpu_agents`).
const BUSY_SALT: u64 = 0x4255_5359;

/// A SMART attribute read on a slow cycle (see
/// [`crate::ScenarioMix::slow_collector_agents`]): reads start every
/// [`SLOW_CYCLE_MS`], take 60–150 s, are stamped at their start and go out
/// with the first batch after they finished. Its own RNG stream, so the
/// agent's other series are the same with or without it.
#[derive(Debug)]
struct SlowCollector {
    rng: SimRng,
    /// Index of its series in the batch template.
    series: usize,
    /// Start (true time) of the next read.
    next_read: i64,
    /// Reads not sent yet: (start, end) in true time, and the value read.
    pending: Vec<(i64, i64, f64)>,
    /// The attribute's current value (reallocated sectors only grow).
    value: f64,
}

impl Agent {
    /// The label of a regular tick of this agent holding `points` points
    /// between `lo` and `hi`, whose last batch has `last_seq`; an accepted
    /// tick moves the agent's truth (greatest and least timestamp, highest
    /// delivered seq).
    fn delivered(&mut self, points: u64, (lo, hi): (i64, i64), last_seq: u64) -> Expect {
        if self.future {
            return Expect::Future;
        }
        if points > 0 {
            self.max_ts = Some(self.max_ts.map_or(hi, |m| m.max(hi)));
            self.first_ts = Some(self.first_ts.map_or(lo, |m| m.min(lo)));
        }
        self.max_seq = Some(last_seq);
        Expect::Accept
    }
}

/// A uniform draw in [0, 1) for agent `i`, from the seed alone (no RNG
/// stream is advanced, so fleets without the feature are unchanged).
fn agent_draw(seed: u64, i: usize, salt: u64) -> f64 {
    let z = mix(seed ^ 0x7265_626F_6F74_0000 ^ salt ^ mix(i as u64));
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Boot id number `n` of an agent: random-looking, never 0.
fn boot_id(boot_key: u64, n: u64) -> u64 {
    mix(boot_key ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// A deterministic fleet of simulated RMM agents; an iterator over its
/// Kafka records in arrival order.
///
/// ```
/// use vigil_sim::{Fleet, FleetConfig, Expect};
/// let cfg = FleetConfig { agents: 5, duration_ms: 10 * 60_000, ..FleetConfig::default() };
/// let mut fleet = Fleet::new(cfg);
/// let n = fleet.by_ref().count() as u64;
/// assert_eq!(n, fleet.truth().counts.records());
/// ```
#[derive(Debug)]
pub struct Fleet {
    cfg: FleetConfig,
    end: i64,
    agents: Vec<Agent>,
    heap: BinaryHeap<Reverse<Event>>,
    serial: u64,
    truth: FleetTruth,
    estimated: u64,
    nf_geo: Option<Geometric>,
}

const TENANT_NAMES: [&str; 20] = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "tyrell",
    "cyberdyne",
    "soylent",
    "vandelay",
    "oscorp",
    "aperture",
    "nakatomi",
    "monarch",
    "duff",
    "gringotts",
    "piedpiper",
    "dunder",
];

const TZ_HOURS: [f64; 14] = [
    -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 8.0, 9.0, 10.0,
];

const WS_OS: [(&str, f64); 4] = [
    ("Windows 11 Pro 23H2", 0.55),
    ("Windows 10 Pro 22H2", 0.25),
    ("macOS 14.6 Sonoma", 0.15),
    ("Ubuntu 22.04.4 LTS", 0.05),
];
const SRV_OS: [(&str, f64); 4] = [
    ("Windows Server 2022 Standard", 0.45),
    ("Windows Server 2019 Standard", 0.2),
    ("Ubuntu 22.04.4 LTS", 0.25),
    ("Red Hat Enterprise Linux 9.4", 0.1),
];
const VERSIONS: [(&str, f64); 4] = [
    ("7.4.2", 0.6),
    ("7.4.1", 0.2),
    ("7.3.9", 0.12),
    ("6.9.0", 0.08),
];

const SVC_WIN_WS: [&str; 5] = ["spooler", "wuauserv", "windefend", "dnscache", "bits"];
const SVC_WIN_SRV: [&str; 5] = ["w3svc", "mssqlserver", "wuauserv", "windefend", "dns"];
const SVC_LINUX: [&str; 5] = ["sshd", "cron", "nginx", "postgresql", "docker"];
const SVC_MAC: [&str; 3] = ["sshd", "backupd", "mdworker"];

/// Reject reasons of small malformed records and their relative weights.
const MALFORMED_WEIGHTS: [(&str, u32); 5] = [
    (reason::DECODE, 3),
    (reason::MISSING_ID, 2),
    (reason::INVALID_METRIC, 2),
    (reason::INVALID_LABELS, 2),
    (reason::LENGTH_MISMATCH, 1),
];

fn rng_for(seed: u64, stream: u64) -> SimRng {
    let mut r = SimRng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// SplitMix64 finaliser: a bijection on u64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<'a>(rng: &mut SimRng, table: &[(&'a str, f64)]) -> &'a str {
    let total: f64 = table.iter().map(|(_, w)| w).sum();
    let mut u = uniform(rng, 0.0, total);
    for (name, w) in table {
        if u < *w {
            return name;
        }
        u -= w;
    }
    table.last().map(|(n, _)| *n).unwrap_or("")
}

fn poisson(rng: &mut SimRng, lambda: f64) -> u64 {
    if !(lambda > 0.0 && lambda.is_finite()) {
        return 0;
    }
    match Poisson::new(lambda) {
        Ok(p) => {
            let x: f64 = p.sample(rng);
            x.clamp(0.0, 10_000.0) as u64
        }
        Err(_) => 0,
    }
}

/// Places up to `count` non-overlapping ranges of length in
/// `[min_len, max_len]` inside `[lo, hi)`, at least `gap` apart.
fn place(
    rng: &mut SimRng,
    count: u64,
    (lo, hi): (i64, i64),
    (min_len, max_len): (i64, i64),
    gap: i64,
) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = Vec::new();
    for _ in 0..count {
        let max_len = max_len.min(hi - lo);
        if max_len < min_len {
            break;
        }
        let len = uniform_i(rng, min_len, max_len);
        let s = uniform_i(rng, lo, hi - len);
        let e = s + len;
        if v.iter().any(|&(a, b)| s < b + gap && a < e + gap) {
            continue;
        }
        v.push((s, e));
    }
    v.sort_unstable();
    v
}

/// Largest delay of a batch's send time after its nominal time, ms.
fn send_jitter_max(p: i64) -> i64 {
    2000.min(p / 2)
}

fn div_ceil(a: i64, b: i64) -> i64 {
    let q = a.div_euclid(b);
    if a.rem_euclid(b) == 0 {
        q
    } else {
        q + 1
    }
}

fn series(metric: &str, label: Option<(&str, &str)>) -> Series {
    Series {
        metric: metric.to_string(),
        labels: label
            .map(|(k, v)| {
                vec![Label {
                    key: k.to_string(),
                    value: v.to_string(),
                }]
            })
            .unwrap_or_default(),
        timestamps_ms: Vec::with_capacity(8),
        values: Vec::with_capacity(8),
    }
}

fn make_disk(sc: DiskScenario, rng: &mut SimRng, t0e: i64, tz: i64, dur: i64) -> Disk {
    let mut d = Disk::blank(sc, t0e, tz);
    let durf = dur.max(HOUR_MS) as f64;
    match sc {
        DiskScenario::Fill => {
            d.base = uniform(rng, 40.0, 88.0);
            let fill_at = t0e + uniform_i(rng, 2 * HOUR_MS, 40 * HOUR_MS);
            d.rate = (100.0 - d.base) / (fill_at - t0e) as f64;
            d.fill_at = Some(fill_at);
            d.noise = uniform(rng, 0.5, 2.0);
        }
        DiskScenario::FlatNoisy => {
            d.base = if rng.random::<bool>() {
                uniform(rng, 20.0, 80.0)
            } else {
                uniform(rng, 80.0, 95.0)
            };
            d.noise = 3.0;
        }
        DiskScenario::Sawtooth => {
            d.base = uniform(rng, 15.0, 75.0);
            d.amp = uniform(rng, 2.0, 8.0);
            d.period = uniform_i(rng, HOUR_MS, 3 * HOUR_MS);
            d.phase = uniform_i(rng, 0, d.period - 1);
            d.noise = uniform(rng, 0.1, 0.4);
        }
        DiskScenario::Nightly => {
            d.base = uniform(rng, 25.0, 75.0);
            d.amp = uniform(rng, 5.0, 18.0);
            d.period = uniform_i(rng, 0, 90 * MINUTE_MS);
            d.phase = uniform_i(rng, -HOUR_MS, HOUR_MS);
            d.noise = uniform(rng, 0.1, 0.4);
        }
        DiskScenario::Burst => {
            d.base = uniform(rng, 15.0, 70.0);
            d.amp = uniform(rng, 5.0, 25.0);
            d.tb = t0e + (durf * uniform(rng, 0.05, 0.7)) as i64;
            d.te = d.tb + uniform_i(rng, 20 * MINUTE_MS, 3 * HOUR_MS);
            d.noise = uniform(rng, 0.1, 0.4);
        }
        DiskScenario::Plateau => {
            d.cap = uniform(rng, 80.0, 96.0);
            d.base = d.cap - uniform(rng, 10.0, 30.0);
            d.tb = t0e + (durf * uniform(rng, 0.0, 0.3)) as i64;
            d.tau = uniform(rng, 0.5, 2.0) * HOUR_MS as f64;
            d.noise = uniform(rng, 0.2, 0.6);
        }
        DiskScenario::Flat => {
            d.base = uniform(rng, 10.0, 80.0);
            d.rate = uniform(rng, 0.0, 0.2) / DAY_MS as f64;
            d.noise = uniform(rng, 0.05, 0.3);
        }
    }
    d
}

/// Stratified scenario counts for `n` disks: `round(f * n)` of each kind,
/// at least one of each non-zero kind when there are enough disks, the rest
/// `Flat`.
fn disk_deck(mix: &crate::ScenarioMix, n: usize) -> Vec<DiskScenario> {
    let fr = [
        (DiskScenario::Fill, mix.disk_fill),
        (DiskScenario::FlatNoisy, mix.disk_flat_noisy),
        (DiskScenario::Sawtooth, mix.disk_sawtooth),
        (DiskScenario::Nightly, mix.disk_nightly),
        (DiskScenario::Burst, mix.disk_burst),
        (DiskScenario::Plateau, mix.disk_plateau),
    ];
    let nonzero = fr.iter().filter(|(_, f)| *f > 0.0).count();
    let mut deck = Vec::with_capacity(n);
    for (sc, f) in fr {
        let mut c = (f * n as f64).round() as usize;
        if f > 0.0 && c == 0 && n > nonzero {
            c = 1;
        }
        let c = c.min(n - deck.len());
        deck.extend(std::iter::repeat_n(sc, c));
    }
    deck.resize(n, DiskScenario::Flat);
    deck
}

impl Fleet {
    /// Builds the fleet. Never fails: an invalid configuration is first
    /// [`FleetConfig::normalized`]; use [`Fleet::try_new`] to refuse it instead.
    pub fn new(cfg: FleetConfig) -> Fleet {
        Fleet::build(cfg.normalized())
    }

    /// Builds the fleet, refusing an invalid configuration with every
    /// problem listed.
    pub fn try_new(cfg: FleetConfig) -> Result<Fleet, crate::ConfigError> {
        cfg.validate()?;
        Ok(Fleet::build(cfg))
    }

    /// The (normalised) configuration the fleet was built from.
    pub fn config(&self) -> &FleetConfig {
        &self.cfg
    }

    /// Ground truth. Scenarios and episodes are complete from the start;
    /// `counts` covers the records emitted so far.
    pub fn truth(&self) -> &FleetTruth {
        &self.truth
    }

    /// Consumes the fleet and returns its truth (complete counters when
    /// the iterator was exhausted).
    pub fn into_truth(self) -> FleetTruth {
        self.truth
    }

    /// Approximate number of records the fleet emits (for progress bars).
    pub fn estimated_records(&self) -> u64 {
        self.estimated
    }

    #[allow(clippy::too_many_lines)]
    fn build(cfg: FleetConfig) -> Fleet {
        let s = cfg.scenarios.clone();
        let t0 = cfg.start_ms;
        let end = cfg.end_ms();
        let dur = end - t0;
        let p = cfg.point_interval_ms;
        let b = cfg.batch_interval_ms;
        let days = dur as f64 / DAY_MS as f64;
        let n = cfg.agents;
        let mut master = rng_for(cfg.seed, 0);

        let tenants: Vec<Tenant> = (0..cfg.tenants)
            .map(|i| {
                let base = TENANT_NAMES[i % TENANT_NAMES.len()];
                let name = if i < TENANT_NAMES.len() {
                    base.to_string()
                } else {
                    format!("{base}{}", i / TENANT_NAMES.len() + 1)
                };
                let tz = (TZ_HOURS[master.random_range(0..TZ_HOURS.len())] * HOUR_MS as f64) as i64;
                Tenant { name, tz }
            })
            .collect();

        // Tenant sizes: one agent each first, then a skewed (Zipf-like) draw.
        let weights: Vec<f64> = (0..tenants.len())
            .map(|t| 1.0 / ((t + 1) as f64).powf(0.8))
            .collect();
        let wsum: f64 = weights.iter().sum();
        let tenant_of: Vec<usize> = (0..n)
            .map(|i| {
                if i < tenants.len() {
                    return i;
                }
                let mut u = uniform(&mut master, 0.0, wsum);
                for (t, w) in weights.iter().enumerate() {
                    if u < *w {
                        return t;
                    }
                    u -= w;
                }
                tenants.len() - 1
            })
            .collect();

        // Clock skews.
        let mut perm: Vec<usize> = (0..n).collect();
        perm.shuffle(&mut master);
        let mut skew = vec![0i64; n];
        let mut future = vec![false; n];
        let (mut n_future, mut n_small) = (0usize, 0usize);
        if n >= 2 {
            n_future = (s.future_skew_agents * n as f64).round() as usize;
            if s.force_every_kind && s.future_skew_agents > 0.0 {
                n_future = n_future.max(1);
            }
            n_future = n_future.min(n - 1);
            n_small = (s.small_skew_agents * n as f64).round() as usize;
            if s.force_every_kind && s.small_skew_agents > 0.0 {
                n_small = n_small.max(1);
            }
            n_small = n_small.min(n - 1 - n_future);
        }
        for &i in &perm[..n_future] {
            skew[i] = FUTURE_SKEW_MS;
            future[i] = true;
        }
        for &i in &perm[n_future..n_future + n_small] {
            skew[i] = SMALL_SKEWS_MS[master.random_range(0..SMALL_SKEWS_MS.len())];
        }

        let id_key = mix(cfg.seed ^ 0x5649_4749_4C53_494D);
        let mut host_counter = vec![[0usize; 3]; tenants.len()];
        let mut agents: Vec<Agent> = Vec::with_capacity(n);
        for i in 0..n {
            let mut rng = rng_for(cfg.seed, i as u64 + 1);
            let tenant = tenant_of[i];
            let role = pick(&mut rng, &[("ws", 0.65), ("srv", 0.25), ("lt", 0.10)]);
            let role_idx = match role {
                "ws" => 0,
                "srv" => 1,
                _ => 2,
            };
            host_counter[tenant][role_idx] += 1;
            let hostname = format!(
                "{}-{}-{:04}",
                tenants[tenant].name, role, host_counter[tenant][role_idx]
            );
            let server = role == "srv";
            let os = pick(&mut rng, if server { &SRV_OS } else { &WS_OS }).to_string();
            let version = pick(&mut rng, &VERSIONS).to_string();
            let pool: &[&str] = if os.starts_with("macOS") {
                &SVC_MAC
            } else if os.starts_with("Windows") {
                if server {
                    &SVC_WIN_SRV
                } else {
                    &SVC_WIN_WS
                }
            } else {
                &SVC_LINUX
            };
            let mut pool: Vec<&str> = pool.to_vec();
            pool.shuffle(&mut rng);
            let n_svc = uniform_i(&mut rng, 2, 3).min(pool.len() as i64) as usize;
            let services: Vec<String> = pool[..n_svc].iter().map(|s| s.to_string()).collect();
            let mut mounts = vec!["/".to_string()];
            if rng.random::<f64>() < s.data_mount {
                mounts.push("/data".to_string());
            }

            let sk = skew[i];
            let t0e = t0 + sk;
            let end_e = end + sk;
            let inner = (t0e + 5 * MINUTE_MS, end_e - 5 * MINUTE_MS);
            let mut cpu = Cpu {
                busy: false,
                base: if server {
                    uniform(&mut rng, 10.0, 45.0)
                } else {
                    uniform(&mut rng, 2.0, 20.0)
                },
                amp: if server {
                    uniform(&mut rng, 3.0, 15.0)
                } else {
                    uniform(&mut rng, 10.0, 35.0)
                },
                sigma: uniform(&mut rng, 2.0, 6.0),
                saturation: {
                    let c = poisson(&mut rng, s.cpu_saturation_per_day * days);
                    place(
                        &mut rng,
                        c,
                        inner,
                        (10 * MINUTE_MS, 40 * MINUTE_MS),
                        10 * MINUTE_MS,
                    )
                },
            };
            if agent_draw(cfg.seed, i, BUSY_SALT) < s.busy_cpu_agents {
                // A busy host: same RNG draws as any agent (the fleet is
                // otherwise unchanged), its load curve from the seed alone.
                cpu.busy = true;
                cpu.base = 35.0 + 15.0 * agent_draw(cfg.seed, i, BUSY_SALT + 1);
                cpu.amp = 91.0 + 6.0 * agent_draw(cfg.seed, i, BUSY_SALT + 2) - cpu.base;
            }
            let mut mem = Mem {
                base: uniform(&mut rng, 25.0, 70.0),
                wander: uniform(&mut rng, 2.0, 8.0),
                period_ms: uniform(&mut rng, 2.0, 8.0) * HOUR_MS as f64,
                phase: uniform(&mut rng, 0.0, std::f64::consts::TAU),
                sigma: uniform(&mut rng, 0.3, 1.5),
                leaks: Vec::new(),
            };
            let c = poisson(&mut rng, s.memory_leak_per_day * days);
            for (st, en) in place(&mut rng, c, inner, (HOUR_MS, 4 * HOUR_MS), 10 * MINUTE_MS) {
                let peak = uniform(&mut rng, 92.0, 98.0);
                mem.leaks.push(Leak {
                    start: st,
                    end: en,
                    peak,
                });
            }
            let net = Net {
                rx_base: if server {
                    10f64.powf(uniform(&mut rng, 5.0, 7.3))
                } else {
                    10f64.powf(uniform(&mut rng, 4.0, 6.3))
                },
                tx_ratio: if server {
                    uniform(&mut rng, 0.5, 1.5)
                } else {
                    uniform(&mut rng, 0.1, 0.5)
                },
                sigma: uniform(&mut rng, 0.15, 0.5),
            };
            let mut svc_down = vec![Vec::new(); services.len()];
            let c = poisson(&mut rng, s.service_down_per_day * days);
            for ep in place(
                &mut rng,
                c,
                inner,
                (5 * MINUTE_MS, 60 * MINUTE_MS),
                5 * MINUTE_MS,
            ) {
                let k = rng.random_range(0..services.len());
                svc_down[k].push(ep);
            }
            let c = poisson(&mut rng, s.offline_per_day * days);
            let offline = place(
                &mut rng,
                c,
                (t0 + 10 * MINUTE_MS, end - 5 * MINUTE_MS),
                (15 * MINUTE_MS, 60 * MINUTE_MS),
                10 * MINUTE_MS,
            );
            let phase_sample = uniform_i(&mut rng, 0, p - 1);
            let phase_send = if cfg.aligned_batches {
                // Batch k is sent within one point interval after its last
                // sample, number (k + 1)·N − 1: the send offset plus its
                // jitter (up to send_jitter_max) stays in (0, p].
                let n = b / p;
                phase_sample + (n - 1) * p + uniform_i(&mut rng, 1, p - send_jitter_max(p))
            } else {
                phase_sample + uniform_i(&mut rng, 1, b)
            };
            let next_seq = uniform_i(&mut rng, 10_000, 5_000_000) as u64;
            let reboots = !future[i] && agent_draw(cfg.seed, i, 1) < s.reboot_agents;
            let sends_boot_id = agent_draw(cfg.seed, i, 2) < s.boot_id_agents;
            // Rebooting agents number from 1, so reboots land in the window.
            let next_seq = if reboots { 1 } else { next_seq };
            let id = format!("{:016x}", mix(id_key ^ i as u64));
            let model = Model {
                tz: tenants[tenant].tz,
                cpu,
                mem,
                net,
                disks: Vec::new(),
                services: svc_down,
            };
            agents.push(Agent {
                rng,
                tenant,
                id,
                skew: sk,
                future: future[i],
                batch: TelemetryBatch::default(),
                kinds: Vec::new(),
                info: AgentInfo {
                    hostname,
                    os,
                    agent_version: version,
                },
                model,
                mounts,
                services,
                offline,
                phase_sample,
                phase_send,
                next_j: 0,
                collect_from: t0,
                next_seq,
                batches_sent: 0,
                info_due: true,
                max_ts: None,
                first_ts: None,
                max_seq: None,
                nf_countdown: u64::MAX,
                forced: Vec::new(),
                reboots,
                sends_boot_id,
                boot_key: mix(id_key ^ 0x626F_6F74 ^ mix(i as u64 + 1)),
                boot_no: 0,
                dup_until: i64::MIN,
                prev_dup_until: i64::MIN,
                slow: (agent_draw(cfg.seed, i, SLOW_SALT) < s.slow_collector_agents).then(|| {
                    let mut rng = rng_for(cfg.seed, (1 << 40) + i as u64);
                    SlowCollector {
                        next_read: t0 + uniform_i(&mut rng, 0, SLOW_CYCLE_MS),
                        rng,
                        series: 0,
                        pending: Vec::new(),
                        value: 0.0,
                    }
                }),
                max_series: cfg.series_per_batch.unwrap_or(usize::MAX),
                posture: None,
            });
        }

        // Disks: stratified scenario deck over all disk series.
        let n_disks: usize = agents.iter().map(|a| a.mounts.len()).sum();
        let mut deck = disk_deck(&s, n_disks);
        deck.shuffle(&mut master);
        let mut next_disk = 0usize;
        for a in agents.iter_mut() {
            let t0e = t0 + a.skew;
            for _ in 0..a.mounts.len() {
                let sc = deck.get(next_disk).copied().unwrap_or(DiskScenario::Flat);
                next_disk += 1;
                let d = make_disk(sc, &mut a.rng, t0e, a.model.tz, dur);
                a.model.disks.push(d);
            }
        }

        if cfg.posture {
            for (i, a) in agents.iter_mut().enumerate() {
                a.posture = Some(AgentPostureGen::new(
                    mix(cfg.seed ^ POSTURE_SALT ^ mix(i as u64 + 1)),
                    &tenants[a.tenant].name,
                    &a.id,
                    t0 + a.skew,
                    dur,
                ));
            }
        }

        let normal: Vec<usize> = (0..n).filter(|&i| !agents[i].future).collect();
        // Guarantee one episode of each kind on a sizeable run.
        if s.force_every_kind && !normal.is_empty() && dur >= HOUR_MS {
            let window = |m: &mut SimRng, a: &Agent, len: i64| {
                let lo = t0 + a.skew + 5 * MINUTE_MS;
                let hi = (t0 + a.skew + dur - 5 * MINUTE_MS - len).max(lo);
                let st = uniform_i(m, lo, hi);
                (st, st + len)
            };
            if s.cpu_saturation_per_day > 0.0
                && agents.iter().all(|a| a.model.cpu.saturation.is_empty())
            {
                let i = normal[master.random_range(0..normal.len())];
                let ep = window(&mut master, &agents[i], 20 * MINUTE_MS);
                agents[i].model.cpu.saturation = vec![ep];
            }
            if s.memory_leak_per_day > 0.0 && agents.iter().all(|a| a.model.mem.leaks.is_empty()) {
                let i = normal[master.random_range(0..normal.len())];
                let len = (dur - 10 * MINUTE_MS).min(2 * HOUR_MS);
                let (st, en) = window(&mut master, &agents[i], len);
                agents[i].model.mem.leaks = vec![Leak {
                    start: st,
                    end: en,
                    peak: 95.0,
                }];
            }
            if s.service_down_per_day > 0.0
                && agents
                    .iter()
                    .all(|a| a.model.services.iter().all(|d| d.is_empty()))
            {
                let i = normal[master.random_range(0..normal.len())];
                let ep = window(&mut master, &agents[i], 15 * MINUTE_MS);
                if let Some(d) = agents[i].model.services.first_mut() {
                    *d = vec![ep];
                }
            }
            if s.offline_per_day > 0.0 && agents.iter().all(|a| a.offline.is_empty()) {
                let i = normal[master.random_range(0..normal.len())];
                let len = 20 * MINUTE_MS;
                let lo = t0 + 10 * MINUTE_MS;
                let hi = (end - 5 * MINUTE_MS - len).max(lo);
                let st = uniform_i(&mut master, lo, hi);
                agents[i].offline = vec![(st, st + len)];
            }
        }

        // Forced faults: one of each kind early in the run, on clean agents.
        let mut forced_kinds: Vec<Extra> = Vec::new();
        if s.force_every_kind {
            if s.duplicate_rate > 0.0 {
                forced_kinds.push(Extra::Duplicate);
            }
            if s.late_rate > 0.0 {
                forced_kinds.push(Extra::Late);
            }
            if s.seq_too_old_rate > 0.0 {
                forced_kinds.push(Extra::SeqTooOld);
            }
            if s.malformed_rate > 0.0 {
                forced_kinds.extend(MALFORMED_WEIGHTS.iter().map(|(r, _)| Extra::Reject(r)));
            }
            if s.include_oversized && s.oversized_rate > 0.0 {
                forced_kinds.extend(reason::OVERSIZED.iter().map(|r| Extra::Reject(r)));
            }
        }
        let mut hosts: Vec<usize> = normal
            .iter()
            .copied()
            .filter(|&i| agents[i].skew == 0 && agents[i].offline.is_empty() && !agents[i].reboots)
            .collect();
        if hosts.is_empty() {
            hosts = normal.clone();
        }
        hosts.shuffle(&mut master);
        if !hosts.is_empty() {
            for (k, kind) in forced_kinds.iter().enumerate() {
                let i = hosts[k % hosts.len()];
                let due = t0
                    + (12 * MINUTE_MS).max((dur as f64 * uniform(&mut master, 0.1, 0.45)) as i64);
                agents[i].forced.push((due, *kind));
            }
        }

        // Non-finite injection and templates.
        let nf_geo = if s.non_finite_rate > 0.0 {
            Geometric::new(s.non_finite_rate).ok()
        } else {
            None
        };
        for a in agents.iter_mut() {
            let mut kinds = vec![SeriesKind::Cpu, SeriesKind::Mem];
            let mut ser = vec![series("cpu_pct", None), series("mem_pct", None)];
            for (k, m) in a.mounts.iter().enumerate() {
                kinds.push(SeriesKind::Disk(k));
                ser.push(series("disk_used_pct", Some(("mount", m))));
            }
            kinds.push(SeriesKind::NetRx);
            ser.push(series("net_rx_bps", Some(("iface", "eth0"))));
            kinds.push(SeriesKind::NetTx);
            ser.push(series("net_tx_bps", Some(("iface", "eth0"))));
            for (k, name) in a.services.iter().enumerate() {
                kinds.push(SeriesKind::Service(k));
                ser.push(series("service_up", Some(("service", name))));
            }
            if let Some(sc) = a.slow.as_mut() {
                sc.series = ser.len();
                ser.push(series("smart_reallocated_sectors", Some(("disk", "0"))));
            }
            a.kinds = kinds;
            a.batch = TelemetryBatch {
                status: Vec::new(),
                security_events: Vec::new(),
                tenant_id: tenants[a.tenant].name.clone(),
                agent_id: a.id.clone(),
                seq: 0,
                sent_at_ms: 0,
                agent: None,
                boot_id: if a.sends_boot_id {
                    boot_id(a.boot_key, 0)
                } else {
                    0
                },
                series: ser,
            };
            if !a.future {
                if let Some(g) = &nf_geo {
                    a.nf_countdown = g.sample(&mut a.rng);
                }
            }
        }

        let truth = build_truth(&agents, &tenants, t0);
        let extra = s.extra_sum();
        let mut estimated = forced_kinds.len() as u64;
        for a in &agents {
            let off: i64 = a.offline.iter().map(|(s, e)| e - s).sum();
            let chunks = a.kinds.len().div_ceil(a.max_series).max(1);
            let batches = ((dur - off).max(0) / b + 1) as f64 * chunks as f64;
            estimated += (batches * (1.0 + if a.future { 0.0 } else { extra })).round() as u64;
        }
        if dur == 0 {
            estimated = 0;
        }

        let mut fleet = Fleet {
            cfg,
            end,
            agents,
            heap: BinaryHeap::new(),
            serial: 0,
            truth,
            estimated,
            nf_geo,
        };
        for i in 0..fleet.agents.len() {
            fleet.schedule_regular(i, 0, i64::MIN);
        }
        fleet
    }

    fn push(&mut self, arrival_ms: i64, agent: usize, kind: EventKind) {
        self.serial += 1;
        self.heap.push(Reverse(Event {
            arrival_ms,
            agent: agent as u32,
            serial: self.serial,
            kind,
        }));
    }

    /// Schedules agent `i`'s next regular batch from slot `k` on, skipping
    /// offline episodes. Returns its arrival time, or `None` when the agent
    /// has nothing left to send.
    fn schedule_regular(&mut self, i: usize, mut k: i64, now: i64) -> Option<i64> {
        let t0 = self.cfg.start_ms;
        let p = self.cfg.point_interval_ms;
        let b = self.cfg.batch_interval_ms;
        let end = self.end;
        let a = &mut self.agents[i];
        let base = t0 + a.phase_sample;
        let (send, arrival) = loop {
            let mut j = a.next_j;
            if base + j * p < a.collect_from {
                j = div_ceil(a.collect_from - base, p);
            }
            if base + j * p >= end {
                return None;
            }
            let nominal = t0 + a.phase_send + k * b;
            let send = nominal + uniform_i(&mut a.rng, 0, send_jitter_max(p));
            if let Some(&(_, e)) = a.offline.iter().find(|&&(s, e)| s <= send && send < e) {
                a.collect_from = a.collect_from.max(e);
                a.info_due = true;
                k = div_ceil(e + p - t0 - a.phase_send, b).max(k + 1);
                continue;
            }
            if self.cfg.aligned_batches {
                // The batch holds the samples of its own interval only (after
                // an offline episode: the latest N, not the whole gap).
                a.collect_from = a.collect_from.max(send - b);
                if base + div_ceil(a.collect_from - base, p).max(j) * p >= end {
                    return None;
                }
            }
            let delay = if a.rng.random::<f64>() < 0.02 {
                uniform_i(&mut a.rng, 1500, 8000)
            } else {
                uniform_i(&mut a.rng, 50, 1500)
            }
            .min(b / 4);
            break (send, (send + delay).max(now));
        };
        self.push(arrival, i, EventKind::Regular { send_ms: send, k });
        Some(arrival)
    }

    fn regular(&mut self, i: usize, send: i64, k: i64, arrival: i64) -> SimRecord {
        self.maybe_reboot(i, arrival);
        let t0 = self.cfg.start_ms;
        let p = self.cfg.point_interval_ms;
        let end = self.end;
        let a = &mut self.agents[i];
        for s in &mut a.batch.series {
            s.timestamps_ms.clear();
            s.values.clear();
        }
        let base = t0 + a.phase_sample;
        let mut j = a.next_j;
        if base + j * p < a.collect_from {
            j = div_ceil(a.collect_from - base, p);
        }
        let (mut points, mut nf) = (0u64, 0u64);
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        loop {
            let t = base + j * p;
            if t >= send || t >= end {
                break;
            }
            let te = t + a.skew;
            let jitter = if a.rng.random::<f64>() < 0.02 {
                -uniform_i(&mut a.rng, 0, MAX_BACK_JITTER_MS)
            } else {
                uniform_i(&mut a.rng, 0, 1000)
            };
            let ts = te + jitter;
            lo = lo.min(ts);
            hi = hi.max(ts);
            let day = a.model.day(te);
            for (si, kind) in a.kinds.iter().enumerate() {
                let mut v = a.model.value(*kind, te, day, &mut a.rng);
                if a.nf_countdown == 0 {
                    v = match a.rng.random_range(0..3u8) {
                        0 => f64::NAN,
                        1 => f64::INFINITY,
                        _ => f64::NEG_INFINITY,
                    };
                    nf += 1;
                    a.nf_countdown = match &self.nf_geo {
                        Some(g) => g.sample(&mut a.rng),
                        None => u64::MAX,
                    };
                } else {
                    a.nf_countdown -= 1;
                }
                let s = &mut a.batch.series[si];
                s.timestamps_ms.push(ts);
                s.values.push(v);
            }
            points += a.kinds.len() as u64;
            j += 1;
        }
        a.next_j = j;
        if let Some(sc) = a.slow.as_mut() {
            // Reads started before this batch goes out; the finished ones
            // go with it (stamped at their start, minutes behind).
            while sc.next_read < send && sc.next_read < end {
                let took = uniform_i(&mut sc.rng, MINUTE_MS, 150_000);
                if sc.rng.random::<f64>() < 0.05 {
                    sc.value += 1.0;
                }
                sc.pending
                    .push((sc.next_read, sc.next_read + took, sc.value));
                sc.next_read += SLOW_CYCLE_MS;
            }
            let s = &mut a.batch.series[sc.series];
            let fresh_from = (send - SLOW_STALE_MS).max(a.collect_from);
            sc.pending.retain(|&(start, done, v)| {
                if done > send {
                    return true;
                }
                if start >= fresh_from {
                    let ts = start + a.skew;
                    s.timestamps_ms.push(ts);
                    s.values.push(v);
                    lo = lo.min(ts);
                    hi = hi.max(ts);
                    points += 1;
                }
                false
            });
        }
        if a.batch.series.len() > a.max_series {
            return self.regular_split(i, k, arrival, send, points, (lo, hi));
        }

        let seq = a.next_seq;
        a.next_seq += 1;
        a.batch.seq = seq;
        a.batch.sent_at_ms = send + a.skew;
        if a.info_due || a.batches_sent.is_multiple_of(AGENT_INFO_EVERY) {
            a.batch.agent = Some(a.info.clone());
        }
        if let Some(p) = a.posture.as_mut() {
            p.attach(&mut a.batch, send + a.skew);
        }
        let payload = a.batch.encode_to_vec();
        a.batch.agent = None;
        AgentPostureGen::clear(&mut a.batch);
        a.batches_sent += 1;
        a.info_due = false;
        let expect = a.delivered(points, (lo, hi), seq);
        let key = a.id.clone();
        let future = a.future;
        self.truth.counts.add(expect, points, nf);
        let next = self.schedule_regular(i, k + 1, arrival);
        if !future {
            self.extras(i, arrival, next, &payload, points, nf);
        }
        SimRecord {
            arrival_ms: arrival,
            key,
            payload,
            expect,
        }
    }

    /// The end of [`Fleet::regular`] for an agent with more series than
    /// `series_per_batch`: the tick's points (already in the agent's
    /// template) go out as several batches of at most that many series,
    /// each with the next sequence number, all arriving at `arrival` (the
    /// first is returned, the others are queued right behind it), each
    /// labelled and eligible for extras like any regular batch.
    fn regular_split(
        &mut self,
        i: usize,
        k: i64,
        arrival: i64,
        send: i64,
        points: u64,
        (lo, hi): (i64, i64),
    ) -> SimRecord {
        let a = &mut self.agents[i];
        let with_info = a.info_due || a.batches_sent.is_multiple_of(AGENT_INFO_EVERY);
        let mut chunks: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        for (c, part) in a.batch.series.chunks(a.max_series).enumerate() {
            let mut b = TelemetryBatch {
                status: Vec::new(),
                security_events: Vec::new(),
                tenant_id: a.batch.tenant_id.clone(),
                agent_id: a.batch.agent_id.clone(),
                seq: a.next_seq,
                sent_at_ms: send + a.skew,
                agent: (c == 0 && with_info).then(|| a.info.clone()),
                boot_id: a.batch.boot_id,
                series: part.to_vec(),
            };
            if c == 0 {
                if let Some(p) = a.posture.as_mut() {
                    p.attach(&mut b, send + a.skew);
                }
            }
            a.next_seq += 1;
            let pts: u64 = part.iter().map(|s| s.timestamps_ms.len() as u64).sum();
            let nf = part
                .iter()
                .flat_map(|s| &s.values)
                .filter(|v| !v.is_finite())
                .count() as u64;
            chunks.push((b.encode_to_vec(), pts, nf));
        }
        a.batches_sent += 1;
        a.info_due = false;
        let expect = a.delivered(points, (lo, hi), a.next_seq - 1);
        let key = a.id.clone();
        let future = a.future;
        self.truth.counts.add(expect, chunks[0].1, chunks[0].2);
        for (payload, points, non_finite) in &chunks[1..] {
            let ready = Ready {
                payload: payload.clone(),
                expect,
                points: *points,
                non_finite: *non_finite,
            };
            self.push(arrival, i, EventKind::Ready(Box::new(ready)));
        }
        let next = self.schedule_regular(i, k + 1, arrival);
        if !future {
            for (payload, points, nf) in &chunks {
                self.extras(i, arrival, next, payload, *points, *nf);
            }
        }
        SimRecord {
            arrival_ms: arrival,
            key,
            payload: chunks.swap_remove(0).0,
            expect,
        }
    }

    /// A rebooting agent may reboot before its batch arriving at
    /// `arrival`: its numbering restarts from 0 or 1 (alternately) under a
    /// new boot id, if it sends one. Kept so that every batch stays
    /// `Accept` under the documented dedup rules: an agent without boot id
    /// reboots only while its numbering is inside the dedup window and no
    /// resend of its is still on the way; one with a boot id only while
    /// no resend of its previous boot is still on the way (the worker
    /// remembers the current and the previous boot).
    fn maybe_reboot(&mut self, i: usize, arrival: i64) {
        let rate = self.cfg.scenarios.reboot_rate;
        let a = &mut self.agents[i];
        if !a.reboots || a.batches_sent == 0 {
            return;
        }
        let u: f64 = a.rng.random();
        let allowed = if a.sends_boot_id {
            a.prev_dup_until < arrival
        } else {
            a.dup_until < arrival && a.next_seq < PIPELINE_DEDUP_WINDOW
        };
        if u >= rate || !allowed {
            return;
        }
        a.boot_no += 1;
        a.prev_dup_until = a.dup_until;
        a.next_seq = a.boot_no % 2;
        a.max_seq = None;
        a.info_due = true;
        if a.sends_boot_id {
            a.batch.boot_id = boot_id(a.boot_key, a.boot_no);
        }
        self.truth.reboots.push(crate::truth::Reboot {
            tenant: a.batch.tenant_id.clone(),
            agent: a.id.clone(),
            arrival_ms: arrival,
            first_seq: a.next_seq,
            boot_id: a.batch.boot_id,
        });
    }

    /// Draws (or takes a forced) extra record derived from the batch just
    /// delivered, and schedules it.
    fn extras(
        &mut self,
        i: usize,
        now: i64,
        next: Option<i64>,
        payload: &[u8],
        points: u64,
        nf: u64,
    ) {
        let s = &self.cfg.scenarios;
        let a = &mut self.agents[i];
        let u: f64 = a.rng.random();
        if nf > 0 || points == 0 {
            return;
        }
        let forced = a.forced.iter().position(|(due, _)| *due <= now);
        let kind = if let Some(f) = forced {
            Some(a.forced[f].1)
        } else {
            let oversized = if s.include_oversized {
                s.oversized_rate
            } else {
                0.0
            };
            let thresholds = [
                s.duplicate_rate,
                s.late_rate,
                s.seq_too_old_rate,
                s.malformed_rate,
                oversized,
            ];
            let mut c = 0.0;
            let mut hit = None;
            for (k, r) in thresholds.iter().enumerate() {
                c += r;
                if u < c {
                    hit = Some(k);
                    break;
                }
            }
            match hit {
                Some(0) => Some(Extra::Duplicate),
                Some(1) => Some(Extra::Late),
                Some(2) => Some(Extra::SeqTooOld),
                Some(3) => {
                    let total: u32 = MALFORMED_WEIGHTS.iter().map(|(_, w)| w).sum();
                    let mut x = a.rng.random_range(0..total);
                    let mut r = reason::DECODE;
                    for (name, w) in MALFORMED_WEIGHTS {
                        if x < w {
                            r = name;
                            break;
                        }
                        x -= w;
                    }
                    Some(Extra::Reject(r))
                }
                Some(_) => {
                    let r = reason::OVERSIZED[a.rng.random_range(0..reason::OVERSIZED.len())];
                    Some(Extra::Reject(r))
                }
                None => None,
            }
        };
        let Some(kind) = kind else {
            return;
        };
        if self.schedule_extra(i, kind, now, next, payload, points) {
            if let Some(f) = forced {
                self.agents[i].forced.remove(f);
            }
        }
    }

    fn schedule_extra(
        &mut self,
        i: usize,
        kind: Extra,
        now: i64,
        next: Option<i64>,
        payload: &[u8],
        points: u64,
    ) -> bool {
        let b = self.cfg.batch_interval_ms;
        let p = self.cfg.point_interval_ms;
        let end = self.end;
        let a = &mut self.agents[i];
        let at = if kind == Extra::Duplicate {
            let m = uniform_i(&mut a.rng, 1, 4);
            now + m * b + uniform_i(&mut a.rng, 0, b / 2)
        } else {
            let hi = next.unwrap_or(now + b).min(now + 20_000);
            if hi - now < 2 {
                return false;
            }
            uniform_i(&mut a.rng, now + 1, hi - 1)
        };
        if at > end + 2 * b {
            return false;
        }
        // Never arrive during an offline episode.
        if a.offline.iter().any(|&(s, e)| s <= at && e > now) {
            return false;
        }
        let sent_e = at - uniform_i(&mut a.rng, 50, 500) + a.skew;
        let ready = match kind {
            Extra::Duplicate => Some(Ready {
                payload: payload.to_vec(),
                expect: Expect::Duplicate,
                points,
                non_finite: 0,
            }),
            Extra::Late => late_batch(a, sent_e, p),
            Extra::SeqTooOld => seq_too_old_batch(a, sent_e, b),
            Extra::Reject(r) => Some(reject_batch(a, r, sent_e, payload)),
        };
        match ready {
            Some(r) => {
                if kind == Extra::Duplicate {
                    a.dup_until = a.dup_until.max(at);
                }
                self.push(at, i, EventKind::Ready(Box::new(r)));
                true
            }
            None => false,
        }
    }
}

fn points_of(b: &TelemetryBatch) -> u64 {
    b.series.iter().map(|s| s.timestamps_ms.len() as u64).sum()
}

/// A fresh-seq batch whose every point is older than the agent's max
/// timestamp − lateness − window − margin: all in closed windows.
fn late_batch(a: &mut Agent, sent_e: i64, p: i64) -> Option<Ready> {
    let max_ts = a.max_ts?;
    let first = a.first_ts?;
    let span = uniform_i(&mut a.rng, 20_000, 120_000).max(p);
    let lag_min = PIPELINE_ALLOWED_LATENESS_MS + PIPELINE_WINDOW_MS + LATE_MARGIN_MS;
    let room = max_ts - first - lag_min - span;
    if room < 0 {
        return None;
    }
    let lag = lag_min + uniform_i(&mut a.rng, 0, room.min(10 * MINUTE_MS));
    let e = max_ts - lag;
    let mut b = a.batch.clone();
    b.agent = None;
    for s in &mut b.series {
        s.timestamps_ms.clear();
        s.values.clear();
    }
    let mut t = e - span;
    while t <= e {
        let day = a.model.day(t);
        for (si, kind) in a.kinds.iter().enumerate() {
            let v = a.model.value(*kind, t, day, &mut a.rng);
            b.series[si].timestamps_ms.push(t);
            b.series[si].values.push(v);
        }
        t += p;
    }
    b.series.truncate(a.max_series);
    b.seq = a.next_seq;
    a.next_seq += 1;
    b.sent_at_ms = sent_e;
    Some(Ready {
        points: points_of(&b),
        payload: b.encode_to_vec(),
        expect: Expect::Late,
        non_finite: 0,
    })
}

/// A resend of a batch from far back in the agent's spool: seq more than
/// the dedup window below the highest delivered seq.
fn seq_too_old_batch(a: &mut Agent, sent_e: i64, batch_interval: i64) -> Option<Ready> {
    let h = a.max_seq?;
    let back = PIPELINE_DEDUP_WINDOW + 1 + uniform_i(&mut a.rng, 0, 3000) as u64;
    if h <= back {
        return None;
    }
    let mut b = a.batch.clone();
    b.agent = None;
    b.series.truncate(a.max_series);
    let shift = back as i64 * batch_interval;
    for s in &mut b.series {
        for t in &mut s.timestamps_ms {
            *t -= shift;
        }
    }
    b.seq = h - back;
    // A resend is the same record: it keeps (about) its first send time.
    b.sent_at_ms = sent_e - shift;
    Some(Ready {
        points: points_of(&b),
        payload: b.encode_to_vec(),
        expect: Expect::SeqTooOld,
        non_finite: 0,
    })
}

fn reject_batch(a: &mut Agent, why: &'static str, sent_e: i64, last: &[u8]) -> Ready {
    let tenant = a.batch.tenant_id.clone();
    let b = match why {
        reason::DECODE => {
            return Ready {
                payload: malformed::decode_garbage(&mut a.rng, last, &a.id),
                expect: Expect::Reject(why),
                points: 0,
                non_finite: 0,
            };
        }
        reason::TOO_LARGE => {
            let seq = a.next_seq;
            malformed::too_large(&tenant, &a.id, seq, sent_e, &mut a.rng)
        }
        reason::TOO_MANY_POINTS => {
            let seq = a.next_seq;
            malformed::too_many_points(&tenant, &a.id, seq, sent_e, &mut a.rng)
        }
        reason::TOO_MANY_SERIES => {
            malformed::too_many_series(&tenant, &a.id, a.next_seq, sent_e, sent_e)
        }
        _ => {
            let mut b = a.batch.clone();
            b.agent = None;
            b.series.truncate(a.max_series);
            b.seq = a.next_seq;
            b.sent_at_ms = sent_e;
            malformed::mutate(why, &mut b, &mut a.rng);
            b
        }
    };
    a.next_seq += 1;
    Ready {
        points: points_of(&b),
        payload: b.encode_to_vec(),
        expect: Expect::Reject(why),
        non_finite: 0,
    }
}

fn build_truth(agents: &[Agent], tenants: &[Tenant], t0: i64) -> FleetTruth {
    let mut t = FleetTruth::default();
    for a in agents {
        let tenant = tenants[a.tenant].name.clone();
        t.agents.push(AgentTruth {
            tenant: tenant.clone(),
            agent: a.id.clone(),
            hostname: a.info.hostname.clone(),
            os: a.info.os.clone(),
            agent_version: a.info.agent_version.clone(),
            clock_skew_ms: a.skew,
            mounts: a.mounts.clone(),
            services: a.services.clone(),
            busy_cpu: a.model.cpu.busy,
        });
        for (m, d) in a.mounts.iter().zip(&a.model.disks) {
            t.disks.push(DiskTruth {
                tenant: tenant.clone(),
                agent: a.id.clone(),
                mount: m.clone(),
                scenario: d.scenario,
                fill_at_ms: d.fill_at,
                noise_pct: d.noise,
                start_pct: d.trend(t0 + a.skew).clamp(0.0, 100.0),
            });
        }
        let ep = |kind, (start_ms, end_ms): (i64, i64)| Episode {
            tenant: tenant.clone(),
            agent: a.id.clone(),
            kind,
            start_ms,
            end_ms,
            service: None,
            above_90_from_ms: None,
        };
        for &r in &a.model.cpu.saturation {
            t.episodes.push(ep(EpisodeKind::CpuSaturation, r));
        }
        for l in &a.model.mem.leaks {
            let mut e = ep(EpisodeKind::MemoryLeak, (l.start, l.end));
            e.above_90_from_ms = Some(a.model.mem.above_90_from(l));
            t.episodes.push(e);
        }
        for (svc, downs) in a.services.iter().zip(&a.model.services) {
            for &r in downs {
                let mut e = ep(EpisodeKind::ServiceDown, r);
                e.service = Some(svc.clone());
                t.episodes.push(e);
            }
        }
        for &(start_ms, end_ms) in &a.offline {
            t.offline.push(OfflineEpisode {
                tenant: tenant.clone(),
                agent: a.id.clone(),
                start_ms,
                end_ms,
            });
        }
        if let Some(p) = &a.posture {
            t.posture.push(p.truth());
        }
        if a.skew != 0 {
            t.skewed.push(SkewedAgent {
                tenant: tenant.clone(),
                agent: a.id.clone(),
                skew_ms: a.skew,
                future: a.future,
            });
        }
    }
    t
}

impl Iterator for Fleet {
    type Item = SimRecord;

    fn next(&mut self) -> Option<SimRecord> {
        let Reverse(ev) = self.heap.pop()?;
        let i = ev.agent as usize;
        match ev.kind {
            EventKind::Regular { send_ms, k } => Some(self.regular(i, send_ms, k, ev.arrival_ms)),
            EventKind::Ready(r) => {
                let r = *r;
                self.truth.counts.add(r.expect, r.points, r.non_finite);
                Some(SimRecord {
                    arrival_ms: ev.arrival_ms,
                    key: self.agents[i].id.clone(),
                    payload: r.payload,
                    expect: r.expect,
                })
            }
        }
    }
}
