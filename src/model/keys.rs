//! The keys each kind of object may carry, per input shape, and what to do with the others.
//!
//! The reader only looks up the keys it knows, so without this check a misspelt restriction
//! (`remote_ip_prefx`, `protocl`) would silently widen a rule. Every object the reader walks
//! is checked against its table: keys it *uses*, and keys it *knows but ignores* (fields
//! Neutron sends that say nothing the filter needs). Anything else is unknown:
//!
//! - in the documented model an error (with the nearest known key as a hint);
//! - in Neutron's RPC payload only a warning: inside the Neutron driver a refused batch would
//!   leave new ports on the agent's unfiltered NORMAL path, so an unknown field must never
//!   stop the compile. A warning about a key that looks like a restriction says so loudly.
//!
//! Where each tolerated RPC key comes from is noted next to it (paths in openstack/neutron,
//! read at commit 2131d26f, Aug 2026); `docs/model.md` has the same table for users.

/// What to do with a key that is neither used nor known for its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownKeys {
    /// Refuse the model (the documented model's default).
    Error,
    /// Accept it with a warning in the result (the RPC payload's default).
    Warn,
    /// Accept it silently.
    Ignore,
}

impl UnknownKeys {
    /// Reads `error`, `warn` or `ignore`.
    pub fn parse(name: &str) -> Option<UnknownKeys> {
        match name {
            "error" => Some(UnknownKeys::Error),
            "warn" => Some(UnknownKeys::Warn),
            "ignore" => Some(UnknownKeys::Ignore),
            _ => None,
        }
    }
}

/// The kinds of object the reader walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The top-level mapping.
    Top,
    /// A security group given as a mapping.
    Group,
    /// A rule.
    Rule,
    /// A port (a device in the RPC payload).
    Port,
    /// A `fixed_ips` entry given as a mapping.
    FixedIp,
    /// An `allowed_address_pairs` entry.
    Pair,
    /// A `bindings` entry.
    Binding,
    /// A `networks` entry.
    Network,
    /// An `address_groups` entry given as a mapping.
    AddressGroup,
    /// The `rte_flow` section.
    RteFlow,
}

impl Kind {
    /// Every kind, in the order `docs/model.md` lists them.
    pub const ALL: [Kind; 10] = [
        Kind::Top,
        Kind::Group,
        Kind::Rule,
        Kind::Port,
        Kind::FixedIp,
        Kind::Pair,
        Kind::Binding,
        Kind::Network,
        Kind::AddressGroup,
        Kind::RteFlow,
    ];

    /// The kind's name in `docs/model.md`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Top => "top level",
            Kind::Group => "security group",
            Kind::Rule => "rule",
            Kind::Port => "port",
            Kind::FixedIp => "fixed IP",
            Kind::Pair => "address pair",
            Kind::Binding => "binding",
            Kind::Network => "network",
            Kind::AddressGroup => "address group",
            Kind::RteFlow => "rte_flow",
        }
    }
}

/// Keys of one kind of object in one input shape.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Keys the reader reads.
    pub used: &'static [&'static str],
    /// Keys accepted without a word and not read.
    pub ignored: &'static [&'static str],
}

impl Table {
    /// Whether an object of this kind may carry `key`.
    pub fn knows(&self, key: &str) -> bool {
        self.used.contains(&key) || self.ignored.contains(&key)
    }
}

const TOP_USED: &[&str] = &[
    "security_groups",
    "ports",
    "devices",
    "members",
    "sg_member_ips",
    "address_groups",
    "networks",
    "bindings",
    "security_group_stateful",
    // Read by the rte_flow backend (`ModelPorts::from_value`); its keys are checked here.
    "rte_flow",
];

const GROUP_USED: &[&str] = &["id", "rules", "stateful"];

const RULE_USED: &[&str] = &[
    "id",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "source_port_range_min",
    "source_port_range_max",
    "remote_ip_prefix",
    "source_ip_prefix",
    "dest_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "stateful",
];

const PORT_USED: &[&str] = &[
    "id",
    "mac_address",
    "fixed_ips",
    "allowed_address_pairs",
    "port_security_enabled",
    "security_groups",
    "device_owner",
    "network_id",
    "ofport",
    "local_vlan",
    "representor",
];

const BINDING_USED: &[&str] = &["ofport", "local_vlan", "representor"];

/// Fields of a Neutron API security group rule (`neutron/db/securitygroups_db.py`
/// `_make_security_group_rule_dict`, plus the standard attributes every resource has), so
/// that rules copied from `openstack security group rule show -f json` read as they are.
const API_RULE_FIELDS: &[&str] = &[
    "project_id",
    "tenant_id",
    "security_group_id",
    "normalized_cidr",
    "standard_attr_id",
    "belongs_to_default_sg",
    "description",
    "created_at",
    "updated_at",
    "revision_number",
];

/// Fields of a Neutron API security group the filter does not need.
const API_GROUP_FIELDS: &[&str] = &[
    "name",
    "project_id",
    "tenant_id",
    "shared",
    "description",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
];

/// Neutron API port fields that say nothing about filtering
/// (`neutron/db/db_base_plugin_common.py` `_make_port_dict`).
const API_PORT_FIELDS: &[&str] = &[
    "name",
    "project_id",
    "tenant_id",
    "admin_state_up",
    "status",
    "device_id",
    "description",
    // Where the port is bound, for the reference controller (`agent/controller.py` serves a
    // host only its own ports): placement, not filtering.
    "binding_host",
    "binding:host_id",
    "bindings",
];

/// Top-level keys Neutron's RPC payload may carry besides the ones we read.
const RPC_TOP_IGNORED: &[&str] = &[
    // tests/data/neutron-rpc-payload.json: a note for readers of the fixture.
    "_comment",
];

/// Rule keys of the RPC payload we do not read.
const RPC_RULE_IGNORED: &[&str] = &[
    // neutron/db/securitygroups_rpc_base.py `security_group_rules_for_ports` (the older
    // per-port rule list) and tests/data/neutron-rpc-payload.json.
    "security_group_id",
];

/// Device (port) keys of the RPC payload we do not read.
const RPC_PORT_IGNORED: &[&str] = &[
    // neutron/db/db_base_plugin_common.py `_make_port_dict` (server side, ML2).
    "name",
    "project_id",
    "admin_state_up",
    "status",
    "device_id",
    "standard_attr_id",
    // neutron/plugins/ml2/db.py `make_port_dict_with_security_groups` and
    // neutron/api/rpc/handlers/securitygroups_rpc.py `_get_devices_info` (agent-side cache);
    // `security_group_rules` holds the provider rules (DHCP, RA) the pipeline has built in.
    "security_group_rules",
    "security_group_source_groups",
    "security_group_remote_address_groups",
    // neutron/plugins/ml2/plugin.py `get_ports_from_devices`, and `_get_devices_info`.
    "device",
    // neutron/plugins/ml2/plugin.py `_update_port_dict_binding` (portbindings extension);
    // binding:host_id is also in tests/data/neutron-rpc-payload.json.
    "binding:host_id",
    "binding:vif_type",
    "binding:vif_details",
    "binding:vnic_type",
    "binding:profile",
    // neutron/objects/ports.py `Port.fields`, through `NeutronObject.to_dict()`
    // (neutron/objects/base.py) in `_get_devices_info`.
    "bindings",
    "data_plane_status",
    "dhcp_options",
    "distributed_bindings",
    "dns",
    "hints",
    "security",
    "security_group_ids",
    "pvlan_type",
    "pvlan_community",
    "qos_policy_id",
    "qos_network_policy_id",
    "binding_levels",
    "numa_affinity_policy",
    "device_profile",
    "hardware_offload_type",
    "trusted",
    // neutron/objects/base.py: `tenant_id`, the extra field of objects with a project_id.
    "tenant_id",
    // neutron_lib/objects/extensions/standardattributes.py: standard attributes every
    // Port object carries.
    "description",
    "created_at",
    "updated_at",
    "revision_number",
];

/// `fixed_ips` entries as objects: `_make_port_dict` gives `subnet_id`; the `IPAllocation`
/// object (neutron/objects/ports.py) also `port_id` and `network_id`.
const FIXED_IP_IGNORED: &[&str] = &["subnet_id", "port_id", "network_id"];

/// `allowed_address_pairs` entries: the `AllowedAddressPair` object
/// (neutron/objects/port/extensions/allowedaddresspairs.py) adds `port_id`.
const PAIR_IGNORED: &[&str] = &["port_id"];

/// The key table of `kind` in the documented model (`rpc` false) or the RPC payload.
pub fn table(kind: Kind, rpc: bool) -> Table {
    let (used, ignored): (&'static [&'static str], &'static [&'static str]) = match kind {
        Kind::Top => (TOP_USED, if rpc { RPC_TOP_IGNORED } else { &[] }),
        Kind::Group => (GROUP_USED, API_GROUP_FIELDS),
        Kind::Rule => (
            RULE_USED,
            if rpc {
                RPC_RULE_IGNORED
            } else {
                API_RULE_FIELDS
            },
        ),
        Kind::Port => (
            PORT_USED,
            if rpc {
                RPC_PORT_IGNORED
            } else {
                API_PORT_FIELDS
            },
        ),
        Kind::FixedIp => (&["ip_address"], FIXED_IP_IGNORED),
        Kind::Pair => (&["ip_address", "mac_address"], PAIR_IGNORED),
        Kind::Binding => (BINDING_USED, &[]),
        Kind::Network => (&["local_vlan"], &[]),
        Kind::AddressGroup => (&["addresses"], &[]),
        Kind::RteFlow => (&["proxy_port", "uplink_port", "software_port"], &[]),
    };
    Table { used, ignored }
}

/// Words that name a restriction: an unknown key containing one probably meant to narrow
/// what a rule admits.
const RESTRICTION_WORDS: &[&str] = &[
    "prefix",
    "remote",
    "protocol",
    "port_range",
    "ethertype",
    "direction",
];

/// An unknown key of an object, with what the reader makes of it.
pub(super) struct Unknown {
    /// The key as given.
    pub key: String,
    /// The nearest key the object may carry, when one is close.
    pub nearest: Option<&'static str>,
    /// Whether ignoring the key may widen what the model admits (close to a key we use, or
    /// naming a restriction).
    pub dangerous: bool,
}

impl Unknown {
    /// The error text: `unknown key "remote_ip_prefx" (did you mean "remote_ip_prefix"?)`.
    pub fn error_message(&self) -> String {
        match self.nearest {
            Some(n) => format!("unknown key {:?} (did you mean {n:?}?)", self.key),
            None => format!("unknown key {:?}", self.key),
        }
    }

    /// The warning text; loud when ignoring the key may open more than was meant.
    pub fn warning_message(&self) -> String {
        let hint = match self.nearest {
            Some(n) => format!(" (did you mean {n:?}?)"),
            None => String::new(),
        };
        if self.dangerous {
            format!(
                "UNKNOWN KEY {:?} IGNORED{hint}: it looks like a restriction, and the object is \
                 read without it, so it may admit more than intended",
                self.key
            )
        } else {
            format!("unknown key {:?} ignored{hint}", self.key)
        }
    }
}

/// The keys of `obj` that `table` neither uses nor knows, in key order.
pub(super) fn unknown_keys<'k>(keys: impl Iterator<Item = &'k str>, table: &Table) -> Vec<Unknown> {
    keys.filter(|k| !table.knows(k))
        .map(|k| {
            let nearest = nearest(k, table);
            let lower = k.to_ascii_lowercase();
            let near_used = nearest.is_some_and(|n| table.used.contains(&n));
            let restriction = RESTRICTION_WORDS.iter().any(|w| lower.contains(w));
            Unknown {
                key: k.to_string(),
                nearest,
                dangerous: near_used || restriction,
            }
        })
        .collect()
}

/// The known key closest to `key` (ignoring case), if it is close enough to be a typo: at
/// most 1 edit for keys up to 4 characters, 2 up to 8, 3 beyond; failing that, the shortest
/// known key that starts with it or that it starts with (`remote_group` for
/// `remote_group_id`), from 4 characters on. Keys the reader uses win ties, so the hint
/// points at what matters.
fn nearest(key: &str, table: &Table) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    let allowed = match lower.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    let known = || table.used.iter().chain(table.ignored.iter()).copied();
    let by_edits = known()
        .map(|k| (distance(&lower, k), k))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k);
    by_edits.or_else(|| {
        known()
            .filter(|k| {
                let (short, long) = if k.len() < lower.len() {
                    (*k, lower.as_str())
                } else {
                    (lower.as_str(), *k)
                };
                short.len() >= 4 && long.starts_with(short)
            })
            .min_by_key(|k| k.len())
    })
}

/// Edit distance with adjacent transpositions (optimal string alignment), over characters.
pub(super) fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rolling rows: two back (for transpositions), previous, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits_and_transpositions() {
        assert_eq!(distance("remote_ip_prefx", "remote_ip_prefix"), 1);
        assert_eq!(distance("protocl", "protocol"), 1);
        assert_eq!(distance("protcool", "protocol"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn nearest_prefers_close_keys_and_gives_up_when_far() {
        let t = table(Kind::Rule, false);
        assert_eq!(nearest("remote_ip_prefx", &t), Some("remote_ip_prefix"));
        assert_eq!(nearest("Protocol", &t), Some("protocol"));
        assert_eq!(nearest("xyzzy", &t), None);
        assert_eq!(nearest("remote_group", &t), Some("remote_group_id"));
        assert_eq!(nearest("remote_ip_prefix_v4", &t), Some("remote_ip_prefix"));
        assert_eq!(
            nearest("uplink", &table(Kind::RteFlow, false)),
            Some("uplink_port")
        );
    }

    #[test]
    fn tables_have_no_overlap_between_used_and_ignored() {
        for rpc in [false, true] {
            for kind in Kind::ALL {
                let t = table(kind, rpc);
                for k in t.ignored {
                    assert!(!t.used.contains(k), "{kind:?} {k} both used and ignored");
                }
            }
        }
    }
}
