//! Decoding (JSON, msgpack) and reading of both input shapes into a [`Model`].
//!
//! The reader walks a generic tree ([`Node`], borrowed from the input bytes) rather than
//! deriving serde structs, so that it can report *every* problem with its path
//! (`security_groups.web.rules[3]: ...`) instead of stopping at the first, and so that both
//! Neutron's RPC payload and the documented model go through one code path.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::keys::{self, Kind, UnknownKeys};
use super::path::Path;
use super::protocol;
use super::tree::{Node, Obj};
use super::{
    validate, AddressPair, Direction, EtherType, Group, Mac, Members, Model, Port, PortRange,
    Remote, Rule, L4,
};
use crate::error::{Error, Issue, Result};

/// How the input bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// JSON if the first non-blank byte is `{` or `[`, msgpack otherwise.
    #[default]
    Auto,
    /// JSON text.
    Json,
    /// msgpack.
    Msgpack,
}

/// Options that change how the input is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Reproduce Neutron: a port range on DCCP/UDP-Lite (which no backend can match) widens
    /// the rule to the whole protocol, with a warning. Off by default: it is an error.
    pub widen_unmatchable_port_ranges: bool,
    /// What to do with keys an object may not carry; `None` takes the shape's default:
    /// an error in the documented model, a warning in Neutron's RPC payload (see
    /// [`super::keys`]).
    pub unknown_keys: Option<UnknownKeys>,
}

/// How deeply the input may nest, in every encoding (serde_json's own limit; msgpack and
/// Python objects are held to it too). A model needs fewer than ten levels.
pub const MAX_DEPTH: usize = 128;

/// Decodes JSON or msgpack bytes into a generic value.
pub fn decode(bytes: &[u8], format: InputFormat) -> Result<Value> {
    decode_as(bytes, format)
}

/// Decodes, reads and validates a model from bytes (JSON or msgpack): [`decode`] then
/// [`parse_value`], through a tree that borrows from `bytes` instead of a `Value`, with the
/// same errors and warnings.
pub fn load_model(bytes: &[u8], format: InputFormat, options: &ParseOptions) -> Result<Model> {
    let tree: Node = decode_as(bytes, format)?;
    read(&tree, options)
}

/// Decodes into `Value` or [`Node`]: one code path, so both fail alike.
fn decode_as<'de, T: Deserialize<'de>>(bytes: &'de [u8], format: InputFormat) -> Result<T> {
    let format = match format {
        InputFormat::Auto => sniff(bytes),
        other => other,
    };
    match format {
        InputFormat::Msgpack => {
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            de.set_max_depth(MAX_DEPTH);
            T::deserialize(&mut de).map_err(|e: rmp_serde::decode::Error| Error::Decode {
                format: "msgpack",
                message: e.to_string(),
            })
        }
        _ => serde_json::from_slice(bytes).map_err(|e| Error::Decode {
            format: "JSON",
            message: e.to_string(),
        }),
    }
}

fn sniff(bytes: &[u8]) -> InputFormat {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | Some(b'[') | None => InputFormat::Json,
        _ => InputFormat::Msgpack,
    }
}

/// Reads and validates a model from a decoded value (either input shape).
pub fn parse_value(value: &Value, options: &ParseOptions) -> Result<Model> {
    read(&Node::from_value(value), options)
}

fn read(tree: &Node, options: &ParseOptions) -> Result<Model> {
    let mut reader = Reader {
        options: *options,
        issues: Vec::new(),
        warnings: Vec::new(),
        rpc: false,
        unknown_keys: UnknownKeys::Error,
    };
    let model = reader.model(tree);
    if reader.issues.is_empty() {
        let mut model = model;
        model.warnings = reader.warnings;
        Ok(model)
    } else {
        reader.issues.sort();
        reader.issues.dedup();
        Err(Error::Invalid(reader.issues))
    }
}

/// Which of the two input shapes is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Documented,
    Rpc,
}

struct Reader {
    options: ParseOptions,
    issues: Vec<Issue>,
    warnings: Vec<Issue>,
    /// Whether the input is Neutron's RPC payload (which key tables apply).
    rpc: bool,
    /// What an unknown key is, once the shape is known.
    unknown_keys: UnknownKeys,
}

fn kind(v: &Node) -> &'static str {
    match v {
        Node::Null => "null",
        Node::Bool(_) => "a boolean",
        Node::Number(_) => "a number",
        Node::Str(_) => "a string",
        Node::List(_) => "a list",
        Node::Map(_) => "a mapping",
    }
}

/// A present, non-null field.
fn field<'v>(obj: &'v Obj<'v>, key: &str) -> Option<&'v Node<'v>> {
    obj.get(key).filter(|v| !v.is_null())
}

impl Reader {
    // Paths are written out only here, when there is something to say.
    fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.issues.push(Issue::new(path.render(), message));
    }

    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.warnings.push(Issue::new(path.render(), message));
    }

    /// Reports the keys of `obj` that its kind may not carry (an error or a warning, by the
    /// input shape and the `unknown_keys` option).
    fn check_keys(&mut self, path: &Path, obj: &Obj, kind: Kind) {
        if self.unknown_keys == UnknownKeys::Ignore {
            return;
        }
        for unknown in keys::unknown_keys(obj.keys(), &keys::table(kind, self.rpc)) {
            match self.unknown_keys {
                UnknownKeys::Error => self.error(path, unknown.error_message()),
                UnknownKeys::Warn => self.warn(path, unknown.warning_message()),
                UnknownKeys::Ignore => {}
            }
        }
    }

    /// A mapping whose keys are checked against the table of `kind`.
    fn checked<'v>(&mut self, path: &Path, v: &'v Node<'v>, kind: Kind) -> Option<&'v Obj<'v>> {
        let obj = self.object(path, v)?;
        self.check_keys(path, obj, kind);
        Some(obj)
    }

    fn object<'v>(&mut self, path: &Path, v: &'v Node<'v>) -> Option<&'v Obj<'v>> {
        match v {
            Node::Map(m) => Some(m),
            other => {
                self.error(path, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    fn list<'v>(&mut self, path: &Path, v: &'v Node<'v>) -> Option<&'v [Node<'v>]> {
        match v {
            Node::List(a) => Some(a),
            other => {
                self.error(path, format!("expected a list, got {}", kind(other)));
                None
            }
        }
    }

    fn string<'v>(&mut self, path: &Path, v: &'v Node<'v>) -> Option<&'v str> {
        match v {
            Node::Str(s) => Some(s),
            other => {
                self.error(path, format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    fn boolean(&mut self, path: &Path, v: &Node) -> Option<bool> {
        match v {
            Node::Bool(b) => Some(*b),
            other => {
                self.error(path, format!("expected true or false, got {}", kind(other)));
                None
            }
        }
    }

    /// An integer, also from a string of digits (Neutron's API accepts both).
    fn integer(&mut self, path: &Path, v: &Node) -> Option<i64> {
        let parsed = match v {
            Node::Number(n) => n.as_i64(),
            Node::Str(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.error(path, format!("expected an integer, got {}", describe(v)));
        }
        parsed
    }

    fn bounded(&mut self, path: &Path, what: &str, v: &Node, max: i64) -> Option<i64> {
        let n = self.integer(path, v)?;
        if !(0..=max).contains(&n) {
            self.error(path, format!("{what} {n} outside 0-{max}"));
            return None;
        }
        Some(n)
    }

    fn model(&mut self, root: &Node) -> Model {
        let Some(top) = self.object(&Path::Root, root) else {
            return Model::default();
        };
        let shape = if top.contains_key("devices") {
            Shape::Rpc
        } else {
            Shape::Documented
        };
        self.rpc = shape == Shape::Rpc;
        self.unknown_keys = self.options.unknown_keys.unwrap_or(match shape {
            Shape::Documented => UnknownKeys::Error,
            Shape::Rpc => UnknownKeys::Warn,
        });
        self.check_keys(&Path::Root, top, Kind::Top);
        if let Some(section) = field(top, "rte_flow").and_then(Node::as_object) {
            // Its values are read (and type-checked) by the rte_flow backend.
            self.check_keys(&Path::Root.key("rte_flow"), section, Kind::RteFlow);
        }
        let stateful_overrides = self.stateful_overrides(top);
        let groups = self.groups(top, shape, &stateful_overrides);
        let networks = self.networks(top);
        let bindings = self.bindings(top);
        let ports = self.ports(top, shape, &networks, &bindings);
        let mut members = BTreeMap::new();
        for key in ["members", "sg_member_ips"] {
            if let Some(v) = field(top, key) {
                self.members(&Path::Root.key(key), v, &mut members);
            }
        }
        let mut address_groups = BTreeMap::new();
        if let Some(v) = field(top, "address_groups") {
            self.address_groups(v, &mut address_groups);
        }
        let mut model = Model {
            groups,
            ports,
            members,
            address_groups,
            warnings: Vec::new(),
        };
        match shape {
            Shape::Documented => derive_members_from_ports(&mut model),
            Shape::Rpc => share_rpc_member_ips(&mut model),
        }
        let issues = validate::check(&model, shape == Shape::Rpc);
        self.issues.extend(issues);
        model
    }

    fn stateful_overrides(&mut self, top: &Obj) -> BTreeMap<String, bool> {
        let mut out = BTreeMap::new();
        let name = "security_group_stateful";
        let path = Path::Root.key(name);
        if let Some(v) = field(top, name) {
            if let Some(map) = self.object(&path, v) {
                for (id, flag) in map.iter() {
                    if let Some(b) = self.boolean(&path.key(id), flag) {
                        out.insert(id.to_string(), b);
                    }
                }
            }
        }
        out
    }

    fn groups(
        &mut self,
        top: &Obj,
        shape: Shape,
        overrides: &BTreeMap<String, bool>,
    ) -> BTreeMap<String, Group> {
        let mut out = BTreeMap::new();
        let name = "security_groups";
        let path = Path::Root.key(name);
        let Some(v) = field(top, name) else {
            return out;
        };
        let entries: Vec<(Path, &str, &Node)> = match v {
            Node::Map(map) => map.iter().map(|(id, g)| (path.key(id), id, g)).collect(),
            Node::List(list) => {
                let mut entries = Vec::new();
                for (i, g) in list.iter().enumerate() {
                    let gpath = path.index(i);
                    let Some(obj) = self.object(&gpath, g) else {
                        continue;
                    };
                    match field(obj, "id").map(|id| (id, self.string(&gpath.key("id"), id))) {
                        Some((_, Some(id))) => entries.push((gpath, id, g)),
                        Some((_, None)) => {}
                        None => self.error(&gpath, "a security group needs an id"),
                    }
                }
                entries
            }
            other => {
                self.error(
                    &path,
                    format!("expected a mapping or a list, got {}", kind(other)),
                );
                return out;
            }
        };
        for (gpath, id, g) in entries {
            if out.contains_key(id) {
                self.error(&gpath, format!("duplicate security group id {id:?}"));
                continue;
            }
            if let Some(group) = self.group(&gpath, id, g, shape, overrides.get(id).copied()) {
                out.insert(id.to_string(), group);
            }
        }
        out
    }

    fn group(
        &mut self,
        path: &Path,
        id: &str,
        v: &Node,
        shape: Shape,
        stateful_override: Option<bool>,
    ) -> Option<Group> {
        let (rules_value, rules_path, mut stateful) = match v {
            // Neutron's RPC shape: the group is its list of rules.
            Node::List(_) => (Some(v), *path, stateful_override),
            Node::Map(obj) => {
                self.check_keys(path, obj, Kind::Group);
                let stateful = match field(obj, "stateful") {
                    Some(s) => self.boolean(&path.key("stateful"), s),
                    None => stateful_override,
                };
                (field(obj, "rules"), path.key("rules"), stateful)
            }
            other => {
                self.error(
                    path,
                    format!("expected a mapping or a list of rules, got {}", kind(other)),
                );
                return None;
            }
        };
        let mut rules = Vec::new();
        if let Some(rv) = rules_value {
            if let Some(list) = self.list(&rules_path, rv) {
                for (i, r) in list.iter().enumerate() {
                    let rpath = rules_path.index(i);
                    if let Some((rule, rule_stateful)) = self.rule(&rpath, i, r, shape) {
                        stateful = self.merge_stateful(&rpath, stateful, rule_stateful);
                        rules.push(rule);
                    }
                }
            }
        }
        Some(Group {
            id: id.to_string(),
            stateful: stateful.unwrap_or(true),
            rules,
        })
    }

    /// In the RPC payload every rule repeats its group's `stateful` flag; they must agree.
    fn merge_stateful(
        &mut self,
        path: &Path,
        group: Option<bool>,
        rule: Option<bool>,
    ) -> Option<bool> {
        match (group, rule) {
            (Some(g), Some(r)) if g != r => {
                self.error(
                    path,
                    format!("stateful {r} disagrees with the group's stateful {g}"),
                );
                Some(g)
            }
            (None, r) => r,
            (g, _) => g,
        }
    }

    fn rule(
        &mut self,
        path: &Path,
        position: usize,
        v: &Node,
        shape: Shape,
    ) -> Option<(Rule, Option<bool>)> {
        let before = self.issues.len();
        let obj = self.checked(path, v, Kind::Rule)?;
        let direction = match field(obj, "direction") {
            None => {
                self.error(path, "direction is required (ingress or egress)");
                None
            }
            Some(d) => match self.string(&path.key("direction"), d) {
                Some("ingress") => Some(Direction::Ingress),
                Some("egress") => Some(Direction::Egress),
                Some(other) => {
                    self.error(
                        &path.key("direction"),
                        format!("unknown direction {other:?} (ingress or egress)"),
                    );
                    None
                }
                None => None,
            },
        };
        let ethertype = match field(obj, "ethertype") {
            // Neutron's API default.
            None => Some(EtherType::V4),
            Some(e) => match self.string(&path.key("ethertype"), e) {
                Some(s) if s.eq_ignore_ascii_case("ipv4") => Some(EtherType::V4),
                Some(s) if s.eq_ignore_ascii_case("ipv6") => Some(EtherType::V6),
                Some(other) => {
                    self.error(
                        &path.key("ethertype"),
                        format!("unknown ethertype {other:?} (IPv4 or IPv6)"),
                    );
                    None
                }
                None => None,
            },
        };
        let protocol = self.protocol(path, obj, ethertype);
        let remote = self.remote(path, obj, direction, ethertype, shape);
        let stateful = field(obj, "stateful").and_then(|s| self.boolean(&path.key("stateful"), s));
        let id = field(obj, "id").and_then(|s| self.string(&path.key("id"), s).map(str::to_string));
        let l4 = match (ethertype, protocol) {
            (Some(eth), Some(proto)) => self.l4(path, obj, eth, proto),
            _ => None,
        };
        if self.issues.len() != before {
            return None;
        }
        Some((
            Rule {
                index: position,
                id,
                direction: direction?,
                ethertype: ethertype?,
                protocol: protocol?,
                l4: l4?,
                remote: remote?,
            },
            stateful,
        ))
    }

    /// `Some(None)` is "any protocol"; `None` means an error was recorded.
    fn protocol(
        &mut self,
        path: &Path,
        obj: &Obj,
        ethertype: Option<EtherType>,
    ) -> Option<Option<u8>> {
        let ppath = &path.key("protocol");
        let number = match field(obj, "protocol") {
            None => return Some(None),
            Some(Node::Str(s)) if s.is_empty() || s.eq_ignore_ascii_case("any") => {
                return Some(None)
            }
            Some(Node::Str(s)) if !s.trim().chars().all(|c| c.is_ascii_digit()) => {
                match protocol::by_name(s) {
                    Some(n) => n,
                    None => {
                        self.error(ppath, format!("unknown protocol name {s:?}"));
                        return None;
                    }
                }
            }
            Some(v) => {
                let n = self.integer(ppath, v)?;
                if !(0..=255).contains(&n) {
                    self.error(ppath, format!("protocol number {n} outside 0-255"));
                    return None;
                }
                n as u8
            }
        };
        // Neutron: `icmp` on an IPv6 rule means ICMPv6.
        if number == protocol::ICMP && ethertype == Some(EtherType::V6) {
            return Some(Some(protocol::ICMPV6));
        }
        Some(Some(number))
    }

    fn remote(
        &mut self,
        path: &Path,
        obj: &Obj,
        direction: Option<Direction>,
        ethertype: Option<EtherType>,
        shape: Shape,
    ) -> Option<Remote> {
        let mut prefixes: Vec<(&'static str, &Node)> = Vec::new();
        for key in ["remote_ip_prefix", "source_ip_prefix", "dest_ip_prefix"] {
            if let Some(v) = field(obj, key) {
                prefixes.push((key, v));
            }
        }
        // The RPC payload names the remote prefix after the packet field it matches.
        for (key, _) in &prefixes {
            let wrong = match (*key, direction) {
                ("source_ip_prefix", Some(Direction::Egress)) => Some("dest_ip_prefix"),
                ("dest_ip_prefix", Some(Direction::Ingress)) => Some("source_ip_prefix"),
                _ => None,
            };
            if let Some(right) = wrong {
                self.error(
                    &path.key(key),
                    format!(
                        "{key} on an {} rule names the local end; the remote prefix is {right} or remote_ip_prefix",
                        direction.map(Direction::as_str).unwrap_or_default()
                    ),
                );
                return None;
            }
        }
        if prefixes.len() == 2 && prefixes[0].1 == prefixes[1].1 {
            prefixes.pop();
        }
        let mut named: Vec<&str> = prefixes.iter().map(|(k, _)| *k).collect();
        let group = field(obj, "remote_group_id");
        let address_group = field(obj, "remote_address_group_id");
        if group.is_some() {
            named.push("remote_group_id");
        }
        if address_group.is_some() {
            named.push("remote_address_group_id");
        }
        if named.len() > 1 {
            self.error(
                path,
                format!(
                    "more than one remote ({}); a rule takes at most one",
                    named.join(", ")
                ),
            );
            return None;
        }
        let _ = shape;
        if let Some((key, v)) = prefixes.first() {
            let ppath = &path.key(key);
            let text = self.string(ppath, v)?;
            let net = match parse_net(text) {
                Ok(n) => n,
                Err(e) => {
                    self.error(ppath, e);
                    return None;
                }
            };
            if let Some(eth) = ethertype {
                if EtherType::of_net(&net) != eth {
                    self.error(
                        ppath,
                        format!(
                            "prefix {text} is not {} like the rule's ethertype",
                            eth.as_str()
                        ),
                    );
                    return None;
                }
            }
            return Some(if net.prefix_len() == 0 {
                Remote::Any
            } else {
                Remote::Prefix(net.trunc())
            });
        }
        if let Some(g) = group {
            let id = self.string(&path.key("remote_group_id"), g)?;
            return Some(Remote::Group(id.to_string()));
        }
        if let Some(g) = address_group {
            let id = self.string(&path.key("remote_address_group_id"), g)?;
            return Some(Remote::AddressGroup(id.to_string()));
        }
        Some(Remote::Any)
    }

    fn l4(
        &mut self,
        path: &Path,
        obj: &Obj,
        ethertype: EtherType,
        protocol: Option<u8>,
    ) -> Option<L4> {
        let min_v = field(obj, "port_range_min");
        let max_v = field(obj, "port_range_max");
        let smin_v = field(obj, "source_port_range_min");
        let smax_v = field(obj, "source_port_range_max");
        let has_ports = min_v.is_some() || max_v.is_some();
        let has_src_ports = smin_v.is_some() || smax_v.is_some();
        let Some(proto) = protocol else {
            if has_ports || has_src_ports {
                self.error(
                    path,
                    "a port range needs a protocol (tcp, udp, sctp, or icmp for type/code)",
                );
                return None;
            }
            return Some(L4::Any);
        };
        let icmp_family = matches!(
            (ethertype, proto),
            (EtherType::V4, protocol::ICMP) | (EtherType::V6, protocol::ICMPV6)
        );
        if icmp_family {
            if has_src_ports {
                self.error(path, "ICMP has no source ports");
                return None;
            }
            let icmp_type = match min_v {
                Some(v) => Some(self.bounded(&path.key("port_range_min"), "ICMP type", v, 255)?),
                None => None,
            };
            let code = match max_v {
                Some(v) => Some(self.bounded(&path.key("port_range_max"), "ICMP code", v, 255)?),
                None => None,
            };
            return match (icmp_type, code) {
                (None, None) => Some(L4::Any),
                (None, Some(_)) => {
                    self.error(
                        &path.key("port_range_max"),
                        "ICMP code without type (port_range_min)",
                    );
                    None
                }
                (Some(t), c) => Some(L4::Icmp {
                    icmp_type: t as u8,
                    code: c.map(|c| c as u8),
                }),
            };
        }
        if protocol::has_matchable_ports(proto) {
            let dst = self.range(path, "port_range_min", "port_range_max", min_v, max_v)?;
            let src = self.range(
                path,
                "source_port_range_min",
                "source_port_range_max",
                smin_v,
                smax_v,
            )?;
            return Some(if dst.is_any() && src.is_any() {
                L4::Any
            } else {
                L4::Ports { dst, src }
            });
        }
        if !(has_ports || has_src_ports) {
            return Some(L4::Any);
        }
        if protocol::has_unmatchable_ports(proto) {
            if self.options.widen_unmatchable_port_ranges {
                self.warn(
                    path,
                    format!(
                        "port range on protocol {proto} cannot be matched; widened to the whole protocol as Neutron does"
                    ),
                );
                return Some(L4::Any);
            }
            self.error(
                path,
                format!(
                    "port range on protocol {proto} (DCCP/UDP-Lite) cannot be matched by Open vSwitch; \
                     drop the range, or pass widen_unmatchable_port_ranges to open the whole protocol as Neutron does"
                ),
            );
            return None;
        }
        self.error(
            path,
            format!("protocol {proto} has no ports, but the rule gives a port range"),
        );
        None
    }

    fn range(
        &mut self,
        path: &Path,
        min_key: &str,
        max_key: &str,
        min_v: Option<&Node>,
        max_v: Option<&Node>,
    ) -> Option<PortRange> {
        let min = match min_v {
            Some(v) => Some(self.bounded(&path.key(min_key), "port", v, 65535)?),
            None => None,
        };
        let max = match max_v {
            Some(v) => Some(self.bounded(&path.key(max_key), "port", v, 65535)?),
            None => None,
        };
        match (min, max) {
            (None, None) => Some(PortRange::ANY),
            (Some(a), None) => Some(PortRange {
                min: a as u16,
                max: a as u16,
            }),
            (None, Some(_)) => {
                self.error(&path.key(max_key), format!("{max_key} without {min_key}"));
                None
            }
            (Some(a), Some(b)) if a > b => {
                self.error(path, format!("{min_key} {a} > {max_key} {b}"));
                None
            }
            (Some(a), Some(b)) => Some(PortRange {
                min: a as u16,
                max: b as u16,
            }),
        }
    }

    fn networks(&mut self, top: &Obj) -> BTreeMap<String, u16> {
        let mut out = BTreeMap::new();
        let name = "networks";
        let path = Path::Root.key(name);
        let Some(v) = field(top, name) else {
            return out;
        };
        let Some(map) = self.object(&path, v) else {
            return out;
        };
        for (id, net) in map.iter() {
            let npath = path.key(id);
            let Some(obj) = self.checked(&npath, net, Kind::Network) else {
                continue;
            };
            if let Some(tag) = field(obj, "local_vlan") {
                if let Some(t) = self.bounded(&npath.key("local_vlan"), "local_vlan", tag, 4095) {
                    out.insert(id.to_string(), t as u16);
                }
            }
        }
        out
    }

    fn bindings<'v>(&mut self, top: &'v Obj<'v>) -> BTreeMap<&'v str, &'v Obj<'v>> {
        let mut out = BTreeMap::new();
        let name = "bindings";
        let path = Path::Root.key(name);
        if let Some(map) = field(top, name).and_then(|v| self.object(&path, v)) {
            for (id, b) in map.iter() {
                if let Some(obj) = self.checked(&path.key(id), b, Kind::Binding) {
                    out.insert(id, obj);
                }
            }
        }
        out
    }

    fn ports(
        &mut self,
        top: &Obj,
        shape: Shape,
        networks: &BTreeMap<String, u16>,
        bindings: &BTreeMap<&str, &Obj>,
    ) -> Vec<Port> {
        let key = if shape == Shape::Rpc {
            "devices"
        } else {
            "ports"
        };
        let top_path = Path::Root.key(key);
        let Some(v) = field(top, key) else {
            return Vec::new();
        };
        let entries: Vec<(Path, Option<&str>, &Node)> = match v {
            Node::Map(map) => map
                .iter()
                .map(|(id, p)| (top_path.key(id), Some(id), p))
                .collect(),
            Node::List(list) => list
                .iter()
                .enumerate()
                .map(|(i, p)| (top_path.index(i), None, p))
                .collect(),
            other => {
                self.error(
                    &top_path,
                    format!("expected a mapping or a list, got {}", kind(other)),
                );
                return Vec::new();
            }
        };
        let mut ports: Vec<(Path, Port)> = Vec::with_capacity(entries.len());
        for (path, key_id, p) in entries {
            if let Some(port) = self.port(&path, key_id, p, networks, bindings) {
                ports.push((path, port));
            }
        }
        // Of two ports with one id, the one with the greater path (as text) is the duplicate.
        ports.sort_by(|a, b| {
            a.1.id
                .cmp(&b.1.id)
                .then_with(|| a.0.render().cmp(&b.0.render()))
        });
        let mut out: Vec<Port> = Vec::with_capacity(ports.len());
        for (path, port) in ports {
            if out.last().is_some_and(|last| last.id == port.id) {
                self.error(&path, format!("duplicate port id {:?}", port.id));
                continue;
            }
            out.push(port);
        }
        out
    }

    fn port(
        &mut self,
        path: &Path,
        key_id: Option<&str>,
        v: &Node,
        networks: &BTreeMap<String, u16>,
        bindings: &BTreeMap<&str, &Obj>,
    ) -> Option<Port> {
        let before = self.issues.len();
        let obj = self.checked(path, v, Kind::Port)?;
        let id = match (field(obj, "id"), key_id) {
            (Some(i), key) => {
                let id = self.string(&path.key("id"), i)?;
                if key.is_some_and(|k| k != id) {
                    self.error(
                        &path.key("id"),
                        format!("id {id:?} differs from the key it is listed under"),
                    );
                }
                id.to_string()
            }
            (None, Some(key)) => key.to_string(),
            (None, None) => {
                self.error(path, "a port needs an id");
                return None;
            }
        };
        let mac = match field(obj, "mac_address") {
            None => {
                self.error(path, "mac_address is required");
                None
            }
            Some(m) => {
                let mpath = &path.key("mac_address");
                self.string(mpath, m).and_then(|s| match s.parse::<Mac>() {
                    Ok(mac) => Some(mac),
                    Err(e) => {
                        self.error(mpath, e);
                        None
                    }
                })
            }
        };
        let fixed_ips = self.fixed_ips(path, obj);
        let pairs = self.address_pairs(path, obj, mac);
        let port_security_enabled = match field(obj, "port_security_enabled") {
            Some(b) => self
                .boolean(&path.key("port_security_enabled"), b)
                .unwrap_or(true),
            None => true,
        };
        let mut security_groups = Vec::new();
        if let Some(sg) = field(obj, "security_groups") {
            let spath = &path.key("security_groups");
            if let Some(list) = self.list(spath, sg) {
                for (i, g) in list.iter().enumerate() {
                    if let Some(s) = self.string(&spath.index(i), g) {
                        security_groups.push(s.to_string());
                    }
                }
            }
        }
        security_groups.sort_unstable();
        security_groups.dedup();
        let device_owner = field(obj, "device_owner")
            .and_then(|d| self.string(&path.key("device_owner"), d))
            .unwrap_or_default()
            .to_string();
        let network_id = field(obj, "network_id")
            .and_then(|n| self.string(&path.key("network_id"), n))
            .map(str::to_string);
        let binding = bindings.get(id.as_str()).copied();
        let bindings_path = Path::Root.key("bindings");
        let binding_path = bindings_path.key(&id);
        let bound = |key| bound_field(binding, &binding_path, obj, path, key);
        let ofport = match bound("ofport") {
            Some((p, Node::List(a))) if a.is_empty() => {
                self.error(&p, "ofport [] : the port is not on the bridge yet");
                None
            }
            Some((p, v)) => match self.integer(&p, v) {
                Some(n) if (1..=0xfeff).contains(&n) => Some(n as u32),
                Some(-1) => {
                    self.error(&p, "ofport -1: the port is not ready on the bridge");
                    None
                }
                Some(n) => {
                    self.error(&p, format!("ofport {n} outside 1-65279"));
                    None
                }
                None => None,
            },
            None => None,
        };
        let local_vlan = match bound("local_vlan") {
            Some((p, v)) => self.bounded(&p, "local_vlan", v, 4095).map(|n| n as u16),
            None => network_id.as_ref().and_then(|n| networks.get(n).copied()),
        };
        let representor = match bound("representor") {
            Some((p, v)) => self.bounded(&p, "representor", v, 65535).map(|n| n as u16),
            None => None,
        };
        if self.issues.len() != before {
            return None;
        }
        Some(Port {
            id,
            mac: mac?,
            fixed_ips,
            allowed_address_pairs: pairs,
            port_security_enabled,
            security_groups,
            device_owner,
            network_id,
            ofport,
            local_vlan,
            representor,
        })
    }

    fn fixed_ips(&mut self, path: &Path, obj: &Obj) -> Vec<IpAddr> {
        let mut out = Vec::new();
        let fpath = &path.key("fixed_ips");
        let Some(list) = field(obj, "fixed_ips").and_then(|v| self.list(fpath, v)) else {
            return out;
        };
        for (i, entry) in list.iter().enumerate() {
            let ipath = &fpath.index(i);
            let text = match entry {
                Node::Map(m) => {
                    self.check_keys(ipath, m, Kind::FixedIp);
                    match field(m, "ip_address") {
                        Some(v) => self.string(&ipath.key("ip_address"), v),
                        None => {
                            self.error(ipath, "a fixed IP needs ip_address");
                            None
                        }
                    }
                }
                other => self.string(ipath, other),
            };
            if let Some(t) = text {
                match t.parse::<IpAddr>() {
                    Ok(ip) => out.push(ip),
                    Err(_) => self.error(ipath, format!("malformed IP address {t:?}")),
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn address_pairs(&mut self, path: &Path, obj: &Obj, port_mac: Option<Mac>) -> Vec<AddressPair> {
        let mut out = Vec::new();
        let apath = &path.key("allowed_address_pairs");
        let Some(list) = field(obj, "allowed_address_pairs").and_then(|v| self.list(apath, v))
        else {
            return out;
        };
        for (i, entry) in list.iter().enumerate() {
            let ppath = &apath.index(i);
            let Some(pair) = self.checked(ppath, entry, Kind::Pair) else {
                continue;
            };
            let net = match field(pair, "ip_address") {
                None => {
                    self.error(ppath, "an allowed address pair needs ip_address");
                    None
                }
                Some(v) => {
                    let ipath = &ppath.key("ip_address");
                    self.string(ipath, v).and_then(|t| match parse_net(t) {
                        Ok(n) => Some(n.trunc()),
                        Err(e) => {
                            self.error(ipath, e);
                            None
                        }
                    })
                }
            };
            let mac = match field(pair, "mac_address") {
                None => port_mac,
                Some(v) => {
                    let mpath = &ppath.key("mac_address");
                    self.string(mpath, v).and_then(|t| match t.parse::<Mac>() {
                        Ok(m) => Some(m),
                        Err(e) => {
                            self.error(mpath, e);
                            None
                        }
                    })
                }
            };
            if let (Some(net), Some(mac)) = (net, mac) {
                out.push(AddressPair { net, mac });
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `{group: {"IPv4": [ip | cidr | [ip, mac|null]], "IPv6": [...]}}`; ethertype keys may
    /// be missing.
    fn members(&mut self, path: &Path, v: &Node, out: &mut BTreeMap<String, Members>) {
        let Some(map) = self.object(path, v) else {
            return;
        };
        for (id, per_family) in map.iter() {
            let gpath = path.key(id);
            let Some(families) = self.object(&gpath, per_family) else {
                continue;
            };
            let entry = out.entry(id.to_string()).or_default();
            let mut nets = std::mem::take(&mut entry.nets);
            for (family, list) in families.iter() {
                let fpath = gpath.key(family);
                let eth = match family {
                    "IPv4" => EtherType::V4,
                    "IPv6" => EtherType::V6,
                    other => {
                        self.error(
                            &fpath,
                            format!("unknown ethertype {other:?} (IPv4 or IPv6)"),
                        );
                        continue;
                    }
                };
                let Some(items) = self.list(&fpath, list) else {
                    continue;
                };
                for (i, item) in items.iter().enumerate() {
                    let ipath = &fpath.index(i);
                    let text = match item {
                        Node::List(pair) if !pair.is_empty() && pair.len() <= 2 => {
                            if let Some(m) = pair.get(1).filter(|m| !m.is_null()) {
                                if let Some(t) = self.string(&ipath.index(1), m) {
                                    if let Err(e) = t.parse::<Mac>() {
                                        self.error(&ipath.index(1), e);
                                    }
                                }
                            }
                            self.string(&ipath.index(0), &pair[0])
                        }
                        other => self.string(ipath, other),
                    };
                    let Some(text) = text else { continue };
                    match parse_net(text) {
                        Ok(net) if EtherType::of_net(&net) == eth => nets.push(net.trunc()),
                        Ok(_) => self.error(ipath, format!("{text} is not {}", eth.as_str())),
                        Err(e) => self.error(ipath, e),
                    }
                }
            }
            nets.sort_unstable();
            nets.dedup();
            entry.nets = nets;
        }
    }

    /// `{id: [cidr, ...]}` or `{id: {"addresses": [cidr, ...]}}`.
    fn address_groups(&mut self, v: &Node, out: &mut BTreeMap<String, Members>) {
        let path = Path::Root.key("address_groups");
        let Some(map) = self.object(&path, v) else {
            return;
        };
        for (id, entry) in map.iter() {
            let gpath = path.key(id);
            let (list, lpath) = match entry {
                Node::Map(o) => {
                    self.check_keys(&gpath, o, Kind::AddressGroup);
                    match field(o, "addresses") {
                        Some(l) => (l, gpath.key("addresses")),
                        None => {
                            self.error(&gpath, "an address group needs addresses");
                            continue;
                        }
                    }
                }
                other => (other, gpath),
            };
            let Some(items) = self.list(&lpath, list) else {
                continue;
            };
            let mut nets = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let ipath = &lpath.index(i);
                if let Some(t) = self.string(ipath, item) {
                    match parse_net(t) {
                        Ok(n) => nets.push(n.trunc()),
                        Err(e) => self.error(ipath, e),
                    }
                }
            }
            let entry = out.entry(id.to_string()).or_default();
            entry.nets.extend(nets);
            entry.nets.sort_unstable();
            entry.nets.dedup();
        }
    }
}

/// A field of a port that its `bindings` entry may override, with where it was found.
fn bound_field<'a>(
    binding: Option<&'a Obj<'a>>,
    binding_path: &'a Path<'a>,
    port: &'a Obj<'a>,
    port_path: &'a Path<'a>,
    key: &'a str,
) -> Option<(Path<'a>, &'a Node<'a>)> {
    match binding.and_then(|b| field(b, key)) {
        Some(v) => Some((binding_path.key(key), v)),
        None => field(port, key).map(|v| (port_path.key(key), v)),
    }
}

/// A CIDR, or a bare address read as a host prefix.
pub(crate) fn parse_net(text: &str) -> std::result::Result<IpNet, String> {
    let text = text.trim();
    if text.contains('/') {
        text.parse::<IpNet>()
            .map_err(|_| format!("malformed CIDR {text:?}"))
    } else {
        text.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("malformed IP address {text:?}"))
    }
}

fn describe(v: &Node) -> String {
    match v {
        Node::Str(s) => format!("{s:?}"),
        Node::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

/// Neutron's payload merges the members of remote security groups and of address groups
/// into `sg_member_ips`, keyed by UUIDs that cannot collide; an address group a rule names
/// finds its prefixes there.
fn share_rpc_member_ips(model: &mut Model) {
    let referenced: BTreeSet<&String> = model
        .groups
        .values()
        .flat_map(|g| g.rules.iter())
        .filter_map(|r| match &r.remote {
            Remote::AddressGroup(id) => Some(id),
            _ => None,
        })
        .collect();
    for id in referenced {
        if let Some(members) = model.members.get(id) {
            model
                .address_groups
                .entry(id.clone())
                .or_insert_with(|| members.clone());
        }
    }
}

/// In the documented model, a remote group without explicit `members` stands for the
/// addresses of the model's own ports in that group (fixed IPs and allowed address pairs).
fn derive_members_from_ports(model: &mut Model) {
    let referenced: BTreeSet<String> = model
        .groups
        .values()
        .flat_map(|g| g.rules.iter())
        .filter_map(|r| match &r.remote {
            Remote::Group(id) => Some(id.clone()),
            _ => None,
        })
        .filter(|id| !model.members.contains_key(id) && model.groups.contains_key(id))
        .collect();
    for id in referenced {
        let mut nets: Vec<IpNet> = model
            .ports
            .iter()
            .filter(|p| p.security_groups.binary_search(&id).is_ok())
            .flat_map(|p| p.source_bindings().into_iter().map(|b| b.net))
            .collect();
        nets.sort_unstable();
        nets.dedup();
        model.members.insert(id, Members { nets });
    }
}
