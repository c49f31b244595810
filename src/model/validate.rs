//! Checks that span several objects: group references, statefulness of a port's groups,
//! OpenFlow port numbers and network tags.

use std::collections::BTreeMap;

use super::{Model, Remote};
use crate::error::Issue;

/// Every cross-object problem of a parsed model. `lenient_remotes` accepts remote groups
/// without members (Neutron's RPC payload leaves out groups with no member on the network).
pub(super) fn check(model: &Model, lenient_remotes: bool) -> Vec<Issue> {
    let mut issues = Vec::new();
    check_group_references(model, &mut issues);
    check_remotes(model, lenient_remotes, &mut issues);
    check_ofports(model, &mut issues);
    check_network_tags(model, &mut issues);
    issues
}

fn port_path(id: &str) -> String {
    format!("ports.{id}")
}

fn check_group_references(model: &Model, issues: &mut Vec<Issue>) {
    for port in &model.ports {
        let mut stateful = Vec::new();
        let mut stateless = Vec::new();
        for g in &port.security_groups {
            match model.groups.get(g) {
                None => issues.push(Issue::new(
                    format!("{}.security_groups", port_path(&port.id)),
                    format!("unknown security group {g:?}"),
                )),
                Some(group) if group.stateful => stateful.push(g.as_str()),
                Some(_) => stateless.push(g.as_str()),
            }
        }
        if !stateful.is_empty() && !stateless.is_empty() {
            issues.push(Issue::new(
                format!("{}.security_groups", port_path(&port.id)),
                format!(
                    "mixes stateful groups ({}) with stateless groups ({}); Neutron refuses this too (SecurityGroupConflict)",
                    stateful.join(", "),
                    stateless.join(", ")
                ),
            ));
        }
    }
}

fn check_remotes(model: &Model, lenient: bool, issues: &mut Vec<Issue>) {
    if lenient {
        return;
    }
    for group in model.groups.values() {
        for rule in &group.rules {
            let path = format!("security_groups.{}.rules[{}]", group.id, rule.index);
            match &rule.remote {
                Remote::Group(id) if !model.members.contains_key(id) => issues.push(Issue::new(
                    path,
                    format!("remote_group_id {id:?} names no security group and has no members"),
                )),
                Remote::AddressGroup(id) if !model.address_groups.contains_key(id) => {
                    issues.push(Issue::new(
                        path,
                        format!("remote_address_group_id {id:?} names no address group"),
                    ))
                }
                _ => {}
            }
        }
    }
}

fn check_ofports(model: &Model, issues: &mut Vec<Issue>) {
    let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
    for port in &model.ports {
        if let Some(ofport) = port.ofport {
            if let Some(first) = seen.insert(ofport, &port.id) {
                issues.push(Issue::new(
                    format!("{}.ofport", port_path(&port.id)),
                    format!("OpenFlow port {ofport} is also used by port {first:?}"),
                ));
            }
        }
    }
}

/// The local VLAN tag identifies the network on this host (and is its conntrack zone): ports
/// of one network share it, ports of two networks never do.
fn check_network_tags(model: &Model, issues: &mut Vec<Issue>) {
    let mut by_network: BTreeMap<&str, (u16, &str)> = BTreeMap::new();
    let mut by_tag: BTreeMap<u16, (&str, &str)> = BTreeMap::new();
    for port in &model.ports {
        let (Some(net), Some(tag)) = (port.network_id.as_deref(), port.local_vlan) else {
            continue;
        };
        if let Some((other_tag, other_port)) = by_network.insert(net, (tag, &port.id)) {
            if other_tag != tag {
                issues.push(Issue::new(
                    format!("{}.local_vlan", port_path(&port.id)),
                    format!(
                        "local_vlan {tag} differs from {other_tag} of port {other_port:?} on the same network {net:?}"
                    ),
                ));
            }
        }
        if let Some((other_net, other_port)) = by_tag.insert(tag, (net, &port.id)) {
            if other_net != net {
                issues.push(Issue::new(
                    format!("{}.local_vlan", port_path(&port.id)),
                    format!(
                        "local_vlan {tag} is also the tag of network {other_net:?} (port {other_port:?})"
                    ),
                ));
            }
        }
    }
}
