//! Unit tests of the single-port rendering on small models; the packet-level checks run
//! from `tests/rte_flow/test_single_port.py`.

use serde_json::json;

use super::*;
use crate::backend::rte_flow::pattern::{Flat, PortMatch, Upper};
use crate::model::{parse_value, ParseOptions};

fn model(stateful: bool) -> Model {
    model_with(stateful, true)
}

/// A port `a` with TCP 80-81 in; with `wide`, also TCP 1000-1999 and ICMP in.
fn model_with(stateful: bool, wide: bool) -> Model {
    let mut rules = vec![
        json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
               "port_range_min": 80, "port_range_max": 81}),
        json!({"direction": "egress", "ethertype": "IPv4", "protocol": "udp",
               "port_range_min": 53, "port_range_max": 53}),
        json!({"direction": "egress", "ethertype": "IPv6"}),
    ];
    if wide {
        rules.insert(
            0,
            json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                               "port_range_min": 1000, "port_range_max": 1999}),
        );
        rules.insert(
            2,
            json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}),
        );
    }
    let v = json!({
        "security_groups": {"g": {"stateful": stateful, "rules": rules}},
        "ports": [
            {"id": "a", "mac_address": "fa:16:3e:00:00:01",
             "fixed_ips": ["10.0.0.1", "2001:db8::1"], "security_groups": ["g"]},
            {"id": "b", "mac_address": "fa:16:3e:00:00:02", "fixed_ips": ["10.0.0.2"],
             "security_groups": [], "port_security_enabled": false},
        ]
    });
    parse_value(&v, &ParseOptions::default()).expect("valid model")
}

fn render(m: &Model, port: &str, options: &PortOptions) -> PortRendering {
    render_port(m, port, options, 1_000_000).expect("renders")
}

/// Rules of one attribute sharing a priority never overlap unless they agree.
fn check_priorities(r: &PortRendering) {
    for (i, a) in r.rules.iter().enumerate() {
        assert!(a.priority <= r.options.driver.max_priority);
        assert!(a.pattern.source.is_none());
        for b in &r.rules[i + 1..] {
            if a.attr == b.attr && a.priority == b.priority && a.fate != b.fate {
                assert!(
                    !Flat::of(&a.pattern).overlaps(&Flat::of(&b.pattern)),
                    "{a:?} / {b:?}"
                );
            }
        }
    }
}

#[test]
fn net_tap_gets_only_what_it_takes_and_the_rest_goes_to_software() {
    let r = render(&model(false), "a", &PortOptions::default());
    check_priorities(&r);
    assert!(r.offloadable(), "{}", r.report_text());
    for rule in &r.rules {
        match &rule.pattern.upper {
            None => {}
            Some(Upper::Ports { src, dst, .. }) => {
                for m in [src, dst].into_iter().flatten() {
                    assert!(
                        matches!(m, PortMatch::Mask(pm) if pm.mask == 0xffff),
                        "{rule:?}"
                    );
                }
            }
            Some(other) => panic!("net_tap takes no {other:?}"),
        }
    }
    let lines = r.to_testpmd("create").unwrap();
    assert!(
        !lines.contains(" mask 0x") && !lines.contains("icmp"),
        "{lines}"
    );
    assert!(
        !lines.contains("transfer") && !lines.contains("group"),
        "{lines}"
    );
    // Traffic to the VM can not be sent to software: that direction is left to the switch.
    let to_vm = &r.directions[1];
    assert_eq!((to_vm.attr, to_vm.mode), (Attr::Egress, DirMode::Software));
    assert_eq!(to_vm.rules, 0);
    assert!(r.rules.iter().all(|x| x.attr == Attr::Ingress));
    // From the VM: ARP and advertisements go to the software queue (no items to check them).
    let from_vm = &r.directions[0];
    assert_eq!(from_vm.mode, DirMode::Partial);
    assert!(
        lines.contains("eth type is 0x0806 / end actions queue index 1"),
        "{lines}"
    );
    assert!(
        lines.contains("udp dst is 53 / end actions queue index 0"),
        "{lines}"
    );
    let text = r.report_text();
    assert!(text.contains("rule g[0] (ingress): software"), "{text}");
    assert!(text.contains("rule g[3] (egress): offloaded"), "{text}");
}

#[test]
fn port_blocks_become_exact_ports_up_to_the_bound() {
    // net_tap itself sends all traffic to the VM to software (the ND allowances need icmp6);
    // a driver like it with icmp6 shows the port blocks.
    static TAP_ICMP6: PortDriver = PortDriver {
        icmp6: true,
        ..NET_TAP
    };
    let with_icmp6 = PortOptions {
        driver: TAP_ICMP6,
        ..PortOptions::default()
    };
    let r = render(&model_with(false, false), "a", &with_icmp6);
    check_priorities(&r);
    assert_eq!(
        r.directions[1].mode,
        DirMode::Offloaded,
        "{}",
        r.report_text()
    );
    let lines = r.to_testpmd("create").unwrap();
    assert!(
        lines.contains("tcp dst is 80 / end actions passthru"),
        "{lines}"
    );
    assert!(
        lines.contains("tcp dst is 81 / end actions passthru"),
        "{lines}"
    );
    let options = PortOptions {
        max_exact_ports: 1,
        ..with_icmp6
    };
    let r = render(&model_with(false, false), "a", &options);
    assert_eq!(r.directions[1].mode, DirMode::Software);
    assert!(
        r.report_text().contains("beyond the exact-port bound 1"),
        "{}",
        r.report_text()
    );
}

#[test]
fn without_a_software_queue_the_port_is_not_offloadable() {
    let options = PortOptions {
        software_queue: None,
        ..PortOptions::default()
    };
    let r = render(&model(false), "a", &options);
    assert!(!r.offloadable());
    let err = r.to_testpmd("create").unwrap_err().to_string();
    assert!(
        err.contains("port a is not offloadable on net_tap"),
        "{err}"
    );
}

#[test]
fn the_full_driver_offloads_both_directions() {
    let options = PortOptions {
        driver: PORT_FULL,
        ..PortOptions::default()
    };
    let r = render(&model(false), "a", &options);
    check_priorities(&r);
    assert_eq!(
        r.directions[0].mode,
        DirMode::Offloaded,
        "{}",
        r.report_text()
    );
    assert_eq!(
        r.directions[1].mode,
        DirMode::Offloaded,
        "{}",
        r.report_text()
    );
    let lines = r.to_testpmd("create").unwrap();
    assert!(lines.contains(" last 1999 "), "{lines}");
    assert!(lines.contains(" egress pattern "), "{lines}");
}

#[test]
fn stateful_ports_send_ip_to_software_and_unfiltered_ports_get_nothing() {
    let r = render(&model(true), "a", &PortOptions::default());
    check_priorities(&r);
    assert!(r.offloadable());
    let text = r.report_text();
    assert!(text.contains("stateful port needs conntrack"), "{text}");
    let b = render(&model(false), "b", &PortOptions::default());
    assert!(b.rules.is_empty());
    assert!(b.directions.iter().all(|d| d.mode == DirMode::Unfiltered));
    let err = render_port(&model(false), "zz", &PortOptions::default(), 10).unwrap_err();
    assert!(err.to_string().contains("no port \"zz\""), "{err}");
}

#[test]
fn a_probe_narrows_the_profile_and_never_widens_it() {
    let refused = vec!["ipv4 prefix/exact/proto".to_string(), "icmp".to_string()];
    let narrowed = narrow(&PORT_FULL, &refused, Some(40)).unwrap();
    assert!(!narrowed.ip_addresses && !narrowed.icmp && narrowed.icmp6);
    assert_eq!(narrowed.max_priority, 40);
    // A bound above the profile's and an empty refusal change nothing.
    assert_eq!(narrow(&NET_TAP, &[], Some(65_535)).unwrap(), NET_TAP);
    assert!(narrow(&NET_TAP, &["vxlan".to_string()], None).is_err());
    let options = PortOptions {
        driver: narrowed,
        refused,
        ..PortOptions::default()
    };
    let r = render(&model(false), "a", &options);
    check_priorities(&r);
    for rule in r.rules.iter().filter(|x| x.fate != Fate::Software) {
        let ip = rule.pattern.ip;
        assert!(
            ip.is_none_or(|ip| ip.src.is_none() && ip.dst.is_none()),
            "{rule:?}"
        );
    }
    assert!(r.report_text().contains("narrowed by the probe"));
}

#[test]
fn a_driver_refusing_the_queue_action_is_not_offloadable() {
    let driver = narrow(&NET_TAP, &["queue action".to_string()], None).unwrap();
    let options = PortOptions {
        driver,
        ..PortOptions::default()
    };
    let r = render(&model(false), "a", &options);
    assert!(!r.offloadable());
    assert!(r.problem().unwrap().contains("refuses the queue action"));
}
