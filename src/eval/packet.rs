//! Packets as the evaluator sees them, written in `ovs-ofctl` flow syntax
//! (`tcp,nw_src=10.0.0.5,tp_dst=22`), so that one string replays with both `sgflows trace`
//! and `ovs-appctl ofproto/trace`.
//!
//! A [`PacketSpec`] is what the user wrote (every field optional); [`PacketSpec::complete`]
//! fills the blanks from the port and the direction and gives a [`Packet`] with every field
//! known, which renders back with [`Packet::to_flow`].

use std::fmt::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{protocol, Direction, EtherType, Mac, Port};

/// Ethernet type of ARP.
pub const ETH_ARP: u16 = 0x0806;
/// Ethernet type of RARP (QEMU announces a migrated guest with RARP broadcasts).
pub const ETH_RARP: u16 = 0x8035;
/// Ethernet type of IPv4.
pub const ETH_IPV4: u16 = 0x0800;
/// Ethernet type of IPv6.
pub const ETH_IPV6: u16 = 0x86dd;

/// The MAC a packet comes from (ingress) or goes to (egress) when the flow does not say:
/// the first VRRP virtual-router MAC, i.e. "the router".
pub const DEFAULT_PEER_MAC: Mac = Mac([0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);
/// The broadcast MAC (default destination of ARP and DHCP sent by the VM).
pub const BROADCAST_MAC: Mac = Mac([0xff; 6]);

/// What sits above the Ethernet header of a complete packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// An ARP packet.
    Arp {
        /// Operation (1 request, 2 reply).
        op: u16,
        /// Sender protocol address.
        spa: Ipv4Addr,
        /// Target protocol address.
        tpa: Ipv4Addr,
        /// Sender hardware address.
        sha: Mac,
        /// Target hardware address.
        tha: Mac,
    },
    /// An IPv4 or IPv6 packet.
    Ip {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// IP protocol number.
        proto: u8,
        /// Transport fields Open vSwitch can match for that protocol.
        l4: Transport,
    },
    /// Anything else, by Ethernet type.
    Other {
        /// The Ethernet type.
        dl_type: u16,
    },
}

/// Transport fields of an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP, UDP or SCTP ports.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP or ICMPv6 type and code; `nd_target` for neighbour solicitations and
    /// advertisements (ICMPv6 135/136 with code 0).
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
        /// Neighbour-discovery target.
        nd_target: Option<Ipv6Addr>,
    },
    /// A protocol without fields Open vSwitch matches.
    None,
}

/// A packet with every field the evaluator looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source MAC.
    pub dl_src: Mac,
    /// Destination MAC.
    pub dl_dst: Mac,
    /// ARP, IP or other.
    pub payload: Payload,
}

impl Packet {
    /// The Ethernet type.
    pub fn dl_type(&self) -> u16 {
        match self.payload {
            Payload::Arp { .. } => ETH_ARP,
            Payload::Ip {
                src: IpAddr::V4(_), ..
            } => ETH_IPV4,
            Payload::Ip { .. } => ETH_IPV6,
            Payload::Other { dl_type } => dl_type,
        }
    }

    /// The packet as an `ovs-ofctl` flow with every field explicit (no `in_port`): what
    /// `ofproto/trace` needs to see the same packet.
    pub fn to_flow(&self) -> String {
        let mut out = String::new();
        match self.payload {
            Payload::Arp {
                op,
                spa,
                tpa,
                sha,
                tha,
            } => {
                let _ = write!(
                    out,
                    "arp,dl_src={},dl_dst={},arp_op={op},arp_spa={spa},arp_tpa={tpa},arp_sha={sha},arp_tha={tha}",
                    self.dl_src, self.dl_dst
                );
            }
            Payload::Ip {
                src,
                dst,
                proto,
                l4,
            } => {
                let v6 = matches!(src, IpAddr::V6(_));
                let (kw, proto_field) = keyword(v6, proto);
                let (sf, df) = if v6 {
                    ("ipv6_src", "ipv6_dst")
                } else {
                    ("nw_src", "nw_dst")
                };
                let _ = write!(
                    out,
                    "{kw},dl_src={},dl_dst={},{sf}={src},{df}={dst}",
                    self.dl_src, self.dl_dst
                );
                if proto_field {
                    let _ = write!(out, ",nw_proto={proto}");
                }
                // Protocol-specific field names: `ofproto/trace` reads `tp_src` as TCP's and
                // `icmp_type` as ICMPv4's, and refuses them on other protocols.
                match l4 {
                    Transport::Ports { src, dst } => {
                        let p = match proto {
                            protocol::UDP => "udp",
                            protocol::SCTP => "sctp",
                            _ => "tcp",
                        };
                        let _ = write!(out, ",{p}_src={src},{p}_dst={dst}");
                    }
                    Transport::Icmp {
                        icmp_type,
                        code,
                        nd_target,
                    } => {
                        let p = if v6 { "icmpv6" } else { "icmp" };
                        let _ = write!(out, ",{p}_type={icmp_type},{p}_code={code}");
                        if let Some(t) = nd_target {
                            let _ = write!(out, ",nd_target={t}");
                        }
                    }
                    Transport::None => {}
                }
            }
            Payload::Other { dl_type } => {
                let _ = write!(
                    out,
                    "dl_type={dl_type:#06x},dl_src={},dl_dst={}",
                    self.dl_src, self.dl_dst
                );
            }
        }
        out
    }
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_flow())
    }
}

/// The `ovs-ofctl` keyword of an IP protocol, and whether `nw_proto=` must follow it.
fn keyword(v6: bool, proto: u8) -> (&'static str, bool) {
    match (v6, proto) {
        (false, protocol::TCP) => ("tcp", false),
        (false, protocol::UDP) => ("udp", false),
        (false, protocol::SCTP) => ("sctp", false),
        (false, protocol::ICMP) => ("icmp", false),
        (true, protocol::TCP) => ("tcp6", false),
        (true, protocol::UDP) => ("udp6", false),
        (true, protocol::SCTP) => ("sctp6", false),
        (true, protocol::ICMPV6) => ("icmp6", false),
        (false, _) => ("ip", true),
        (true, _) => ("ipv6", true),
    }
}

/// Whether a protocol of a family carries ICMP type and code in Open vSwitch's eyes.
fn is_icmp(v6: bool, proto: u8) -> bool {
    (!v6 && proto == protocol::ICMP) || (v6 && proto == protocol::ICMPV6)
}

/// A packet as written: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketSpec {
    /// Ethernet type (from a keyword or `dl_type=`).
    pub dl_type: Option<u16>,
    /// IP protocol (from a keyword or `nw_proto=`).
    pub nw_proto: Option<u8>,
    /// `dl_src`.
    pub dl_src: Option<Mac>,
    /// `dl_dst`.
    pub dl_dst: Option<Mac>,
    /// `nw_src` / `ipv6_src`.
    pub src: Option<IpAddr>,
    /// `nw_dst` / `ipv6_dst`.
    pub dst: Option<IpAddr>,
    /// `tp_src`.
    pub tp_src: Option<u16>,
    /// `tp_dst`.
    pub tp_dst: Option<u16>,
    /// `icmp_type` / `icmpv6_type`.
    pub icmp_type: Option<u8>,
    /// `icmp_code` / `icmpv6_code`.
    pub icmp_code: Option<u8>,
    /// `nd_target`.
    pub nd_target: Option<Ipv6Addr>,
    /// `arp_op`.
    pub arp_op: Option<u16>,
    /// `arp_spa`.
    pub arp_spa: Option<Ipv4Addr>,
    /// `arp_tpa`.
    pub arp_tpa: Option<Ipv4Addr>,
    /// `arp_sha`.
    pub arp_sha: Option<Mac>,
    /// `arp_tha`.
    pub arp_tha: Option<Mac>,
}

fn set<T: PartialEq + Copy + fmt::Debug>(
    slot: &mut Option<T>,
    value: T,
    what: &str,
) -> Result<(), String> {
    match slot {
        Some(old) if *old != value => Err(format!("{what} given twice ({old:?} and {value:?})")),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

fn int<T: TryFrom<u64>>(key: &str, value: &str) -> Result<T, String> {
    let v = value.trim();
    let parsed = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        v.parse::<u64>().ok()
    };
    parsed
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{key}={value}: not an integer in range"))
}

fn mac(key: &str, value: &str) -> Result<Mac, String> {
    value.parse().map_err(|e| format!("{key}: {e}"))
}

fn ip<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value}: not an address of the right family"))
}

impl PacketSpec {
    /// Parses `ovs-ofctl` flow syntax: keywords (`ip`, `ipv6`, `arp`, `tcp`, `udp6`, `icmp6`,
    /// ...) and `field=value` pairs. Masks, `in_port` and unknown fields are refused.
    pub fn parse(text: &str) -> Result<PacketSpec, String> {
        let mut p = PacketSpec::default();
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((key, value)) = token.split_once('=') else {
                let (dl_type, proto) = match token {
                    "ip" | "ipv4" => (ETH_IPV4, None),
                    "ipv6" => (ETH_IPV6, None),
                    "arp" => (ETH_ARP, None),
                    "rarp" => (ETH_RARP, None),
                    "tcp" => (ETH_IPV4, Some(protocol::TCP)),
                    "udp" => (ETH_IPV4, Some(protocol::UDP)),
                    "sctp" => (ETH_IPV4, Some(protocol::SCTP)),
                    "icmp" => (ETH_IPV4, Some(protocol::ICMP)),
                    "tcp6" => (ETH_IPV6, Some(protocol::TCP)),
                    "udp6" => (ETH_IPV6, Some(protocol::UDP)),
                    "sctp6" => (ETH_IPV6, Some(protocol::SCTP)),
                    "icmp6" => (ETH_IPV6, Some(protocol::ICMPV6)),
                    other => return Err(format!("unknown keyword {other:?}")),
                };
                set(&mut p.dl_type, dl_type, "the Ethernet type")?;
                if let Some(proto) = proto {
                    set(&mut p.nw_proto, proto, "the IP protocol")?;
                }
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            if value.contains('/') {
                return Err(format!(
                    "{key}={value}: a packet has exact fields, not masks or prefixes"
                ));
            }
            match key {
                "dl_type" | "eth_type" => set(&mut p.dl_type, int(key, value)?, key)?,
                "nw_proto" | "ip_proto" => set(&mut p.nw_proto, int(key, value)?, key)?,
                "dl_src" | "eth_src" => set(&mut p.dl_src, mac(key, value)?, key)?,
                "dl_dst" | "eth_dst" => set(&mut p.dl_dst, mac(key, value)?, key)?,
                "nw_src" | "ip_src" => set(
                    &mut p.src,
                    IpAddr::V4(ip(key, value)?),
                    "the source address",
                )?,
                "nw_dst" | "ip_dst" => set(
                    &mut p.dst,
                    IpAddr::V4(ip(key, value)?),
                    "the destination address",
                )?,
                "ipv6_src" => set(
                    &mut p.src,
                    IpAddr::V6(ip(key, value)?),
                    "the source address",
                )?,
                "ipv6_dst" => set(
                    &mut p.dst,
                    IpAddr::V6(ip(key, value)?),
                    "the destination address",
                )?,
                "tp_src" | "tcp_src" | "udp_src" | "sctp_src" => {
                    set(&mut p.tp_src, int(key, value)?, "tp_src")?
                }
                "tp_dst" | "tcp_dst" | "udp_dst" | "sctp_dst" => {
                    set(&mut p.tp_dst, int(key, value)?, "tp_dst")?
                }
                "icmp_type" | "icmpv4_type" | "icmpv6_type" => {
                    set(&mut p.icmp_type, int(key, value)?, "icmp_type")?
                }
                "icmp_code" | "icmpv4_code" | "icmpv6_code" => {
                    set(&mut p.icmp_code, int(key, value)?, "icmp_code")?
                }
                "nd_target" => set(&mut p.nd_target, ip(key, value)?, key)?,
                "arp_op" => set(&mut p.arp_op, int(key, value)?, key)?,
                "arp_spa" => set(&mut p.arp_spa, ip(key, value)?, key)?,
                "arp_tpa" => set(&mut p.arp_tpa, ip(key, value)?, key)?,
                "arp_sha" => set(&mut p.arp_sha, mac(key, value)?, key)?,
                "arp_tha" => set(&mut p.arp_tha, mac(key, value)?, key)?,
                "in_port" => {
                    return Err(
                        "in_port: give the port with --port (its id in the model)".to_string()
                    )
                }
                other => return Err(format!("unknown or unsupported field {other:?}")),
            }
        }
        p.check()?;
        Ok(p)
    }

    /// The Ethernet type written or implied by the addresses.
    fn family(&self) -> Option<u16> {
        self.dl_type.or(match (self.src, self.dst) {
            (Some(IpAddr::V4(_)), _) | (_, Some(IpAddr::V4(_))) => Some(ETH_IPV4),
            (Some(IpAddr::V6(_)), _) | (_, Some(IpAddr::V6(_))) => Some(ETH_IPV6),
            _ if self.arp_spa.is_some() || self.arp_tpa.is_some() => Some(ETH_ARP),
            _ => None,
        })
    }

    fn check(&self) -> Result<(), String> {
        let Some(dl_type) = self.family() else {
            return Err(
                "the packet needs a protocol keyword (ip, ipv6, arp, tcp, udp6, icmp6, ...) or dl_type"
                    .to_string(),
            );
        };
        let is_ip = dl_type == ETH_IPV4 || dl_type == ETH_IPV6;
        let v6 = dl_type == ETH_IPV6;
        for addr in [self.src, self.dst].into_iter().flatten() {
            if !is_ip {
                return Err(format!("{addr}: IP addresses need an IP packet"));
            }
            if addr.is_ipv6() != v6 {
                return Err(format!(
                    "{addr} does not fit an {} packet (nw_* for IPv4, ipv6_* for IPv6)",
                    if v6 { "IPv6" } else { "IPv4" }
                ));
            }
        }
        if self.nw_proto.is_some() && !is_ip {
            return Err("nw_proto needs an IP packet".to_string());
        }
        let arp_fields = self.arp_op.is_some()
            || self.arp_spa.is_some()
            || self.arp_tpa.is_some()
            || self.arp_sha.is_some()
            || self.arp_tha.is_some();
        if arp_fields && dl_type != ETH_ARP {
            return Err("arp_* fields need an ARP packet".to_string());
        }
        let proto = self.nw_proto;
        let ports = self.tp_src.is_some() || self.tp_dst.is_some();
        if ports && !proto.is_some_and(protocol::has_matchable_ports) {
            return Err(
                "tp_src/tp_dst need TCP, UDP or SCTP (Open vSwitch matches no other ports)"
                    .to_string(),
            );
        }
        let icmp = self.icmp_type.is_some() || self.icmp_code.is_some();
        if icmp && !(is_ip && proto.is_some_and(|p| is_icmp(v6, p))) {
            return Err("icmp_type/icmp_code need icmp (IPv4) or icmp6 (IPv6)".to_string());
        }
        if self.nd_target.is_some() {
            let nd = v6
                && proto == Some(protocol::ICMPV6)
                && matches!(self.icmp_type, Some(135) | Some(136))
                && self.icmp_code.unwrap_or(0) == 0;
            if !nd {
                return Err(
                    "nd_target needs icmp6 with icmp_type=135 or 136 and icmp_code=0".to_string(),
                );
            }
        }
        Ok(())
    }

    /// The complete packet: blanks filled from the port, as seen in `direction`.
    ///
    /// Defaults: the port's MAC as source (egress) or destination (ingress), the router
    /// ([`DEFAULT_PEER_MAC`]) at the other end (broadcast for ARP sent by the VM); the port's
    /// first address of the family as source (egress) or destination (ingress), and the
    /// unspecified address at the far end; ports, ICMP type and code 0; ARP request with
    /// `arp_sha` = `dl_src` and the port's address as `arp_spa` (egress) or `arp_tpa`
    /// (ingress); `nd_target` `::` for ICMPv6 135/136 with code 0.
    pub fn complete(&self, port: &Port, direction: Direction) -> Packet {
        let dl_type = self.family().unwrap_or(ETH_IPV4);
        let egress = direction == Direction::Egress;
        let (default_src, default_dst) = if egress {
            let dst = if dl_type == ETH_ARP {
                BROADCAST_MAC
            } else {
                DEFAULT_PEER_MAC
            };
            (port.mac, dst)
        } else {
            (DEFAULT_PEER_MAC, port.mac)
        };
        let dl_src = self.dl_src.unwrap_or(default_src);
        let dl_dst = self.dl_dst.unwrap_or(default_dst);
        let first = |eth: EtherType| -> Option<IpAddr> {
            port.fixed_ips
                .iter()
                .copied()
                .find(|a| EtherType::of_addr(a) == eth)
        };
        let payload = match dl_type {
            ETH_ARP => {
                let own = match first(EtherType::V4) {
                    Some(IpAddr::V4(a)) => a,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                let (spa, tpa) = if egress {
                    (own, Ipv4Addr::UNSPECIFIED)
                } else {
                    (Ipv4Addr::UNSPECIFIED, own)
                };
                Payload::Arp {
                    op: self.arp_op.unwrap_or(1),
                    spa: self.arp_spa.unwrap_or(spa),
                    tpa: self.arp_tpa.unwrap_or(tpa),
                    sha: self.arp_sha.unwrap_or(dl_src),
                    tha: self.arp_tha.unwrap_or(Mac([0; 6])),
                }
            }
            ETH_IPV4 | ETH_IPV6 => {
                let v6 = dl_type == ETH_IPV6;
                let (eth, unspecified) = if v6 {
                    (EtherType::V6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
                } else {
                    (EtherType::V4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                };
                let own = first(eth).unwrap_or(if v6 {
                    IpAddr::V6(port.mac.link_local())
                } else {
                    unspecified
                });
                let (src, dst) = if egress {
                    (own, unspecified)
                } else {
                    (unspecified, own)
                };
                let proto = self.nw_proto.unwrap_or(0);
                let l4 = if protocol::has_matchable_ports(proto) {
                    Transport::Ports {
                        src: self.tp_src.unwrap_or(0),
                        dst: self.tp_dst.unwrap_or(0),
                    }
                } else if is_icmp(v6, proto) {
                    let icmp_type = self.icmp_type.unwrap_or(0);
                    let code = self.icmp_code.unwrap_or(0);
                    let nd = v6 && matches!(icmp_type, 135 | 136) && code == 0;
                    Transport::Icmp {
                        icmp_type,
                        code,
                        nd_target: nd.then(|| self.nd_target.unwrap_or(Ipv6Addr::UNSPECIFIED)),
                    }
                } else {
                    Transport::None
                };
                Payload::Ip {
                    src: self.src.unwrap_or(src),
                    dst: self.dst.unwrap_or(dst),
                    proto,
                    l4,
                }
            }
            other => Payload::Other { dl_type: other },
        };
        Packet {
            dl_src,
            dl_dst,
            payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> Port {
        Port {
            id: "p".into(),
            mac: "fa:16:3e:00:00:01".parse().unwrap(),
            fixed_ips: vec!["10.0.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()],
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            security_groups: vec![],
            device_owner: String::new(),
            network_id: None,
            ofport: Some(1),
            local_vlan: Some(1),
            representor: None,
        }
    }

    #[test]
    fn parses_and_completes() {
        let spec = PacketSpec::parse("tcp,nw_src=192.0.2.1,tp_dst=22").unwrap();
        let p = spec.complete(&port(), Direction::Ingress);
        assert_eq!(
            p.to_flow(),
            "tcp,dl_src=00:00:5e:00:01:01,dl_dst=fa:16:3e:00:00:01,nw_src=192.0.2.1,nw_dst=10.0.0.5,tcp_src=0,tcp_dst=22"
        );
        let p = PacketSpec::parse("icmp6,icmp_type=136,nd_target=2001:db8::5")
            .unwrap()
            .complete(&port(), Direction::Egress);
        assert_eq!(
            p.to_flow(),
            "icmp6,dl_src=fa:16:3e:00:00:01,dl_dst=00:00:5e:00:01:01,ipv6_src=2001:db8::5,ipv6_dst=::,icmpv6_type=136,icmpv6_code=0,nd_target=2001:db8::5"
        );
        let p = PacketSpec::parse("ip,nw_proto=47,nw_dst=10.1.1.1")
            .unwrap()
            .complete(&port(), Direction::Egress);
        assert!(p.to_flow().starts_with("ip,") && p.to_flow().ends_with(",nw_proto=47"));
        let p = PacketSpec::parse("arp")
            .unwrap()
            .complete(&port(), Direction::Egress);
        assert_eq!(
            p.to_flow(),
            "arp,dl_src=fa:16:3e:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=10.0.0.5,arp_tpa=0.0.0.0,arp_sha=fa:16:3e:00:00:01,arp_tha=00:00:00:00:00:00"
        );
        let p = PacketSpec::parse("dl_type=0x88cc").unwrap();
        assert_eq!(p.complete(&port(), Direction::Ingress).dl_type(), 0x88cc);
    }

    #[test]
    fn refuses_what_it_cannot_mean() {
        for bad in [
            "",
            "tcp,nw_src=10.0.0.0/8",
            "tcp,ipv6_src=::1",
            "ip,tp_dst=22",
            "tcp,udp",
            "udp,icmp_type=3",
            "icmp6,icmp_type=128,nd_target=::1",
            "tcp,in_port=3",
            "tcp,bogus=1",
            "tcp,tp_dst=70000",
            "ip,arp_spa=10.0.0.1",
            "gre",
        ] {
            assert!(PacketSpec::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
