//! The pipeline's builder refuses one flow key with two actions, in every build.

use super::*;
use crate::model::RuleRef;

#[test]
fn one_flow_key_with_two_actions_is_an_internal_error() {
    let opts = OpenFlowOptions::default();
    let policies = std::collections::BTreeMap::new();
    let mut b = Builder::new(&opts, &policies);
    let rule = RuleRef {
        group: "web".into(),
        index: 0,
    };
    let m = || Match::new().f("reg5", 7u32);
    b.add(82, 70, m(), "drop".into(), Some("p1"), Some(&rule))
        .unwrap();
    // The same flow again is a duplicate, counted, not an error.
    b.add(82, 70, m(), "drop".into(), Some("p2"), None).unwrap();
    assert_eq!(b.duplicates, 1);
    let err = b
        .add(82, 70, m(), "NORMAL".into(), Some("p2"), None)
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Internal(_)), "{text}");
    assert!(text.contains("port p1, rule web[0]"), "{text}");
    assert!(text.contains("from port p2"), "{text}");
    assert!(text.contains("table=82,priority=70,reg5=7"), "{text}");
}
