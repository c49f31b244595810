//! What a port may send and receive without rules, and from which bindings: one table of
//! implicit allowances per stage and one binding list per port. The backends render these;
//! the evaluator (`src/eval`) restates the same semantics independently, and the proofs hold
//! the two together.
//!
//! Traffic from a VM passes through two stages. The **binding** stage depends on the port:
//! an ARP sender binding or a neighbour-advertisement target binding accepts the packet; an IP
//! source binding (MAC, address) hands it to the [`EGRESS_VERIFIED`] stage; a packet that has
//! only a MAC of the port goes to the [`EGRESS_UNADDRESSED`] stage; anything else is dropped.
//! The protocol stages depend on no port, so the OpenFlow backend can emit them once per
//! bridge. Traffic to a VM has one stage, [`INGRESS`].

use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{EtherType, Mac, Port};

/// What an allowance matches, above the bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Traffic {
    /// Any IP packet of the family.
    Ip(EtherType),
    /// UDP of the family from one port to another.
    Udp(EtherType, u16, u16),
    /// ICMPv6 of one type (any code).
    Icmp6(u8),
    /// ARP (any operation).
    Arp,
    /// RARP (Ethernet type 0x8035).
    Rarp,
}

impl Traffic {
    /// The IP family, for IP traffic.
    pub fn family(self) -> Option<EtherType> {
        match self {
            Traffic::Ip(f) | Traffic::Udp(f, _, _) => Some(f),
            Traffic::Icmp6(_) => Some(EtherType::V6),
            Traffic::Arp | Traffic::Rarp => None,
        }
    }
}

/// What an allowance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fate {
    /// Accepted without rules or conntrack.
    Accept,
    /// Dropped whatever the rules say.
    Drop,
    /// On to conntrack (stateful ports) and the rules.
    Rules,
}

/// How an allowance ranks against the others of its stage (higher first). Allowances of one
/// stage never overlap at one rank with different fates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// Only addresses outside the port pass the rules (`Fate::Rules`).
    Rules,
    /// Neighbour advertisements whose target is not bound (the binding stage accepted the
    /// others).
    Spoofed,
    /// What the port needs to work: DHCP client, ARP, neighbour discovery.
    Implicit,
    /// What a VM never sends: DHCP server replies, router advertisements.
    Forbidden,
}

/// One implicit allowance: a kind of traffic and its fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Allowance {
    /// Precedence inside the stage.
    pub rank: Rank,
    /// What it matches.
    pub traffic: Traffic,
    /// What happens to it.
    pub fate: Fate,
}

const fn allow(rank: Rank, traffic: Traffic, fate: Fate) -> Allowance {
    Allowance {
        rank,
        traffic,
        fate,
    }
}

use EtherType::{V4, V6};

/// From the VM, with a verified (MAC, source address) binding. ICMPv6 redirects (137) meet
/// the rules like other IP: a host honours a redirect only from its current first-hop
/// router's link-local address (RFC 4861 §8.1), which anti-spoofing keeps a VM from forging,
/// so only a VM that routes can redirect, and Neutron lets the rules decide too. Router
/// advertisements are accepted from any link-local source, hence dropped.
pub const EGRESS_VERIFIED: [Allowance; 14] = [
    allow(Rank::Forbidden, Traffic::Udp(V4, 67, 68), Fate::Drop),
    allow(Rank::Forbidden, Traffic::Udp(V6, 547, 546), Fate::Drop),
    allow(Rank::Forbidden, Traffic::Icmp6(134), Fate::Drop),
    allow(Rank::Implicit, Traffic::Udp(V4, 68, 67), Fate::Accept),
    allow(Rank::Implicit, Traffic::Udp(V6, 546, 547), Fate::Accept),
    // MLD (query, report, done, MLDv2 report), router and neighbour solicitations. Egress
    // MLD stays implicit: under MLD snooping, solicited-node groups must be joined for
    // neighbour discovery to work.
    allow(Rank::Implicit, Traffic::Icmp6(130), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(131), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(132), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(133), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(135), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(143), Fate::Accept),
    allow(Rank::Spoofed, Traffic::Icmp6(136), Fate::Drop),
    allow(Rank::Rules, Traffic::Ip(V4), Fate::Rules),
    allow(Rank::Rules, Traffic::Ip(V6), Fate::Rules),
];

/// From one of the port's MACs with no verified address: IP traffic here is from the
/// unspecified address (`0.0.0.0`, `::`) — a DHCP DISCOVER, a router solicitation before an
/// address is assigned (RFC 4861 §6.3.7), duplicate address detection — and RARP, with
/// which QEMU announces a migrated guest. Everything else is dropped.
pub const EGRESS_UNADDRESSED: [Allowance; 5] = [
    allow(Rank::Implicit, Traffic::Udp(V4, 68, 67), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(133), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(135), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(143), Fate::Accept),
    allow(Rank::Implicit, Traffic::Rarp, Fate::Accept),
];

/// To the VM. MLD: only queries (130), which the VM must answer; other hosts' reports and
/// done messages are not for it (Neutron's driver delivers the same: 130, 134, 135, 136).
/// RARP is not delivered: it is for the switches' MAC learning.
pub const INGRESS: [Allowance; 9] = [
    allow(Rank::Implicit, Traffic::Arp, Fate::Accept),
    allow(Rank::Implicit, Traffic::Udp(V4, 67, 68), Fate::Accept),
    allow(Rank::Implicit, Traffic::Udp(V6, 547, 546), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(130), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(134), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(135), Fate::Accept),
    allow(Rank::Implicit, Traffic::Icmp6(136), Fate::Accept),
    allow(Rank::Rules, Traffic::Ip(V4), Fate::Rules),
    allow(Rank::Rules, Traffic::Ip(V6), Fate::Rules),
];

/// One binding of a port: what depends on the port in the egress binding stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Binding {
    /// ARP with `dl_src` = `arp_sha` = MAC and `arp_spa` in the prefix: accepted.
    Arp(Mac, IpNet),
    /// Neighbour advertisement from MAC whose target is in the prefix: accepted.
    NdTarget(Mac, IpNet),
    /// IP from MAC with a source in the prefix: on to [`EGRESS_VERIFIED`].
    Source(Mac, IpNet),
    /// Anything else from one of the port's MACs: on to [`EGRESS_UNADDRESSED`].
    Mac(Mac),
}

/// A port's bindings: per IPv4 source (fixed IP with the port's MAC, allowed address pair
/// with its MAC) an IP source and an ARP binding; per IPv6 source (the same, plus the EUI-64
/// link-local address of the port's own MAC) an IP source and a neighbour-target binding; per
/// MAC (the port's and its pairs') a MAC binding. Sorted and deduplicated.
pub fn port_bindings(port: &Port) -> Vec<Binding> {
    let mut out = Vec::new();
    let v4 = port
        .source_bindings()
        .into_iter()
        .filter(|b| EtherType::of_net(&b.net) == EtherType::V4)
        .map(|b| (b.mac, b.net));
    for (mac, net) in v4 {
        out.push(Binding::Source(mac, net));
        out.push(Binding::Arp(mac, net));
    }
    for (mac, net) in port.v6_sources() {
        out.push(Binding::Source(mac, net));
        out.push(Binding::NdTarget(mac, net));
    }
    out.extend(port.macs().into_iter().map(Binding::Mac));
    out.sort();
    out.dedup();
    out
}

/// The unspecified address of a family (the source of [`EGRESS_UNADDRESSED`] IP traffic).
pub fn unspecified(family: EtherType) -> IpAddr {
    match family {
        EtherType::V4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        EtherType::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}
