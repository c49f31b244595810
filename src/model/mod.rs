//! The input model: ports, security groups, rules and remote-group members, after parsing and
//! validation. Everything here is already normalised the way Neutron does it (host bits
//! cleared, `icmp` on IPv6 read as ICMPv6, protocol names and numbers equivalent, `/0` read as
//! "any"), so backends never see an invalid or ambiguous value.

pub mod keys;
mod mac;
mod parse;
pub(crate) mod path;
pub mod protocol;
mod tree;
mod validate;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Issue;

pub use keys::UnknownKeys;
pub use mac::Mac;
pub use parse::{decode, load_model, parse_value, InputFormat, ParseOptions, MAX_DEPTH};

/// Traffic direction, seen from the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Towards the VM.
    Ingress,
    /// From the VM.
    Egress,
}

impl Direction {
    /// Neutron's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// IP version of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EtherType {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl EtherType {
    /// Neutron's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EtherType::V4 => "IPv4",
            EtherType::V6 => "IPv6",
        }
    }

    /// The family of an address.
    pub fn of_addr(addr: &IpAddr) -> EtherType {
        match addr {
            IpAddr::V4(_) => EtherType::V4,
            IpAddr::V6(_) => EtherType::V6,
        }
    }

    /// The family of a prefix.
    pub fn of_net(net: &IpNet) -> EtherType {
        match net {
            IpNet::V4(_) => EtherType::V4,
            IpNet::V6(_) => EtherType::V6,
        }
    }
}

/// An inclusive range of TCP/UDP/SCTP ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub min: u16,
    /// Last port of the range (inclusive).
    pub max: u16,
}

impl PortRange {
    /// Every port: the range that matches nothing in particular.
    pub const ANY: PortRange = PortRange {
        min: 0,
        max: u16::MAX,
    };

    /// Whether the range covers every port, so the match can be left out.
    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }
}

/// What a rule matches above the IP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum L4 {
    /// Nothing beyond the protocol (or any protocol).
    Any,
    /// TCP, UDP or SCTP ports.
    Ports {
        /// Destination ports (Neutron's `port_range_min`/`port_range_max`).
        dst: PortRange,
        /// Source ports (only provider rules such as DHCP carry them).
        src: PortRange,
    },
    /// ICMP or ICMPv6 type and optional code.
    Icmp {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code, only with a type.
        code: Option<u8>,
    },
}

/// The far end a rule admits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Remote {
    /// Any address (no remote, or a `/0` prefix).
    Any,
    /// A CIDR, host bits cleared.
    Prefix(IpNet),
    /// The member addresses of a security group.
    Group(String),
    /// The CIDRs of an address group.
    AddressGroup(String),
}

/// One allow rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Position of the rule in its group's list in the input, for statistics and messages.
    pub index: usize,
    /// The rule's id when the input gave one.
    pub id: Option<String>,
    /// Ingress or egress.
    pub direction: Direction,
    /// IPv4 or IPv6.
    pub ethertype: EtherType,
    /// IP protocol number; `None` for any.
    pub protocol: Option<u8>,
    /// Ports or ICMP type/code.
    pub l4: L4,
    /// The remote end.
    pub remote: Remote,
}

/// A security group: an allow-list of rules, stateful (conntrack) or stateless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// Whether connections are tracked (replies allowed automatically).
    pub stateful: bool,
    /// The rules, in input order.
    pub rules: Vec<Rule>,
}

/// An allowed address pair: an address or CIDR the port may use, with the MAC it uses it from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressPair {
    /// Address (as a host prefix) or CIDR.
    pub net: IpNet,
    /// The MAC that may send from it (the port's own MAC when the input gave none).
    pub mac: Mac,
}

/// A port to filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Neutron port id.
    pub id: String,
    /// The port's MAC address.
    pub mac: Mac,
    /// Fixed IP addresses.
    pub fixed_ips: Vec<IpAddr>,
    /// Allowed address pairs.
    pub allowed_address_pairs: Vec<AddressPair>,
    /// `port_security_enabled`: false means no filtering at all.
    pub port_security_enabled: bool,
    /// Security group ids, sorted and deduplicated.
    pub security_groups: Vec<String>,
    /// Neutron `device_owner`; `network:*` ports are trusted.
    pub device_owner: String,
    /// Neutron network id.
    pub network_id: Option<String>,
    /// OpenFlow port number on the integration bridge.
    pub ofport: Option<u32>,
    /// The network's local VLAN tag on this host; also the conntrack zone.
    pub local_vlan: Option<u16>,
    /// DPDK port-representor id (rte_flow backend).
    pub representor: Option<u16>,
}

impl Port {
    /// Trusted ports (`network:*` owners such as DHCP and routers) are not filtered.
    pub fn is_trusted(&self) -> bool {
        self.device_owner.starts_with("network:")
    }

    /// Whether the port gets firewall rules at all.
    pub fn is_filtered(&self) -> bool {
        self.port_security_enabled && !self.is_trusted()
    }

    /// Every (MAC, prefix) the port may send from: fixed IPs with the port's MAC, then the
    /// allowed address pairs with theirs. Sorted and deduplicated.
    pub fn source_bindings(&self) -> Vec<AddressPair> {
        let mut out: Vec<AddressPair> = self
            .fixed_ips
            .iter()
            .map(|ip| AddressPair {
                net: IpNet::from(*ip),
                mac: self.mac,
            })
            .chain(self.allowed_address_pairs.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// IPv6 sources the port may use, with the MAC it uses each from: its fixed IPv6 addresses
    /// and IPv6 address pairs, plus the EUI-64 link-local address of its own MAC (which a VM
    /// configures on its own; a pair's MAC gets a link-local address only as an explicit pair,
    /// as in Neutron's driver). Sorted and deduplicated.
    pub fn v6_sources(&self) -> Vec<(Mac, IpNet)> {
        let mut out: Vec<(Mac, IpNet)> = self
            .source_bindings()
            .into_iter()
            .filter(|b| EtherType::of_net(&b.net) == EtherType::V6)
            .map(|b| (b.mac, b.net))
            .chain(std::iter::once((
                self.mac,
                IpNet::from(IpAddr::V6(self.mac.link_local())),
            )))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The MACs the port may send from: its own and those of its address pairs.
    pub fn macs(&self) -> Vec<Mac> {
        let mut out: Vec<Mac> = std::iter::once(self.mac)
            .chain(self.allowed_address_pairs.iter().map(|p| p.mac))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Member addresses of a remote group or address group, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Prefixes (hosts as /32 or /128), sorted and deduplicated.
    pub nets: Vec<IpNet>,
}

impl Members {
    /// The members of one family.
    pub fn of(&self, ethertype: EtherType) -> impl Iterator<Item = &IpNet> {
        self.nets
            .iter()
            .filter(move |n| EtherType::of_net(n) == ethertype)
    }
}

/// A validated, normalised model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Security groups by id.
    pub groups: BTreeMap<String, Group>,
    /// Ports sorted by id.
    pub ports: Vec<Port>,
    /// Members of remote security groups, by group id (`remote_group_id` looks here).
    pub members: BTreeMap<String, Members>,
    /// Prefixes of address groups, by id (`remote_address_group_id` looks here): a separate
    /// id space, so a security group and an address group may share a name.
    pub address_groups: BTreeMap<String, Members>,
    /// Non-fatal remarks made while reading the input (e.g. widened port ranges).
    pub warnings: Vec<Issue>,
}

impl Model {
    /// Whether a port's groups are stateful (all of a port's groups agree; validation
    /// refuses a mix). A port without groups counts as stateful: it drops everything anyway.
    pub fn port_is_stateful(&self, port: &Port) -> bool {
        port.security_groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .all(|g| g.stateful)
    }

    /// The rules that apply to a port: the union of its groups' rules, with their group.
    pub fn port_rules<'a>(&'a self, port: &'a Port) -> impl Iterator<Item = (&'a Group, &'a Rule)> {
        port.security_groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .flat_map(|g| g.rules.iter().map(move |r| (g, r)))
    }

    /// The addresses a rule's remote stands for, in the rule's family. `None` means any.
    pub fn remote_nets(&self, rule: &Rule) -> Option<Vec<IpNet>> {
        match &rule.remote {
            Remote::Any => None,
            Remote::Prefix(net) => Some(vec![*net]),
            Remote::Group(_) | Remote::AddressGroup(_) => Some(
                self.remote_members(&rule.remote)
                    .map(|m| m.of(rule.ethertype).copied().collect())
                    .unwrap_or_default(),
            ),
        }
    }

    /// The members a group remote names, each kind in its own id space; `None` for other
    /// remotes and for groups without members.
    pub fn remote_members(&self, remote: &Remote) -> Option<&Members> {
        match remote {
            Remote::Group(id) => self.members.get(id),
            Remote::AddressGroup(id) => self.address_groups.get(id),
            Remote::Any | Remote::Prefix(_) => None,
        }
    }
}

/// The cross-object checks of a model built or changed in code (a compiler session): group
/// references, statefulness, OpenFlow port numbers and network tags. Remote groups without
/// members are accepted (they stand for no address).
pub fn check_model(model: &Model) -> Vec<Issue> {
    validate::check(model, true)
}

/// A reference to a rule: its group and position, as statistics and traces name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleRef {
    /// Group id.
    pub group: String,
    /// Index in the group's rule list.
    pub index: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.group, self.index)
    }
}

#[cfg(test)]
mod strict_tests;
#[cfg(test)]
mod tests;
