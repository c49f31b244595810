//! Open vSwitch backend: a conntrack-aware pipeline in `ovs-ofctl add-flows` syntax.
//!
//! The table layout follows Neutron's native OVS firewall driver so that operators can read
//! the flows with what they already know (`docs/pipeline.md` describes every table):
//!
//! | table | role |
//! |---|---|
//! | 0  | entry: hands every packet to the classifier (optional) |
//! | 60 | classify: VM port → egress (reg5 = ofport, reg6 = local VLAN / zone); VLAN + MAC → ingress |
//! | 71 | egress base: the port's bindings (MAC, source address; ARP sender; `nd_target`) |
//! | 72 | egress rules |
//! | 73 | accept or ingress: to a local port's ingress pipeline, else normal forwarding |
//! | 74 / 75 | shared egress protocol stage (stateful / stateless): DHCP client, ND, drops, then conntrack or the rules |
//! | 76 | shared stage for a port's MAC without an address: DHCP from 0.0.0.0, RS/NS/MLDv2 from `::`, RARP |
//! | 81 | ingress base: the port → its kind's shared ingress stage |
//! | 82 | ingress rules |
//! | 83 / 84 | shared ingress protocol stage (stateful / stateless): ARP, ND, DHCP replies, then conntrack or the rules |
//! | 91 / 92 | commit a new connection (egress / ingress) |
//! | 94 | normal forwarding |

mod conflict;
mod diff;
mod numbers;
mod pipeline;
mod render;
mod session;
mod units;

pub use diff::{diff, FlowDiff};
pub use session::{Change, MemberSet, Session};

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Issue, Result};
use crate::model::{Model, RuleRef};

/// Table numbers of the pipeline (defaults are Neutron's, `ovs_constants.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// Where packets enter the bridge (only used when the entry flow is emitted).
    pub entry: u8,
    /// Classifies traffic by port (Neutron's TRANSIENT_TABLE).
    pub classify: u8,
    /// Egress anti-spoofing and implicit allowances.
    pub egress_base: u8,
    /// Egress rules.
    pub egress_rules: u8,
    /// Accepted egress: to a local destination's ingress pipeline, or out.
    pub accept_or_ingress: u8,
    /// Ingress implicit allowances.
    pub ingress_base: u8,
    /// Shared egress protocol stage for stateful ports (with `shared_stage`).
    pub egress_protocol: u8,
    /// Shared egress protocol stage for stateless ports (with `shared_stage`).
    pub egress_protocol_stateless: u8,
    /// Shared egress stage for traffic from a port's MAC without a verified address.
    pub egress_unaddressed: u8,
    /// Shared ingress protocol stage for stateful ports (with `shared_stage`).
    pub ingress_protocol: u8,
    /// Shared ingress protocol stage for stateless ports (with `shared_stage`).
    pub ingress_protocol_stateless: u8,
    /// Ingress rules.
    pub ingress_rules: u8,
    /// New egress connections are committed here.
    pub accepted_egress: u8,
    /// New ingress connections are committed here.
    pub accepted_ingress: u8,
    /// Normal forwarding.
    pub normal: u8,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            entry: 0,
            classify: 60,
            egress_base: 71,
            egress_rules: 72,
            accept_or_ingress: 73,
            ingress_base: 81,
            ingress_rules: 82,
            // Free on Neutron's br-int (neutron-lib ovs_constants.py): flows here are ours to
            // clean up, the agent's stale-flow cleanup does not cover them.
            egress_protocol: 74,
            egress_protocol_stateless: 75,
            egress_unaddressed: 76,
            ingress_protocol: 83,
            ingress_protocol_stateless: 84,
            accepted_egress: 91,
            accepted_ingress: 92,
            normal: 94,
        }
    }
}

impl Tables {
    /// The roles of the shared protocol stage's tables.
    const SHARED_STAGE: [&'static str; 5] = [
        "egress_protocol",
        "egress_protocol_stateless",
        "egress_unaddressed",
        "ingress_protocol",
        "ingress_protocol_stateless",
    ];

    fn all(&self) -> [(&'static str, u8); 15] {
        [
            ("entry", self.entry),
            ("classify", self.classify),
            ("egress_base", self.egress_base),
            ("egress_rules", self.egress_rules),
            ("accept_or_ingress", self.accept_or_ingress),
            ("ingress_base", self.ingress_base),
            ("ingress_rules", self.ingress_rules),
            ("egress_protocol", self.egress_protocol),
            ("egress_protocol_stateless", self.egress_protocol_stateless),
            ("egress_unaddressed", self.egress_unaddressed),
            ("ingress_protocol", self.ingress_protocol),
            (
                "ingress_protocol_stateless",
                self.ingress_protocol_stateless,
            ),
            ("accepted_egress", self.accepted_egress),
            ("accepted_ingress", self.accepted_ingress),
            ("normal", self.normal),
        ]
    }
}

/// Options of the OpenFlow backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFlowOptions {
    /// Table numbers.
    pub tables: Tables,
    /// Register holding the port's OpenFlow number (Neutron: reg5).
    pub port_register: u8,
    /// Register holding the network's local VLAN tag, also the conntrack zone (Neutron: reg6).
    pub zone_register: u8,
    /// Register holding the port's policy id: ports with the same groups share rule flows.
    pub policy_register: u8,
    /// Rule algebra before lowering (subsumption, range and prefix merging).
    pub optimise_rules: bool,
    /// Remote groups with several members as `conjunction()` flows instead of one flow per
    /// member and rule.
    pub conjunctions: bool,
    /// One set of rule flows per distinct group set; off gives every port its own.
    pub share_policies: bool,
    /// Protocol-level allowances and drops (DHCP client, neighbour discovery, router and
    /// DHCP-server drops, the hand-off to conntrack or the rules) emitted once per bridge in
    /// shared tables, the per-port tables keeping only the port's bindings; off repeats them
    /// for every binding of every port.
    pub shared_stage: bool,
    /// Cookie put on every flow, so that its owner can replace or delete exactly its flows.
    pub cookie: u64,
    /// A model needing more flows than this is an error rather than an out-of-memory.
    pub max_flows: usize,
    /// Emit `table=<entry>,priority=0 actions=resubmit(,<classify>)`.
    pub entry_flow: bool,
    /// Emit `table=<normal>,priority=0 actions=NORMAL`.
    pub normal_flow: bool,
    /// Broadcast and multicast a VM sends run through the other local ports' ingress
    /// pipelines before `NORMAL`. Only with VM ports configured `no-flood` (OpenFlow 1.0 port
    /// config), so that `NORMAL` does not also deliver them unfiltered: off by default.
    /// (OVSDB's `protected` would not do: it also blocks the pipeline's own outputs.)
    pub filter_local_flood: bool,
    /// Ports the model does not know share the bridge (a firewall driver inside
    /// neutron-openvswitch-agent): no priority-0 flow in the classify table (the agent's own
    /// `NORMAL` below it forwards what no port's flow claims), and frames from outside that
    /// are for no model port's MAC (broadcast, multicast, unknown unicast) are left to that
    /// `NORMAL` instead of being replicated to the model's ports or dropped.
    pub foreign_ports: bool,
}

/// The default cookie: "sgf" in ASCII, recognisable in `dump-flows`.
pub const DEFAULT_COOKIE: u64 = 0x0073_6766;

/// The default flow cap: ten times the worst workload we benchmark, far below what would
/// exhaust memory.
pub const DEFAULT_MAX_FLOWS: usize = 5_000_000;

impl Default for OpenFlowOptions {
    fn default() -> Self {
        OpenFlowOptions {
            tables: Tables::default(),
            port_register: 5,
            zone_register: 6,
            policy_register: 7,
            optimise_rules: true,
            conjunctions: true,
            share_policies: true,
            shared_stage: true,
            filter_local_flood: false,
            foreign_ports: false,
            cookie: DEFAULT_COOKIE,
            max_flows: DEFAULT_MAX_FLOWS,
            entry_flow: true,
            normal_flow: true,
        }
    }
}

impl OpenFlowOptions {
    fn check(&self) -> Result<()> {
        // The shared-stage tables are only used (and must only be free) with `shared_stage`.
        let tables: Vec<(&str, u8)> = self
            .tables
            .all()
            .into_iter()
            .filter(|(name, _)| self.shared_stage || !Tables::SHARED_STAGE.contains(name))
            .collect();
        for (i, (name, t)) in tables.iter().enumerate() {
            if *t == 255 {
                return Err(Error::Option {
                    name: "tables",
                    message: format!("{name} = 255 is reserved by OpenFlow"),
                });
            }
            if let Some((other, _)) = tables[..i].iter().find(|(_, u)| u == t) {
                return Err(Error::Option {
                    name: "tables",
                    message: format!("{name} and {other} are both table {t}"),
                });
            }
        }
        let registers = [
            ("port_register", self.port_register),
            ("zone_register", self.zone_register),
            ("policy_register", self.policy_register),
        ];
        for (i, (name, r)) in registers.iter().enumerate() {
            if *r > 15 {
                return Err(Error::Option {
                    name,
                    message: format!("register {r} outside 0-15"),
                });
            }
            if let Some((other, _)) = registers[..i].iter().find(|(_, u)| u == r) {
                return Err(Error::Option {
                    name,
                    message: format!("register {r} is also the {other}"),
                });
            }
        }
        if self.max_flows == 0 {
            return Err(Error::Option {
                name: "max_flows",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// One OpenFlow flow. Actions, ports and rules are shared between the flows that have them
/// (a bridge has a handful of distinct actions for tens of thousands of flows): cloning a
/// flow copies only its match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Table number.
    pub table: u8,
    /// Priority (higher wins).
    pub priority: u16,
    /// Match fields in `ovs-ofctl` syntax, comma-separated (empty: match everything).
    pub matches: String,
    /// Actions in `ovs-ofctl` syntax.
    pub actions: Arc<str>,
    /// The port this flow belongs to (`None` for the pipeline's shared flows).
    pub port: Option<Arc<str>>,
    /// The security-group rule this flow comes from, if any.
    pub rule: Option<Arc<RuleRef>>,
}

/// Counts that explain where the flows come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ports in the model.
    pub ports: usize,
    /// Ports with filtering (port security on, not trusted).
    pub filtered_ports: usize,
    /// Security groups in the model.
    pub groups: usize,
    /// Rules in the model.
    pub rules: usize,
    /// Flows emitted.
    pub flows: usize,
    /// Flows per table.
    pub per_table: BTreeMap<u8, usize>,
    /// Flows specific to each port: classification, anti-spoofing, implicit allowances, and
    /// the rule flows of a policy only that port uses (shared flows are not counted here).
    pub per_port: BTreeMap<String, usize>,
    /// Flows per source rule (`group[index]`), summed over policies; a flow two rules share
    /// counts for the first.
    pub per_rule: BTreeMap<String, usize>,
    /// Flows generated twice (two rules, or two groups, with one match) and emitted once.
    pub duplicates: usize,
    /// Distinct policies (group sets) among filtered ports: each has one set of rule flows.
    pub policies: usize,
    /// Conjunctions (remote groups laid out as `conjunction()`).
    pub conjunctions: usize,
    /// Rules that produce no flows of their own, with why (`group[index]` → reasons).
    pub rule_fates: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// The result of a compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// The flows, sorted by table, descending priority, then match.
    pub flows: Vec<Flow>,
    /// Where the flows come from.
    pub stats: Stats,
    /// Remarks from reading the model.
    pub warnings: Vec<Issue>,
    /// The cookie on every flow.
    pub cookie: u64,
}

impl Compiled {
    /// The flows as `ovs-ofctl add-flows` input, one per line.
    pub fn to_ofctl(&self) -> String {
        render::ofctl(&self.flows, self.cookie)
    }

    /// The same text handed to `sink` in pieces of about `chunk` bytes (whole lines), so
    /// that a large compile can be written out without holding all of its text.
    pub fn render_ofctl<E>(
        &self,
        chunk: usize,
        mut sink: impl FnMut(&str) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut lines = render::Lines::new(self.cookie);
        let mut out = String::with_capacity(chunk + 512);
        for f in &self.flows {
            lines.push(&mut out, f);
            if out.len() >= chunk {
                sink(&out)?;
                out.clear();
            }
        }
        if out.is_empty() {
            Ok(())
        } else {
            sink(&out)
        }
    }
}

/// Compiles a validated model into OpenFlow flows.
pub fn compile_openflow(model: &Model, options: &OpenFlowOptions) -> Result<Compiled> {
    options.check()?;
    check_bindings(model)?;
    let (policies, port_policy) = crate::ir::policy::policies(model, !options.share_policies);
    let mut builder = pipeline::Builder::new(options, &port_policy);
    builder.shared_flows(pipeline::Kinds::of(model));
    builder.dispatch_flows(model)?;
    for port in &model.ports {
        builder.port_flows(model, port)?;
    }
    for policy in &policies {
        builder.policy_flows(policy)?;
    }
    builder.conjunction_flows()?;
    builder.finish(model)
}

/// The OpenFlow backend needs each port's OpenFlow number and its network's local tag.
pub(super) fn check_bindings(model: &Model) -> Result<()> {
    let mut issues = Vec::new();
    for port in &model.ports {
        if port.ofport.is_none() {
            issues.push(Issue::new(
                format!("ports.{}", port.id),
                "ofport is required for the openflow target (on the port or in bindings)",
            ));
        }
        if port.local_vlan.is_none() {
            issues.push(Issue::new(
                format!("ports.{}", port.id),
                "local_vlan is required for the openflow target (on the port, in bindings, or networks[network_id])",
            ));
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(issues))
    }
}
