//! Reading and validation: every error case of the input, with its path.

use serde_json::{json, Value};

use super::*;
use crate::error::Error;

fn base() -> Value {
    json!({
        "security_groups": {
            "web": {"stateful": true, "rules": [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 22, "port_range_max": 22}
            ]}
        },
        "ports": [
            {"id": "p1", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.1"],
             "security_groups": ["web"], "network_id": "n", "ofport": 1, "local_vlan": 1}
        ]
    })
}

fn with_rule(rule: Value) -> Value {
    let mut m = base();
    m["security_groups"]["web"]["rules"] = json!([rule]);
    m
}

fn errors(v: &Value) -> Vec<String> {
    match parse_value(v, &ParseOptions::default()) {
        Err(Error::Invalid(issues)) => issues.iter().map(|i| i.to_string()).collect(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => Vec::new(),
    }
}

fn assert_error(v: Value, expected: &str) {
    let errs = errors(&v);
    assert!(
        errs.iter().any(|e| e.contains(expected)),
        "expected an error containing {expected:?}, got {errs:?}"
    );
}

fn rule_of(v: Value) -> Rule {
    let model = parse_value(&with_rule(v), &ParseOptions::default()).expect("valid");
    model.groups["web"].rules[0].clone()
}

#[test]
fn valid_model_reads() {
    let model = parse_value(&base(), &ParseOptions::default()).unwrap();
    assert_eq!(model.ports.len(), 1);
    let rule = &model.groups["web"].rules[0];
    assert_eq!(rule.protocol, Some(6));
    assert_eq!(
        rule.l4,
        L4::Ports {
            dst: PortRange { min: 22, max: 22 },
            src: PortRange::ANY
        }
    );
}

#[test]
fn reversed_port_range_names_its_path() {
    assert_error(
        with_rule(
            json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 22}),
        ),
        "security_groups.web.rules[0]: port_range_min 80 > port_range_max 22",
    );
}

#[test]
fn each_error_case() {
    let r = |v: Value| with_rule(v);
    let cases: Vec<(Value, &str)> = vec![
        (
            r(json!({"direction": "sideways"})),
            "unknown direction \"sideways\"",
        ),
        (
            r(json!({"direction": "ingress", "ethertype": "IPv5"})),
            "unknown ethertype \"IPv5\"",
        ),
        (
            r(json!({"direction": "ingress", "protocol": "tcpp"})),
            "unknown protocol name \"tcpp\"",
        ),
        (
            r(json!({"direction": "ingress", "protocol": 256})),
            "protocol number 256 outside 0-255",
        ),
        (
            r(json!({"direction": "ingress", "protocol": -1})),
            "protocol number -1 outside 0-255",
        ),
        (
            r(json!({"direction": "ingress", "protocol": "udp", "port_range_min": 70000})),
            "port 70000 outside 0-65535",
        ),
        (
            r(json!({"direction": "ingress", "protocol": "icmp", "port_range_min": 300})),
            "ICMP type 300 outside 0-255",
        ),
        (
            r(
                json!({"direction": "ingress", "protocol": "icmp", "port_range_min": 3, "port_range_max": 256}),
            ),
            "ICMP code 256 outside 0-255",
        ),
        (
            r(json!({"direction": "ingress", "protocol": "icmp", "port_range_max": 1})),
            "ICMP code without type",
        ),
        (
            r(json!({"direction": "ingress", "protocol": "gre", "port_range_min": 1})),
            "protocol 47 has no ports",
        ),
        (
            r(json!({"direction": "ingress", "port_range_min": 1})),
            "a port range needs a protocol",
        ),
        (
            r(
                json!({"direction": "ingress", "ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"}),
            ),
            "is not IPv6 like the rule's ethertype",
        ),
        (
            r(json!({"direction": "ingress", "remote_ip_prefix": "10.0.0.300/8"})),
            "malformed CIDR",
        ),
        (
            r(
                json!({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "web"}),
            ),
            "more than one remote",
        ),
        (
            r(json!({"direction": "ingress", "remote_group_id": "nope"})),
            "names no security group",
        ),
        (
            r(json!({"direction": "ingress", "remote_address_group_id": "nope"})),
            "names no address group",
        ),
        (
            r(
                json!({"direction": "ingress", "protocol": "dccp", "port_range_min": 1, "port_range_max": 2}),
            ),
            "cannot be matched by Open vSwitch",
        ),
        (
            r(json!({"direction": "ingress", "protocol": "udplite", "port_range_min": 1})),
            "DCCP/UDP-Lite",
        ),
        (r(json!({"ethertype": "IPv4"})), "direction is required"),
        (
            r(json!({"direction": "egress", "source_ip_prefix": "10.0.0.0/8"})),
            "names the local end",
        ),
        (
            r(json!({"direction": "ingress", "protocol": "tcp", "port_range_max": 5})),
            "port_range_max without port_range_min",
        ),
        (r(json!("nope")), "expected a mapping, got a string"),
    ];
    for (model, expected) in cases {
        assert_error(model, expected);
    }
}

#[test]
fn port_errors() {
    let mut m = base();
    m["ports"][0]["mac_address"] = json!("fa:16:3e:00:00");
    assert_error(m, "ports[0].mac_address: malformed MAC address");

    let mut m = base();
    m["ports"][0]["fixed_ips"] = json!(["10.0.0.1", "banana"]);
    assert_error(m, "ports[0].fixed_ips[1]: malformed IP address \"banana\"");

    let mut m = base();
    m["ports"][0]["allowed_address_pairs"] = json!([{"ip_address": "10.0.0.0/33"}]);
    assert_error(
        m,
        "ports[0].allowed_address_pairs[0].ip_address: malformed CIDR",
    );

    let mut m = base();
    m["ports"][0]["security_groups"] = json!(["web", "ghost"]);
    assert_error(
        m,
        "ports.p1.security_groups: unknown security group \"ghost\"",
    );

    let mut m = base();
    m["security_groups"]["free"] = json!({"stateful": false, "rules": []});
    m["ports"][0]["security_groups"] = json!(["web", "free"]);
    assert_error(
        m,
        "mixes stateful groups (web) with stateless groups (free)",
    );

    let mut m = base();
    let mut second = m["ports"][0].clone();
    second["id"] = json!("p2");
    second["mac_address"] = json!("fa:16:3e:00:00:02");
    m["ports"].as_array_mut().unwrap().push(second);
    assert_error(
        m,
        "ports.p2.ofport: OpenFlow port 1 is also used by port \"p1\"",
    );

    let mut m = base();
    let dup = m["ports"][0].clone();
    m["ports"].as_array_mut().unwrap().push(dup);
    assert_error(m, "duplicate port id \"p1\"");

    let mut m = base();
    m["ports"][0]["ofport"] = json!(-1);
    assert_error(m, "the port is not ready");
}

#[test]
fn duplicate_group_ids_in_list_form() {
    let m = json!({"security_groups": [
        {"id": "a", "rules": []}, {"id": "a", "rules": []}
    ]});
    assert_error(m, "security_groups[1]: duplicate security group id \"a\"");
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let mut m = base();
    m["security_groups"]["web"]["rules"] = json!([
        {"direction": "up"},
        {"direction": "ingress", "protocol": 300},
    ]);
    m["ports"][0]["mac_address"] = json!("zz");
    assert_eq!(errors(&m).len(), 3, "{:?}", errors(&m));
}

#[test]
fn normalises_like_neutron() {
    // Host bits cleared.
    let r = rule_of(json!({"direction": "ingress", "remote_ip_prefix": "10.1.2.3/8"}));
    assert_eq!(r.remote, Remote::Prefix("10.0.0.0/8".parse().unwrap()));
    // /0 means any.
    let r =
        rule_of(json!({"direction": "ingress", "ethertype": "IPv6", "remote_ip_prefix": "::/0"}));
    assert_eq!(r.remote, Remote::Any);
    // icmp on IPv6 is ICMPv6.
    let r = rule_of(
        json!({"direction": "ingress", "ethertype": "IPv6", "protocol": "icmp", "port_range_min": 128}),
    );
    assert_eq!(r.protocol, Some(58));
    assert_eq!(
        r.l4,
        L4::Icmp {
            icmp_type: 128,
            code: None
        }
    );
    // Names and numbers are equivalent, numbers also as strings.
    assert_eq!(
        rule_of(json!({"direction": "ingress", "protocol": "6"})).protocol,
        Some(6)
    );
    assert_eq!(
        rule_of(json!({"direction": "ingress", "protocol": 17})).protocol,
        Some(17)
    );
    assert_eq!(
        rule_of(json!({"direction": "ingress", "protocol": "any"})).protocol,
        None
    );
    // The whole port range is no port match.
    let r = rule_of(
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 0, "port_range_max": 65535}),
    );
    assert_eq!(r.l4, L4::Any);
    // A lone port_range_min is one port.
    let r = rule_of(json!({"direction": "ingress", "protocol": "udp", "port_range_min": 53}));
    assert_eq!(
        r.l4,
        L4::Ports {
            dst: PortRange { min: 53, max: 53 },
            src: PortRange::ANY
        }
    );
}

#[test]
fn widening_dccp_is_explicit_and_warned() {
    let v = with_rule(
        json!({"direction": "ingress", "protocol": "dccp", "port_range_min": 1, "port_range_max": 9}),
    );
    let opts = ParseOptions {
        widen_unmatchable_port_ranges: true,
        ..ParseOptions::default()
    };
    let model = parse_value(&v, &opts).unwrap();
    assert_eq!(model.groups["web"].rules[0].l4, L4::Any);
    assert_eq!(model.warnings.len(), 1);
    assert!(model.warnings[0].message.contains("widened"));
}

#[test]
fn remote_group_members_default_to_model_ports() {
    let mut m = base();
    m["security_groups"]["web"]["rules"] =
        json!([{"direction": "ingress", "remote_group_id": "web"}]);
    m["ports"][0]["allowed_address_pairs"] = json!([{"ip_address": "10.9.0.0/16"}]);
    let model = parse_value(&m, &ParseOptions::default()).unwrap();
    let nets: Vec<String> = model.members["web"]
        .nets
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, vec!["10.0.0.1/32", "10.9.0.0/16"]);
}

#[test]
fn rpc_payload_shape() {
    let v = json!({
        "devices": {
            "p1": {"id": "p1", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.1"],
                   "security_groups": ["sg"], "device_owner": "compute:nova",
                   "network_id": "n", "allowed_address_pairs": []}
        },
        "security_groups": {
            "sg": [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 22, "port_range_max": 22, "source_ip_prefix": "10.0.0.0/8",
                 "security_group_id": "sg", "stateful": false},
                {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "sg",
                 "security_group_id": "sg", "stateful": false}
            ],
            "empty": []
        },
        "sg_member_ips": {"sg": {"IPv4": [["10.0.0.1", "fa:16:3e:00:00:01"], ["10.0.0.2", null]]}},
        "bindings": {"p1": {"ofport": 7, "local_vlan": 3}}
    });
    let model = parse_value(&v, &ParseOptions::default()).unwrap();
    assert!(!model.groups["sg"].stateful);
    assert!(model.groups["empty"].stateful);
    assert_eq!(model.ports[0].ofport, Some(7));
    assert_eq!(model.ports[0].local_vlan, Some(3));
    assert_eq!(model.members["sg"].nets.len(), 2);
    assert_eq!(
        model.groups["sg"].rules[0].remote,
        Remote::Prefix("10.0.0.0/8".parse().unwrap())
    );
}

#[test]
fn rpc_stateful_flags_must_agree() {
    let v = json!({"devices": {}, "security_groups": {"sg": [
        {"direction": "ingress", "stateful": true},
        {"direction": "egress", "stateful": false}
    ]}});
    assert!(errors(&v).iter().any(|e| e.contains("disagrees")));
}

#[test]
fn decode_rejects_garbage_without_panicking() {
    for bytes in [&b"{"[..], b"\xc1", b"", b"[1,2", b"\x93\x01"] {
        let r = decode(bytes, InputFormat::Auto)
            .and_then(|v| parse_value(&v, &ParseOptions::default()));
        assert!(r.is_err(), "{bytes:?}");
    }
}

#[test]
fn msgpack_and_json_agree() {
    let v = base();
    let packed = rmp_serde::to_vec_named(&v).unwrap();
    let a = crate::load_model(&packed, InputFormat::Auto, &ParseOptions::default()).unwrap();
    let b = crate::load_model(
        v.to_string().as_bytes(),
        InputFormat::Auto,
        &ParseOptions::default(),
    )
    .unwrap();
    assert_eq!(a, b);
}
