//! DPDK rte_flow backend: security groups as `transfer` rules on the embedded switch of a
//! SmartNIC, for VMs behind port representors (`docs/rte_flow.md` describes the layout).
//!
//! | group | role |
//! |---|---|
//! | 0 | dispatch by source: from a VM's representor → its egress groups; from the uplink by destination MAC → the VM's ingress groups; the rest → software |
//! | `(rep+1)*256 + n` | the groups of the port with representor `rep`, numbered in this order: egress base (anti-spoofing, implicit allowances), egress rules, accept (forward target `uplink` only), ingress base, ingress rules; a profile with one mask per group splits each into a chain |
//!
//! Priorities are assigned per group from 0 (highest precedence) in tiers, and inside a tier
//! by layers: two rules that can match one packet never share a priority. Every group ends in
//! a catch-all.
//!
//! Stateful ports offload only what needs no connection state (anti-spoofing and the implicit
//! allowances); their IP traffic goes to the software switch, whose OpenFlow pipeline for the
//! same port enforces the rules. The offload report says per port and per rule what went
//! where, and why.

mod budget;
mod json;
mod layout;
pub mod pattern;
pub mod profiles;
mod render;
mod report;
pub mod single;

use std::collections::BTreeMap;

use crate::error::{Error, Issue, Result};
use crate::model::{Model, RuleRef};

pub use pattern::Pattern;
pub use profiles::{PortNaming, Profile, PROFILES};
pub use report::{PortMode, PortReport, Reason, Report, RuleReport, RuleStatus};

/// Where traffic a VM may send goes once its egress groups accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// To the software switch on the VM's representor (`port_representor`): the switch sees
    /// the packet as coming from the VM and forwards it (its OpenFlow pipeline filters again).
    Software,
    /// Straight to the uplink (`represented_port`), except traffic to another local port of
    /// the same network (to its ingress groups) and group-addressed traffic (to software).
    Uplink,
}

impl Forward {
    /// The option's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::Software => "software",
            Forward::Uplink => "uplink",
        }
    }
}

/// Options of the rte_flow backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RteFlowOptions {
    /// The driver profile.
    pub profile: &'static Profile,
    /// The transfer proxy's ethdev port id: every rule is created on it.
    pub proxy_port: u16,
    /// The uplink's ethdev port id (the PF representing the wire).
    pub uplink_port: u16,
    /// Where profiles without `port_representor` (ntnic) send software-bound traffic with
    /// `port_id`; defaults to the proxy port.
    pub software_port: Option<u16>,
    /// Where accepted egress traffic goes.
    pub forward: Forward,
    /// Add `count` to every rule when the profile supports it.
    pub count: bool,
    /// A model needing more rules than this is an error.
    pub max_rules: usize,
}

/// The default rule cap: far beyond any NIC, far below exhausting memory.
pub const DEFAULT_MAX_RULES: usize = 1_000_000;

impl Default for RteFlowOptions {
    fn default() -> Self {
        RteFlowOptions {
            profile: &profiles::GENERIC,
            proxy_port: 0,
            uplink_port: 0,
            software_port: None,
            forward: Forward::Software,
            count: true,
            max_rules: DEFAULT_MAX_RULES,
        }
    }
}

/// Port ids a model may carry for this backend, under a top-level `rte_flow` key:
/// `{"rte_flow": {"proxy_port": 0, "uplink_port": 0, "software_port": 7}}`. Options given
/// explicitly (API keywords, CLI flags) win over these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelPorts {
    /// The transfer proxy's ethdev port id.
    pub proxy_port: Option<u16>,
    /// The uplink's ethdev port id.
    pub uplink_port: Option<u16>,
    /// Where `port_id` profiles send software-bound traffic.
    pub software_port: Option<u16>,
}

impl ModelPorts {
    /// Reads the `rte_flow` key of a decoded model (absent: nothing set).
    pub fn from_value(value: &serde_json::Value) -> Result<ModelPorts> {
        let mut out = ModelPorts::default();
        let Some(section) = value.get("rte_flow") else {
            return Ok(out);
        };
        let Some(map) = section.as_object() else {
            return Err(Error::Invalid(vec![Issue::new(
                "rte_flow",
                "must be a mapping of proxy_port, uplink_port, software_port",
            )]));
        };
        let mut issues = Vec::new();
        for (key, v) in map {
            let slot = match key.as_str() {
                "proxy_port" => &mut out.proxy_port,
                "uplink_port" => &mut out.uplink_port,
                "software_port" => &mut out.software_port,
                // The model reader judges unknown keys (an error or a warning by the input
                // shape and the unknown_keys option; model/keys.rs).
                _ => continue,
            };
            match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(n) => *slot = Some(n),
                None => issues.push(Issue::new(
                    format!("rte_flow.{key}"),
                    "must be an ethdev port id, an integer 0–65535",
                )),
            }
        }
        if issues.is_empty() {
            Ok(out)
        } else {
            Err(Error::Invalid(issues))
        }
    }
}

/// What a rule does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Continue in another group.
    Jump(u32),
    /// Drop.
    Drop,
    /// Out of the switch to an ethdev port's represented entity (a VM, or the wire for the
    /// uplink): `represented_port ethdev_port_id N` (ntnic: `port_id id N`).
    ToPort(u16),
    /// To the application on the representor ethdev N, i.e. the software switch:
    /// `port_representor port_id N` (ntnic: `port_id id <software_port>`).
    ToSoftware(u16),
}

/// Why a rule exists, for the report and the JSON form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Group 0: by source port (and destination MAC).
    Dispatch,
    /// DHCP server replies and router advertisements/redirects from a VM: dropped.
    Forbidden,
    /// ARP with sender checks (egress) or any ARP (ingress).
    Arp,
    /// DHCP/DHCPv6 client requests (egress) and replies (ingress).
    Dhcp,
    /// Neighbour discovery and MLD with source checks (egress) or by type (ingress).
    Nd,
    /// ICMPv6 ND/MLD whose source checks failed: dropped.
    NdSpoofed,
    /// IP from a permitted (MAC, address): on to the rules.
    IpSource,
    /// Ingress IP: on to the rules.
    Ip,
    /// A security-group rule.
    Rule,
    /// A rule the profile cannot express exactly: its traffic goes to software.
    RuleFallback,
    /// Accepted traffic to another local port.
    Local,
    /// Accepted group-addressed traffic: to software, which floods it.
    Multicast,
    /// The last rule of a group.
    CatchAll,
    /// The miss entry of a split group, on to the next group of its chain.
    Chain,
}

impl Kind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dispatch => "dispatch",
            Kind::Forbidden => "forbidden",
            Kind::Arp => "arp",
            Kind::Dhcp => "dhcp",
            Kind::Nd => "nd",
            Kind::NdSpoofed => "nd_spoofed",
            Kind::IpSource => "ip_source",
            Kind::Ip => "ip",
            Kind::Rule => "rule",
            Kind::RuleFallback => "rule_fallback",
            Kind::Local => "local",
            Kind::Multicast => "multicast",
            Kind::CatchAll => "catch_all",
            Kind::Chain => "chain",
        }
    }
}

/// One rte_flow rule, created on the transfer proxy with the `transfer` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RteRule {
    /// Group.
    pub group: u32,
    /// Priority (lower wins).
    pub priority: u32,
    /// What it matches.
    pub pattern: Pattern,
    /// What it does.
    pub action: Action,
    /// Whether `count` precedes the action.
    pub count: bool,
    /// The port whose groups hold it (`None` for group 0's shared rules).
    pub port: Option<String>,
    /// Why it exists.
    pub kind: Kind,
    /// The security-group rule it comes from.
    pub rule: Option<RuleRef>,
}

/// Counts that explain where the rules come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ports in the model.
    pub ports: usize,
    /// Ports with filtering.
    pub filtered_ports: usize,
    /// Rules emitted.
    pub rules: usize,
    /// Groups used.
    pub groups: usize,
    /// Rules per group.
    pub per_group: BTreeMap<u32, usize>,
    /// Rules per port (group 0's rules for a port included).
    pub per_port: BTreeMap<String, usize>,
    /// Rules per security-group rule (`group[index]`), summed over ports.
    pub per_rule: BTreeMap<String, usize>,
    /// Rules per kind.
    pub per_kind: BTreeMap<String, usize>,
    /// Rules left out because an earlier rule of their group already covers them.
    pub redundant: usize,
    /// Highest priority value used in any group.
    pub max_priority: u32,
}

/// The result of a compile to rte_flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RteCompiled {
    /// The rules, sorted by group then priority.
    pub rules: Vec<RteRule>,
    /// Where the rules come from.
    pub stats: Stats,
    /// What was offloaded, per port and per rule.
    pub report: Report,
    /// Remarks from reading the model.
    pub warnings: Vec<Issue>,
    /// The options used.
    pub options: RteFlowOptions,
}

impl RteCompiled {
    /// `flow create …` lines for `dpdk-testpmd`, one per rule.
    pub fn to_testpmd(&self) -> String {
        render::testpmd(&self.rules, &self.options, "create")
    }

    /// The same rules as `flow <command>` (`validate` or `create`).
    pub fn to_testpmd_with(&self, command: &str) -> String {
        render::testpmd(&self.rules, &self.options, command)
    }

    /// The patterns of the rules without port items as plain `ingress` drop rules on `port`
    /// (no group, transfer or count): what a software driver such as `net_tap` can judge.
    pub fn plain_drop_lines(&self, port: u16, command: &str) -> Vec<String> {
        render::plain_drops(&self.rules, &self.options, port, command)
    }

    /// The structured form: attributes, items with spec/mask/last, actions, origins.
    pub fn to_json(&self) -> serde_json::Value {
        json::document(self)
    }

    /// The statistics as JSON (the `stats` member of [`RteCompiled::to_json`]).
    pub fn stats_json(&self) -> serde_json::Value {
        json::stats(&self.stats)
    }

    /// The offload report as readable text.
    pub fn report_text(&self) -> String {
        self.report.to_text(&self.stats, &self.options)
    }
}

/// Compiles a validated model into rte_flow rules.
pub fn compile_rte_flow(model: &Model, options: &RteFlowOptions) -> Result<RteCompiled> {
    check(model, options)?;
    layout::build(model, options)
}

fn check(model: &Model, options: &RteFlowOptions) -> Result<()> {
    if options.max_rules == 0 {
        return Err(Error::Option {
            name: "max_rules",
            message: "must be at least 1".into(),
        });
    }
    // Without `port_representor`, software-bound traffic goes to `port_id SOFTWARE_PORT`: that
    // port must be nobody's destination, or punted traffic would be forwarded unchecked.
    let software_port = options.software_port.unwrap_or(options.proxy_port);
    if options.profile.ports == PortNaming::PortId {
        if options.forward == Forward::Uplink && software_port == options.uplink_port {
            return Err(Error::Option {
                name: "software_port",
                message: format!(
                    "profile {} sends software-bound traffic to port_id {software_port}, which is \
                     also the uplink that forward=uplink sends accepted traffic to; give a \
                     distinct software_port",
                    options.profile.name
                ),
            });
        }
        if let Some(port) = model
            .ports
            .iter()
            .find(|p| p.representor == Some(software_port))
        {
            return Err(Error::Option {
                name: "software_port",
                message: format!(
                    "profile {} sends software-bound traffic to port_id {software_port}, which is \
                     the representor of port {}; give a distinct software_port",
                    options.profile.name, port.id
                ),
            });
        }
    }
    let mut issues = Vec::new();
    let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
    for port in &model.ports {
        let path = format!("ports.{}", port.id);
        let Some(rep) = port.representor else {
            issues.push(Issue::new(
                path,
                "representor is required for the rte_flow target (on the port or in bindings)",
            ));
            continue;
        };
        if rep == options.uplink_port {
            issues.push(Issue::new(
                path.clone(),
                format!("representor {rep} is the uplink port"),
            ));
        }
        if let Some(first) = seen.insert(rep, &port.id) {
            issues.push(Issue::new(
                path,
                format!("representor {rep} is also the representor of port {first}"),
            ));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(issues))
    }
}

#[cfg(test)]
mod tests;
