//! The intermediate form between the model and the backends: each rule lowered to a list of
//! normalised matches (one remote prefix, one source and one destination port mask each),
//! so that a backend only lays matches out in its own tables.

pub mod portmask;

use ipnet::IpNet;

use crate::model::{Direction, EtherType, Model, Rule, L4};
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

/// How many matches [`lower_rule`] will produce, without producing them (for flow caps).
pub fn lowered_len(model: &Model, rule: &Rule) -> usize {
    let remotes = model.remote_nets(rule).map_or(1, |n| n.len());
    let ports = match rule.l4 {
        L4::Ports { dst, src } => {
            let count =
                |r: crate::model::PortRange| if r.is_any() { 1 } else { port_masks(r).len() };
            count(dst) * count(src)
        }
        _ => 1,
    };
    remotes * ports
}

/// The matches of one rule: the product of its remote prefixes (member addresses of remote
/// groups) and its port masks. A remote group without members gives no match at all.
pub fn lower_rule(model: &Model, rule: &Rule) -> Vec<RuleMatch> {
    let remotes: Vec<Option<IpNet>> = match model.remote_nets(rule) {
        None => vec![None],
        Some(nets) => nets.into_iter().map(Some).collect(),
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
