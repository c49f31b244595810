//! The intermediate form between the model and the backends: each rule lowered to a list of
//! normalised matches (one remote prefix, one source and one destination port mask each),
//! so that a backend only lays matches out in its own tables.

pub mod ids;
pub mod implicit;
pub mod optimise;
pub mod policy;
pub mod portmask;

use ipnet::IpNet;

use crate::model::{Direction, EtherType, L4};
pub use portmask::{port_masks, PortMask};

/// One match of a lowered rule. Every field left `None` matches anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleMatch {
    /// Direction of the rule.
    pub direction: Direction,
    /// IPv4 or IPv6.
    pub ethertype: EtherType,
    /// IP protocol (ICMP on IPv6 is already 58).
    pub protocol: Option<u8>,
    /// The remote end's prefix (source for ingress, destination for egress).
    pub remote: Option<IpNet>,
    /// Destination port mask (TCP/UDP/SCTP).
    pub dst_port: Option<PortMask>,
    /// Source port mask (provider rules only).
    pub src_port: Option<PortMask>,
    /// ICMP type and optional code.
    pub icmp: Option<(u8, Option<u8>)>,
}

fn masks_or_any(range: crate::model::PortRange) -> Vec<Option<PortMask>> {
    if range.is_any() {
        vec![None]
    } else {
        port_masks(range).into_iter().map(Some).collect()
    }
}

/// How many matches [`lower_policy_rule`] will produce.
pub fn policy_rule_len(rule: &policy::PolicyRule) -> usize {
    let remotes = rule.remote.nets().map_or(1, |n| n.len());
    let ports = match rule.l4 {
        L4::Ports { dst, src } => masks_or_any(dst).len() * masks_or_any(src).len(),
        _ => 1,
    };
    remotes * ports
}

/// The matches of a policy rule: the product of its remote prefixes and its port masks.
pub fn lower_policy_rule(rule: &policy::PolicyRule) -> Vec<RuleMatch> {
    let remotes: Vec<Option<IpNet>> = match rule.remote.nets() {
        Some(nets) => nets.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    let (dsts, srcs, icmp) = match rule.l4 {
        L4::Any => (vec![None], vec![None], None),
        L4::Ports { dst, src } => (masks_or_any(dst), masks_or_any(src), None),
        L4::Icmp { icmp_type, code } => (vec![None], vec![None], Some((icmp_type, code))),
    };
    let mut out = Vec::with_capacity(remotes.len() * dsts.len() * srcs.len());
    for remote in &remotes {
        for dst_port in &dsts {
            for src_port in &srcs {
                out.push(RuleMatch {
                    direction: rule.direction,
                    ethertype: rule.ethertype,
                    protocol: rule.protocol,
                    remote: *remote,
                    dst_port: *dst_port,
                    src_port: *src_port,
                    icmp,
                });
            }
        }
    }
    out
}

/// Splits overlapping destination port ranges, each tagged with a value, into disjoint ranges,
/// each carrying the sorted set of values of the ranges that cover it; adjacent pieces with
/// the same set are joined. Conjunction clauses of one port must not overlap (Neutron does
/// the same split).
pub fn disjoint_ranges<T: Ord + Clone>(
    items: &[(crate::model::PortRange, T)],
) -> Vec<(crate::model::PortRange, Vec<T>)> {
    use crate::model::PortRange;
    let mut bounds: Vec<u32> = items
        .iter()
        .flat_map(|(r, _)| [u32::from(r.min), u32::from(r.max) + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<(PortRange, Vec<T>)> = Vec::new();
    for w in bounds.windows(2) {
        let (lo, hi) = (w[0], w[1] - 1);
        let mut tags: Vec<T> = items
            .iter()
            .filter(|(r, _)| u32::from(r.min) <= lo && hi <= u32::from(r.max))
            .map(|(_, t)| t.clone())
            .collect();
        if tags.is_empty() {
            continue;
        }
        tags.sort();
        tags.dedup();
        match out.last_mut() {
            Some((prev, prev_tags)) if u32::from(prev.max) + 1 == lo && *prev_tags == tags => {
                prev.max = hi as u16;
            }
            _ => out.push((
                PortRange {
                    min: lo as u16,
                    max: hi as u16,
                },
                tags,
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PortRange;

    fn r(min: u16, max: u16) -> PortRange {
        PortRange { min, max }
    }

    #[test]
    fn disjoint_split() {
        let out = disjoint_ranges(&[(r(1, 100), 'a'), (r(50, 60), 'b'), (r(101, 200), 'a')]);
        assert_eq!(
            out,
            vec![
                (r(1, 49), vec!['a']),
                (r(50, 60), vec!['a', 'b']),
                (r(61, 200), vec!['a']),
            ]
        );
        assert_eq!(
            disjoint_ranges(&[(r(0, 65535), 1)]),
            vec![(r(0, 65535), vec![1])]
        );
    }
}
