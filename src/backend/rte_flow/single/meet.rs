//! The intersection of two patterns: what flattening a `jump` needs (the rule that jumps
//! and each rule of the group it jumps to become one rule matching both).

use ipnet::IpNet;

use super::super::pattern::{ethertype, CodeMatch, Ip, MacMatch, PortMatch, Upper};
use super::super::Pattern;
use crate::ir::PortMask;
use crate::model::{protocol, EtherType};

/// What two patterns have in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Meet {
    /// The packets both match.
    Both(Pattern),
    /// No packet matches both.
    Disjoint,
    /// A combination this backend never emits (two different upper layers of one kind that
    /// are not both masks): the caller fails closed.
    Unsupported,
}

/// Outcome of one field's intersection.
enum Field<T> {
    Value(Option<T>),
    Disjoint,
    Unsupported,
}

fn exact<T: PartialEq + Copy>(a: Option<T>, b: Option<T>) -> Field<T> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => Field::Disjoint,
        (x, y) => Field::Value(x.or(y)),
    }
}

fn mac(a: Option<MacMatch>, b: Option<MacMatch>) -> Field<MacMatch> {
    let (Some(x), Some(y)) = (a, b) else {
        return Field::Value(a.or(b));
    };
    let mut value = [0u8; 6];
    let mut mask = [0u8; 6];
    for i in 0..6 {
        let common = x.mask.0[i] & y.mask.0[i];
        if (x.value.0[i] ^ y.value.0[i]) & common != 0 {
            return Field::Disjoint;
        }
        value[i] = (x.value.0[i] & x.mask.0[i]) | (y.value.0[i] & y.mask.0[i]);
        mask[i] = x.mask.0[i] | y.mask.0[i];
    }
    Field::Value(Some(MacMatch {
        value: crate::model::Mac(value),
        mask: crate::model::Mac(mask),
    }))
}

fn prefix(a: Option<IpNet>, b: Option<IpNet>) -> Field<IpNet> {
    let (Some(x), Some(y)) = (a, b) else {
        return Field::Value(a.or(b));
    };
    if x.contains(&y) {
        Field::Value(Some(y))
    } else if y.contains(&x) {
        Field::Value(Some(x))
    } else {
        Field::Disjoint
    }
}

fn port(a: Option<PortMatch>, b: Option<PortMatch>) -> Field<PortMatch> {
    match (a, b) {
        (Some(PortMatch::Mask(x)), Some(PortMatch::Mask(y))) => {
            let common = x.mask & y.mask;
            if (x.value ^ y.value) & common != 0 {
                Field::Disjoint
            } else {
                Field::Value(Some(PortMatch::Mask(PortMask {
                    value: (x.value & x.mask) | (y.value & y.mask),
                    mask: x.mask | y.mask,
                })))
            }
        }
        (Some(x), Some(y)) if x == y => Field::Value(Some(x)),
        (Some(_), Some(_)) => Field::Unsupported,
        (x, y) => Field::Value(x.or(y)),
    }
}

fn code(a: Option<CodeMatch>, b: Option<CodeMatch>) -> Field<CodeMatch> {
    let (Some(x), Some(y)) = (a, b) else {
        return Field::Value(a.or(b));
    };
    if (x.value ^ y.value) & x.mask & y.mask != 0 {
        return Field::Disjoint;
    }
    Field::Value(Some(CodeMatch {
        value: (x.value & x.mask) | (y.value & y.mask),
        mask: x.mask | y.mask,
    }))
}

/// The protocol number an upper layer implies.
fn implied_proto(upper: &Upper, family: EtherType) -> Option<u8> {
    match upper {
        Upper::Ports { proto, .. } => Some(proto.number()),
        Upper::Icmp { .. } => Some(match family {
            EtherType::V4 => protocol::ICMP,
            EtherType::V6 => protocol::ICMPV6,
        }),
        Upper::NdNa { .. } => Some(protocol::ICMPV6),
        Upper::Arp { .. } => None,
    }
}

/// The ether type a pattern implies (its IP family, or ARP), or states.
fn implied_ether_type(p: &Pattern) -> Option<u16> {
    if let Some(ip) = &p.ip {
        return Some(match ip.family {
            EtherType::V4 => ethertype::IPV4,
            EtherType::V6 => ethertype::IPV6,
        });
    }
    if matches!(p.upper, Some(Upper::Arp { .. })) {
        return Some(ethertype::ARP);
    }
    p.ether_type
}

fn ip(a: Option<Ip>, b: Option<Ip>) -> Field<Ip> {
    let (Some(x), Some(y)) = (a, b) else {
        return Field::Value(a.or(b));
    };
    if x.family != y.family {
        return Field::Disjoint;
    }
    let src = match prefix(x.src, y.src) {
        Field::Value(v) => v,
        Field::Disjoint => return Field::Disjoint,
        Field::Unsupported => return Field::Unsupported,
    };
    let dst = match prefix(x.dst, y.dst) {
        Field::Value(v) => v,
        Field::Disjoint => return Field::Disjoint,
        Field::Unsupported => return Field::Unsupported,
    };
    let proto = match exact(x.proto, y.proto) {
        Field::Value(v) => v,
        Field::Disjoint => return Field::Disjoint,
        Field::Unsupported => return Field::Unsupported,
    };
    Field::Value(Some(Ip {
        family: x.family,
        src,
        dst,
        proto,
    }))
}

fn upper(a: Option<Upper>, b: Option<Upper>) -> Field<Upper> {
    let (Some(x), Some(y)) = (a, b) else {
        return Field::Value(a.or(b));
    };
    match (x, y) {
        _ if x == y => Field::Value(Some(x)),
        (
            Upper::Ports {
                proto: p,
                src: s1,
                dst: d1,
            },
            Upper::Ports {
                proto: q,
                src: s2,
                dst: d2,
            },
        ) => {
            if p != q {
                return Field::Disjoint;
            }
            match (port(s1, s2), port(d1, d2)) {
                (Field::Value(src), Field::Value(dst)) => {
                    Field::Value(Some(Upper::Ports { proto: p, src, dst }))
                }
                (Field::Disjoint, _) | (_, Field::Disjoint) => Field::Disjoint,
                _ => Field::Unsupported,
            }
        }
        (
            Upper::Icmp {
                icmp_type: t1,
                code: c1,
            },
            Upper::Icmp {
                icmp_type: t2,
                code: c2,
            },
        ) => match (exact(t1, t2), code(c1, c2)) {
            (Field::Value(icmp_type), Field::Value(code)) => {
                Field::Value(Some(Upper::Icmp { icmp_type, code }))
            }
            _ => Field::Disjoint,
        },
        (Upper::Ports { .. }, _)
        | (Upper::Icmp { .. }, _)
        | (Upper::NdNa { .. }, _)
        | (Upper::Arp { .. }, _)
            if std::mem::discriminant(&x) != std::mem::discriminant(&y) =>
        {
            // ICMP and an ND target item can both describe one advertisement; the backend
            // never jumps from one to the other, so such a pair is left to the caller.
            if matches!(
                (x, y),
                (Upper::Icmp { .. }, Upper::NdNa { .. }) | (Upper::NdNa { .. }, Upper::Icmp { .. })
            ) {
                Field::Unsupported
            } else {
                Field::Disjoint
            }
        }
        _ => Field::Unsupported,
    }
}

/// Whether the implied protocol of the upper layer agrees with the IP layer's `proto`.
fn proto_agrees(p: &Pattern) -> bool {
    match (&p.ip, &p.upper) {
        (Some(ip), Some(u)) => match (ip.proto, implied_proto(u, ip.family)) {
            (Some(a), Some(b)) => a == b,
            (_, None) => !matches!(u, Upper::Arp { .. }),
            _ => true,
        },
        (None, Some(u)) => matches!(u, Upper::Arp { .. }),
        _ => true,
    }
}

/// The packets matching both `a` and `b`. Port sources are not compared (a single-port
/// rendering strips them).
pub(super) fn meet(a: &Pattern, b: &Pattern) -> Meet {
    // A stated ether type must agree with the other pattern's layers.
    match (implied_ether_type(a), implied_ether_type(b)) {
        (Some(x), Some(y)) if x != y => return Meet::Disjoint,
        _ => {}
    }
    macro_rules! take {
        ($e:expr) => {
            match $e {
                Field::Value(v) => v,
                Field::Disjoint => return Meet::Disjoint,
                Field::Unsupported => return Meet::Unsupported,
            }
        };
    }
    let p = Pattern {
        source: None,
        eth_src: take!(exact(a.eth_src, b.eth_src)),
        eth_dst: take!(mac(a.eth_dst, b.eth_dst)),
        ether_type: take!(exact(a.ether_type, b.ether_type)),
        ip: take!(ip(a.ip, b.ip)),
        upper: take!(upper(a.upper, b.upper)),
    };
    if !proto_agrees(&p) {
        return Meet::Disjoint;
    }
    Meet::Both(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::rte_flow::pattern::PortProto;

    fn v4(src: Option<&str>, dst: Option<&str>) -> Pattern {
        Pattern {
            ip: Some(Ip {
                family: EtherType::V4,
                src: src.map(|s| s.parse().unwrap()),
                dst: dst.map(|s| s.parse().unwrap()),
                proto: None,
            }),
            ..Pattern::default()
        }
    }

    #[test]
    fn prefixes_narrow_and_disjoint_ones_meet_nowhere() {
        let base = Pattern {
            eth_src: Some("fa:16:3e:00:00:01".parse().unwrap()),
            ..v4(Some("10.0.0.5/32"), None)
        };
        let rule = v4(None, Some("192.168.0.0/16"));
        let Meet::Both(m) = meet(&base, &rule) else {
            panic!("expected a meet")
        };
        assert_eq!(m.eth_src, base.eth_src);
        assert_eq!(m.ip.unwrap().src, base.ip.unwrap().src);
        assert_eq!(m.ip.unwrap().dst, rule.ip.unwrap().dst);
        assert_eq!(
            meet(
                &v4(Some("10.0.0.0/24"), None),
                &v4(Some("10.0.1.0/24"), None)
            ),
            Meet::Disjoint
        );
        let v6 = Pattern {
            ip: Some(Ip {
                family: EtherType::V6,
                src: None,
                dst: None,
                proto: None,
            }),
            ..Pattern::default()
        };
        assert_eq!(meet(&v4(None, None), &v6), Meet::Disjoint);
        let arp = Pattern {
            ether_type: Some(ethertype::ARP),
            ..Pattern::default()
        };
        assert_eq!(meet(&v4(None, None), &arp), Meet::Disjoint);
    }

    #[test]
    fn port_masks_combine_and_protocols_must_agree() {
        let ports = |dst: PortMask| Pattern {
            upper: Some(Upper::Ports {
                proto: PortProto::Tcp,
                src: None,
                dst: Some(PortMatch::Mask(dst)),
            }),
            ..v4(None, None)
        };
        let a = ports(PortMask {
            value: 1024,
            mask: 0xfc00,
        });
        let b = ports(PortMask {
            value: 1030,
            mask: 0xffff,
        });
        assert_eq!(meet(&a, &b), Meet::Both(b));
        let c = ports(PortMask {
            value: 80,
            mask: 0xffff,
        });
        assert_eq!(meet(&a, &c), Meet::Disjoint);
        let mut udp_proto = v4(None, None);
        udp_proto.ip.as_mut().unwrap().proto = Some(protocol::UDP);
        assert_eq!(meet(&udp_proto, &a), Meet::Disjoint);
    }
}
