//! Two units emitting one flow key (table, priority, match) with different actions is a bug
//! in the pipeline: Open vSwitch would keep whichever came last, so the verdict would depend
//! on emission order. It is refused in every build, naming both origins.

use crate::error::{Error, Result};
use crate::model::RuleRef;

/// Where a flow came from: its port and rule, when it has them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin<'a> {
    pub port: Option<&'a str>,
    pub rule: Option<&'a RuleRef>,
}

impl std::fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.port, self.rule) {
            (Some(p), Some(r)) => write!(f, "port {p}, rule {r}"),
            (Some(p), None) => write!(f, "port {p}"),
            (None, Some(r)) => write!(f, "rule {r}"),
            (None, None) => f.write_str("the shared pipeline"),
        }
    }
}

/// `Ok` when a flow emitted again for an existing key carries the same actions (two rules
/// that overlap exactly); an internal error naming both origins otherwise.
pub(super) fn check_same_actions(
    key: &str,
    existing: (&str, Origin<'_>),
    new: (&str, Origin<'_>),
) -> Result<()> {
    if existing.0 == new.0 {
        return Ok(());
    }
    Err(Error::Internal(format!(
        "conflicting actions for one flow ({key}): {:?} from {} and {:?} from {}",
        existing.0, existing.1, new.0, new.1
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_actions_are_a_duplicate_not_an_error() {
        let o = Origin {
            port: Some("p1"),
            rule: None,
        };
        assert!(check_same_actions("table=0", ("drop", o), ("drop", o)).is_ok());
    }

    #[test]
    fn different_actions_name_both_origins() {
        let rule = RuleRef {
            group: "web".into(),
            index: 3,
        };
        let first = Origin {
            port: Some("p1"),
            rule: Some(&rule),
        };
        let second = Origin {
            port: None,
            rule: None,
        };
        let err = check_same_actions(
            "table=82,priority=70,tcp",
            ("drop", first),
            ("NORMAL", second),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("internal error"), "{text}");
        assert!(text.contains("port p1, rule web[3]"), "{text}");
        assert!(text.contains("the shared pipeline"), "{text}");
        assert!(text.contains("table=82,priority=70,tcp"), "{text}");
    }
}
