//! Fitting flattened rules to a driver: items it lacks and port matches it cannot take become
//! coarser rules to software (placed just before the rule they replace, so that everything
//! they catch beyond it is decided by software, never by a later rule); port blocks become
//! exact ports up to a bound; priorities are ranked into the driver's range; a direction that
//! needs software it cannot reach is left to the switch, or makes the port not offloadable.

use std::collections::{BTreeMap, BTreeSet};

use super::flatten::{Flat, FlatRule};
use super::{
    Attr, DirMode, DirectionReport, Fate, PortDriver, PortOptions, PortRendering, PortRule,
    RuleWhere,
};
use crate::backend::rte_flow::pattern::{ethertype, PortMatch, PortProto, Upper};
use crate::backend::rte_flow::{Kind, Pattern, RteCompiled, RuleStatus};
use crate::ir::PortMask;
use crate::model::{protocol, EtherType, Port};

/// Key suffixes: a coarsened rule goes just before the rule it replaces.
const BEFORE: u32 = 0;
const AT: u32 = 1;

/// Fits both directions and builds the report.
pub(super) fn fit(
    port: &Port,
    compiled: &RteCompiled,
    flat: Vec<(Attr, Flat)>,
    options: &PortOptions,
) -> PortRendering {
    let mut rules = Vec::new();
    let mut directions = Vec::new();
    for (attr, f) in flat {
        let (dir_rules, report) = fit_direction(attr, f, options);
        rules.extend(dir_rules);
        directions.push(report);
    }
    let rule_report = rule_report(port, compiled, &rules, &directions);
    PortRendering {
        port: port.id.clone(),
        options: options.clone(),
        rules,
        directions,
        rule_report,
    }
}

fn report(
    attr: Attr,
    mode: DirMode,
    rules: usize,
    software: Vec<(String, String)>,
) -> DirectionReport {
    DirectionReport {
        attr,
        mode,
        rules,
        software,
    }
}

/// What a direction that goes to software entirely installs: from the VM one rule to the
/// software queue; to the VM nothing (the switch filters before it transmits).
fn all_to_software(
    attr: Attr,
    why: String,
    options: &PortOptions,
) -> (Vec<PortRule>, DirectionReport) {
    let what = match attr {
        Attr::Ingress => "all traffic from the VM",
        Attr::Egress => "all traffic to the VM",
    };
    let software = vec![(what.to_string(), why.clone())];
    match (attr, options.software_queue) {
        (Attr::Egress, _) => (Vec::new(), report(attr, DirMode::Software, 0, software)),
        (Attr::Ingress, Some(_)) => {
            let rule = PortRule {
                attr,
                priority: 0,
                pattern: Pattern::any(),
                fate: Fate::Software,
                kind: Kind::CatchAll,
                rule: None,
                why: Some(why),
            };
            (vec![rule], report(attr, DirMode::Software, 1, software))
        }
        (Attr::Ingress, None) => (
            Vec::new(),
            report(attr, DirMode::NotOffloadable, 0, software),
        ),
    }
}

fn fit_direction(
    attr: Attr,
    flat: Flat,
    options: &PortOptions,
) -> (Vec<PortRule>, DirectionReport) {
    let driver = &options.driver;
    let rules = match flat {
        Flat::Unfiltered => return (Vec::new(), report(attr, DirMode::Unfiltered, 0, Vec::new())),
        Flat::AllSoftware(why) => return all_to_software(attr, why, options),
        Flat::Rules(rules) => rules,
    };
    if attr == Attr::Egress && !(driver.egress && driver.passthru) {
        let why = format!("{} takes no egress rules with passthru", driver.name);
        return all_to_software(attr, why, options);
    }
    if attr == Attr::Ingress && !driver.queue {
        // Neither accepted traffic nor software's can leave the port's rules: fail closed.
        let why = format!("{} refuses the queue action", driver.name);
        let software = vec![("all traffic from the VM".to_string(), why)];
        return (
            Vec::new(),
            report(attr, DirMode::NotOffloadable, 0, software),
        );
    }
    let fitted: Vec<FlatRule> = rules
        .into_iter()
        .flat_map(|r| fit_rule(r, driver, options.max_exact_ports))
        .map(|r| fit_fields(r, driver))
        .collect();
    let software = software_list(&fitted);
    if !software.is_empty() {
        match (attr, options.software_queue) {
            (Attr::Egress, _) => {
                let why: Vec<String> = software.iter().map(|(w, y)| format!("{w}: {y}")).collect();
                let why = format!(
                    "a transmitted packet cannot be sent to software, and some of it needs software ({})",
                    why.join("; ")
                );
                return all_to_software(attr, why, options);
            }
            (Attr::Ingress, None) => {
                return (
                    Vec::new(),
                    report(attr, DirMode::NotOffloadable, 0, software),
                )
            }
            (Attr::Ingress, Some(_)) => {}
        }
    }
    let Some(ranked) = rank(attr, fitted, driver.max_priority) else {
        let why = format!(
            "needs more priority levels than {} has (0..{})",
            driver.name, driver.max_priority
        );
        return all_to_software(attr, why, options);
    };
    let mode = if software.is_empty() {
        DirMode::Offloaded
    } else {
        DirMode::Partial
    };
    let n = ranked.len();
    (ranked, report(attr, mode, n, software))
}

/// What goes to software, each (traffic, reason) once, in rule order.
fn software_list(rules: &[FlatRule]) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| r.fate == Fate::Software) {
        let what = match &r.rule {
            Some(rule) => format!("rule {}[{}]", rule.group, rule.index),
            None => format!("{} traffic", r.kind.as_str()),
        };
        // One entry per rule or kind: its first reason (a rule split into port blocks
        // would repeat itself once per block).
        if seen.insert(what.clone()) {
            out.push((what, r.why.clone().unwrap_or_default()));
        }
    }
    out
}

/// Priorities from the keys: distinct keys get distinct, increasing priorities; `None` when
/// they do not fit `0..=max_priority`.
fn rank(attr: Attr, rules: Vec<FlatRule>, max_priority: u32) -> Option<Vec<PortRule>> {
    let keys: BTreeSet<&Vec<u32>> = rules.iter().map(|r| &r.key).collect();
    if keys.len() > max_priority as usize + 1 {
        return None;
    }
    let index: BTreeMap<Vec<u32>, u32> = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i as u32))
        .collect();
    let mut out: Vec<PortRule> = rules
        .into_iter()
        .map(|r| PortRule {
            attr,
            priority: index[&r.key],
            pattern: r.pattern,
            fate: r.fate,
            kind: r.kind,
            rule: r.rule,
            why: r.why,
        })
        .collect();
    out.sort_by_key(|r| r.priority);
    // Coarsening can make rules equal (ND checks from several sources become one ICMPv6
    // rule): create each once.
    let mut seen = std::collections::HashSet::new();
    out.retain(|r| seen.insert((r.priority, r.pattern, r.fate)));
    Some(out)
}

/// One flattened rule as the driver can take it: itself, exact-port copies, or a coarser
/// rule to software.
fn fit_rule(mut r: FlatRule, driver: &PortDriver, max_exact: usize) -> Vec<FlatRule> {
    let family = r.pattern.ip.map(|ip| ip.family);
    match r.pattern.upper {
        Some(Upper::Arp { .. }) if !(driver.transfer.arp_item && driver.arp) => {
            coarsen(r, format!("{} lacks the arp_eth_ipv4 item", driver.name))
        }
        Some(Upper::NdNa { .. }) if !(driver.transfer.nd_items && driver.nd) => {
            coarsen(r, format!("{} lacks the icmp6_nd_na item", driver.name))
        }
        Some(Upper::Icmp { .. }) if family == Some(EtherType::V4) && !driver.icmp => {
            coarsen(r, format!("{} lacks the icmp item", driver.name))
        }
        Some(Upper::Icmp { .. }) if family == Some(EtherType::V6) && !driver.icmp6 => {
            coarsen(r, format!("{} lacks the icmp6 item", driver.name))
        }
        Some(Upper::Ports {
            proto: PortProto::Sctp,
            ..
        }) if !driver.sctp => coarsen(r, format!("{} lacks the sctp item", driver.name)),
        Some(Upper::Ports { .. }) if !driver.l4_ports => {
            coarsen(r, format!("{} matches no TCP/UDP ports", driver.name))
        }
        Some(Upper::Ports { proto, src, dst }) => {
            let takes = |m: &Option<PortMatch>| port_taken(m, driver);
            if takes(&src) && takes(&dst) {
                r.key.push(AT);
                return vec![r];
            }
            let srcs = exact_ports(src);
            let dsts = exact_ports(dst);
            let total = srcs.len().saturating_mul(dsts.len());
            if total > max_exact {
                return coarsen(
                    r,
                    format!(
                        "port block of {total} ports beyond the exact-port bound {max_exact} \
                         ({} takes exact L4 ports only)",
                        driver.name
                    ),
                );
            }
            r.key.push(AT);
            let mut out = Vec::with_capacity(total);
            for s in &srcs {
                for d in &dsts {
                    let mut copy = r.clone();
                    copy.pattern.upper = Some(Upper::Ports {
                        proto,
                        src: *s,
                        dst: *d,
                    });
                    out.push(copy);
                }
            }
            out
        }
        _ => {
            r.key.push(AT);
            vec![r]
        }
    }
}

/// The rule without the header fields the driver cannot match (a probe narrowed the
/// profile), then to software: a coarser match, so what it catches beyond the rule is
/// decided by software, never left open.
fn fit_fields(mut r: FlatRule, driver: &PortDriver) -> FlatRule {
    let p = &mut r.pattern;
    let mut lacks = Vec::new();
    if p.eth_src.is_some() && !driver.eth_src {
        p.eth_src = None;
        lacks.push("Ethernet sources");
    }
    if p.eth_dst.is_some_and(|m| !m.is_exact()) && !driver.eth_dst_mask {
        p.eth_dst = None;
        lacks.push("masked Ethernet destinations");
    }
    if p.ether_type.is_some() && !driver.ether_type {
        p.ether_type = None;
        lacks.push("Ethernet types");
    }
    if let Some(ip) =
        p.ip.as_mut()
            .filter(|ip| ip.src.is_some() || ip.dst.is_some())
    {
        if !driver.ip_addresses {
            ip.src = None;
            ip.dst = None;
            lacks.push("IP addresses");
        }
    }
    if lacks.is_empty() {
        return r;
    }
    if r.fate != Fate::Software {
        r.fate = Fate::Software;
        r.why = Some(format!("{} matches no {}", driver.name, lacks.join(", ")));
    }
    // The rules sharing its key were disjoint from it, not from the coarser match: it goes
    // just before them, like every coarsened rule.
    if let Some(last) = r.key.last_mut() {
        *last = BEFORE;
    }
    r
}

/// Whether the driver takes this port match as it is.
fn port_taken(m: &Option<PortMatch>, driver: &PortDriver) -> bool {
    match m {
        None => true,
        Some(PortMatch::Mask(pm)) => pm.mask == 0xffff || driver.masked_ports,
        Some(PortMatch::Range(r)) => r.min == r.max || driver.last,
    }
}

/// The exact ports a match covers (`[None]` for no match), up to 65536.
fn exact_ports(m: Option<PortMatch>) -> Vec<Option<PortMatch>> {
    let Some(m) = m else {
        return vec![None];
    };
    let (lo, hi) = m.bounds();
    (lo..=hi)
        .map(|p| {
            Some(PortMatch::Mask(PortMask {
                value: p,
                mask: 0xffff,
            }))
        })
        .collect()
}

/// The rule with its upper layer replaced by the protocol it implies, to software, placed just
/// before the rule it replaces.
fn coarsen(mut r: FlatRule, why: String) -> Vec<FlatRule> {
    let upper = r.pattern.upper.take();
    match (upper, r.pattern.ip.as_mut()) {
        (Some(Upper::Arp { .. }), _) => r.pattern.ether_type = Some(ethertype::ARP),
        (Some(u), Some(ip)) => {
            ip.proto = Some(match u {
                Upper::Ports { proto, .. } => proto.number(),
                Upper::Icmp { .. } if ip.family == EtherType::V4 => protocol::ICMP,
                _ => protocol::ICMPV6,
            });
        }
        _ => {}
    }
    r.fate = Fate::Software;
    r.why = Some(why);
    r.key.push(BEFORE);
    vec![r]
}

/// Where each of the port's security-group rules is enforced.
fn rule_report(
    port: &Port,
    compiled: &RteCompiled,
    rules: &[PortRule],
    directions: &[DirectionReport],
) -> Vec<RuleWhere> {
    let Some(transfer) = compiled.report.ports.iter().find(|p| p.port == port.id) else {
        return Vec::new();
    };
    transfer
        .rules
        .iter()
        .map(|r| {
            let mine: Vec<&PortRule> = rules
                .iter()
                .filter(|p| p.rule.as_ref() == Some(&r.rule))
                .collect();
            let dir = directions
                .iter()
                .find(|d| d.attr.direction() == r.direction);
            let why = if let Some(d) =
                dir.filter(|d| d.mode == DirMode::Software || d.mode == DirMode::NotOffloadable)
            {
                d.software.first().map(|(_, why)| why.clone())
            } else if let Some(sw) = mine.iter().find(|p| p.fate == Fate::Software) {
                sw.why.clone()
            } else if let RuleStatus::Software(reason) = &r.status {
                Some(reason.to_string())
            } else {
                None
            };
            RuleWhere {
                rule: r.rule.clone(),
                direction: r.direction,
                status: if why.is_some() {
                    "software"
                } else {
                    "offloaded"
                },
                why,
                port_rules: mine.len(),
            }
        })
        .collect()
}
