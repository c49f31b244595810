//! What each driver takes for plain (non-`transfer`) rules on one port: a declared table the
//! single-port rendering obeys. The `net_tap` figures were observed by creating rules in the
//! QEMU guest (`tests/rte_flow/test_testpmd.py`, DPDK 22.11, Debian kernel 6.1).

use super::super::profiles::{PortNaming, Profile, FULL};

/// One driver's capabilities for plain rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortDriver {
    /// The name used by `--profile`.
    pub name: &'static str,
    /// One line for `--help` and the report.
    pub summary: &'static str,
    /// Highest group number (the rendering is flat: everything in group 0).
    pub max_group: u32,
    /// Highest priority value.
    pub max_priority: u32,
    /// TCP/UDP ports with a partial mask; otherwise they become exact ports, or software.
    pub masked_ports: bool,
    /// `last` ranges on TCP/UDP ports.
    pub last: bool,
    /// The `icmp` item.
    pub icmp: bool,
    /// The `icmp6` item.
    pub icmp6: bool,
    /// The `sctp` item.
    pub sctp: bool,
    /// Rules with the `egress` attribute (traffic to the VM).
    pub egress: bool,
    /// The Ethernet source address (exact).
    pub eth_src: bool,
    /// Ethernet destinations with a partial mask (the group bit).
    pub eth_dst_mask: bool,
    /// The Ethernet type (exact) of non-IP matches.
    pub ether_type: bool,
    /// IPv4/IPv6 source and destination addresses (exact or prefix).
    pub ip_addresses: bool,
    /// TCP/UDP ports at all (exact); without them a port match goes to software.
    pub l4_ports: bool,
    /// The `arp_eth_ipv4` item.
    pub arp: bool,
    /// The `icmp6_nd_na` item.
    pub nd: bool,
    /// The `queue` action (from the VM: both the accept and the software queue).
    pub queue: bool,
    /// The `passthru` action (to the VM: accepted traffic).
    pub passthru: bool,
    /// The transfer profile the port's groups are laid out with first (its item set: what
    /// the layout must not emit at all, e.g. `arp_eth_ipv4`).
    pub transfer: &'static Profile,
}

/// The layout `net_tap` starts from: no ARP/ND/SCTP items, no ranges, no count.
const NET_TAP_LAYOUT: Profile = Profile {
    name: "net_tap",
    summary: "layout for net_tap: no ARP/ND/SCTP items, no last, no count",
    ranges: false,
    count: false,
    ports: PortNaming::Representor,
    arp_item: false,
    nd_items: false,
    sctp_item: false,
    max_priority_root: 65_535,
    max_priority: 65_535,
    one_mask_per_group: false,
    max_rules_root: None,
    max_rules: None,
};

/// DPDK's TAP driver (22.11): rules become TC flower filters. Groups ≤ 15, priorities ≤ 4094,
/// one fate action (drop, passthru, queue, rss), items eth/ipv4/ipv6/tcp/udp only, L4 ports
/// exact only, no `last`.
pub const NET_TAP: PortDriver = PortDriver {
    name: "net_tap",
    summary: "DPDK TAP (TC flower): eth/ipv4/ipv6/tcp/udp, exact L4 ports, priorities 0..4094",
    max_group: 15,
    max_priority: 4094,
    masked_ports: false,
    last: false,
    icmp: false,
    icmp6: false,
    sctp: false,
    egress: true,
    eth_src: true,
    eth_dst_mask: false,
    ether_type: true,
    ip_addresses: true,
    l4_ports: true,
    arp: false,
    nd: false,
    queue: true,
    passthru: true,
    transfer: &NET_TAP_LAYOUT,
};

/// Every item and feature the rendering can use: for drivers implementing the whole API,
/// and for tests.
pub const PORT_FULL: PortDriver = PortDriver {
    name: "full",
    summary: "every item, masked and ranged ports, priorities 0..65535",
    max_group: u32::MAX,
    max_priority: 65_535,
    masked_ports: true,
    last: true,
    icmp: true,
    icmp6: true,
    sctp: true,
    egress: true,
    eth_src: true,
    eth_dst_mask: true,
    ether_type: true,
    ip_addresses: true,
    l4_ports: true,
    arp: true,
    nd: true,
    queue: true,
    passthru: true,
    transfer: &FULL,
};

/// All single-port drivers, default first.
pub const PORT_DRIVERS: [&PortDriver; 2] = [&NET_TAP, &PORT_FULL];

/// The driver of a name.
pub fn by_name(name: &str) -> Option<&'static PortDriver> {
    PORT_DRIVERS.iter().copied().find(|d| d.name == name)
}
