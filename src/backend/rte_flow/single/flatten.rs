//! Flattening a port's groups of the transfer layout into one list per direction: every
//! `jump` replaced by the intersection of the jumping rule with each rule of its target
//! group, each rule keyed by the priorities along its path (which orders them as the NIC
//! would: lexicographically).

use std::collections::BTreeMap;

use super::meet::{meet, Meet};
use super::{Attr, Fate};
use crate::backend::rte_flow::pattern::{MacMatch, Source};
use crate::backend::rte_flow::{Action, Kind, Pattern, RteCompiled, RteRule};
use crate::model::{Port, RuleRef};

/// Jumps followed at most (the layout nests two levels; ntnic chains are not used here).
const MAX_DEPTH: usize = 8;

/// A rule of the flattened list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FlatRule {
    /// The priorities along the path, outermost first.
    pub key: Vec<u32>,
    pub pattern: Pattern,
    pub fate: Fate,
    pub kind: Kind,
    pub rule: Option<RuleRef>,
    pub why: Option<String>,
}

/// One direction's flattened rules, or why it cannot be rendered at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Flat {
    Rules(Vec<FlatRule>),
    /// All of the direction's traffic goes to software.
    AllSoftware(String),
    /// The port is not filtered.
    Unfiltered,
}

/// Both directions of a port, from the VM (`ingress` attribute) first.
pub(super) fn port_rules(compiled: &RteCompiled, port: &Port, rep: u16) -> Vec<(Attr, Flat)> {
    let groups = groups_of(compiled);
    let root = groups.get(&0).cloned().unwrap_or_default();
    let from_vm = root
        .iter()
        .find(|r| r.pattern.source == Some(Source(rep)))
        .copied();
    let to_vm = root
        .iter()
        .find(|r| {
            r.pattern.source == Some(Source(compiled.options.uplink_port))
                && r.pattern.eth_dst == Some(MacMatch::exact(port.mac))
        })
        .copied();
    let walker = Walker {
        groups: &groups,
        uplink: compiled.options.uplink_port,
        rep,
    };
    vec![
        (
            Attr::Ingress,
            walker.direction(port, from_vm, Attr::Ingress),
        ),
        (Attr::Egress, walker.direction(port, to_vm, Attr::Egress)),
    ]
}

fn groups_of(compiled: &RteCompiled) -> BTreeMap<u32, Vec<&RteRule>> {
    let mut groups: BTreeMap<u32, Vec<&RteRule>> = BTreeMap::new();
    for r in &compiled.rules {
        groups.entry(r.group).or_default().push(r);
    }
    for rules in groups.values_mut() {
        rules.sort_by_key(|r| r.priority);
    }
    groups
}

struct Walker<'a> {
    groups: &'a BTreeMap<u32, Vec<&'a RteRule>>,
    uplink: u16,
    rep: u16,
}

impl Walker<'_> {
    /// A direction's rules, starting from its dispatch rule in group 0.
    fn direction(&self, port: &Port, dispatch: Option<&RteRule>, attr: Attr) -> Flat {
        if !port.is_filtered() {
            return Flat::Unfiltered;
        }
        let Some(dispatch) = dispatch else {
            return Flat::AllSoftware(
                "no dispatch rule for the port (a MAC shared with another port)".into(),
            );
        };
        match dispatch.action {
            Action::Jump(group) => {
                let mut out = Vec::new();
                match self.walk(group, &Pattern::any(), &[], attr, 0, &mut out) {
                    Ok(()) => Flat::Rules(out),
                    Err(why) => Flat::AllSoftware(why),
                }
            }
            Action::ToPort(_) => Flat::Unfiltered,
            Action::Drop | Action::ToSoftware(_) => Flat::AllSoftware(
                "the port's rules do not fit the layout's limits (or its MAC is shared)".into(),
            ),
        }
    }

    /// Whether `group` is an accept group (forward=uplink): its miss goes to the uplink.
    fn is_accept_group(&self, group: u32) -> bool {
        self.groups.get(&group).is_some_and(|rules| {
            rules
                .iter()
                .any(|r| r.kind == Kind::CatchAll && r.action == Action::ToPort(self.uplink))
        })
    }

    fn fate(&self, action: Action, attr: Attr) -> Fate {
        match (action, attr) {
            (Action::Drop, _) => Fate::Drop,
            (Action::ToPort(p), Attr::Egress) if p == self.rep => Fate::Accept,
            (Action::Jump(_), _) => Fate::Accept,
            // To software, or anywhere this rendering does not know: the switch decides.
            _ => Fate::Software,
        }
    }

    fn walk(
        &self,
        group: u32,
        context: &Pattern,
        path: &[u32],
        attr: Attr,
        depth: usize,
        out: &mut Vec<FlatRule>,
    ) -> Result<(), String> {
        if depth >= MAX_DEPTH {
            return Err(format!("jumps nested deeper than {MAX_DEPTH}"));
        }
        let Some(rules) = self.groups.get(&group) else {
            return Err(format!("jump to group {group}, which has no rules"));
        };
        for r in rules {
            let pattern = match meet(context, &r.pattern) {
                Meet::Both(p) => p,
                Meet::Disjoint => continue,
                Meet::Unsupported => {
                    return Err(format!("cannot intersect the patterns of group {group}"))
                }
            };
            let mut key = path.to_vec();
            key.push(r.priority);
            match r.action {
                Action::Jump(next) if !self.is_accept_group(next) => {
                    self.walk(next, &pattern, &key, attr, depth + 1, out)?;
                }
                action => {
                    let fate = self.fate(action, attr);
                    out.push(FlatRule {
                        key,
                        pattern,
                        fate,
                        kind: r.kind,
                        rule: r.rule.clone(),
                        why: (fate == Fate::Software).then(|| software_reason(r.kind, attr)),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Why the transfer layout sends a rule's traffic to software.
fn software_reason(kind: Kind, attr: Attr) -> String {
    match (kind, attr) {
        (Kind::IpSource, _) | (Kind::Ip, _) => "stateful port needs conntrack".into(),
        (Kind::Arp, Attr::Ingress) => "ARP sender checks need arp_eth_ipv4".into(),
        (Kind::Nd, Attr::Ingress) => "advertisement target checks need icmp6_nd_na".into(),
        (Kind::RuleFallback, _) => "rule needs an item the driver lacks (sctp)".into(),
        (kind, _) => format!("{} traffic left to software by the layout", kind.as_str()),
    }
}
