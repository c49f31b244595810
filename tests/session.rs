//! Compiler sessions: for random models and random change sequences, (1) the session's flows
//! equal a fresh compile of its final model, byte for byte (ids included), and (2) each
//! step's diff applied to the previous flows gives the next ones, and is exactly the set
//! difference of the two fresh compiles (minimal).

use proptest::prelude::*;
use serde_json::{json, Value};
use sgflows::model::{Members, Port, Rule};
use sgflows::{
    compile_openflow, diff, parse_value, Change, Flow, MemberSet, Model, OpenFlowOptions,
    ParseOptions, Session,
};

const GROUPS: [&str; 3] = ["a", "b", "c"];

/// A pool of rules: the generator picks from it, so that adds and removes hit.
fn rule_pool() -> Vec<Value> {
    vec![
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22}),
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 90}),
        json!({"direction": "ingress", "protocol": "udp", "remote_group_id": "a"}),
        json!({"direction": "ingress", "remote_group_id": "b"}),
        json!({"direction": "egress"}),
        json!({"direction": "egress", "protocol": "tcp", "remote_ip_prefix": "10.1.0.0/16"}),
        json!({"direction": "ingress", "protocol": "icmp", "remote_group_id": "c"}),
        json!({"direction": "egress", "ethertype": "IPv6", "protocol": "tcp", "port_range_min": 443,
               "remote_group_id": "a"}),
    ]
}

/// A pool whose remote-group rules sit apart from rules with addresses of their own, so that
/// with conjunctions a member change reaches only the conjunction member lists; except for
/// remote `b`, which an egress UDP prefix may cover (its members decide subsumption).
fn member_pool() -> Vec<Value> {
    vec![
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "remote_group_id": "a"}),
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 90,
               "remote_group_id": "a"}),
        json!({"direction": "egress", "protocol": "udp", "remote_group_id": "b"}),
        json!({"direction": "ingress", "protocol": "icmp", "remote_ip_prefix": "10.9.0.0/28"}),
        json!({"direction": "egress", "protocol": "udp", "remote_ip_prefix": "10.9.0.0/29"}),
        json!({"direction": "ingress", "protocol": "udp", "remote_group_id": "c"}),
        json!({"direction": "ingress", "remote_ip_prefix": "0.0.0.0/0"}),
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 85, "port_range_max": 99,
               "remote_group_id": "a"}),
    ]
}

/// A pool where changes move rules between "subsumed" and "kept" across the algebra's
/// buckets: any-protocol rules over protocol rules of their direction and family, ranges that
/// merge, a remote group a wider prefix covers (until a member is everywhere).
fn bucket_pool() -> Vec<Value> {
    vec![
        json!({"direction": "ingress", "remote_ip_prefix": "10.9.0.0/16"}),
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22,
               "remote_ip_prefix": "10.9.0.0/24"}),
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 23, "port_range_max": 30,
               "remote_ip_prefix": "10.9.0.0/24"}),
        json!({"direction": "ingress", "protocol": "udp", "remote_group_id": "a"}),
        json!({"direction": "ingress", "protocol": "tcp", "port_range_min": 22,
               "remote_ip_prefix": "192.0.2.0/24"}),
        json!({"direction": "ingress", "remote_group_id": "b"}),
        json!({"direction": "egress", "protocol": "tcp", "port_range_min": 443,
               "remote_ip_prefix": "10.1.0.0/16"}),
        json!({"direction": "egress"}),
    ]
}

fn port_json(i: usize, groups: &[&str], ips: usize) -> Value {
    let fixed: Vec<String> = (0..ips).map(|k| format!("10.0.{k}.{}", i + 1)).collect();
    json!({"id": format!("p{i}"), "mac_address": format!("fa:16:3e:00:00:{:02x}", i + 1),
           "fixed_ips": fixed, "security_groups": groups, "ofport": i + 1,
           "local_vlan": 1 + i % 2})
}

/// Parses a model where every group has every pool rule, to get typed rules and ports.
fn universe(pool: fn() -> Vec<Value>) -> (Vec<Rule>, Vec<Port>, Vec<Port>) {
    let groups: serde_json::Map<String, Value> = GROUPS
        .iter()
        .map(|g| (g.to_string(), json!({"rules": pool()})))
        .collect();
    let ports: Vec<Value> = (0..8).map(|i| port_json(i, &[GROUPS[i % 3]], 1)).collect();
    let alt: Vec<Value> = (0..8)
        .map(|i| {
            let mut p = port_json(i + 8, &[GROUPS[(i + 1) % 3], GROUPS[(i + 2) % 3]], 2);
            p["id"] = json!(format!("p{i}"));
            p["ofport"] = json!(i + 1);
            p
        })
        .collect();
    let parse = |ports: Vec<Value>| {
        parse_value(
            &json!({"security_groups": groups, "ports": ports}),
            &ParseOptions::default(),
        )
        .unwrap()
    };
    let m = parse(ports);
    let rules = m.groups["a"].rules.clone();
    (rules, m.ports, parse(alt).ports)
}

/// What the generator draws; turned into a `Change` against the universe.
#[derive(Debug, Clone)]
enum Step {
    TogglePort(usize),
    UpdatePort(usize, bool),
    AddRule(usize, usize),
    RemoveRule(usize, usize),
    SetRules(usize, Vec<usize>),
    AddMember(usize, u8),
    RemoveMember(usize, u8),
    SetStateful(usize, bool),
    Batch(Vec<Step>),
}

fn simple_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..8usize).prop_map(Step::TogglePort),
        (0..8usize, any::<bool>()).prop_map(|(p, alt)| Step::UpdatePort(p, alt)),
        (0..3usize, 0..8usize).prop_map(|(g, r)| Step::AddRule(g, r)),
        (0..3usize, 0..8usize).prop_map(|(g, r)| Step::RemoveRule(g, r)),
        (0..3usize, proptest::collection::vec(0..8usize, 0..4))
            .prop_map(|(g, r)| Step::SetRules(g, r)),
        (0..3usize, 1..20u8).prop_map(|(g, a)| Step::AddMember(g, a)),
        (0..3usize, 1..20u8).prop_map(|(g, a)| Step::RemoveMember(g, a)),
        (0..3usize, any::<bool>()).prop_map(|(g, s)| Step::SetStateful(g, s)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => simple_step(),
        1 => proptest::collection::vec(simple_step(), 1..4).prop_map(Step::Batch),
    ]
}

fn member(addr: u8) -> Members {
    // One draw in nineteen is everywhere: then an everywhere prefix no longer covers it.
    let net = if addr == 19 {
        "0.0.0.0/0".to_string()
    } else {
        format!("10.9.0.{addr}/32")
    };
    Members {
        nets: vec![net.parse().unwrap()],
    }
}

fn change(step: &Step, model: &Model, rules: &[Rule], ports: &[Port], alts: &[Port]) -> Change {
    let group = |g: usize| GROUPS[g].to_string();
    match step {
        Step::TogglePort(i) if model.ports.iter().any(|p| p.id == ports[*i].id) => {
            Change::RemovePort(ports[*i].id.clone())
        }
        Step::TogglePort(i) => Change::AddPort(ports[*i].clone()),
        Step::UpdatePort(i, alt) => Change::UpdatePort(if *alt {
            alts[*i].clone()
        } else {
            ports[*i].clone()
        }),
        Step::AddRule(g, r) => Change::AddRules {
            group: group(*g),
            rules: vec![rules[*r].clone()],
        },
        Step::RemoveRule(g, r) => Change::RemoveRules {
            group: group(*g),
            rules: vec![rules[*r].clone()],
        },
        Step::SetRules(g, rs) => Change::SetRules {
            group: group(*g),
            rules: rs.iter().map(|r| rules[*r].clone()).collect(),
        },
        Step::AddMember(g, a) => Change::AddMembers {
            group: group(*g),
            set: MemberSet::Group,
            members: member(*a),
        },
        Step::RemoveMember(g, a) => Change::RemoveMembers {
            group: group(*g),
            set: MemberSet::Group,
            members: member(*a),
        },
        Step::SetStateful(g, s) => Change::SetStateful {
            group: group(*g),
            stateful: *s,
        },
        Step::Batch(steps) => Change::Batch(
            steps
                .iter()
                .map(|s| change(s, model, rules, ports, alts))
                .collect(),
        ),
    }
}

fn initial(pool: fn() -> Vec<Value>, n_ports: usize, n_rules: usize, stateless: bool) -> Model {
    let pool = pool();
    let groups: serde_json::Map<String, Value> = GROUPS
        .iter()
        .enumerate()
        .map(|(k, g)| {
            let rules: Vec<Value> = pool.iter().skip(k).take(n_rules).cloned().collect();
            (
                g.to_string(),
                json!({"rules": rules, "stateful": !(stateless && k == 2)}),
            )
        })
        .collect();
    let ports: Vec<Value> = (0..n_ports)
        .map(|i| port_json(i, &[GROUPS[i % 3]], 1))
        .collect();
    parse_value(
        &json!({"security_groups": groups, "ports": ports, "sg_member_ips": {
            "a": {"IPv4": ["10.9.0.1", "10.9.0.2"]},
            "b": {"IPv4": ["10.9.0.1", "10.9.0.3", "10.9.0.9"]},
            "c": {"IPv4": ["10.9.0.4", "10.9.0.5"]},
        }}),
        &ParseOptions::default(),
    )
    .unwrap()
}

fn lines(flows: &[Flow]) -> Vec<String> {
    flows
        .iter()
        .map(|f| format!("{} {} {} {}", f.table, f.priority, f.matches, f.actions))
        .collect()
}

struct Case {
    n_ports: usize,
    n_rules: usize,
    stateless: bool,
    options: OpenFlowOptions,
    steps: Vec<Step>,
}

/// Runs a case against a fresh compile after every step.
fn check(pool: fn() -> Vec<Value>, case: Case) -> Result<(), TestCaseError> {
    let options = case.options;
    let (rules, ports, alts) = universe(pool);
    let model = initial(pool, case.n_ports, case.n_rules, case.stateless);
    let mut session = Session::new(model, options.clone()).unwrap();
    prop_assert_eq!(
        session.compiled(),
        &compile_openflow(session.model(), &options).unwrap()
    );
    for step in &case.steps {
        let before = session.compiled().clone();
        let model_before = session.model().clone();
        let change = change(step, session.model(), &rules, &ports, &alts);
        match session.apply(change) {
            Ok(d) => {
                let fresh = compile_openflow(session.model(), &options).unwrap();
                // (1) byte for byte, ids included.
                prop_assert_eq!(session.compiled().to_ofctl(), fresh.to_ofctl());
                // Origins and statistics too: the session is the compile.
                prop_assert_eq!(session.compiled(), &fresh);
                // (2) previous flows + diff = next flows.
                prop_assert_eq!(lines(&d.apply_to(&before.flows)), lines(&fresh.flows));
                // Minimal: exactly the difference of the two fresh compiles.
                let old_fresh = compile_openflow(&model_before, &options).unwrap();
                prop_assert_eq!(&d, &diff(&old_fresh, &fresh));
            }
            // A refused change (e.g. a port whose groups disagree on statefulness)
            // leaves the session as it was.
            Err(_) => {
                prop_assert_eq!(session.model(), &model_before);
                prop_assert_eq!(session.compiled(), &before);
            }
        }
    }
    Ok(())
}

fn options() -> impl Strategy<Value = OpenFlowOptions> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(conjunctions, share_policies, shared_stage, filter_local_flood)| OpenFlowOptions {
            conjunctions,
            share_policies,
            shared_stage,
            filter_local_flood,
            ..OpenFlowOptions::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn session_equals_fresh_compile_and_diffs_chain(
        n_ports in 0..6usize,
        n_rules in 0..6usize,
        stateless in any::<bool>(),
        options in options(),
        steps in proptest::collection::vec(step(), 1..10),
    ) {
        check(rule_pool, Case { n_ports, n_rules, stateless, options, steps })?;
    }

    /// Remote groups whose members reach only conjunction member lists (and one whose
    /// members decide subsumption): member changes skip the rule algebra where they may.
    #[test]
    fn member_changes_equal_fresh_compile(
        n_ports in 1..6usize,
        n_rules in 2..8usize,
        stateless in any::<bool>(),
        options in options(),
        steps in proptest::collection::vec(step(), 1..10),
    ) {
        check(member_pool, Case { n_ports, n_rules, stateless, options, steps })?;
    }

    /// Rule and member changes that move other rules between subsumed and kept, in the
    /// buckets the session recomputes alone.
    #[test]
    fn bucket_changes_equal_fresh_compile(
        n_ports in 1..6usize,
        n_rules in 2..8usize,
        stateless in any::<bool>(),
        options in options(),
        steps in proptest::collection::vec(step(), 1..10),
    ) {
        check(bucket_pool, Case { n_ports, n_rules, stateless, options, steps })?;
    }
}

#[test]
fn a_rule_change_recomputes_only_its_buckets() {
    let (rules, _, _) = universe(bucket_pool);
    let mut session = Session::new(
        initial(bucket_pool, 3, 8, false),
        OpenFlowOptions::default(),
    )
    .unwrap();
    let add = |session: &mut Session, rule: &Rule| {
        let before = session.bucket_recomputes();
        session
            .apply(Change::AddRules {
                group: "a".into(),
                rules: vec![rule.clone()],
            })
            .unwrap();
        session.bucket_recomputes() - before
    };
    let mut egress_udp = rules[6].clone();
    egress_udp.protocol = Some(17);
    egress_udp.id = None;
    // A new (egress, IPv4, udp) bucket of the one policy made of group "a".
    assert_eq!(add(&mut session, &egress_udp), 1);
    assert_eq!(
        session.compiled(),
        &compile_openflow(session.model(), &OpenFlowOptions::default()).unwrap()
    );
    // An any-protocol rule may cover every rule of its direction and family: the three
    // ingress IPv4 buckets (any, tcp, udp) of the policy.
    let mut ingress_any = rules[0].clone();
    ingress_any.remote = sgflows::model::Remote::Prefix("10.0.0.0/8".parse().unwrap());
    assert_eq!(add(&mut session, &ingress_any), 3);
    assert_eq!(
        session.compiled(),
        &compile_openflow(session.model(), &OpenFlowOptions::default()).unwrap()
    );
}

#[test]
fn removing_a_rule_reruns_the_algebra_of_its_bucket_only() {
    let (rules, _, _) = universe(bucket_pool);
    let options = OpenFlowOptions::default();
    let mut session = Session::new(initial(bucket_pool, 3, 8, false), options.clone()).unwrap();
    let before = session.bucket_recomputes();
    // Rule 1 of "a" (ingress IPv4 tcp): rules 2..7 are renumbered, which reaches every bucket
    // of the policy; only the tcp bucket lost a rule.
    session
        .apply(Change::RemoveRules {
            group: "a".into(),
            rules: vec![rules[1].clone()],
        })
        .unwrap();
    assert_eq!(session.bucket_recomputes() - before, 1);
    let fresh = compile_openflow(session.model(), &options).unwrap();
    assert_eq!(session.compiled(), &fresh);
}

#[test]
fn references_show_positions_whatever_holes_the_session_numbers_have() {
    // Inside the session a removed rule leaves a hole in its group's numbers and an added
    // one takes the number after the largest; flows, statistics, fates and every diff (its
    // removed flows as they were) show positions, as a fresh compile does.
    let (rules, _, _) = universe(bucket_pool);
    let options = OpenFlowOptions::default();
    let mut session = Session::new(initial(bucket_pool, 3, 8, false), options.clone()).unwrap();
    let steps = [
        Change::RemoveRules {
            group: "a".into(),
            rules: vec![rules[1].clone()],
        },
        Change::RemoveRules {
            group: "a".into(),
            rules: vec![rules[0].clone(), rules[5].clone()],
        },
        Change::AddRules {
            group: "a".into(),
            rules: vec![rules[1].clone()],
        },
        Change::Batch(vec![
            Change::RemoveRules {
                group: "a".into(),
                rules: vec![rules[7].clone()],
            },
            Change::AddRules {
                group: "a".into(),
                rules: vec![rules[0].clone()],
            },
        ]),
        Change::SetRules {
            group: "a".into(),
            rules: rules[2..6].to_vec(),
        },
    ];
    for step in steps {
        let old = compile_openflow(session.model(), &options).unwrap();
        let d = session.apply(step).unwrap();
        let fresh = compile_openflow(session.model(), &options).unwrap();
        assert_eq!(session.compiled(), &fresh);
        assert_eq!(d, diff(&old, &fresh));
    }
}

#[test]
fn rule_indexes_follow_the_final_list() {
    let (rules, _, _) = universe(rule_pool);
    let mut session =
        Session::new(initial(rule_pool, 3, 3, false), OpenFlowOptions::default()).unwrap();
    session
        .apply(Change::RemoveRules {
            group: "a".into(),
            rules: vec![rules[0].clone()],
        })
        .unwrap();
    let indexes: Vec<usize> = session.model().groups["a"]
        .rules
        .iter()
        .map(|r| r.index)
        .collect();
    assert_eq!(indexes, vec![0, 1]);
}

#[test]
fn unknown_port_is_an_error_and_changes_nothing() {
    let mut session =
        Session::new(initial(rule_pool, 2, 2, false), OpenFlowOptions::default()).unwrap();
    let before = session.compiled().to_ofctl();
    assert!(session.apply(Change::RemovePort("nope".into())).is_err());
    assert_eq!(session.compiled().to_ofctl(), before);
}

#[test]
fn one_rule_added_gives_a_small_diff_that_a_fresh_compile_agrees_with() {
    let (rules, ports, _) = universe(rule_pool);
    let mut session =
        Session::new(initial(rule_pool, 4, 1, false), OpenFlowOptions::default()).unwrap();
    let old = session.compiled().clone();
    let d = session
        .apply(Change::AddRules {
            group: "a".into(),
            rules: vec![rules[1].clone()],
        })
        .unwrap();
    assert!(!d.added.is_empty());
    assert!(d.added.len() + d.modified.len() + d.removed.len() < old.flows.len());
    let d = session.apply(Change::AddPort(ports[6].clone())).unwrap();
    assert!(!d.added.is_empty());
    assert_eq!(
        session.compiled().to_ofctl(),
        compile_openflow(session.model(), &OpenFlowOptions::default())
            .unwrap()
            .to_ofctl()
    );
}

#[test]
fn a_member_change_on_conjunctions_reruns_no_rule_algebra() {
    let options = OpenFlowOptions {
        conjunctions: true,
        ..OpenFlowOptions::default()
    };
    let mut session = Session::new(initial(member_pool, 4, 3, false), options.clone()).unwrap();
    let runs = session.policy_recomputes();
    let add = |addr| Change::AddMembers {
        group: "a".into(),
        set: MemberSet::Group,
        members: member(addr),
    };
    let d = session.apply(add(7)).unwrap();
    assert!(!d.added.is_empty());
    assert_eq!(
        session.policy_recomputes(),
        runs,
        "a's rules are all conjunctions"
    );
    let fresh = compile_openflow(session.model(), &options).unwrap();
    assert_eq!(session.compiled(), &fresh);
    // b's members decide whether the egress UDP prefix covers its rule: its policies rerun.
    session
        .apply(Change::RemoveMembers {
            group: "b".into(),
            set: MemberSet::Group,
            members: member(9),
        })
        .unwrap();
    assert!(session.policy_recomputes() > runs);
    let fresh = compile_openflow(session.model(), &options).unwrap();
    assert_eq!(session.compiled(), &fresh);
}

#[test]
fn covered_rules_and_covered_remotes_rerun_only_what_they_reach() {
    // Group "a": ingress from anywhere (any protocol) covers ingress from remote "b" (any
    // protocol) and every ingress rule; two protocol buckets sit beside them.
    let model = parse_value(
        &json!({"security_groups": {"a": {"rules": [
            {"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8"},
            {"direction": "ingress", "remote_group_id": "b"},
            {"direction": "ingress", "protocol": "tcp", "port_range_min": 22,
             "remote_ip_prefix": "192.0.2.0/24"},
            {"direction": "ingress", "protocol": "udp", "port_range_min": 53,
             "remote_ip_prefix": "192.0.2.0/24"},
        ]}}, "ports": [port_json(0, &["a"], 1)], "sg_member_ips": {
            "b": {"IPv4": ["10.9.0.1", "10.9.0.3"]},
        }}),
        &ParseOptions::default(),
    )
    .unwrap();
    let options = OpenFlowOptions::default();
    let mut session = Session::new(model, options.clone()).unwrap();
    let mut runs = session.bucket_recomputes();
    let mut check = |session: &mut Session, change: Change, expected: usize, why: &str| {
        let before = session.compiled().clone();
        let d = session.apply(change).unwrap();
        assert_eq!(session.bucket_recomputes() - runs, expected, "{why}");
        runs = session.bucket_recomputes();
        let fresh = compile_openflow(session.model(), &options).unwrap();
        assert_eq!(session.compiled(), &fresh, "{why}");
        assert_eq!(d, diff(&before, &fresh), "{why}");
    };
    // b's rule is covered by the 10.0.0.0/8 rule before and after: only the any-protocol
    // bucket reruns, not the tcp and udp buckets.
    let members = Members {
        nets: vec!["10.9.0.7/32".parse().unwrap()],
    };
    let add = Change::AddMembers {
        group: "b".into(),
        set: MemberSet::Group,
        members: members.clone(),
    };
    check(&mut session, add, 1, "a covered remote's members");
    // A member outside 10.0.0.0/8 uncovers b's rule: a new survivor, but one that covers
    // neither the tcp nor the udp rule, so their buckets keep their runs.
    let outside = Change::AddMembers {
        group: "b".into(),
        set: MemberSet::Group,
        members: Members {
            nets: vec!["192.0.2.9/32".parse().unwrap()],
        },
    };
    check(&mut session, outside, 1, "an uncovered remote");
    // A member covering 192.0.2.0/24: the survivor now covers both protocol rules, and their
    // buckets rerun.
    let covering = Change::AddMembers {
        group: "b".into(),
        set: MemberSet::Group,
        members: Members {
            nets: vec!["192.0.2.0/24".parse().unwrap()],
        },
    };
    check(
        &mut session,
        covering,
        3,
        "a remote covering the protocol rules",
    );
    // A tcp rule the 10.0.0.0/8 rule covers: no algebra, only its fate.
    let covered: Rule = {
        let (rules, _, _) = universe(bucket_pool);
        let mut r = rules[1].clone();
        r.id = None;
        r.l4 = sgflows::model::L4::Ports {
            dst: sgflows::model::PortRange {
                min: 4000,
                max: 4000,
            },
            src: sgflows::model::PortRange::ANY,
        };
        r.remote = sgflows::model::Remote::Prefix("10.200.0.0/16".parse().unwrap());
        r
    };
    let add_rule = Change::AddRules {
        group: "a".into(),
        rules: vec![covered],
    };
    check(&mut session, add_rule, 0, "a covered rule");
    assert!(session
        .compiled()
        .stats
        .rule_fates
        .get("a[4]")
        .is_some_and(|f| f.iter().any(|s| s.contains("subsumed by a[0]"))));
}

/// A port bound to an OpenFlow number, a network (or none) and a local VLAN, with its
/// address and groups drawn from a few: conflicts between numbers and (network, VLAN) pairs
/// are common.
fn bound_port(i: usize, ofport: u32, network: Option<u8>, vlan: u16, ip: u8) -> Port {
    let mut p = json!({"id": format!("q{i}"), "mac_address": format!("fa:16:3e:00:01:{:02x}", i + 1),
                       "fixed_ips": [format!("10.0.9.{ip}")], "security_groups": [GROUPS[i % 2]],
                       "ofport": ofport, "local_vlan": vlan});
    if let Some(n) = network {
        p["network_id"] = json!(format!("net{n}"));
    }
    let groups: serde_json::Map<String, Value> = GROUPS
        .iter()
        .map(|g| (g.to_string(), json!({"rules": rule_pool()})))
        .collect();
    let m = parse_value(
        &json!({"security_groups": groups, "ports": [p]}),
        &ParseOptions::default(),
    )
    .unwrap();
    m.ports[0].clone()
}

/// A port's (OpenFlow number, network, VLAN, address) as drawn.
type Bound = (u32, Option<u8>, u16, u8);

/// A port change drawn against a handful of ids: add or update (numbers, networks and VLANs
/// that may collide with another port's), or remove.
fn bound_step() -> impl Strategy<Value = (usize, Option<Bound>)> {
    (
        0..5usize,
        proptest::option::weighted(
            0.8,
            (1..5u32, proptest::option::of(0..2u8), 1..3u16, 1..3u8),
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    /// The bindings index: a port change is refused exactly when a fresh check of the
    /// changed model refuses it, with the same messages, and an accepted one leaves the
    /// fresh compile's flows.
    #[test]
    fn port_bindings_are_checked_like_a_fresh_model(
        options in options(),
        steps in proptest::collection::vec(bound_step(), 1..16),
    ) {
        let mut model = initial(rule_pool, 0, 4, false);
        model.ports = vec![bound_port(0, 1, Some(0), 1, 1)];
        let mut session = Session::new(model, options.clone()).unwrap();
        for (i, drawn) in steps {
            let mut expected = session.model().clone();
            let id = format!("q{i}");
            let at = expected.ports.binary_search_by(|p| p.id.cmp(&id));
            let change = match (drawn, at) {
                (Some((ofport, network, vlan, ip)), at) => {
                    let port = bound_port(i, ofport, network, vlan, ip);
                    match at {
                        Ok(at) => {
                            expected.ports[at] = port.clone();
                            Change::UpdatePort(port)
                        }
                        Err(at) => {
                            expected.ports.insert(at, port.clone());
                            Change::AddPort(port)
                        }
                    }
                }
                (None, Ok(at)) => {
                    expected.ports.remove(at);
                    Change::RemovePort(id)
                }
                (None, Err(_)) => continue,
            };
            let issues = sgflows::model::check_model(&expected);
            let fresh = if issues.is_empty() {
                compile_openflow(&expected, &options).map_err(|e| e.to_string())
            } else {
                Err(sgflows::Error::Invalid(issues).to_string())
            };
            let before = session.model().clone();
            match (session.apply(change), fresh) {
                (Ok(_), Ok(fresh)) => {
                    prop_assert_eq!(session.model(), &expected);
                    prop_assert_eq!(session.compiled(), &fresh);
                }
                (Err(e), Err(fresh)) => {
                    prop_assert_eq!(e.to_string(), fresh);
                    prop_assert_eq!(session.model(), &before);
                }
                (got, fresh) => prop_assert!(false, "session {:?}, fresh {:?}", got.map(|_| ()), fresh.map(|_| ())),
            }
        }
    }
}

#[test]
fn a_conjunction_id_collision_moves_ids_as_a_fresh_compile_does() {
    // The conjunction names of these two remotes (ingress, IPv4, new connections, any
    // protocol) hash to one id: the first in name order keeps it, the other probes to the
    // next. Removing the first's rule moves the other's id down, adding it back moves it up.
    let (first, second) = ("m23614", "m34288");
    assert_eq!(
        sgflows::ir::ids::id_of(&format!("group:{first}|ingress|IPv4|new|0")),
        sgflows::ir::ids::id_of(&format!("group:{second}|ingress|IPv4|new|0")),
    );
    let rule = |remote: &str| json!({"direction": "ingress", "remote_group_id": remote});
    let model = parse_value(
        &json!({"security_groups": {
            "web": {"rules": [rule(first), rule(second)]},
            first: {"rules": []},
            second: {"rules": []},
        }, "ports": [port_json(0, &["web"], 1)], "sg_member_ips": {
            // 10.9.0.2 is in both: its flow carries both conjunctions.
            first: {"IPv4": ["10.9.0.1", "10.9.0.2"]},
            second: {"IPv4": ["10.9.0.2", "10.9.0.3"]},
        }}),
        &ParseOptions::default(),
    )
    .unwrap();
    let rules: Vec<Rule> = model.groups["web"].rules.clone();
    let options = OpenFlowOptions::default();
    let mut session = Session::new(model, options.clone()).unwrap();
    assert_eq!(
        session.compiled(),
        &compile_openflow(session.model(), &options).unwrap()
    );
    let remove_first = || Change::RemoveRules {
        group: "web".into(),
        rules: vec![rules[0].clone()],
    };
    let restore = || Change::SetRules {
        group: "web".into(),
        rules: rules.clone(),
    };
    let new_member = || Change::AddMembers {
        group: second.into(),
        set: MemberSet::Group,
        members: Members {
            nets: vec!["10.9.0.4/32".parse().unwrap()],
        },
    };
    let steps = [
        ("the first's rule removed", remove_first()),
        ("the first's rule back", restore()),
        (
            "the first's rule removed as the second's members change",
            Change::Batch(vec![remove_first(), new_member()]),
        ),
        ("the first's rule back again", restore()),
    ];
    for (why, change) in steps {
        let before = session.compiled().clone();
        let shifts = session.id_shifts();
        let d = session.apply(change).unwrap();
        assert!(session.id_shifts() > shifts, "{why}: an id moved");
        let fresh = compile_openflow(session.model(), &options).unwrap();
        assert_eq!(session.compiled().to_ofctl(), fresh.to_ofctl(), "{why}");
        assert_eq!(session.compiled(), &fresh, "{why}");
        assert_eq!(d, diff(&before, &fresh), "{why}");
    }
}
