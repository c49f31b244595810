//! No input, however malformed, makes the core panic: random values shaped like models (keys
//! from the model's vocabulary, values of any type) go through reading, validation and
//! compilation, and must come back as `Ok` or `Err`.

use proptest::prelude::*;
use serde_json::{Map, Value};
use sgflows::{compile_openflow, parse_value, OpenFlowOptions, ParseOptions, UnknownKeys};

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
    fn reading_and_compiling_never_panic(
        v in value(),
        widen in any::<bool>(),
        unknown_keys in proptest::sample::select(vec![None, Some(UnknownKeys::Error), Some(UnknownKeys::Warn), Some(UnknownKeys::Ignore)]),
    ) {
        let options = ParseOptions { widen_unmatchable_port_ranges: widen, unknown_keys };
        if let Ok(model) = parse_value(&v, &options) {
            let _ = compile_openflow(&model, &OpenFlowOptions { max_flows: 100_000, ..OpenFlowOptions::default() });
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = sgflows::load_model(&bytes, sgflows::InputFormat::Auto, &ParseOptions::default());
    }
}

/// A documented model with one object of every kind, each at a known path.
fn documented_base() -> Value {
    serde_json::json!({
        "security_groups": {"web": {"stateful": true, "rules": [
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/8"},
            {"direction": "egress", "ethertype": "IPv4", "remote_address_group_id": "ag"}
        ]}},
        "address_groups": {"ag": {"addresses": ["192.0.2.0/24"]}},
        "networks": {"n": {"local_vlan": 1}},
        "bindings": {"p1": {"ofport": 1}},
        "rte_flow": {"proxy_port": 0},
        "ports": [{"id": "p1", "mac_address": "fa:16:3e:00:00:01", "network_id": "n",
                   "fixed_ips": ["10.0.0.1", {"ip_address": "10.0.0.2"}],
                   "allowed_address_pairs": [{"ip_address": "10.0.0.9"}],
                   "security_groups": ["web"]}]
    })
}

fn rpc_base() -> Value {
    serde_json::json!({
        "devices": {"p1": {"id": "p1", "mac_address": "fa:16:3e:00:00:01",
                           "fixed_ips": [{"ip_address": "10.0.0.1"}],
                           "allowed_address_pairs": [{"ip_address": "10.0.0.9"}],
                           "security_groups": ["sg"]}},
        "security_groups": {"sg": [{"direction": "ingress", "ethertype": "IPv4",
                                    "protocol": "tcp", "source_ip_prefix": "10.0.0.0/8"}]},
        "bindings": {"p1": {"ofport": 1, "local_vlan": 1}}
    })
}

use sgflows::model::keys::{table, Kind};

/// (JSON pointer, path in messages, kind) of every checked object of a base model.
const DOCUMENTED_OBJECTS: &[(&str, &str, Kind)] = &[
    ("", "", Kind::Top),
    ("/security_groups/web", "security_groups.web", Kind::Group),
    (
        "/security_groups/web/rules/0",
        "security_groups.web.rules[0]",
        Kind::Rule,
    ),
    ("/ports/0", "ports[0]", Kind::Port),
    (
        "/ports/0/fixed_ips/1",
        "ports[0].fixed_ips[1]",
        Kind::FixedIp,
    ),
    (
        "/ports/0/allowed_address_pairs/0",
        "ports[0].allowed_address_pairs[0]",
        Kind::Pair,
    ),
    ("/bindings/p1", "bindings.p1", Kind::Binding),
    ("/networks/n", "networks.n", Kind::Network),
    (
        "/address_groups/ag",
        "address_groups.ag",
        Kind::AddressGroup,
    ),
    ("/rte_flow", "rte_flow", Kind::RteFlow),
];

const RPC_OBJECTS: &[(&str, &str, Kind)] = &[
    ("", "", Kind::Top),
    ("/security_groups/sg/0", "security_groups.sg[0]", Kind::Rule),
    ("/devices/p1", "devices.p1", Kind::Port),
    (
        "/devices/p1/fixed_ips/0",
        "devices.p1.fixed_ips[0]",
        Kind::FixedIp,
    ),
    (
        "/devices/p1/allowed_address_pairs/0",
        "devices.p1.allowed_address_pairs[0]",
        Kind::Pair,
    ),
    ("/bindings/p1", "bindings.p1", Kind::Binding),
];

/// One typing slip: a character dropped, doubled or changed, or two swapped.
fn misspell(key: &str, op: u8, at: usize, c: char) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let i = at % (chars.len() + 1);
    match op % 4 {
        0 if !chars.is_empty() => {
            chars.remove(i.min(chars.len() - 1));
        }
        1 => chars.insert(i, c),
        2 if !chars.is_empty() => {
            let j = i.min(chars.len() - 1);
            chars[j] = c;
        }
        _ if chars.len() >= 2 => {
            let j = i.min(chars.len() - 2);
            chars.swap(j, j + 1);
        }
        _ => chars.push(c),
    }
    chars.into_iter().collect()
}

/// The base with `key` of the object at `pointer` renamed to `typo` (or `typo` added when the
/// object lacks `key`; kept beside it when `keep` is set).
fn with_typo(mut base: Value, pointer: &str, key: &str, typo: &str, keep: bool) -> Value {
    let obj = base
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap();
    let value = match obj.get(key) {
        Some(v) if keep => v.clone(),
        Some(_) => obj.remove(key).unwrap(),
        None => Value::String("x".into()),
    };
    obj.insert(typo.to_string(), value);
    base
}

fn typo_case(
    objects: &'static [(&'static str, &'static str, Kind)],
    rpc: bool,
) -> impl Strategy<Value = (&'static str, &'static str, Kind, &'static str, String)> {
    (
        0..objects.len(),
        any::<usize>(),
        any::<u8>(),
        any::<usize>(),
        proptest::char::range('0', 'z'),
    )
        .prop_filter_map(
            "a misspelling that is no known key",
            move |(o, k, op, at, c)| {
                let (pointer, path, kind) = objects[o];
                let t = table(kind, rpc);
                let known: Vec<&'static str> = t.used.iter().chain(t.ignored).copied().collect();
                let key = known[k % known.len()];
                let typo = misspell(key, op, at, c);
                (!typo.is_empty() && !t.knows(&typo)).then_some((pointer, path, kind, key, typo))
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The documented model refuses every misspelt key, at the object's path.
    #[test]
    fn every_misspelt_key_is_an_error_in_the_documented_model(
        (pointer, path, _kind, key, typo) in typo_case(DOCUMENTED_OBJECTS, false)
    ) {
        let v = with_typo(documented_base(), pointer, key, &typo, false);
        let wanted = format!("unknown key {typo:?}");
        match parse_value(&v, &ParseOptions::default()) {
            Err(sgflows::Error::Invalid(issues)) => prop_assert!(
                issues.iter().any(|i| i.path == path && i.message.starts_with(&wanted)),
                "{wanted} at {path:?} not in {issues:?}"
            ),
            other => prop_assert!(false, "{typo:?} for {key:?} at {path:?} accepted: {other:?}"),
        }
    }

    /// Neutron's payload still compiles, with a warning naming every misspelt key.
    #[test]
    fn every_misspelt_key_is_a_warning_in_the_rpc_payload(
        (pointer, path, _kind, key, typo) in typo_case(RPC_OBJECTS, true)
    ) {
        let v = with_typo(rpc_base(), pointer, key, &typo, true);
        let wanted = format!("{typo:?}");
        let model = parse_value(&v, &ParseOptions::default());
        prop_assert!(model.is_ok(), "{typo:?} at {path:?} refused: {model:?}");
        let model = model.unwrap();
        prop_assert!(
            model.warnings.iter().any(|w| w.path == path && w.message.contains(&wanted)),
            "{wanted} at {path:?} not in {:?}", model.warnings
        );
    }
}
