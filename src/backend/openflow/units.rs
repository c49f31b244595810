//! A session's flows, kept per unit: the shared flows, one (VLAN, MAC) dispatch, one VLAN's
//! flood flows, one port's flows, the rule flows and conjunction clauses (dimension 2) of one
//! (direction, family, protocol) bucket of a policy, one conjunction's `conj_id` flow; and
//! apart from them, the member addresses' dimension-1 flows ([`members`]).
//!
//! Indexes lead from a change to the units it reaches (port → its dispatch and flood units
//! and policy; group → the policies using it; remote → the policies naming it; conjunction →
//! its member addresses). Only those units are recomputed, each is diffed against its
//! previous output, and one flow table with the owners of every flow gives the bridge-wide
//! diff. Ids stay a function of the final model: policy and conjunction ids are reassigned
//! from the full key sets, and a unit whose id moved is recomputed with the rest.

mod members;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ipnet::IpNet;

use self::members::{merged, MemberFlows};
use super::numbers::{RuleNumbers, SavedNumbers, Shown, ShownArcs};
use super::pipeline::{
    conj_ids, has_source_ports, ingress_step, Builder, Clause, ConjKey, Dim1, Entry, Key, Kinds,
    OriginCounts,
};
use super::{Compiled, Flow, FlowDiff, OpenFlowOptions, Stats};
use crate::error::{Error, Result};
use crate::ir::ids::id_of;
use crate::ir::optimise::{
    add_covered_rule, any_protocol_survivors, bucket_of, optimise_bucket_kept,
    renamed_under_survivors, Bucket, Fate, Optimised, Renaming, MAX_CONTAINMENT_CHECKS,
};
use crate::ir::policy::{
    member_nets, policy_ids, policy_key, resolve_rules_with, PolicyKey, PolicyRule, RemoteSet,
};
use crate::model::{Direction, EtherType, Mac, Members, Model, Port, RuleRef};

/// One unit of flows; the order is the fresh compile's emission order, which decides the
/// origin a flow two units emit is reported with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum UnitId {
    Shared,
    Dispatch(u16, Mac),
    Flood(u16),
    Port(String),
    /// The rule flows of one (direction, family, protocol) bucket of a policy.
    Rules(PolicyKey, Bucket),
    /// The conjunction clauses of one bucket of a policy.
    Clauses(PolicyKey, Bucket),
    Conj(ConjKey),
}

/// A unit's flows, sorted by key, and how many it emitted twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct UnitOut {
    flows: Vec<(Key, Entry)>,
    duplicates: usize,
}

impl UnitOut {
    fn of(mut builder: Builder<'_>) -> Result<UnitOut> {
        let (flows, duplicates) = builder.sorted_flows()?;
        Ok(UnitOut { flows, duplicates })
    }
}

/// What the units of a port depend on. Its dispatch and flood units read these and its
/// policy id (in `port_policy`, which moves with the policy key set).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortFacts {
    ofport: u32,
    tag: u16,
    macs: Vec<Mac>,
    policy: Option<PolicyKey>,
}

/// A policy's ports and what its recomputation found.
#[derive(Debug, Clone, Default)]
struct PolicyState {
    id: u32,
    ports: BTreeSet<String>,
    stateful: bool,
    /// `group:<id>` / `address_group:<id>` its rules name: member changes reach it.
    remotes: BTreeSet<String>,
    /// Remotes whose member changes reach only this policy's conjunction member lists (not
    /// its rule algebra nor its flows), with the families its rules name them in: see
    /// [`member_only_remotes`].
    member_only: BTreeMap<String, BTreeSet<EtherType>>,
    /// Each (direction, family, protocol) bucket of its rules: the algebra decides within a
    /// bucket, so a change recomputes only the buckets whose rules it changed.
    buckets: BTreeMap<Bucket, BucketState>,
    /// The any-protocol rules of each direction and family that survive their first
    /// subsumption pass: what the protocol buckets' algebra takes from them (see
    /// [`any_protocol_survivors`]).
    survivors: Survivors,
    /// The conjunction members of all its buckets, as registered in the conjunction registry.
    members: BTreeMap<ConjKey, Vec<IpNet>>,
    /// The policy id and statefulness its bucket units were lowered with.
    lowered: Option<(u32, bool)>,
    /// The port its rule flows are reported for (its only port), as last computed.
    owner: Option<String>,
}

/// One bucket of a policy: its rules before the algebra (what decides whether it must be
/// recomputed) and what lowering them found besides the flows.
#[derive(Debug, Clone, Default)]
struct BucketState {
    rules: Vec<PolicyRule>,
    /// What the algebra made of them (renamed, not rerun, when the rules are only renumbered).
    optimised: Optimised,
    /// Its rules that survived the algebra's first subsumption pass: a rule added that one
    /// of them (or a surviving any-protocol rule) beats changes nothing else.
    kept: Vec<PolicyRule>,
    clauses: Vec<Clause>,
    members: BTreeMap<ConjKey, Vec<IpNet>>,
}

impl PolicyState {
    fn owner_now(&self) -> Option<String> {
        (self.ports.len() == 1)
            .then(|| self.ports.first().cloned())
            .flatten()
    }
}

/// What a change touched in the model.
#[derive(Debug, Clone, Default)]
pub(super) struct Touched {
    pub(super) ports: BTreeSet<String>,
    pub(super) groups: BTreeSet<String>,
    pub(super) remotes: BTreeSet<String>,
    /// The stable rule numbers of the touched groups before the change (what the diff's
    /// removed flows are shown with).
    pub(super) numbers_before: Vec<(String, SavedNumbers)>,
}

/// The units, their indexes and the flow table.
#[derive(Debug, Clone, Default)]
pub(super) struct Units {
    /// Hashed, not ordered: a change that moves a conjunction's class replaces thousands of
    /// member units, each a look-up among every unit of the bridge.
    units: HashMap<UnitId, UnitOut>,
    /// Every flow with its owners, in unit order: the first owner's entry is the flow.
    table: BTreeMap<Key, Vec<(UnitId, Entry)>>,
    port_policy: BTreeMap<String, u32>,
    policies: BTreeMap<PolicyKey, PolicyState>,
    ports: BTreeMap<String, PortFacts>,
    /// The ports of each (VLAN, MAC) and of each VLAN, with their OpenFlow port numbers: a
    /// dispatch or flood unit is laid out from these without looking each port up in the
    /// model (a string search per port: most of a port change at p10000, ~1,700 per VLAN).
    dispatch: BTreeMap<(u16, Mac), PortNumbers>,
    /// Each VLAN's ports with their rendered steps of its flood flows.
    flood: BTreeMap<u16, FloodSteps>,
    /// Conjunction → policy id → member addresses (the first policy's are laid out).
    conj: BTreeMap<ConjKey, BTreeMap<u32, Vec<IpNet>>>,
    conj_ids: BTreeMap<String, u32>,
    /// The same ids by key: looked up for every clause, conjunction and member flow, where
    /// rendering each key's name again would cost.
    conj_id_of: BTreeMap<ConjKey, u32>,
    /// How many conjunctions prefer each id (the hash of their name), and how many of them
    /// share a preferred id with an earlier one: without such a collision every conjunction
    /// has its preferred id, and a key coming or going moves no other's.
    conj_hashes: ConjHashes,
    /// The member addresses' dimension-1 flows, kept apart from the units (see
    /// [`members`]): one key allocation per conjunction and change, shared by its thousands
    /// of members.
    members: MemberFlows,
    kinds: Option<Kinds>,
    /// Each remote's member list per family, shared by every rule naming it and kept until a
    /// member change of that remote: resolving a policy's rules again copies no addresses,
    /// and comparing its buckets with their previous rules compares list pointers first.
    member_lists: MemberLists,
    /// Id shifts (a policy or conjunction whose id moved without its own content changing),
    /// counted over the session's life.
    pub(super) id_shifts: usize,
    /// Policies whose rule algebra and lowering were rerun, over the session's life.
    pub(super) policy_recomputes: usize,
    /// Policy buckets whose rule algebra and lowering were rerun, over the session's life.
    pub(super) bucket_recomputes: usize,
}

/// Preferred conjunction ids (see [`Units::settle_conjunctions`]).
#[derive(Debug, Clone, Default)]
struct ConjHashes {
    count: HashMap<u32, usize>,
    collisions: usize,
}

impl ConjHashes {
    fn add(&mut self, hash: u32) {
        let n = self.count.entry(hash).or_default();
        if *n > 0 {
            self.collisions += 1;
        }
        *n += 1;
    }

    fn remove(&mut self, hash: u32) {
        if let Some(n) = self.count.get_mut(&hash) {
            *n -= 1;
            if *n > 0 {
                self.collisions -= 1;
            } else {
                self.count.remove(&hash);
            }
        }
    }
}

/// Port id → its OpenFlow port number.
type PortNumbers = BTreeMap<String, u32>;

/// A VLAN's ports in flood order, (OpenFlow port number, id), each with its step of the
/// flood flows rendered ([`ingress_step`]): the flood flows are these joined, so a port
/// change renders one step, not one per port of the VLAN (and looks up one policy id).
type FloodSteps = BTreeMap<(u32, String), Box<str>>;

/// One port's rendered step of its VLAN's flood flows.
fn flood_step(opts: &OpenFlowOptions, ofport: u32, policy: Option<u32>) -> Box<str> {
    let mut out = String::with_capacity(64);
    ingress_step(&mut out, opts, ofport, policy);
    out.into_boxed_str()
}

/// One remote's member list of one family, shared by the rules naming it.
type FamilyList = (EtherType, Arc<[IpNet]>);

/// Member lists by remote (`group:<id>` / `address_group:<id>`) and family.
#[derive(Debug, Clone, Default)]
struct MemberLists {
    lists: HashMap<String, Vec<FamilyList>>,
    /// The lists forgotten by the last member change: a list made again with the same
    /// addresses (the family the change did not touch) is the old one, so that comparing
    /// the rules naming it with their previous version compares pointers, not addresses.
    stale: HashMap<String, Vec<FamilyList>>,
}

impl MemberLists {
    /// The list `rule` names (its remote `id`, its family), made once from the model.
    fn of(&mut self, model: &Model, id: &str, rule: &crate::model::Rule) -> Arc<[IpNet]> {
        let lists = match self.lists.get_mut(id) {
            Some(lists) => lists,
            None => self.lists.entry(id.to_string()).or_default(),
        };
        if let Some((_, nets)) = lists.iter().find(|(f, _)| *f == rule.ethertype) {
            return Arc::clone(nets);
        }
        let mut nets = member_nets(model, rule);
        let old = self.stale.get(id).into_iter().flatten();
        if let Some((_, same)) = old
            .filter(|(f, _)| *f == rule.ethertype)
            .find(|(_, old)| **old == *nets)
        {
            nets = Arc::clone(same);
        }
        lists.push((rule.ethertype, Arc::clone(&nets)));
        nets
    }

    /// Forgets the lists of remotes whose members changed.
    fn forget(&mut self, remotes: &BTreeSet<String>) {
        self.stale.clear();
        for remote in remotes {
            if let Some(lists) = self.lists.remove(remote) {
                self.stale.insert(remote.clone(), lists);
            }
        }
    }
}

/// What a recomputation made of one bucket.
enum Fresh {
    /// New flows and clauses.
    New(BucketState),
    /// The bucket has no rules any more.
    Gone,
    /// New rules and algebra, but the same remaining rules: the flows, clauses and members
    /// stay.
    Same {
        rules: Vec<PolicyRule>,
        optimised: Optimised,
        kept: Vec<PolicyRule>,
    },
}

/// The surviving any-protocol rules of each direction and family (absent: none).
type Survivors = BTreeMap<(Direction, EtherType), Vec<PolicyRule>>;

/// The survivors of every direction and family of `inputs`: the old ones where the
/// any-protocol rules are the old ones (no algebra), else computed again. Without the algebra
/// a protocol bucket takes nothing from the any-protocol rules.
fn survivors_of(
    opts: &OpenFlowOptions,
    old: &BTreeMap<Bucket, BucketState>,
    old_survivors: &Survivors,
    inputs: &BTreeMap<Bucket, Vec<PolicyRule>>,
) -> Survivors {
    let mut out = Survivors::new();
    if !opts.optimise_rules {
        return out;
    }
    for (&(direction, family, protocol), rules) in inputs {
        if protocol.is_some() {
            continue;
        }
        let kept = match old_survivors.get(&(direction, family)) {
            Some(kept) if old.get(&(direction, family, None)).map(|s| &s.rules) == Some(rules) => {
                kept.clone()
            }
            _ => any_protocol_survivors(rules),
        };
        if !kept.is_empty() {
            out.insert((direction, family), kept);
        }
    }
    out
}

/// The buckets to recompute: those whose rules changed, and every protocol bucket of a
/// direction and family whose surviving any-protocol rules changed (they may cover any of its
/// rules); all of them when `full`.
fn changed_buckets(
    old: &BTreeMap<Bucket, BucketState>,
    new: &BTreeMap<Bucket, Vec<PolicyRule>>,
    survivors: (&Survivors, &Survivors),
    full: bool,
) -> Vec<Bucket> {
    let differs = |b: &Bucket| old.get(b).map(|s| &s.rules) != new.get(b);
    let survivors_differ =
        |b: &Bucket| b.2.is_some() && survivors.0.get(&(b.0, b.1)) != survivors.1.get(&(b.0, b.1));
    let mut all: Vec<Bucket> = old.keys().chain(new.keys()).copied().collect();
    all.sort_unstable();
    all.dedup();
    all.retain(|b| full || differs(b) || survivors_differ(b));
    all
}

/// The algebra of one bucket (see [`optimise_bucket`]), or its rules as they are when the
/// options turn the algebra off.
fn bucket_algebra(
    opts: &OpenFlowOptions,
    own: &[PolicyRule],
    any_protocol: &[PolicyRule],
) -> (Optimised, Vec<PolicyRule>) {
    if opts.optimise_rules {
        return optimise_bucket_kept(own, any_protocol);
    }
    let mut rules = own.to_vec();
    rules.sort();
    let optimised = Optimised {
        rules,
        fates: Vec::new(),
    };
    (optimised, Vec::new())
}

/// The algebra of a bucket that gained one rule which a survivor beats, from its previous
/// run (see [`add_covered_rule`]): only when its surviving any-protocol rules are the old
/// ones and its rules are the old ones with one more.
fn added_algebra(
    opts: &OpenFlowOptions,
    old: Option<&BucketState>,
    own: &[PolicyRule],
    any_protocol: (&[PolicyRule], &[PolicyRule]),
) -> Option<(Optimised, Vec<PolicyRule>)> {
    let old = old?;
    if !opts.optimise_rules || any_protocol.0 != any_protocol.1 || own.len() != old.rules.len() + 1
    {
        return None;
    }
    let at = own
        .iter()
        .zip(&old.rules)
        .position(|(a, b)| a != b)
        .unwrap_or(old.rules.len());
    if own[at + 1..] != old.rules[at..] {
        return None;
    }
    let optimised = add_covered_rule(&old.optimised, &old.kept, any_protocol.1, &own[at])?;
    Some((optimised, old.kept.clone()))
}

/// The surviving any-protocol rules a bucket's algebra takes (none for an any-protocol
/// bucket).
fn any_input(survivors: &Survivors, bucket: Bucket) -> &[PolicyRule] {
    match bucket {
        (direction, family, Some(_)) => survivors
            .get(&(direction, family))
            .map_or(&[], Vec::as_slice),
        (_, _, None) => &[],
    }
}

/// The algebra of a bucket to recompute, taken from its previous run when its rules and the
/// surviving any-protocol rules of its direction and family are the old ones, or the old ones
/// with their origins renumbered in order (a rule removed before them in their group): see
/// [`Renaming`].
fn reused_algebra(
    old: &BTreeMap<Bucket, BucketState>,
    inputs: &BTreeMap<Bucket, Vec<PolicyRule>>,
    survivors: (&Survivors, &Survivors),
    bucket: Bucket,
) -> Option<(Renaming, Optimised, Vec<PolicyRule>)> {
    let state = old.get(&bucket)?;
    let own = inputs.get(&bucket)?;
    let (old_any, new_any) = (
        any_input(survivors.0, bucket),
        any_input(survivors.1, bucket),
    );
    let renaming =
        match Renaming::between(state.rules.iter().chain(old_any), own.iter().chain(new_any)) {
            Some(renaming) => renaming,
            // Survivors changed: the bucket's previous run holds when the change reaches none of
            // its coverings.
            None if bucket.2.is_some() && old_any != new_any => {
                renamed_under_survivors(&state.rules, own, &state.kept, old_any, new_any)?
            }
            None => return None,
        };
    let optimised = renaming.rename(&state.optimised)?;
    let kept = renaming.rename_rules(&state.kept)?;
    Some((renaming, optimised, kept))
}

/// A unit's previous flows with the rules they are reported for renamed (`None` when one is
/// not in the renaming).
fn renamed_out(out: &UnitOut, renaming: &Renaming) -> Option<UnitOut> {
    // A rule's flows share one allocation; their renamed copies share one too.
    let mut renamed: HashMap<*const RuleRef, Arc<RuleRef>> = HashMap::new();
    let flows = out
        .flows
        .iter()
        .map(|(key, entry)| {
            let rule = match &entry.rule {
                Some(r) => Some(match renamed.get(&Arc::as_ptr(r)) {
                    Some(done) => done.clone(),
                    None => {
                        let done = Arc::new(renaming.apply(r)?);
                        renamed.insert(Arc::as_ptr(r), done.clone());
                        done
                    }
                }),
                None => None,
            };
            Some((
                key.clone(),
                Entry {
                    rule,
                    ..entry.clone()
                },
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(UnitOut {
        flows,
        duplicates: out.duplicates,
    })
}

fn find_port<'m>(model: &'m Model, id: &str) -> Option<&'m Port> {
    model
        .ports
        .binary_search_by(|p| p.id.as_str().cmp(id))
        .ok()
        .map(|at| &model.ports[at])
}

/// The dirty units sorted and deduplicated, in `UnitId` order.
fn sorted_units(mut units: Vec<UnitId>) -> Vec<UnitId> {
    units.sort_unstable();
    units.dedup();
    units
}

/// Changes gathered during one update: dirty units, conjunctions whose members may move.
#[derive(Default)]
struct Dirty {
    /// Sorted and deduplicated once, before they are computed (thousands of member
    /// addresses for a conjunction that moves: a tree insertion each cost more).
    units: Vec<UnitId>,
    /// Policies whose rule flows must be recomputed.
    policies: BTreeSet<PolicyKey>,
    /// Policies a member change reaches only through their conjunction member lists.
    relisted: BTreeSet<PolicyKey>,
    /// Policies that only gained or lost ports: their flows change only in the port they
    /// are reported for (one port, or shared).
    regrouped: BTreeSet<PolicyKey>,
    /// Whether a policy came or went (the policy ids are reassigned).
    keys_changed: bool,
    /// Conjunctions touched, with the member addresses laid out before.
    conj_before: BTreeMap<ConjKey, Vec<IpNet>>,
}

impl Units {
    /// All units of `model`.
    pub(super) fn build(
        model: &Model,
        opts: &OpenFlowOptions,
        numbers: &RuleNumbers,
    ) -> Result<Units> {
        let mut units = Units::default();
        let touched = Touched {
            ports: model.ports.iter().map(|p| p.id.clone()).collect(),
            ..Touched::default()
        };
        units.update(model, opts, numbers, &touched, false)?;
        Ok(units)
    }

    /// Brings the units up to date with `model` after a change that touched `touched`, and
    /// returns the bridge-wide diff (empty when `record` is off).
    pub(super) fn update(
        &mut self,
        model: &Model,
        opts: &OpenFlowOptions,
        numbers: &RuleNumbers,
        touched: &Touched,
        record: bool,
    ) -> Result<FlowDiff> {
        let mut dirty = Dirty::default();
        self.member_lists.forget(&touched.remotes);
        for id in &touched.ports {
            self.reindex_port(model, opts, id, &mut dirty);
        }
        self.reach_policies(model, touched, &mut dirty);
        self.drop_empty_policies(&mut dirty);
        self.reassign_policy_ids(opts, &mut dirty);
        for key in std::mem::take(&mut dirty.relisted) {
            if !dirty.policies.contains(&key) {
                self.relist_members(model, &key, &touched.remotes, &mut dirty);
            }
        }
        let mut outputs: Vec<(UnitId, Option<UnitOut>)> = Vec::new();
        for key in std::mem::take(&mut dirty.policies) {
            dirty.regrouped.remove(&key);
            outputs.extend(self.recompute_policy(model, opts, numbers, &key, &mut dirty)?);
        }
        for key in std::mem::take(&mut dirty.regrouped) {
            outputs.extend(self.reown_policy(&key));
        }
        self.settle_conjunctions(&mut dirty);
        let kinds = self.kinds_now();
        if self.kinds != Some(kinds) {
            self.kinds = Some(kinds);
            dirty.units.push(UnitId::Shared);
        }
        for unit in sorted_units(std::mem::take(&mut dirty.units)) {
            let out = self.compute(model, opts, &unit)?;
            outputs.push((unit, out));
        }
        let shown = (
            Shown {
                numbers,
                before: Some(&touched.numbers_before),
            },
            Shown::now(numbers),
        );
        let mut d = self.commit(outputs, record, opts.cookie, shown)?;
        let members = self.members.settle(opts, record);
        d.added = merged(std::mem::take(&mut d.added), members.added);
        d.modified = merged(std::mem::take(&mut d.modified), members.modified);
        d.removed = merged(std::mem::take(&mut d.removed), members.removed);
        if self.table.len() + self.members.len() > opts.max_flows {
            return Err(Error::TooManyFlows {
                limit: opts.max_flows,
                at: "session".into(),
            });
        }
        Ok(d)
    }

    /// Marks a port's own units and the dispatch and flood units it is in.
    fn mark_port(&self, id: &str, dirty: &mut Dirty) {
        dirty.units.push(UnitId::Port(id.to_string()));
        if let Some(f) = self.ports.get(id) {
            mark_shared_units(f, dirty);
        }
    }

    /// Takes a touched port out of the indexes and puts its current version back in. Its
    /// dispatch and flood units are marked only when what they read of it (number, VLAN,
    /// MACs, policy id) moved: a port update that keeps those touches its own flows alone.
    fn reindex_port(&mut self, model: &Model, opts: &OpenFlowOptions, id: &str, dirty: &mut Dirty) {
        dirty.units.push(UnitId::Port(id.to_string()));
        let old_id = self.port_policy.remove(id);
        let old = self.ports.remove(id);
        if let Some(old) = &old {
            for mac in &old.macs {
                remove_port_from(&mut self.dispatch, &(old.tag, *mac), id);
            }
            if let Some(steps) = self.flood.get_mut(&old.tag) {
                steps.remove(&(old.ofport, id.to_string()));
                if steps.is_empty() {
                    self.flood.remove(&old.tag);
                }
            }
            if let Some(key) = &old.policy {
                if let Some(st) = self.policies.get_mut(key) {
                    st.ports.remove(id);
                }
                dirty.regrouped.insert(key.clone());
            }
        }
        let new = self.index_port(model, opts, id, dirty);
        let new_id = self.port_policy.get(id).copied();
        if old.as_ref() != new.as_ref() || old_id != new_id {
            for facts in [&old, &new].into_iter().flatten() {
                mark_shared_units(facts, dirty);
            }
        }
        if let Some(facts) = new {
            self.ports.insert(id.to_string(), facts);
        }
    }

    /// Puts a port's current version in the dispatch, flood and policy indexes (nothing for
    /// a port that is gone or unbound), and returns its facts.
    fn index_port(
        &mut self,
        model: &Model,
        opts: &OpenFlowOptions,
        id: &str,
        dirty: &mut Dirty,
    ) -> Option<PortFacts> {
        let port = find_port(model, id)?;
        let (Some(ofport), Some(tag)) = (port.ofport, port.local_vlan) else {
            return None;
        };
        let policy = port
            .is_filtered()
            .then(|| policy_key(port, !opts.share_policies));
        let facts = PortFacts {
            ofport,
            tag,
            macs: port.macs(),
            policy: policy.clone(),
        };
        for mac in &facts.macs {
            self.dispatch
                .entry((tag, *mac))
                .or_default()
                .insert(id.to_string(), ofport);
        }
        if let Some(key) = policy {
            let st = self.policies.entry(key.clone()).or_default();
            st.ports.insert(id.to_string());
            if st.id != 0 {
                self.port_policy.insert(id.to_string(), st.id);
            } else {
                // Its step is rendered again once the policy has its id.
                dirty.keys_changed = true;
            }
            dirty.regrouped.insert(key);
        }
        let step = flood_step(opts, ofport, self.port_policy.get(id).copied());
        self.flood
            .entry(tag)
            .or_default()
            .insert((ofport, id.to_string()), step);
        Some(facts)
    }

    /// Renders a port's flood step again (its policy id moved).
    fn restep(&mut self, opts: &OpenFlowOptions, id: &str) {
        let Some(facts) = self.ports.get(id) else {
            return;
        };
        let policy = self.port_policy.get(id).copied();
        if let Some(step) = self
            .flood
            .get_mut(&facts.tag)
            .and_then(|steps| steps.get_mut(&(facts.ofport, id.to_string())))
        {
            *step = flood_step(opts, facts.ofport, policy);
        }
    }

    /// Policies whose rules a group or member change reaches. A member change reaches a
    /// policy's rules only when the algebra or the lowering depends on the member addresses;
    /// otherwise only its conjunction member lists are relisted.
    fn reach_policies(&self, model: &Model, touched: &Touched, dirty: &mut Dirty) {
        if touched.groups.is_empty() && touched.remotes.is_empty() {
            return;
        }
        for (key, st) in &self.policies {
            let by_group = key.groups.iter().any(|g| touched.groups.contains(g));
            let mut reached = st.remotes.iter().filter(|r| touched.remotes.contains(*r));
            let Some(first) = reached.next() else {
                if by_group {
                    dirty.policies.insert(key.clone());
                }
                continue;
            };
            let only_members = !by_group
                && std::iter::once(first)
                    .chain(reached)
                    .all(|r| members_stay_conjunctions(model, st, r));
            if only_members {
                dirty.relisted.insert(key.clone());
            } else {
                dirty.policies.insert(key.clone());
            }
        }
    }

    /// A member change that reaches a policy only through its conjunctions: the member lists
    /// of its conjunctions on the touched remotes follow the model; the dimension-1 units are
    /// settled with the other conjunctions.
    fn relist_members(
        &mut self,
        model: &Model,
        key: &PolicyKey,
        remotes: &BTreeSet<String>,
        dirty: &mut Dirty,
    ) {
        let Some(st) = self.policies.get(key) else {
            return;
        };
        let id = st.id;
        let conjs: Vec<ConjKey> = st
            .members
            .keys()
            .filter(|k| remotes.contains(k.remote()))
            .cloned()
            .collect();
        for conj in conjs {
            self.note_conj(&conj, dirty);
            let nets: Vec<IpNet> = remote_members(model, conj.remote())
                .map(|m| m.of(conj.ethertype()).copied().collect())
                .unwrap_or_default();
            if let Some(st) = self.policies.get_mut(key) {
                st.members.insert(conj.clone(), nets.clone());
                for bucket in st.buckets.values_mut() {
                    if let Some(listed) = bucket.members.get_mut(&conj) {
                        listed.clone_from(&nets);
                    }
                }
            }
            self.conj.entry(conj).or_default().insert(id, nets);
        }
    }

    fn drop_empty_policies(&mut self, dirty: &mut Dirty) {
        let empty: Vec<PolicyKey> = dirty
            .policies
            .iter()
            .chain(&dirty.regrouped)
            .filter(|k| self.policies.get(*k).map_or(true, |st| st.ports.is_empty()))
            .cloned()
            .collect();
        for key in empty {
            dirty.keys_changed = true;
            dirty.policies.remove(&key);
            dirty.regrouped.remove(&key);
            if let Some(st) = self.policies.remove(&key) {
                self.unregister(st.id, st.members.keys(), dirty);
                for bucket in st.buckets.keys() {
                    dirty.units.push(UnitId::Rules(key.clone(), *bucket));
                    dirty.units.push(UnitId::Clauses(key.clone(), *bucket));
                }
            }
        }
    }

    /// Policy ids from the current key set; a policy whose id moved is recomputed, and so are
    /// its ports (their classifier loads the id).
    fn reassign_policy_ids(&mut self, opts: &OpenFlowOptions, dirty: &mut Dirty) {
        if !dirty.keys_changed {
            return;
        }
        let keys: BTreeSet<PolicyKey> = self.policies.keys().cloned().collect();
        let ids = policy_ids(&keys);
        let mut moved: Vec<(PolicyKey, u32)> = Vec::new();
        for (key, id) in ids {
            let st = &self.policies[&key];
            if st.id != id {
                if st.id != 0 && !dirty.policies.contains(&key) {
                    self.id_shifts += 1;
                }
                moved.push((key, id));
            }
        }
        for (key, id) in moved {
            let old = self.policies[&key].id;
            if old != 0 {
                // Its conjunction members are registered under the old id.
                if let Some(members) = self
                    .policies
                    .get_mut(&key)
                    .map(|st| std::mem::take(&mut st.members))
                {
                    self.unregister(old, members.keys(), dirty);
                }
            }
            let ports: Vec<String> = self.policies[&key].ports.iter().cloned().collect();
            for p in &ports {
                self.port_policy.insert(p.clone(), id);
                self.restep(opts, p);
                self.mark_port(p, dirty);
            }
            if let Some(st) = self.policies.get_mut(&key) {
                st.id = id;
            }
            dirty.policies.insert(key);
        }
    }

    /// Removes policy `id`'s conjunction members from the registry.
    fn unregister<'k>(
        &mut self,
        id: u32,
        keys: impl Iterator<Item = &'k ConjKey>,
        dirty: &mut Dirty,
    ) {
        for key in keys {
            self.note_conj(key, dirty);
            if let Some(owners) = self.conj.get_mut(key) {
                owners.remove(&id);
                if owners.is_empty() {
                    self.conj.remove(key);
                }
            }
        }
    }

    /// Remembers a conjunction's laid-out members before its first change in this update.
    fn note_conj(&self, key: &ConjKey, dirty: &mut Dirty) {
        if !dirty.conj_before.contains_key(key) {
            let nets = self.effective_nets(key).unwrap_or_default();
            dirty.conj_before.insert(key.clone(), nets);
        }
    }

    fn effective_nets(&self, key: &ConjKey) -> Option<Vec<IpNet>> {
        laid_members(&self.conj, key).map(<[IpNet]>::to_vec)
    }

    /// A policy whose rules did not change but whose ports did: its rule flows are reported
    /// for its port when it has one, else for none.
    fn reown_policy(&mut self, key: &PolicyKey) -> Vec<(UnitId, Option<UnitOut>)> {
        let Some(st) = self.policies.get_mut(key) else {
            return Vec::new();
        };
        let owner = st.owner_now();
        if owner == st.owner {
            return Vec::new();
        }
        st.owner = owner.clone();
        let mut outputs = Vec::new();
        for bucket in st.buckets.keys() {
            let unit = UnitId::Rules(key.clone(), *bucket);
            let Some(mut out) = self.units.get(&unit).cloned() else {
                continue;
            };
            let owner: Option<std::sync::Arc<str>> = owner.as_deref().map(Into::into);
            for (_, entry) in &mut out.flows {
                entry.port.clone_from(&owner);
            }
            outputs.push((unit, Some(out)));
        }
        outputs
    }

    /// One policy's rule flows and conjunction clauses, from the current model: only the
    /// buckets whose rules changed (an any-protocol bucket reaches every bucket of its
    /// direction and family), or all of them when the policy's id, statefulness or reported
    /// port changed.
    fn recompute_policy(
        &mut self,
        model: &Model,
        opts: &OpenFlowOptions,
        numbers: &RuleNumbers,
        key: &PolicyKey,
        dirty: &mut Dirty,
    ) -> Result<Vec<(UnitId, Option<UnitOut>)>> {
        let Some(st) = self.policies.get(key) else {
            return Ok(Vec::new());
        };
        self.policy_recomputes += 1;
        // Every port of a policy has its groups: the first one gives its rules (looking up
        // all of them cost a string search per port).
        let Some(first) = st.ports.first().and_then(|id| find_port(model, id)) else {
            return Ok(Vec::new());
        };
        let lists = &mut self.member_lists;
        let mut rules = resolve_rules_with(model, first, |id, rule| lists.of(model, id, rule));
        // Origins by stable number, not position: a rule removed renames no other.
        if !numbers.is_identity() {
            // Rules come group by group: one look-up per group.
            let mut last: Option<(usize, Option<&[usize]>)> = None;
            for at in 0..rules.len() {
                let stable = match last {
                    Some((from, stable)) if rules[from].origin.group == rules[at].origin.group => {
                        stable
                    }
                    _ => {
                        let stable = numbers.of(&rules[at].origin.group);
                        last = Some((at, stable));
                        stable
                    }
                };
                if let Some(stable) = stable {
                    let origin = &mut rules[at].origin;
                    origin.index = stable[origin.index];
                }
            }
        }
        let (id, stateful, owner) = (st.id, model.port_is_stateful(first), st.owner_now());
        let full = st.lowered != Some((id, stateful)) || st.owner != owner;
        let mut inputs: BTreeMap<Bucket, Vec<PolicyRule>> = BTreeMap::new();
        for rule in rules {
            inputs.entry(bucket_of(&rule)).or_default().push(rule);
        }
        let survivors = survivors_of(opts, &st.buckets, &st.survivors, &inputs);
        let both = (&st.survivors, &survivors);
        let changed = changed_buckets(&st.buckets, &inputs, both, full);
        let reused: Vec<Option<(Renaming, Optimised, Vec<PolicyRule>)>> = changed
            .iter()
            .map(|b| reused_algebra(&st.buckets, &inputs, both, *b))
            .collect();
        if stateful != st.stateful {
            for p in &st.ports {
                self.mark_port(p, dirty);
            }
        }
        let mut outputs = Vec::with_capacity(changed.len());
        let mut fresh = Vec::with_capacity(changed.len());
        let mut reruns = 0;
        for (bucket, reused) in changed.into_iter().zip(reused) {
            let unit = UnitId::Rules(key.clone(), bucket);
            let Some(own) = inputs.get(&bucket) else {
                dirty.units.push(UnitId::Clauses(key.clone(), bucket));
                outputs.push((unit, None));
                fresh.push((bucket, Fresh::Gone));
                continue;
            };
            let old = self
                .policies
                .get(key)
                .and_then(|st| st.buckets.get(&bucket));
            let (optimised, kept) = match reused {
                Some((renaming, optimised, kept)) => {
                    // Nothing renamed: the same rules and result (kept below as they are).
                    let renamed = (!full && !renaming.is_identity())
                        .then(|| self.renamed_bucket(key, bucket, &renaming, own, &optimised))
                        .flatten();
                    if let Some((rules, clauses, mut state)) = renamed {
                        state.kept = kept;
                        outputs.push((unit, Some(rules)));
                        outputs.push((UnitId::Clauses(key.clone(), bucket), clauses));
                        fresh.push((bucket, Fresh::New(state)));
                        continue;
                    }
                    (optimised, kept)
                }
                None => {
                    let any = (
                        any_input(&self.policies[key].survivors, bucket),
                        any_input(&survivors, bucket),
                    );
                    match added_algebra(opts, old, own, any) {
                        Some(done) => done,
                        None => {
                            reruns += 1;
                            bucket_algebra(opts, own, any.1)
                        }
                    }
                }
            };
            // The same rules lowered with the same id, statefulness and port: the same flows
            // and clauses; only the fates (kept with the algebra's result) may have moved.
            if !full && old.is_some_and(|old| old.optimised.rules == optimised.rules) {
                fresh.push((
                    bucket,
                    Fresh::Same {
                        rules: own.clone(),
                        optimised,
                        kept,
                    },
                ));
                continue;
            }
            dirty.units.push(UnitId::Clauses(key.clone(), bucket));
            let mut builder = Builder::new(opts, &self.port_policy);
            builder.lower_optimised(id, stateful, owner.as_deref(), &optimised)?;
            let state = BucketState {
                rules: own.clone(),
                optimised,
                kept,
                clauses: std::mem::take(&mut builder.conj_clauses),
                members: std::mem::take(&mut builder.conj_members),
            };
            outputs.push((unit, Some(UnitOut::of(builder)?)));
            fresh.push((bucket, Fresh::New(state)));
        }
        self.bucket_recomputes += reruns;
        if let Some(st) = self.policies.get_mut(key) {
            st.survivors = survivors;
        }
        self.store_buckets(opts, key, stateful, fresh, dirty);
        Ok(outputs)
    }

    /// A bucket whose rules were only renumbered, lowered with the same policy id,
    /// statefulness and port: lowering reads origins only as labels and through their order
    /// (which the renaming keeps), so its flows and clauses are the previous ones with their
    /// rules renamed, and no flow is rendered again. `None` when a previous output is missing.
    fn renamed_bucket(
        &self,
        key: &PolicyKey,
        bucket: Bucket,
        renaming: &Renaming,
        own: &[PolicyRule],
        optimised: &Optimised,
    ) -> Option<(UnitOut, Option<UnitOut>, BucketState)> {
        let old = self.policies.get(key)?.buckets.get(&bucket)?;
        let rules = renamed_out(
            self.units.get(&UnitId::Rules(key.clone(), bucket))?,
            renaming,
        )?;
        let clauses = match self.units.get(&UnitId::Clauses(key.clone(), bucket)) {
            Some(out) => Some(renamed_out(out, renaming)?),
            None if old.clauses.is_empty() => None,
            None => return None,
        };
        let state = BucketState {
            rules: own.to_vec(),
            optimised: optimised.clone(),
            clauses: old
                .clauses
                .iter()
                .map(|c| c.renamed(|r| renaming.apply(r)))
                .collect::<Option<Vec<_>>>()?,
            members: old.members.clone(),
            kept: Vec::new(),
        };
        Some((rules, clauses, state))
    }

    /// Puts a policy's recomputed buckets in its state, and its conjunction members (the
    /// union of its buckets') in the registry when they changed.
    fn store_buckets(
        &mut self,
        opts: &OpenFlowOptions,
        key: &PolicyKey,
        stateful: bool,
        fresh: Vec<(Bucket, Fresh)>,
        dirty: &mut Dirty,
    ) {
        let Some(st) = self.policies.get_mut(key) else {
            return;
        };
        for (bucket, state) in fresh {
            match state {
                Fresh::New(state) => {
                    st.buckets.insert(bucket, state);
                }
                Fresh::Gone => {
                    st.buckets.remove(&bucket);
                }
                Fresh::Same {
                    rules,
                    optimised,
                    kept,
                } => {
                    if let Some(state) = st.buckets.get_mut(&bucket) {
                        state.rules = rules;
                        state.optimised = optimised;
                        state.kept = kept;
                    }
                }
            }
        }
        let rules = || st.buckets.values().flat_map(|b| &b.rules);
        st.remotes = rules()
            .filter_map(|r| match &r.remote {
                RemoteSet::Members { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        st.member_only = member_only_remotes(rules(), opts.conjunctions);
        st.owner = st.owner_now();
        let id = st.id;
        st.lowered = Some((id, stateful));
        st.stateful = stateful;
        // Compared by reference first: most changes leave the member lists as they were, and
        // copying them is what would cost.
        let listed: BTreeMap<&ConjKey, &Vec<IpNet>> =
            st.buckets.values().flat_map(|b| &b.members).collect();
        if listed.len() == st.members.len()
            && listed
                .iter()
                .zip(&st.members)
                .all(|((k, nets), (old_k, old_nets))| *k == old_k && *nets == old_nets)
        {
            return;
        }
        let members: BTreeMap<ConjKey, Vec<IpNet>> = listed
            .into_iter()
            .map(|(k, nets)| (k.clone(), nets.clone()))
            .collect();
        // Only the conjunctions whose members came, went or moved are touched: the others'
        // dimension-1 flows stay as they are.
        let old = std::mem::replace(&mut st.members, members.clone());
        let gone: Vec<ConjKey> = old
            .keys()
            .filter(|k| !members.contains_key(*k))
            .cloned()
            .collect();
        self.unregister(id, gone.iter(), dirty);
        for (conj, nets) in members {
            if old.get(&conj) != Some(&nets) {
                self.note_conj(&conj, dirty);
                self.conj.entry(conj).or_default().insert(id, nets);
            }
        }
    }

    /// Conjunction ids from the current key set, and the conjunction and member units the
    /// touched conjunctions reach.
    fn settle_conjunctions(&mut self, dirty: &mut Dirty) {
        let before = std::mem::take(&mut dirty.conj_before);
        let keys_changed = before
            .keys()
            .any(|k| self.conj.contains_key(k) != self.conj_id_of.contains_key(k));
        if keys_changed && !self.conj_ids_in_place(&before) {
            let ids = conj_ids(self.conj.keys());
            self.conj_hashes = ConjHashes::default();
            for name in ids.keys() {
                self.conj_hashes.add(id_of(name));
            }
            let moved: BTreeSet<String> = ids
                .iter()
                .filter(|(name, id)| self.conj_ids.get(*name).is_some_and(|old| old != *id))
                .map(|(name, _)| name.clone())
                .collect();
            self.conj_id_of = self
                .conj
                .keys()
                .filter_map(|k| Some((k.clone(), *ids.get(&k.name())?)))
                .collect();
            self.conj_ids = ids;
            if !moved.is_empty() {
                self.shift_conjunctions(&moved, &before, dirty);
            }
        }
        for (key, old) in before {
            // Borrowed, not copied (thousands of addresses per conjunction).
            let new = laid_members(&self.conj, &key).unwrap_or_default();
            dirty.units.push(UnitId::Conj(key.clone()));
            // A key whose id moved without its members moving was shifted above.
            if old == new {
                continue;
            }
            for net in &old {
                self.members.remove(Dim1::of(&key, *net), &key);
            }
            if let Some(&id) = self.conj_id_of.get(&key) {
                let shared = Arc::new(key.clone());
                for net in new {
                    self.members.insert(Dim1::of(&key, *net), &shared, id);
                }
            }
        }
    }

    /// The conjunction ids after keys came or went among `before`, without going through
    /// every conjunction: when no two conjunctions prefer one id, before and after, each has
    /// its preferred id (the probing of [`conj_ids`] never runs), so only the keys that came
    /// or went change and no id moves. `false` (nothing changed) otherwise.
    fn conj_ids_in_place(&mut self, before: &BTreeMap<ConjKey, Vec<IpNet>>) -> bool {
        if self.conj_hashes.collisions > 0 {
            return false;
        }
        let mut hashes = self.conj_hashes.clone();
        let mut changes: Vec<(&ConjKey, String, u32, bool)> = Vec::new();
        for key in before.keys() {
            let (now, was) = (
                self.conj.contains_key(key),
                self.conj_id_of.contains_key(key),
            );
            if now == was {
                continue;
            }
            let name = key.name();
            let hash = id_of(&name);
            if now {
                hashes.add(hash);
            } else {
                hashes.remove(hash);
            }
            changes.push((key, name, hash, now));
        }
        if hashes.collisions > 0 {
            return false;
        }
        self.conj_hashes = hashes;
        for (key, name, hash, now) in changes {
            if now {
                self.conj_id_of.insert(key.clone(), hash);
                self.conj_ids.insert(name, hash);
            } else {
                self.conj_id_of.remove(key);
                self.conj_ids.remove(&name);
            }
        }
        true
    }

    /// Conjunctions whose id moved (the ids are the new ones): their flows, their members'
    /// flows and the clauses of every policy using them.
    fn shift_conjunctions(
        &mut self,
        moved: &BTreeSet<String>,
        before: &BTreeMap<ConjKey, Vec<IpNet>>,
        dirty: &mut Dirty,
    ) {
        self.id_shifts += moved.len();
        for (key, owners) in &self.conj {
            if !moved.contains(&key.name()) {
                continue;
            }
            dirty.units.push(UnitId::Conj(key.clone()));
            let id = self.conj_id_of.get(key).copied().unwrap_or_default();
            // The members laid out before the change: a key whose members also moved is
            // laid out again from its new ones after this.
            let laid = before.get(key).or_else(|| owners.values().next());
            for net in laid.into_iter().flatten() {
                self.members.set_id(Dim1::of(key, *net), key, id);
            }
        }
        for (pkey, st) in &self.policies {
            for (bucket, state) in &st.buckets {
                if state.members.keys().any(|k| moved.contains(&k.name())) {
                    dirty.units.push(UnitId::Clauses(pkey.clone(), *bucket));
                }
            }
        }
    }

    fn kinds_now(&self) -> Kinds {
        let mut kinds = Kinds::default();
        for st in self.policies.values() {
            if st.stateful {
                kinds.stateful = true;
            } else {
                kinds.stateless = true;
            }
        }
        kinds
    }

    /// A unit's flows from the current model and indexes (`None`: the unit is gone).
    fn compute(
        &self,
        model: &Model,
        opts: &OpenFlowOptions,
        unit: &UnitId,
    ) -> Result<Option<UnitOut>> {
        let mut b = Builder::new(opts, &self.port_policy);
        match unit {
            UnitId::Shared => b.shared_flows(self.kinds.unwrap_or_default()),
            UnitId::Dispatch(tag, mac) => {
                let targets = targets(self.dispatch.get(&(*tag, *mac)));
                if targets.is_empty() {
                    return Ok(None);
                }
                b.dispatch_unit(*tag, *mac, &targets)?;
            }
            UnitId::Flood(tag) => {
                let Some(steps) = self.flood.get(tag).filter(|s| !s.is_empty()) else {
                    return Ok(None);
                };
                if !opts.foreign_ports {
                    let size = steps.values().map(|s| s.len() + 1).sum();
                    let mut replicate = String::with_capacity(size);
                    for (i, step) in steps.values().enumerate() {
                        if i > 0 {
                            replicate.push(',');
                        }
                        replicate.push_str(step);
                    }
                    b.flood_flows(*tag, &replicate)?;
                }
            }
            UnitId::Port(id) => match find_port(model, id) {
                Some(port) => b.port_flows(model, port)?,
                None => return Ok(None),
            },
            UnitId::Rules(..) => return Ok(None),
            UnitId::Clauses(key, bucket) => match self
                .policies
                .get(key)
                .and_then(|st| st.buckets.get(bucket))
                .filter(|state| !state.clauses.is_empty())
            {
                Some(state) => b.dim2_flows(&state.clauses, |k| {
                    self.conj_id_of.get(k).copied().unwrap_or_default()
                })?,
                None => return Ok(None),
            },
            UnitId::Conj(key) => match self.conj_id_of.get(key) {
                Some(id) if self.conj.contains_key(key) => b.conj_id_flow(key, *id)?,
                _ => return Ok(None),
            },
        }
        Ok(Some(UnitOut::of(b)?))
    }

    /// (OpenFlow port, id) of the ports named, in port order.
    /// Replaces the units' outputs in the flow table and returns what changed on the bridge.
    fn commit(
        &mut self,
        outputs: Vec<(UnitId, Option<UnitOut>)>,
        record: bool,
        cookie: u64,
        shown: (Shown<'_>, Shown<'_>),
    ) -> Result<FlowDiff> {
        // The visible entry of every flow a unit changes, before its first change: recorded
        // in order of change and sorted once (the first record of a key is its old state).
        let mut before: Vec<(Key, Option<Entry>)> = Vec::new();
        for (unit, new) in outputs {
            let old = self.units.remove(&unit);
            if old == new {
                if let Some(out) = old {
                    self.units.insert(unit, out);
                }
                continue;
            }
            if matches!((&old, &new), (Some(o), Some(n)) if same_flows(o, n)) {
                if let Some(out) = new {
                    self.relabel(&unit, &out);
                    self.units.insert(unit, out);
                }
                continue;
            }
            let old_flows = old.as_ref().map_or(&[][..], |o| &o.flows[..]);
            let new_flows = new.as_ref().map_or(&[][..], |n| &n.flows[..]);
            self.replace_flows(&unit, old_flows, new_flows, &mut before, record)?;
            if let Some(out) = new {
                self.units.insert(unit, out);
            }
        }
        before.sort_by(|a, b| a.0.cmp(&b.0));
        before.dedup_by(|later, first| later.0 == first.0);
        let mut d = FlowDiff {
            cookie,
            old_cookie: cookie,
            ..FlowDiff::default()
        };
        // Rules are shown by position: removed flows as they were before the change.
        let (mut was, mut now) = (ShownArcs::new(shown.0), ShownArcs::new(shown.1));
        for (key, old) in &before {
            let new = self.table.get(key).map(|owners| &owners[0].1);
            match (old, new) {
                (None, Some(e)) => d.added.push(flow(key, e, &mut now)),
                (Some(e), None) => d.removed.push(flow(key, e, &mut was)),
                (Some(a), Some(b)) if a.actions != b.actions => {
                    d.modified.push(flow(key, b, &mut now))
                }
                _ => {}
            }
        }
        Ok(d)
    }

    /// Puts a unit's new flows in the table in place of its old ones (both sorted by key),
    /// touching only the flows that came, went or changed: a unit that changes one flow of
    /// many (a bucket, a member address) costs that flow.
    fn replace_flows(
        &mut self,
        unit: &UnitId,
        old: &[(Key, Entry)],
        new: &[(Key, Entry)],
        before: &mut Vec<(Key, Option<Entry>)>,
        record: bool,
    ) -> Result<()> {
        let (mut i, mut j) = (0, 0);
        loop {
            let order = match (old.get(i), new.get(j)) {
                (None, None) => return Ok(()),
                (Some((ko, _)), Some((kn, _))) => ko.cmp(kn),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
            };
            match order {
                Ordering::Equal => {
                    let ((key, was), (_, now)) = (&old[i], &new[j]);
                    if was != now && !self.replace_entry(key, unit, now, before, record) {
                        self.remember(before, key, record);
                        self.disown(key, unit);
                        self.own(key, unit, now)?;
                    }
                    i += 1;
                    j += 1;
                }
                Ordering::Less => {
                    self.remember(before, &old[i].0, record);
                    self.disown(&old[i].0, unit);
                    i += 1;
                }
                Ordering::Greater => {
                    let (key, now) = &new[j];
                    self.remember(before, key, record);
                    self.own(key, unit, now)?;
                    j += 1;
                }
            }
        }
    }

    /// Replaces `unit`'s entry for a flow it owns alone, with one look-up of the flow: what
    /// most changed flows are (a member address's conjunctions, a rule's actions). `false`
    /// when the flow has other owners (they must agree on the actions: the caller checks).
    fn replace_entry(
        &mut self,
        key: &Key,
        unit: &UnitId,
        now: &Entry,
        before: &mut Vec<(Key, Option<Entry>)>,
        record: bool,
    ) -> bool {
        let Some(owners) = self.table.get_mut(key) else {
            return false;
        };
        match owners.as_mut_slice() {
            [(owner, entry)] if owner == unit => {
                if record {
                    before.push((key.clone(), Some(entry.clone())));
                }
                entry.clone_from(now);
                true
            }
            _ => false,
        }
    }

    /// Takes `unit` out of the owners of a flow (the flow goes with its last owner).
    fn disown(&mut self, key: &Key, unit: &UnitId) {
        if let Some(owners) = self.table.get_mut(key) {
            owners.retain(|(u, _)| u != unit);
            if owners.is_empty() {
                self.table.remove(key);
            }
        }
    }

    /// Puts a unit's new entries for the flows it already owns, with the same actions (only
    /// the rule or port they are reported for moved): nothing changes on the bridge.
    fn relabel(&mut self, unit: &UnitId, new: &UnitOut) {
        for (key, entry) in &new.flows {
            let Some(owners) = self.table.get_mut(key) else {
                continue;
            };
            if let Ok(at) = owners.binary_search_by(|(u, _)| u.cmp(unit)) {
                owners[at].1.clone_from(entry);
            }
        }
    }

    fn remember(&self, before: &mut Vec<(Key, Option<Entry>)>, key: &Key, record: bool) {
        if record {
            let visible = self.table.get(key).map(|owners| owners[0].1.clone());
            before.push((key.clone(), visible));
        }
    }

    /// Adds `unit` to the owners of a flow; two owners must agree on the actions.
    fn own(&mut self, key: &Key, unit: &UnitId, entry: &Entry) -> Result<()> {
        let owners = self.table.entry(key.clone()).or_default();
        if let Some((_, first)) = owners.first() {
            if first.actions != entry.actions {
                return Err(Error::Internal(format!(
                    "conflicting actions for one flow (table={},priority={},{}): {:?} and {:?}",
                    key.table, key.priority.0, key.matches, first.actions, entry.actions
                )));
            }
        }
        let at = owners.partition_point(|(u, _)| u < unit);
        owners.insert(at, (unit.clone(), entry.clone()));
        Ok(())
    }

    /// The flows and statistics, as a fresh compile gives them.
    pub(super) fn compiled(
        &self,
        model: &Model,
        opts: &OpenFlowOptions,
        numbers: &RuleNumbers,
    ) -> Compiled {
        let shown = Shown::now(numbers);
        let mut stats = Stats {
            ports: model.ports.len(),
            filtered_ports: model.ports.iter().filter(|p| p.is_filtered()).count(),
            groups: model.groups.len(),
            rules: model.groups.values().map(|g| g.rules.len()).sum(),
            flows: self.table.len() + self.members.len(),
            policies: self.policies.len(),
            conjunctions: self.conj_ids.len(),
            ..Stats::default()
        };
        stats.duplicates = self.units.values().map(|u| u.duplicates).sum::<usize>()
            + self.table.values().map(|o| o.len() - 1).sum::<usize>();
        for st in self.policies.values() {
            // Rendered here, not per change: the fates lowering would record.
            for (rule, fate) in st.buckets.values().flat_map(|b| &b.optimised.fates) {
                let fate = match fate {
                    Fate::SubsumedBy(by) => Fate::SubsumedBy(shown.rule(by)),
                    Fate::MergedInto(into) => Fate::MergedInto(shown.rule(into)),
                    Fate::NoMembers => Fate::NoMembers,
                };
                stats
                    .rule_fates
                    .entry(shown.rule(rule).to_string())
                    .or_default()
                    .insert(fate.to_string());
            }
        }
        let members = self.members.entries(opts);
        let all = || merged_entries(&self.table, &members);
        OriginCounts::of(all()).into_stats_shown(&mut stats, |r| {
            if shown.is_identity() {
                std::borrow::Cow::Borrowed(r)
            } else {
                std::borrow::Cow::Owned(shown.rule(r))
            }
        });
        let mut arcs = ShownArcs::new(shown);
        let flows = all().map(|(key, e)| flow(key, e, &mut arcs)).collect();
        Compiled {
            flows,
            stats,
            warnings: model.warnings.clone(),
            cookie: opts.cookie,
        }
    }
}

/// The member addresses a conjunction's flows are laid out with: its first policy's.
fn laid_members<'c>(
    conj: &'c BTreeMap<ConjKey, BTreeMap<u32, Vec<IpNet>>>,
    key: &ConjKey,
) -> Option<&'c [IpNet]> {
    conj.get(key)
        .and_then(|owners| owners.values().next())
        .map(Vec::as_slice)
}

/// The table's flows (each its first owner's entry) and the member flows, merged in key
/// order.
fn merged_entries<'a>(
    table: &'a BTreeMap<Key, Vec<(UnitId, Entry)>>,
    members: &'a [(Key, Entry)],
) -> impl Iterator<Item = (&'a Key, &'a Entry)> {
    let mut units = table.iter().map(|(k, owners)| (k, &owners[0].1)).peekable();
    let mut members = members.iter().map(|(k, e)| (k, e)).peekable();
    std::iter::from_fn(move || match (units.peek(), members.peek()) {
        (Some(a), Some(b)) if b.0 < a.0 => members.next(),
        (Some(_), _) => units.next(),
        (None, _) => members.next(),
    })
}

/// Whether two outputs of a unit have the same flows with the same actions (they may differ
/// in the rule or port each flow is reported for, and in the duplicates count).
fn same_flows(old: &UnitOut, new: &UnitOut) -> bool {
    old.flows.len() == new.flows.len()
        && old
            .flows
            .iter()
            .zip(&new.flows)
            .all(|((ka, ea), (kb, eb))| ka == kb && ea.actions == eb.actions)
}

/// A flow of the table, its rule shown by position.
fn flow(key: &Key, e: &Entry, shown: &mut ShownArcs<'_>) -> Flow {
    Flow {
        table: key.table,
        priority: key.priority.0,
        matches: key.matches.clone(),
        actions: e.actions.clone(),
        port: e.port.clone(),
        rule: shown.rule(&e.rule),
    }
}

fn remove_port_from<K: Ord>(index: &mut BTreeMap<K, PortNumbers>, key: &K, port: &str) {
    if let Some(ports) = index.get_mut(key) {
        ports.remove(port);
        if ports.is_empty() {
            index.remove(key);
        }
    }
}

/// Marks the dispatch and flood units a port is in.
fn mark_shared_units(facts: &PortFacts, dirty: &mut Dirty) {
    for mac in &facts.macs {
        dirty.units.push(UnitId::Dispatch(facts.tag, *mac));
    }
    dirty.units.push(UnitId::Flood(facts.tag));
}

/// A dispatch or flood unit's ports as (port number, id), in id order.
fn targets(ports: Option<&PortNumbers>) -> Vec<(u32, &str)> {
    ports
        .into_iter()
        .flatten()
        .map(|(id, ofport)| (*ofport, id.as_str()))
        .collect()
}

/// The members of `group:<id>` / `address_group:<id>`.
fn remote_members<'m>(model: &'m Model, remote: &str) -> Option<&'m Members> {
    if let Some(id) = remote.strip_prefix("group:") {
        model.members.get(id)
    } else if let Some(id) = remote.strip_prefix("address_group:") {
        model.address_groups.get(id)
    } else {
        None
    }
}

/// Whether, after a change of `remote`'s members, the policy still lays out every rule on
/// it as a conjunction: then its rule flows, clauses and fates are unchanged (see
/// [`member_only_remotes`]), and only the member lists move.
fn members_stay_conjunctions(model: &Model, st: &PolicyState, remote: &str) -> bool {
    let Some(families) = st.member_only.get(remote) else {
        return false;
    };
    let Some(members) = remote_members(model, remote) else {
        return false;
    };
    // More than one member (a conjunction), no more than the containment checks allow and
    // none everywhere: containment against an everywhere prefix stays what it was.
    families.iter().all(|&family| {
        let n = members.of(family).take(MAX_CONTAINMENT_CHECKS + 1).count();
        (2..=MAX_CONTAINMENT_CHECKS).contains(&n)
            && members.of(family).all(|net| net.prefix_len() > 0)
    })
}

/// The remotes of a policy whose member addresses reach neither its rule algebra nor its
/// rule flows, as long as each family keeps more than one member: with conjunctions on,
/// every rule on the remote has several members and no source ports (so it becomes a
/// conjunction clause, which names the remote, not its addresses), and no rule it could
/// cover or be covered by has addresses of its own (same direction and family, overlapping
/// protocols — port ranges are not compared, as merging may widen them — and a remote other
/// than any or this one): containment is then decided without the addresses. Elsewhere the
/// addresses are embedded in flows, or decide subsumption, or make the rule match nothing:
/// a member change then recomputes the policy.
fn member_only_remotes<'r>(
    rules: impl Iterator<Item = &'r PolicyRule>,
    conjunctions: bool,
) -> BTreeMap<String, BTreeSet<EtherType>> {
    let mut out: BTreeMap<String, BTreeSet<EtherType>> = BTreeMap::new();
    if !conjunctions {
        return out;
    }
    let mut spoiled: BTreeSet<&str> = BTreeSet::new();
    let mut by_bucket: BTreeMap<(Direction, EtherType), Vec<&PolicyRule>> = BTreeMap::new();
    for rule in rules {
        by_bucket
            .entry((rule.direction, rule.ethertype))
            .or_default()
            .push(rule);
    }
    for ((_, family), bucket) in &by_bucket {
        for rule in bucket {
            let RemoteSet::Members { id, nets } = &rule.remote else {
                continue;
            };
            out.entry(id.clone()).or_default().insert(*family);
            let addressed_neighbour = bucket.iter().any(|other| {
                let elsewhere = match &other.remote {
                    RemoteSet::Any => false,
                    // Everywhere covers the members whatever they are (see the checks of
                    // `members_stay_conjunctions`).
                    RemoteSet::Nets(n) => !(n.len() == 1 && n[0].prefix_len() == 0),
                    RemoteSet::Members { id: o, .. } => o != id,
                };
                elsewhere
                    && (rule.protocol.is_none()
                        || other.protocol.is_none()
                        || rule.protocol == other.protocol)
            });
            if nets.len() < 2 || has_source_ports(rule) || addressed_neighbour {
                spoiled.insert(id);
            }
        }
    }
    out.retain(|r, _| !spoiled.contains(r.as_str()));
    out
}
