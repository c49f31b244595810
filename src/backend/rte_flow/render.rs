//! testpmd rendering: `flow create PORT group G priority P transfer pattern … / end actions …
//! / end`, in the grammar of `testpmd_funcs.rst`. Exact values print as `F is V`, prefixes and
//! port blocks as `F spec V F mask M`, ranges as `F spec A F last B F mask M`.

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::pattern::{PortMatch, Upper};
use super::{Action, Pattern, PortNaming, RteFlowOptions, RteRule};
use crate::model::EtherType;

/// Items of a pattern, each as `name field…` without the separators.
pub(super) fn items(p: &Pattern, naming: PortNaming) -> Vec<String> {
    let mut out = Vec::with_capacity(5);
    if let Some(src) = p.source {
        out.push(match naming {
            PortNaming::Representor => format!("represented_port ethdev_port_id is {}", src.0),
            PortNaming::PortId => format!("port_id id is {}", src.0),
        });
    }
    let mut eth = String::from("eth");
    if let Some(m) = p.eth_src {
        let _ = write!(eth, " src is {m}");
    }
    if let Some(m) = p.eth_dst {
        if m.is_exact() {
            let _ = write!(eth, " dst is {}", m.value);
        } else {
            let _ = write!(eth, " dst spec {} dst mask {}", m.value, m.mask);
        }
    }
    if p.ip.is_none() && !matches!(p.upper, Some(Upper::Arp { .. })) {
        if let Some(t) = p.ether_type {
            let _ = write!(eth, " type is {t:#06x}");
        }
    }
    out.push(eth);
    if let Some(Upper::Arp { sha, spa }) = &p.upper {
        let mut arp = format!("arp_eth_ipv4 sha is {sha}");
        prefix(&mut arp, "spa", &IpNet::V4(*spa));
        out.push(arp);
        return out;
    }
    if let Some(ip) = &p.ip {
        let mut l3 = String::from(match ip.family {
            EtherType::V4 => "ipv4",
            EtherType::V6 => "ipv6",
        });
        if let Some(n) = &ip.src {
            prefix(&mut l3, "src", n);
        }
        if let Some(n) = &ip.dst {
            prefix(&mut l3, "dst", n);
        }
        if let Some(proto) = ip.proto {
            let _ = write!(l3, " proto is {proto}");
        }
        out.push(l3);
        match &p.upper {
            Some(Upper::Ports { proto, src, dst }) => {
                let mut l4 = proto.item().to_string();
                if let Some(m) = src {
                    port(&mut l4, "src", m);
                }
                if let Some(m) = dst {
                    port(&mut l4, "dst", m);
                }
                out.push(l4);
            }
            Some(Upper::Icmp { icmp_type, code }) => {
                let mut l4 = String::from(match ip.family {
                    EtherType::V4 => "icmp",
                    EtherType::V6 => "icmp6",
                });
                if let Some(t) = icmp_type {
                    let _ = write!(l4, " type is {t}");
                }
                match code {
                    Some(c) if c.is_exact() => {
                        let _ = write!(l4, " code is {}", c.value);
                    }
                    Some(c) => {
                        let _ = write!(l4, " code spec {} code mask {:#04x}", c.value, c.mask);
                    }
                    None => {}
                }
                out.push(l4);
            }
            Some(Upper::NdNa { target }) => {
                let mut na = String::from("icmp6_nd_na");
                prefix(&mut na, "target_addr", target);
                out.push(na);
            }
            Some(Upper::Arp { .. }) | None => {}
        }
    }
    out
}

fn prefix(out: &mut String, field: &str, net: &IpNet) {
    if net.prefix_len() == net.max_prefix_len() {
        let _ = write!(out, " {field} is {}", net.addr());
    } else {
        let _ = write!(
            out,
            " {field} spec {} {field} mask {}",
            net.network(),
            mask_addr(net)
        );
    }
}

fn mask_addr(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.netmask()))),
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.netmask()))),
    }
}

fn port(out: &mut String, field: &str, m: &PortMatch) {
    match m {
        PortMatch::Mask(pm) if pm.mask == 0xffff => {
            let _ = write!(out, " {field} is {}", pm.value);
        }
        PortMatch::Mask(pm) => {
            let _ = write!(
                out,
                " {field} spec {} {field} mask {:#06x}",
                pm.value, pm.mask
            );
        }
        PortMatch::Range(r) => {
            let _ = write!(
                out,
                " {field} spec {} {field} last {} {field} mask 0xffff",
                r.min, r.max
            );
        }
    }
}

/// The action list (without `count`), e.g. `jump group 1280`.
pub(super) fn action(a: Action, options: &RteFlowOptions) -> String {
    match (a, options.profile.ports) {
        (Action::Jump(g), _) => format!("jump group {g}"),
        (Action::Drop, _) => "drop".into(),
        (Action::ToPort(p), PortNaming::Representor) => {
            format!("represented_port ethdev_port_id {p}")
        }
        (Action::ToPort(p), PortNaming::PortId) => format!("port_id id {p}"),
        (Action::ToSoftware(p), PortNaming::Representor) => {
            format!("port_representor port_id {p}")
        }
        (Action::ToSoftware(_), PortNaming::PortId) => format!(
            "port_id id {}",
            options.software_port.unwrap_or(options.proxy_port)
        ),
    }
}

fn line(out: &mut String, r: &RteRule, options: &RteFlowOptions, command: &str) {
    let _ = write!(
        out,
        "flow {command} {} group {} priority {} transfer pattern ",
        options.proxy_port, r.group, r.priority
    );
    for item in items(&r.pattern, options.profile.ports) {
        out.push_str(&item);
        out.push_str(" / ");
    }
    out.push_str("end actions ");
    if r.count {
        out.push_str("count / ");
    }
    out.push_str(&action(r.action, options));
    out.push_str(" / end\n");
}

/// All rules as testpmd commands, one per line.
pub(super) fn testpmd(rules: &[RteRule], options: &RteFlowOptions, command: &str) -> String {
    let mut out = String::with_capacity(rules.len() * 140);
    for r in rules {
        line(&mut out, r, options, command);
    }
    out
}

/// The patterns of the rules without a port item (everything outside group 0) as plain
/// `ingress` drop rules on `port`, without group, transfer or count: the form a software
/// driver such as `net_tap` can judge (it implements neither `transfer` nor representors).
/// Equal lines are left out.
pub(super) fn plain_drops(
    rules: &[RteRule],
    options: &RteFlowOptions,
    port: u16,
    command: &str,
) -> Vec<String> {
    let mut out: Vec<String> = rules
        .iter()
        .filter(|r| r.pattern.source.is_none())
        .map(|r| {
            format!(
                "flow {command} {port} priority {} ingress pattern {} / end actions drop / end",
                r.priority,
                items(&r.pattern, options.profile.ports).join(" / ")
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::rte_flow::pattern::{Ip, MacMatch, PortProto, Source};
    use crate::ir::PortMask;

    #[test]
    fn items_in_testpmd_grammar() {
        let p = Pattern {
            source: Some(Source(3)),
            eth_src: Some("fa:16:3e:00:00:01".parse().unwrap()),
            ip: Some(Ip {
                family: EtherType::V4,
                src: Some("10.0.0.0/24".parse().unwrap()),
                dst: Some("10.0.0.5/32".parse().unwrap()),
                proto: None,
            }),
            upper: Some(Upper::Ports {
                proto: PortProto::Tcp,
                src: None,
                dst: Some(PortMatch::Mask(PortMask {
                    value: 1024,
                    mask: 0xfc00,
                })),
            }),
            ..Pattern::default()
        };
        assert_eq!(
            items(&p, PortNaming::Representor).join(" / "),
            "represented_port ethdev_port_id is 3 / eth src is fa:16:3e:00:00:01 / \
             ipv4 src spec 10.0.0.0 src mask 255.255.255.0 dst is 10.0.0.5 / \
             tcp dst spec 1024 dst mask 0xfc00"
        );
        let q = Pattern {
            source: Some(Source(3)),
            eth_dst: Some(MacMatch::group()),
            ..Pattern::default()
        };
        assert_eq!(
            items(&q, PortNaming::PortId).join(" / "),
            "port_id id is 3 / eth dst spec 01:00:00:00:00:00 dst mask 01:00:00:00:00:00"
        );
    }
}
