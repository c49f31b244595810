//! The flows of the pipeline: shared flows, per-network dispatch by MAC, and per-port
//! anti-spoofing, implicit allowances and rules.

use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use ipnet::IpNet;

use super::render::{self, Match, Value};
use super::{Compiled, Flow, OpenFlowOptions, Stats};
use crate::error::{Error, Result};
use crate::ir::ids::assign_ids;
use crate::ir::implicit::{self, Binding, Fate, Rank, Traffic};
use crate::ir::optimise::{optimise, Optimised};
use crate::ir::policy::{Policy, PolicyRule, RemoteSet};
use crate::ir::{disjoint_ranges, lower_policy_rule, policy_rule_len, port_masks, RuleMatch};
use crate::model::{Direction, EtherType, Mac, Model, Port, PortRange, RuleRef, L4};

/// Priorities inside the base and rule tables. Rules are pure allows with one action per
/// conntrack state, so every rule flow of a table can share one priority: overlapping rules
/// then agree on the verdict, and OVS never has to break a tie between different actions.
mod prio {
    pub const CLASSIFY_EGRESS: u16 = 100;
    pub const CLASSIFY_INGRESS: u16 = 90;
    /// Broadcast and multicast from outside, for a network with local ports.
    pub const CLASSIFY_FLOOD: u16 = 85;
    /// Unknown unicast from outside, for a network with local ports.
    pub const CLASSIFY_UNKNOWN: u16 = 80;
    pub const DISPATCH: u16 = 100;
    /// Broadcast and multicast from a local VM (with `filter_local_flood`).
    pub const DISPATCH_FLOOD: u16 = 90;
    pub const UNFILTERED: u16 = 100;
    /// DHCP servers and router advertisements from a VM.
    pub const FORBIDDEN: u16 = 100;
    /// ARP, DHCP client, neighbour discovery with good sources.
    pub const IMPLICIT: u16 = 95;
    /// Neighbour discovery that failed its source checks.
    pub const ND_SPOOFED: u16 = 90;
    /// IP with a permitted source, on to conntrack or the rules (or the shared stage).
    pub const IP_SOURCE: u16 = 65;
    /// Anything else from one of the port's MACs, to the unaddressed stage.
    pub const UNADDRESSED: u16 = 60;
    /// Ingress IP, on to conntrack or the rules.
    pub const IP_INGRESS: u16 = 50;
    pub const CT_INVALID: u16 = 100;
    pub const CT_MARKED: u16 = 90;
    pub const CT_REPLY: u16 = 80;
    pub const RULE: u16 = 70;
    /// Conjunctions, one priority per specificity class (60 + class, below plain rules):
    /// a packet that completes no conjunction falls through to lower priorities.
    pub const CONJUNCTION: u16 = 60;
    /// Established connections no rule allows any more (their rule was removed).
    pub const CT_ORPHAN: u16 = 40;
    pub const DEFAULT: u16 = 0;
}

/// Broadcast and multicast destinations (the group bit of the first octet).
const GROUP_ADDRESSED: &str = "01:00:00:00:00:00/01:00:00:00:00:00";

/// Neighbour advertisement: checked by its target in the binding stage.
const ND_NA: u8 = 136;

/// The priority of an allowance in a protocol stage (egress, or a binding's copy of it).
fn rank_priority(rank: Rank) -> u16 {
    match rank {
        Rank::Forbidden => prio::FORBIDDEN,
        Rank::Implicit => prio::IMPLICIT,
        Rank::Spoofed => prio::ND_SPOOFED,
        Rank::Rules => prio::IP_SOURCE,
    }
}

/// The priority of an ingress allowance.
fn ingress_priority(rank: Rank) -> u16 {
    match rank {
        Rank::Rules => prio::IP_INGRESS,
        other => rank_priority(other),
    }
}

fn src_field(family: EtherType) -> &'static str {
    match family {
        EtherType::V4 => "nw_src",
        EtherType::V6 => "ipv6_src",
    }
}

/// A binding's match value: a MAC or an address.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Mac(Mac),
    Net(IpNet),
}

impl render::Value for Bound {
    fn put(&self, out: &mut String) {
        match self {
            Bound::Mac(mac) => mac.put(out),
            Bound::Net(net) => render::Net(net).put(out),
        }
    }
}

/// The fields of an IP source binding.
fn source_fields(mac: Mac, net: &IpNet) -> [(&'static str, Bound); 2] {
    [
        ("dl_src", Bound::Mac(mac)),
        (src_field(EtherType::of_net(net)), Bound::Net(*net)),
    ]
}

/// The fields of an unaddressed allowance (IP from the unspecified address), after the MAC
/// binding's `dl_src` when it is the binding's own copy.
fn unaddressed(mac: Option<Mac>, traffic: Traffic) -> Vec<(&'static str, Bound)> {
    let mut fields: Vec<(&'static str, Bound)> =
        mac.map(|m| ("dl_src", Bound::Mac(m))).into_iter().collect();
    if let Some(family) = traffic.family() {
        let unspecified = IpNet::from(implicit::unspecified(family));
        fields.push((src_field(family), Bound::Net(unspecified)));
    }
    fields
}

/// `base`, the traffic's keyword, the binding's fields, then the traffic's own fields.
fn traffic_match(base: Match, traffic: Traffic, binding: &[(&str, Bound)]) -> Match {
    let (keyword, own): (&str, Vec<(&str, u16)>) = match traffic {
        Traffic::Ip(EtherType::V4) => ("ip", vec![]),
        Traffic::Ip(EtherType::V6) => ("ipv6", vec![]),
        Traffic::Udp(EtherType::V4, src, dst) => ("udp", vec![("udp_src", src), ("udp_dst", dst)]),
        Traffic::Udp(EtherType::V6, src, dst) => ("udp6", vec![("udp_src", src), ("udp_dst", dst)]),
        Traffic::Icmp6(ty) => ("icmp6", vec![("icmpv6_type", u16::from(ty))]),
        Traffic::Arp => ("arp", vec![]),
        Traffic::Rarp => ("rarp", vec![]),
    };
    let mut m = base.kw(keyword);
    for (field, value) in binding {
        m = m.f(field, value);
    }
    for (field, value) in own {
        m = m.f(field, value);
    }
    m
}

/// Which conntrack state a rule flow serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Copy {
    /// First packet of a connection: commit it.
    New,
    /// Later packets in the original direction.
    Established,
    /// A stateless port: no conntrack.
    Stateless,
}

impl Copy {
    fn ct_state(self) -> Option<&'static str> {
        match self {
            Copy::New => Some("+new-est+trk"),
            Copy::Established => Some("+est-rel-rpl+trk"),
            Copy::Stateless => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Copy::New => "new",
            Copy::Established => "est",
            Copy::Stateless => "stateless",
        }
    }
}

/// Identifies one conjunction: a remote group seen from one table, family, conntrack copy and
/// specificity class. Its id is a pure function of this key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ConjKey {
    remote: String,
    direction: Direction,
    ethertype: EtherType,
    copy: Copy,
    class: u16,
}

impl ConjKey {
    /// The remote (`group:<id>` / `address_group:<id>`) whose members it matches.
    pub(super) fn remote(&self) -> &str {
        &self.remote
    }

    /// The family of its members.
    pub(super) fn ethertype(&self) -> EtherType {
        self.ethertype
    }

    pub(super) fn name(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.remote,
            self.direction.as_str(),
            self.ethertype.as_str(),
            self.copy.name(),
            self.class
        )
    }
}

/// The second dimension of a conjunction for one rule of one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Clause {
    policy: u32,
    key: ConjKey,
    protocol: Option<u8>,
    l4: L4,
    origin: Arc<RuleRef>,
}

impl Clause {
    /// The clause with its rule renamed (`None` when `rename` does not know it): a session
    /// renames a bucket's clauses when only its rules' positions moved.
    pub(super) fn renamed(&self, rename: impl Fn(&RuleRef) -> Option<RuleRef>) -> Option<Clause> {
        Some(Clause {
            origin: Arc::new(rename(&self.origin)?),
            ..self.clone()
        })
    }
}

/// The conjunction actions of one flow (conjunction id, dimension) and the rule it is
/// counted for.
type ConjActions = (BTreeSet<(u32, u8)>, Option<Arc<RuleRef>>);

/// Dimension-2 clauses that must be made disjoint: one policy, table, copy, family, class and
/// protocol.
type ClauseGroup = (u32, Direction, Copy, EtherType, u16, Option<u8>);

/// One member address's dimension-1 flow: a table (direction), family, class and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Dim1 {
    pub(super) direction: Direction,
    pub(super) ethertype: EtherType,
    pub(super) class: u16,
    pub(super) net: IpNet,
}

/// Hashed through its order key, two writes (the derived hash made one per field: a
/// dimension-1 member unit is hashed several times on its way through a change).
impl std::hash::Hash for Dim1 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (head, addr, len) = self.order_key();
        state.write_u128(addr);
        state.write_u64((u64::from(head) << 8) | u64::from(len));
    }
}

impl Dim1 {
    /// Integers that order as `Dim1` does (direction, family, class, then the prefix: family,
    /// address, length), compared without `IpNet`'s comparison: a large bridge sorts
    /// 10^5 (member address, conjunction) pairs.
    pub(super) fn order_key(&self) -> (u32, u128, u8) {
        let (v6, addr, len) = match self.net {
            IpNet::V4(n) => (0, u128::from(u32::from(n.addr())), n.prefix_len()),
            IpNet::V6(n) => (1, u128::from(n.addr()), n.prefix_len()),
        };
        let head = (u32::from(self.direction as u8) << 18)
            | (u32::from(self.ethertype as u8) << 17)
            | (u32::from(self.class) << 1)
            | v6;
        (head, addr, len)
    }

    pub(super) fn of(key: &ConjKey, net: IpNet) -> Dim1 {
        Dim1 {
            direction: key.direction,
            ethertype: key.ethertype,
            class: key.class,
            net,
        }
    }
}

/// Where one member address's dimension-1 flow sits. The full compile and a session's
/// member layer both render it with this (and its actions with [`dim1_actions`]).
pub(super) fn dim1_key(opts: &OpenFlowOptions, d: &Dim1) -> Key {
    let field = match (d.direction, d.ethertype) {
        (Direction::Ingress, EtherType::V4) => "nw_src",
        (Direction::Egress, EtherType::V4) => "nw_dst",
        (Direction::Ingress, EtherType::V6) => "ipv6_src",
        (Direction::Egress, EtherType::V6) => "ipv6_dst",
    };
    let m = Match::new()
        .kw(family_keyword(d.ethertype))
        .f(field, render::Net(&d.net));
    Key {
        table: rule_table(opts, d.direction),
        priority: Reverse(prio::CONJUNCTION + d.class),
        matches: m.into_string(),
    }
}

/// A member address's dimension-1 actions: dimension 1 of each conjunction id (sorted).
pub(super) fn dim1_actions(out: &mut String, ids: &[u32]) {
    conjunction_actions(out, ids.iter().map(|id| (*id, 1)));
}

/// The table of one direction's rules.
fn rule_table(opts: &OpenFlowOptions, direction: Direction) -> u8 {
    match direction {
        Direction::Egress => opts.tables.egress_rules,
        Direction::Ingress => opts.tables.ingress_rules,
    }
}

/// Conjunction ids, by key name: a function of the set of keys only.
pub(super) fn conj_ids<'k>(keys: impl Iterator<Item = &'k ConjKey>) -> BTreeMap<String, u32> {
    let names: BTreeSet<String> = keys.map(ConjKey::name).collect();
    assign_ids(&names)
}

/// Appends `conjunction(id,dim/2)` for each (id, dim), comma-separated.
fn conjunction_actions(out: &mut String, conjs: impl Iterator<Item = (u32, u8)>) {
    for (i, (id, dim)) in conjs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("conjunction(");
        id.put(out);
        out.push(',');
        dim.put(out);
        out.push_str("/2)");
    }
}

/// Appends `set_field:<value>-><register>`.
fn set_field(out: &mut String, value: impl Value, register: &str) {
    out.push_str("set_field:");
    value.put(out);
    out.push_str("->");
    out.push_str(register);
}

/// One port's step of a frame run through several ports' ingress pipelines (a dispatch or a
/// flood flow): load the port's number and, for a filtered port, its policy id, then
/// resubmit to the ingress base table. The full compile and the session both render steps
/// with this; the session keeps each port's step of its VLAN's flood flows, so a port change
/// renders its own step, not the VLAN's (~1,700 ports at p10000).
pub(super) fn ingress_step(
    out: &mut String,
    opts: &OpenFlowOptions,
    ofport: u32,
    policy: Option<u32>,
) {
    set_field(out, ofport, &register_name(opts.port_register));
    if let Some(id) = policy {
        out.push(',');
        set_field(out, id, &register_name(opts.policy_register));
    }
    out.push_str(",resubmit(,");
    opts.tables.ingress_base.put(out);
    out.push(')');
}

fn family_keyword(ethertype: EtherType) -> &'static str {
    match ethertype {
        EtherType::V4 => "ip",
        EtherType::V6 => "ipv6",
    }
}

/// A clause group's matches: its destination port ranges made disjoint, then its other L4
/// matches, each with its conjunction id and rule.
fn clause_pieces(
    group: &[&Clause],
    base: RuleMatch,
    id_of: &impl Fn(&ConjKey) -> u32,
) -> Vec<(RuleMatch, u32, Arc<RuleRef>)> {
    let mut pieces: Vec<(RuleMatch, u32, Arc<RuleRef>)> = Vec::new();
    let ranges: Vec<(PortRange, (u32, Arc<RuleRef>))> = group
        .iter()
        .filter_map(|c| match c.l4 {
            L4::Ports { dst, .. } => Some((dst, (id_of(&c.key), c.origin.clone()))),
            _ => None,
        })
        .collect();
    for (range, tags) in disjoint_ranges(&ranges) {
        for mask in port_masks(range) {
            for (id, origin) in &tags {
                pieces.push((
                    RuleMatch {
                        dst_port: Some(mask),
                        ..base
                    },
                    *id,
                    Arc::clone(origin),
                ));
            }
        }
    }
    for c in group.iter().filter(|c| !matches!(c.l4, L4::Ports { .. })) {
        let icmp = match c.l4 {
            L4::Icmp { icmp_type, code } => Some((icmp_type, code)),
            _ => None,
        };
        pieces.push((
            RuleMatch { icmp, ..base },
            id_of(&c.key),
            Arc::clone(&c.origin),
        ));
    }
    pieces
}

/// Neutron's specificity classes: any protocol, protocol only (or ICMP without type), ICMP
/// type without code, the rest. Conjunctions of different classes overlap, so each class has
/// its own priority; within a class, a policy's clauses are made disjoint.
fn specificity(rule: &PolicyRule) -> u16 {
    match (rule.protocol, rule.l4) {
        (None, _) => 0,
        (Some(_), L4::Any) => 1,
        (Some(_), L4::Icmp { code: None, .. }) => 2,
        _ => 3,
    }
}

pub(super) fn has_source_ports(rule: &PolicyRule) -> bool {
    matches!(rule.l4, L4::Ports { src, .. } if !src.is_any())
}

/// Where a flow sits: what Open vSwitch identifies it by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) table: u8,
    pub(super) priority: Reverse<u16>,
    pub(super) matches: String,
}

/// What a flow does, and where it comes from. Actions, ports and rules are shared by many
/// flows (a handful of distinct actions per bridge, a port's ten flows, a rule's lowered
/// matches): each is allocated once and counted by reference, not copied per flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) actions: Arc<str>,
    pub(super) port: Option<Arc<str>>,
    pub(super) rule: Option<Arc<RuleRef>>,
}

/// The kinds of filtered port present: the shared flows depend on nothing else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Kinds {
    pub(super) stateful: bool,
    pub(super) stateless: bool,
}

impl Kinds {
    pub(super) fn of(model: &Model) -> Kinds {
        let mut kinds = Kinds::default();
        for p in model.ports.iter().filter(|p| p.is_filtered()) {
            if model.port_is_stateful(p) {
                kinds.stateful = true;
            } else {
                kinds.stateless = true;
            }
        }
        kinds
    }

    fn has(self, stateful: bool) -> bool {
        if stateful {
            self.stateful
        } else {
            self.stateless
        }
    }
}

/// The (VLAN, MAC) targets of the dispatch flows: each with its ports in port order.
pub(super) fn dispatch_targets(model: &Model) -> BTreeMap<(u16, Mac), Vec<(u32, &str)>> {
    let mut targets: BTreeMap<(u16, Mac), Vec<(u32, &str)>> = BTreeMap::new();
    for port in &model.ports {
        let (Some(ofport), Some(tag)) = (port.ofport, port.local_vlan) else {
            continue;
        };
        for mac in port.macs() {
            targets
                .entry((tag, mac))
                .or_default()
                .push((ofport, port.id.as_str()));
        }
    }
    targets
}

/// The ports of each local VLAN, by OpenFlow port number.
pub(super) fn flood_targets(model: &Model) -> BTreeMap<u16, Vec<(u32, &str)>> {
    let mut by_tag: BTreeMap<u16, BTreeMap<u32, &str>> = BTreeMap::new();
    for port in &model.ports {
        if let (Some(ofport), Some(tag)) = (port.ofport, port.local_vlan) {
            by_tag.entry(tag).or_default().insert(ofport, &port.id);
        }
    }
    by_tag
        .into_iter()
        .map(|(tag, ports)| (tag, ports.into_iter().collect()))
        .collect()
}

impl Entry {
    fn origin(&self) -> super::conflict::Origin<'_> {
        super::conflict::Origin {
            port: self.port.as_deref(),
            rule: self.rule.as_deref(),
        }
    }
}

/// Hashes a shared value's address: the flows of one port or rule share one allocation, so
/// counting them by address compares no names per flow.
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        // Fibonacci hashing: the high bits, which the table uses, depend on every bit.
        self.0 = (n as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(32);
    }
}

type ByAddress<'a, T> = HashMap<usize, (&'a T, usize), BuildHasherDefault<AddressHasher>>;

fn count_by_address<'a, T: ?Sized>(counts: &mut ByAddress<'a, T>, value: &'a Arc<T>) {
    // The address of the shared allocation (thin, also for `str`).
    let address = Arc::as_ptr(value).cast::<u8>() as usize;
    counts.entry(address).or_insert((&**value, 0)).1 += 1;
}

/// Flows per table, port and rule, counted by shared allocation and named once per port and
/// rule (not once per flow).
#[derive(Default)]
pub(super) struct OriginCounts<'a> {
    per_table: BTreeMap<u8, usize>,
    per_port: ByAddress<'a, str>,
    per_rule: ByAddress<'a, RuleRef>,
}

impl<'a> OriginCounts<'a> {
    pub(super) fn of(flows: impl Iterator<Item = (&'a Key, &'a Entry)>) -> Self {
        let mut counts = OriginCounts::default();
        let mut last_table: Option<(u8, usize)> = None;
        for (key, entry) in flows {
            // Flows come sorted by table: count runs, not one tree look-up per flow.
            match &mut last_table {
                Some((t, n)) if *t == key.table => *n += 1,
                _ => {
                    if let Some((t, n)) = last_table.replace((key.table, 1)) {
                        *counts.per_table.entry(t).or_default() += n;
                    }
                }
            }
            if let Some(p) = &entry.port {
                count_by_address(&mut counts.per_port, p);
            }
            if let Some(r) = &entry.rule {
                count_by_address(&mut counts.per_rule, r);
            }
        }
        if let Some((t, n)) = last_table {
            *counts.per_table.entry(t).or_default() += n;
        }
        counts
    }

    pub(super) fn into_stats(self, stats: &mut Stats) {
        self.into_stats_shown(stats, std::borrow::Cow::Borrowed);
    }

    /// [`OriginCounts::into_stats`] with each rule shown as `show` gives it (a compiler
    /// session's stable rule numbers shown as positions).
    pub(super) fn into_stats_shown(
        self,
        stats: &mut Stats,
        show: impl Fn(&'a RuleRef) -> std::borrow::Cow<'a, RuleRef>,
    ) {
        stats.per_table = self.per_table;
        // Two allocations may hold one name (two units' copies): adding keeps this exact.
        let mut ports: BTreeMap<&str, usize> = BTreeMap::new();
        for (p, n) in self.per_port.into_values() {
            *ports.entry(p).or_default() += n;
        }
        stats.per_port = ports.into_iter().map(|(p, n)| (p.to_string(), n)).collect();
        let mut rules: BTreeMap<std::borrow::Cow<'a, RuleRef>, usize> = BTreeMap::new();
        for (r, n) in self.per_rule.into_values() {
            *rules.entry(show(r)).or_default() += n;
        }
        for (r, n) in rules {
            // Distinct references render distinctly; adding keeps this exact regardless.
            *stats.per_rule.entry(r.to_string()).or_default() += n;
        }
    }
}

/// Actions that many flows share (resubmits, `drop`, the output to the port in the port
/// register), allocated once per builder and then counted by reference.
#[derive(Default)]
struct SharedActions {
    resubmits: RefCell<Vec<(u8, Arc<str>)>>,
    drop: OnceCell<Arc<str>>,
    to_port: OnceCell<Arc<str>>,
}

/// The first 16 bytes of a key's order as one integer: table, descending priority, then the
/// match's first 13 bytes (zero-padded). A smaller prefix means a smaller key; equal prefixes
/// need the rest of the match.
fn order_prefix(key: &Key) -> u128 {
    let mut bytes = [0u8; 16];
    bytes[0] = key.table;
    bytes[1..3].copy_from_slice(&(u16::MAX - key.priority.0).to_be_bytes());
    let m = key.matches.as_bytes();
    let n = m.len().min(13);
    bytes[3..3 + n].copy_from_slice(&m[..n]);
    u128::from_be_bytes(bytes)
}

/// Match bytes `from..from + 16` as one integer (zero-padded): the next part of the order of
/// keys that agree on everything before `from`.
fn match_window(matches: &str, from: usize) -> u128 {
    let mut bytes = [0u8; 16];
    let m = matches.as_bytes().get(from..).unwrap_or_default();
    let n = m.len().min(16);
    bytes[..n].copy_from_slice(&m[..n]);
    u128::from_be_bytes(bytes)
}

/// Below this many flows a comparison sort of the (window, index) pairs is cheaper than a
/// radix pass.
const SMALL_RUN: usize = 64;

/// Sorts `run`, pairs (window, index) that agree on their window's bytes before `byte`, by
/// window and then index: a most-significant-byte-first radix sort, one stable counting pass
/// at the first byte position where the run's windows differ, then the same inside each
/// bucket. Runs that agree on the whole window continue with the next 16 bytes of their
/// matches, from `from` ([`sort_run`]).
fn radix_sort(
    flows: &[(Key, Entry)],
    run: &mut [(u128, usize)],
    scratch: &mut Vec<(u128, usize)>,
    mut byte: u32,
    from: usize,
) {
    loop {
        if run.len() <= 1 {
            return;
        }
        if byte == 16 {
            sort_run(flows, run, scratch, from);
            return;
        }
        if run.len() < SMALL_RUN {
            // The index breaks ties: equal windows stay in index order.
            run.sort_unstable();
            let mut start = 0;
            while start < run.len() {
                let window = run[start].0;
                let end = start + run[start..].partition_point(|(w, _)| *w == window);
                if end - start > 1 {
                    sort_run(flows, &mut run[start..end], scratch, from);
                }
                start = end;
            }
            return;
        }
        // Skip the bytes every window of the run shares (a table's matches start alike).
        let first = run[0].0;
        let differ = run.iter().fold(0, |d, (w, _)| d | (w ^ first));
        let shared = differ.leading_zeros() / 8;
        if shared >= 16 {
            byte = 16;
            continue;
        }
        byte = byte.max(shared);
        let shift = 8 * (15 - byte);
        let digit = |w: u128| usize::from((w >> shift) as u8);
        let mut at = [0u32; 256];
        for (w, _) in run.iter() {
            at[digit(*w)] += 1;
        }
        // Counts to starting positions; after the stable scatter, `at[d]` is where bucket
        // `d` ends.
        let mut next = 0;
        for slot in at.iter_mut() {
            let count = *slot;
            *slot = next;
            next += count;
        }
        scratch.clear();
        scratch.extend_from_slice(run);
        for item in scratch.iter() {
            let d = digit(item.0);
            run[at[d] as usize] = *item;
            at[d] += 1;
        }
        let mut start = 0;
        for end in at {
            let end = end as usize;
            if end - start > 1 {
                radix_sort(flows, &mut run[start..end], scratch, byte + 1, from);
            }
            start = end;
        }
        return;
    }
}

/// Orders a run of flows that agree on their table, priority and match bytes before `from`
/// (given in index order): by the next 16 bytes, then further. Equal keys stay in index order.
fn sort_run(
    flows: &[(Key, Entry)],
    run: &mut [(u128, usize)],
    scratch: &mut Vec<(u128, usize)>,
    from: usize,
) {
    if run.iter().all(|(_, i)| flows[*i].0.matches.len() <= from) {
        // Equal keys (or ones that differ only by trailing NULs, which the zero padding
        // does not tell apart): the whole keys decide, stably.
        run.sort_by(|a, b| flows[a.1].0.cmp(&flows[b.1].0));
        return;
    }
    for item in run.iter_mut() {
        item.0 = match_window(&flows[item.1].0.matches, from);
    }
    radix_sort(flows, run, scratch, 0, from + 16);
}

/// Sorts flows by key, equal keys in their emission order. Comparing whole keys (string
/// compares, 72-byte moves) was the largest part of a sort: the flows are ordered by integers
/// instead, a radix sort of their first 16 bytes (table, priority, the match's first 13
/// bytes), then of the next 16 bytes of the matches inside runs that agree on those (a
/// conjunction's member addresses, one network's dispatch flows), and so on.
fn sort_by_key_stably(flows: &mut Vec<(Key, Entry)>) {
    if flows.windows(2).all(|w| w[0].0 <= w[1].0) {
        return;
    }
    let mut order: Vec<(u128, usize)> = flows
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (order_prefix(key), i))
        .collect();
    let mut scratch = Vec::new();
    radix_sort(flows, &mut order, &mut scratch, 0, 13);
    drop(scratch);
    let mut slots: Vec<Option<(Key, Entry)>> = flows.drain(..).map(Some).collect();
    flows.extend(order.iter().filter_map(|(_, i)| slots[*i].take()));
}

/// `Ok` when a repeated flow carries the same actions as the one kept.
fn check_repeat(kept: &(Key, Entry), (key, entry): (&Key, &Entry)) -> Result<()> {
    if kept.1.actions == entry.actions {
        return Ok(());
    }
    super::conflict::check_same_actions(
        &format!(
            "table={},priority={},{}",
            key.table, key.priority.0, key.matches
        ),
        (&kept.1.actions, kept.1.origin()),
        (&entry.actions, entry.origin()),
    )
}

/// `reg<n>`: a static name for the sixteen registers (a session makes a builder per unit,
/// thousands for one change, and most never use a register).
fn register_name(n: u8) -> Cow<'static, str> {
    const NAMES: [&str; 16] = [
        "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10",
        "reg11", "reg12", "reg13", "reg14", "reg15",
    ];
    match NAMES.get(usize::from(n)) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("reg{n}")),
    }
}

pub(super) struct Builder<'o> {
    opts: &'o OpenFlowOptions,
    /// `reg<port_register>`, `reg<zone_register>`, `reg<policy_register>`: in most flows.
    reg_port: Cow<'static, str>,
    reg_zone: Cow<'static, str>,
    reg_policy: Cow<'static, str>,
    /// The flows in emission order until [`Builder::compact`] sorts them by key and drops
    /// repeats: one sort of a unit's flows costs far less than a tree insert per flow.
    flows: Vec<(Key, Entry)>,
    /// `flows` is compacted when it reaches this length, to hold the flow cap.
    compact_at: usize,
    pub(super) duplicates: usize,
    /// Policy id of each filtered port.
    port_policy: &'o BTreeMap<String, u32>,
    /// Why rules produce no flows of their own (`group[index]` → reasons).
    pub(super) fates: BTreeMap<String, BTreeSet<String>>,
    pub(super) conj_members: BTreeMap<ConjKey, Vec<IpNet>>,
    pub(super) conj_clauses: Vec<Clause>,
    conjunctions: usize,
    shared_actions: SharedActions,
    /// Where per-flow action text is built before it is shared (one allocation per flow).
    scratch: RefCell<String>,
}

impl<'o> Builder<'o> {
    pub(super) fn new(opts: &'o OpenFlowOptions, port_policy: &'o BTreeMap<String, u32>) -> Self {
        Builder {
            opts,
            reg_port: register_name(opts.port_register),
            reg_zone: register_name(opts.zone_register),
            reg_policy: register_name(opts.policy_register),
            flows: Vec::new(),
            compact_at: opts.max_flows,
            duplicates: 0,
            port_policy,
            fates: BTreeMap::new(),
            conj_members: BTreeMap::new(),
            conj_clauses: Vec::new(),
            conjunctions: 0,
            shared_actions: SharedActions::default(),
            scratch: RefCell::new(String::new()),
        }
    }

    fn zone(&self) -> String {
        format!("zone=NXM_NX_REG{}[0..15]", self.opts.zone_register)
    }

    fn port_match(&self, ofport: u32) -> Match {
        Match::new().f(&self.reg_port, ofport)
    }

    /// `resubmit(,<table>)`, shared.
    fn resubmit(&self, table: u8) -> Arc<str> {
        let mut cache = self.shared_actions.resubmits.borrow_mut();
        if let Some((_, a)) = cache.iter().find(|(t, _)| *t == table) {
            return Arc::clone(a);
        }
        let mut out = String::with_capacity(16);
        out.push_str("resubmit(,");
        table.put(&mut out);
        out.push(')');
        let a: Arc<str> = out.into();
        cache.push((table, Arc::clone(&a)));
        a
    }

    /// `drop`, shared.
    fn drop_action(&self) -> Arc<str> {
        Arc::clone(self.shared_actions.drop.get_or_init(|| "drop".into()))
    }

    /// `output:NXM_NX_REG<port_register>[]`, shared.
    fn to_port(&self) -> Arc<str> {
        Arc::clone(
            self.shared_actions
                .to_port
                .get_or_init(|| format!("output:NXM_NX_REG{}[]", self.opts.port_register).into()),
        )
    }

    /// An action of one flow, built in the scratch buffer and allocated once at its size.
    fn actions_of(&self, build: impl FnOnce(&mut String)) -> Arc<str> {
        let mut scratch = self.scratch.borrow_mut();
        scratch.clear();
        build(&mut scratch);
        Arc::from(scratch.as_str())
    }

    fn add(
        &mut self,
        table: u8,
        priority: u16,
        m: Match,
        actions: Arc<str>,
        port: Option<&Arc<str>>,
        rule: Option<&Arc<RuleRef>>,
    ) -> Result<()> {
        let key = Key {
            table,
            priority: Reverse(priority),
            matches: m.into_string(),
        };
        self.add_keyed(key, actions, port, rule)
    }

    fn add_keyed(
        &mut self,
        key: Key,
        actions: Arc<str>,
        port: Option<&Arc<str>>,
        rule: Option<&Arc<RuleRef>>,
    ) -> Result<()> {
        let entry = Entry {
            actions,
            port: port.cloned(),
            rule: rule.cloned(),
        };
        if self.flows.len() >= self.compact_at {
            self.compact()?;
            if self.flows.len() >= self.opts.max_flows {
                // At the cap, only a repeat of a flow already there may be added.
                return match self.flows.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(at) => {
                        check_repeat(&self.flows[at], (&key, &entry))?;
                        self.duplicates += 1;
                        Ok(())
                    }
                    Err(_) => Err(Error::TooManyFlows {
                        limit: self.opts.max_flows,
                        at: port.map_or_else(|| "pipeline".to_string(), |p| format!("ports.{p}")),
                    }),
                };
            }
            // Half again what is kept: compacting stays linear in the flows pushed.
            self.compact_at = self
                .opts
                .max_flows
                .max(self.flows.len().saturating_add(self.flows.len() / 2));
        }
        self.flows.push((key, entry));
        Ok(())
    }

    /// Sorts the flows by key and keeps the first of each key (the origin a flow two rules
    /// emit is reported with), checking that the repeats carry the same actions.
    fn compact(&mut self) -> Result<()> {
        sort_by_key_stably(&mut self.flows);
        let mut conflict: Option<Error> = None;
        let mut repeats = 0;
        self.flows.dedup_by(|later, kept| {
            if later.0 != kept.0 {
                return false;
            }
            if conflict.is_none() {
                conflict = check_repeat(kept, (&later.0, &later.1)).err();
            }
            repeats += 1;
            true
        });
        self.duplicates += repeats;
        if let Some(e) = conflict {
            return Err(e);
        }
        if self.flows.len() > self.opts.max_flows {
            return Err(Error::TooManyFlows {
                limit: self.opts.max_flows,
                at: "pipeline".into(),
            });
        }
        Ok(())
    }

    /// The flows, sorted by key without repeats, and how many repeats were dropped.
    pub(super) fn sorted_flows(&mut self) -> Result<(Vec<(Key, Entry)>, usize)> {
        self.compact()?;
        Ok((std::mem::take(&mut self.flows), self.duplicates))
    }

    /// Flows shared by every port: table defaults and the conntrack state machine.
    pub(super) fn shared_flows(&mut self, kinds: Kinds) {
        let t = self.opts.tables;
        let mut shared: Vec<(u8, u16, Match, Arc<str>)> = Vec::new();
        if self.opts.entry_flow {
            shared.push((
                t.entry,
                prio::DEFAULT,
                Match::new(),
                self.resubmit(t.classify),
            ));
        }
        if self.opts.normal_flow {
            shared.push((t.normal, prio::DEFAULT, Match::new(), "NORMAL".into()));
        }
        if !self.opts.foreign_ports {
            shared.push((
                t.classify,
                prio::DEFAULT,
                Match::new(),
                self.resubmit(t.normal),
            ));
        }
        shared.push((
            t.accept_or_ingress,
            prio::DEFAULT,
            Match::new(),
            self.resubmit(t.normal),
        ));
        for table in [
            t.egress_base,
            t.egress_rules,
            t.ingress_base,
            t.ingress_rules,
        ] {
            shared.push((table, prio::DEFAULT, Match::new(), self.drop_action()));
        }
        if kinds.stateful {
            let zone = self.zone();
            let to_port = self.to_port();
            for (table, accept) in [
                (t.egress_rules, self.resubmit(t.accept_or_ingress)),
                (t.ingress_rules, Arc::clone(&to_port)),
            ] {
                let ct = |s: &str| Match::new().f("ct_state", s);
                shared.push((table, prio::CT_INVALID, ct("+inv+trk"), self.drop_action()));
                shared.push((
                    table,
                    prio::CT_MARKED,
                    Match::new().f("ct_state", "+trk").f("ct_mark", "0x1"),
                    self.drop_action(),
                ));
                shared.push((
                    table,
                    prio::CT_REPLY,
                    ct("+est-rel+rpl+trk"),
                    accept.clone(),
                ));
                shared.push((table, prio::CT_REPLY, ct("-new-est+rel-inv+trk"), accept));
                // A connection whose rule is gone: mark it so that both directions drop it
                // from now on (the agent flushes marked entries).
                // ct() needs an IP match, hence one flow per family.
                for family in ["ip", "ipv6"] {
                    shared.push((
                        table,
                        prio::CT_ORPHAN,
                        ct("+est-rel-rpl+trk").kw(family),
                        format!("ct(commit,{zone},exec(set_field:0x1->ct_mark))").into(),
                    ));
                }
            }
            for family in ["ip", "ipv6"] {
                shared.push((
                    t.accepted_egress,
                    prio::DEFAULT,
                    Match::new().kw(family),
                    format!("ct(commit,{zone}),{}", self.resubmit(t.accept_or_ingress)).into(),
                ));
                shared.push((
                    t.accepted_ingress,
                    prio::DEFAULT,
                    Match::new().kw(family),
                    format!("ct(commit,{zone}),{to_port}").into(),
                ));
            }
        }
        shared.extend(self.shared_stage_flows(kinds));
        for (table, priority, m, actions) in shared {
            // Shared flows are few and fixed: the cap concerns per-port growth.
            let _ = self.add(table, priority, m, actions, None, None);
        }
    }

    /// Traffic towards a port's MACs: from outside (by local VLAN tag and destination MAC) and
    /// from a local port after its egress pipeline accepted it. Two ports of one network may
    /// share a MAC (an allowed address pair copying another port's MAC): the packet then runs
    /// through both ports' ingress pipelines.
    pub(super) fn dispatch_flows(&mut self, model: &Model) -> Result<()> {
        for ((tag, mac), targets) in dispatch_targets(model) {
            self.dispatch_unit(tag, mac, &targets)?;
        }
        if self.opts.foreign_ports {
            // Ports outside the model may be on these networks: `NORMAL` must reach them.
            return Ok(());
        }
        for (tag, ports) in flood_targets(model) {
            let replicate = self.through_ingress(&ports);
            self.flood_flows(tag, &replicate)?;
        }
        Ok(())
    }

    /// The two flows towards one (VLAN, MAC): from outside, and from a local port.
    pub(super) fn dispatch_unit(
        &mut self,
        tag: u16,
        mac: Mac,
        targets: &[(u32, &str)],
    ) -> Result<()> {
        let t = self.opts.tables;
        let into_ingress = self.through_ingress(targets);
        let owner: Option<Arc<str>> = match targets {
            [(_, only)] => Some(Arc::from(*only)),
            _ => None,
        };
        let from_outside = self.entering_zone(tag, &into_ingress);
        let by_zone = Match::new().f(&self.reg_zone, tag).f("dl_dst", mac);
        self.add(
            t.classify,
            prio::CLASSIFY_INGRESS,
            Match::new().f("dl_vlan", tag).f("dl_dst", mac),
            from_outside,
            owner.as_ref(),
            None,
        )?;
        self.add(
            t.accept_or_ingress,
            prio::DISPATCH,
            by_zone,
            into_ingress,
            owner.as_ref(),
            None,
        )
    }

    /// Frames from outside for a network with local ports that are not for one port's MAC:
    /// broadcast and multicast run through every local port's ingress pipeline (so each port's
    /// rules decide, instead of `NORMAL` flooding them to the VMs unfiltered); unknown unicast
    /// is for no local port and is dropped. `replicate` is the VLAN's ports' steps
    /// ([`ingress_step`]) in port order, joined by commas.
    pub(super) fn flood_flows(&mut self, tag: u16, replicate: &str) -> Result<()> {
        if self.opts.foreign_ports {
            // Ports outside the model may be on these networks: `NORMAL` must reach them.
            return Ok(());
        }
        let t = self.opts.tables;
        let from_outside = self.entering_zone(tag, replicate);
        self.add(
            t.classify,
            prio::CLASSIFY_FLOOD,
            Match::new().f("dl_vlan", tag).f("dl_dst", GROUP_ADDRESSED),
            from_outside,
            None,
            None,
        )?;
        self.add(
            t.classify,
            prio::CLASSIFY_UNKNOWN,
            Match::new().f("dl_vlan", tag),
            self.drop_action(),
            None,
            None,
        )?;
        if self.opts.filter_local_flood {
            // The sender is among the ports: its own ingress pipeline ends in an output to
            // the in_port, which Open vSwitch never performs.
            let then_normal = self.actions_of(|out| {
                out.push_str(replicate);
                out.push(',');
                out.push_str(&self.resubmit(t.normal));
            });
            self.add(
                t.accept_or_ingress,
                prio::DISPATCH_FLOOD,
                Match::new()
                    .f(&self.reg_zone, tag)
                    .f("dl_dst", GROUP_ADDRESSED),
                then_normal,
                None,
                None,
            )?;
        }
        Ok(())
    }

    /// Everything specific to one port.
    pub(super) fn port_flows(&mut self, model: &Model, port: &Port) -> Result<()> {
        let (Some(ofport), Some(tag)) = (port.ofport, port.local_vlan) else {
            return Ok(());
        };
        let t = self.opts.tables;
        // One allocation for the port's name, shared by all its flows.
        let id: Arc<str> = Arc::from(port.id.as_str());
        let first_table = if port.is_filtered() {
            t.egress_base
        } else {
            t.accept_or_ingress
        };
        let classify = self.actions_of(|out| {
            set_field(out, ofport, &self.reg_port);
            out.push(',');
            set_field(out, tag, &self.reg_zone);
            self.load_policy(out, &port.id);
            out.push(',');
            out.push_str(&self.resubmit(first_table));
        });
        self.add(
            t.classify,
            prio::CLASSIFY_EGRESS,
            Match::new().f("in_port", ofport),
            classify,
            Some(&id),
            None,
        )?;
        if !port.is_filtered() {
            return self.add(
                t.ingress_base,
                prio::UNFILTERED,
                self.port_match(ofport),
                self.output(ofport),
                Some(&id),
                None,
            );
        }
        let stateful = model.port_is_stateful(port);
        self.egress_base(port, &id, ofport, stateful)?;
        self.ingress_base(&id, ofport, stateful)
    }

    /// `output:<ofport>`.
    fn output(&self, ofport: u32) -> Arc<str> {
        self.actions_of(|out| {
            out.push_str("output:");
            ofport.put(out);
        })
    }

    /// `set_field:<tag>->reg6,pop_vlan,` then `then`: a frame from outside enters its
    /// network's zone.
    fn entering_zone(&self, tag: u16, then: &str) -> Arc<str> {
        self.actions_of(|out| {
            set_field(out, tag, &self.reg_zone);
            out.push_str(",pop_vlan,");
            out.push_str(then);
        })
    }

    /// Runs a frame through each port's ingress pipeline in turn: load the port's number (and
    /// policy id) and resubmit to the ingress base table.
    fn through_ingress(&self, ports: &[(u32, &str)]) -> Arc<str> {
        self.actions_of(|out| {
            for (i, (ofport, id)) in ports.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                ingress_step(out, self.opts, *ofport, self.port_policy.get(*id).copied());
            }
        })
    }

    /// Appends `,set_field:<policy>->reg7` for a filtered port, nothing for others.
    fn load_policy(&self, out: &mut String, port: &str) {
        if let Some(id) = self.port_policy.get(port) {
            out.push(',');
            set_field(out, *id, &self.reg_policy);
        }
    }

    /// Table 71 for one port: its bindings. In the shared layout an IP source binding hands
    /// the packet to the shared protocol stage of the port's kind and a MAC binding to the
    /// unaddressed stage; otherwise each binding carries its own copy of its stage.
    fn egress_base(
        &mut self,
        port: &Port,
        id: &Arc<str>,
        ofport: u32,
        stateful: bool,
    ) -> Result<()> {
        let t = self.opts.tables;
        let mut flows: Vec<(u16, Match, Arc<str>)> = Vec::new();
        for binding in implicit::port_bindings(port) {
            let base = self.port_match(ofport);
            match binding {
                Binding::Arp(mac, net) => flows.push((
                    prio::IMPLICIT,
                    base.kw("arp")
                        .f("dl_src", mac)
                        .f("arp_spa", render::Net(&net))
                        .f("arp_sha", mac),
                    self.resubmit(t.accept_or_ingress),
                )),
                Binding::NdTarget(mac, net) => flows.push((
                    prio::IMPLICIT,
                    base.kw("icmp6")
                        .f("dl_src", mac)
                        .f("icmpv6_type", ND_NA)
                        .f("nd_target", render::Net(&net)),
                    self.resubmit(t.accept_or_ingress),
                )),
                Binding::Source(mac, net) if self.opts.shared_stage => flows.push((
                    prio::IP_SOURCE,
                    traffic_match(
                        base,
                        Traffic::Ip(EtherType::of_net(&net)),
                        &source_fields(mac, &net),
                    ),
                    self.resubmit(self.egress_stage(stateful)),
                )),
                Binding::Mac(mac) if self.opts.shared_stage => flows.push((
                    prio::UNADDRESSED,
                    base.f("dl_src", mac),
                    self.resubmit(t.egress_unaddressed),
                )),
                Binding::Source(mac, net) => {
                    let family = EtherType::of_net(&net);
                    for a in implicit::EGRESS_VERIFIED {
                        if a.traffic.family() == Some(family) {
                            let fields = source_fields(mac, &net);
                            flows.push((
                                rank_priority(a.rank),
                                traffic_match(self.port_match(ofport), a.traffic, &fields),
                                self.egress_fate(a.fate, stateful),
                            ));
                        }
                    }
                }
                Binding::Mac(mac) => {
                    for a in implicit::EGRESS_UNADDRESSED {
                        flows.push((
                            rank_priority(a.rank),
                            traffic_match(
                                self.port_match(ofport),
                                a.traffic,
                                &unaddressed(Some(mac), a.traffic),
                            ),
                            self.egress_fate(a.fate, stateful),
                        ));
                    }
                }
            }
        }
        for (priority, m, actions) in flows {
            self.add(t.egress_base, priority, m, actions, Some(id), None)?;
        }
        Ok(())
    }

    /// Table 81 for one port: to the shared ingress stage of its kind, or its own copy of it.
    fn ingress_base(&mut self, port: &Arc<str>, ofport: u32, stateful: bool) -> Result<()> {
        let t = self.opts.tables;
        let id = Some(port);
        if self.opts.shared_stage {
            let stage = self.ingress_stage(stateful);
            return self.add(
                t.ingress_base,
                prio::IMPLICIT,
                self.port_match(ofport),
                self.resubmit(stage),
                id,
                None,
            );
        }
        let out = self.output(ofport);
        for a in implicit::INGRESS {
            let m = traffic_match(self.port_match(ofport), a.traffic, &[]);
            let actions = self.ingress_fate(a.fate, stateful, &out);
            self.add(
                t.ingress_base,
                ingress_priority(a.rank),
                m,
                actions,
                id,
                None,
            )?;
        }
        Ok(())
    }

    /// The shared protocol stages, once per bridge and kind of port present.
    fn shared_stage_flows(&self, kinds: Kinds) -> Vec<(u8, u16, Match, Arc<str>)> {
        let t = self.opts.tables;
        let mut flows = Vec::new();
        if !self.opts.shared_stage {
            return flows;
        }
        if kinds == Kinds::default() {
            return flows;
        }
        let to_port = self.to_port();
        for stateful in [true, false] {
            if !kinds.has(stateful) {
                continue;
            }
            let (egress, ingress) = (self.egress_stage(stateful), self.ingress_stage(stateful));
            for a in implicit::EGRESS_VERIFIED {
                let m = traffic_match(Match::new(), a.traffic, &[]);
                flows.push((
                    egress,
                    rank_priority(a.rank),
                    m,
                    self.egress_fate(a.fate, stateful),
                ));
            }
            for a in implicit::INGRESS {
                let m = traffic_match(Match::new(), a.traffic, &[]);
                let actions = self.ingress_fate(a.fate, stateful, &to_port);
                flows.push((ingress, ingress_priority(a.rank), m, actions));
            }
            for table in [egress, ingress] {
                flows.push((table, prio::DEFAULT, Match::new(), self.drop_action()));
            }
        }
        for a in implicit::EGRESS_UNADDRESSED {
            let m = traffic_match(Match::new(), a.traffic, &unaddressed(None, a.traffic));
            // Unaddressed traffic never reaches the rules: the fate does not depend on the kind.
            flows.push((
                t.egress_unaddressed,
                rank_priority(a.rank),
                m,
                self.egress_fate(a.fate, false),
            ));
        }
        flows.push((
            t.egress_unaddressed,
            prio::DEFAULT,
            Match::new(),
            self.drop_action(),
        ));
        flows
    }

    fn egress_stage(&self, stateful: bool) -> u8 {
        let t = self.opts.tables;
        if stateful {
            t.egress_protocol
        } else {
            t.egress_protocol_stateless
        }
    }

    fn ingress_stage(&self, stateful: bool) -> u8 {
        let t = self.opts.tables;
        if stateful {
            t.ingress_protocol
        } else {
            t.ingress_protocol_stateless
        }
    }

    fn egress_fate(&self, fate: Fate, stateful: bool) -> Arc<str> {
        let t = self.opts.tables;
        match fate {
            Fate::Accept => self.resubmit(t.accept_or_ingress),
            Fate::Drop => self.drop_action(),
            Fate::Rules if stateful => {
                format!("ct(table={},{})", t.egress_rules, self.zone()).into()
            }
            Fate::Rules => self.resubmit(t.egress_rules),
        }
    }

    /// A stateless port must not inherit the connection state of an earlier ct() pass:
    /// traffic from a stateful port on this host went through the sender's conntrack (same
    /// zone), and the shared reply/related/invalid flows of the rules table would decide it
    /// instead of this port's rules.
    fn ingress_fate(&self, fate: Fate, stateful: bool, out: &Arc<str>) -> Arc<str> {
        let t = self.opts.tables;
        match fate {
            Fate::Accept => Arc::clone(out),
            Fate::Drop => self.drop_action(),
            Fate::Rules if stateful => {
                format!("ct(table={},{})", t.ingress_rules, self.zone()).into()
            }
            Fate::Rules => format!("ct_clear,{}", self.resubmit(t.ingress_rules)).into(),
        }
    }

    /// The accept action of a rule flow: commit first for a new connection.
    fn accept_action(&self, direction: Direction, copy: Copy) -> Arc<str> {
        let t = self.opts.tables;
        match (direction, copy) {
            (Direction::Egress, Copy::New) => self.resubmit(t.accepted_egress),
            (Direction::Ingress, Copy::New) => self.resubmit(t.accepted_ingress),
            (Direction::Egress, _) => self.resubmit(t.accept_or_ingress),
            (Direction::Ingress, _) => self.to_port(),
        }
    }

    fn rule_table(&self, direction: Direction) -> u8 {
        rule_table(self.opts, direction)
    }

    fn policy_match(&self, policy: u32, copy: Copy) -> Match {
        let m = Match::new().f(&self.reg_policy, policy);
        match copy.ct_state() {
            Some(state) => m.f("ct_state", state),
            None => m,
        }
    }

    /// The rule flows of one policy, shared by all its ports. Rules with a remote group of
    /// several members become conjunction clauses, collected here and laid out by
    /// [`Builder::conjunction_flows`] once every policy is known.
    pub(super) fn policy_flows(&mut self, policy: &Policy) -> Result<()> {
        let optimised = if self.opts.optimise_rules {
            optimise(policy.rules.clone())
        } else {
            let mut rules = policy.rules.clone();
            rules.sort();
            Optimised {
                rules,
                fates: Vec::new(),
            }
        };
        let owner = (policy.ports.len() == 1).then_some(policy.ports[0].as_str());
        self.lower_optimised(policy.id, policy.stateful, owner, &optimised)
    }

    /// Records the fates of a policy's (or a policy bucket's) rules after the algebra and
    /// lowers the remaining ones: the rule flows of policy `id`, reported for `owner`, and the
    /// conjunction clauses and members they need.
    pub(super) fn lower_optimised(
        &mut self,
        policy_id: u32,
        stateful: bool,
        owner: Option<&str>,
        optimised: &Optimised,
    ) -> Result<()> {
        for (rule, fate) in &optimised.fates {
            self.fates
                .entry(rule.to_string())
                .or_default()
                .insert(fate.to_string());
        }
        let copies: &[Copy] = if stateful {
            &[Copy::New, Copy::Established]
        } else {
            &[Copy::Stateless]
        };
        let owner: Option<Arc<str>> = owner.map(Arc::from);
        for rule in &optimised.rules {
            // One allocation for the rule's origin, shared by its flows and clauses.
            let origin = Arc::new(rule.origin.clone());
            let conj_id = match &rule.remote {
                RemoteSet::Members { id, nets }
                    if self.opts.conjunctions && nets.len() > 1 && !has_source_ports(rule) =>
                {
                    Some(id)
                }
                _ => None,
            };
            if let Some(remote_id) = conj_id {
                for &copy in copies {
                    self.collect_clause(policy_id, rule, remote_id, copy, &origin);
                }
                continue;
            }
            self.make_room(policy_rule_len(rule).saturating_mul(copies.len()), || {
                format!("policy {policy_id} ({})", rule.origin)
            })?;
            let table = self.rule_table(rule.direction);
            // The policy match and the accept action of each copy, rendered once per rule.
            let heads: Vec<(Match, Arc<str>)> = copies
                .iter()
                .map(|&copy| {
                    (
                        self.policy_match(policy_id, copy),
                        self.accept_action(rule.direction, copy),
                    )
                })
                .collect();
            for m in lower_policy_rule(rule) {
                for (head, accept) in &heads {
                    let flow = render::rule_match(head.extended(), &m);
                    self.add(
                        table,
                        prio::RULE,
                        flow,
                        Arc::clone(accept),
                        owner.as_ref(),
                        Some(&origin),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Refuses before allocating: a prefix list of 100k entries times 30 port masks must fail
    /// fast, not exhaust memory. The flows pushed may hold repeats: they are dropped first.
    fn make_room(&mut self, needed: usize, at: impl FnOnce() -> String) -> Result<()> {
        let fits = |len: usize| len.saturating_add(needed) <= self.opts.max_flows;
        if fits(self.flows.len()) {
            return Ok(());
        }
        self.compact()?;
        if fits(self.flows.len()) {
            return Ok(());
        }
        Err(Error::TooManyFlows {
            limit: self.opts.max_flows,
            at: at(),
        })
    }

    fn collect_clause(
        &mut self,
        policy: u32,
        rule: &PolicyRule,
        remote_id: &str,
        copy: Copy,
        origin: &Arc<RuleRef>,
    ) {
        let class = specificity(rule);
        let key = ConjKey {
            remote: remote_id.to_string(),
            direction: rule.direction,
            ethertype: rule.ethertype,
            copy,
            class,
        };
        self.conj_members
            .entry(key.clone())
            .or_insert_with(|| rule.remote.nets().unwrap_or_default().to_vec());
        self.conj_clauses.push(Clause {
            policy,
            key,
            protocol: rule.protocol,
            l4: rule.l4,
            origin: Arc::clone(origin),
        });
    }

    /// Lays out the conjunctions collected from every policy: per conjunction one `conj_id`
    /// flow; per member address one flow (dimension 1) naming every conjunction it belongs to;
    /// per policy and L4 match one flow (dimension 2), with overlapping port ranges split so
    /// that no two clauses of one policy overlap at one priority.
    pub(super) fn conjunction_flows(&mut self) -> Result<()> {
        let ids = conj_ids(self.conj_members.keys());
        // Looked up per member and clause: by key, not by its rendered name.
        let by_key: BTreeMap<ConjKey, u32> = self
            .conj_members
            .keys()
            .map(|k| (k.clone(), ids[&k.name()]))
            .collect();
        let id_of = |k: &ConjKey| by_key[k];
        let members = std::mem::take(&mut self.conj_members);
        // Every (member address, conjunction) pair, sorted once and grouped by address: the
        // thousands of pairs of a large bridge cost one sort, not a tree of sets.
        let mut pairs: Vec<(Dim1, u32)> = Vec::with_capacity(members.values().map(Vec::len).sum());
        for (key, nets) in &members {
            let id = id_of(key);
            self.conj_id_flow(key, id)?;
            pairs.extend(nets.iter().map(|net| (Dim1::of(key, *net), id)));
        }
        pairs.sort_unstable_by_key(|(d, id)| (d.order_key(), *id));
        pairs.dedup();
        let mut of_address: Vec<u32> = Vec::new();
        for (i, (d, id)) in pairs.iter().enumerate() {
            of_address.push(*id);
            if pairs.get(i + 1).map_or(true, |(next, _)| next != d) {
                self.dim1_flow(d, &of_address)?;
                of_address.clear();
            }
        }
        let clauses = std::mem::take(&mut self.conj_clauses);
        self.dim2_flows(&clauses, id_of)?;
        self.conjunctions = ids.len();
        Ok(())
    }

    /// The flow that accepts a packet completing one conjunction.
    pub(super) fn conj_id_flow(&mut self, key: &ConjKey, id: u32) -> Result<()> {
        let m = Match::new()
            .f("conj_id", id)
            .kw(family_keyword(key.ethertype));
        self.add(
            self.rule_table(key.direction),
            prio::CONJUNCTION + key.class,
            m,
            self.accept_action(key.direction, key.copy),
            None,
            None,
        )
    }

    /// One member address's flow: dimension 1 of every conjunction it belongs to (`ids`
    /// sorted).
    pub(super) fn dim1_flow(&mut self, d: &Dim1, ids: &[u32]) -> Result<()> {
        let key = dim1_key(self.opts, d);
        let actions = self.actions_of(|out| dim1_actions(out, ids));
        self.add_keyed(key, actions, None, None)
    }

    /// Dimension 2 of the clauses (one policy's, or every policy's), per policy, copy,
    /// family, class and protocol.
    pub(super) fn dim2_flows(
        &mut self,
        clauses: &[Clause],
        id_of: impl Fn(&ConjKey) -> u32,
    ) -> Result<()> {
        let mut actions: BTreeMap<Key, ConjActions> = BTreeMap::new();
        let mut groups: BTreeMap<ClauseGroup, Vec<&Clause>> = BTreeMap::new();
        for c in clauses {
            groups
                .entry((
                    c.policy,
                    c.key.direction,
                    c.key.copy,
                    c.key.ethertype,
                    c.key.class,
                    c.protocol,
                ))
                .or_default()
                .push(c);
        }
        for ((policy, direction, copy, ethertype, class, protocol), group) in groups {
            let table = self.rule_table(direction);
            let priority = prio::CONJUNCTION + class;
            let base = RuleMatch {
                direction,
                ethertype,
                protocol,
                remote: None,
                dst_port: None,
                src_port: None,
                icmp: None,
            };
            for (m, id, origin) in clause_pieces(&group, base, &id_of) {
                let flow = render::rule_match(self.policy_match(policy, copy), &m);
                let k = Key {
                    table,
                    priority: Reverse(priority),
                    matches: flow.into_string(),
                };
                let entry = actions.entry(k).or_default();
                entry.0.insert((id, 2));
                entry.1.get_or_insert(origin);
            }
        }
        for (key, (conjs, origin)) in actions {
            let m = Match(key.matches);
            let conjs = self.actions_of(|out| conjunction_actions(out, conjs.into_iter()));
            self.add(key.table, key.priority.0, m, conjs, None, origin.as_ref())?;
        }
        Ok(())
    }

    pub(super) fn finish(mut self, model: &Model) -> Result<Compiled> {
        self.compact()?;
        let mut stats = Stats {
            ports: model.ports.len(),
            filtered_ports: model.ports.iter().filter(|p| p.is_filtered()).count(),
            groups: model.groups.len(),
            rules: model.groups.values().map(|g| g.rules.len()).sum(),
            flows: self.flows.len(),
            duplicates: self.duplicates,
            policies: self.port_policy.values().collect::<BTreeSet<_>>().len(),
            conjunctions: self.conjunctions,
            rule_fates: self.fates,
            ..Stats::default()
        };
        let counts = OriginCounts::of(self.flows.iter().map(|(k, e)| (k, e)));
        counts.into_stats(&mut stats);
        let flows = self
            .flows
            .into_iter()
            .map(|(key, entry)| Flow {
                table: key.table,
                priority: key.priority.0,
                matches: key.matches,
                actions: entry.actions,
                port: entry.port,
                rule: entry.rule,
            })
            .collect();
        Ok(Compiled {
            flows,
            stats,
            warnings: model.warnings.clone(),
            cookie: self.opts.cookie,
        })
    }
}

#[cfg(test)]
#[path = "conflict_pipeline_tests.rs"]
mod conflict_pipeline_tests;
