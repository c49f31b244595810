use super::*;
use crate::model::{parse_value, ParseOptions};

fn model(json: &str) -> Model {
    parse_value(
        &serde_json::from_str(json).unwrap(),
        &ParseOptions::default(),
    )
    .unwrap()
}

fn example() -> Model {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/two-tier.json"
    ))
    .unwrap();
    model(&text)
}

#[test]
fn example_rows_have_neutrons_shape() {
    let out = compile_ovn(&example(), &OvnOptions::default()).unwrap();
    assert_eq!(out.port_groups[0].name, DROP_PORT_GROUP);
    let drops: Vec<&Acl> = out
        .acls
        .iter()
        .filter(|a| a.kind == AclKind::Drop)
        .collect();
    assert_eq!(drops.len(), 3);
    assert!(drops.iter().all(|a| a.action == "drop"));
    assert_eq!(drops.iter().filter(|a| a.priority == 1000).count(), 2);
    assert!(drops[2].priority == 1003 && drops[2].r#match.contains("udp.src == 67"));
    for acl in out.acls.iter().filter(|a| a.kind != AclKind::Drop) {
        assert_eq!(acl.priority, 1002);
        let prefix = match acl.direction {
            AclDirection::ToLport => "outport == ",
            AclDirection::FromLport => "inport == ",
        };
        assert!(acl.r#match.starts_with(prefix), "{}", acl.r#match);
        assert!(!acl.r#match.contains("pg_") || acl.r#match.contains("sgf"));
    }
    print!("{}", out.to_nbctl());
}

const STATELESS: &str = r#"{
  "security_groups": {
    "web": {"stateful": false, "rules": [
      {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
       "port_range_min": 80, "port_range_max": 81, "remote_ip_prefix": "10.0.0.0/25"},
      {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
       "port_range_min": 80, "port_range_max": 81, "remote_ip_prefix": "10.0.0.128/25"},
      {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
       "port_range_min": 80, "port_range_max": 80, "remote_ip_prefix": "10.0.0.7/32"},
      {"direction": "egress", "ethertype": "IPv4", "protocol": "icmp",
       "port_range_min": 8, "port_range_max": 0, "remote_group_id": "web"}
    ]}
  },
  "ports": [
    {"id": "p1", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.5"],
     "security_groups": ["web"]},
    {"id": "p2", "mac_address": "fa:16:3e:00:00:02", "fixed_ips": ["10.0.0.6"],
     "security_groups": ["web"], "port_security_enabled": false}
  ]
}"#;

#[test]
fn stateless_group_algebra_sets_and_dhcp() {
    let out = compile_ovn(&model(STATELESS), &OvnOptions::default()).unwrap();
    let rules: Vec<&Acl> = out
        .acls
        .iter()
        .filter(|a| a.kind == AclKind::Rule)
        .collect();
    // The two /25 halves merge into one /24; the /32 on port 80 is covered by it.
    assert_eq!(rules.len(), 2, "{rules:#?}");
    assert!(rules.iter().all(|a| a.action == "allow-stateless"));
    assert_eq!(
        rules[0].r#match,
        "outport == @sgf_web && ip4 && ip4.src == 10.0.0.0/24 && tcp && tcp.dst >= 80 && tcp.dst <= 81"
    );
    assert_eq!(rules[0].rules.len(), 2);
    assert_eq!(
        rules[1].r#match,
        "inport == @sgf_web && ip4 && ip4.dst == $sgfm_web_ip4 && icmp4 && icmp4.type == 8 && icmp4.code == 0"
    );
    assert_eq!(out.address_sets.len(), 1);
    assert_eq!(out.address_sets[0].name, "sgfm_web_ip4");
    let dhcp: Vec<&str> = out
        .acls
        .iter()
        .filter(|a| a.kind == AclKind::Dhcp)
        .map(|a| a.r#match.as_str())
        .collect();
    // Per family a reply and a request ACL for the group's port group (p2, without port
    // security, is not in it); the request's sources are left to OVN's port security.
    assert_eq!(dhcp.len(), 4, "{dhcp:#?}");
    assert!(dhcp.contains(&"inport == @sgf_web && ip4 && udp && udp.src == 68 && udp.dst == 67"));
    assert!(dhcp.contains(&"inport == @sgf_web && ip6 && udp && udp.src == 546 && udp.dst == 547"));
    assert!(dhcp.contains(&"outport == @sgf_web && ip4 && udp && udp.src == 67 && udp.dst == 68"));
    assert_eq!(out.port_groups[1].ports, vec!["p1".to_string()]);
    assert!(matches!(
        out.stats.per_rule[&RuleRef {
            group: "web".into(),
            index: 2
        }],
        RuleOutcome::Gone(Fate::SubsumedBy(_))
    ));
    assert_eq!(out.stats.per_group["web"], 6);
}

#[test]
fn transact_is_one_request_with_named_uuids() {
    let options = OvnOptions {
        with_ports: true,
        ..OvnOptions::default()
    };
    let out = compile_ovn(&model(STATELESS), &options).unwrap();
    let ops = out.to_transact();
    let ops = ops.as_array().unwrap();
    assert_eq!(ops[0], "OVN_Northbound");
    let acl_ops = ops.iter().filter(|o| o["table"] == "ACL").count();
    assert_eq!(acl_ops, out.acls.len());
    let pg = ops
        .iter()
        .find(|o| o["table"] == "Port_Group" && o["row"]["name"] == "sgf_web")
        .unwrap();
    assert_eq!(
        pg["row"]["ports"],
        serde_json::json!(["set", [["named-uuid", "lsp0"]]])
    );
}

#[test]
fn colliding_names_are_refused() {
    let json = r#"{"security_groups": {"a-b": {"rules": []}, "a_b": {"rules": []}}, "ports": []}"#;
    let err = compile_ovn(&model(json), &OvnOptions::default()).unwrap_err();
    assert!(err.to_string().contains("sgf_a_b"), "{err}");
}
