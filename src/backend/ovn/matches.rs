//! OVN match expressions for security-group rules (`ovn-sb(5)` "Logical_Flow" match syntax).
//! OVN has no generic transport field: ports are matched as `tcp.dst`, `udp.dst` or
//! `sctp.dst`, ranges as `>= a && <= b`.

use ipnet::IpNet;

use crate::ir::policy::{PolicyRule, RemoteSet};
use crate::model::{Direction, EtherType, PortRange, L4};

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMPV6: u8 = 58;

/// `ip4` or `ip6`.
pub fn family(ethertype: EtherType) -> &'static str {
    match ethertype {
        EtherType::V4 => "ip4",
        EtherType::V6 => "ip6",
    }
}

/// The port-group clause: ingress rules filter what leaves the switch towards the port
/// (`outport`, a `to-lport` ACL), egress rules what enters it from the port (`inport`).
pub fn port_clause(direction: Direction, port_group: &str) -> String {
    match direction {
        Direction::Ingress => format!("outport == @{port_group}"),
        Direction::Egress => format!("inport == @{port_group}"),
    }
}

/// The remote end's field: the source of ingress traffic, the destination of egress.
fn remote_field(direction: Direction, ethertype: EtherType) -> String {
    let end = match direction {
        Direction::Ingress => "src",
        Direction::Egress => "dst",
    };
    format!("{}.{end}", family(ethertype))
}

/// A set of prefixes as an OVN value: one value bare, several in braces.
pub fn net_set(nets: &[IpNet]) -> String {
    let items: Vec<String> = nets.iter().map(net_value).collect();
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{{}}}", items.join(", "))
    }
}

/// A prefix as OVN writes it: host prefixes as bare addresses.
pub fn net_value(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn range_clause(field: &str, range: PortRange) -> Option<String> {
    if range.is_any() {
        None
    } else if range.min == range.max {
        Some(format!("{field} == {}", range.min))
    } else {
        Some(format!(
            "{field} >= {} && {field} <= {}",
            range.min, range.max
        ))
    }
}

/// The protocol clause and the prefix of its fields (`tcp`, `icmp4`, ...), if it has any.
fn protocol_clause(protocol: u8) -> (String, Option<&'static str>) {
    match protocol {
        TCP => ("tcp".into(), Some("tcp")),
        UDP => ("udp".into(), Some("udp")),
        SCTP => ("sctp".into(), Some("sctp")),
        ICMP => ("icmp4".into(), Some("icmp4")),
        ICMPV6 => ("icmp6".into(), Some("icmp6")),
        other => (format!("ip.proto == {other}"), None),
    }
}

fn l4_clauses(l4: &L4, fields: Option<&str>) -> Vec<String> {
    let Some(prefix) = fields else {
        return Vec::new();
    };
    match l4 {
        L4::Any => Vec::new(),
        L4::Ports { dst, src } => [
            range_clause(&format!("{prefix}.dst"), *dst),
            range_clause(&format!("{prefix}.src"), *src),
        ]
        .into_iter()
        .flatten()
        .collect(),
        L4::Icmp { icmp_type, code } => {
            let mut out = vec![format!("{prefix}.type == {icmp_type}")];
            if let Some(code) = code {
                out.push(format!("{prefix}.code == {code}"));
            }
            out
        }
    }
}

/// The match of a rule's ACL. `address_set` names the address set standing for a remote
/// group's or address group's members (`None`: the prefixes are written inline).
pub fn rule_match(rule: &PolicyRule, port_group: &str, address_set: Option<&str>) -> String {
    let mut clauses = vec![
        port_clause(rule.direction, port_group),
        family(rule.ethertype).to_string(),
    ];
    let field = remote_field(rule.direction, rule.ethertype);
    match (&rule.remote, address_set) {
        (RemoteSet::Any, _) => {}
        (RemoteSet::Members { .. }, Some(set)) => clauses.push(format!("{field} == ${set}")),
        (remote, _) => clauses.push(format!(
            "{field} == {}",
            net_set(remote.nets().unwrap_or_default())
        )),
    }
    if let Some(protocol) = rule.protocol {
        let (clause, fields) = protocol_clause(protocol);
        clauses.push(clause);
        clauses.extend(l4_clauses(&rule.l4, fields));
    }
    clauses.join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RuleRef;

    fn rule(direction: Direction, protocol: Option<u8>, l4: L4, remote: RemoteSet) -> PolicyRule {
        PolicyRule {
            origin: RuleRef {
                group: "g".into(),
                index: 0,
            },
            direction,
            ethertype: EtherType::V4,
            protocol,
            l4,
            remote,
        }
    }

    #[test]
    fn ranges_and_remotes() {
        let r = rule(
            Direction::Ingress,
            Some(TCP),
            L4::Ports {
                dst: PortRange { min: 80, max: 90 },
                src: PortRange::ANY,
            },
            RemoteSet::Nets(vec![
                "10.0.0.0/24".parse().unwrap(),
                "10.1.0.1/32".parse().unwrap(),
            ]),
        );
        assert_eq!(
            rule_match(&r, "sgf_web", None),
            "outport == @sgf_web && ip4 && ip4.src == {10.0.0.0/24, 10.1.0.1} && tcp \
             && tcp.dst >= 80 && tcp.dst <= 90"
        );
        let single = rule(
            Direction::Egress,
            Some(UDP),
            L4::Ports {
                dst: PortRange { min: 53, max: 53 },
                src: PortRange::ANY,
            },
            RemoteSet::Any,
        );
        assert_eq!(
            rule_match(&single, "sgf_x", None),
            "inport == @sgf_x && ip4 && udp && udp.dst == 53"
        );
    }

    #[test]
    fn icmp_members_and_other_protocols() {
        let members = RemoteSet::Members {
            id: "group:db".into(),
            nets: vec!["10.0.0.5/32".parse().unwrap()].into(),
        };
        let icmp = rule(
            Direction::Ingress,
            Some(ICMP),
            L4::Icmp {
                icmp_type: 8,
                code: Some(0),
            },
            members,
        );
        assert_eq!(
            rule_match(&icmp, "sgf_web", Some("sgf_group_db_ip4")),
            "outport == @sgf_web && ip4 && ip4.src == $sgf_group_db_ip4 && icmp4 \
             && icmp4.type == 8 && icmp4.code == 0"
        );
        let gre = rule(Direction::Egress, Some(47), L4::Any, RemoteSet::Any);
        assert_eq!(
            rule_match(&gre, "sgf_web", None),
            "inport == @sgf_web && ip4 && ip.proto == 47"
        );
    }
}
