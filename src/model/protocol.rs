//! IP protocol names as neutron-lib spells them, and what each protocol lets a rule match.

/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// SCTP.
pub const SCTP: u8 = 132;
/// ICMP (IPv4).
pub const ICMP: u8 = 1;
/// ICMPv6.
pub const ICMPV6: u8 = 58;
/// DCCP: has ports, but Open vSwitch cannot match them.
pub const DCCP: u8 = 33;
/// UDP-Lite: has ports, but Open vSwitch cannot match them.
pub const UDPLITE: u8 = 136;

/// neutron-lib's protocol names (`neutron_lib.constants.IP_PROTOCOL_MAP`) and their numbers.
const NAMES: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", DCCP),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", ICMP),
    ("icmpv6", ICMPV6),
    ("igmp", 2),
    ("ip", 4),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", ICMPV6),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", SCTP),
    ("tcp", TCP),
    ("udp", UDP),
    ("udplite", UDPLITE),
    ("vrrp", 112),
];

/// The number of a protocol name, case-insensitively; `None` if the name is unknown.
pub fn by_name(name: &str) -> Option<u8> {
    // The table is lower case: comparing ignoring ASCII case is lower-casing the name.
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Whether Open vSwitch (and rte_flow) can match L4 ports of this protocol.
pub fn has_matchable_ports(proto: u8) -> bool {
    matches!(proto, TCP | UDP | SCTP)
}

/// Whether the protocol has ports that no backend can match (Neutron silently widens).
pub fn has_unmatchable_ports(proto: u8) -> bool {
    matches!(proto, DCCP | UDPLITE)
}

/// Whether the protocol carries an ICMP type and code (for the rule's family).
pub fn is_icmp(proto: u8) -> bool {
    matches!(proto, ICMP | ICMPV6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(by_name("TCP"), Some(6));
        assert_eq!(by_name("ipv6-icmp"), Some(58));
        assert_eq!(by_name("icmpv6"), Some(58));
        assert_eq!(by_name("bogus"), None);
        assert!(has_matchable_ports(SCTP));
        assert!(!has_matchable_ports(DCCP));
        assert!(has_unmatchable_ports(UDPLITE));
    }
}
