//! The reference evaluator: decides what happens to one packet at one port from the **model
//! alone** (never from flows), and says what decided it — a security-group rule, an implicit
//! allowance, anti-spoofing, conntrack, or the default drop.
//!
//! It is the executable form of the semantics in `DESIGN.md` §1–3, written independently of
//! the OpenFlow pipeline so that each can check the other (`tests/proof/`). In order:
//!
//! 1. Ports with port security disabled, and trusted (`network:*`) ports: everything passes.
//! 2. Egress (from the VM): DHCP/DHCPv6 server replies and router advertisements are dropped;
//!    ARP passes when `dl_src` = `arp_sha` and `arp_spa` belong to one binding (fixed IP or
//!    allowed address pair with its MAC); RARP passes from any of the port's MACs (QEMU's
//!    announcement of a migrated guest); DHCP clients (68→67) pass from a binding or from
//!    `0.0.0.0` with one of the port's MACs, DHCPv6 clients (546→547) from a binding or the
//!    link-local address; MLD (130–132, 143), router and neighbour solicitations (133, 135)
//!    pass from a binding or the EUI-64 link-local address of the port's MAC (and RS, NS and
//!    MLDv2 reports from `::`: RFC 4861 §6.3.7, duplicate address detection); neighbour
//!    advertisements pass when the MAC may use `nd_target`; any other neighbour-discovery
//!    packet is dropped; other IP (redirects included: the rules decide) must come from a
//!    binding (anti-spoofing) and then meet the rules.
//! 3. Ingress (to the VM): ARP, DHCP (67→68) and DHCPv6 (547→546) replies, MLD queries, RA,
//!    NS, NA pass; other IP (other hosts' MLD reports included) meets the rules.
//! 4. Rules: a port's policy is the union of its groups' rules in the packet's direction and
//!    family; the remote is the source (ingress) or destination (egress) address.
//! 5. Stateful ports: invalid packets drop; replies and related packets of tracked
//!    connections pass; new connections need a rule (and are committed); packets of an
//!    established connection in its original direction need a rule *still* (a connection
//!    whose rule was removed is dropped). Stateless ports: a packet needs a rule, replies too.
//!
//! Anything else (other Ethernet types, IP without a matching rule) is dropped.

mod packet;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

pub use packet::{
    Packet, PacketSpec, Payload, Transport, BROADCAST_MAC, DEFAULT_PEER_MAC, ETH_ARP, ETH_IPV4,
    ETH_IPV6, ETH_RARP,
};

use crate::error::{Error, Issue, Result};
use crate::model::{protocol, Direction, EtherType, Mac, Model, Port, Remote, Rule, RuleRef, L4};

/// The connection-tracking state of a packet on a stateful port (`--ct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    /// First packet of a connection (`new`).
    New,
    /// Established connection, original direction (`est`).
    Established,
    /// Established connection, reply direction (`est,rpl`, also `reply`).
    Reply,
    /// Related to a tracked connection, e.g. an ICMP error (`rel`).
    Related,
    /// Related, in the reply direction (`rel,rpl`).
    RelatedReply,
    /// Conntrack found the packet invalid (`inv`).
    Invalid,
}

impl CtState {
    /// Reads `new`, `est`, `est,rpl` (or `rpl`, `reply`), `rel`, `rel,rpl`, `inv`
    /// (`+`, `trk` and `-` flags are ignored, so `+trk+est+rpl` works too).
    pub fn parse(text: &str) -> std::result::Result<CtState, String> {
        let mut flags: Vec<&str> = text
            .split([',', '+', ' '])
            .map(str::trim)
            .filter(|f| !f.is_empty() && *f != "trk")
            .map(|f| match f {
                "established" => "est",
                "related" => "rel",
                "invalid" => "inv",
                "reply" => "rpl",
                other => other,
            })
            .collect();
        flags.sort_unstable();
        flags.dedup();
        match flags.as_slice() {
            ["new"] => Ok(CtState::New),
            ["est"] => Ok(CtState::Established),
            ["est", "rpl"] | ["rpl"] => Ok(CtState::Reply),
            ["rel"] => Ok(CtState::Related),
            ["rel", "rpl"] => Ok(CtState::RelatedReply),
            ["inv"] => Ok(CtState::Invalid),
            _ => Err(format!(
                "connection state {text:?}: expected new, est, est,rpl (reply), rel, rel,rpl or inv"
            )),
        }
    }

    /// The state as `ofproto/trace --ct-next` takes it.
    pub fn ct_next(self) -> &'static str {
        match self {
            CtState::New => "trk,new",
            CtState::Established => "trk,est",
            CtState::Reply => "trk,est,rpl",
            CtState::Related => "trk,rel",
            CtState::RelatedReply => "trk,rel,rpl",
            CtState::Invalid => "trk,inv",
        }
    }

    /// Short name (`new`, `est`, `est,rpl`, `rel`, `rel,rpl`, `inv`).
    pub fn as_str(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "est",
            CtState::Reply => "est,rpl",
            CtState::Related => "rel",
            CtState::RelatedReply => "rel,rpl",
            CtState::Invalid => "inv",
        }
    }
}

/// Allow or drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The packet passes the port's firewall.
    Allow,
    /// The packet is dropped.
    Drop,
}

impl Verdict {
    /// `allow` or `drop`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Drop => "drop",
        }
    }
}

/// Why a port lets everything through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfiltered {
    /// `port_security_enabled` is false.
    PortSecurityDisabled,
    /// A `network:*` owner (DHCP agent, router...).
    Trusted(String),
}

/// Traffic allowed without a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implicit {
    /// ARP sent by the VM from one of its bindings.
    ArpOut,
    /// ARP towards the VM.
    ArpIn,
    /// RARP from one of the port's MACs (a migrated guest announcing itself).
    RarpOut,
    /// DHCP client request (UDP 68→67).
    DhcpClient,
    /// DHCPv6 client request (UDP 546→547).
    Dhcp6Client,
    /// DHCP server reply to the VM (UDP 67→68).
    DhcpReply,
    /// DHCPv6 server reply to the VM (UDP 547→546).
    Dhcp6Reply,
    /// ICMPv6 neighbour discovery / MLD sent from a permitted source (type).
    NdOut(u8),
    /// RS, NS or MLDv2 report from `::` (before an address is assigned, or duplicate address
    /// detection).
    NdFromUnspecified(u8),
    /// Neighbour advertisement for a target the port owns.
    NeighborAdvertisement,
    /// Neighbour discovery / MLD towards the VM (type).
    NdIn(u8),
}

/// Traffic a VM may never send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// DHCP server reply (UDP 67→68).
    DhcpServer,
    /// DHCPv6 server reply (UDP 547→546).
    Dhcp6Server,
    /// Router advertisement (ICMPv6 134).
    RouterAdvertisement,
}

/// Source checks a packet from the VM failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spoof {
    /// `dl_src` is none of the port's MACs.
    SourceMac(Mac),
    /// The IP source is not a binding of that MAC.
    SourceIp(Mac, IpAddr),
    /// ARP whose sender MAC or address is not a binding of the port (or differs from dl_src).
    Arp,
    /// Neighbour discovery or MLD from a source the MAC may not use.
    NdSource(u8, IpAddr),
    /// Neighbour advertisement for a target the MAC may not use (or malformed: code ≠ 0).
    NdTarget(Option<IpAddr>),
}

/// What connection tracking decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtReason {
    /// Conntrack marked the packet invalid.
    Invalid,
    /// A reply of a tracked connection.
    Reply,
    /// Related to a tracked connection.
    Related,
    /// An established connection that no rule allows any more: dropped (and marked, so its
    /// replies are dropped too).
    NoRuleForEstablished,
}

/// What decided a packet's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The port is not filtered.
    Unfiltered(Unfiltered),
    /// An implicit allowance.
    Implicit(Implicit),
    /// Something a VM never sends.
    Forbidden(Forbidden),
    /// Anti-spoofing.
    Spoofed(Spoof),
    /// Connection tracking.
    Conntrack(CtReason),
    /// A security-group rule (the first that matches, in group-id then rule order).
    Rule(RuleRef),
    /// Ingress traffic for another MAC.
    NotForPort(Mac),
    /// Neither IP nor ARP.
    NotIp(u16),
    /// No rule matched.
    DefaultDrop,
}

impl Reason {
    /// A stable one-word category: `unfiltered`, `implicit`, `forbidden`, `anti-spoofing`,
    /// `conntrack`, `rule`, `not-for-port`, `not-ip`, `default-drop`.
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::Unfiltered(_) => "unfiltered",
            Reason::Implicit(_) => "implicit",
            Reason::Forbidden(_) => "forbidden",
            Reason::Spoofed(_) => "anti-spoofing",
            Reason::Conntrack(_) => "conntrack",
            Reason::Rule(_) => "rule",
            Reason::NotForPort(_) => "not-for-port",
            Reason::NotIp(_) => "not-ip",
            Reason::DefaultDrop => "default-drop",
        }
    }
}

fn nd_name(t: u8) -> &'static str {
    match t {
        130 => "MLD query",
        131 => "MLD report",
        132 => "MLD done",
        133 => "router solicitation",
        134 => "router advertisement",
        135 => "neighbour solicitation",
        136 => "neighbour advertisement",
        137 => "redirect",
        143 => "MLDv2 report",
        _ => "ICMPv6",
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unfiltered(Unfiltered::PortSecurityDisabled) => {
                f.write_str("unfiltered: port security is disabled on this port")
            }
            Reason::Unfiltered(Unfiltered::Trusted(owner)) => {
                write!(f, "unfiltered: trusted port (device_owner {owner})")
            }
            Reason::Implicit(i) => f.write_str(match i {
                Implicit::ArpOut => "implicit: ARP from one of the port's addresses",
                Implicit::ArpIn => "implicit: ARP to the port",
                Implicit::RarpOut => "implicit: RARP from one of the port's MACs",
                Implicit::DhcpClient => "implicit: DHCP client (UDP 68→67)",
                Implicit::Dhcp6Client => "implicit: DHCPv6 client (UDP 546→547)",
                Implicit::DhcpReply => "implicit: DHCP server reply (UDP 67→68)",
                Implicit::Dhcp6Reply => "implicit: DHCPv6 server reply (UDP 547→546)",
                Implicit::NeighborAdvertisement => {
                    "implicit: neighbour advertisement for one of the port's addresses"
                }
                Implicit::NdOut(t) => {
                    return write!(
                        f,
                        "implicit: {} (ICMPv6 {t}) from one of the port's addresses",
                        nd_name(*t)
                    )
                }
                Implicit::NdFromUnspecified(t) => {
                    return write!(
                        f,
                        "implicit: {} (ICMPv6 {t}) from :: (no address yet, or duplicate address detection)",
                        nd_name(*t)
                    )
                }
                Implicit::NdIn(t) => {
                    return write!(f, "implicit: {} (ICMPv6 {t}) to the port", nd_name(*t))
                }
            }),
            Reason::Forbidden(x) => f.write_str(match x {
                Forbidden::DhcpServer => {
                    "forbidden: a VM may not act as a DHCP server (UDP 67→68)"
                }
                Forbidden::Dhcp6Server => {
                    "forbidden: a VM may not act as a DHCPv6 server (UDP 547→546)"
                }
                Forbidden::RouterAdvertisement => {
                    "forbidden: a VM may not send router advertisements (ICMPv6 134)"
                }
            }),
            Reason::Spoofed(s) => match s {
                Spoof::SourceMac(m) => {
                    write!(f, "anti-spoofing: source MAC {m} is not one of the port's")
                }
                Spoof::SourceIp(m, ip) => write!(
                    f,
                    "anti-spoofing: source address {ip} is not a fixed IP or allowed address pair of MAC {m}"
                ),
                Spoof::Arp => f.write_str(
                    "anti-spoofing: ARP sender (arp_sha, arp_spa) is not a binding of the port, or arp_sha differs from dl_src",
                ),
                Spoof::NdSource(t, ip) => write!(
                    f,
                    "anti-spoofing: {} (ICMPv6 {t}) from {ip}, not an address of the port for this MAC",
                    nd_name(*t)
                ),
                Spoof::NdTarget(Some(t)) => write!(
                    f,
                    "anti-spoofing: neighbour advertisement for {t}, not an address of the port for this MAC"
                ),
                Spoof::NdTarget(None) => f.write_str(
                    "anti-spoofing: malformed neighbour advertisement (code ≠ 0, no target)",
                ),
            },
            Reason::Conntrack(c) => f.write_str(match c {
                CtReason::Invalid => "conntrack: invalid packet",
                CtReason::Reply => "conntrack: reply of a tracked connection",
                CtReason::Related => "conntrack: related to a tracked connection",
                CtReason::NoRuleForEstablished => {
                    "conntrack: established connection that no rule allows any more (dropped both ways)"
                }
            }),
            Reason::Rule(r) => write!(f, "rule {r}"),
            Reason::NotForPort(m) => write!(
                f,
                "not for this port: destination MAC {m} is none of the port's"
            ),
            Reason::NotIp(t) => write!(
                f,
                "default drop: Ethernet type {t:#06x} is neither IP nor ARP"
            ),
            Reason::DefaultDrop => f.write_str("default drop: no rule matches"),
        }
    }
}

/// One query: a port, a direction, a packet and (stateful ports) a connection state.
#[derive(Debug, Clone)]
pub struct Query {
    /// The port's id in the model.
    pub port: String,
    /// From the VM (egress) or to it (ingress).
    pub direction: Direction,
    /// The packet as written.
    pub packet: PacketSpec,
    /// Connection state; `None` is `new` on stateful ports (ignored on stateless ones).
    pub ct: Option<CtState>,
}

/// The evaluator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or drop.
    pub verdict: Verdict,
    /// What decided it.
    pub reason: Reason,
    /// Every rule that matches the packet (in group-id then rule order), even when something
    /// else decided (e.g. anti-spoofing dropped it first).
    pub matching_rules: Vec<RuleRef>,
    /// A readable description of the deciding rule.
    pub rule_text: Option<String>,
    /// The complete packet that was evaluated (blanks filled in).
    pub packet: Packet,
    /// Whether the port is stateful (conntrack).
    pub stateful: bool,
    /// Whether the port is filtered at all.
    pub filtered: bool,
    /// The connection state used (stateful ports, packets that reach conntrack).
    pub ct: Option<CtState>,
    /// Whether the packet went through conntrack (what `ofproto/trace --ct-next` needs).
    pub conntrack: bool,
}

impl Decision {
    /// Whether the packet passes.
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

/// Evaluates one query against a model.
pub fn evaluate(model: &Model, query: &Query) -> Result<Decision> {
    let Some(port) = model.ports.iter().find(|p| p.id == query.port) else {
        return Err(Error::Invalid(vec![Issue::new(
            "port",
            format!("no port {:?} in the model", query.port),
        )]));
    };
    let packet = query.packet.complete(port, query.direction);
    let stateful = model.port_is_stateful(port);
    let matching: Vec<(RuleRef, &Rule)> = matching_rules(model, port, query.direction, &packet);
    let mut d = Decision {
        verdict: Verdict::Drop,
        reason: Reason::DefaultDrop,
        matching_rules: matching.iter().map(|(r, _)| r.clone()).collect(),
        rule_text: None,
        packet,
        stateful,
        filtered: port.is_filtered(),
        ct: None,
        conntrack: false,
    };
    let base = match query.direction {
        Direction::Egress => egress_base(port, &packet),
        Direction::Ingress => ingress_base(port, &packet),
    };
    let done = |d: &mut Decision, verdict, reason| {
        d.verdict = verdict;
        d.reason = reason;
    };
    if let Some((verdict, reason)) = base {
        done(&mut d, verdict, reason);
        return Ok(d);
    }
    // IP that reaches the rules.
    let first = matching.first();
    if stateful {
        let ct = query.ct.unwrap_or(CtState::New);
        d.ct = Some(ct);
        d.conntrack = true;
        match ct {
            CtState::Invalid => {
                done(&mut d, Verdict::Drop, Reason::Conntrack(CtReason::Invalid));
                return Ok(d);
            }
            CtState::Reply => {
                done(&mut d, Verdict::Allow, Reason::Conntrack(CtReason::Reply));
                return Ok(d);
            }
            CtState::Related | CtState::RelatedReply => {
                done(&mut d, Verdict::Allow, Reason::Conntrack(CtReason::Related));
                return Ok(d);
            }
            CtState::Established if first.is_none() => {
                done(
                    &mut d,
                    Verdict::Drop,
                    Reason::Conntrack(CtReason::NoRuleForEstablished),
                );
                return Ok(d);
            }
            CtState::New | CtState::Established => {}
        }
    }
    if let Some((r, rule)) = first {
        d.rule_text = Some(describe_rule(model, rule));
        done(&mut d, Verdict::Allow, Reason::Rule(r.clone()));
    }
    Ok(d)
}

/// Whether `mac` may send from `addr`: a fixed IP with the port's MAC, an allowed address
/// pair with its MAC, or (IPv6) the EUI-64 link-local address of the port's own MAC (a pair's
/// MAC gets its link-local address only as an explicit pair, as in Neutron's driver).
fn binds(port: &Port, mac: Mac, addr: IpAddr) -> bool {
    if let IpAddr::V6(a) = addr {
        if mac == port.mac && mac.link_local() == a {
            return true;
        }
    }
    (mac == port.mac && port.fixed_ips.contains(&addr))
        || port
            .allowed_address_pairs
            .iter()
            .any(|p| p.mac == mac && p.net.contains(&addr))
}

/// Egress checks before the rules: `Some` when they decide, `None` for IP that goes on.
fn egress_base(port: &Port, p: &Packet) -> Option<(Verdict, Reason)> {
    if !port.port_security_enabled {
        return Some((
            Verdict::Allow,
            Reason::Unfiltered(Unfiltered::PortSecurityDisabled),
        ));
    }
    if port.is_trusted() {
        return Some((
            Verdict::Allow,
            Reason::Unfiltered(Unfiltered::Trusted(port.device_owner.clone())),
        ));
    }
    let mac_ok = port.macs().contains(&p.dl_src);
    let spoofed_mac = || Some((Verdict::Drop, Reason::Spoofed(Spoof::SourceMac(p.dl_src))));
    match p.payload {
        Payload::Other { dl_type: ETH_RARP } if mac_ok => {
            Some((Verdict::Allow, Reason::Implicit(Implicit::RarpOut)))
        }
        Payload::Other { dl_type: ETH_RARP } => spoofed_mac(),
        Payload::Other { dl_type } => Some((Verdict::Drop, Reason::NotIp(dl_type))),
        Payload::Arp { spa, sha, .. } => {
            if sha == p.dl_src && binds(port, sha, IpAddr::V4(spa)) {
                Some((Verdict::Allow, Reason::Implicit(Implicit::ArpOut)))
            } else {
                Some((Verdict::Drop, Reason::Spoofed(Spoof::Arp)))
            }
        }
        Payload::Ip { src, proto, l4, .. } => {
            let v6 = src.is_ipv6();
            // What a VM may never send, whatever its source.
            match (v6, proto, l4) {
                (false, protocol::UDP, Transport::Ports { src: 67, dst: 68 }) => {
                    return Some((Verdict::Drop, Reason::Forbidden(Forbidden::DhcpServer)))
                }
                (true, protocol::UDP, Transport::Ports { src: 547, dst: 546 }) => {
                    return Some((Verdict::Drop, Reason::Forbidden(Forbidden::Dhcp6Server)))
                }
                (true, protocol::ICMPV6, Transport::Icmp { icmp_type: 134, .. }) => {
                    return Some((
                        Verdict::Drop,
                        Reason::Forbidden(Forbidden::RouterAdvertisement),
                    ))
                }
                _ => {}
            }
            // DHCP clients: from a permitted source, or (DHCPv4) from 0.0.0.0 before they
            // have an address; never from a forged one.
            let dhcp = match (v6, proto, l4) {
                (false, protocol::UDP, Transport::Ports { src: 68, dst: 67 }) => {
                    Some(Implicit::DhcpClient)
                }
                (true, protocol::UDP, Transport::Ports { src: 546, dst: 547 }) => {
                    Some(Implicit::Dhcp6Client)
                }
                _ => None,
            };
            if let Some(implicit) = dhcp {
                let unaddressed = src == IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
                return if !mac_ok {
                    spoofed_mac()
                } else if unaddressed || binds(port, p.dl_src, src) {
                    Some((Verdict::Allow, Reason::Implicit(implicit)))
                } else {
                    Some((
                        Verdict::Drop,
                        Reason::Spoofed(Spoof::SourceIp(p.dl_src, src)),
                    ))
                };
            }
            // Neighbour discovery and MLD: decided here, never by the rules.
            if let (
                true,
                protocol::ICMPV6,
                Transport::Icmp {
                    icmp_type,
                    nd_target,
                    ..
                },
            ) = (v6, proto, l4)
            {
                let unspecified = src == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
                match icmp_type {
                    130 | 131 | 132 | 133 | 135 | 143 => {
                        if mac_ok && unspecified && matches!(icmp_type, 133 | 135 | 143) {
                            return Some((
                                Verdict::Allow,
                                Reason::Implicit(Implicit::NdFromUnspecified(icmp_type)),
                            ));
                        }
                        return if mac_ok && binds(port, p.dl_src, src) {
                            Some((Verdict::Allow, Reason::Implicit(Implicit::NdOut(icmp_type))))
                        } else {
                            Some((
                                Verdict::Drop,
                                Reason::Spoofed(Spoof::NdSource(icmp_type, src)),
                            ))
                        };
                    }
                    136 => {
                        let ok = nd_target
                            .is_some_and(|t| mac_ok && binds(port, p.dl_src, IpAddr::V6(t)));
                        return if ok {
                            Some((
                                Verdict::Allow,
                                Reason::Implicit(Implicit::NeighborAdvertisement),
                            ))
                        } else {
                            Some((
                                Verdict::Drop,
                                Reason::Spoofed(Spoof::NdTarget(nd_target.map(IpAddr::V6))),
                            ))
                        };
                    }
                    _ => {}
                }
            }
            if !mac_ok {
                return spoofed_mac();
            }
            if !binds(port, p.dl_src, src) {
                return Some((
                    Verdict::Drop,
                    Reason::Spoofed(Spoof::SourceIp(p.dl_src, src)),
                ));
            }
            None
        }
    }
}

/// Ingress checks before the rules.
fn ingress_base(port: &Port, p: &Packet) -> Option<(Verdict, Reason)> {
    if !port.port_security_enabled {
        return Some((
            Verdict::Allow,
            Reason::Unfiltered(Unfiltered::PortSecurityDisabled),
        ));
    }
    if port.is_trusted() {
        return Some((
            Verdict::Allow,
            Reason::Unfiltered(Unfiltered::Trusted(port.device_owner.clone())),
        ));
    }
    if !p.dl_dst.is_multicast() && !port.macs().contains(&p.dl_dst) {
        return Some((Verdict::Drop, Reason::NotForPort(p.dl_dst)));
    }
    match p.payload {
        Payload::Other { dl_type } => Some((Verdict::Drop, Reason::NotIp(dl_type))),
        Payload::Arp { .. } => Some((Verdict::Allow, Reason::Implicit(Implicit::ArpIn))),
        Payload::Ip { src, proto, l4, .. } => {
            let v6 = src.is_ipv6();
            match (v6, proto, l4) {
                (false, protocol::UDP, Transport::Ports { src: 67, dst: 68 }) => {
                    Some((Verdict::Allow, Reason::Implicit(Implicit::DhcpReply)))
                }
                (true, protocol::UDP, Transport::Ports { src: 547, dst: 546 }) => {
                    Some((Verdict::Allow, Reason::Implicit(Implicit::Dhcp6Reply)))
                }
                (
                    true,
                    protocol::ICMPV6,
                    Transport::Icmp {
                        icmp_type: t @ (130 | 134 | 135 | 136),
                        ..
                    },
                ) => Some((Verdict::Allow, Reason::Implicit(Implicit::NdIn(t)))),
                _ => None,
            }
        }
    }
}

/// The port's rules that match the packet, in the packet's direction.
fn matching_rules<'m>(
    model: &'m Model,
    port: &'m Port,
    direction: Direction,
    p: &Packet,
) -> Vec<(RuleRef, &'m Rule)> {
    let Payload::Ip {
        src,
        dst,
        proto,
        l4,
    } = p.payload
    else {
        return Vec::new();
    };
    let family = EtherType::of_addr(&src);
    let remote_addr = match direction {
        Direction::Ingress => src,
        Direction::Egress => dst,
    };
    model
        .port_rules(port)
        .filter(|(_, r)| r.direction == direction && r.ethertype == family)
        .filter(|(_, r)| r.protocol.map_or(true, |rp| rp == proto))
        .filter(|(_, r)| remote_matches(model, r, remote_addr))
        .filter(|(_, r)| l4_matches(r.l4, l4))
        .map(|(g, r)| {
            (
                RuleRef {
                    group: g.id.clone(),
                    index: r.index,
                },
                r,
            )
        })
        .collect()
}

fn remote_matches(model: &Model, rule: &Rule, addr: IpAddr) -> bool {
    match &rule.remote {
        Remote::Any => true,
        Remote::Prefix(net) => net.contains(&addr),
        Remote::Group(_) | Remote::AddressGroup(_) => model
            .remote_members(&rule.remote)
            .is_some_and(|m| m.of(rule.ethertype).any(|n: &IpNet| n.contains(&addr))),
    }
}

fn l4_matches(rule: L4, packet: Transport) -> bool {
    match (rule, packet) {
        (L4::Any, _) => true,
        (L4::Ports { dst, src }, Transport::Ports { src: ps, dst: pd }) => {
            (dst.min..=dst.max).contains(&pd) && (src.min..=src.max).contains(&ps)
        }
        (
            L4::Icmp { icmp_type, code },
            Transport::Icmp {
                icmp_type: t,
                code: c,
                ..
            },
        ) => icmp_type == t && code.map_or(true, |rc| rc == c),
        _ => false,
    }
}

/// A rule in words: `ingress IPv4 tcp 22-22 from 10.0.0.0/8`.
pub fn describe_rule(model: &Model, rule: &Rule) -> String {
    let mut s = format!("{} {}", rule.direction.as_str(), rule.ethertype.as_str());
    match rule.protocol {
        None => s.push_str(" any protocol"),
        Some(p) => s.push_str(&format!(" {}", protocol_name(p))),
    }
    match rule.l4 {
        L4::Any => {}
        L4::Ports { dst, src } => {
            if !dst.is_any() {
                s.push_str(&format!(" port {}-{}", dst.min, dst.max));
            }
            if !src.is_any() {
                s.push_str(&format!(" source port {}-{}", src.min, src.max));
            }
        }
        L4::Icmp { icmp_type, code } => {
            s.push_str(&format!(" type {icmp_type}"));
            if let Some(c) = code {
                s.push_str(&format!(" code {c}"));
            }
        }
    }
    let word = match rule.direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    match &rule.remote {
        Remote::Any => s.push_str(&format!(" {word} anywhere")),
        Remote::Prefix(n) => s.push_str(&format!(" {word} {n}")),
        Remote::Group(g) => {
            let n = model
                .remote_members(&rule.remote)
                .map_or(0, |m| m.of(rule.ethertype).count());
            s.push_str(&format!(" {word} members of group {g} ({n} addresses)"));
        }
        Remote::AddressGroup(g) => {
            let n = model
                .remote_members(&rule.remote)
                .map_or(0, |m| m.of(rule.ethertype).count());
            s.push_str(&format!(" {word} address group {g} ({n} prefixes)"));
        }
    }
    s
}

fn protocol_name(p: u8) -> String {
    match p {
        protocol::TCP => "tcp".into(),
        protocol::UDP => "udp".into(),
        protocol::SCTP => "sctp".into(),
        protocol::ICMP => "icmp".into(),
        protocol::ICMPV6 => "icmpv6".into(),
        other => format!("protocol {other}"),
    }
}

#[cfg(test)]
mod tests;
