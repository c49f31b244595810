//! A session's dimension-1 flows: one per member address (direction, family, specificity
//! class and prefix), carrying dimension 1 of every conjunction the address belongs to.
//!
//! They are most of a large bridge (one per member address and class) and a change that
//! moves one conjunction's class rewrites thousands of them at once, so they are kept apart
//! from the other units: by typed address, not by rendered match; each with the conjunctions
//! it belongs to and the ids laid out on the bridge; rendered only for a diff or the full
//! list. No other unit emits a flow at their keys (in the rule tables, at the conjunction
//! priorities, the other flows match a policy register or a `conj_id`), so they need no
//! owner counts.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::diff::key as flow_order;
use super::super::pipeline::{dim1_actions, dim1_key, ConjKey, Dim1, Entry, Key};
use super::super::{Flow, OpenFlowOptions};

/// One member address's flow: its conjunctions with their ids, and the ids on the bridge.
#[derive(Debug, Clone, Default)]
struct MemberFlow {
    conjs: Vec<(Arc<ConjKey>, u32)>,
    /// Sorted, without repeats; empty while the flow is not on the bridge.
    laid: Vec<u32>,
    /// Whether it is in the touched list.
    touched: bool,
}

impl MemberFlow {
    /// The ids its conjunctions give it now, sorted, without repeats, in `ids` (a buffer
    /// reused from flow to flow).
    fn ids_into(&self, ids: &mut Vec<u32>) {
        ids.clear();
        ids.extend(self.conjs.iter().map(|(_, id)| *id));
        ids.sort_unstable();
        ids.dedup();
    }

    fn position(&self, key: &ConjKey) -> Option<usize> {
        self.conjs
            .iter()
            .position(|(k, _)| std::ptr::eq(&**k, key) || **k == *key)
    }
}

/// The flows a settle added, modified and removed, each list sorted as a compile's flows.
#[derive(Debug, Default)]
pub(super) struct MemberChanges {
    pub(super) added: Vec<Flow>,
    pub(super) modified: Vec<Flow>,
    pub(super) removed: Vec<Flow>,
}

/// Every member address's flow, and the addresses touched since the last settle.
#[derive(Debug, Clone, Default)]
pub(super) struct MemberFlows {
    flows: HashMap<Dim1, MemberFlow>,
    /// Each once (see [`MemberFlow::touched`]), in the order they were first touched: a
    /// settle sorts only the flows it renders.
    touched: Vec<Dim1>,
    /// How many flows are on the bridge.
    laid: usize,
}

impl MemberFlows {
    /// How many flows are on the bridge (as of the last settle).
    pub(super) fn len(&self) -> usize {
        self.laid
    }

    /// Puts conjunction `key` (id `id`) in the flow of address `d`, or moves its id.
    pub(super) fn insert(&mut self, d: Dim1, key: &Arc<ConjKey>, id: u32) {
        let flow = self.flows.entry(d).or_default();
        match flow.position(key) {
            Some(at) => flow.conjs[at].1 = id,
            None => flow.conjs.push((Arc::clone(key), id)),
        }
        touch(&mut self.touched, flow, d);
    }

    /// Moves conjunction `key`'s id in the flow of address `d` (nothing when it is not
    /// there).
    pub(super) fn set_id(&mut self, d: Dim1, key: &ConjKey, id: u32) {
        if let Some(flow) = self.flows.get_mut(&d) {
            if let Some(at) = flow.position(key) {
                flow.conjs[at].1 = id;
                touch(&mut self.touched, flow, d);
            }
        }
    }

    /// Takes conjunction `key` out of the flow of address `d`.
    pub(super) fn remove(&mut self, d: Dim1, key: &ConjKey) {
        if let Some(flow) = self.flows.get_mut(&d) {
            if let Some(at) = flow.position(key) {
                flow.conjs.swap_remove(at);
                touch(&mut self.touched, flow, d);
            }
        }
    }

    /// Lays out the touched addresses' flows and returns what changed on the bridge
    /// (nothing is rendered when `record` is off).
    pub(super) fn settle(&mut self, opts: &OpenFlowOptions, record: bool) -> MemberChanges {
        let touched = std::mem::take(&mut self.touched);
        let mut changes = MemberChanges::default();
        // A change rewrites thousands of flows with a handful of distinct conjunction sets:
        // each set's actions are rendered once.
        let mut actions = Actions::default();
        let mut ids = Vec::new();
        for d in touched {
            self.settle_one(opts, d, record, &mut changes, (&mut actions, &mut ids));
        }
        for list in [
            &mut changes.added,
            &mut changes.modified,
            &mut changes.removed,
        ] {
            list.sort_unstable_by(|a, b| flow_order(a).cmp(&flow_order(b)));
        }
        changes
    }

    fn settle_one(
        &mut self,
        opts: &OpenFlowOptions,
        d: Dim1,
        record: bool,
        changes: &mut MemberChanges,
        (actions, ids): (&mut Actions, &mut Vec<u32>),
    ) {
        let Some(flow) = self.flows.get_mut(&d) else {
            return;
        };
        flow.touched = false;
        flow.ids_into(ids);
        if flow.laid == *ids {
            if ids.is_empty() {
                self.flows.remove(&d);
            }
            return;
        }
        let was_laid = !flow.laid.is_empty();
        let now_laid = !ids.is_empty();
        if record {
            let list = match (was_laid, now_laid) {
                (false, _) => &mut changes.added,
                (true, true) => &mut changes.modified,
                (true, false) => &mut changes.removed,
            };
            // A removed flow is shown as it was.
            let shown = if now_laid { &ids[..] } else { &flow.laid[..] };
            list.push(rendered(opts, &d, actions.of(shown)));
        }
        flow.laid.clone_from(ids);
        match (was_laid, now_laid) {
            (false, true) => self.laid += 1,
            (true, false) => {
                self.laid -= 1;
                self.flows.remove(&d);
            }
            _ => {}
        }
    }

    /// Every flow on the bridge, sorted by key (actions shared by the flows with the same
    /// conjunctions).
    pub(super) fn entries(&self, opts: &OpenFlowOptions) -> Vec<(Key, Entry)> {
        let mut actions = Actions::default();
        let mut out: Vec<(Key, Entry)> = Vec::with_capacity(self.laid);
        for (d, flow) in &self.flows {
            if flow.laid.is_empty() {
                continue;
            }
            let entry = Entry {
                actions: actions.of(&flow.laid),
                port: None,
                rule: None,
            };
            out.push((dim1_key(opts, d), entry));
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Puts a flow in the touched list unless it is there already.
fn touch(touched: &mut Vec<Dim1>, flow: &mut MemberFlow, d: Dim1) {
    if !flow.touched {
        flow.touched = true;
        touched.push(d);
    }
}

/// Rendered actions by conjunction ids, each rendered once.
#[derive(Default)]
struct Actions(HashMap<Box<[u32]>, Arc<str>>);

impl Actions {
    fn of(&mut self, ids: &[u32]) -> Arc<str> {
        if let Some(done) = self.0.get(ids) {
            return Arc::clone(done);
        }
        // `conjunction(4294967295,1/2),` at most.
        let mut text = String::with_capacity(30 * ids.len());
        dim1_actions(&mut text, ids);
        let done: Arc<str> = Arc::from(text);
        self.0.insert(ids.into(), Arc::clone(&done));
        done
    }
}

/// One member address's flow with actions `actions`.
fn rendered(opts: &OpenFlowOptions, d: &Dim1, actions: Arc<str>) -> Flow {
    let key = dim1_key(opts, d);
    Flow {
        table: key.table,
        priority: key.priority.0,
        matches: key.matches,
        actions,
        port: None,
        rule: None,
    }
}

/// Two lists sorted as a compile's flows, merged (no flow is in both: the member flows'
/// keys are their own).
pub(super) fn merged(a: Vec<Flow>, b: Vec<Flow>) -> Vec<Flow> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => flow_order(x) <= flow_order(y),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
}
