//! Golden files and whole-compile properties of the OpenFlow backend.
//!
//! Regenerate the golden files after an intended change with
//! `SGFLOWS_BLESS=1 cargo test --test golden` and review the diff.

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;
use sgflows::{compile_openflow, load_model, Error, InputFormat, OpenFlowOptions, ParseOptions};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compile_file(rel: &str) -> String {
    let bytes = std::fs::read(root().join(rel)).unwrap();
    let model = load_model(&bytes, InputFormat::Auto, &ParseOptions::default()).unwrap();
    compile_openflow(&model, &OpenFlowOptions::default())
        .unwrap()
        .to_ofctl()
}

fn check_golden(input: &str, golden: &str) {
    let actual = compile_file(input);
    let path = root().join(golden);
    if std::env::var_os("SGFLOWS_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{input} no longer compiles to {golden}; if intended, bless with SGFLOWS_BLESS=1"
    );
}

#[test]
fn two_tier_example_matches_golden() {
    check_golden("examples/two-tier.json", "tests/golden/two-tier.flows");
}

#[test]
fn neutron_rpc_payload_matches_golden() {
    check_golden(
        "tests/data/neutron-rpc-payload.json",
        "tests/golden/neutron-rpc-payload.flows",
    );
}

/// Reverses and rotates every list and reverses every mapping's keys, recursively. Lists
/// directly inside lists are `[ip, mac]` tuples: their contents keep their order.
fn shuffle(v: &Value, salt: usize) -> Value {
    shuffle_in(v, salt, false)
}

fn shuffle_in(v: &Value, salt: usize, tuple: bool) -> Value {
    match v {
        Value::Array(a) if tuple => Value::Array(a.clone()),
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(|x| shuffle_in(x, salt + 1, true)).collect();
            items.reverse();
            if !items.is_empty() {
                let k = salt % items.len();
                items.rotate_left(k);
            }
            Value::Array(items)
        }
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m
                .iter()
                .map(|(k, x)| (k.clone(), shuffle_in(x, salt + 3, false)))
                .collect();
            entries.reverse();
            Value::Object(entries.into_iter().collect())
        }
        other => other.clone(),
    }
}

#[test]
fn shuffled_input_gives_the_same_bytes() {
    for rel in [
        "examples/two-tier.json",
        "tests/data/neutron-rpc-payload.json",
    ] {
        let original = compile_file(rel);
        let value: Value =
            serde_json::from_slice(&std::fs::read(root().join(rel)).unwrap()).unwrap();
        for salt in 0..5 {
            let shuffled = shuffle(&value, salt);
            let model = sgflows::parse_value(&shuffled, &ParseOptions::default()).unwrap();
            let text = compile_openflow(&model, &OpenFlowOptions::default())
                .unwrap()
                .to_ofctl();
            assert_eq!(text, original, "{rel} shuffled with salt {salt}");
        }
    }
}

#[test]
fn every_table_priority_match_appears_once() {
    for rel in [
        "examples/two-tier.json",
        "tests/data/neutron-rpc-payload.json",
    ] {
        let text = compile_file(rel);
        let mut seen = HashSet::new();
        for line in text.lines() {
            let key = line.split(" actions=").next().unwrap();
            assert!(seen.insert(key.to_string()), "{rel}: duplicate {key}");
        }
    }
}

#[test]
fn flow_cap_is_an_error_not_an_allocation() {
    let bytes = std::fs::read(root().join("examples/two-tier.json")).unwrap();
    let model = load_model(&bytes, InputFormat::Auto, &ParseOptions::default()).unwrap();
    let options = OpenFlowOptions {
        max_flows: 50,
        ..OpenFlowOptions::default()
    };
    match compile_openflow(&model, &options) {
        Err(Error::TooManyFlows { limit, .. }) => assert_eq!(limit, 50),
        other => panic!("expected TooManyFlows, got {other:?}"),
    }
}

#[test]
fn stats_add_up() {
    let bytes = std::fs::read(root().join("examples/two-tier.json")).unwrap();
    let model = load_model(&bytes, InputFormat::Auto, &ParseOptions::default()).unwrap();
    let compiled = compile_openflow(&model, &OpenFlowOptions::default()).unwrap();
    let s = &compiled.stats;
    assert_eq!(s.flows, compiled.flows.len());
    assert_eq!(s.per_table.values().sum::<usize>(), s.flows);
    let shared = compiled.flows.iter().filter(|f| f.port.is_none()).count();
    assert_eq!(s.per_port.values().sum::<usize>() + shared, s.flows);
    // Every rule flow is attributed to a rule of the port's groups.
    let rule_flows = compiled.flows.iter().filter(|f| f.rule.is_some()).count();
    assert_eq!(s.per_rule.values().sum::<usize>(), rule_flows);
    assert!(s.per_rule.contains_key("db[1]"), "{:?}", s.per_rule);
}

#[test]
fn cookie_is_on_every_flow() {
    let bytes = std::fs::read(root().join("examples/two-tier.json")).unwrap();
    let model = load_model(&bytes, InputFormat::Auto, &ParseOptions::default()).unwrap();
    let options = OpenFlowOptions {
        cookie: 0xabc,
        ..OpenFlowOptions::default()
    };
    let text = compile_openflow(&model, &options).unwrap().to_ofctl();
    assert!(text.lines().all(|l| l.starts_with("cookie=0xabc,")));
}

#[test]
fn metadata_is_never_implicit() {
    // Only the example's two explicit rules (group edge) mention the metadata address.
    let text = compile_file("examples/two-tier.json");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("169.254.169.254"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("table=72,") && lines[0].contains("tcp_dst=80"));
    assert!(lines[1].contains("table=82,"));
    let rpc = compile_file("tests/data/neutron-rpc-payload.json");
    assert!(!rpc.contains("169.254.169.254") && !rpc.contains("fe80::a9fe:a9fe"));
}

#[test]
fn one_rule_change_is_a_small_diff_that_rebuilds_the_new_flows() {
    let bytes = std::fs::read(root().join("examples/two-tier.json")).unwrap();
    let mut value: Value = serde_json::from_slice(&bytes).unwrap();
    let old_model = sgflows::parse_value(&value, &ParseOptions::default()).unwrap();
    let old = compile_openflow(&old_model, &OpenFlowOptions::default()).unwrap();
    value["security_groups"]["web"]["rules"]
        .as_array_mut()
        .unwrap()
        .push(
            serde_json::json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 8080}),
        );
    let new_model = sgflows::parse_value(&value, &ParseOptions::default()).unwrap();
    let new = compile_openflow(&new_model, &OpenFlowOptions::default()).unwrap();
    let d = sgflows::diff(&old, &new);
    // The web policy gains one flow per conntrack copy; nothing else moves.
    assert_eq!(
        (d.added.len(), d.modified.len(), d.removed.len()),
        (2, 0, 0)
    );
    assert!(d
        .to_bundle()
        .lines()
        .all(|l| l.starts_with("flow add cookie=")));
    assert!(sgflows::diff(&new, &new).is_empty());
    // Applying the diff to the old flow set gives the new one.
    let mut flows: std::collections::BTreeMap<String, std::sync::Arc<str>> = old
        .flows
        .iter()
        .map(|f| {
            (
                format!("{}/{}/{}", f.table, f.priority, f.matches),
                f.actions.clone(),
            )
        })
        .collect();
    let back = sgflows::diff(&new, &old);
    for f in back.added.iter().chain(&d.added) {
        flows.insert(
            format!("{}/{}/{}", f.table, f.priority, f.matches),
            f.actions.clone(),
        );
    }
    for f in &back.added {
        flows.remove(&format!("{}/{}/{}", f.table, f.priority, f.matches));
    }
    assert_eq!(flows.len(), new.flows.len());
}

#[test]
fn foreign_ports_leave_table_60_to_the_agent() {
    // Driver mode: only per-port flows at 100 (in_port) and 90 (VLAN + MAC) in the classify
    // table; no default, no flood replication, no unknown-unicast drop.
    let bytes = std::fs::read(root().join("examples/two-tier.json")).unwrap();
    let model = load_model(&bytes, InputFormat::Auto, &ParseOptions::default()).unwrap();
    let options = OpenFlowOptions {
        foreign_ports: true,
        entry_flow: false,
        ..OpenFlowOptions::default()
    };
    let compiled = compile_openflow(&model, &options).unwrap();
    let classify: Vec<_> = compiled.flows.iter().filter(|f| f.table == 60).collect();
    assert!(!classify.is_empty());
    assert!(classify
        .iter()
        .all(|f| f.priority == 100 || f.priority == 90));
    assert!(compiled.flows.iter().all(|f| f.table != 0));
    let default = compile_openflow(&model, &OpenFlowOptions::default()).unwrap();
    let default_classify = default.flows.iter().filter(|f| f.table == 60).count();
    assert!(default_classify > classify.len());
}
