//! Policies: the rule set a port gets from its groups. Ports with the same groups (and so the
//! same statefulness) share one policy, and the backends emit its rules once for all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;

use super::ids::{assign_ids_by, id_of};
use crate::model::{Direction, EtherType, Model, Port, Remote, RuleRef, L4};

/// The far end of a policy rule, resolved to addresses.
#[derive(Debug, Clone, Eq, PartialOrd, Ord)]
pub enum RemoteSet {
    /// Any address.
    Any,
    /// Explicit prefixes (a remote prefix, or merged prefixes), aggregated.
    Nets(Vec<IpNet>),
    /// The members of a remote group or address group (`id` names it for conjunctions).
    Members {
        /// `group:<id>` or `address_group:<id>`.
        id: String,
        /// Member prefixes of the rule's family, sorted. Shared: every rule naming the remote
        /// holds one list, and a compiler session keeps it across changes, so that copying
        /// and comparing rules does not copy or compare thousands of addresses.
        nets: Arc<[IpNet]>,
    },
}

/// Equal content, as derived, but one shared member list is compared by its pointer:
/// `Arc`'s own comparison looks through the pointer only for sized contents, and comparing
/// a policy's rules with their previous version compared thousands of addresses per rule.
impl PartialEq for RemoteSet {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RemoteSet::Any, RemoteSet::Any) => true,
            (RemoteSet::Nets(a), RemoteSet::Nets(b)) => a == b,
            (RemoteSet::Members { id: a, nets: x }, RemoteSet::Members { id: b, nets: y }) => {
                a == b && (Arc::ptr_eq(x, y) || x == y)
            }
            _ => false,
        }
    }
}

/// The content, as the comparison sees it.
impl std::hash::Hash for RemoteSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            RemoteSet::Any => {}
            RemoteSet::Nets(nets) => nets.hash(state),
            RemoteSet::Members { id, nets } => {
                id.hash(state);
                nets.hash(state);
            }
        }
    }
}

impl RemoteSet {
    /// The addresses; `None` for any.
    pub fn nets(&self) -> Option<&[IpNet]> {
        match self {
            RemoteSet::Any => None,
            RemoteSet::Nets(n) => Some(n),
            RemoteSet::Members { nets, .. } => Some(nets),
        }
    }
}

/// A rule of a policy: a model rule with its remote resolved, possibly merged with others.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyRule {
    /// The rule it comes from (the first, for merged rules).
    pub origin: RuleRef,
    /// Direction.
    pub direction: Direction,
    /// Family.
    pub ethertype: EtherType,
    /// Protocol; `None` for any.
    pub protocol: Option<u8>,
    /// Ports or ICMP type/code.
    pub l4: L4,
    /// Remote addresses.
    pub remote: RemoteSet,
}

/// The rules shared by every port with one set of groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Deterministic id (a register value in OpenFlow).
    pub id: u32,
    /// The sorted group ids.
    pub groups: Vec<String>,
    /// Whether the groups are stateful.
    pub stateful: bool,
    /// Ports using it, sorted.
    pub ports: Vec<String>,
    /// The rules of the union of the groups, in group then rule order.
    pub rules: Vec<PolicyRule>,
}

/// What ports share a policy by: their sorted group ids (and, without sharing, the port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    /// The sorted group ids.
    pub groups: Vec<String>,
    /// The port, when every port gets a policy of its own.
    pub port: Option<String>,
}

impl PolicyKey {
    /// The text the id is hashed from (unchanged since ids were first assigned, so that
    /// flows stay the same); two keys with one text are told apart by the id probing.
    fn hash_text(&self) -> String {
        let mut text = self.groups.join("\u{1f}");
        if let Some(port) = &self.port {
            text.push('\u{1e}');
            text.push_str(port);
        }
        text
    }
}

/// The policy key of a filtered port.
pub fn policy_key(port: &Port, per_port: bool) -> PolicyKey {
    PolicyKey {
        groups: port.security_groups.clone(),
        port: per_port.then(|| port.id.clone()),
    }
}

/// The policy id of every key: a function of the set of keys only.
pub fn policy_ids(keys: &BTreeSet<PolicyKey>) -> BTreeMap<PolicyKey, u32> {
    assign_ids_by(keys, |k| id_of(&k.hash_text()))
}

/// A policy of `model` for the ports `ports` (sorted, non-empty, all with the key's groups).
pub fn policy_of(model: &Model, id: u32, ports: &[&Port]) -> Policy {
    let first = ports[0];
    Policy {
        id,
        groups: first.security_groups.clone(),
        stateful: model.port_is_stateful(first),
        ports: ports.iter().map(|p| p.id.clone()).collect(),
        rules: resolve_rules(model, first),
    }
}

/// The policies of the model's filtered ports, and the policy id of each such port. With
/// `per_port`, every port gets a policy of its own (no sharing: for comparisons).
pub fn policies(model: &Model, per_port: bool) -> (Vec<Policy>, BTreeMap<String, u32>) {
    let mut by_key: BTreeMap<PolicyKey, Vec<&Port>> = BTreeMap::new();
    for port in model.ports.iter().filter(|p| p.is_filtered()) {
        by_key
            .entry(policy_key(port, per_port))
            .or_default()
            .push(port);
    }
    let keys: BTreeSet<PolicyKey> = by_key.keys().cloned().collect();
    let ids = policy_ids(&keys);
    let mut out = Vec::with_capacity(by_key.len());
    let mut port_policy = BTreeMap::new();
    for (key, ports) in by_key {
        let id = ids[&key];
        for p in &ports {
            port_policy.insert(p.id.clone(), id);
        }
        out.push(policy_of(model, id, &ports));
    }
    out.sort_by_key(|p| p.id);
    (out, port_policy)
}

/// A port's rules (the union of its groups'), with remote groups and address groups resolved
/// to their member prefixes: what the rule algebra ([`super::optimise`]) takes.
pub fn resolve_rules(model: &Model, port: &Port) -> Vec<PolicyRule> {
    // One remote's members of one family, filtered once per port, not once per rule naming
    // it (a policy's rules name few remotes, each of up to thousands of members).
    let mut members: Vec<(String, EtherType, Arc<[IpNet]>)> = Vec::new();
    resolve_rules_with(model, port, |id, rule| {
        let found = members
            .iter()
            .find(|(remote, family, _)| remote == id && *family == rule.ethertype);
        if let Some((_, _, nets)) = found {
            return Arc::clone(nets);
        }
        let nets = member_nets(model, rule);
        members.push((id.to_string(), rule.ethertype, Arc::clone(&nets)));
        nets
    })
}

/// The member prefixes of a rule's remote group or address group, of the rule's family.
pub fn member_nets(model: &Model, rule: &crate::model::Rule) -> Arc<[IpNet]> {
    model
        .remote_members(&rule.remote)
        .map(|m| m.of(rule.ethertype).copied().collect())
        .unwrap_or_else(|| Arc::from(Vec::new()))
}

/// [`resolve_rules`] with the member lists from `nets_of(remote id, rule)` (`group:<id>` /
/// `address_group:<id>`): a compiler session passes lists it keeps between changes.
pub fn resolve_rules_with(
    model: &Model,
    port: &Port,
    mut nets_of: impl FnMut(&str, &crate::model::Rule) -> Arc<[IpNet]>,
) -> Vec<PolicyRule> {
    model
        .port_rules(port)
        .map(|(group, rule)| {
            let remote = match &rule.remote {
                Remote::Any => RemoteSet::Any,
                Remote::Prefix(net) => RemoteSet::Nets(vec![*net]),
                Remote::Group(id) | Remote::AddressGroup(id) => {
                    let kind = if matches!(rule.remote, Remote::Group(_)) {
                        "group"
                    } else {
                        "address_group"
                    };
                    let id = format!("{kind}:{id}");
                    let nets = nets_of(&id, rule);
                    RemoteSet::Members { id, nets }
                }
            };
            PolicyRule {
                origin: RuleRef {
                    group: group.id.clone(),
                    index: rule.index,
                },
                direction: rule.direction,
                ethertype: rule.ethertype,
                protocol: rule.protocol,
                l4: rule.l4,
                remote,
            }
        })
        .collect()
}
