//! What one rte_flow rule matches, independent of how a driver spells it: a flat set of
//! header fields, each an exact value, a value/mask pair or (profiles with `last`) a range.
//! The layout uses the flat form to prove that no two rules at one priority overlap and to
//! drop rules that an earlier one already covers.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::ir::PortMask;
use crate::model::{EtherType, Mac, PortRange};

/// Ethertypes the layout matches on.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// RARP.
    pub const RARP: u16 = 0x8035;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// An Ethernet address match: exact, or value/mask (the group bit for multicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacMatch {
    /// The value, bits outside the mask cleared.
    pub value: Mac,
    /// The mask; all ones is an exact address.
    pub mask: Mac,
}

impl MacMatch {
    /// One address.
    pub fn exact(mac: Mac) -> Self {
        MacMatch {
            value: mac,
            mask: Mac([0xff; 6]),
        }
    }

    /// Every group (multicast and broadcast) address.
    pub fn group() -> Self {
        MacMatch {
            value: Mac([1, 0, 0, 0, 0, 0]),
            mask: Mac([1, 0, 0, 0, 0, 0]),
        }
    }

    /// Whether the mask is all ones.
    pub fn is_exact(&self) -> bool {
        self.mask.0 == [0xff; 6]
    }
}

/// A TCP/UDP/SCTP port match: a value/mask pair (prefix-shaped, from the IR) or a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortMatch {
    /// `p & mask == value`.
    Mask(PortMask),
    /// `min <= p <= max` (rte_flow `spec`/`last`).
    Range(PortRange),
}

impl PortMatch {
    /// The first and last port matched.
    pub fn bounds(&self) -> (u16, u16) {
        match self {
            PortMatch::Mask(m) => m.bounds(),
            PortMatch::Range(r) => (r.min, r.max),
        }
    }
}

/// An ICMP code match: `code & mask == value`. Security-group rules match one code; the
/// layout masks it to drop neighbour advertisements with a code other than 0, which no
/// item can exclude (`icmp6_nd_na` has no code field in testpmd's grammar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CodeMatch {
    /// The value, bits outside the mask cleared.
    pub value: u8,
    /// The mask; all ones is one code.
    pub mask: u8,
}

impl CodeMatch {
    /// One code.
    pub fn exact(code: u8) -> Self {
        CodeMatch {
            value: code,
            mask: 0xff,
        }
    }

    /// Whether the mask is all ones.
    pub fn is_exact(&self) -> bool {
        self.mask == 0xff
    }

    /// The codes other than 0, as prefix-shaped blocks (`1xxxxxxx`, `01xxxxxx`, …,
    /// `00000001`): eight disjoint matches, so they share one priority level.
    pub fn nonzero() -> impl Iterator<Item = CodeMatch> {
        (0..8u32).map(|i| {
            let bit = 0x80u8 >> i;
            CodeMatch {
                value: bit,
                mask: !(bit - 1),
            }
        })
    }
}

/// The IP layer of a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ip {
    /// IPv4 or IPv6 (the item).
    pub family: EtherType,
    /// Source prefix.
    pub src: Option<IpNet>,
    /// Destination prefix.
    pub dst: Option<IpNet>,
    /// Protocol / next header, when no L4 item implies it.
    pub proto: Option<u8>,
}

/// Which L4 item carries ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortProto {
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
    /// `sctp`.
    Sctp,
}

impl PortProto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            PortProto::Tcp => 6,
            PortProto::Udp => 17,
            PortProto::Sctp => 132,
        }
    }

    /// The item's name.
    pub fn item(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
            PortProto::Sctp => "sctp",
        }
    }

    /// The item for a protocol number, if it has one.
    pub fn of(proto: u8) -> Option<PortProto> {
        match proto {
            6 => Some(PortProto::Tcp),
            17 => Some(PortProto::Udp),
            132 => Some(PortProto::Sctp),
            _ => None,
        }
    }
}

/// The layer above IP (or ARP/ND specifics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Upper {
    /// TCP, UDP or SCTP ports.
    Ports {
        /// The protocol.
        proto: PortProto,
        /// Source port.
        src: Option<PortMatch>,
        /// Destination port.
        dst: Option<PortMatch>,
    },
    /// ICMP (IPv4) or ICMPv6 type and code; the family comes from the IP layer.
    Icmp {
        /// Type.
        icmp_type: Option<u8>,
        /// Code.
        code: Option<CodeMatch>,
    },
    /// An ICMPv6 neighbour advertisement, by target address (`icmp6_nd_na`).
    NdNa {
        /// Target address prefix.
        target: IpNet,
    },
    /// An ARP packet for IPv4 over Ethernet, by sender (`arp_eth_ipv4`).
    Arp {
        /// Sender hardware address.
        sha: Mac,
        /// Sender protocol address prefix.
        spa: Ipv4Net,
    },
}

/// Where a packet entered the embedded switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source(pub u16);

/// A driver-neutral match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pattern {
    /// The ethdev port the packet came from (`represented_port` / `port_id` item).
    pub source: Option<Source>,
    /// Ethernet source.
    pub eth_src: Option<Mac>,
    /// Ethernet destination.
    pub eth_dst: Option<MacMatch>,
    /// Ethertype of non-IP matches (ARP); IP matches imply theirs.
    pub ether_type: Option<u16>,
    /// IP layer.
    pub ip: Option<Ip>,
    /// Above IP, or ARP/ND details.
    pub upper: Option<Upper>,
}

/// A field of the flat form. The order is the order of rendering and of shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Ingress ethdev port.
    Source,
    /// Ethernet source.
    EthSrc,
    /// Ethernet destination.
    EthDst,
    /// Ethertype.
    EtherType,
    /// IP source.
    IpSrc,
    /// IP destination.
    IpDst,
    /// IP protocol.
    Proto,
    /// L4 source port.
    L4Src,
    /// L4 destination port.
    L4Dst,
    /// ICMP type.
    IcmpType,
    /// ICMP code.
    IcmpCode,
    /// ARP sender hardware address.
    ArpSha,
    /// ARP sender protocol address.
    ArpSpa,
    /// ND target.
    NdTarget,
}

/// One field's constraint in the flat form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Constraint {
    /// `x & mask == value`.
    Masked {
        /// Value (bits outside the mask cleared).
        value: u128,
        /// Mask.
        mask: u128,
    },
    /// `lo <= x <= hi`.
    Range {
        /// Low end.
        lo: u128,
        /// High end.
        hi: u128,
    },
}

impl Constraint {
    fn exact(value: u128, bits: u32) -> Self {
        let mask = if bits == 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        Constraint::Masked { value, mask }
    }

    fn mac(m: Mac) -> Self {
        Constraint::exact(mac_bits(m), 48)
    }

    fn net(n: &IpNet) -> Self {
        match n {
            IpNet::V4(v4) => Constraint::v4(v4),
            IpNet::V6(v6) => Constraint::v6(v6),
        }
    }

    fn v4(n: &Ipv4Net) -> Self {
        Constraint::Masked {
            value: u128::from(u32::from(n.network())),
            mask: u128::from(u32::from(n.netmask())),
        }
    }

    fn v6(n: &Ipv6Net) -> Self {
        Constraint::Masked {
            value: u128::from(n.network()),
            mask: u128::from(n.netmask()),
        }
    }

    fn port(p: &PortMatch) -> Self {
        match p {
            PortMatch::Mask(m) => Constraint::Masked {
                value: u128::from(m.value),
                mask: u128::from(m.mask),
            },
            PortMatch::Range(r) => Constraint::Range {
                lo: u128::from(r.min),
                hi: u128::from(r.max),
            },
        }
    }

    /// As an interval, for masks that are prefix-shaped (all masks this backend makes,
    /// except the Ethernet group bit, are). `None` for other masks.
    fn interval(&self, bits: u32) -> Option<(u128, u128)> {
        match *self {
            Constraint::Range { lo, hi } => Some((lo, hi)),
            Constraint::Masked { value, mask } => {
                let full = if bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << bits) - 1
                };
                let host = !mask & full;
                // Prefix-shaped: the host part is a run of low ones.
                (host & host.wrapping_add(1) == 0).then_some((value, value | host))
            }
        }
    }

    /// Whether some value satisfies both.
    pub fn overlaps(&self, other: &Constraint, bits: u32) -> bool {
        if let (
            Constraint::Masked { value: a, mask: m },
            Constraint::Masked { value: b, mask: n },
        ) = (self, other)
        {
            return (a ^ b) & m & n == 0;
        }
        match (self.interval(bits), other.interval(bits)) {
            (Some((a, b)), Some((c, d))) => a <= d && c <= b,
            // Not comparable: assume the worst.
            _ => true,
        }
    }

    /// Whether every value satisfying `other` satisfies `self`.
    pub fn contains(&self, other: &Constraint, bits: u32) -> bool {
        if let (
            Constraint::Masked { value: a, mask: m },
            Constraint::Masked { value: b, mask: n },
        ) = (self, other)
        {
            return m & !n == 0 && (a ^ b) & m == 0;
        }
        match (self.interval(bits), other.interval(bits)) {
            (Some((a, b)), Some((c, d))) => a <= c && d <= b,
            _ => false,
        }
    }

    /// The mask part, for shapes; ranges have their own shape.
    pub fn shape(&self) -> Option<u128> {
        match self {
            Constraint::Masked { mask, .. } => Some(*mask),
            Constraint::Range { .. } => None,
        }
    }
}

fn mac_bits(m: Mac) -> u128 {
    m.0.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

impl Field {
    /// Width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Field::Source => 16,
            Field::EthSrc | Field::EthDst | Field::ArpSha => 48,
            Field::EtherType | Field::L4Src | Field::L4Dst => 16,
            Field::IpSrc | Field::IpDst | Field::NdTarget => 128,
            Field::ArpSpa => 32,
            Field::Proto | Field::IcmpType | Field::IcmpCode => 8,
        }
    }
}

impl Pattern {
    /// The match on every packet.
    pub fn any() -> Self {
        Pattern::default()
    }

    /// The flat form: every field the pattern constrains, implied ones included (an IPv4
    /// item implies ethertype 0x0800, a TCP item protocol 6, an NA item ICMPv6 type 136).
    pub fn fields(&self) -> Vec<(Field, Constraint)> {
        let mut out = Vec::with_capacity(8);
        if let Some(Source(p)) = self.source {
            out.push((Field::Source, Constraint::exact(u128::from(p), 16)));
        }
        if let Some(m) = self.eth_src {
            out.push((Field::EthSrc, Constraint::mac(m)));
        }
        if let Some(m) = self.eth_dst {
            out.push((
                Field::EthDst,
                Constraint::Masked {
                    value: mac_bits(m.value),
                    mask: mac_bits(m.mask),
                },
            ));
        }
        let ether_type = match (&self.ip, &self.upper) {
            (Some(ip), _) => Some(match ip.family {
                EtherType::V4 => ethertype::IPV4,
                EtherType::V6 => ethertype::IPV6,
            }),
            (None, Some(Upper::Arp { .. })) => Some(ethertype::ARP),
            _ => self.ether_type,
        };
        if let Some(t) = ether_type {
            out.push((Field::EtherType, Constraint::exact(u128::from(t), 16)));
        }
        if let Some(ip) = &self.ip {
            // IPv4 and IPv6 addresses never meet: the ethertype already separates them.
            if let Some(n) = &ip.src {
                out.push((Field::IpSrc, Constraint::net(n)));
            }
            if let Some(n) = &ip.dst {
                out.push((Field::IpDst, Constraint::net(n)));
            }
            let implied = match (&self.upper, ip.family) {
                (Some(Upper::Ports { proto, .. }), _) => Some(proto.number()),
                (Some(Upper::Icmp { .. }), EtherType::V4) => Some(1),
                (Some(Upper::Icmp { .. }) | Some(Upper::NdNa { .. }), EtherType::V6) => Some(58),
                _ => ip.proto,
            };
            if let Some(p) = implied {
                out.push((Field::Proto, Constraint::exact(u128::from(p), 8)));
            }
        }
        match &self.upper {
            Some(Upper::Ports { src, dst, .. }) => {
                if let Some(p) = src {
                    out.push((Field::L4Src, Constraint::port(p)));
                }
                if let Some(p) = dst {
                    out.push((Field::L4Dst, Constraint::port(p)));
                }
            }
            Some(Upper::Icmp { icmp_type, code }) => {
                if let Some(t) = icmp_type {
                    out.push((Field::IcmpType, Constraint::exact(u128::from(*t), 8)));
                }
                if let Some(c) = code {
                    out.push((
                        Field::IcmpCode,
                        Constraint::Masked {
                            value: u128::from(c.value & c.mask),
                            mask: u128::from(c.mask),
                        },
                    ));
                }
            }
            Some(Upper::NdNa { target }) => {
                out.push((Field::IcmpType, Constraint::exact(136, 8)));
                out.push((Field::NdTarget, Constraint::net(target)));
            }
            Some(Upper::Arp { sha, spa }) => {
                out.push((Field::ArpSha, Constraint::mac(*sha)));
                out.push((Field::ArpSpa, Constraint::v4(spa)));
            }
            None => {}
        }
        out.sort_by_key(|(f, _)| *f);
        out
    }
}

/// The flat form, precomputed for the layout's pairwise checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flat(pub Vec<(Field, Constraint)>);

impl Flat {
    /// Flattens a pattern.
    pub fn of(p: &Pattern) -> Self {
        Flat(p.fields())
    }

    /// Whether some packet matches both (a field constrained on one side only never
    /// separates them).
    pub fn overlaps(&self, other: &Flat) -> bool {
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.0, &other.0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    if !a[i].1.overlaps(&b[j].1, a[i].0.bits()) {
                        return false;
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        true
    }

    /// Whether every packet matching `other` matches `self`.
    pub fn contains(&self, other: &Flat) -> bool {
        self.0.iter().all(|(f, c)| {
            other
                .0
                .iter()
                .find(|(g, _)| g == f)
                .is_some_and(|(_, d)| c.contains(d, f.bits()))
        })
    }

    /// The mask recipe: which fields, with which masks (ranges count as their own kind). The
    /// ethertype and IP protocol values are part of it too: they decide the items (ipv4 or
    /// ipv6, tcp or udp…), and a driver builds its key layout from the items.
    pub fn shape(&self) -> Vec<(Field, Option<u128>, Option<u128>)> {
        self.0
            .iter()
            .map(|(f, c)| {
                let value = match (f, c) {
                    (Field::EtherType | Field::Proto, Constraint::Masked { value, .. }) => {
                        Some(*value)
                    }
                    _ => None,
                };
                (*f, c.shape(), value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_dst(v: u16, m: u16) -> Pattern {
        Pattern {
            ip: Some(Ip {
                family: EtherType::V4,
                src: None,
                dst: None,
                proto: None,
            }),
            upper: Some(Upper::Ports {
                proto: PortProto::Tcp,
                src: None,
                dst: Some(PortMatch::Mask(PortMask { value: v, mask: m })),
            }),
            ..Pattern::default()
        }
    }

    #[test]
    fn disjoint_ports_do_not_overlap() {
        let a = Flat::of(&tcp_dst(80, 0xffff));
        let b = Flat::of(&tcp_dst(443, 0xffff));
        let c = Flat::of(&tcp_dst(0, 0xff00));
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c) && c.contains(&a) && !a.contains(&c));
    }

    #[test]
    fn ip_protocol_implied_by_item() {
        let mut any_tcp = tcp_dst(0, 0);
        any_tcp.upper = None;
        any_tcp.ip.as_mut().unwrap().proto = Some(6);
        let udp = Pattern {
            upper: Some(Upper::Ports {
                proto: PortProto::Udp,
                src: None,
                dst: None,
            }),
            ..any_tcp
        };
        let tcp80 = Flat::of(&tcp_dst(80, 0xffff));
        assert!(Flat::of(&any_tcp).contains(&tcp80));
        assert!(!Flat::of(&udp).overlaps(&tcp80));
        assert!(Flat::of(&Pattern::any()).contains(&tcp80));
    }

    #[test]
    fn ranges_against_masks() {
        let mut r = tcp_dst(0, 0);
        r.upper = Some(Upper::Ports {
            proto: PortProto::Tcp,
            src: None,
            dst: Some(PortMatch::Range(PortRange { min: 100, max: 200 })),
        });
        let r = Flat::of(&r);
        assert!(r.overlaps(&Flat::of(&tcp_dst(128, 0xffc0))));
        assert!(r.contains(&Flat::of(&tcp_dst(128, 0xffc0))));
        assert!(!r.overlaps(&Flat::of(&tcp_dst(256, 0xff00))));
    }

    use proptest::prelude::*;

    /// A port constraint: a prefix-shaped mask (as the IR makes) or a range.
    fn port_constraint() -> impl Strategy<Value = Constraint> {
        prop_oneof![
            (any::<u16>(), 0u32..=16).prop_map(|(v, len)| {
                let mask = if len == 0 {
                    0u16
                } else {
                    u16::MAX << (16 - len)
                };
                Constraint::Masked {
                    value: u128::from(v & mask),
                    mask: u128::from(mask),
                }
            }),
            (any::<u16>(), any::<u16>()).prop_map(|(a, b)| Constraint::Range {
                lo: u128::from(a.min(b)),
                hi: u128::from(a.max(b)),
            }),
        ]
    }

    fn admits(c: &Constraint, x: u128) -> bool {
        match *c {
            Constraint::Masked { value, mask } => x & mask == value,
            Constraint::Range { lo, hi } => lo <= x && x <= hi,
        }
    }

    proptest! {
        /// `overlaps` and `contains` against every port: the layout's safety rests on them.
        #[test]
        fn port_constraints_against_brute_force(a in port_constraint(), b in port_constraint()) {
            let both = (0..=u128::from(u16::MAX)).any(|x| admits(&a, x) && admits(&b, x));
            let covered = (0..=u128::from(u16::MAX)).all(|x| !admits(&b, x) || admits(&a, x));
            prop_assert_eq!(a.overlaps(&b, 16), both);
            prop_assert_eq!(a.contains(&b, 16), covered);
        }
    }

    #[test]
    fn group_bit_mask() {
        let mut a = Pattern::any();
        a.eth_dst = Some(MacMatch::group());
        let mut b = Pattern::any();
        b.eth_dst = Some(MacMatch::exact(Mac([0xfa, 0x16, 0x3e, 0, 0, 1])));
        let mut c = Pattern::any();
        c.eth_dst = Some(MacMatch::exact(Mac([0xff; 6])));
        assert!(!Flat::of(&a).overlaps(&Flat::of(&b)));
        assert!(Flat::of(&a).contains(&Flat::of(&c)));
    }
}
