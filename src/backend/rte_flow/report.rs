//! The offload report: per port and per security-group rule, what the NIC does and what is
//! left to the software switch, with the reason.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{RteFlowOptions, Stats};
use crate::model::{Direction, RuleRef};

/// How much of a port's policy the NIC enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMode {
    /// Everything: anti-spoofing, implicit allowances and every rule.
    Offloaded,
    /// Some traffic goes to software (stateful port, or rules the profile cannot express).
    Partial,
    /// Nothing: all of the port's traffic goes to software.
    Software,
    /// No filtering (port security off, or a trusted `network:*` port): forwarded in hardware.
    Unfiltered,
}

impl PortMode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PortMode::Offloaded => "offloaded",
            PortMode::Partial => "partial",
            PortMode::Software => "software",
            PortMode::Unfiltered => "unfiltered",
        }
    }
}

/// Why traffic is left to software.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The port's groups are stateful: rte_flow has no portable connection tracking.
    StatefulConntrack,
    /// ICMP errors related to a connection are only known to conntrack.
    IcmpRelated,
    /// Fragments need reassembly before conntrack can place them.
    Fragments,
    /// The profile lacks an item needed to check this traffic exactly.
    ItemUnsupported(&'static str),
    /// The port's rules do not fit the profile's limits.
    ProfileLimit(String),
    /// Another port uses the same MAC: delivery needs the software switch.
    SharedMac(String),
}

impl Reason {
    /// A short code for programs.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::StatefulConntrack => "stateful",
            Reason::IcmpRelated => "icmp_related",
            Reason::Fragments => "fragments",
            Reason::ItemUnsupported(_) => "item_unsupported",
            Reason::ProfileLimit(_) => "profile_limit",
            Reason::SharedMac(_) => "shared_mac",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::StatefulConntrack => f.write_str("stateful port needs conntrack"),
            Reason::IcmpRelated => {
                f.write_str("ICMP errors related to a connection need conntrack")
            }
            Reason::Fragments => f.write_str("fragments need reassembly for conntrack"),
            Reason::ItemUnsupported(item) => write!(f, "item {item} unsupported by the profile"),
            Reason::ProfileLimit(what) => write!(f, "profile limit exceeded: {what}"),
            Reason::SharedMac(other) => write!(f, "MAC shared with port {other}"),
        }
    }
}

/// What happens to one security-group rule on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleStatus {
    /// Enforced by the NIC.
    Offloaded,
    /// Left to software.
    Software(Reason),
}

/// One rule on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleReport {
    /// The rule.
    pub rule: RuleRef,
    /// Its direction.
    pub direction: Direction,
    /// Offloaded or not.
    pub status: RuleStatus,
    /// rte_flow rules it produced on this port (remote groups expand to their members).
    pub rte_rules: usize,
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortReport {
    /// Port id.
    pub port: String,
    /// Its representor.
    pub representor: u16,
    /// How much is offloaded.
    pub mode: PortMode,
    /// Whether its groups are stateful.
    pub stateful: bool,
    /// Its groups (besides group 0).
    pub groups: Vec<u32>,
    /// rte_flow rules for it, group 0's included.
    pub rte_rules: usize,
    /// Traffic the NIC decides, by kind.
    pub offloaded: Vec<String>,
    /// Traffic left to software, with the reason.
    pub software: Vec<(String, Reason)>,
    /// Per security-group rule.
    pub rules: Vec<RuleReport>,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Per port, sorted by port id.
    pub ports: Vec<PortReport>,
}

impl Report {
    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.ports
                .iter()
                .map(|p| {
                    json!({
                        "port": p.port,
                        "representor": p.representor,
                        "mode": p.mode.as_str(),
                        "stateful": p.stateful,
                        "groups": p.groups,
                        "rte_rules": p.rte_rules,
                        "offloaded": p.offloaded,
                        "software": p.software.iter().map(|(what, why)| json!({
                            "traffic": what, "reason": why.code(), "detail": why.to_string(),
                        })).collect::<Vec<_>>(),
                        "rules": p.rules.iter().map(|r| {
                            let (status, reason, detail) = match &r.status {
                                RuleStatus::Offloaded => ("offloaded", Value::Null, Value::Null),
                                RuleStatus::Software(why) => (
                                    "software",
                                    Value::from(why.code()),
                                    Value::from(why.to_string()),
                                ),
                            };
                            json!({
                                "rule": r.rule.to_string(),
                                "direction": r.direction.as_str(),
                                "status": status,
                                "reason": reason,
                                "detail": detail,
                                "rte_rules": r.rte_rules,
                            })
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }

    /// A readable summary for `sgflows compile --report`.
    pub fn to_text(&self, stats: &Stats, options: &RteFlowOptions) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "profile {} ({}); proxy port {}, uplink port {}, forward to {}",
            options.profile.name,
            options.profile.summary,
            options.proxy_port,
            options.uplink_port,
            options.forward.as_str()
        );
        let _ = writeln!(
            out,
            "rte_flow rules: {} in {} groups (highest priority value {}); {} redundant rules left out",
            stats.rules, stats.groups, stats.max_priority, stats.redundant
        );
        for p in &self.ports {
            let _ = writeln!(
                out,
                "port {} (representor {}): {}{}, {} rules in groups {}",
                p.port,
                p.representor,
                p.mode.as_str(),
                if p.stateful { ", stateful" } else { "" },
                p.rte_rules,
                compact_groups(&p.groups)
            );
            if !p.offloaded.is_empty() {
                let _ = writeln!(out, "  offloaded: {}", p.offloaded.join(", "));
            }
            for (what, why) in &p.software {
                let _ = writeln!(out, "  software: {what}: {why}");
            }
            for r in &p.rules {
                match &r.status {
                    RuleStatus::Offloaded => {
                        let _ = writeln!(
                            out,
                            "  rule {} ({}): offloaded, {} rte_flow rules",
                            r.rule,
                            r.direction.as_str(),
                            r.rte_rules
                        );
                    }
                    RuleStatus::Software(why) => {
                        let _ = writeln!(
                            out,
                            "  rule {} ({}): software: {why}",
                            r.rule,
                            r.direction.as_str()
                        );
                    }
                }
            }
        }
        out
    }
}

fn compact_groups(groups: &[u32]) -> String {
    match (groups.first(), groups.last()) {
        (None, _) | (_, None) => "-".into(),
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) if (b - a) as usize + 1 == groups.len() => format!("{a}-{b}"),
        _ => groups
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    }
}
