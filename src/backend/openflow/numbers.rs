//! A compiler session's stable rule numbers: inside a session a rule keeps the number it got
//! when it came, so that removing a rule renames no other rule, and no bucket whose rules
//! only moved in their group's list is touched. The reference a fresh compile shows
//! (`group[index]`, the rule's position in its group's list) is computed from these numbers
//! only where a reference is shown: the flows and statistics of a session's compile, and the
//! flows of a diff.
//!
//! Within a group the numbers stay in the order of the positions (a removal leaves a hole, an
//! addition takes the number after the largest, replacing a group's rules numbers them from
//! 0 again), so every decision that reads origins through their order (the rule algebra's
//! sorting and ties, the smallest origin of a merge, which duplicate of a flow is kept) is
//! the one a fresh compile makes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::RuleRef;

/// The stable number of each rule of each group, by position. A group absent from the map is
/// numbered by position (what a fresh session has, and what a group keeps until a rule before
/// its last one is removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RuleNumbers(HashMap<String, Vec<usize>>);

/// One group's numbers as an undo step keeps them (`None`: numbered by position).
pub(super) type SavedNumbers = Option<Vec<usize>>;

impl RuleNumbers {
    /// The numbers of `group`'s rules, `None` when they are their positions.
    pub(super) fn of(&self, group: &str) -> Option<&[usize]> {
        self.0.get(group).map(Vec::as_slice)
    }

    /// Whether every group is numbered by position (nothing to translate).
    pub(super) fn is_identity(&self) -> bool {
        self.0.is_empty()
    }

    /// The stable number of the rule at `position` in `group`.
    pub(super) fn stable(&self, group: &str, position: usize) -> usize {
        match self.0.get(group) {
            Some(numbers) => numbers[position],
            None => position,
        }
    }

    /// `group`'s numbers, for an undo step.
    pub(super) fn save(&self, group: &str) -> SavedNumbers {
        self.0.get(group).cloned()
    }

    /// Puts back what [`RuleNumbers::save`] returned.
    pub(super) fn restore(&mut self, group: &str, saved: SavedNumbers) {
        match saved {
            Some(numbers) => {
                self.0.insert(group.to_string(), numbers);
            }
            None => {
                self.0.remove(group);
            }
        }
    }

    /// `group`'s rules replaced: numbered from 0 again.
    pub(super) fn renumber(&mut self, group: &str) {
        self.0.remove(group);
    }

    /// Rules appended to `group`, which had `before` rules and now has `after`: each takes
    /// the number after the largest.
    pub(super) fn appended(&mut self, group: &str, before: usize, after: usize) {
        if let Some(numbers) = self.0.get_mut(group) {
            debug_assert_eq!(numbers.len(), before);
            let next = numbers.last().map_or(0, |n| n + 1);
            numbers.extend(next..next + (after - before));
            if is_positions(numbers) {
                self.0.remove(group);
            }
        }
    }

    /// Rules removed from `group`: `kept[i]` says whether the rule at position `i` stayed.
    /// The others keep their numbers (a hole where each removed rule was).
    pub(super) fn removed(&mut self, group: &str, kept: &[bool]) {
        let numbers: Vec<usize> = kept
            .iter()
            .enumerate()
            .filter(|(_, kept)| **kept)
            .map(|(at, _)| self.stable(group, at))
            .collect();
        if is_positions(&numbers) {
            self.0.remove(group);
        } else {
            self.0.insert(group.to_string(), numbers);
        }
    }
}

fn is_positions(numbers: &[usize]) -> bool {
    numbers.iter().enumerate().all(|(at, n)| at == *n)
}

/// How stable numbers are shown: the numbering of a session's rules at one moment (the
/// current one, or the one before a change: `before` holds the numbers of the groups the
/// change touched as they were).
#[derive(Clone, Copy)]
pub(super) struct Shown<'a> {
    pub(super) numbers: &'a RuleNumbers,
    pub(super) before: Option<&'a [(String, SavedNumbers)]>,
}

impl<'a> Shown<'a> {
    /// The numbering now.
    pub(super) fn now(numbers: &'a RuleNumbers) -> Shown<'a> {
        Shown {
            numbers,
            before: None,
        }
    }

    /// Whether every reference shows as it is (no group is numbered otherwise than by
    /// position).
    pub(super) fn is_identity(&self) -> bool {
        self.numbers.is_identity()
            && self
                .before
                .map_or(true, |b| b.iter().all(|(_, saved)| saved.is_none()))
    }

    fn numbers_of(&self, group: &str) -> Option<&'a [usize]> {
        if let Some(before) = self.before {
            if let Some((_, saved)) = before.iter().find(|(g, _)| g == group) {
                return saved.as_deref();
            }
        }
        self.numbers.of(group)
    }

    /// The reference a fresh compile shows for the rule numbered `rule`.
    pub(super) fn rule(&self, rule: &RuleRef) -> RuleRef {
        RuleRef {
            group: rule.group.clone(),
            index: self.position(rule),
        }
    }

    fn position(&self, rule: &RuleRef) -> usize {
        match self.numbers_of(&rule.group) {
            // Every rule shown is in its group's list; numbers are sorted.
            Some(numbers) => numbers.binary_search(&rule.index).unwrap_or_else(|at| at),
            None => rule.index,
        }
    }
}

/// [`Shown`] for shared references: a reference that shows as it is stays the same
/// allocation, and one allocation's translation is made once.
pub(super) struct ShownArcs<'a> {
    shown: Shown<'a>,
    done: HashMap<*const RuleRef, Arc<RuleRef>>,
}

impl<'a> ShownArcs<'a> {
    pub(super) fn new(shown: Shown<'a>) -> ShownArcs<'a> {
        ShownArcs {
            shown,
            done: HashMap::new(),
        }
    }

    /// The shown version of a flow's rule.
    pub(super) fn rule(&mut self, rule: &Option<Arc<RuleRef>>) -> Option<Arc<RuleRef>> {
        let rule = rule.as_ref()?;
        if self.shown.is_identity() {
            return Some(Arc::clone(rule));
        }
        if let Some(done) = self.done.get(&Arc::as_ptr(rule)) {
            return Some(Arc::clone(done));
        }
        let position = self.shown.position(rule);
        let shown = if position == rule.index {
            Arc::clone(rule)
        } else {
            Arc::new(RuleRef {
                group: rule.group.clone(),
                index: position,
            })
        };
        self.done.insert(Arc::as_ptr(rule), Arc::clone(&shown));
        Some(shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(numbers: &RuleNumbers, group: &str, stable: usize) -> usize {
        Shown::now(numbers)
            .rule(&RuleRef {
                group: group.into(),
                index: stable,
            })
            .index
    }

    #[test]
    fn holes_keep_numbers_and_show_positions() {
        let mut n = RuleNumbers::default();
        // a: 0 1 2 3 → remove position 1 → numbers 0 2 3, shown 0 1 2.
        n.removed("a", &[true, false, true, true]);
        assert_eq!(n.of("a"), Some(&[0, 2, 3][..]));
        assert_eq!(shown(&n, "a", 3), 2);
        // Two added: the numbers after the largest.
        n.appended("a", 3, 5);
        assert_eq!(n.of("a"), Some(&[0, 2, 3, 4, 5][..]));
        assert_eq!(shown(&n, "a", 5), 4);
        // The last rule removed from an unnumbered group leaves positions: no entry.
        n.removed("b", &[true, true, false]);
        assert_eq!(n.of("b"), None);
        assert_eq!(n.stable("b", 1), 1);
        // Before a change: the saved numbers of the touched group, the current of others.
        let saved = vec![("a".to_string(), None)];
        let before = Shown {
            numbers: &n,
            before: Some(&saved),
        };
        assert_eq!(
            before
                .rule(&RuleRef {
                    group: "a".into(),
                    index: 3
                })
                .index,
            3
        );
        n.renumber("a");
        assert!(n.is_identity());
    }
}
