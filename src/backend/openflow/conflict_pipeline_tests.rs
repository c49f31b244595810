//! The pipeline's builder refuses one flow key with two actions, in every build, and holds
//! the flow cap exactly although it keeps repeats until it sorts.

use std::sync::Arc;

use super::*;
use crate::model::RuleRef;

#[test]
fn one_flow_key_with_two_actions_is_an_internal_error() {
    let opts = OpenFlowOptions::default();
    let policies = std::collections::BTreeMap::new();
    let rule = Arc::new(RuleRef {
        group: "web".into(),
        index: 0,
    });
    let (p1, p2): (Arc<str>, Arc<str>) = ("p1".into(), "p2".into());
    let m = || Match::new().f("reg5", 7u32);
    let mut b = Builder::new(&opts, &policies);
    b.add(82, 70, m(), "drop".into(), Some(&p1), Some(&rule))
        .unwrap();
    // The same flow again is a duplicate, counted, not an error.
    b.add(82, 70, m(), "drop".into(), Some(&p2), None).unwrap();
    let (flows, duplicates) = b.sorted_flows().unwrap();
    assert_eq!((flows.len(), duplicates), (1, 1));
    // The first emitted is the one kept.
    assert_eq!(flows[0].1.port.as_deref(), Some("p1"));

    let mut b = Builder::new(&opts, &policies);
    b.add(82, 70, m(), "drop".into(), Some(&p1), Some(&rule))
        .unwrap();
    b.add(82, 70, m(), "NORMAL".into(), Some(&p2), None)
        .unwrap();
    let err = b.sorted_flows().unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Internal(_)), "{text}");
    assert!(text.contains("port p1, rule web[0]"), "{text}");
    assert!(text.contains("from port p2"), "{text}");
    assert!(text.contains("table=82,priority=70,reg5=7"), "{text}");
}

#[test]
fn the_cap_counts_distinct_flows() {
    let opts = OpenFlowOptions {
        max_flows: 3,
        ..OpenFlowOptions::default()
    };
    let policies = std::collections::BTreeMap::new();
    let m = |n: u32| Match::new().f("reg5", n);
    let mut b = Builder::new(&opts, &policies);
    // Three distinct flows, each repeated: at the cap, not over it.
    for n in [1, 2, 1, 3, 2, 3, 1] {
        b.add(82, 70, m(n), "drop".into(), None, None).unwrap();
    }
    // A fourth distinct flow is one too many.
    assert!(matches!(
        b.add(82, 70, m(4), "drop".into(), None, None),
        Err(Error::TooManyFlows { limit: 3, .. })
    ));
    let (flows, duplicates) = b.sorted_flows().unwrap();
    assert_eq!((flows.len(), duplicates), (3, 4));
}

#[test]
fn the_prefix_sort_orders_as_the_keys_do() {
    // Matches with long common prefixes, short ones, equal keys from different origins.
    let texts = [
        "",
        "a",
        "reg7=1",
        "reg7=10",
        "reg7=1001961375,icmp",
        "reg7=1001961375,ip",
        "reg7=1001961375,icmp,icmp_type=3",
        "reg5=10,arp",
        "reg5=100,arp",
        "reg5=10,ip",
        "ip,nw_src=10.0.1.2",
        "ip,nw_src=10.0.1.20",
        "ip,nw_src=10.0.1.2\0",
        "ip,nw_src=10.0.1.2\0\0",
        "reg7=1001961375,icmp,icmp_type=3,icmp_code=1",
        "reg7=1001961375,icmp,icmp_type=3,icmp_code=10",
        "reg7=1001961375,icmp,icmp_type=3,icmp_code=1,nw_dst=10.1.2.3",
        "reg7=1001961375,icmp,icmp_type=3,icmp_code=1,nw_dst=10.1.2.30",
    ];
    let mut seed = 7u64;
    let mut next = move || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) as usize
    };
    // Below and above the radix sort's threshold; one table and priority for all (the radix
    // sort skips byte positions every prefix shares).
    let (tables, priorities) = (&[60, 71, 82][..], &[0, 70, 95, 100][..]);
    for (n, tables, priorities) in [
        (40, tables, priorities),
        (400, tables, priorities),
        (5000, tables, priorities),
        (5000, &[82][..], &[70][..]),
    ] {
        sorts_like_the_keys(&texts, n, (tables, priorities), &mut next);
    }
}

fn sorts_like_the_keys(
    texts: &[&str],
    n: usize,
    (tables, priorities): (&[u8], &[u16]),
    next: &mut impl FnMut() -> usize,
) {
    let mut flows: Vec<(Key, Entry)> = (0..n)
        .map(|i| {
            let key = Key {
                table: tables[next() % tables.len()],
                priority: Reverse(priorities[next() % priorities.len()]),
                matches: texts[next() % texts.len()].to_string(),
            };
            let entry = Entry {
                actions: "drop".into(),
                port: Some(i.to_string().into()),
                rule: None,
            };
            (key, entry)
        })
        .collect();
    let mut expected = flows.clone();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    sort_by_key_stably(&mut flows);
    assert_eq!(flows, expected);
}

#[test]
fn dimension_one_keys_order_as_dim1_does() {
    let nets: Vec<IpNet> = [
        "10.0.0.1/32",
        "10.0.0.1/24",
        "10.0.0.0/24",
        "9.255.255.255/32",
        "0.0.0.0/0",
        "::/0",
        "::1/128",
        "fe80::1/64",
        "2001:db8::/32",
    ]
    .iter()
    .map(|n| n.parse().unwrap())
    .collect();
    let mut all = Vec::new();
    for direction in [Direction::Ingress, Direction::Egress] {
        for ethertype in [EtherType::V4, EtherType::V6] {
            for class in [0, 1, 300, u16::MAX] {
                for net in &nets {
                    all.push(Dim1 {
                        direction,
                        ethertype,
                        class,
                        net: *net,
                    });
                }
            }
        }
    }
    for a in &all {
        for b in &all {
            assert_eq!(a.cmp(b), a.order_key().cmp(&b.order_key()), "{a:?} {b:?}");
        }
    }
}
