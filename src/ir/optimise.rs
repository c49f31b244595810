//! Rule algebra on a policy's rules before lowering: drop rules another rule already covers,
//! merge port ranges and prefixes whose union is exact. None of it changes a verdict: a
//! policy is a union of allows, and every step keeps the union.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use ipnet::IpNet;

use super::policy::{PolicyRule, RemoteSet};
use crate::model::{Direction, EtherType, PortRange, RuleRef, L4};

/// What happened to a rule that produces no flows of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fate {
    /// Another rule allows everything this one does.
    SubsumedBy(RuleRef),
    /// Folded into a wider rule together with others (adjacent port ranges or prefixes).
    MergedInto(RuleRef),
    /// A remote group or address group without members: it matches nothing.
    NoMembers,
}

impl std::fmt::Display for Fate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fate::SubsumedBy(r) => write!(f, "subsumed by {r}"),
            Fate::MergedInto(r) => write!(f, "merged into {r}"),
            Fate::NoMembers => f.write_str("remote group without members: matches nothing"),
        }
    }
}

/// A policy's rules after the algebra, and the fate of those that disappeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Optimised {
    /// The remaining rules, sorted by content.
    pub rules: Vec<PolicyRule>,
    /// Rules that produce no flows of their own, and why.
    pub fates: Vec<(RuleRef, Fate)>,
}

/// Above this many prefix comparisons, containment between two remotes is not checked (the
/// rule is kept): subsumption is an economy, not a requirement.
pub(crate) const MAX_CONTAINMENT_CHECKS: usize = 4096;

/// Runs the whole algebra: subsumption, port-range merging, prefix merging, subsumption again.
pub fn optimise(rules: Vec<PolicyRule>) -> Optimised {
    optimise_kept(rules).0
}

/// [`optimise`], with the rules that survive its first subsumption pass.
fn optimise_kept(rules: Vec<PolicyRule>) -> (Optimised, Vec<PolicyRule>) {
    let mut fates = Vec::new();
    let mut rules: Vec<PolicyRule> = rules
        .into_iter()
        .filter(|r| {
            let empty = r.remote.nets().is_some_and(|n| n.is_empty());
            if empty {
                fates.push((r.origin.clone(), Fate::NoMembers));
            }
            !empty
        })
        .collect();
    rules.sort();
    rules = remove_subsumed(rules, &mut fates);
    let kept = rules.clone();
    rules = merge_port_ranges(rules, &mut fates);
    rules = merge_prefixes(rules, &mut fates);
    rules = remove_subsumed(rules, &mut fates);
    fates.sort();
    fates.dedup();
    (Optimised { rules, fates }, kept)
}

/// Where the algebra decides: rules of different buckets never merge, and only an
/// any-protocol rule (protocol `None`) can cover a rule of another bucket of its direction and
/// family.
pub type Bucket = (Direction, EtherType, Option<u8>);

/// The bucket of a rule.
pub fn bucket_of(rule: &PolicyRule) -> Bucket {
    (rule.direction, rule.ethertype, rule.protocol)
}

/// The algebra of one bucket of a policy: `own` are the bucket's rules, `any_protocol` the
/// any-protocol rules of its direction and family (ignored when the bucket is itself the
/// any-protocol one). The result is the bucket's part of [`optimise`] of the whole policy
/// (its remaining rules and its own rules' fates), so a policy can be recomputed bucket by
/// bucket: no step compares or merges rules across buckets except an any-protocol rule
/// covering another, and those are passed in.
pub fn optimise_bucket(own: &[PolicyRule], any_protocol: &[PolicyRule]) -> Optimised {
    optimise_bucket_kept(own, any_protocol).0
}

/// [`optimise_bucket`], with the bucket's own rules that survive the first subsumption pass
/// (what [`add_covered_rule`] decides with).
pub fn optimise_bucket_kept(
    own: &[PolicyRule],
    any_protocol: &[PolicyRule],
) -> (Optimised, Vec<PolicyRule>) {
    let Some(protocol) = own.first().and_then(|r| r.protocol) else {
        return optimise_kept(own.to_vec());
    };
    if any_protocol.is_empty() {
        return optimise_kept(own.to_vec());
    }
    let origins: std::collections::BTreeSet<&RuleRef> = own.iter().map(|r| &r.origin).collect();
    let mut all = own.to_vec();
    all.extend_from_slice(any_protocol);
    let (mut out, mut kept) = optimise_kept(all);
    out.rules.retain(|r| r.protocol == Some(protocol));
    out.fates.retain(|(origin, _)| origins.contains(origin));
    kept.retain(|r| r.protocol == Some(protocol));
    (out, kept)
}

/// The algebra of a bucket after `new` was added to its rules, from its previous result
/// `old`, when a rule that survived the first subsumption pass (`kept`: the bucket's own,
/// `any_protocol`: the surviving any-protocol rules it takes) beats the new rule, or the new
/// rule has no members: then the new rule beats no survivor (beating is transitive), so the
/// survivors, the merges and the second pass are what they were, and only the new rule's fate
/// is added (subsumed by the first survivor that covers it). `None` otherwise: run the
/// algebra.
pub fn add_covered_rule(
    old: &Optimised,
    kept: &[PolicyRule],
    any_protocol: &[PolicyRule],
    new: &PolicyRule,
) -> Option<Optimised> {
    let fate = if new.remote.nets().is_some_and(|n| n.is_empty()) {
        Fate::NoMembers
    } else {
        let beats = |j: &PolicyRule| covers(j, new) && (!covers(new, j) || j.origin < new.origin);
        let survivors = || kept.iter().chain(any_protocol);
        if !survivors().any(beats) {
            return None;
        }
        // Every survivor that covers the new rule beats it (else the new rule would beat a
        // survivor, which the transitivity excludes), so the first one is its fate.
        let by = survivors().filter(|j| covers(j, new)).min()?;
        Fate::SubsumedBy(by.origin.clone())
    };
    let mut fates = old.fates.clone();
    let at = fates.partition_point(|f| *f < (new.origin.clone(), fate.clone()));
    fates.insert(at, (new.origin.clone(), fate));
    fates.dedup();
    Some(Optimised {
        rules: old.rules.clone(),
        fates,
    })
}

/// The any-protocol rules of one direction and family that survive the first subsumption
/// pass among themselves (rules without members left out, as [`optimise`] does): the only ones
/// that can decide anything in the protocol buckets of that direction and family. A protocol
/// rule beaten by a removed any-protocol rule is beaten by a surviving one (beating is
/// transitive), the merges and the second pass only see survivors, and a fate names a
/// survivor; so `optimise_bucket(own, &any_protocol_survivors(any))` equals
/// `optimise_bucket(own, any)`, and a change of the any-protocol rules that leaves the
/// survivors as they were reaches no protocol bucket (a member change of a remote that only a
/// covered any-protocol rule names, for one).
pub fn any_protocol_survivors(any_protocol: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut rules: Vec<PolicyRule> = any_protocol
        .iter()
        .filter(|r| !r.remote.nets().is_some_and(|n| n.is_empty()))
        .cloned()
        .collect();
    rules.sort();
    remove_subsumed(rules, &mut Vec::new())
}

/// A renaming of rule origins that keeps their order (old → new): what removing a rule does to
/// the later rules of its group (`web[4]` becomes `web[3]`). The algebra reads origins only
/// through their order (sorting, ties between equal rules, the smallest origin of a merge), so
/// its result on renamed rules is its old result renamed: a bucket whose rules were only
/// renumbered needs no new algebra run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renaming(BTreeMap<RuleRef, RuleRef>);

/// Whether two rules are one rule apart from their origin.
fn same_apart_from_origin(a: &PolicyRule, b: &PolicyRule) -> bool {
    a.direction == b.direction
        && a.ethertype == b.ethertype
        && a.protocol == b.protocol
        && a.l4 == b.l4
        && a.remote == b.remote
}

impl Renaming {
    /// The renaming taking `old` to `new`, pair by pair, when they are the same rules apart
    /// from their origins and the renaming keeps the origins' order (strictly); else `None`.
    pub fn between<'r>(
        old: impl IntoIterator<Item = &'r PolicyRule>,
        new: impl IntoIterator<Item = &'r PolicyRule>,
    ) -> Option<Renaming> {
        let mut map = BTreeMap::new();
        let (mut old, mut new) = (old.into_iter(), new.into_iter());
        loop {
            match (old.next(), new.next()) {
                (None, None) => break,
                (Some(a), Some(b)) if same_apart_from_origin(a, b) => {
                    if map.insert(a.origin.clone(), b.origin.clone()).is_some() {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        let ordered = map.values().zip(map.values().skip(1)).all(|(x, y)| x < y);
        ordered.then_some(Renaming(map))
    }

    /// The renaming of the (old, new) origin pairs, when each old origin has one new name
    /// and the order is kept (strictly); else `None`.
    fn of_origins<'r>(pairs: impl Iterator<Item = (&'r RuleRef, &'r RuleRef)>) -> Option<Renaming> {
        let mut map = BTreeMap::new();
        for (old, new) in pairs {
            if map
                .insert(old.clone(), new.clone())
                .is_some_and(|n| n != *new)
            {
                return None;
            }
        }
        let ordered = map.values().zip(map.values().skip(1)).all(|(x, y)| x < y);
        ordered.then_some(Renaming(map))
    }

    /// Whether every origin keeps its name.
    pub fn is_identity(&self) -> bool {
        self.0.iter().all(|(old, new)| old == new)
    }

    /// The new name of `origin` (`None` if the renaming does not know it).
    pub fn apply(&self, origin: &RuleRef) -> Option<RuleRef> {
        self.0.get(origin).cloned()
    }

    /// `rules` with their origins renamed (`None` if one is not in the renaming).
    pub fn rename_rules(&self, rules: &[PolicyRule]) -> Option<Vec<PolicyRule>> {
        rules
            .iter()
            .map(|r| {
                Some(PolicyRule {
                    origin: self.apply(&r.origin)?,
                    ..r.clone()
                })
            })
            .collect()
    }

    /// `optimised` with its origins renamed (`None` if it names an origin the renaming does
    /// not know).
    pub fn rename(&self, optimised: &Optimised) -> Option<Optimised> {
        let rules = self.rename_rules(&optimised.rules)?;
        let fates = optimised
            .fates
            .iter()
            .map(|(origin, fate)| {
                let fate = match fate {
                    Fate::SubsumedBy(by) => Fate::SubsumedBy(self.apply(by)?),
                    Fate::MergedInto(into) => Fate::MergedInto(self.apply(into)?),
                    Fate::NoMembers => Fate::NoMembers,
                };
                Some((self.apply(origin)?, fate))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Optimised { rules, fates })
    }
}

/// Whether a protocol bucket whose own rules were at most renumbered (`old_own` → `new_own`,
/// pair by pair) gets its previous result, renamed, when the surviving any-protocol rules of
/// its direction and family change from `old_any` to `new_any`; `kept` are the bucket's own
/// rules that survived its previous first pass. Returns the renaming (of its own rules and of
/// the survivors that reach it) when it does.
///
/// The algebra reads a survivor only through `covers`. A survivor that covers none of the
/// bucket's rules, nor any rule the merges make of its first-pass survivors, and has no
/// prefixes of its own (prefixes merge into one aggregate) beats nothing, merges with
/// nothing and names no fate; a rule it could beat among the survivors would reach the
/// bucket through it (covering is transitive). So the result depends only on the survivors
/// that reach the bucket, and on every `covers` between them, the bucket's rules, its merged
/// rules and the aggregate of the prefix survivors; when those agree pair by pair (a
/// remote group's members may differ, as long as every covering stays as it was) and the
/// origins keep their order, the run is the old one with its origins renamed: the removal
/// of a survivor that covers nothing here, or a member change of one whose coverings stay,
/// reruns no algebra.
pub fn renamed_under_survivors(
    old_own: &[PolicyRule],
    new_own: &[PolicyRule],
    kept: &[PolicyRule],
    old_any: &[PolicyRule],
    new_any: &[PolicyRule],
) -> Option<Renaming> {
    if old_own.len() != new_own.len()
        || !old_own
            .iter()
            .zip(new_own)
            .all(|(a, b)| same_apart_from_origin(a, b))
    {
        return None;
    }
    let merged = merge_prefixes(
        merge_port_ranges(kept.to_vec(), &mut Vec::new()),
        &mut Vec::new(),
    );
    let (a, b) = (
        reaching(old_any, old_own, &merged),
        reaching(new_any, old_own, &merged),
    );
    if a.len() != b.len() || !a.iter().zip(&b).all(|(s, t)| same_but_members(s, t)) {
        return None;
    }
    let aggregate = |rules: &[&PolicyRule]| -> Option<PolicyRule> {
        let nets: Vec<IpNet> = rules
            .iter()
            .filter_map(|r| match &r.remote {
                RemoteSet::Nets(n) => Some(n.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        let first = rules.first()?;
        (!nets.is_empty()).then(|| PolicyRule {
            remote: RemoteSet::Nets(IpNet::aggregate(&nets)),
            ..(*first).clone()
        })
    };
    let (agg_a, agg_b) = (aggregate(&a), aggregate(&b));
    // Each survivor and aggregate is asked about many rules: prepared once.
    let (pa, pb) = (prepared(&a), prepared(&b));
    let (ga, gb) = (
        agg_a.as_ref().map(|g| (g, Coverer::new(g))),
        agg_b.as_ref().map(|g| (g, Coverer::new(g))),
    );
    let agrees = |(s, cs): &(&PolicyRule, Coverer<'_>), (t, ct): &(&PolicyRule, Coverer<'_>)| {
        old_own
            .iter()
            .chain(&merged)
            .all(|x| cs.covers(x) == ct.covers(x))
            && pa.iter().zip(&pb).all(|((u, cu), (v, cv))| {
                cs.covers(u) == ct.covers(v) && cu.covers(s) == cv.covers(t)
            })
            && match (&ga, &gb) {
                (Some((ga, cga)), Some((gb, cgb))) => {
                    cs.covers(ga) == ct.covers(gb) && cga.covers(s) == cgb.covers(t)
                }
                (None, None) => true,
                _ => false,
            }
    };
    if !pa.iter().zip(&pb).all(|(s, t)| agrees(s, t)) {
        return None;
    }
    let origins = old_own
        .iter()
        .zip(new_own)
        .chain(a.iter().copied().zip(b.iter().copied()))
        .map(|(x, y)| (&x.origin, &y.origin));
    Renaming::of_origins(origins)
}

/// Rules each prepared to be asked about many others.
fn prepared<'r>(rules: &[&'r PolicyRule]) -> Vec<(&'r PolicyRule, Coverer<'r>)> {
    rules.iter().map(|r| (*r, Coverer::new(r))).collect()
}

/// The survivors that may reach a bucket: prefixes (they merge into one aggregate), and those
/// that cover one of its rules or merged rules.
fn reaching<'a>(
    any: &'a [PolicyRule],
    own: &[PolicyRule],
    merged: &[PolicyRule],
) -> Vec<&'a PolicyRule> {
    any.iter()
        .filter(|s| {
            matches!(s.remote, RemoteSet::Nets(_)) || {
                let s = Coverer::new(s);
                own.iter().chain(merged).any(|x| s.covers(x))
            }
        })
        .collect()
}

/// Whether two rules are one apart from their origin and, for a remote group or address
/// group, its members.
fn same_but_members(a: &PolicyRule, b: &PolicyRule) -> bool {
    let remotes = match (&a.remote, &b.remote) {
        (RemoteSet::Members { id: x, .. }, RemoteSet::Members { id: y, .. }) => x == y,
        (x, y) => x == y,
    };
    remotes
        && a.direction == b.direction
        && a.ethertype == b.ethertype
        && a.protocol == b.protocol
        && a.l4 == b.l4
}

fn range_contains(a: PortRange, b: PortRange) -> bool {
    a.min <= b.min && b.max <= a.max
}

fn l4_covers(a: &L4, b: &L4) -> bool {
    match (a, b) {
        (L4::Any, _) => true,
        (L4::Ports { dst: ad, src: asrc }, L4::Ports { dst: bd, src: bsrc }) => {
            range_contains(*ad, *bd) && range_contains(*asrc, *bsrc)
        }
        (
            L4::Icmp {
                icmp_type: at,
                code: None,
            },
            L4::Icmp { icmp_type: bt, .. },
        ) => at == bt,
        (
            L4::Icmp {
                icmp_type: at,
                code: Some(ac),
            },
            L4::Icmp {
                icmp_type: bt,
                code: Some(bc),
            },
        ) => at == bt && ac == bc,
        _ => false,
    }
}

/// A rule asked whether it covers others, its prefixes' widths and ranges worked out on the
/// first question that needs them and kept for the next: a survivor with thousands of
/// members is checked against every rule of a bucket.
struct Coverer<'r> {
    rule: &'r PolicyRule,
    nets: Prefixes<'r>,
}

impl<'r> Coverer<'r> {
    fn new(rule: &'r PolicyRule) -> Self {
        Coverer {
            rule,
            nets: Prefixes::new(rule.remote.nets().unwrap_or_default()),
        }
    }

    /// Whether its rule allows every packet `b` allows (see [`covers`]).
    fn covers(&self, b: &PolicyRule) -> bool {
        let a = self.rule;
        a.direction == b.direction
            && a.ethertype == b.ethertype
            && (a.protocol.is_none() || a.protocol == b.protocol)
            && (a.protocol.is_none() || l4_covers(&a.l4, &b.l4))
            && self.remote_covers(&b.remote)
    }

    fn remote_covers(&self, b: &RemoteSet) -> bool {
        match (&self.rule.remote, b) {
            (RemoteSet::Any, _) => true,
            (_, RemoteSet::Any) => false,
            (RemoteSet::Members { id: ia, .. }, RemoteSet::Members { id: ib, .. }) if ia == ib => {
                true
            }
            _ => {
                let bn = b.nets().unwrap_or_default();
                self.nets.nets.len().saturating_mul(bn.len()) <= MAX_CONTAINMENT_CHECKS
                    && self.nets.cover(bn)
            }
        }
    }
}

/// Prefixes asked whether they cover others: whether each of those lies inside one of them.
struct Prefixes<'n> {
    nets: &'n [IpNet],
    /// The widest prefix length of each family (IPv4, IPv6; `u8::MAX`: none).
    widest: OnceCell<[u8; 2]>,
    /// Each prefix's (family, first, last) range.
    ranges: OnceCell<Vec<(bool, u128, u128)>>,
}

impl<'n> Prefixes<'n> {
    fn new(nets: &'n [IpNet]) -> Self {
        Prefixes {
            nets,
            widest: OnceCell::new(),
            ranges: OnceCell::new(),
        }
    }

    /// Whether every prefix of `bn` lies inside one of these. A prefix contains another
    /// exactly when they are of one family and its address range holds the other's (what
    /// `IpNet::contains` checks, masking both again on every call): the ranges are worked
    /// out once, so the up to [`MAX_CONTAINMENT_CHECKS`] pairs cost two integer compares
    /// each.
    fn cover(&self, bn: &[IpNet]) -> bool {
        // A prefix lies only in prefixes of its family at least as wide: first, without the
        // ranges, whether each of `bn` is no wider than the widest of its family here
        // (member lists are mostly hosts, and the prefixes they are checked against wider).
        let widest = self.widest.get_or_init(|| {
            let mut widest = [u8::MAX; 2];
            for m in self.nets {
                let family = usize::from(m.max_prefix_len() == 128);
                widest[family] = widest[family].min(m.prefix_len());
            }
            widest
        });
        if bn
            .iter()
            .any(|n| n.prefix_len() < widest[usize::from(n.max_prefix_len() == 128)])
        {
            return false;
        }
        let ranges = self
            .ranges
            .get_or_init(|| self.nets.iter().map(range_of).collect());
        bn.iter().all(|n| {
            let (v6, start, end) = range_of(n);
            ranges
                .iter()
                .any(|&(f, s, e)| f == v6 && s <= start && end <= e)
        })
    }
}

#[cfg(test)]
fn nets_cover(an: &[IpNet], bn: &[IpNet]) -> bool {
    Prefixes::new(an).cover(bn)
}

/// A prefix's family (IPv6?) and first and last address.
fn range_of(net: &IpNet) -> (bool, u128, u128) {
    match net {
        IpNet::V4(n) => (
            false,
            u32::from(n.network()).into(),
            u32::from(n.broadcast()).into(),
        ),
        IpNet::V6(n) => (true, u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// Whether `a` allows every packet `b` allows.
pub fn covers(a: &PolicyRule, b: &PolicyRule) -> bool {
    Coverer::new(a).covers(b)
}

/// Removes every rule covered by another; of equal rules the one with the smallest origin
/// stays. The decision for each rule does not depend on the order of removal (covering is
/// transitive), so the result is a function of the set of rules.
fn remove_subsumed(rules: Vec<PolicyRule>, fates: &mut Vec<(RuleRef, Fate)>) -> Vec<PolicyRule> {
    // Every rule is asked about the others of its buckets: each prepared once.
    let coverers: Vec<Coverer<'_>> = rules.iter().map(Coverer::new).collect();
    let covers = |j: usize, i: usize| coverers[j].covers(&rules[i]);
    let beats =
        |j: usize, i: usize| covers(j, i) && (!covers(i, j) || rules[j].origin < rules[i].origin);
    // Only a rule of the same direction and family, with no protocol or the same one, can
    // cover another: compare within those buckets instead of every pair.
    let mut buckets: BTreeMap<(Direction, EtherType, Option<u8>), Vec<usize>> = BTreeMap::new();
    for (n, r) in rules.iter().enumerate() {
        buckets
            .entry((r.direction, r.ethertype, r.protocol))
            .or_default()
            .push(n);
    }
    // The rules that may cover `i`, as two ascending index lists: its any-protocol bucket and,
    // for a protocol rule, its own.
    let candidates = |i: &PolicyRule| -> [&[usize]; 2] {
        let list = |p: Option<u8>| {
            buckets
                .get(&(i.direction, i.ethertype, p))
                .map_or(&[][..], Vec::as_slice)
        };
        let own = if i.protocol.is_some() {
            list(i.protocol)
        } else {
            &[]
        };
        [list(None), own]
    };
    let keep: Vec<bool> = rules
        .iter()
        .enumerate()
        .map(|(n, i)| {
            !candidates(i)
                .iter()
                .any(|list| list.iter().any(|&m| m != n && beats(m, n)))
        })
        .collect();
    for (n, (rule, kept)) in rules.iter().zip(&keep).enumerate() {
        if !kept {
            // The first survivor (in rule order) that covers it.
            let by = candidates(rule)
                .iter()
                .filter_map(|list| list.iter().copied().find(|&m| keep[m] && covers(m, n)))
                .min();
            if let Some(m) = by {
                fates.push((
                    rule.origin.clone(),
                    Fate::SubsumedBy(rules[m].origin.clone()),
                ));
            }
        }
    }
    drop(coverers);
    rules
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(r, _)| r)
        .collect()
}

/// The origin of rules merged into one: the smallest; the others are recorded as merged into
/// it.
fn merged_origin(mut members: Vec<RuleRef>, fates: &mut Vec<(RuleRef, Fate)>) -> RuleRef {
    members.sort();
    let origin = members[0].clone();
    for other in &members[1..] {
        fates.push((other.clone(), Fate::MergedInto(origin.clone())));
    }
    origin
}

/// Rules that differ only in their destination port range become one rule per maximal run
/// of overlapping or adjacent ranges.
fn merge_port_ranges(rules: Vec<PolicyRule>, fates: &mut Vec<(RuleRef, Fate)>) -> Vec<PolicyRule> {
    let mut out = Vec::with_capacity(rules.len());
    let mut buckets: BTreeMap<_, Vec<(PortRange, RuleRef)>> = BTreeMap::new();
    for r in rules {
        match r.l4 {
            L4::Ports { dst, src } => buckets
                .entry((r.direction, r.ethertype, r.protocol, r.remote.clone(), src))
                .or_default()
                .push((dst, r.origin)),
            _ => out.push(r),
        }
    }
    for ((direction, ethertype, protocol, remote, src), mut ranges) in buckets {
        ranges.sort();
        let mut runs: Vec<(PortRange, Vec<RuleRef>)> = Vec::new();
        for (range, origin) in ranges {
            match runs.last_mut() {
                Some((run, members)) if u32::from(range.min) <= u32::from(run.max) + 1 => {
                    run.max = run.max.max(range.max);
                    members.push(origin);
                }
                _ => runs.push((range, vec![origin])),
            }
        }
        for (dst, members) in runs {
            let origin = merged_origin(members, fates);
            let l4 = if dst.is_any() && src.is_any() {
                L4::Any
            } else {
                L4::Ports { dst, src }
            };
            out.push(PolicyRule {
                origin,
                direction,
                ethertype,
                protocol,
                l4,
                remote: remote.clone(),
            });
        }
    }
    out.sort();
    out
}

/// Rules that differ only in their remote prefixes become one rule whose prefixes are the
/// aggregate (exact union) of theirs.
fn merge_prefixes(rules: Vec<PolicyRule>, fates: &mut Vec<(RuleRef, Fate)>) -> Vec<PolicyRule> {
    let mut out = Vec::with_capacity(rules.len());
    let mut buckets: BTreeMap<_, Vec<(Vec<IpNet>, RuleRef)>> = BTreeMap::new();
    for r in rules {
        match r.remote {
            RemoteSet::Nets(nets) => buckets
                .entry((r.direction, r.ethertype, r.protocol, r.l4))
                .or_default()
                .push((nets, r.origin)),
            _ => out.push(r),
        }
    }
    for ((direction, ethertype, protocol, l4), entries) in buckets {
        let origins: Vec<RuleRef> = entries.iter().map(|(_, o)| o.clone()).collect();
        let all: Vec<IpNet> = entries.into_iter().flat_map(|(n, _)| n).collect();
        let nets = IpNet::aggregate(&all);
        let origin = merged_origin(origins, fates);
        out.push(PolicyRule {
            origin,
            direction,
            ethertype,
            protocol,
            l4,
            remote: RemoteSet::Nets(nets),
        });
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, EtherType};

    fn rule(
        group: &str,
        index: usize,
        protocol: Option<u8>,
        l4: L4,
        remote: RemoteSet,
    ) -> PolicyRule {
        PolicyRule {
            origin: RuleRef {
                group: group.into(),
                index,
            },
            direction: Direction::Ingress,
            ethertype: EtherType::V4,
            protocol,
            l4,
            remote,
        }
    }

    fn ports(min: u16, max: u16) -> L4 {
        L4::Ports {
            dst: PortRange { min, max },
            src: PortRange::ANY,
        }
    }

    fn nets(list: &[&str]) -> RemoteSet {
        RemoteSet::Nets(list.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn nets_cover_agrees_with_ipnet_contains() {
        let pool: Vec<IpNet> = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3/32",
            "10.1.2.0/24",
            "10.2.0.0/15",
            "11.0.0.0/8",
            "0.0.0.0/0",
            "10.1.2.3/8",
            "::/0",
            "fd00::/8",
            "fd00::1/128",
            "fd00:1::/32",
            "fe80::/10",
            "::ffff:10.1.2.3/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        // Every pair of small subsets of the pool, by bit masks.
        for a in 0u32..(1 << 7) {
            for b in 0u32..(1 << 7) {
                let pick = |mask: u32, shift: usize| -> Vec<IpNet> {
                    (0..7)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| pool[(i + shift) % pool.len()])
                        .collect()
                };
                for shift in [0, 7] {
                    let (an, bn) = (pick(a, shift), pick(b, 7 - shift));
                    let expected = bn.iter().all(|n| an.iter().any(|m| m.contains(n)));
                    assert_eq!(nets_cover(&an, &bn), expected, "{an:?} over {bn:?}");
                }
            }
        }
    }

    #[test]
    fn any_protocol_from_a_wider_prefix_subsumes() {
        let broad = rule("a", 0, None, L4::Any, nets(&["10.0.0.0/8"]));
        let narrow = rule("b", 3, Some(6), ports(22, 22), nets(&["10.1.0.0/16"]));
        let out = optimise(vec![narrow, broad.clone()]);
        assert_eq!(out.rules, vec![broad]);
        assert_eq!(
            out.fates,
            vec![(
                RuleRef {
                    group: "b".into(),
                    index: 3
                },
                Fate::SubsumedBy(RuleRef {
                    group: "a".into(),
                    index: 0
                })
            )]
        );
    }

    #[test]
    fn duplicates_across_groups_keep_the_first() {
        let a = rule("a", 1, Some(6), ports(80, 80), RemoteSet::Any);
        let b = rule("b", 0, Some(6), ports(80, 80), RemoteSet::Any);
        let out = optimise(vec![b, a.clone()]);
        assert_eq!(out.rules, vec![a]);
    }

    #[test]
    fn adjacent_ranges_merge_exactly() {
        let out = optimise(vec![
            rule("a", 0, Some(6), ports(80, 80), RemoteSet::Any),
            rule("a", 1, Some(6), ports(81, 90), RemoteSet::Any),
            rule("a", 2, Some(6), ports(100, 100), RemoteSet::Any),
        ]);
        let l4s: Vec<L4> = out.rules.iter().map(|r| r.l4).collect();
        assert_eq!(l4s, vec![ports(80, 90), ports(100, 100)]);
        assert_eq!(out.fates.len(), 1);
    }

    #[test]
    fn prefixes_aggregate() {
        let out = optimise(vec![
            rule("a", 0, Some(17), L4::Any, nets(&["10.0.0.0/25"])),
            rule("a", 1, Some(17), L4::Any, nets(&["10.0.0.128/25"])),
        ]);
        assert_eq!(out.rules.len(), 1);
        assert_eq!(out.rules[0].remote, nets(&["10.0.0.0/24"]));
    }

    #[test]
    fn different_remotes_or_protocols_stay() {
        let out = optimise(vec![
            rule("a", 0, Some(6), ports(22, 22), nets(&["10.0.0.0/8"])),
            rule("a", 1, Some(17), ports(22, 22), nets(&["10.0.0.0/8"])),
            rule(
                "a",
                2,
                Some(6),
                ports(22, 22),
                RemoteSet::Members {
                    id: "group:x".into(),
                    nets: vec!["192.0.2.1/32".parse().unwrap()].into(),
                },
            ),
        ]);
        assert_eq!(out.rules.len(), 3);
    }

    #[test]
    fn icmp_type_covers_its_codes() {
        let t = rule(
            "a",
            0,
            Some(1),
            L4::Icmp {
                icmp_type: 3,
                code: None,
            },
            RemoteSet::Any,
        );
        let tc = rule(
            "a",
            1,
            Some(1),
            L4::Icmp {
                icmp_type: 3,
                code: Some(4),
            },
            RemoteSet::Any,
        );
        assert!(covers(&t, &tc) && !covers(&tc, &t));
    }

    #[test]
    fn buckets_together_give_the_whole_policy() {
        let mut egress_any = rule("a", 0, None, L4::Any, nets(&["10.0.0.0/8"]));
        egress_any.direction = Direction::Egress;
        let rules = vec![
            rule("a", 1, None, L4::Any, nets(&["10.1.0.0/16"])),
            rule("a", 2, Some(6), ports(22, 22), nets(&["10.1.2.0/24"])),
            rule("a", 3, Some(6), ports(23, 30), nets(&["192.0.2.0/24"])),
            rule("b", 0, Some(6), ports(20, 22), nets(&["192.0.2.0/24"])),
            rule("b", 1, Some(17), ports(53, 53), nets(&["10.0.0.0/8"])),
            rule("b", 2, Some(17), ports(53, 53), nets(&["172.16.0.0/12"])),
            egress_any,
        ];
        let mut buckets: BTreeMap<Bucket, Vec<PolicyRule>> = BTreeMap::new();
        for r in &rules {
            buckets.entry(bucket_of(r)).or_default().push(r.clone());
        }
        let mut together = Optimised::default();
        for ((direction, ethertype, _), own) in &buckets {
            let any = buckets
                .get(&(*direction, *ethertype, None))
                .cloned()
                .unwrap_or_default();
            let part = optimise_bucket(own, &any);
            together.rules.extend(part.rules);
            together.fates.extend(part.fates);
        }
        together.rules.sort();
        together.fates.sort();
        let whole = optimise(rules);
        assert_eq!(together, whole);
        assert!(whole.fates.len() >= 3, "the example exercises the algebra");
    }

    #[test]
    fn renumbered_rules_give_the_renamed_result() {
        let rules = vec![
            rule("a", 2, None, L4::Any, nets(&["10.1.0.0/16"])),
            rule("a", 3, Some(6), ports(22, 22), nets(&["10.1.2.0/24"])),
            rule("a", 4, Some(6), ports(23, 30), nets(&["10.1.2.0/24"])),
            rule("a", 5, Some(6), ports(22, 22), nets(&["10.1.2.0/24"])),
            rule("b", 0, Some(6), ports(20, 22), nets(&["192.0.2.0/24"])),
            rule("b", 1, Some(6), ports(20, 22), nets(&["192.0.3.0/24"])),
        ];
        // Rule a[1] removed: the later rules of "a" move down by one, "b" stays.
        let renumbered: Vec<PolicyRule> = rules
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r.origin.group == "a" {
                    r.origin.index -= 1;
                }
                r
            })
            .collect();
        let renaming = Renaming::between(&rules, &renumbered).unwrap();
        let before = optimise(rules.clone());
        assert!(before.fates.len() >= 3, "the example exercises the algebra");
        assert_eq!(renaming.rename(&before), Some(optimise(renumbered.clone())));
        // A renaming that swaps the order of two origins is refused, and so are other rules.
        let mut swapped = renumbered.clone();
        swapped[1].origin.index = 9;
        assert_eq!(Renaming::between(&rules, &swapped), None);
        assert_eq!(Renaming::between(&rules, &renumbered[1..]), None);
        let mut other = renumbered;
        other[0].protocol = Some(17);
        assert_eq!(Renaming::between(&rules, &other), None);
    }

    /// A random rule of one direction and family: few protocols, ranges and prefixes, so
    /// that rules cover, tie and merge; remotes with and without members.
    fn arbitrary_rule() -> impl proptest::strategy::Strategy<Value = PolicyRule> {
        use proptest::prelude::*;
        let pool = [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.1.2.3/32",
            "10.1.3.0/24",
        ];
        let remote = prop_oneof![
            Just(RemoteSet::Any),
            proptest::sample::select(pool.to_vec())
                .prop_map(|n| RemoteSet::Nets(vec![n.parse().unwrap()])),
            // One remote has one member list (covering by remote id relies on it).
            (0..3usize).prop_map(|id| RemoteSet::Members {
                id: format!("group:{id}"),
                nets: [&["10.1.2.0/24", "10.1.2.3/32"][..], &["10.1.3.0/24"], &[]][id]
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .collect(),
            }),
        ];
        let l4 = prop_oneof![
            Just(L4::Any),
            (20..26u16, 0..4u16).prop_map(|(min, len)| ports(min, min + len)),
        ];
        (
            prop_oneof![Just(None), Just(Some(6u8)), Just(Some(17u8))],
            l4,
            remote,
            0..2u8,
            0..40usize,
        )
            .prop_map(|(protocol, l4, remote, group, index)| {
                let l4 = if protocol.is_some() { l4 } else { L4::Any };
                rule(["a", "b"][usize::from(group)], index, protocol, l4, remote)
            })
    }

    proptest::proptest! {
        /// A protocol bucket's algebra with only the surviving any-protocol rules equals its
        /// algebra with all of them, and the buckets together equal the whole policy's.
        #[test]
        fn survivors_decide_like_every_any_protocol_rule(
            rules in proptest::collection::vec(arbitrary_rule(), 0..14)
        ) {
            let mut rules = rules;
            rules.sort_by(|a, b| a.origin.cmp(&b.origin));
            rules.dedup_by(|a, b| a.origin == b.origin);
            let mut buckets: BTreeMap<Bucket, Vec<PolicyRule>> = BTreeMap::new();
            for r in &rules {
                buckets.entry(bucket_of(r)).or_default().push(r.clone());
            }
            let any = buckets
                .get(&(Direction::Ingress, EtherType::V4, None))
                .cloned()
                .unwrap_or_default();
            let survivors = any_protocol_survivors(&any);
            let mut together = Optimised::default();
            for own in buckets.values() {
                let part = optimise_bucket(own, &survivors);
                let any_input = if own[0].protocol.is_some() {
                    proptest::prop_assert_eq!(&part, &optimise_bucket(own, &any));
                    &survivors[..]
                } else {
                    &[]
                };
                // The last rule added to the others: decided from their result when covered.
                let (last, others) = own.split_last().unwrap();
                let (before, kept) = optimise_bucket_kept(others, any_input);
                if let Some(after) = add_covered_rule(&before, &kept, any_input, last) {
                    proptest::prop_assert_eq!(&after, &part);
                }
                together.rules.extend(part.rules);
                together.fates.extend(part.fates);
            }
            together.rules.sort();
            together.fates.sort();
            proptest::prop_assert_eq!(together, optimise(rules));
        }
    }

    /// The rules of one protocol bucket and its direction's any-protocol survivors, before
    /// and after a change of `rules`: the old run renamed where [`renamed_under_survivors`]
    /// says so must be the new run.
    fn check_survivor_change(
        old: &[PolicyRule],
        new: &[PolicyRule],
        protocol: u8,
    ) -> Result<bool, proptest::test_runner::TestCaseError> {
        let part = |rules: &[PolicyRule], p: Option<u8>| -> Vec<PolicyRule> {
            rules.iter().filter(|r| r.protocol == p).cloned().collect()
        };
        let (own_old, own_new) = (part(old, Some(protocol)), part(new, Some(protocol)));
        if own_old.is_empty() || own_new.is_empty() {
            return Ok(false);
        }
        let surv_old = any_protocol_survivors(&part(old, None));
        let surv_new = any_protocol_survivors(&part(new, None));
        let (run_old, kept_old) = optimise_bucket_kept(&own_old, &surv_old);
        let (run_new, kept_new) = optimise_bucket_kept(&own_new, &surv_new);
        let Some(renaming) =
            renamed_under_survivors(&own_old, &own_new, &kept_old, &surv_old, &surv_new)
        else {
            return Ok(false);
        };
        proptest::prop_assert_eq!(renaming.rename(&run_old), Some(run_new));
        proptest::prop_assert_eq!(renaming.rename_rules(&kept_old), Some(kept_new));
        Ok(true)
    }

    proptest::proptest! {
        /// A survivor removed (the later rules of its group renumbered) or a remote's members
        /// changed: where the change reaches none of a protocol bucket's coverings, its old
        /// run renamed is its new run.
        #[test]
        fn survivor_changes_that_reach_no_covering_keep_the_run(
            rules in proptest::collection::vec(arbitrary_rule(), 1..14),
            drop in proptest::sample::select((0..14usize).collect::<Vec<_>>()),
            members in proptest::sample::select(vec!["10.1.2.0/24", "10.1.0.0/16", "10.2.0.1/32"]),
        ) {
            let mut rules = rules;
            rules.sort_by(|a, b| a.origin.cmp(&b.origin));
            rules.dedup_by(|a, b| a.origin == b.origin);
            // One any-protocol rule removed, its group's later rules renumbered.
            let any: Vec<usize> = (0..rules.len()).filter(|&i| rules[i].protocol.is_none()).collect();
            if !any.is_empty() {
                let gone = rules[any[drop % any.len()]].origin.clone();
                let removed: Vec<PolicyRule> = rules
                    .iter()
                    .filter(|r| r.origin != gone)
                    .map(|r| {
                        let mut r = r.clone();
                        if r.origin.group == gone.group && r.origin.index > gone.index {
                            r.origin.index -= 1;
                        }
                        r
                    })
                    .collect();
                for protocol in [6, 17] {
                    check_survivor_change(&rules, &removed, protocol)?;
                }
            }
            // Remote group 0's members changed in every rule naming it.
            let relisted: Vec<PolicyRule> = rules
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if let RemoteSet::Members { id, nets } = &mut r.remote {
                        if id == "group:0" {
                            *nets = vec!["10.1.2.3/32".parse().unwrap(), members.parse().unwrap()].into();
                        }
                    }
                    r
                })
                .collect();
            for protocol in [6, 17] {
                check_survivor_change(&rules, &relisted, protocol)?;
            }
        }
    }

    #[test]
    fn a_survivor_that_covers_nothing_here_reruns_nothing() {
        let own = vec![rule("a", 3, Some(6), ports(22, 22), nets(&["10.1.2.0/24"]))];
        let far = rule(
            "a",
            1,
            None,
            L4::Any,
            RemoteSet::Members {
                id: "group:far".into(),
                nets: vec!["10.1.3.0/24".parse().unwrap()].into(),
            },
        );
        let wide = rule("b", 0, None, L4::Any, nets(&["10.0.0.0/8"]));
        let (run, kept) = optimise_bucket_kept(&own, std::slice::from_ref(&far));
        // Removing the far rule renumbers a[3] to a[2]: the run is renamed, not rerun.
        let mut renumbered = own.clone();
        renumbered[0].origin.index = 2;
        let renaming =
            renamed_under_survivors(&own, &renumbered, &kept, std::slice::from_ref(&far), &[])
                .expect("the far rule reaches nothing here");
        assert_eq!(
            renaming.rename(&run),
            Some(optimise_bucket_kept(&renumbered, &[]).0)
        );
        // A wider prefix covers the bucket's rule: a change there reruns the algebra.
        let (run, kept) = optimise_bucket_kept(&own, std::slice::from_ref(&wide));
        assert!(!run.fates.is_empty());
        assert_eq!(
            renamed_under_survivors(&own, &own, &kept, &[wide], &[far]),
            None
        );
    }

    #[test]
    fn empty_remote_groups_are_reported() {
        let out = optimise(vec![rule(
            "a",
            0,
            None,
            L4::Any,
            RemoteSet::Members {
                id: "group:g".into(),
                nets: Vec::new().into(),
            },
        )]);
        assert!(out.rules.is_empty());
        assert_eq!(out.fates[0].1, Fate::NoMembers);
    }
}
