//! Strict input: unknown keys per object kind and input shape, and the separate id spaces of
//! security groups and address groups.

use serde_json::{json, Value};

use super::*;
use crate::error::Error;
use crate::eval::{evaluate, PacketSpec, Query};

fn documented(rule: Value) -> Value {
    json!({
        "security_groups": {"web": {"rules": [rule]}},
        "ports": [{"id": "p1", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.1"],
                   "security_groups": ["web"], "ofport": 1, "local_vlan": 1}]
    })
}

fn rpc(rule: Value) -> Value {
    json!({
        "devices": {"p1": {"id": "p1", "mac_address": "fa:16:3e:00:00:01",
                           "fixed_ips": ["10.0.0.1"], "security_groups": ["sg"]}},
        "security_groups": {"sg": [rule]},
        "bindings": {"p1": {"ofport": 1, "local_vlan": 1}}
    })
}

fn with(unknown_keys: Option<UnknownKeys>) -> ParseOptions {
    ParseOptions {
        unknown_keys,
        ..ParseOptions::default()
    }
}

fn issues(v: &Value, options: &ParseOptions) -> Vec<String> {
    match parse_value(v, options) {
        Err(Error::Invalid(issues)) => issues.iter().map(|i| i.to_string()).collect(),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => Vec::new(),
    }
}

fn warnings(v: &Value, options: &ParseOptions) -> Vec<String> {
    let model = parse_value(v, options).expect("accepted");
    model.warnings.iter().map(|w| w.to_string()).collect()
}

const TYPO: &str = r#"security_groups.web.rules[0]: unknown key "remote_ip_prefx" (did you mean "remote_ip_prefix"?)"#;

fn typo_rule() -> Value {
    json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
           "port_range_min": 22, "port_range_max": 22, "remote_ip_prefx": "10.9.0.0/16"})
}

#[test]
fn a_misspelt_restriction_is_an_error_with_its_path_and_hint() {
    assert_eq!(
        issues(&documented(typo_rule()), &ParseOptions::default()),
        vec![TYPO]
    );
    let errs = issues(
        &documented(json!({"direction": "ingress", "protocl": "icmp", "remote_group": "web"})),
        &ParseOptions::default(),
    );
    assert!(errs
        .iter()
        .any(|e| e.ends_with(r#"unknown key "protocl" (did you mean "protocol"?)"#)));
    assert!(errs
        .iter()
        .any(|e| e.contains(r#"unknown key "remote_group""#)));
}

#[test]
fn every_object_kind_checks_its_keys() {
    let v = json!({
        "security_groupz": {},
        "security_groups": {"web": {"rules": [], "statefull": true}},
        "address_groups": {"ag": {"addresses": [], "adresses": []}},
        "networks": {"n": {"local_vlan": 1, "local_vlam": 2}},
        "bindings": {"p1": {"ofport": 1, "ofprt": 2}},
        "rte_flow": {"proxy_port": 0, "uplink": 1},
        "ports": [{"id": "p1", "mac_address": "fa:16:3e:00:00:01", "network_id": "n",
                   "fixed_ips": [{"ip_address": "10.0.0.1", "ip_adress": "10.0.0.2"}],
                   "allowed_address_pairs": [{"ip_address": "10.0.0.9", "mac": "x"}],
                   "security_group": ["web"]}]
    });
    let errs = issues(&v, &ParseOptions::default());
    for expected in [
        r#"unknown key "security_groupz" (did you mean "security_groups"?)"#,
        r#"security_groups.web: unknown key "statefull" (did you mean "stateful"?)"#,
        r#"address_groups.ag: unknown key "adresses" (did you mean "addresses"?)"#,
        r#"networks.n: unknown key "local_vlam" (did you mean "local_vlan"?)"#,
        r#"bindings.p1: unknown key "ofprt" (did you mean "ofport"?)"#,
        r#"rte_flow: unknown key "uplink""#,
        r#"ports[0].fixed_ips[0]: unknown key "ip_adress" (did you mean "ip_address"?)"#,
        r#"ports[0].allowed_address_pairs[0]: unknown key "mac""#,
        r#"ports[0]: unknown key "security_group" (did you mean "security_groups"?)"#,
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "{expected} not in {errs:#?}"
        );
    }
}

#[test]
fn neutron_api_fields_are_known_in_the_documented_model() {
    let rule = json!({"direction": "ingress", "ethertype": "IPv4", "id": "r1",
                      "security_group_id": "web", "project_id": "x", "tenant_id": "x",
                      "normalized_cidr": null, "description": "", "revision_number": 1});
    assert!(warnings(&documented(rule), &ParseOptions::default()).is_empty());
}

#[test]
fn the_rpc_payload_only_warns_and_loudly_for_restrictions() {
    let rule = json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                      "source_ip_prefx": "10.9.0.0/16", "colour": "blue"});
    let w = warnings(&rpc(rule), &ParseOptions::default());
    assert_eq!(w.len(), 2, "{w:?}");
    // In the input's key order.
    assert!(w[1].starts_with(r#"security_groups.sg[0]: unknown key "colour" ignored"#));
    assert!(w[0].contains(
        r#"UNKNOWN KEY "source_ip_prefx" IGNORED (did you mean "source_ip_prefix"?): it looks like a restriction"#
    ));
}

#[test]
fn the_rpc_keys_neutron_sends_are_tolerated_silently() {
    let v = json!({
        "_comment": "fixture note",
        "devices": {"p1": {
            "id": "p1", "device": "p1", "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": [{"ip_address": "10.0.0.1", "subnet_id": "s", "port_id": "p1",
                           "network_id": "n"}],
            "allowed_address_pairs": [{"ip_address": "10.0.0.9", "mac_address": "fa:16:3e:00:00:01",
                                       "port_id": "p1"}],
            "security_groups": ["sg"], "security_group_ids": ["sg"], "bindings": [],
            "binding_levels": [], "binding:host_id": "h", "security_group_rules": [],
            "security_group_source_groups": [], "security_group_remote_address_groups": [],
            "admin_state_up": true, "status": "ACTIVE", "project_id": "x", "tenant_id": "x",
            "revision_number": 3, "qos_policy_id": null, "dns": null, "security": {}
        }},
        "security_groups": {"sg": [{"direction": "egress", "security_group_id": "sg",
                                    "stateful": true}]},
        "bindings": {"p1": {"ofport": 1, "local_vlan": 1}}
    });
    assert_eq!(warnings(&v, &ParseOptions::default()), Vec::<String>::new());
}

#[test]
fn the_fixture_reads_without_warnings() {
    let text = include_str!("../../tests/data/neutron-rpc-payload.json");
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(warnings(&v, &ParseOptions::default()), Vec::<String>::new());
}

#[test]
fn the_option_overrides_the_shape_default() {
    // Documented model, warn: accepted with the warning in the result.
    let w = warnings(&documented(typo_rule()), &with(Some(UnknownKeys::Warn)));
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("UNKNOWN KEY \"remote_ip_prefx\" IGNORED"));
    // Ignore: not a word.
    assert!(warnings(&documented(typo_rule()), &with(Some(UnknownKeys::Ignore))).is_empty());
    // RPC payload, error: refused.
    let rule = json!({"direction": "ingress", "source_ip_prefx": "10.9.0.0/16"});
    let errs = issues(&rpc(rule), &with(Some(UnknownKeys::Error)));
    assert_eq!(
        errs,
        vec![
            r#"security_groups.sg[0]: unknown key "source_ip_prefx" (did you mean "source_ip_prefix"?)"#
        ]
    );
}

/// A security group and an address group both called `web`.
fn shared_name() -> Value {
    json!({
        "security_groups": {"web": {"rules": [
            {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "web"},
            {"direction": "egress", "ethertype": "IPv4", "remote_address_group_id": "web"}
        ]}},
        "address_groups": {"web": ["0.0.0.0/1"]},
        "ports": [
            {"id": "p1", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.1"],
             "security_groups": ["web"], "ofport": 1, "local_vlan": 1},
            {"id": "p2", "mac_address": "fa:16:3e:00:00:02", "fixed_ips": ["10.0.0.2"],
             "security_groups": ["web"], "ofport": 2, "local_vlan": 1}
        ]
    })
}

#[test]
fn remote_groups_and_address_groups_have_their_own_ids() {
    let model = parse_value(&shared_name(), &ParseOptions::default()).unwrap();
    let rules = &model.groups["web"].rules;
    let nets = |r: &Rule| -> Vec<String> {
        model
            .remote_nets(r)
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect()
    };
    assert_eq!(nets(&rules[0]), vec!["10.0.0.1/32", "10.0.0.2/32"]);
    assert_eq!(nets(&rules[1]), vec!["0.0.0.0/1"]);
}

#[test]
fn the_evaluator_takes_each_remote_from_its_own_space() {
    let model = parse_value(&shared_name(), &ParseOptions::default()).unwrap();
    let ask = |direction, packet: &str| {
        let q = Query {
            port: "p1".into(),
            direction,
            packet: PacketSpec::parse(packet).unwrap(),
            ct: None,
        };
        evaluate(&model, &q).unwrap().allowed()
    };
    assert!(ask(Direction::Ingress, "tcp,nw_src=10.0.0.2,tp_dst=80"));
    // In the address group's 0.0.0.0/1, but not a member of the security group.
    assert!(!ask(Direction::Ingress, "tcp,nw_src=10.9.9.9,tp_dst=80"));
    assert!(ask(Direction::Egress, "tcp,nw_dst=10.9.9.9,tp_dst=80"));
    assert!(!ask(Direction::Egress, "tcp,nw_dst=192.0.2.1,tp_dst=80"));
}

#[test]
fn a_remote_group_does_not_resolve_to_an_address_group() {
    let v = json!({
        "security_groups": {"web": {"rules": [
            {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "office"}
        ]}},
        "address_groups": {"office": ["192.0.2.0/24"]}
    });
    let errs = issues(&v, &ParseOptions::default());
    assert!(errs
        .iter()
        .any(|e| e.contains(r#"remote_group_id "office" names no security group"#)));
}

#[test]
fn the_rpc_payload_shares_sg_member_ips_between_both_kinds() {
    let rule =
        json!({"direction": "ingress", "ethertype": "IPv4", "remote_address_group_id": "ag-uuid"});
    let mut v = rpc(rule);
    v["sg_member_ips"] = json!({"ag-uuid": {"IPv4": [["192.0.2.0/24", null]]}});
    let model = parse_value(&v, &ParseOptions::default()).unwrap();
    let r = &model.groups["sg"].rules[0];
    assert_eq!(
        model.remote_nets(r).unwrap(),
        vec!["192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
}

#[test]
fn json_and_msgpack_stop_at_the_same_depth() {
    let mut deep = json!(1);
    for _ in 0..(MAX_DEPTH + 10) {
        deep = json!([deep]);
    }
    let packed = rmp_serde::to_vec(&deep).unwrap();
    for (bytes, format) in [
        (packed, InputFormat::Msgpack),
        (deep.to_string().into_bytes(), InputFormat::Json),
    ] {
        match decode(&bytes, format) {
            Err(Error::Decode { .. }) => {}
            other => panic!("{format:?}: {other:?}"),
        }
    }
    let mut shallow = json!(1);
    for _ in 0..(MAX_DEPTH - 10) {
        shallow = json!([shallow]);
    }
    let packed = rmp_serde::to_vec(&shallow).unwrap();
    assert_eq!(decode(&packed, InputFormat::Msgpack).unwrap(), shallow);
}
