//! The difference between two compiles as one atomic `ovs-ofctl bundle` transaction.
//!
//! Ids in the flows (policies, conjunctions) are pure functions of content, so a fresh
//! compile of a changed model differs from the old one only where the change reaches.

use super::{render, Compiled, Flow};
use std::cmp::Ordering;

/// Flows to add, to change (same table, priority and match; new actions) and to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowDiff {
    /// Flows only in the new compile.
    pub added: Vec<Flow>,
    /// Flows whose actions changed (the new version).
    pub modified: Vec<Flow>,
    /// Flows only in the old compile.
    pub removed: Vec<Flow>,
    /// The cookie of the new compile (deletes are restricted to the old one's).
    pub cookie: u64,
    /// The old compile's cookie.
    pub old_cookie: u64,
}

impl FlowDiff {
    /// Whether the two compiles are identical.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    /// Input for `ovs-ofctl -O OpenFlow13 bundle BRIDGE FILE`, applied as one transaction
    /// (all or nothing; no packet sees a partial policy). Adds and modifies come before
    /// deletes, so even a non-atomic reader never sees a gap. Additions carry the plain new
    /// cookie (Open vSwitch refuses a mask there); `modify_strict` and `delete_strict` carry
    /// the old cookie with a full mask, so they can never touch another owner's flows. When
    /// the cookie itself changes, a modified flow is deleted under the old cookie and added
    /// under the new one (a masked modify keeps the flow's cookie).
    pub fn to_bundle(&self) -> String {
        let mut out = String::new();
        let cookie = format!("{:#x}", self.cookie);
        let old_cookie = format!("{:#x}/-1", self.old_cookie);
        let recookie = self.cookie != self.old_cookie;
        for f in &self.added {
            render::flow_line(&mut out, "flow add ", &cookie, f, true);
        }
        for f in &self.modified {
            if recookie {
                render::flow_line(&mut out, "flow add ", &cookie, f, true);
            } else {
                render::flow_line(&mut out, "flow modify_strict ", &old_cookie, f, true);
            }
        }
        for f in self
            .removed
            .iter()
            .chain(self.modified.iter().filter(|_| recookie))
        {
            render::flow_line(&mut out, "flow delete_strict ", &old_cookie, f, false);
        }
        out
    }

    /// The flows `old` becomes with this diff applied (sorted as a compile's are): what a
    /// switch holding `old` holds after the bundle.
    pub fn apply_to(&self, old: &[Flow]) -> Vec<Flow> {
        let mut flows: Vec<Flow> = old
            .iter()
            .filter(|f| !self.removed.iter().any(|r| key(r) == key(f)))
            .map(|f| {
                self.modified
                    .iter()
                    .find(|m| key(m) == key(f))
                    .unwrap_or(f)
                    .clone()
            })
            .chain(self.added.iter().cloned())
            .collect();
        flows.sort_by(|a, b| key(a).cmp(&key(b)));
        flows
    }
}

/// The order of a compile's flows: table, priority (highest first), match.
pub(super) fn key(f: &Flow) -> (u8, std::cmp::Reverse<u16>, &str) {
    (f.table, std::cmp::Reverse(f.priority), f.matches.as_str())
}

/// The flows that change from `old` to `new`: one merge walk over both sorted flow lists.
pub fn diff(old: &Compiled, new: &Compiled) -> FlowDiff {
    let mut d = FlowDiff {
        cookie: new.cookie,
        old_cookie: old.cookie,
        ..FlowDiff::default()
    };
    let (mut i, mut j) = (0, 0);
    while i < old.flows.len() || j < new.flows.len() {
        let order = match (old.flows.get(i), new.flows.get(j)) {
            (Some(a), Some(b)) => key(a).cmp(&key(b)),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                d.removed.push(old.flows[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                d.added.push(new.flows[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                if old.flows[i].actions != new.flows[j].actions || old.cookie != new.cookie {
                    d.modified.push(new.flows[j].clone());
                }
                i += 1;
                j += 1;
            }
        }
    }
    d
}
