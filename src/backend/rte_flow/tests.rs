//! Unit tests of the rte_flow backend on small models; testpmd and the interpreter of
//! rte_flow semantics are exercised from `tests/rte_flow/`.

use serde_json::json;

use super::*;
use crate::model::{parse_value, ParseOptions};

fn model(v: serde_json::Value) -> Model {
    parse_value(&v, &ParseOptions::default()).expect("valid model")
}

fn two_ports(stateful: bool) -> Model {
    model(json!({
        "security_groups": {"g": {"stateful": stateful, "rules": [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 1000, "port_range_max": 1999},
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 1500, "port_range_max": 1500},
            {"direction": "egress", "ethertype": "IPv4"},
            {"direction": "egress", "ethertype": "IPv6", "protocol": "icmp",
             "port_range_min": 128, "port_range_max": 0},
        ]}},
        "ports": [
            {"id": "a", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.1", "2001:db8::1"],
             "security_groups": ["g"], "representor": 1},
            {"id": "b", "mac_address": "fa:16:3e:00:00:02", "fixed_ips": ["10.0.0.2"],
             "security_groups": [], "port_security_enabled": false, "representor": 2},
        ]
    }))
}

fn opts(profile: &str) -> RteFlowOptions {
    RteFlowOptions {
        profile: profiles::by_name(profile).unwrap(),
        ..RteFlowOptions::default()
    }
}

/// No two rules of a group that can match one packet share a priority; every group ends in a
/// catch-all; every jump lands in a group that exists.
fn check_invariants(c: &RteCompiled) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_group: BTreeMap<u32, Vec<&RteRule>> = BTreeMap::new();
    for r in &c.rules {
        by_group.entry(r.group).or_default().push(r);
    }
    for (g, rules) in &by_group {
        let last = rules.iter().max_by_key(|r| r.priority).unwrap();
        assert_eq!(last.pattern, Pattern::any(), "group {g} lacks a catch-all");
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[i + 1..] {
                if a.priority == b.priority {
                    assert!(
                        !pattern::Flat::of(&a.pattern).overlaps(&pattern::Flat::of(&b.pattern)),
                        "overlap in group {g} at priority {}: {a:?} / {b:?}",
                        a.priority
                    );
                }
            }
        }
    }
    let groups: BTreeSet<u32> = by_group.keys().copied().collect();
    for r in &c.rules {
        if let Action::Jump(g) = r.action {
            assert!(groups.contains(&g), "jump to missing group {g}");
            assert!(g > 0, "nothing jumps back to group 0");
        }
    }
}

#[test]
fn stateless_port_fully_offloaded() {
    let c = compile_rte_flow(&two_ports(false), &opts("generic")).unwrap();
    check_invariants(&c);
    let a = &c.report.ports[0];
    assert_eq!(a.mode, PortMode::Offloaded);
    assert!(a.rules.iter().all(|r| r.status == RuleStatus::Offloaded));
    // 1000-1999 covers the 1500 rule: the rule algebra drops it before lowering (placement
    // finds nothing left to leave out), and the report still lists it, enforced by g[0].
    assert_eq!(c.stats.per_rule.get("g[1]"), None);
    assert_eq!(c.stats.redundant, 0);
    assert!(a.rules.iter().any(|r| r.rule.to_string() == "g[1]"));
    let text = c.to_testpmd();
    assert!(text.contains(
        "flow create 0 group 0 priority 0 transfer pattern represented_port ethdev_port_id is 1 / eth / end actions count / jump group 512 / end"
    ), "{text}");
    // Port b is unfiltered: straight to software from its representor, straight to it from the
    // uplink.
    assert!(text.contains("represented_port ethdev_port_id is 2 / eth / end actions count / port_representor port_id 2 / end"));
    assert!(text.contains("represented_port ethdev_port_id is 0 / eth dst is fa:16:3e:00:00:02 / end actions count / represented_port ethdev_port_id 2 / end"));
    assert!(text.contains("icmp6 type is 128 code is 0 / end"));
    assert!(text.contains("arp_eth_ipv4 sha is fa:16:3e:00:00:01 spa is 10.0.0.1"));
    assert!(text.contains("icmp6_nd_na target_addr is 2001:db8::1"));
    assert_eq!(text.lines().count(), c.rules.len());
}

/// Issue 11's implicit traffic, as the rules say it (the interpreter in `tests/rte_flow/`
/// checks the verdicts).
#[test]
fn implicit_traffic_of_pipeline_v2() {
    let c = compile_rte_flow(&two_ports(false), &opts("generic")).unwrap();
    check_invariants(&c);
    let text = c.to_testpmd();
    let to_sw = "actions count / port_representor port_id 1 / end";
    // RARP from the port's MAC.
    assert!(text.contains(&format!(
        "eth src is fa:16:3e:00:00:01 type is 0x8035 / end {to_sw}"
    )));
    // DHCP client traffic only from 0.0.0.0 and the port's addresses.
    let dhcp: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("udp src is 68 dst is 67"))
        .collect();
    assert_eq!(dhcp.len(), 2, "{dhcp:?}");
    assert!(dhcp.iter().any(|l| l.contains("ipv4 src is 0.0.0.0 /")));
    assert!(dhcp.iter().any(|l| l.contains("ipv4 src is 10.0.0.1 /")));
    assert!(text
        .lines()
        .filter(|l| l.contains("udp src is 546 dst is 547"))
        .all(|l| l.contains("ipv6 src is 2001:db8::1 /") || l.contains("ipv6 src is fe80::")));
    // Router solicitation from ::; redirects left to the rules.
    assert!(text.contains("eth src is fa:16:3e:00:00:01 / ipv6 src is :: / icmp6 type is 133 /"));
    assert!(!text.contains("icmp6 type is 137"));
    // MLD to the VM: queries only.
    let to_vm = "represented_port ethdev_port_id 1 / end";
    for report in [131, 132, 143] {
        assert!(!text
            .lines()
            .any(|l| l.contains(&format!("icmp6 type is {report} /")) && l.contains(to_vm)));
    }
    assert!(text
        .lines()
        .any(|l| l.contains("icmp6 type is 130 /") && l.contains(to_vm)));
}

/// `icmp6_nd_na` matches the target whatever the ICMPv6 code, and a type-136 packet with a
/// code other than 0 is no advertisement (Open vSwitch parses no target, the evaluator drops
/// it): drops for every such code come before the target checks, in the same group.
#[test]
fn advertisements_with_a_code_are_dropped_before_the_target_check() {
    let na = |code: u8| {
        pattern::Flat::of(&Pattern {
            ip: Some(pattern::Ip {
                family: crate::model::EtherType::V6,
                src: None,
                dst: None,
                proto: None,
            }),
            upper: Some(pattern::Upper::Icmp {
                icmp_type: Some(136),
                code: Some(pattern::CodeMatch::exact(code)),
            }),
            ..Pattern::default()
        })
    };
    for profile in ["generic", "full"] {
        let c = compile_rte_flow(&two_ports(false), &opts(profile)).unwrap();
        check_invariants(&c);
        let target_checks: Vec<&RteRule> = c
            .rules
            .iter()
            .filter(|r| matches!(r.pattern.upper, Some(pattern::Upper::NdNa { .. })))
            .collect();
        assert!(!target_checks.is_empty(), "{profile}");
        let guards: Vec<&RteRule> = c
            .rules
            .iter()
            .filter(|r| {
                matches!(
                    r.pattern.upper,
                    Some(pattern::Upper::Icmp {
                        icmp_type: Some(136),
                        code: Some(_)
                    })
                )
            })
            .collect();
        for t in &target_checks {
            assert!(guards.iter().all(|g| g.group == t.group
                && g.priority < t.priority
                && g.action == Action::Drop));
        }
        for code in 0..=255u8 {
            let dropped = guards
                .iter()
                .filter(|g| pattern::Flat::of(&g.pattern).contains(&na(code)))
                .count();
            assert_eq!(dropped, usize::from(code != 0), "{profile}: code {code}");
        }
        assert!(c.to_testpmd().contains(
            "eth / ipv6 / icmp6 type is 136 code spec 128 code mask 0x80 / end actions count / drop / end"
        ));
    }
    // Profiles without the item send every advertisement to software, which checks the code.
    let c = compile_rte_flow(&two_ports(false), &opts("mlx5")).unwrap();
    assert!(!c.to_testpmd().contains("icmp6 type is 136 code"));
}

#[test]
fn stateful_port_offloads_base_only() {
    let c = compile_rte_flow(&two_ports(true), &opts("generic")).unwrap();
    check_invariants(&c);
    let a = &c.report.ports[0];
    assert_eq!(a.mode, PortMode::Partial);
    assert!(a
        .rules
        .iter()
        .all(|r| r.status == RuleStatus::Software(Reason::StatefulConntrack)));
    assert!(c.rules.iter().all(|r| r.kind != Kind::Rule));
    // IP from a permitted source goes to software on the VM's representor.
    assert!(c
        .rules
        .iter()
        .any(|r| r.kind == Kind::IpSource && r.action == Action::ToSoftware(1)));
}

#[test]
fn mlx5_sends_arp_and_na_to_software() {
    let c = compile_rte_flow(&two_ports(false), &opts("mlx5")).unwrap();
    check_invariants(&c);
    let text = c.to_testpmd();
    assert!(!text.contains("arp_eth_ipv4") && !text.contains("icmp6_nd_na"));
    assert!(text.contains("eth type is 0x0806 / end actions count / port_representor port_id 1"));
    assert!(c
        .rules
        .iter()
        .filter(|r| r.group == 0)
        .all(|r| r.priority <= 2));
    let codes: Vec<&str> = c.report.ports[0]
        .software
        .iter()
        .map(|(_, r)| r.code())
        .collect();
    assert_eq!(codes, ["item_unsupported", "item_unsupported"]);
}

#[test]
fn ntnic_one_mask_per_group() {
    let c = compile_rte_flow(&two_ports(false), &opts("ntnic")).unwrap();
    check_invariants(&c);
    let text = c.to_testpmd();
    assert!(!text.contains("count") && !text.contains("represented_port"));
    assert!(text.contains("port_id id is 1"));
    let mut shapes: std::collections::BTreeMap<u32, std::collections::BTreeSet<_>> =
        Default::default();
    for r in c
        .rules
        .iter()
        .filter(|r| r.group > 0 && r.pattern != Pattern::any())
    {
        shapes
            .entry(r.group)
            .or_default()
            .insert(pattern::Flat::of(&r.pattern).shape());
        assert_eq!(r.priority, 0);
    }
    assert!(shapes.values().all(|s| s.len() == 1), "{shapes:?}");
    assert!(shapes.len() > 5);
}

#[test]
fn ranges_with_last_on_full_profile() {
    let c = compile_rte_flow(&two_ports(false), &opts("full")).unwrap();
    check_invariants(&c);
    let text = c.to_testpmd();
    assert!(
        text.contains("tcp dst spec 1000 dst last 1999 dst mask 0xffff"),
        "{text}"
    );
}

#[test]
fn missing_representor_is_an_error() {
    let m = model(json!({"security_groups": {}, "ports": [
        {"id": "x", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.1"]}]}));
    let err = compile_rte_flow(&m, &opts("generic")).unwrap_err();
    assert!(err.to_string().contains("representor is required"), "{err}");
}

#[test]
fn priority_limit_falls_back_to_software() {
    // Nested prefixes (/32 ⊂ /31 ⊂ ... with distinct ports) each need their own level.
    let rules: Vec<_> = (0..30)
        .map(|i| {
            json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
            "port_range_min": 100 + i, "port_range_max": 100 + i,
            "remote_ip_prefix": format!("10.0.0.0/{}", 32 - i)})
        })
        .collect();
    let mut m = two_ports(false);
    m.groups.get_mut("g").unwrap().rules = model(json!({
        "security_groups": {"g": {"stateful": false, "rules": rules}}, "ports": []
    }))
    .groups["g"]
        .rules
        .clone();
    let mut o = opts("ntnic");
    o.profile = &profiles::NTNIC;
    let c = compile_rte_flow(&m, &o).unwrap();
    check_invariants(&c);
    // ntnic: one shape per group, priorities stay at 0/1; mlx5-like layering would need more.
    let narrow = Profile {
        max_priority: 3,
        ..profiles::GENERIC
    };
    let leaked: &'static Profile = Box::leak(Box::new(narrow));
    let c = compile_rte_flow(
        &m,
        &RteFlowOptions {
            profile: leaked,
            ..opts("generic")
        },
    )
    .unwrap();
    check_invariants(&c);
    let a = &c.report.ports[0];
    assert_eq!(a.mode, PortMode::Software);
    assert!(c.rules.iter().all(|r| r.group == 0));
}

#[test]
fn uplink_forwarding_uses_accept_groups() {
    let mut o = opts("generic");
    o.forward = Forward::Uplink;
    o.uplink_port = 9;
    let c = compile_rte_flow(&two_ports(false), &o).unwrap();
    check_invariants(&c);
    let text = c.to_testpmd();
    assert!(
        text.contains(
            "eth dst is fa:16:3e:00:00:02 / end actions count / represented_port ethdev_port_id 2"
        ),
        "{text}"
    );
    assert!(text.contains("actions count / represented_port ethdev_port_id 9 / end"));
}

#[test]
fn json_form_has_spec_mask_last() {
    let c = compile_rte_flow(&two_ports(false), &opts("full")).unwrap();
    let doc = c.to_json();
    let rules = doc["rules"].as_array().unwrap();
    assert_eq!(rules.len(), c.rules.len());
    let ranged = rules
        .iter()
        .flat_map(|r| r["pattern"].as_array().unwrap())
        .find(|i| i.get("last").is_some())
        .expect("a ranged item");
    assert_eq!(ranged["type"], "tcp");
    assert_eq!(ranged["spec"]["dst"], 1000);
    assert_eq!(ranged["last"]["dst"], 1999);
    assert_eq!(rules[0]["attr"]["transfer"], true);
}

#[test]
fn deterministic() {
    let a = compile_rte_flow(&two_ports(false), &opts("ntnic")).unwrap();
    let b = compile_rte_flow(&two_ports(false), &opts("ntnic")).unwrap();
    assert_eq!(a.to_testpmd(), b.to_testpmd());
}

#[test]
fn port_id_software_port_must_be_distinct() {
    let mut o = opts("ntnic");
    o.forward = Forward::Uplink;
    let err = compile_rte_flow(&two_ports(false), &o).unwrap_err();
    assert!(err.to_string().contains("also the uplink"), "{err}");
    o.software_port = Some(2);
    let err = compile_rte_flow(&two_ports(false), &o).unwrap_err();
    assert!(err.to_string().contains("representor of port b"), "{err}");
    o.software_port = Some(99);
    let c = compile_rte_flow(&two_ports(false), &o).unwrap();
    assert!(c.to_testpmd().contains("port_id id 99"));
}

#[test]
fn shared_mac_goes_to_software_and_is_reported() {
    let m = model(json!({
        "security_groups": {"g": {"stateful": false, "rules": []}},
        "ports": [
            {"id": "a", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.1"],
             "security_groups": ["g"], "representor": 1},
            {"id": "b", "mac_address": "fa:16:3e:00:00:02", "fixed_ips": ["10.0.0.2"],
             "allowed_address_pairs": [{"ip_address": "10.0.0.9", "mac_address": "fa:16:3e:00:00:01"}],
             "security_groups": ["g"], "representor": 2},
        ]
    }));
    let c = compile_rte_flow(&m, &opts("generic")).unwrap();
    check_invariants(&c);
    assert!(!c.to_testpmd().contains("eth dst is fa:16:3e:00:00:01"));
    assert!(c.to_testpmd().contains("eth dst is fa:16:3e:00:00:02"));
    for p in &c.report.ports {
        assert_eq!(p.mode, PortMode::Partial);
        assert!(p.software.iter().any(
            |(what, why)| what == "traffic to fa:16:3e:00:00:01" && why.code() == "shared_mac"
        ));
    }
}

#[test]
fn member_expansion_keeps_priorities_disjoint() {
    // Host members (indexed by address), a /24, and an any-remote rule that overlaps them all:
    // the exhaustive pairwise check of `check_invariants` must agree with the indexed layout.
    let ports: Vec<_> = (0..30)
        .map(|i| {
            json!({"id": format!("p{i:02}"), "mac_address": format!("fa:16:3e:00:01:{i:02x}"),
            "fixed_ips": [format!("10.0.0.{}", i + 10), format!("2001:db8::{:x}", i + 10)],
            "security_groups": ["g"], "representor": i + 1})
        })
        .collect();
    let m = model(json!({
        "security_groups": {"g": {"stateful": false, "rules": [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 1000, "port_range_max": 1100, "remote_group_id": "g"},
            {"direction": "ingress", "ethertype": "IPv6", "protocol": "udp",
             "port_range_min": 53, "port_range_max": 53, "remote_group_id": "g"},
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 1050, "port_range_max": 1050, "remote_ip_prefix": "10.0.0.0/24"},
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp"},
            {"direction": "egress", "ethertype": "IPv4", "remote_group_id": "g"},
            {"direction": "egress", "ethertype": "IPv4", "protocol": "udp"},
        ]}},
        "ports": ports,
    }));
    for profile in ["generic", "ntnic"] {
        let c = compile_rte_flow(&m, &opts(profile)).unwrap();
        check_invariants(&c);
        // tcp/any covers every tcp rule: only it is left of the ingress tcp rules.
        assert_eq!(c.stats.per_rule.get("g[0]"), None, "{profile}");
        assert_eq!(c.stats.per_rule.get("g[1]"), Some(&(30 * 30)), "{profile}");
    }
}
