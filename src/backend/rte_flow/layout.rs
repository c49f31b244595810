//! The layout: logical groups (group 0 and each port's groups) built from the model in
//! precedence tiers, then placed: redundant rules left out, priorities assigned so that
//! overlapping rules never share one, groups split by mask for profiles that need it, and
//! group numbers given out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::pattern::{
    ethertype, CodeMatch, Constraint, Field, Flat, Ip, MacMatch, PortMatch, PortProto, Source,
    Upper,
};
use super::report::{PortMode, PortReport, Reason, Report, RuleReport, RuleStatus};
use super::{Action, Forward, Kind, Pattern, RteCompiled, RteFlowOptions, RteRule, Stats};
use crate::error::{Error, Issue, Result};
use crate::ir::implicit::{self, Binding, Fate, Rank, Traffic};
use crate::ir::optimise::{optimise, Fate as OptFate};
use crate::ir::policy::{resolve_rules, PolicyRule};
use crate::ir::port_masks;
use crate::model::{protocol, Direction, EtherType, Mac, Model, Port, RuleRef, L4};

/// Neighbour advertisement: checked by its target.
const ND_NA: u8 = 136;

/// Groups per port: a port with representor `rep` owns `[(rep+1)*STRIDE, (rep+2)*STRIDE)`.
pub(super) const STRIDE: u32 = 256;

/// A port's logical groups, in numbering order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Role {
    EgressBase,
    EgressRules,
    Accept,
    IngressBase,
    IngressRules,
}

/// A logical group: group 0, or one of a port's (by representor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Root,
    Port(u16, Role),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LAction {
    Jump(Key),
    Drop,
    ToPort(u16),
    ToSoftware(u16),
}

#[derive(Debug, Clone)]
struct Entry {
    pattern: Pattern,
    action: LAction,
    kind: Kind,
    rule: Option<RuleRef>,
}

impl Entry {
    fn new(pattern: Pattern, action: LAction, kind: Kind) -> Self {
        Entry {
            pattern,
            action,
            kind,
            rule: None,
        }
    }
}

/// A group before placement: tiers in precedence order, and what a miss does.
struct LGroup {
    key: Key,
    port: Option<String>,
    tiers: Vec<Vec<Entry>>,
    default: LAction,
}

/// A placed physical group: rules with priorities; the miss goes to the next segment of the
/// chain, or to the logical group's default.
struct Segment {
    rules: Vec<(u32, Entry)>,
    catch_all_priority: u32,
    last: bool,
}

struct Placed {
    key: Key,
    port: Option<String>,
    segments: Vec<Segment>,
    default: LAction,
    redundant: usize,
}

/// The exact values of the fields that most often tell rules apart: source port and
/// destination MAC (group 0, accept groups), and host addresses (remote-group members). Two
/// rules with different values in one part never overlap, and a rule can only be covered by
/// rules whose set parts it shares. Indexing by these keeps placement near-linear where it
/// matters (two rules per port in group 0; members times port masks in a rules group) instead
/// of quadratic.
type BucketKey = [Option<u128>; 4];

fn bucket_key(p: &Pattern) -> BucketKey {
    let host = |n: Option<IpNet>| {
        n.filter(|n| n.prefix_len() == n.max_prefix_len())
            .map(|n| match n.addr() {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            })
    };
    let mac = |m: Mac| m.0.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    [
        p.source.map(|s| u128::from(s.0)),
        p.eth_dst.filter(MacMatch::is_exact).map(|m| mac(m.value)),
        host(p.ip.and_then(|ip| ip.src)),
        host(p.ip.and_then(|ip| ip.dst)),
    ]
}

/// Which parts of a key are set, as a bit mask.
fn set_parts(key: &BucketKey) -> u8 {
    key.iter()
        .enumerate()
        .filter(|(_, v)| v.is_some())
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// The key restricted to the parts in `mask`.
fn restrict(key: &BucketKey, mask: u8) -> BucketKey {
    let mut out = [None; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        if mask & 1 << i != 0 {
            *slot = key[i];
        }
    }
    out
}

/// Whether rules under two keys may overlap: no part set on both sides to different values.
fn compatible(a: &BucketKey, b: &BucketKey) -> bool {
    a.iter()
        .zip(b)
        .all(|(x, y)| x.is_none() || y.is_none() || x == y)
}

/// Rules bucketed by key, for overlap and cover queries.
struct Buckets<T> {
    by_key: HashMap<BucketKey, Vec<(Flat, T)>>,
    /// The keys present, by which parts they set.
    keys_by_parts: BTreeMap<u8, Vec<BucketKey>>,
}

impl<T> Buckets<T> {
    fn new() -> Self {
        Buckets {
            by_key: HashMap::new(),
            keys_by_parts: BTreeMap::new(),
        }
    }

    fn push(&mut self, key: BucketKey, flat: Flat, extra: T) {
        let bucket = self.by_key.entry(key).or_default();
        if bucket.is_empty() {
            self.keys_by_parts
                .entry(set_parts(&key))
                .or_default()
                .push(key);
        }
        bucket.push((flat, extra));
    }

    /// Whether a rule of these may match a packet `flat` matches.
    fn any_overlap(&self, key: BucketKey, flat: &Flat) -> bool {
        let mine = set_parts(&key);
        let check = |k: &BucketKey| {
            self.by_key
                .get(k)
                .is_some_and(|v| v.iter().any(|(f, _)| f.overlaps(flat)))
        };
        self.keys_by_parts.iter().any(|(parts, keys)| {
            if parts & !mine == 0 {
                // Every part those keys set, this key sets too: one lookup.
                check(&restrict(&key, *parts))
            } else {
                // More specific than this key in some part: each may overlap.
                keys.iter().any(|k| compatible(k, &key) && check(k))
            }
        })
    }

    /// Whether a rule of these, accepted by `ok`, covers `flat`. A cover constrains no part
    /// that `flat` leaves open, and agrees on the others.
    fn any_cover(&self, key: BucketKey, flat: &Flat, ok: impl Fn(&T) -> bool) -> bool {
        let mine = set_parts(&key);
        self.keys_by_parts
            .keys()
            .filter(|parts| *parts & !mine == 0)
            .any(|parts| {
                self.by_key
                    .get(&restrict(&key, *parts))
                    .is_some_and(|v| v.iter().any(|(f, t)| ok(t) && f.contains(flat)))
            })
    }
}

/// Places a logical group; `root` groups are never split.
fn place(group: LGroup, split: bool) -> Placed {
    // Leave out rules covered by an earlier tier (they never match) or by a rule of their own
    // tier with the same action (they change nothing). General rules first inside a tier, so
    // that specific ones find their cover.
    let mut kept: Buckets<(usize, LAction)> = Buckets::new();
    let mut tiers: Vec<Vec<(Flat, Entry)>> = Vec::new();
    let mut redundant = 0;
    for (ti, mut tier) in group.tiers.into_iter().enumerate() {
        let mut flats: Vec<(Flat, Entry)> =
            tier.drain(..).map(|e| (Flat::of(&e.pattern), e)).collect();
        flats.sort_by_key(|(f, _)| f.0.len());
        let mut out = Vec::with_capacity(flats.len());
        for (flat, e) in flats {
            let key = bucket_key(&e.pattern);
            if kept.any_cover(key, &flat, |(t, a)| *t < ti || *a == e.action) {
                redundant += 1;
                continue;
            }
            kept.push(key, flat.clone(), (ti, e.action));
            out.push((flat, e));
        }
        tiers.push(out);
    }
    let segments = if split {
        place_split(tiers)
    } else {
        vec![place_layers(tiers)]
    };
    Placed {
        key: group.key,
        port: group.port,
        segments,
        default: group.default,
        redundant,
    }
}

/// One physical group: each tier takes as many priority levels as it needs so that rules
/// sharing a level never overlap.
fn place_layers(tiers: Vec<Vec<(Flat, Entry)>>) -> Segment {
    let mut rules = Vec::new();
    let mut base = 0u32;
    for tier in tiers {
        let mut layers: Vec<Buckets<()>> = Vec::new();
        for (flat, e) in tier {
            let key = bucket_key(&e.pattern);
            let layer = match layers.iter().position(|l| !l.any_overlap(key, &flat)) {
                Some(i) => i,
                None => {
                    layers.push(Buckets::new());
                    layers.len() - 1
                }
            };
            layers[layer].push(key, flat, ());
            rules.push((base + layer as u32, e));
        }
        base += layers.len() as u32;
    }
    Segment {
        rules,
        catch_all_priority: base,
        last: true,
    }
}

/// Exact-match groups (one mask recipe each): runs of rules with one shape, in precedence
/// order, each in its own group whose miss entry continues with the next.
fn place_split(tiers: Vec<Vec<(Flat, Entry)>>) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut current: Vec<(Flat, Entry)> = Vec::new();
    let mut shape = None;
    let flush = |current: &mut Vec<(Flat, Entry)>, segments: &mut Vec<Segment>| {
        if !current.is_empty() {
            segments.push(Segment {
                rules: current.drain(..).map(|(_, e)| (0, e)).collect(),
                catch_all_priority: 1,
                last: false,
            });
        }
    };
    // Same masks, different values: disjoint, so equal flat forms are the only overlaps
    // inside a run (ranges, which have no mask, are compared one by one).
    let mut values: HashSet<Vec<(Field, Constraint)>> = HashSet::new();
    for mut tier in tiers {
        tier.sort_by_cached_key(|(f, _)| f.shape());
        for (flat, e) in tier {
            let s = flat.shape();
            let ranged = s.iter().any(|(_, mask, _)| mask.is_none());
            // An overlap left here means equal patterns with different actions in one tier:
            // keep the first, and start a new group for the other.
            let clash = if ranged {
                current.iter().any(|(f, _)| f.overlaps(&flat))
            } else {
                values.contains(&flat.0)
            };
            if shape.as_ref() != Some(&s) || clash {
                flush(&mut current, &mut segments);
                values.clear();
                shape = Some(s);
            }
            values.insert(flat.0.clone());
            current.push((flat, e));
        }
    }
    flush(&mut current, &mut segments);
    if segments.is_empty() {
        segments.push(Segment {
            rules: Vec::new(),
            catch_all_priority: 0,
            last: true,
        });
    }
    if let Some(last) = segments.last_mut() {
        last.last = true;
    }
    segments
}

fn ip(family: EtherType) -> Ip {
    Ip {
        family,
        src: None,
        dst: None,
        proto: None,
    }
}

fn udp(family: EtherType, src: u16, dst: u16) -> Pattern {
    let exact = |p: u16| {
        PortMatch::Mask(crate::ir::PortMask {
            value: p,
            mask: 0xffff,
        })
    };
    Pattern {
        ip: Some(ip(family)),
        upper: Some(Upper::Ports {
            proto: PortProto::Udp,
            src: Some(exact(src)),
            dst: Some(exact(dst)),
        }),
        ..Pattern::default()
    }
}

fn icmp6(ty: u8) -> Pattern {
    Pattern {
        ip: Some(ip(EtherType::V6)),
        upper: Some(Upper::Icmp {
            icmp_type: Some(ty),
            code: None,
        }),
        ..Pattern::default()
    }
}

/// The pattern of an implicit allowance's traffic (no binding fields).
fn traffic_pattern(traffic: Traffic) -> Pattern {
    match traffic {
        Traffic::Ip(family) => Pattern {
            ip: Some(ip(family)),
            ..Pattern::default()
        },
        Traffic::Udp(family, src, dst) => udp(family, src, dst),
        Traffic::Icmp6(ty) => icmp6(ty),
        Traffic::Arp => arp_any(),
        Traffic::Rarp => Pattern {
            ether_type: Some(ethertype::RARP),
            ..Pattern::default()
        },
    }
}

/// `p` from one IP source (a prefix, or the unspecified address).
fn from_source(mut p: Pattern, net: IpNet) -> Pattern {
    if let Some(ip) = p.ip.as_mut() {
        ip.src = Some(net);
    }
    p
}

fn from_mac(mut p: Pattern, mac: Mac) -> Pattern {
    p.eth_src = Some(mac);
    p
}

fn arp_any() -> Pattern {
    Pattern {
        ether_type: Some(ethertype::ARP),
        ..Pattern::default()
    }
}

/// The report's kind of an implicit allowance.
fn allowance_kind(traffic: Traffic) -> Kind {
    match traffic {
        Traffic::Arp | Traffic::Rarp => Kind::Arp,
        Traffic::Udp(..) => Kind::Dhcp,
        Traffic::Ip(_) | Traffic::Icmp6(_) => Kind::Nd,
    }
}

/// What a VM never sends (DHCP server replies, router advertisements), from any source.
fn forbidden_entries() -> Vec<Entry> {
    implicit::EGRESS_VERIFIED
        .into_iter()
        .filter(|a| a.rank == Rank::Forbidden)
        .map(|a| Entry::new(traffic_pattern(a.traffic), LAction::Drop, Kind::Forbidden))
        .collect()
}

/// Neighbour advertisements with a code other than 0, from any source. Open vSwitch parses
/// no target out of them (nor does the evaluator), so they never pass as advertisements. The
/// `icmp6_nd_na` item matches the target whatever the code, so these drops come first: they
/// go with the forbidden traffic's tier, from which they are disjoint (another type), and take
/// no priority level of their own.
fn na_code_entries() -> Vec<Entry> {
    CodeMatch::nonzero()
        .map(|code| {
            let pattern = Pattern {
                upper: Some(Upper::Icmp {
                    icmp_type: Some(ND_NA),
                    code: Some(code),
                }),
                ..icmp6(ND_NA)
            };
            Entry::new(pattern, LAction::Drop, Kind::NdSpoofed)
        })
        .collect()
}

/// Neighbour discovery and MLD that failed the source checks of the implicit tier, whatever
/// the source (with a bound source they would otherwise reach the rules).
fn nd_spoofed_entries() -> Vec<Entry> {
    implicit::EGRESS_VERIFIED
        .into_iter()
        .filter_map(|a| match a.traffic {
            Traffic::Icmp6(ty) if a.rank != Rank::Forbidden => Some(ty),
            _ => None,
        })
        .map(|ty| Entry::new(icmp6(ty), LAction::Drop, Kind::NdSpoofed))
        .collect()
}

/// ARP with `eth src` = `arp sha` = MAC and `arp spa` the address.
fn arp_entry(mac: Mac, spa: ipnet::Ipv4Net, accept: LAction) -> Entry {
    let pattern = Pattern {
        eth_src: Some(mac),
        upper: Some(Upper::Arp { sha: mac, spa }),
        ..Pattern::default()
    };
    Entry::new(pattern, accept, Kind::Arp)
}

/// A neighbour advertisement from MAC for a target it may use.
fn na_entry(mac: Mac, target: IpNet, accept: LAction) -> Entry {
    let pattern = Pattern {
        eth_src: Some(mac),
        ip: Some(ip(EtherType::V6)),
        upper: Some(Upper::NdNa { target }),
        ..Pattern::default()
    };
    Entry::new(pattern, accept, Kind::Nd)
}

/// Whether an entry checks a neighbour advertisement by target.
fn is_na(e: &Entry) -> bool {
    matches!(e.pattern.upper, Some(Upper::NdNa { .. }))
}

/// The implicit allowances of a verified (MAC, source) binding: DHCP client, MLD, RS, NS.
fn verified_entries(mac: Mac, net: IpNet, accept: LAction) -> Vec<Entry> {
    implicit::EGRESS_VERIFIED
        .into_iter()
        .filter(|a| a.rank == Rank::Implicit)
        .filter(|a| a.traffic.family() == Some(EtherType::of_net(&net)))
        .map(|a| {
            let p = from_source(traffic_pattern(a.traffic), net);
            Entry::new(from_mac(p, mac), accept, allowance_kind(a.traffic))
        })
        .collect()
}

/// From a MAC of the port without an address: DHCP DISCOVER, RS/NS/MLDv2 from `::`, RARP.
fn unaddressed_entries(mac: Mac, accept: LAction) -> Vec<Entry> {
    implicit::EGRESS_UNADDRESSED
        .into_iter()
        .map(|a| {
            let p = match a.traffic.family() {
                Some(family) => {
                    let any = IpNet::from(implicit::unspecified(family));
                    from_source(traffic_pattern(a.traffic), any)
                }
                None => traffic_pattern(a.traffic),
            };
            Entry::new(from_mac(p, mac), accept, allowance_kind(a.traffic))
        })
        .collect()
}

/// IP from a bound (MAC, source): on to the rules (or software).
fn source_entry(mac: Mac, net: IpNet, next: LAction) -> Entry {
    let mut l3 = ip(EtherType::of_net(&net));
    l3.src = Some(net);
    let pattern = Pattern {
        eth_src: Some(mac),
        ip: Some(l3),
        ..Pattern::default()
    };
    Entry::new(pattern, next, Kind::IpSource)
}

/// The patterns of one security-group rule: exact ones, and coarser ones for what the profile
/// cannot express (their traffic goes to software).
struct Lowered {
    exact: Vec<Pattern>,
    fallback: Vec<Pattern>,
    unsupported: Option<&'static str>,
}

fn lower(rule: &PolicyRule, options: &RteFlowOptions) -> Lowered {
    let profile = options.profile;
    let remotes: Vec<Option<IpNet>> = match rule.remote.nets() {
        None => vec![None],
        Some(nets) => nets.iter().copied().map(Some).collect(),
    };
    let port_matches = |r: crate::model::PortRange| -> Vec<Option<PortMatch>> {
        if r.is_any() {
            vec![None]
        } else if profile.ranges {
            vec![Some(PortMatch::Range(r))]
        } else {
            port_masks(r)
                .into_iter()
                .map(|m| Some(PortMatch::Mask(m)))
                .collect()
        }
    };
    let mut out = Lowered {
        exact: Vec::new(),
        fallback: Vec::new(),
        unsupported: None,
    };
    for remote in remotes {
        let mut base = ip(rule.ethertype);
        match rule.direction {
            Direction::Ingress => base.src = remote,
            Direction::Egress => base.dst = remote,
        }
        let with = |ip: Ip, upper: Option<Upper>| Pattern {
            ip: Some(ip),
            upper,
            ..Pattern::default()
        };
        match (rule.protocol, rule.l4) {
            (None, _) => out.exact.push(with(base, None)),
            (Some(p), L4::Ports { dst, src }) if protocol::has_matchable_ports(p) => {
                let proto = PortProto::of(p).unwrap_or(PortProto::Tcp);
                if proto == PortProto::Sctp && !profile.sctp_item {
                    out.unsupported = Some("sctp");
                    out.fallback.push(with(
                        Ip {
                            proto: Some(p),
                            ..base
                        },
                        None,
                    ));
                    continue;
                }
                for d in port_matches(dst) {
                    for s in port_matches(src) {
                        out.exact.push(with(
                            base,
                            Some(Upper::Ports {
                                proto,
                                src: s,
                                dst: d,
                            }),
                        ));
                    }
                }
            }
            (Some(p), L4::Icmp { icmp_type, code }) if protocol::is_icmp(p) => {
                out.exact.push(with(
                    base,
                    Some(Upper::Icmp {
                        icmp_type: Some(icmp_type),
                        code: code.map(CodeMatch::exact),
                    }),
                ));
            }
            (Some(p), _) => out.exact.push(with(
                Ip {
                    proto: Some(p),
                    ..base
                },
                None,
            )),
        }
    }
    out
}

/// The rule whose patterns enforce `rule`: itself, or (after the rule algebra) the rule that
/// covers it or that it was merged into. `None` for a rule that matches nothing.
fn enforcing_rule(rule: &RuleRef, fates: &BTreeMap<RuleRef, OptFate>) -> Option<RuleRef> {
    let mut current = rule.clone();
    // Fates point at kept rules, but follow a short chain defensively.
    for _ in 0..8 {
        match fates.get(&current) {
            None => return Some(current),
            Some(OptFate::SubsumedBy(r) | OptFate::MergedInto(r)) => current = r.clone(),
            Some(OptFate::NoMembers) => return None,
        }
    }
    Some(current)
}

/// Placed groups with the group numbers of their segments.
type Numbered = Vec<(Vec<u32>, Placed)>;

/// What the layout learns about a port while building its groups.
struct PortPlan {
    rep: u16,
    groups: Vec<Placed>,
    report: PortReport,
}

struct Builder<'a> {
    model: &'a Model,
    opts: &'a RteFlowOptions,
}

impl Builder<'_> {
    fn software_ingress(&self) -> LAction {
        LAction::ToSoftware(self.opts.uplink_port)
    }

    /// The groups of a filtered port, before placement, in numbering order: egress base,
    /// egress rules (stateless ports), ingress base, ingress rules (stateless ports).
    fn port_groups(&self, port: &Port, rep: u16, report: &mut PortReport) -> Vec<LGroup> {
        let stateful = self.model.port_is_stateful(port);
        let mut groups = vec![self.egress_base_group(port, rep, stateful, report)];
        let ingress_base = self.ingress_base_group(port, rep, stateful);
        report.offloaded = self.offloaded_base();
        let rule_groups = if stateful {
            self.report_stateful_rules(port, report);
            Vec::new()
        } else {
            self.stateless_rule_groups(port, rep, report)
        };
        let mut rule_groups = rule_groups.into_iter();
        if let Some(g) = rule_groups.next() {
            groups.push(g);
        }
        groups.push(ingress_base);
        groups.extend(rule_groups);
        groups
    }

    /// Where a port's accepted egress goes (its accept group, or software).
    fn accept_action(&self, rep: u16) -> LAction {
        match self.opts.forward {
            Forward::Software => LAction::ToSoftware(rep),
            Forward::Uplink => LAction::Jump(Key::Port(rep, Role::Accept)),
        }
    }

    /// Egress base: forbidden traffic, the implicit allowances of each of the port's bindings
    /// (`src/ir/implicit.rs`), what the profile sends to software, spoofed neighbour
    /// discovery, then IP by source binding. The drops of what a VM never sends are matched
    /// whatever the source (an unbound source is dropped anyway).
    fn egress_base_group(
        &self,
        port: &Port,
        rep: u16,
        stateful: bool,
        report: &mut PortReport,
    ) -> LGroup {
        let profile = self.opts.profile;
        let key = |role| Key::Port(rep, role);
        let accept = self.accept_action(rep);
        let ip_next = if stateful {
            LAction::ToSoftware(rep)
        } else {
            LAction::Jump(key(Role::EgressRules))
        };
        let mut forbidden = forbidden_entries();
        let mut implicit = Vec::new();
        let mut ip_source = Vec::new();
        for binding in implicit::port_bindings(port) {
            match binding {
                Binding::Arp(mac, IpNet::V4(spa)) if profile.arp_item => {
                    implicit.push(arp_entry(mac, spa, accept));
                }
                Binding::NdTarget(mac, net) if profile.nd_items => {
                    implicit.push(na_entry(mac, net, accept));
                }
                // Without the item, all ARP / NA goes to software (below).
                Binding::Arp(..) | Binding::NdTarget(..) => {}
                Binding::Source(mac, net) => {
                    implicit.extend(verified_entries(mac, net, accept));
                    ip_source.push(source_entry(mac, net, ip_next));
                }
                Binding::Mac(mac) => implicit.extend(unaddressed_entries(mac, accept)),
            }
        }
        // The advertisements accepted by target must have code 0 (see `na_code_entries`).
        if implicit.iter().any(is_na) {
            forbidden.extend(na_code_entries());
        }
        let to_software = self.egress_to_software(rep, report);
        LGroup {
            key: key(Role::EgressBase),
            port: Some(port.id.clone()),
            tiers: vec![
                forbidden,
                implicit,
                to_software,
                nd_spoofed_entries(),
                ip_source,
            ],
            default: LAction::Drop,
        }
    }

    /// ARP and neighbour advertisements from the VM, for a profile that cannot check their
    /// bindings: all to software (never allowed unchecked).
    fn egress_to_software(&self, rep: u16, report: &mut PortReport) -> Vec<Entry> {
        let profile = self.opts.profile;
        let to_sw = LAction::ToSoftware(rep);
        let mut out = Vec::new();
        if !profile.arp_item {
            out.push(Entry::new(arp_any(), to_sw, Kind::Arp));
            report.software.push((
                "ARP from the VM".into(),
                Reason::ItemUnsupported("arp_eth_ipv4"),
            ));
        }
        if !profile.nd_items {
            out.push(Entry::new(icmp6(ND_NA), to_sw, Kind::Nd));
            report.software.push((
                "neighbour advertisements from the VM".into(),
                Reason::ItemUnsupported("icmp6_nd_na"),
            ));
        }
        out
    }

    /// Ingress base: ARP, DHCP replies and ND to the VM; IP on to the rules (or software).
    fn ingress_base_group(&self, port: &Port, rep: u16, stateful: bool) -> LGroup {
        let key = |role| Key::Port(rep, role);
        let to_vm = LAction::ToPort(rep);
        let implicit_in: Vec<Entry> = implicit::INGRESS
            .into_iter()
            .filter(|a| a.fate == Fate::Accept)
            .map(|a| {
                let kind = match a.traffic {
                    Traffic::Arp => Kind::Arp,
                    Traffic::Udp(..) => Kind::Dhcp,
                    _ => Kind::Nd,
                };
                Entry::new(traffic_pattern(a.traffic), to_vm, kind)
            })
            .collect();
        let ip_in = if stateful {
            self.software_ingress()
        } else {
            LAction::Jump(key(Role::IngressRules))
        };
        let ip_tier = [EtherType::V4, EtherType::V6]
            .into_iter()
            .map(|f| {
                Entry::new(
                    Pattern {
                        ip: Some(ip(f)),
                        ..Pattern::default()
                    },
                    ip_in,
                    Kind::Ip,
                )
            })
            .collect();
        LGroup {
            key: key(Role::IngressBase),
            port: Some(port.id.clone()),
            tiers: vec![implicit_in, ip_tier],
            default: LAction::Drop,
        }
    }

    /// What the base groups offload, for the report.
    fn offloaded_base(&self) -> Vec<String> {
        let profile = self.opts.profile;
        vec![
            "IP/MAC anti-spoofing".into(),
            "DHCP client and DHCP/RA server drops".into(),
            if profile.arp_item {
                "ARP with sender checks".into()
            } else {
                "ARP to the VM".into()
            },
            "neighbour discovery with source checks".into(),
        ]
    }

    /// A stateful port's rules all run in software (conntrack): say so in the report.
    fn report_stateful_rules(&self, port: &Port, report: &mut PortReport) {
        report
            .software
            .push(("IP traffic (rules)".into(), Reason::StatefulConntrack));
        report
            .software
            .push(("ICMP errors of connections".into(), Reason::IcmpRelated));
        report
            .software
            .push(("IP fragments".into(), Reason::Fragments));
        for (group, rule) in self.model.port_rules(port) {
            report.rules.push(RuleReport {
                rule: RuleRef {
                    group: group.id.clone(),
                    index: rule.index,
                },
                direction: rule.direction,
                status: RuleStatus::Software(Reason::StatefulConntrack),
                rte_rules: 0,
            });
        }
    }

    /// A stateless port's egress and ingress rule groups, each rule lowered to exact patterns
    /// and to coarser ones (to software) for what the profile cannot express.
    fn stateless_rule_groups(&self, port: &Port, rep: u16, report: &mut PortReport) -> Vec<LGroup> {
        let key = |role| Key::Port(rep, role);
        let accept = self.accept_action(rep);
        let to_sw_egress = LAction::ToSoftware(rep);
        let to_vm = LAction::ToPort(rep);
        report
            .offloaded
            .push("security-group rules (stateless)".into());
        let mut rule_groups = Vec::new();
        let mut tiers: BTreeMap<Direction, (Vec<Entry>, Vec<Entry>)> = BTreeMap::new();
        // The rule algebra, as for OpenFlow: covered rules dropped, adjacent ranges and
        // prefixes merged (the union of allows is kept), before lowering.
        let optimised = optimise(resolve_rules(self.model, port));
        let mut unsupported: BTreeMap<RuleRef, Option<&'static str>> = BTreeMap::new();
        for rule in &optimised.rules {
            let (allow, fallback) = match rule.direction {
                Direction::Egress => (accept, to_sw_egress),
                Direction::Ingress => (to_vm, self.software_ingress()),
            };
            let lowered = lower(rule, self.opts);
            let slot = tiers.entry(rule.direction).or_default();
            for p in lowered.exact {
                let mut e = Entry::new(p, allow, Kind::Rule);
                e.rule = Some(rule.origin.clone());
                slot.0.push(e);
            }
            for p in lowered.fallback {
                let mut e = Entry::new(p, fallback, Kind::RuleFallback);
                e.rule = Some(rule.origin.clone());
                slot.1.push(e);
            }
            unsupported.insert(rule.origin.clone(), lowered.unsupported);
        }
        let fates: BTreeMap<RuleRef, OptFate> = optimised.fates.into_iter().collect();
        for (group, rule) in self.model.port_rules(port) {
            let origin = RuleRef {
                group: group.id.clone(),
                index: rule.index,
            };
            let status = match enforcing_rule(&origin, &fates).and_then(|r| unsupported.get(&r)) {
                Some(Some(item)) => RuleStatus::Software(Reason::ItemUnsupported(item)),
                _ => RuleStatus::Offloaded,
            };
            report.rules.push(RuleReport {
                rule: origin,
                direction: rule.direction,
                status,
                rte_rules: 0,
            });
        }
        for (direction, role) in [
            (Direction::Egress, Role::EgressRules),
            (Direction::Ingress, Role::IngressRules),
        ] {
            let (exact, fallback) = tiers.remove(&direction).unwrap_or_default();
            rule_groups.push(LGroup {
                key: key(role),
                port: Some(port.id.clone()),
                tiers: vec![exact, fallback],
                default: LAction::Drop,
            });
        }
        rule_groups
    }

    /// The accept group of a port (forward target `uplink`): other local ports of its network
    /// by destination MAC, group addresses to software, the rest to the uplink.
    fn accept_group(&self, port: &Port, rep: u16, dispatch: &BTreeMap<Mac, Dest>) -> LGroup {
        let mut local = Vec::new();
        for other in &self.model.ports {
            if other.id == port.id || other.network_id != port.network_id {
                continue;
            }
            for mac in other.macs() {
                let action = match dispatch.get(&mac) {
                    Some(Dest::Filter(r)) => LAction::Jump(Key::Port(*r, Role::IngressBase)),
                    Some(Dest::Direct(r)) => LAction::ToPort(*r),
                    Some(Dest::Software) | None => LAction::ToSoftware(rep),
                };
                local.push(Entry::new(
                    Pattern {
                        eth_dst: Some(MacMatch::exact(mac)),
                        ..Pattern::default()
                    },
                    action,
                    Kind::Local,
                ));
            }
        }
        let multicast = vec![Entry::new(
            Pattern {
                eth_dst: Some(MacMatch::group()),
                ..Pattern::default()
            },
            LAction::ToSoftware(rep),
            Kind::Multicast,
        )];
        LGroup {
            key: Key::Port(rep, Role::Accept),
            port: Some(port.id.clone()),
            tiers: vec![multicast, local],
            default: LAction::ToPort(self.opts.uplink_port),
        }
    }
}

/// Where traffic for a MAC goes from the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// Into the port's ingress groups.
    Filter(u16),
    /// Straight to an unfiltered port.
    Direct(u16),
    /// To software (shared MAC, or the port's rules did not fit).
    Software,
}

fn limit_problem(placed: &[Placed], options: &RteFlowOptions) -> Option<String> {
    let segments: usize = placed.iter().map(|p| p.segments.len()).sum();
    if segments > STRIDE as usize {
        return Some(format!("needs {segments} groups, a port has {STRIDE}"));
    }
    let max_priority = placed
        .iter()
        .flat_map(|p| &p.segments)
        .map(|s| s.catch_all_priority)
        .max()
        .unwrap_or(0);
    if max_priority > options.profile.max_priority {
        return Some(format!(
            "needs priority {max_priority}, profile {} allows 0..{}",
            options.profile.name, options.profile.max_priority
        ));
    }
    None
}

pub(super) fn build(model: &Model, options: &RteFlowOptions) -> Result<RteCompiled> {
    let b = Builder {
        model,
        opts: options,
    };
    let split = options.profile.one_mask_per_group;
    let (mut plans, fallback) = plan_ports(&b, split)?;
    let dispatch = uplink_dispatch(model, &mut plans, &fallback);
    if options.forward == Forward::Uplink {
        add_accept_groups(&b, &mut plans, &dispatch, &fallback, split);
    }
    let root = root_group(model, options, &plans, &dispatch, &fallback)?;
    let (numbers, all) = number_groups(&mut plans, root)?;
    let (rules, redundant) = emit_rules(all, &numbers, options);
    check_rule_limits(&rules, options)?;
    Ok(finish(model, options, rules, plans, redundant))
}

/// Every port's groups, placed; and the ports that fall back to software entirely (a profile
/// limit they exceed), with why.
fn plan_ports(b: &Builder<'_>, split: bool) -> Result<(Vec<PortPlan>, BTreeMap<String, String>)> {
    let mut plans: Vec<PortPlan> = Vec::new();
    let mut fallback: BTreeMap<String, String> = BTreeMap::new();
    let mut placed_total = 0usize;
    for port in &b.model.ports {
        let Some(rep) = port.representor else {
            continue;
        };
        let (plan, problem) = plan_port(b, port, rep, split, &mut placed_total)?;
        if let Some(problem) = problem {
            fallback.insert(port.id.clone(), problem);
        }
        plans.push(plan);
    }
    Ok((plans, fallback))
}

/// One port's groups, placed, with its report; and the profile limit it exceeds, if any.
fn plan_port(
    b: &Builder<'_>,
    port: &Port,
    rep: u16,
    split: bool,
    placed_total: &mut usize,
) -> Result<(PortPlan, Option<String>)> {
    let (model, options) = (b.model, b.opts);
    let stateful = port.is_filtered() && model.port_is_stateful(port);
    let mut report = PortReport {
        port: port.id.clone(),
        representor: rep,
        mode: PortMode::Unfiltered,
        stateful,
        groups: Vec::new(),
        rte_rules: 0,
        offloaded: Vec::new(),
        software: Vec::new(),
        rules: Vec::new(),
    };
    let mut groups = Vec::new();
    let mut fallback = None;
    if port.is_filtered() {
        let logical = b.port_groups(port, rep, &mut report);
        // Refuse before placing: placement is quadratic in a group's size.
        let size: usize = logical.iter().flat_map(|g| &g.tiers).map(Vec::len).sum();
        if size > options.max_rules {
            return Err(Error::TooManyFlows {
                limit: options.max_rules,
                at: format!("ports.{}", port.id),
            });
        }
        groups = logical.into_iter().map(|g| place(g, split)).collect();
        report.mode = if report.software.is_empty()
            && report
                .rules
                .iter()
                .all(|r| r.status == RuleStatus::Offloaded)
        {
            PortMode::Offloaded
        } else {
            PortMode::Partial
        };
        if let Some(problem) = limit_problem(&groups, options) {
            groups.clear();
            report.mode = PortMode::Software;
            report.offloaded.clear();
            report.software = vec![("all traffic".into(), Reason::ProfileLimit(problem.clone()))];
            for r in &mut report.rules {
                r.status = RuleStatus::Software(Reason::ProfileLimit(problem.clone()));
            }
            fallback = Some(problem);
        }
        // Stop as soon as the placed rules pass the cap, not after the whole model.
        *placed_total += groups
            .iter()
            .flat_map(|g| &g.segments)
            .map(|seg| seg.rules.len() + 1)
            .sum::<usize>();
        if *placed_total > options.max_rules {
            return Err(Error::TooManyFlows {
                limit: options.max_rules,
                at: format!("ports.{}", port.id),
            });
        }
    } else {
        report.offloaded.push("forwarding (no filtering)".into());
    }
    Ok((
        PortPlan {
            rep,
            groups,
            report,
        },
        fallback,
    ))
}

/// Where frames from the uplink go by destination MAC. A MAC two ports share goes to software
/// (and both ports' reports say so).
fn uplink_dispatch(
    model: &Model,
    plans: &mut [PortPlan],
    fallback: &BTreeMap<String, String>,
) -> BTreeMap<Mac, Dest> {
    // Destination MACs from the uplink: a MAC two ports share goes to software.
    let mut owners: BTreeMap<Mac, Vec<usize>> = BTreeMap::new();
    for (i, port) in model.ports.iter().enumerate() {
        if port.representor.is_some() {
            for mac in port.macs() {
                owners.entry(mac).or_default().push(i);
            }
        }
    }
    let mut dispatch: BTreeMap<Mac, Dest> = BTreeMap::new();
    for (mac, who) in &owners {
        let dest = if let [i] = who.as_slice() {
            let port = &model.ports[*i];
            let rep = port.representor.unwrap_or_default();
            if !port.is_filtered() {
                Dest::Direct(rep)
            } else if fallback.contains_key(&port.id) {
                Dest::Software
            } else {
                Dest::Filter(rep)
            }
        } else {
            for i in who {
                let others: Vec<&str> = who
                    .iter()
                    .filter(|j| *j != i)
                    .map(|j| model.ports[*j].id.as_str())
                    .collect();
                if let Some(plan) = plans
                    .iter_mut()
                    .find(|p| p.report.port == model.ports[*i].id)
                {
                    plan.report.software.push((
                        format!("traffic to {mac}"),
                        Reason::SharedMac(others.join(", ")),
                    ));
                    if plan.report.mode == PortMode::Offloaded {
                        plan.report.mode = PortMode::Partial;
                    }
                }
            }
            Dest::Software
        };
        dispatch.insert(*mac, dest);
    }

    dispatch
}

/// With forward target `uplink`: each port's accept group, placed after its egress groups.
fn add_accept_groups(
    b: &Builder<'_>,
    plans: &mut [PortPlan],
    dispatch: &BTreeMap<Mac, Dest>,
    fallback: &BTreeMap<String, String>,
    split: bool,
) {
    let model = b.model;
    for (port, plan) in model.ports.iter().zip(plans.iter_mut()) {
        let filtered_ok = port.is_filtered() && !fallback.contains_key(&port.id);
        if filtered_ok || !port.is_filtered() {
            let g = b.accept_group(port, plan.rep, dispatch);
            let placed = place(g, split);
            let at = plan
                .groups
                .iter()
                .position(|p| matches!(p.key, Key::Port(_, r) if r > Role::Accept))
                .unwrap_or(plan.groups.len());
            plan.groups.insert(at, placed);
        }
    }
}

/// Group 0: traffic from each representor to its port's first group, traffic from the
/// uplink by destination MAC, the rest of the uplink's and everything else to software.
fn root_group(
    model: &Model,
    options: &RteFlowOptions,
    plans: &[PortPlan],
    dispatch: &BTreeMap<Mac, Dest>,
    fallback: &BTreeMap<String, String>,
) -> Result<Placed> {
    let mut from_vms = Vec::new();
    for (port, plan) in model.ports.iter().zip(plans) {
        let action = if !port.is_filtered() {
            match options.forward {
                Forward::Software => LAction::ToSoftware(plan.rep),
                Forward::Uplink => LAction::Jump(Key::Port(plan.rep, Role::Accept)),
            }
        } else if fallback.contains_key(&port.id) {
            LAction::ToSoftware(plan.rep)
        } else {
            LAction::Jump(Key::Port(plan.rep, Role::EgressBase))
        };
        from_vms.push(Entry::new(
            Pattern {
                source: Some(Source(plan.rep)),
                ..Pattern::default()
            },
            action,
            Kind::Dispatch,
        ));
    }
    let uplink = Source(options.uplink_port);
    for (mac, dest) in dispatch {
        let action = match dest {
            Dest::Filter(r) => LAction::Jump(Key::Port(*r, Role::IngressBase)),
            Dest::Direct(r) => LAction::ToPort(*r),
            Dest::Software => continue,
        };
        from_vms.push(Entry::new(
            Pattern {
                source: Some(uplink),
                eth_dst: Some(MacMatch::exact(*mac)),
                ..Pattern::default()
            },
            action,
            Kind::Dispatch,
        ));
    }
    let rest_of_uplink = vec![Entry::new(
        Pattern {
            source: Some(uplink),
            ..Pattern::default()
        },
        LAction::ToSoftware(options.uplink_port),
        Kind::Dispatch,
    )];
    // Dispatch rules are distinct by construction: their number is known before placement.
    let root_rules = from_vms.len() + rest_of_uplink.len() + 1;
    if let Some(limit) = options.profile.max_rules_root {
        if root_rules > limit {
            return Err(root_limit(root_rules, limit, options));
        }
    }
    if root_rules > options.max_rules {
        return Err(Error::TooManyFlows {
            limit: options.max_rules,
            at: "group 0".into(),
        });
    }
    let root = place(
        LGroup {
            key: Key::Root,
            port: None,
            tiers: vec![from_vms, rest_of_uplink],
            default: LAction::ToSoftware(options.proxy_port),
        },
        false,
    );
    let root_priority = root.segments[0].catch_all_priority;
    if root_priority > options.profile.max_priority_root {
        return Err(Error::Invalid(vec![Issue::new(
            "",
            format!(
                "group 0 needs priority {root_priority}, profile {} allows 0..{}",
                options.profile.name, options.profile.max_priority_root
            ),
        )]));
    }

    Ok(root)
}

/// Gives out group numbers (the one place that does: a port's groups from
/// `(representor + 1) * STRIDE` on, group 0 for the root) and lists every placed group with
/// its numbers, the root first; an error when a port's groups exceed its range (checked on the
/// final list, the accept group of `forward=uplink` included).
fn number_groups(plans: &mut [PortPlan], root: Placed) -> Result<(BTreeMap<Key, u32>, Numbered)> {
    let mut numbers: BTreeMap<Key, u32> = BTreeMap::new();
    numbers.insert(Key::Root, 0);
    let mut all: Vec<(Vec<u32>, Placed)> = Vec::new();
    for plan in plans.iter_mut() {
        let segments = plan.groups.iter().map(|g| g.segments.len());
        super::budget::check_port_groups(&plan.report.port, segments, STRIDE)?;
        let mut next = (u32::from(plan.rep) + 1) * STRIDE;
        for placed in plan.groups.drain(..) {
            numbers.insert(placed.key, next);
            let ids: Vec<u32> = (next..next + placed.segments.len() as u32).collect();
            plan.report.groups.extend(&ids);
            next += placed.segments.len() as u32;
            all.push((ids, placed));
        }
    }
    all.insert(0, (vec![0], root));
    Ok((numbers, all))
}

/// The rte_flow rules of the placed groups, jumps resolved to group numbers, each segment
/// ended by its catch-all or its chain to the next; and how many rules placement left out.
fn emit_rules(
    all: Numbered,
    numbers: &BTreeMap<Key, u32>,
    options: &RteFlowOptions,
) -> (Vec<RteRule>, usize) {
    let resolve = |a: LAction| -> Action {
        match a {
            LAction::Jump(k) => Action::Jump(numbers[&k]),
            LAction::Drop => Action::Drop,
            LAction::ToPort(p) => Action::ToPort(p),
            LAction::ToSoftware(p) => Action::ToSoftware(p),
        }
    };
    let count = options.count && options.profile.count;
    let mut rules: Vec<RteRule> = Vec::new();
    let mut redundant = 0;
    for (ids, placed) in all {
        redundant += placed.redundant;
        let n = placed.segments.len();
        for (i, seg) in placed.segments.into_iter().enumerate() {
            let group = ids[i];
            let mut seg_rules: Vec<RteRule> = seg
                .rules
                .into_iter()
                .map(|(priority, e)| RteRule {
                    group,
                    priority,
                    pattern: e.pattern,
                    action: resolve(e.action),
                    count,
                    port: placed.port.clone(),
                    kind: e.kind,
                    rule: e.rule,
                })
                .collect();
            seg_rules.sort_by_key(|r| r.priority);
            rules.extend(seg_rules);
            let (action, kind) = if seg.last || i + 1 == n {
                (resolve(placed.default), Kind::CatchAll)
            } else {
                (Action::Jump(ids[i + 1]), Kind::Chain)
            };
            rules.push(RteRule {
                group,
                priority: seg.catch_all_priority,
                pattern: Pattern::any(),
                action,
                count,
                port: placed.port.clone(),
                kind,
                rule: None,
            });
        }
    }
    (rules, redundant)
}

/// The caller's cap and the profile's on the total number of rules.
fn check_rule_limits(rules: &[RteRule], options: &RteFlowOptions) -> Result<()> {
    if rules.len() > options.max_rules {
        return Err(Error::TooManyFlows {
            limit: options.max_rules,
            at: "the whole model".into(),
        });
    }
    if let Some(limit) = options.profile.max_rules {
        if rules.len() > limit {
            return Err(Error::Invalid(vec![Issue::new(
                "",
                format!(
                    "the model needs {} rte_flow rules; profile {} allows {limit}",
                    rules.len(),
                    options.profile.name
                ),
            )]));
        }
    }
    Ok(())
}

fn root_limit(root_rules: usize, limit: usize, options: &RteFlowOptions) -> Error {
    Error::Invalid(vec![Issue::new(
        "",
        format!(
            "group 0 needs {root_rules} rules (one per port and one per MAC); profile {} allows {limit}",
            options.profile.name
        ),
    )])
}

fn finish(
    model: &Model,
    options: &RteFlowOptions,
    rules: Vec<RteRule>,
    plans: Vec<PortPlan>,
    redundant: usize,
) -> RteCompiled {
    let mut stats = Stats {
        ports: model.ports.len(),
        filtered_ports: model.ports.iter().filter(|p| p.is_filtered()).count(),
        rules: rules.len(),
        redundant,
        ..Stats::default()
    };
    // Group 0's rules belong to a port by the representor or MAC they dispatch.
    let mut rep_owner: BTreeMap<u16, String> = BTreeMap::new();
    let mut mac_owner: BTreeMap<Mac, String> = BTreeMap::new();
    for p in &model.ports {
        if let Some(r) = p.representor {
            rep_owner.insert(r, p.id.clone());
        }
        for m in p.macs() {
            mac_owner.insert(m, p.id.clone());
        }
    }
    let mut per_port_rule: BTreeMap<(String, RuleRef), usize> = BTreeMap::new();
    for r in &rules {
        *stats.per_group.entry(r.group).or_default() += 1;
        *stats
            .per_kind
            .entry(r.kind.as_str().to_string())
            .or_default() += 1;
        stats.max_priority = stats.max_priority.max(r.priority);
        let owner = r.port.clone().or_else(|| match r.pattern.source {
            Some(Source(s)) if s != options.uplink_port => rep_owner.get(&s).cloned(),
            _ => r
                .pattern
                .eth_dst
                .and_then(|m| mac_owner.get(&m.value).cloned()),
        });
        if let Some(p) = owner {
            *stats.per_port.entry(p.clone()).or_default() += 1;
            if let Some(rule) = &r.rule {
                *per_port_rule.entry((p, rule.clone())).or_default() += 1;
            }
        }
        if let Some(rule) = &r.rule {
            *stats.per_rule.entry(rule.to_string()).or_default() += 1;
        }
    }
    stats.groups = stats.per_group.len();
    let mut ports: Vec<PortReport> = plans.into_iter().map(|p| p.report).collect();
    for p in &mut ports {
        p.rte_rules = stats.per_port.get(&p.port).copied().unwrap_or(0);
        for r in &mut p.rules {
            r.rte_rules = per_port_rule
                .get(&(p.port.clone(), r.rule.clone()))
                .copied()
                .unwrap_or(0);
        }
    }
    ports.sort_by(|a, b| a.port.cmp(&b.port));
    RteCompiled {
        rules,
        stats,
        report: Report { ports },
        warnings: model.warnings.clone(),
        options: options.clone(),
    }
}
