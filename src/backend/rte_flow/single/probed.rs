//! A probe's result applied to a driver's profile: every rule shape the driver refused to
//! create (`python/sgflows/rte_probe.py` tries each on the port) takes away what the shape
//! needs, so the rendering sends that traffic to software. The profile is the default; the
//! probe confirms or narrows it, never widens it (a created shape the profile does not claim
//! changes nothing).

use super::PortDriver;
use crate::error::{Error, Result};

/// What refusing one probed shape takes away from the driver.
type Effect = fn(&mut PortDriver);

/// The probe's shapes (names as in `rte_probe.SHAPES`) and what each refusal removes. A shape
/// combining several fields removes all of them: the probe cannot tell which one failed.
const EFFECTS: &[(&str, Effect)] = &[
    ("eth src exact", |d| d.eth_src = false),
    ("eth type exact", |d| d.ether_type = false),
    ("eth dst group mask", |d| d.eth_dst_mask = false),
    ("ipv4 prefix/exact/proto", |d| d.ip_addresses = false),
    ("ipv6 prefix/proto", |d| d.ip_addresses = false),
    ("tcp exact", |d| d.l4_ports = false),
    ("udp src+dst exact", |d| d.l4_ports = false),
    ("tcp masked port", |d| d.masked_ports = false),
    ("udp port range (last)", |d| d.last = false),
    ("sctp", |d| d.sctp = false),
    ("icmp", |d| d.icmp = false),
    ("icmp6", |d| d.icmp6 = false),
    ("icmp6_nd_na", |d| d.nd = false),
    ("arp_eth_ipv4", |d| d.arp = false),
    ("queue action", |d| d.queue = false),
    ("passthru action", |d| d.passthru = false),
    // The single-port rendering is flat (group 0), without count or jump.
    ("count action", |_| {}),
    ("jump action", |_| {}),
    ("group 15", |_| {}),
    ("group 16", |_| {}),
    // Priorities: the caller passes the highest one the probe created (`max_priority`).
    ("priority 4094", |_| {}),
    ("priority 4095", |_| {}),
    ("egress drop", |d| d.egress = false),
    ("egress passthru", |d| d.passthru = false),
];

/// The names of the shapes `narrow` understands, in the probe's order.
pub const PROBE_SHAPES: [&str; EFFECTS.len()] = {
    let mut names = [""; EFFECTS.len()];
    let mut i = 0;
    while i < EFFECTS.len() {
        names[i] = EFFECTS[i].0;
        i += 1;
    }
    names
};

/// The driver narrowed by the shapes a probe refused, and by the highest priority it created
/// (`None`: the profile's bound stands). An unknown shape is an error: a probe of another
/// version must not be read as confirming what it did not try.
pub fn narrow(
    driver: &PortDriver,
    refused: &[String],
    max_priority: Option<u32>,
) -> Result<PortDriver> {
    let mut out = *driver;
    for shape in refused {
        let Some((_, effect)) = EFFECTS.iter().find(|(name, _)| name == shape) else {
            return Err(Error::Option {
                name: "refused",
                message: format!(
                    "unknown probed shape {shape:?} (known: {})",
                    PROBE_SHAPES.join(", ")
                ),
            });
        };
        effect(&mut out);
    }
    if let Some(max) = max_priority {
        out.max_priority = out.max_priority.min(max);
    }
    Ok(out)
}
