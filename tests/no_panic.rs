//! No input, however malformed, makes the core panic: random values shaped like models (keys
//! from the model's vocabulary, values of any type) go through reading, validation and
//! compilation, and must come back as `Ok` or `Err`.

use proptest::prelude::*;
use serde_json::{Map, Value};
use sgflows::{compile_openflow, parse_value, OpenFlowOptions, ParseOptions};

const KEYS: &[&str] = &[
    "security_groups",
    "ports",
    "devices",
    "sg_member_ips",
    "members",
    "address_groups",
    "networks",
    "bindings",
    "security_group_stateful",
    "id",
    "stateful",
    "rules",
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
    "mac_address",
    "fixed_ips",
    "ip_address",
    "allowed_address_pairs",
    "port_security_enabled",
    "device_owner",
    "network_id",
    "ofport",
    "local_vlan",
    "representor",
    "IPv4",
    "IPv6",
    "addresses",
    "web",
    "p1",
    "n",
];

const STRINGS: &[&str] = &[
    "ingress",
    "egress",
    "IPv4",
    "IPv6",
    "tcp",
    "udp",
    "icmp",
    "dccp",
    "any",
    "6",
    "300",
    "10.0.0.0/8",
    "10.0.0.1",
    "::/0",
    "fe80::1",
    "2001:db8::/129",
    "fa:16:3e:00:00:01",
    "zz:zz",
    "web",
    "p1",
    "n",
    "network:dhcp",
    "",
    "-1",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-2i64..70000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        proptest::sample::select(STRINGS).prop_map(|s| Value::String(s.to_string())),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..6).prop_map(
                |kv| {
                    let mut m = Map::new();
                    for (k, v) in kv {
                        m.insert(k.to_string(), v);
                    }
                    Value::Object(m)
                }
            ),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn reading_and_compiling_never_panic(v in value(), widen in any::<bool>()) {
        let options = ParseOptions { widen_unmatchable_port_ranges: widen, ..ParseOptions::default() };
        if let Ok(model) = parse_value(&v, &options) {
            let _ = compile_openflow(&model, &OpenFlowOptions { max_flows: 100_000, ..OpenFlowOptions::default() });
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = sgflows::load_model(&bytes, sgflows::InputFormat::Auto, &ParseOptions::default());
    }
}
