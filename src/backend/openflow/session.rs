//! A compiler session: a model kept between changes, each change answered with the minimal
//! [`FlowDiff`] from the previous flows to the new ones.
//!
//! The flows always equal a fresh compile of the current model, ids included, and each diff
//! is exactly the set difference of the two compiles; a change costs what it reaches, not
//! the bridge: the model is changed in place (with an undo log), and only the units the
//! change reaches are recomputed ([`super::units`]).

mod bindings;

use std::cell::OnceCell;

use self::bindings::Bindings;
use super::numbers::{RuleNumbers, SavedNumbers};
use super::units::{Touched, Units};
use super::{check_bindings, Compiled, FlowDiff, OpenFlowOptions};
use crate::error::{Error, Issue, Result};
use crate::model::{Group, Members, Model, Port, Rule};

/// Which id space a member change names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberSet {
    /// Members of a remote security group (`remote_group_id`, `sg_member_ips`).
    Group,
    /// Prefixes of an address group (`remote_address_group_id`).
    AddressGroup,
}

/// One change to a session's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new port (its id must be new).
    AddPort(Port),
    /// A port replaced by a new version with the same id.
    UpdatePort(Port),
    /// A port removed, by id.
    RemovePort(String),
    /// A group's rules replaced (the group is created when new).
    SetRules {
        /// Group id.
        group: String,
        /// The new rules.
        rules: Vec<Rule>,
    },
    /// Rules appended to a group (a rule the group already has is not added twice).
    AddRules {
        /// Group id.
        group: String,
        /// The rules to add.
        rules: Vec<Rule>,
    },
    /// Rules removed from a group: by `id` where the rule has one, else by content.
    RemoveRules {
        /// Group id.
        group: String,
        /// The rules to remove.
        rules: Vec<Rule>,
    },
    /// Member addresses added to a remote group or an address group.
    AddMembers {
        /// Group or address-group id.
        group: String,
        /// Which id space.
        set: MemberSet,
        /// The addresses to add.
        members: Members,
    },
    /// Member addresses removed from a remote group or an address group.
    RemoveMembers {
        /// Group or address-group id.
        group: String,
        /// Which id space.
        set: MemberSet,
        /// The addresses to remove.
        members: Members,
    },
    /// A group's statefulness changed.
    SetStateful {
        /// Group id.
        group: String,
        /// Whether connections are tracked.
        stateful: bool,
    },
    /// Several changes applied as one (one diff, all or nothing).
    Batch(Vec<Change>),
}

/// A model and its flows, kept between changes.
#[derive(Debug, Clone)]
pub struct Session {
    model: Model,
    options: OpenFlowOptions,
    units: Units,
    /// The ports' numbers and (network, VLAN) pairs, for checking a port change.
    bindings: Bindings,
    /// Each rule's stable number (its position when it came; see [`super::numbers`]): the
    /// model's rules are numbered by position, as a fresh parse numbers them.
    numbers: RuleNumbers,
    /// The flows as one list, built on demand after a change.
    compiled: OnceCell<Compiled>,
}

/// How to undo one step of a change.
enum Undo {
    Port(String, Option<Port>),
    Group(String, Option<Group>, SavedNumbers),
    Members(MemberSet, String, Option<Members>),
}

impl Session {
    /// Compiles `model` and keeps it for later changes.
    pub fn new(model: Model, options: OpenFlowOptions) -> Result<Session> {
        options.check()?;
        check_bindings(&model)?;
        let numbers = RuleNumbers::default();
        let units = Units::build(&model, &options, &numbers)?;
        let bindings = Bindings::of(&model.ports);
        Ok(Session {
            model,
            options,
            units,
            bindings,
            numbers,
            compiled: OnceCell::new(),
        })
    }

    /// The current model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The current flows (equal to a fresh compile of [`Session::model`]).
    pub fn compiled(&self) -> &Compiled {
        self.compiled.get_or_init(|| {
            self.units
                .compiled(&self.model, &self.options, &self.numbers)
        })
    }

    /// How many times a change moved the id of a policy or conjunction it did not otherwise
    /// reach (a hash collision resolved differently), over the session's life.
    pub fn id_shifts(&self) -> usize {
        self.units.id_shifts
    }

    /// How many times a policy's rule algebra and lowering were run (the build included),
    /// over the session's life: a change that reaches no policy's rules leaves it unchanged.
    pub fn policy_recomputes(&self) -> usize {
        self.units.policy_recomputes
    }

    /// How many (direction, family, protocol) buckets of policies had their rule algebra and
    /// lowering run (the build included), over the session's life.
    pub fn bucket_recomputes(&self) -> usize {
        self.units.bucket_recomputes
    }

    /// Applies a change and returns the flows to add, modify and delete. On an error the
    /// session is left as it was.
    pub fn apply(&mut self, change: Change) -> Result<FlowDiff> {
        let mut undo = Vec::new();
        let applied = apply_change(&mut self.model, &mut self.numbers, change, &mut undo);
        let touched = touched(&undo);
        self.sync_bindings(&touched.ports);
        let result = applied.and_then(|()| {
            if !may_be_invalid(&self.model, &self.bindings, &undo) {
                return Ok(());
            }
            let issues = crate::model::check_model(&self.model);
            if issues.is_empty() {
                check_bindings(&self.model)
            } else {
                Err(Error::Invalid(issues))
            }
        });
        if let Err(e) = result {
            self.undo(undo);
            self.sync_bindings(&touched.ports);
            return Err(e);
        }
        match self
            .units
            .update(&self.model, &self.options, &self.numbers, &touched, true)
        {
            Ok(d) => {
                self.compiled = OnceCell::new();
                Ok(d)
            }
            Err(e) => {
                // The units may be half updated: rebuild them from the model as it was.
                self.undo(undo);
                self.sync_bindings(&touched.ports);
                self.units = Units::build(&self.model, &self.options, &self.numbers)?;
                Err(e)
            }
        }
    }

    /// Brings the bindings index up to date with the model for the ports named.
    fn sync_bindings(&mut self, ports: &std::collections::BTreeSet<String>) {
        for id in ports {
            let at = self.model.ports.binary_search_by(|p| p.id.as_str().cmp(id));
            self.bindings
                .set(id, at.ok().map(|at| &self.model.ports[at]));
        }
    }

    fn undo(&mut self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Port(id, old) => {
                    let at = self.model.ports.binary_search_by(|p| p.id.cmp(&id));
                    match (at, old) {
                        (Ok(i), Some(p)) => self.model.ports[i] = p,
                        (Ok(i), None) => {
                            self.model.ports.remove(i);
                        }
                        (Err(i), Some(p)) => self.model.ports.insert(i, p),
                        (Err(_), None) => {}
                    }
                }
                Undo::Group(id, old, numbers) => {
                    self.numbers.restore(&id, numbers);
                    match old {
                        Some(g) => {
                            self.model.groups.insert(id, g);
                        }
                        None => {
                            self.model.groups.remove(&id);
                        }
                    }
                }
                Undo::Members(set, id, old) => {
                    let map = member_set(&mut self.model, set);
                    match old {
                        Some(m) => {
                            map.insert(id, m);
                        }
                        None => {
                            map.remove(&id);
                        }
                    }
                }
            }
        }
    }
}

/// Whether the change may have made the (valid) model invalid: then the whole model is
/// checked, for the same messages a fresh parse gives. Rule and member changes of existing
/// groups cannot (remotes without members are accepted); a port can only conflict with
/// its groups or with another port's number or network tag; a group's statefulness or a new
/// group is checked in full.
fn may_be_invalid(model: &Model, bindings: &Bindings, undo: &[Undo]) -> bool {
    undo.iter().any(|step| match step {
        Undo::Group(id, old, _) => match (old, model.groups.get(id)) {
            (Some(old), Some(new)) => old.stateful != new.stateful,
            _ => true,
        },
        Undo::Members(..) => false,
        Undo::Port(id, _) => model
            .ports
            .binary_search_by(|p| p.id.cmp(id))
            .is_ok_and(|at| port_may_conflict(model, bindings, &model.ports[at])),
    })
}

/// Whether a port may conflict with its groups (statefulness) or with another port's number
/// or (network, VLAN) pair: a look-up in the bindings index, which holds the current model.
fn port_may_conflict(model: &Model, bindings: &Bindings, port: &Port) -> bool {
    let (Some(ofport), Some(tag)) = (port.ofport, port.local_vlan) else {
        return true;
    };
    let mut kinds = port
        .security_groups
        .iter()
        .map(|g| model.groups.get(g).map(|g| g.stateful));
    let first = kinds.next().flatten();
    if port.security_groups.iter().any(|g| {
        model
            .groups
            .get(g)
            .map_or(true, |g| Some(g.stateful) != first)
    }) {
        return true;
    }
    bindings.conflicts(port, ofport, tag)
}

/// What the undo log says the change touched.
fn touched(undo: &[Undo]) -> Touched {
    let mut t = Touched::default();
    for step in undo {
        match step {
            Undo::Port(id, _) => {
                t.ports.insert(id.clone());
            }
            Undo::Group(id, _, numbers) => {
                // The first step of a group holds its numbers before the change.
                if t.groups.insert(id.clone()) {
                    t.numbers_before.push((id.clone(), numbers.clone()));
                }
            }
            Undo::Members(MemberSet::Group, id, _) => {
                t.remotes.insert(format!("group:{id}"));
            }
            Undo::Members(MemberSet::AddressGroup, id, _) => {
                t.remotes.insert(format!("address_group:{id}"));
            }
        }
    }
    t
}

fn save_port(model: &Model, id: &str, undo: &mut Vec<Undo>) {
    let old = model
        .ports
        .binary_search_by(|p| p.id.as_str().cmp(id))
        .ok()
        .map(|i| model.ports[i].clone());
    undo.push(Undo::Port(id.to_string(), old));
}

fn save_group(model: &Model, numbers: &RuleNumbers, id: &str, undo: &mut Vec<Undo>) {
    undo.push(Undo::Group(
        id.to_string(),
        model.groups.get(id).cloned(),
        numbers.save(id),
    ));
}

fn apply_change(
    model: &mut Model,
    numbers: &mut RuleNumbers,
    change: Change,
    undo: &mut Vec<Undo>,
) -> Result<()> {
    match &change {
        Change::AddPort(p) | Change::UpdatePort(p) => save_port(model, &p.id, undo),
        Change::RemovePort(id) => save_port(model, id, undo),
        Change::SetRules { group, .. }
        | Change::AddRules { group, .. }
        | Change::RemoveRules { group, .. }
        | Change::SetStateful { group, .. } => save_group(model, numbers, group, undo),
        Change::AddMembers { group, set, .. } | Change::RemoveMembers { group, set, .. } => {
            let old = member_set(model, *set).get(group).cloned();
            undo.push(Undo::Members(*set, group.clone(), old));
        }
        Change::Batch(_) => {}
    }
    match change {
        Change::AddPort(port) => add_port(model, port),
        Change::UpdatePort(port) => update_port(model, port),
        Change::RemovePort(id) => remove_port(model, &id),
        Change::SetRules { group, rules } => {
            let entry = group_entry(model, &group);
            entry.rules = rules;
            renumber(&mut entry.rules);
            numbers.renumber(&group);
            Ok(())
        }
        Change::AddRules { group, rules } => {
            let entry = group_entry(model, &group);
            let before = entry.rules.len();
            for rule in rules {
                if !entry.rules.iter().any(|r| same_rule(r, &rule)) {
                    entry.rules.push(rule);
                }
            }
            renumber(&mut entry.rules);
            numbers.appended(&group, before, entry.rules.len());
            Ok(())
        }
        Change::RemoveRules { group, rules } => remove_rules(model, numbers, &group, &rules),
        Change::AddMembers {
            group,
            set,
            members,
        } => {
            let entry = member_set(model, set).entry(group).or_default();
            entry.nets.extend(members.nets.iter().map(|n| n.trunc()));
            entry.nets.sort();
            entry.nets.dedup();
            Ok(())
        }
        Change::RemoveMembers {
            group,
            set,
            members,
        } => {
            if let Some(entry) = member_set(model, set).get_mut(&group) {
                let gone: Vec<_> = members.nets.iter().map(|n| n.trunc()).collect();
                entry.nets.retain(|n| !gone.contains(n));
            }
            Ok(())
        }
        Change::SetStateful { group, stateful } => {
            group_entry(model, &group).stateful = stateful;
            Ok(())
        }
        Change::Batch(changes) => changes
            .into_iter()
            .try_for_each(|c| apply_change(model, numbers, c, undo)),
    }
}

fn unknown(path: String, message: impl Into<String>) -> Error {
    Error::Invalid(vec![Issue::new(path, message)])
}

fn normalise_port(mut port: Port) -> Port {
    port.security_groups.sort();
    port.security_groups.dedup();
    port
}

fn add_port(model: &mut Model, port: Port) -> Result<()> {
    match model.ports.binary_search_by(|p| p.id.cmp(&port.id)) {
        Ok(_) => Err(unknown(
            format!("ports.{}", port.id),
            format!("duplicate port id {:?}", port.id),
        )),
        Err(at) => {
            model.ports.insert(at, normalise_port(port));
            Ok(())
        }
    }
}

fn update_port(model: &mut Model, port: Port) -> Result<()> {
    match model.ports.binary_search_by(|p| p.id.cmp(&port.id)) {
        Ok(at) => {
            model.ports[at] = normalise_port(port);
            Ok(())
        }
        Err(_) => Err(unknown(format!("ports.{}", port.id), "no such port")),
    }
}

fn remove_port(model: &mut Model, id: &str) -> Result<()> {
    match model.ports.binary_search_by(|p| p.id.as_str().cmp(id)) {
        Ok(at) => {
            model.ports.remove(at);
            Ok(())
        }
        Err(_) => Err(unknown(format!("ports.{id}"), "no such port")),
    }
}

fn group_entry<'m>(model: &'m mut Model, id: &str) -> &'m mut crate::model::Group {
    model
        .groups
        .entry(id.to_string())
        .or_insert_with(|| crate::model::Group {
            id: id.to_string(),
            stateful: true,
            rules: Vec::new(),
        })
}

fn remove_rules(
    model: &mut Model,
    numbers: &mut RuleNumbers,
    group: &str,
    rules: &[Rule],
) -> Result<()> {
    let Some(entry) = model.groups.get_mut(group) else {
        return Err(unknown(
            format!("security_groups.{group}"),
            "no such security group",
        ));
    };
    let kept: Vec<bool> = entry
        .rules
        .iter()
        .map(|r| !rules.iter().any(|gone| same_rule(r, gone)))
        .collect();
    if kept.iter().all(|k| *k) {
        return Ok(());
    }
    let mut at = 0;
    entry.rules.retain(|_| {
        at += 1;
        kept[at - 1]
    });
    renumber(&mut entry.rules);
    numbers.removed(group, &kept);
    Ok(())
}

/// A rule is identified by its id where both have one, else by what it matches.
fn same_rule(a: &Rule, b: &Rule) -> bool {
    match (&a.id, &b.id) {
        (Some(x), Some(y)) => x == y,
        _ => {
            a.direction == b.direction
                && a.ethertype == b.ethertype
                && a.protocol == b.protocol
                && a.l4 == b.l4
                && a.remote == b.remote
        }
    }
}

/// Rule positions follow the final list, so references (`group[index]`) never depend on
/// the history of changes (the session's own numbers, which do, are kept apart: see
/// [`super::numbers`]).
fn renumber(rules: &mut [Rule]) {
    for (i, r) in rules.iter_mut().enumerate() {
        r.index = i;
    }
}

fn member_set(
    model: &mut Model,
    set: MemberSet,
) -> &mut std::collections::BTreeMap<String, Members> {
    match set {
        MemberSet::Group => &mut model.members,
        MemberSet::AddressGroup => &mut model.address_groups,
    }
}
