//! The detector-family registry: the one list of detector families, and
//! the contract each family implements.
//!
//! # Adding a detector family
//!
//! A family is one module under `detect/` and one line in the
//! `registry!` invocation at the end of this file. The module owns:
//!
//! * its **rule type** (implementing [`FamilyRule`]), its defaults and
//!   its **rules-file section**, read by the family's `parse` with the
//!   field readers of [`crate::rules::read::Cx`] (every problem reported
//!   at once with `file:line:column: path: message`);
//! * its **state** and its **hooks**, with no-op defaults:
//!   - a [`SeriesFamily`] watches series (`[[key]]`, an array of rules
//!     matched by metric and labels): it keeps a partition-wide
//!     [`SeriesFamily::Store`] and a small [`SeriesFamily::Slot`] in every
//!     series' [`DetHandle`], and is called on every **closed window** of
//!     a series a rule of it watches, on eviction and on a rule change;
//!   - an [`AgentFamily`] watches agents (`[key]`, at most one rule): it
//!     keeps a small [`AgentFamily::State`] inside every agent's
//!     [`super::Liveness`], and is called on every **batch** of the agent
//!     (arrival, and the verdict on its input), on every **tick**, on
//!     eviction and on a rule change;
//!   - a [`ReportFamily`] reads what agents report besides metrics
//!     (`[[key]]`, an array of rules): it is called on every **status
//!     report** and **security event** of an accepted batch, on the
//!     batch's **agent info** when its reports carry no version, on every
//!     **tick**, on the agent's eviction and on a rule change, and keeps a
//!     [`ReportFamily::State`] per (agent, rule) in a partition-wide
//!     [`ReportStore`] that holds only agents it has something to say
//!     about (dropped again when the state is back to `Default`). A
//!     status check that is one condition per report implements
//!     [`super::condition::ConditionFamily`] instead and gets its
//!     `ReportFamily` from it; the security families share
//!     [`super::security`].
//!
//! The registry generates, from the list, everything that used to be
//! edited by hand for each family: the [`RuleSet`] fields, the rules-file
//! dispatch by section key, the rule definitions a checkpoint records,
//! the per-series watch sets and handles, the per-agent state, and the
//! loops that call every family's hooks in registry order. Dispatch is
//! static (each call site is a sequence of direct calls, one per family,
//! inlined by the compiler): no trait objects on the per-window or
//! per-batch path.
//!
//! # Contracts
//!
//! * A family MUST be pure: time comes in only through window bounds and
//!   `now_ms` arguments.
//! * A family's events MUST follow [`super::lifecycle`]: one `firing`, at
//!   most one `resolved`, ids from (fingerprint, start), the start derived
//!   from checkpointed state.
//! * State MUST stay sparse where most series are quiet: a family whose
//!   rules hold nothing for a quiet series keeps it in a map keyed by
//!   `(series uid, rule)` (as [`super::threshold`] does) and a
//!   [`SeriesFamily::Slot`] of a few bits, or no slot at all (`()`). A
//!   family that needs state for every watched series (a fit, as
//!   [`super::trend`]) keeps it in an arena addressed by its slot.
//!   Every slot type costs its size in every series, watched or not.
//! * A family's checkpoint form is versioned: [`SeriesFamily::STATE_VERSION`]
//!   / [`AgentFamily::STATE_VERSION`] are written with every checkpoint
//!   (`detectors.versions`); a restore refuses a version newer than the
//!   one compiled in, and a family that changes its form MUST bump its
//!   version and keep reading the older forms (serde defaults, or a
//!   conversion in the family's module).
//! * Restoring a checkpoint under the same rules MUST continue with the
//!   output of an uninterrupted run; under edited rules a family MUST
//!   carry over the state of rules whose [`FamilyRule::same_definition`]
//!   holds and close the open incidents of the others (`rule_changed`,
//!   `rule_removed`).

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use vigil_proto::v1::{AgentInfo, SecurityEvent, StatusReport};

use super::agent_version::AgentVersion;
use super::anomaly::Anomaly;
use super::antivirus::Antivirus;
use super::backup::Backup;
use super::brute_force::BruteForce;
use super::invalid_input::{InputVerdict, InvalidInput};
use super::lifecycle::Subject;
use super::off_hours_session::OffHoursSession;
use super::offline::Offline;
use super::patch_sla::PatchSla;
use super::threshold::Threshold;
use super::trend::Trend;
use crate::model::{
    AlertEvent, DetectorKind, ResolveReason, SeriesMeta, Severity, WindowAggregate,
};
use crate::rules::read::{Cx, Val};
use crate::rules::MaintenanceWindow;

/// What every rule of every family provides.
pub trait FamilyRule: Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    /// The rule's name: unique across all families, part of the alert
    /// fingerprint.
    fn name(&self) -> &str;

    /// True when `other` detects exactly like `self`: every field that
    /// shapes state, not the name (the caller matches names), the severity
    /// or the summary template, which only shape events. State built under
    /// one definition is valid under the other only when this holds.
    fn same_definition(&self, other: &Self) -> bool;
}

/// A rule that watches series (of a [`SeriesFamily`]).
pub trait SeriesRule: FamilyRule {
    /// Whether the rule watches the series `meta`.
    fn watches(&self, meta: &SeriesMeta) -> bool;
}

/// What a family's hooks need of the series whose state they keep.
#[derive(Debug, Clone, Copy)]
pub struct SeriesCx<'a> {
    /// The number the caller gives the series: stable for its life and
    /// across checkpoints (the key of sparse state).
    pub uid: u64,
    /// The series' identity.
    pub meta: &'a SeriesMeta,
}

/// A detector family whose rules watch series and see their closed
/// windows. The hooks get the family's rules (`fam`, in file order, from
/// the attached [`RuleSet`]) and the whole rule set (`rules`, for the
/// alert lifecycle); `watch` lists, in rule order, the indexes in `fam` of
/// the rules watching the series.
pub trait SeriesFamily {
    /// Version of the family's checkpoint form (its `Store` and `Slot`).
    const STATE_VERSION: u32 = 1;
    /// The rule type of its `[[key]]` section.
    type Rule: SeriesRule;
    /// The family's state of a whole partition.
    type Store: Debug + Clone + Default + Serialize + DeserializeOwned;
    /// What a series' [`DetHandle`] holds for the family; `Default` MUST
    /// be "no state".
    type Slot: Debug + Copy + Default + ConstDefault + Eq + Serialize + DeserializeOwned;

    /// Reads one rule of the section (`path` is e.g. `threshold[2]`),
    /// reporting every problem into `cx`.
    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<Self::Rule>;

    /// Creates the state of a new series watched by `watch` (not empty).
    fn register(_store: &mut Self::Store, _watch: &[u16]) -> Self::Slot {
        Self::Slot::default()
    }

    /// One closed window of the series: windows of a series arrive in
    /// start order, gaps allowed, all of one size. Appends the events it
    /// causes to `out`.
    #[allow(clippy::too_many_arguments)]
    fn on_window(
        _store: &mut Self::Store,
        _slot: &mut Self::Slot,
        _watch: &[u16],
        _fam: &[Self::Rule],
        _rules: &RuleSet,
        _uid: u64,
        _w: &WindowAggregate,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// The series is evicted: drops its state and resolves its open
    /// incidents with reason `stale` into `out`.
    #[allow(clippy::too_many_arguments)]
    fn evict(
        _store: &mut Self::Store,
        _slot: Self::Slot,
        _watch: &[u16],
        _fam: &[Self::Rule],
        _rules: &RuleSet,
        _s: SeriesCx<'_>,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// A rule change: moves the series' state from `old` (built under
    /// `old_rules`, watched by `old_watch`) into `next` (under `fam`,
    /// watched by `new_watch`), carrying the state of old rule `i` to new
    /// rule `carry[i]` where that is `Some` (same name and definition),
    /// and resolving into `retired` the open incidents of the others
    /// (see [`retire_reason`]). Returns the series' new slot.
    #[allow(clippy::too_many_arguments)]
    fn rebind(
        _old: &Self::Store,
        _next: &mut Self::Store,
        _slot: Self::Slot,
        _old_watch: &[u16],
        _new_watch: &[u16],
        _carry: &[Option<u16>],
        _old_rules: &[Self::Rule],
        _fam: &[Self::Rule],
        _rules: &RuleSet,
        _s: SeriesCx<'_>,
        _retired: &mut Vec<AlertEvent>,
    ) -> Self::Slot {
        Self::Slot::default()
    }

    /// Number of (series, rule) states held, for metrics.
    fn states(_store: &Self::Store) -> usize {
        0
    }

    /// Copies one series' state from `from` into `to` (both under the
    /// same rules, the series watched by `watch`) and returns its slot in
    /// `to`: what a delta checkpoint holds of a changed series, and how a
    /// restore lays out the series of a base and its deltas in one store.
    /// No event: the state moves unchanged. The default returns `slot`,
    /// right for a family whose store is keyed by the series' uid and
    /// holds nothing for it, or whose slot is its whole state.
    fn copy(
        _from: &Self::Store,
        _to: &mut Self::Store,
        slot: Self::Slot,
        _watch: &[u16],
        _uid: u64,
    ) -> Self::Slot {
        slot
    }
}

/// What a family's hooks know of an agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentCx<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Agent id.
    pub agent: &'a str,
    /// Processing time now.
    pub now_ms: i64,
    /// The agent's last-seen time, moved later by skipped processing time
    /// (`i64::MIN`: never), see [`super::Liveness`].
    pub last_seen_ms: i64,
    /// Processing time of the agent's latest batch, if any (without
    /// skipped time).
    pub arrived_ms: Option<i64>,
}

/// A detector family whose rule watches agents. `rule` is the family's
/// rule in force (`None`: the section is absent), `rules` the whole set.
pub trait AgentFamily {
    /// Version of the family's checkpoint form (its `State`).
    const STATE_VERSION: u32 = 1;
    /// The rule type of its `[key]` section.
    type Rule: FamilyRule;
    /// The family's state of one agent, inside the agent's
    /// [`super::Liveness`]; a few bytes, `Default` = nothing to say.
    type State: Debug + Copy + Default + Eq + Serialize + DeserializeOwned;

    /// Reads the section (`path` is its key), reporting every problem
    /// into `cx`.
    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<Self::Rule>;

    /// A batch of the agent arrived (any batch that names it: also a
    /// duplicate or a refused one); the agent's liveness is already
    /// updated.
    fn on_seen(
        _rule: Option<&Self::Rule>,
        _rules: &RuleSet,
        _a: &AgentCx<'_>,
        _st: &mut Self::State,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// The verdict on a batch of the agent, see
    /// [`super::invalid_input`].
    fn on_input(
        _rule: Option<&Self::Rule>,
        _rules: &RuleSet,
        _a: &AgentCx<'_>,
        _verdict: InputVerdict,
        _st: &mut Self::State,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// Processing-time housekeeping (called only when the rule is in
    /// force). A tick's events are put in (tenant, agent) order by the
    /// engine.
    fn on_tick(
        _rule: &Self::Rule,
        _rules: &RuleSet,
        _a: &AgentCx<'_>,
        _st: &mut Self::State,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// Closes the open incident `rule` raised, for `reason` (`stale`,
    /// `rule_changed`, `rule_removed`) at `a.now_ms`, resetting the state
    /// so a new incident gets a new start.
    fn close(
        _rule: &Self::Rule,
        _rules: &RuleSet,
        _a: &AgentCx<'_>,
        _reason: ResolveReason,
        _st: &mut Self::State,
    ) -> Option<AlertEvent> {
        None
    }
}

/// What a report family's hooks know of the agent a report or event
/// came from.
#[derive(Debug, Clone, Copy)]
pub struct ReportCx<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Agent id.
    pub agent: &'a str,
    /// Processing time now.
    pub now_ms: i64,
}

impl<'a> ReportCx<'a> {
    /// The alert subject of `rule` on this agent: no metric, the
    /// incident's canonical `labels` (empty for one incident per agent).
    pub fn subject<'s, R: ReportRule>(
        &self,
        rule: &'s R,
        kind: DetectorKind,
        labels: &'s str,
    ) -> Subject<'s>
    where
        'a: 's,
    {
        Subject {
            rule: rule.name(),
            kind,
            severity: rule.severity(),
            tenant: self.tenant,
            agent: self.agent,
            metric: None,
            labels,
        }
    }
}

/// A rule of a report family, as the shared report helpers
/// ([`ReportCx::subject`], [`super::condition`], [`super::security`])
/// read it.
pub trait ReportRule: FamilyRule {
    /// Severity of the rule's alerts.
    fn severity(&self) -> Severity;
}

/// A detector family whose rules read status reports and security events
/// (wire fields 10 and 11, docs/wire-format.md). `rule` is one rule of
/// the family, `rules` the whole set; `st` the family's state of (agent,
/// rule), `Default` when the store holds none. State back at `Default`
/// after a hook is dropped from the store.
pub trait ReportFamily {
    /// Version of the family's checkpoint form (its `State`).
    const STATE_VERSION: u32 = 1;
    /// The rule type of its `[[key]]` section.
    type Rule: FamilyRule;
    /// The family's state of one (agent, rule); `Default` = nothing to
    /// say (no open incident, nothing remembered). MUST be bounded.
    type State: Debug + Clone + Default + PartialEq + Serialize + DeserializeOwned;

    /// Reads one rule of the section (`path` is e.g. `patch_sla[0]`),
    /// reporting every problem into `cx`.
    fn parse(cx: &mut Cx<'_>, path: &str, val: &Val<'_>) -> Option<Self::Rule>;

    /// One status report of the agent (validated, not in the future).
    fn on_status(
        _rule: &Self::Rule,
        _rules: &RuleSet,
        _a: &ReportCx<'_>,
        _report: &StatusReport,
        _st: &mut Self::State,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// One security event of the agent (validated, not in the future).
    fn on_security(
        _rule: &Self::Rule,
        _rules: &RuleSet,
        _a: &ReportCx<'_>,
        _event: &SecurityEvent,
        _st: &mut Self::State,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// The `AgentInfo` (wire field 5) of an accepted batch of the agent
    /// whose status reports carry no `agent_version`, as of the batch's
    /// send time `at_ms` (not in the future): the facts it states hold
    /// then. Called after the batch's reports and events.
    #[allow(clippy::too_many_arguments)]
    fn on_agent_info(
        _rule: &Self::Rule,
        _rules: &RuleSet,
        _a: &ReportCx<'_>,
        _info: &AgentInfo,
        _at_ms: i64,
        _st: &mut Self::State,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// Processing-time housekeeping, for every (agent, rule) the store
    /// holds state of.
    fn on_tick(
        _rule: &Self::Rule,
        _rules: &RuleSet,
        _a: &ReportCx<'_>,
        _st: &mut Self::State,
        _out: &mut Vec<AlertEvent>,
    ) {
    }

    /// Closes every open incident of `st` for `reason` (`stale`,
    /// `rule_changed`, `rule_removed`) at `a.now_ms` (never before an
    /// incident's start), appending the `resolved` events to `out`.
    fn close(
        rule: &Self::Rule,
        rules: &RuleSet,
        a: &ReportCx<'_>,
        reason: ResolveReason,
        st: Self::State,
        out: &mut Vec<AlertEvent>,
    );
}

/// A report family's state of a partition: per tenant, per agent, the
/// (rule index, state) pairs that are not `Default`, in rule order. Its
/// serde form is plain sorted maps and lists (deterministic checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "S: Serialize", deserialize = "S: DeserializeOwned"))]
pub struct ReportStore<S> {
    /// tenant → agent → (rule index, state), sorted by rule index.
    agents: BTreeMap<String, BTreeMap<String, Vec<(u16, S)>>>,
}

impl<S> Default for ReportStore<S> {
    fn default() -> Self {
        ReportStore {
            agents: BTreeMap::new(),
        }
    }
}

impl<S: Default + PartialEq> ReportStore<S> {
    /// Runs `f` on the state of (`tenant`, `agent`, `rule`) (`Default`
    /// when absent), keeping it only when it is not `Default` afterwards.
    fn with<R>(&mut self, tenant: &str, agent: &str, rule: u16, f: impl FnOnce(&mut S) -> R) -> R {
        let existing = self
            .agents
            .get_mut(tenant)
            .and_then(|m| m.get_mut(agent))
            .and_then(|v| v.iter_mut().find(|(i, _)| *i == rule))
            .map(|(_, s)| s);
        if let Some(st) = existing {
            let r = f(st);
            if *st == S::default() {
                self.remove(tenant, agent, rule);
            }
            return r;
        }
        let mut st = S::default();
        let r = f(&mut st);
        if st != S::default() {
            let v = self
                .agents
                .entry(tenant.to_string())
                .or_default()
                .entry(agent.to_string())
                .or_default();
            let at = v.partition_point(|(i, _)| *i < rule);
            v.insert(at, (rule, st));
        }
        r
    }

    fn remove(&mut self, tenant: &str, agent: &str, rule: u16) {
        let Some(m) = self.agents.get_mut(tenant) else {
            return;
        };
        if let Some(v) = m.get_mut(agent) {
            v.retain(|(i, _)| *i != rule);
            if v.is_empty() {
                m.remove(agent);
            }
        }
        if m.is_empty() {
            self.agents.remove(tenant);
        }
    }

    /// Takes every state of an agent.
    fn take_agent(&mut self, tenant: &str, agent: &str) -> Vec<(u16, S)> {
        let Some(m) = self.agents.get_mut(tenant) else {
            return Vec::new();
        };
        let v = m.remove(agent).unwrap_or_default();
        if m.is_empty() {
            self.agents.remove(tenant);
        }
        v
    }

    /// Runs `f` on every state, in (tenant, agent, rule) order, dropping
    /// those that end `Default`; calls `changed` on every agent one of
    /// whose states `f` changed.
    fn each(
        &mut self,
        mut f: impl FnMut(&str, &str, u16, &mut S),
        changed: &mut dyn FnMut(&str, &str),
    ) where
        S: Clone,
    {
        self.agents.retain(|t, m| {
            m.retain(|a, v| {
                let mut moved = false;
                for (i, st) in v.iter_mut() {
                    let before = st.clone();
                    f(t, a, *i, st);
                    moved |= *st != before;
                }
                if moved {
                    changed(t, a);
                }
                v.retain(|(_, st)| *st != S::default());
                !v.is_empty()
            });
            !m.is_empty()
        });
    }

    /// The states of the agents `keys` (tenant, agent), as a store.
    fn subset(&self, keys: &[(String, String)]) -> Self
    where
        S: Clone,
    {
        let mut out = ReportStore::default();
        for (t, a) in keys {
            if let Some(v) = self.agents.get(t).and_then(|m| m.get(a)) {
                out.agents
                    .entry(t.clone())
                    .or_default()
                    .insert(a.clone(), v.clone());
            }
        }
        out
    }

    /// Moves every state of `other` into this store, replacing the
    /// states of its agents.
    fn merge(&mut self, other: ReportStore<S>) {
        for (t, m) in other.agents {
            let mine = self.agents.entry(t).or_default();
            for (a, v) in m {
                mine.insert(a, v);
            }
        }
    }

    /// Number of (agent, rule) states held.
    pub fn len(&self) -> usize {
        self.agents
            .values()
            .flat_map(|m| m.values())
            .map(Vec::len)
            .sum()
    }

    /// Whether no state is held.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Every state as (tenant, agent, rule index, state), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u16, &S)> {
        self.agents.iter().flat_map(|(t, m)| {
            m.iter().flat_map(move |(a, v)| {
                v.iter()
                    .map(move |(i, st)| (t.as_str(), a.as_str(), *i, st))
            })
        })
    }
}

/// Moves a report family's store to the rules `fam` (from `old_rules`,
/// carried by `map`), closing at `at_ms` the incidents of rules edited or
/// removed.
fn rebind_reports<F: ReportFamily>(
    store: &mut ReportStore<F::State>,
    map: &[Option<u16>],
    old_rules: &[F::Rule],
    fam: &[F::Rule],
    rules: &RuleSet,
    at_ms: i64,
    retired: &mut Vec<AlertEvent>,
) {
    if is_identity(map, fam.len()) {
        return;
    }
    let old = std::mem::take(store);
    for (tenant, agents) in old.agents {
        for (agent, states) in agents {
            for (i, st) in states {
                match map.get(i as usize).copied().flatten() {
                    Some(n) => {
                        let mut moved = Some(st);
                        store.with(&tenant, &agent, n, |s| {
                            if let Some(m) = moved.take() {
                                *s = m;
                            }
                        });
                    }
                    None => {
                        if let Some(o) = old_rules.get(i as usize) {
                            let a = ReportCx {
                                tenant: &tenant,
                                agent: &agent,
                                now_ms: at_ms,
                            };
                            let reason = retire_reason(o.name(), fam.iter().map(|n| n.name()));
                            F::close(o, rules, &a, reason, st, retired);
                        }
                    }
                }
            }
        }
    }
}

/// Why an incident of the old rule `name` ends on a rule change: its name
/// is still in the family (`rule_changed`) or not (`rule_removed`).
pub fn retire_reason<'a>(
    name: &str,
    mut new_names: impl Iterator<Item = &'a str>,
) -> ResolveReason {
    if new_names.any(|n| n == name) {
        ResolveReason::RuleChanged
    } else {
        ResolveReason::RuleRemoved
    }
}

/// Old rule index → new one, for each old rule whose name *and*
/// definition are in the new rules; `None` for rules edited or removed.
fn carry_map<R: FamilyRule>(old: &[R], new: &[R]) -> Vec<Option<u16>> {
    old.iter()
        .map(|o| {
            new.iter()
                .position(|n| n.name() == o.name() && o.same_definition(n))
                .map(|i| i as u16)
        })
        .collect()
}

/// Whether a carry map keeps every rule at its index, with `new_len`
/// rules in the new set (so no state has to move).
fn is_identity(map: &[Option<u16>], new_len: usize) -> bool {
    map.len() == new_len && map.iter().enumerate().all(|(i, m)| *m == Some(i as u16))
}

/// Indexes of the rules of `rules` watching `meta`.
fn watching<R: SeriesRule>(rules: &[R], meta: &SeriesMeta) -> Vec<u16> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.watches(meta))
        .map(|(i, _)| i as u16)
        .collect()
}

/// Whether the rule `old` of an agent family is no longer in force
/// unchanged under `new`.
fn agent_rule_changed<R: FamilyRule>(old: Option<&R>, new: Option<&R>) -> bool {
    match old {
        None => false,
        Some(o) => !new.is_some_and(|n| n.name() == o.name() && n.same_definition(o)),
    }
}

/// The registry's static dispatch (see the module docs); its functions
/// are generated from the family list.
pub(crate) struct Registry;

/// Generates the family-shaped types and the static dispatch from the
/// family list (see the module docs). `legacy(watch, handle)` names the
/// serde fields a family had in checkpoints written before the registry
/// (format 5), read as aliases.
macro_rules! registry {
    (
        series: [$(
            $(#[$sdoc:meta])*
            $skey:ident: $SF:ty $(, legacy($lw:literal, $lh:literal))?;
        )*]
        agent: [$(
            $(#[$adoc:meta])*
            $akey:ident: $AF:ty;
        )*]
        report: [$(
            $(#[$rdoc:meta])*
            $rkey:ident: $RF:ty;
        )*]
    ) => {
        /// A validated set of detector rules: one field per detector
        /// family (in registry order; series families hold a list of
        /// rules, agent families at most one), and the maintenance
        /// windows.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RuleSet {
            $(
                $(#[$sdoc])*
                #[serde(default)]
                pub $skey: Vec<<$SF as SeriesFamily>::Rule>,
            )*
            $(
                $(#[$adoc])*
                #[serde(default)]
                pub $akey: Option<<$AF as AgentFamily>::Rule>,
            )*
            $(
                $(#[$rdoc])*
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                pub $rkey: Vec<<$RF as ReportFamily>::Rule>,
            )*
            /// Maintenance windows.
            #[serde(default)]
            pub maintenance: Vec<MaintenanceWindow>,
        }

        /// The rules-file section key of every family, in registry order.
        pub const FAMILY_KEYS: &[&str] = &[$(stringify!($skey),)* $(stringify!($akey),)* $(stringify!($rkey),)*];

        impl RuleSet {
            /// Reads the section `key` of a rules file into the family
            /// that owns it; false when no family does.
            pub(crate) fn read_section(&mut self, cx: &mut Cx<'_>, key: &str, val: &Val<'_>) -> bool {
                match key {
                    $(stringify!($skey) => {
                        for (i, item) in cx.tables_array(key, val).into_iter().enumerate() {
                            let path = format!("{key}[{i}]");
                            if let Some(r) = <$SF as SeriesFamily>::parse(cx, &path, item) {
                                self.$skey.push(r);
                            }
                        }
                    })*
                    $(stringify!($akey) => {
                        if let Some(item) = cx.table(key, val) {
                            self.$akey = <$AF as AgentFamily>::parse(cx, key, item);
                        }
                    })*
                    $(stringify!($rkey) => {
                        for (i, item) in cx.tables_array(key, val).into_iter().enumerate() {
                            let path = format!("{key}[{i}]");
                            if let Some(r) = <$RF as ReportFamily>::parse(cx, &path, item) {
                                self.$rkey.push(r);
                            }
                        }
                    })*
                    _ => return false,
                }
                true
            }

            /// Rules per family, in registry order (an agent family has 0
            /// or 1), for summaries such as `vigil rules check`.
            pub fn rule_counts(&self) -> Vec<(&'static str, usize)> {
                vec![
                    $((stringify!($skey), self.$skey.len()),)*
                    $((stringify!($akey), usize::from(self.$akey.is_some())),)*
                    $((stringify!($rkey), self.$rkey.len()),)*
                ]
            }
        }

        /// The rule definitions a checkpointed state was built under: the
        /// checkpoint's link to the rules, which are configuration.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub(crate) struct Bound {
            $(#[serde(default)] pub(crate) $skey: Vec<<$SF as SeriesFamily>::Rule>,)*
            $(#[serde(default)] pub(crate) $akey: Option<<$AF as AgentFamily>::Rule>,)*
            $(
                #[serde(default, skip_serializing_if = "Vec::is_empty")]
                pub(crate) $rkey: Vec<<$RF as ReportFamily>::Rule>,
            )*
        }

        impl Bound {
            pub(crate) fn of(r: &RuleSet) -> Self {
                Bound {
                    $($skey: r.$skey.clone(),)*
                    $($akey: r.$akey.clone(),)*
                    $($rkey: r.$rkey.clone(),)*
                }
            }
        }

        /// Every report family's state of a partition.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub(crate) struct ReportStores {
            $(
                #[serde(default, skip_serializing_if = "ReportStore::is_empty")]
                pub(crate) $rkey: ReportStore<<$RF as ReportFamily>::State>,
            )*
        }

        impl ReportStores {
            /// Whether no report family holds state (then the engine's
            /// checkpoint leaves the section out).
            pub(crate) fn is_empty(&self) -> bool {
                true $(&& self.$rkey.is_empty())*
            }

            /// Every family's states of the agents `keys` (tenant, agent).
            pub(crate) fn subset(&self, keys: &[(String, String)]) -> ReportStores {
                ReportStores { $($rkey: self.$rkey.subset(keys),)* }
            }

            /// Drops every family's states of agent (`tenant`, `agent`).
            pub(crate) fn forget(&mut self, tenant: &str, agent: &str) {
                $(self.$rkey.take_agent(tenant, agent);)*
            }

            /// Moves every family's states of `other` in, replacing those
            /// of its agents.
            pub(crate) fn merge(&mut self, other: ReportStores) {
                $(self.$rkey.merge(other.$rkey);)*
            }
        }

        /// The rules watching a series, per series family as indexes into
        /// the family's rules, in rule order. Series with the same metric
        /// and labels share one; a handful cover a whole fleet.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub(crate) struct WatchSet {
            $(
                #[serde(default $(, alias = $lw)?)]
                pub(crate) $skey: Vec<u16>,
            )*
        }

        impl WatchSet {
            /// The rules of `rules` watching `meta`.
            pub(crate) fn of(rules: &RuleSet, meta: &SeriesMeta) -> Self {
                WatchSet { $($skey: watching(&rules.$skey, meta),)* }
            }

            /// No rule watches.
            pub(crate) fn is_empty(&self) -> bool {
                true $(&& self.$skey.is_empty())*
            }
        }

        /// Where one series' detector state is (kept by the caller next to
        /// the series' windows): its watch set and one slot per series
        /// family (8 bytes with threshold and trend).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        pub struct DetHandle {
            /// Index of the series' watch set (`u16::MAX`: not registered).
            pub(crate) set: u16,
            $(
                #[serde(default, skip_serializing_if = "zero_sized" $(, alias = $lh)?)]
                pub(crate) $skey: <$SF as SeriesFamily>::Slot,
            )*
        }

        impl DetHandle {
            /// A series no rule watches (yet).
            pub const NONE: DetHandle = DetHandle {
                set: u16::MAX,
                $($skey: <<$SF as SeriesFamily>::Slot as ConstDefault>::DEFAULT,)*
            };
        }

        /// Every series family's partition-wide state.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub(crate) struct SeriesStores {
            $(#[serde(default)] pub(crate) $skey: <$SF as SeriesFamily>::Store,)*
        }

        /// Every agent family's state of one agent.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct AgentStates {
            $(
                #[doc = concat!("State of the `", stringify!($akey), "` family.")]
                #[serde(default)]
                pub $akey: <$AF as AgentFamily>::State,
            )*
        }

        /// Old → new rule indexes of every series family on a rule change.
        pub(crate) struct CarryMaps {
            $($skey: Vec<Option<u16>>,)*
        }

        impl Registry {
            /// The state form version of every family.
            pub(crate) fn versions() -> BTreeMap<String, u32> {
                let mut v = BTreeMap::new();
                $(v.insert(stringify!($skey).to_string(), <$SF as SeriesFamily>::STATE_VERSION);)*
                $(v.insert(stringify!($akey).to_string(), <$AF as AgentFamily>::STATE_VERSION);)*
                $(v.insert(stringify!($rkey).to_string(), <$RF as ReportFamily>::STATE_VERSION);)*
                v
            }

            /// One status report of an agent, to every rule of every
            /// report family, in registry then rule order.
            pub(crate) fn on_status(
                stores: &mut ReportStores,
                rules: &RuleSet,
                a: &ReportCx<'_>,
                report: &StatusReport,
                out: &mut Vec<AlertEvent>,
            ) {
                $(for (i, rule) in rules.$rkey.iter().enumerate() {
                    stores.$rkey.with(a.tenant, a.agent, i as u16, |st| {
                        <$RF as ReportFamily>::on_status(rule, rules, a, report, st, out)
                    });
                })*
            }

            /// One security event of an agent, to every rule of every
            /// report family, in registry then rule order.
            pub(crate) fn on_security(
                stores: &mut ReportStores,
                rules: &RuleSet,
                a: &ReportCx<'_>,
                event: &SecurityEvent,
                out: &mut Vec<AlertEvent>,
            ) {
                $(for (i, rule) in rules.$rkey.iter().enumerate() {
                    stores.$rkey.with(a.tenant, a.agent, i as u16, |st| {
                        <$RF as ReportFamily>::on_security(rule, rules, a, event, st, out)
                    });
                })*
            }

            /// The `AgentInfo` of an agent's batch, to every rule of every
            /// report family, in registry then rule order.
            pub(crate) fn on_agent_info(
                stores: &mut ReportStores,
                rules: &RuleSet,
                a: &ReportCx<'_>,
                info: &AgentInfo,
                at_ms: i64,
                out: &mut Vec<AlertEvent>,
            ) {
                $(for (i, rule) in rules.$rkey.iter().enumerate() {
                    stores.$rkey.with(a.tenant, a.agent, i as u16, |st| {
                        <$RF as ReportFamily>::on_agent_info(rule, rules, a, info, at_ms, st, out)
                    });
                })*
            }

            /// A tick, to every (agent, rule) state of every report
            /// family; the events are put in (tenant, agent) order.
            /// Calls `changed` on every agent one of whose states the tick
            /// changed (for delta checkpoints).
            pub(crate) fn tick_reports(
                stores: &mut ReportStores,
                rules: &RuleSet,
                now_ms: i64,
                out: &mut Vec<AlertEvent>,
                changed: &mut dyn FnMut(&str, &str),
            ) {
                let from = out.len();
                $(stores.$rkey.each(|tenant, agent, i, st| {
                    if let Some(rule) = rules.$rkey.get(i as usize) {
                        let a = ReportCx { tenant, agent, now_ms };
                        <$RF as ReportFamily>::on_tick(rule, rules, &a, st, out);
                    }
                }, changed);)*
                out[from..].sort_by(|a, b| (&a.tenant, &a.agent).cmp(&(&b.tenant, &b.agent)));
            }

            /// Closes (`stale`) and drops every report family's state of
            /// an evicted agent.
            pub(crate) fn expire_reports(
                stores: &mut ReportStores,
                rules: &RuleSet,
                a: &ReportCx<'_>,
                out: &mut Vec<AlertEvent>,
            ) {
                $(for (i, st) in stores.$rkey.take_agent(a.tenant, a.agent) {
                    if let Some(rule) = rules.$rkey.get(i as usize) {
                        <$RF as ReportFamily>::close(rule, rules, a, ResolveReason::Stale, st, out);
                    }
                })*
            }

            /// Moves every report family's state to `rules` (from the
            /// rules `old`), closing at `at_ms` the incidents of rules
            /// edited or removed.
            pub(crate) fn rebind_reports(
                stores: &mut ReportStores,
                old: &Bound,
                rules: &RuleSet,
                at_ms: i64,
                retired: &mut Vec<AlertEvent>,
            ) {
                $(rebind_reports::<$RF>(
                    &mut stores.$rkey,
                    &carry_map(&old.$rkey, &rules.$rkey),
                    &old.$rkey,
                    &rules.$rkey,
                    rules,
                    at_ms,
                    retired,
                );)*
            }

            /// (agent, rule) states held by report families, for metrics.
            pub(crate) fn report_states(stores: &ReportStores) -> usize {
                0 $(+ stores.$rkey.len())*
            }

            /// Creates the state of a new series watched by `set`.
            #[inline]
            pub(crate) fn register(stores: &mut SeriesStores, set: &WatchSet, h: &mut DetHandle) {
                $(if !set.$skey.is_empty() {
                    h.$skey = <$SF as SeriesFamily>::register(&mut stores.$skey, &set.$skey);
                })*
            }

            /// One closed window of a series, to every series family.
            #[inline]
            pub(crate) fn on_window(
                stores: &mut SeriesStores,
                set: &WatchSet,
                h: &mut DetHandle,
                rules: &RuleSet,
                uid: u64,
                w: &WindowAggregate,
                out: &mut Vec<AlertEvent>,
            ) {
                $(if !set.$skey.is_empty() {
                    <$SF as SeriesFamily>::on_window(
                        &mut stores.$skey, &mut h.$skey, &set.$skey, &rules.$skey, rules, uid, w, out,
                    );
                })*
            }

            /// A series is evicted, from every series family.
            pub(crate) fn evict(
                stores: &mut SeriesStores,
                set: &WatchSet,
                h: DetHandle,
                rules: &RuleSet,
                s: SeriesCx<'_>,
                out: &mut Vec<AlertEvent>,
            ) {
                $(if !set.$skey.is_empty() {
                    <$SF as SeriesFamily>::evict(
                        &mut stores.$skey, h.$skey, &set.$skey, &rules.$skey, rules, s, out,
                    );
                })*
            }

            /// (series, rule) states held, for metrics.
            pub(crate) fn states(stores: &SeriesStores) -> usize {
                0 $(+ <$SF as SeriesFamily>::states(&stores.$skey))*
            }

            /// The carry maps from `old` to `rules`, or `None` when every
            /// series family's rules are unchanged (no state moves).
            pub(crate) fn carry_maps(old: &Bound, rules: &RuleSet) -> Option<CarryMaps> {
                let maps = CarryMaps { $($skey: carry_map(&old.$skey, &rules.$skey),)* };
                let same = true $(&& is_identity(&maps.$skey, rules.$skey.len()))*;
                (!same).then_some(maps)
            }

            /// Moves one series' state from `old` to `next` (see
            /// [`SeriesFamily::rebind`]).
            #[allow(clippy::too_many_arguments)]
            pub(crate) fn rebind(
                old: &SeriesStores,
                next: &mut SeriesStores,
                h: DetHandle,
                old_set: Option<&WatchSet>,
                new_set: &WatchSet,
                maps: &CarryMaps,
                bound: &Bound,
                rules: &RuleSet,
                s: SeriesCx<'_>,
                retired: &mut Vec<AlertEvent>,
            ) -> DetHandle {
                let mut nh = DetHandle::NONE;
                $(nh.$skey = <$SF as SeriesFamily>::rebind(
                    &old.$skey,
                    &mut next.$skey,
                    h.$skey,
                    old_set.map_or(&[][..], |o| &o.$skey),
                    &new_set.$skey,
                    &maps.$skey,
                    &bound.$skey,
                    &rules.$skey,
                    rules,
                    s,
                    retired,
                );)*
                nh
            }

            /// Copies one series' state from `from` into `to`, both under
            /// the same rules (see [`SeriesFamily::copy`]); the handle in
            /// `to` keeps the series' watch set.
            pub(crate) fn copy(
                from: &SeriesStores,
                to: &mut SeriesStores,
                set: &WatchSet,
                h: DetHandle,
                uid: u64,
            ) -> DetHandle {
                let mut nh = h;
                $(if !set.$skey.is_empty() {
                    nh.$skey = <$SF as SeriesFamily>::copy(
                        &from.$skey, &mut to.$skey, h.$skey, &set.$skey, uid,
                    );
                })*
                nh
            }

            /// A batch of an agent arrived, to every agent family.
            #[inline]
            pub(crate) fn on_seen(
                rules: &RuleSet,
                a: &AgentCx<'_>,
                st: &mut AgentStates,
                out: &mut Vec<AlertEvent>,
            ) {
                $(<$AF as AgentFamily>::on_seen(rules.$akey.as_ref(), rules, a, &mut st.$akey, out);)*
            }

            /// The verdict on a batch of an agent, to every agent family.
            #[inline]
            pub(crate) fn on_input(
                rules: &RuleSet,
                a: &AgentCx<'_>,
                verdict: InputVerdict,
                st: &mut AgentStates,
                out: &mut Vec<AlertEvent>,
            ) {
                $(<$AF as AgentFamily>::on_input(
                    rules.$akey.as_ref(), rules, a, verdict, &mut st.$akey, out,
                );)*
            }

            /// A tick, for one agent, to every agent family in force.
            pub(crate) fn on_tick(
                rules: &RuleSet,
                a: &AgentCx<'_>,
                st: &mut AgentStates,
                out: &mut Vec<AlertEvent>,
            ) {
                $(if let Some(rule) = rules.$akey.as_ref() {
                    <$AF as AgentFamily>::on_tick(rule, rules, a, &mut st.$akey, out);
                })*
            }

            /// Whether any agent family's rule changed from `old`.
            pub(crate) fn agent_rules_changed(old: &Bound, rules: &RuleSet) -> bool {
                false $(|| agent_rule_changed(old.$akey.as_ref(), rules.$akey.as_ref()))*
            }

            /// Closes the open incidents of an agent: of every agent
            /// family's rule in `old` that is not in force unchanged in
            /// `rules` (reason `rule_changed` or `rule_removed`).
            pub(crate) fn retire_agent(
                old: &Bound,
                rules: &RuleSet,
                a: &AgentCx<'_>,
                st: &mut AgentStates,
                out: &mut Vec<AlertEvent>,
            ) {
                $(if let Some(o) = old.$akey.as_ref() {
                    if agent_rule_changed(Some(o), rules.$akey.as_ref()) {
                        let reason = retire_reason(
                            o.name(),
                            rules.$akey.iter().map(|n| n.name()),
                        );
                        out.extend(<$AF as AgentFamily>::close(o, rules, a, reason, &mut st.$akey));
                    }
                })*
            }

            /// Closes the open incidents of an evicted agent (`stale`).
            pub(crate) fn expire_agent(
                rules: &RuleSet,
                a: &AgentCx<'_>,
                st: &mut AgentStates,
                out: &mut Vec<AlertEvent>,
            ) {
                $(if let Some(rule) = rules.$akey.as_ref() {
                    out.extend(<$AF as AgentFamily>::close(
                        rule, rules, a, ResolveReason::Stale, &mut st.$akey,
                    ));
                })*
            }
        }
    };
}

/// Whether a slot type holds nothing (`()`): such a slot is left out of
/// a series' handle in checkpoints (it reads back as its default).
fn zero_sized<T>(_: &T) -> bool {
    std::mem::size_of::<T>() == 0
}

/// A slot type's "no state" value as a constant (for
/// [`DetHandle::NONE`]); MUST equal its `Default`.
pub trait ConstDefault {
    /// The value.
    const DEFAULT: Self;
}

impl ConstDefault for () {
    const DEFAULT: Self = ();
}

registry! {
    series: [
        /// Threshold rules (`[[threshold]]`), in file order.
        threshold: Threshold, legacy("thr", "thr_active");
        /// Trend rules (`[[trend]]`), in file order.
        trend: Trend;
        /// Anomaly rules (`[[anomaly]]`), in file order.
        anomaly: Anomaly;
    ]
    agent: [
        /// Offline detection (`[offline]`); disabled when absent.
        offline: Offline;
        /// Invalid-input detection (`[invalid_input]`); disabled when
        /// absent.
        invalid_input: InvalidInput;
    ]
    report: [
        /// Patch SLA rules (`[[patch_sla]]`), in file order.
        patch_sla: PatchSla;
        /// Antivirus rules (`[[antivirus]]`), in file order.
        antivirus: Antivirus;
        /// Backup rules (`[[backup]]`), in file order.
        backup: Backup;
        /// Minimum agent version rules (`[[agent_version]]`), in file
        /// order.
        agent_version: AgentVersion;
        /// Brute-force login rules (`[[brute_force]]`), in file order.
        brute_force: BruteForce;
        /// Remote sessions outside business hours
        /// (`[[off_hours_session]]`), in file order.
        off_hours_session: OffHoursSession;
    ]
}
