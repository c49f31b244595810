//! The single-port rendering: one VM port's policy as plain (non-`transfer`) rules on the
//! ethdev port that faces the VM, fitted to a driver that implements only part of rte_flow
//! (`net_tap`, whose rules Linux enforces with TC flower). `docs/rte_flow.md` describes it.
//!
//! Traffic from the VM arrives on the port (`ingress` attribute): accepted → the accept
//! queue (the software switch forwards it without filtering again), dropped, or → the
//! software queue (the switch filters it). Traffic to the VM leaves through the port
//! (`egress` attribute): accepted (`passthru`) or dropped; a transmitted packet cannot be
//! sent back to software, so when any of that direction needs software the whole direction
//! is left to the switch. Nothing is ever left out: a rule the driver cannot take becomes a
//! coarser rule to software, never a gap.
//!
//! It reuses the transfer layout (`layout.rs`): the port's groups are flattened (each `jump`
//! replaced by the intersection of the jumping rule with every rule of its target), the
//! priorities ranked again into the driver's range, and each rule fitted to the driver.

mod drivers;
mod fit;
mod flatten;
mod meet;
mod output;
mod probed;

use crate::error::{Error, Result};
use crate::model::{Direction, Model, RuleRef};

use super::{Forward, Kind, Pattern, RteFlowOptions};

pub use drivers::{by_name as driver_by_name, PortDriver, NET_TAP, PORT_DRIVERS, PORT_FULL};
pub use probed::{narrow, PROBE_SHAPES};

/// Options of the single-port rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOptions {
    /// The driver: its profile, or the profile narrowed by a probe (`narrow`).
    pub driver: PortDriver,
    /// The probed shapes the driver refused that narrowed its profile (for the report).
    pub refused: Vec<String>,
    /// The ethdev port id the rules are created on.
    pub ethdev: u16,
    /// Where accepted traffic from the VM goes (`queue index N`).
    pub accept_queue: u16,
    /// Where traffic the driver cannot decide goes (`queue index N`, served by the software
    /// switch); `None`: there is no software path, and a port needing one is not offloadable.
    pub software_queue: Option<u16>,
    /// A masked or ranged L4 port match becomes at most this many exact-port rules on a
    /// driver without port masks; beyond that its traffic goes to software.
    pub max_exact_ports: usize,
}

impl Default for PortOptions {
    fn default() -> Self {
        PortOptions {
            driver: NET_TAP,
            refused: Vec::new(),
            ethdev: 0,
            accept_queue: 0,
            software_queue: Some(1),
            max_exact_ports: 64,
        }
    }
}

/// The rte_flow attribute of a rule: which way it sees traffic on the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attr {
    /// Received on the port: traffic from the VM (security-group egress).
    Ingress,
    /// Transmitted on the port: traffic to the VM (security-group ingress).
    Egress,
}

impl Attr {
    /// The attribute's name in testpmd's grammar.
    pub fn as_str(self) -> &'static str {
        match self {
            Attr::Ingress => "ingress",
            Attr::Egress => "egress",
        }
    }

    /// The security-group direction this attribute enforces.
    pub fn direction(self) -> Direction {
        match self {
            Attr::Ingress => Direction::Egress,
            Attr::Egress => Direction::Ingress,
        }
    }
}

/// What a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fate {
    /// Allowed: the accept queue (from the VM) or `passthru` (to the VM).
    Accept,
    /// Dropped.
    Drop,
    /// Decided by the software switch: the software queue.
    Software,
}

impl Fate {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Accept => "accept",
            Fate::Drop => "drop",
            Fate::Software => "software",
        }
    }
}

/// One rule of the rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    /// Which way it sees traffic.
    pub attr: Attr,
    /// Priority, in the driver's range (lower wins).
    pub priority: u32,
    /// What it matches (never a port item).
    pub pattern: Pattern,
    /// What it decides.
    pub fate: Fate,
    /// Why it exists.
    pub kind: Kind,
    /// The security-group rule it comes from.
    pub rule: Option<RuleRef>,
    /// Why its traffic goes to software (software fates only).
    pub why: Option<String>,
}

/// How much of one direction the port's rules enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirMode {
    /// The driver decides all of it.
    Offloaded,
    /// Some traffic goes to the software queue.
    Partial,
    /// Nothing is installed for it, or one rule sends all of it to software: the switch
    /// filters it.
    Software,
    /// The port is not filtered (port security off, trusted port): nothing to install.
    Unfiltered,
    /// Software is needed and there is no software path: the install refuses.
    NotOffloadable,
}

impl DirMode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DirMode::Offloaded => "offloaded",
            DirMode::Partial => "partial",
            DirMode::Software => "software",
            DirMode::Unfiltered => "unfiltered",
            DirMode::NotOffloadable => "not offloadable",
        }
    }
}

/// One direction of the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectionReport {
    /// The attribute of its rules.
    pub attr: Attr,
    /// How much is offloaded.
    pub mode: DirMode,
    /// Rules installed for it.
    pub rules: usize,
    /// What goes to software, and why (distinct entries).
    pub software: Vec<(String, String)>,
}

/// Where one security-group rule of the port is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleWhere {
    /// The rule.
    pub rule: RuleRef,
    /// Its direction.
    pub direction: Direction,
    /// `offloaded` or `software`.
    pub status: &'static str,
    /// Why software.
    pub why: Option<String>,
    /// Rules of the rendering that come from it.
    pub port_rules: usize,
}

/// One port's rules for one driver, with where everything went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRendering {
    /// The model's port id.
    pub port: String,
    /// The options used.
    pub options: PortOptions,
    /// The rules, by attribute then priority.
    pub rules: Vec<PortRule>,
    /// Egress (from the VM, `ingress` attribute) first, then ingress.
    pub directions: Vec<DirectionReport>,
    /// Every security-group rule of the port.
    pub rule_report: Vec<RuleWhere>,
}

impl PortRendering {
    /// Whether the rules can be installed (every direction has its software path).
    pub fn offloadable(&self) -> bool {
        self.directions
            .iter()
            .all(|d| d.mode != DirMode::NotOffloadable)
    }

    /// Why the port is not offloadable.
    pub fn problem(&self) -> Option<String> {
        let bad: Vec<String> = self
            .directions
            .iter()
            .filter(|d| d.mode == DirMode::NotOffloadable)
            .map(|d| {
                let mut why: Vec<&str> = Vec::new();
                for (_, w) in &d.software {
                    if !why.contains(&w.as_str()) {
                        why.push(w);
                    }
                }
                format!(
                    "{} traffic needs software ({}) and there is no software queue",
                    match d.attr.direction() {
                        Direction::Egress => "egress",
                        Direction::Ingress => "ingress",
                    },
                    why.join("; ")
                )
            })
            .collect();
        (!bad.is_empty()).then(|| bad.join("; "))
    }

    /// `flow create|validate` lines for testpmd; an error when the port is not offloadable
    /// (an install must refuse rather than leave traffic unchecked).
    pub fn to_testpmd(&self, command: &str) -> Result<String> {
        match self.problem() {
            Some(problem) => Err(self.not_offloadable(problem)),
            None => Ok(output::testpmd(self, command)),
        }
    }

    /// The error an install of a port that is not offloadable reports.
    pub fn not_offloadable(&self, problem: String) -> Error {
        Error::Option {
            name: "port",
            message: format!(
                "port {} is not offloadable on {}: {problem}",
                self.port, self.options.driver.name
            ),
        }
    }

    /// The structured form: rules with attr/pattern/actions/origin, and the report.
    pub fn to_json(&self) -> serde_json::Value {
        output::document(self)
    }

    /// The report as readable text.
    pub fn report_text(&self) -> String {
        output::report_text(self)
    }
}

/// Renders one port of a validated model for one driver.
pub fn render_port(
    model: &Model,
    port_id: &str,
    options: &PortOptions,
    max_rules: usize,
) -> Result<PortRendering> {
    let Some(index) = model.ports.iter().position(|p| p.id == port_id) else {
        let known: Vec<&str> = model.ports.iter().map(|p| p.id.as_str()).collect();
        return Err(Error::Option {
            name: "port",
            message: format!(
                "no port {port_id:?} in the model (ports: {})",
                known.join(", ")
            ),
        });
    };
    if options.max_exact_ports == 0 {
        return Err(Error::Option {
            name: "max_exact_ports",
            message: "must be at least 1".into(),
        });
    }
    let (numbered, rep) = with_representors(model, index)?;
    let transfer = RteFlowOptions {
        profile: options.driver.transfer,
        proxy_port: 0,
        uplink_port: 0,
        software_port: None,
        // The accept group marks accepted egress (forward=software would make it look like
        // the fallbacks to software).
        forward: Forward::Uplink,
        count: false,
        max_rules,
    };
    let compiled = super::compile_rte_flow(&numbered, &transfer)?;
    let port = &numbered.ports[index];
    let flat = flatten::port_rules(&compiled, port, rep);
    Ok(fit::fit(port, &compiled, flat, options))
}

/// The model with representors 1..=n in port order (the transfer layout needs one per port;
/// the single-port rendering does not use them), and the representor of port `index`.
fn with_representors(model: &Model, index: usize) -> Result<(Model, u16)> {
    let mut numbered = model.clone();
    for (i, port) in numbered.ports.iter_mut().enumerate() {
        port.representor = Some(u16::try_from(i + 1).map_err(|_| Error::Option {
            name: "port",
            message: "the single-port rendering handles at most 65534 ports".into(),
        })?);
    }
    let rep = u16::try_from(index + 1).unwrap_or(u16::MAX);
    Ok((numbered, rep))
}

#[cfg(test)]
mod tests;
