//! Rendering of flows and matches in `ovs-ofctl` syntax.

use std::fmt::Write;

use ipnet::IpNet;

use super::Flow;
use crate::ir::{PortMask, RuleMatch};
use crate::model::{protocol, Direction, EtherType};

/// `ovs-ofctl add-flows` text: one flow per line, cookie first.
pub(super) fn ofctl(flows: &[Flow], cookie: u64) -> String {
    let mut out = String::with_capacity(flows.len() * 120);
    for f in flows {
        flow_line(&mut out, "", &format!("{cookie:#x}"), f, true);
    }
    out
}

/// Appends one flow line: `PREFIXcookie=C,table=T,priority=P[,MATCH][ actions=A]\n`.
pub(super) fn flow_line(out: &mut String, prefix: &str, cookie: &str, f: &Flow, actions: bool) {
    let _ = write!(
        out,
        "{prefix}cookie={cookie},table={},priority={}",
        f.table, f.priority
    );
    if !f.matches.is_empty() {
        out.push(',');
        out.push_str(&f.matches);
    }
    if actions {
        out.push_str(" actions=");
        out.push_str(&f.actions);
    }
    out.push('\n');
}

/// A comma-separated match, built field by field in a fixed order so that equal matches
/// render to equal strings (the dedupe key).
#[derive(Debug, Default, Clone)]
pub(super) struct Match(pub(super) String);

impl Match {
    pub(super) fn new() -> Self {
        Match(String::new())
    }

    /// A bare keyword such as `arp` or `tcp6`.
    pub(super) fn kw(mut self, keyword: &str) -> Self {
        self.sep();
        self.0.push_str(keyword);
        self
    }

    /// `field=value`.
    pub(super) fn f(mut self, field: &str, value: impl std::fmt::Display) -> Self {
        self.sep();
        let _ = write!(self.0, "{field}={value}");
        self
    }

    fn sep(&mut self) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
    }

    pub(super) fn into_string(self) -> String {
        self.0
    }
}

/// A prefix as OVS prints it: a bare address for a host, `addr/len` otherwise.
pub(super) fn net(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn port_mask(m: &PortMask) -> String {
    if m.mask == 0xffff {
        m.value.to_string()
    } else {
        format!("{:#x}/{:#x}", m.value, m.mask)
    }
}

/// The protocol part of a rule's match: `ip`, `tcp`, `icmp6`, `ipv6,nw_proto=47`...
fn protocol_keyword(eth: EtherType, proto: Option<u8>) -> (String, Option<u8>) {
    let v6 = eth == EtherType::V6;
    let named = match proto {
        None => Some(if v6 { "ipv6" } else { "ip" }),
        Some(protocol::TCP) => Some(if v6 { "tcp6" } else { "tcp" }),
        Some(protocol::UDP) => Some(if v6 { "udp6" } else { "udp" }),
        Some(protocol::SCTP) => Some(if v6 { "sctp6" } else { "sctp" }),
        Some(protocol::ICMP) if !v6 => Some("icmp"),
        Some(protocol::ICMPV6) if v6 => Some("icmp6"),
        Some(_) => None,
    };
    match named {
        Some(k) => (k.to_string(), None),
        None => ((if v6 { "ipv6" } else { "ip" }).to_string(), proto),
    }
}

/// Appends a lowered rule's fields to a match that already selects the port.
pub(super) fn rule_match(mut m: Match, r: &RuleMatch) -> Match {
    let (kw, nw_proto) = protocol_keyword(r.ethertype, r.protocol);
    m = m.kw(&kw);
    if let Some(p) = nw_proto {
        m = m.f("nw_proto", p);
    }
    if let Some(remote) = &r.remote {
        let field = match (r.direction, r.ethertype) {
            (Direction::Ingress, EtherType::V4) => "nw_src",
            (Direction::Egress, EtherType::V4) => "nw_dst",
            (Direction::Ingress, EtherType::V6) => "ipv6_src",
            (Direction::Egress, EtherType::V6) => "ipv6_dst",
        };
        m = m.f(field, net(remote));
    }
    // Protocol-specific names: `tp_src`/`tp_dst` are accepted by `ovs-ofctl add-flows` but
    // mean TCP to other parsers (`ofproto/trace`).
    let l4 = match r.protocol {
        Some(protocol::UDP) => "udp",
        Some(protocol::SCTP) => "sctp",
        _ => "tcp",
    };
    if let Some(src) = &r.src_port {
        m = m.f(&format!("{l4}_src"), port_mask(src));
    }
    if let Some(dst) = &r.dst_port {
        m = m.f(&format!("{l4}_dst"), port_mask(dst));
    }
    if let Some((t, code)) = r.icmp {
        // `icmp_type` under `icmp6` is accepted by add-flows but not by every OVS parser.
        let (type_field, code_field) = match r.ethertype {
            EtherType::V4 => ("icmp_type", "icmp_code"),
            EtherType::V6 => ("icmpv6_type", "icmpv6_code"),
        };
        m = m.f(type_field, t);
        if let Some(c) = code {
            m = m.f(code_field, c);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefix_prints_as_address() {
        assert_eq!(net(&"10.0.0.5/32".parse().unwrap()), "10.0.0.5");
        assert_eq!(net(&"10.0.0.0/8".parse().unwrap()), "10.0.0.0/8");
        assert_eq!(net(&"2001:db8::/64".parse().unwrap()), "2001:db8::/64");
    }

    #[test]
    fn protocol_keywords() {
        assert_eq!(protocol_keyword(EtherType::V4, None).0, "ip");
        assert_eq!(protocol_keyword(EtherType::V6, Some(6)).0, "tcp6");
        assert_eq!(protocol_keyword(EtherType::V6, Some(58)).0, "icmp6");
        assert_eq!(
            protocol_keyword(EtherType::V4, Some(47)),
            ("ip".into(), Some(47))
        );
        // ICMPv6's number on an IPv4 rule is just a protocol number.
        assert_eq!(
            protocol_keyword(EtherType::V4, Some(58)),
            ("ip".into(), Some(58))
        );
    }

    #[test]
    fn masked_ports() {
        assert_eq!(
            port_mask(&PortMask {
                value: 22,
                mask: 0xffff
            }),
            "22"
        );
        assert_eq!(
            port_mask(&PortMask {
                value: 1024,
                mask: 0xfc00
            }),
            "0x400/0xfc00"
        );
    }
}
