//! Driver profiles: what each rte_flow driver accepts, as a small declared table that the
//! layout obeys. Facts come from `../shared/DESIGN.md` §4 (DPDK guides, OVS offload code);
//! where a number is our own conservative choice rather than a documented limit, the field
//! says so.

/// How a profile names ethdev ports in items and actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortNaming {
    /// `represented_port ethdev_port_id` (item and action) and `port_representor port_id`
    /// (action: to the application, i.e. the software switch).
    Representor,
    /// The older `port_id id` item and action (Napatech ntnic). There is no "to the
    /// application" action: software-bound traffic goes to the `software_port` with `port_id`.
    PortId,
}

/// One driver's capabilities and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The name used by `--profile`.
    pub name: &'static str,
    /// One line for `--help` and the report.
    pub summary: &'static str,
    /// `last` (ranges) on TCP/UDP/SCTP ports; otherwise ranges become masked prefixes.
    pub ranges: bool,
    /// The `count` action.
    pub count: bool,
    /// Port items and actions.
    pub ports: PortNaming,
    /// The `arp_eth_ipv4` item; without it ARP from a VM goes to software (never allowed
    /// unchecked).
    pub arp_item: bool,
    /// The `icmp6_nd_na` item (neighbour advertisement target); without it advertisements from
    /// a VM go to software. Other ND types are checked by source address and ICMPv6 type,
    /// which every profile matches.
    pub nd_items: bool,
    /// The `sctp` item; without it SCTP port rules go to software.
    pub sctp_item: bool,
    /// Highest priority value usable in group 0 (0 is the highest precedence).
    pub max_priority_root: u32,
    /// Highest priority value usable in other groups.
    pub max_priority: u32,
    /// Groups other than 0 are exact-match tables holding one mask recipe each: rules of
    /// different masks go to chained groups (the catch-all is the table's miss entry).
    pub one_mask_per_group: bool,
    /// Most rules in group 0.
    pub max_rules_root: Option<usize>,
    /// Most rules in all.
    pub max_rules: Option<usize>,
}

/// Every feature this backend can use: for drivers implementing the whole API, and for tests.
pub const FULL: Profile = Profile {
    name: "full",
    summary: "every feature: ranges with last, count, ARP/ND items, SCTP",
    ranges: true,
    count: true,
    ports: PortNaming::Representor,
    arp_item: true,
    nd_items: true,
    sctp_item: true,
    max_priority_root: 65_535,
    max_priority: 65_535,
    one_mask_per_group: false,
    max_rules_root: None,
    max_rules: None,
};

/// A portable default: no `last` (most drivers refuse ranges on L4 ports), everything else of
/// the common API.
pub const GENERIC: Profile = Profile {
    name: "generic",
    summary: "portable: masked port prefixes, count, representor items, ARP/ND items",
    ranges: false,
    ..FULL
};

/// NVIDIA mlx5 with software steering (`dv_flow_en=1`): transfer rules on the proxy, no `last`
/// on L4 ports, no ARP/ND items, priorities 0..21843 outside the root table. We use at most
/// three priority levels in the root table (group 0), a conservative choice of ours.
pub const MLX5: Profile = Profile {
    name: "mlx5",
    summary: "NVIDIA mlx5, software steering: no last, no ARP/ND/SCTP items, 3 root priorities",
    ranges: false,
    count: true,
    ports: PortNaming::Representor,
    arp_item: false,
    nd_items: false,
    sctp_item: false,
    max_priority_root: 2,
    max_priority: 21_843,
    one_mask_per_group: false,
    max_rules_root: None,
    max_rules: None,
};

/// Napatech ntnic (DPDK >= 24.11): no `count`, `port_id` instead of representor items and
/// actions, groups >= 1 are exact-match tables with one mask recipe each, at most 8192 TCAM
/// rules in group 0. The priority bound (0..7) is our conservative choice: the layout needs
/// two levels per exact-match group and three in group 0.
pub const NTNIC: Profile = Profile {
    name: "ntnic",
    summary: "Napatech ntnic: port_id, no count, no ARP/ND items, one mask per group >= 1, \
              8192 rules in group 0",
    ranges: false,
    count: false,
    ports: PortNaming::PortId,
    arp_item: false,
    nd_items: false,
    sctp_item: true,
    max_priority_root: 7,
    max_priority: 7,
    one_mask_per_group: true,
    max_rules_root: Some(8192),
    max_rules: None,
};

/// All profiles, default first.
pub const PROFILES: [&Profile; 4] = [&GENERIC, &MLX5, &NTNIC, &FULL];

/// The profile of a name.
pub fn by_name(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().copied().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(by_name("mlx5").unwrap().max_priority, 21_843);
        assert!(by_name("ntnic").unwrap().one_mask_per_group);
        assert!(by_name("bogus").is_none());
        assert!(!by_name("generic").unwrap().ranges && by_name("full").unwrap().ranges);
    }
}
