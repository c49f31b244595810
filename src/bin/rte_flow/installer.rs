//! The installer's logic over any flow device: a port's rule set installed all-or-nothing
//! (every create checked — validate is never trusted, net_tap's accepts rules its create
//! refuses), updates that create the new rules before destroying the old ones, removal,
//! trial create+destroy probes and counters. Handles are tracked per sgflows port name.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use crate::rule::{self, FlatRule};

/// What the installer needs from a DPDK port (the shim in `ffi.rs`; a scripted device in the
/// tests, because no driver on these hosts implements rte_flow).
pub trait FlowDevice {
    type Handle: Copy;
    fn validate(&mut self, rule: &FlatRule) -> Result<(), String>;
    fn create(&mut self, rule: &FlatRule) -> Result<Self::Handle, String>;
    fn destroy(&mut self, handle: Self::Handle) -> Result<(), String>;
    /// (hits, bytes) of a rule with a `count` action.
    fn query_count(&mut self, handle: Self::Handle) -> Result<(u64, u64), String>;
}

/// One created rule: its identity (the rule's JSON without `origin`) and its handle.
struct Installed<H> {
    key: String,
    handle: H,
}

pub struct Installer<D: FlowDevice> {
    device: D,
    ports: BTreeMap<String, Vec<Installed<D::Handle>>>,
}

/// The identity of a rule for diffs: what the driver sees, not where the rule came from.
fn identity(rule: &Value) -> String {
    json!({
        "attr": rule.get("attr"),
        "pattern": rule.get("pattern"),
        "actions": rule.get("actions"),
    })
    .to_string()
}

fn parse_all(rules: &[Value]) -> Result<Vec<FlatRule>, Value> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            rule::parse(r).map_err(|e| {
                json!({"ok": false, "failed_rule": i, "error": e.to_string(),
                                             "created": 0, "rolled_back": 0})
            })
        })
        .collect()
}

impl<D: FlowDevice> Installer<D> {
    pub fn new(device: D) -> Self {
        Installer {
            device,
            ports: BTreeMap::new(),
        }
    }

    pub fn device(&mut self) -> &mut D {
        &mut self.device
    }

    pub fn into_device(self) -> D {
        self.device
    }

    /// Create `rules` in order; on the first refusal destroy what this call created (in
    /// reverse) and report the refused rule. Nothing stays half-installed.
    fn create_all(
        &mut self,
        rules: &[(usize, String, FlatRule)],
    ) -> Result<Vec<Installed<D::Handle>>, Value> {
        let mut made: Vec<Installed<D::Handle>> = Vec::with_capacity(rules.len());
        for (index, key, flat) in rules {
            match self.device.create(flat) {
                Ok(handle) => made.push(Installed {
                    key: key.clone(),
                    handle,
                }),
                Err(error) => {
                    let created = made.len();
                    let leaks = self.destroy_all(made);
                    return Err(json!({
                        "ok": false, "failed_rule": index, "error": error,
                        "created": created, "rolled_back": created - leaks.len(),
                        "rollback_errors": leaks,
                    }));
                }
            }
        }
        Ok(made)
    }

    /// Destroy in reverse order of creation; the errors of those that would not go.
    fn destroy_all(&mut self, rules: Vec<Installed<D::Handle>>) -> Vec<String> {
        let mut errors = Vec::new();
        for r in rules.into_iter().rev() {
            if let Err(e) = self.device.destroy(r.handle) {
                errors.push(e);
            }
        }
        errors
    }

    /// A port's whole rule set, all-or-nothing.
    pub fn install(&mut self, port: &str, rules: &[Value]) -> Value {
        if self.ports.contains_key(port) {
            return json!({"ok": false, "error": format!("port {port} is installed; use update")});
        }
        let flat = match parse_all(rules) {
            Ok(f) => f,
            Err(report) => return report,
        };
        let todo: Vec<_> = flat
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i, identity(&rules[i]), f))
            .collect();
        match self.create_all(&todo) {
            Ok(made) => {
                let created = made.len();
                self.ports.insert(port.to_string(), made);
                json!({"ok": true, "created": created})
            }
            Err(report) => report,
        }
    }

    /// Move a port to a new rule set: rules in both stay, the new ones are created first (all
    /// or nothing: on a refusal the old set stays intact), then the old ones are destroyed.
    pub fn update(&mut self, port: &str, rules: &[Value]) -> Value {
        let flat = match parse_all(rules) {
            Ok(f) => f,
            Err(report) => return report,
        };
        let old = self.ports.remove(port).unwrap_or_default();
        let old_keys: HashSet<&str> = old.iter().map(|r| r.key.as_str()).collect();
        let mut seen = HashSet::new();
        let todo: Vec<_> = flat
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i, identity(&rules[i]), f))
            .filter(|(_, key, _)| seen.insert(key.clone()) && !old_keys.contains(key.as_str()))
            .collect();
        let made = match self.create_all(&todo) {
            Ok(made) => made,
            Err(report) => {
                self.ports.insert(port.to_string(), old);
                return report;
            }
        };
        let (kept, gone): (Vec<_>, Vec<_>) = old.into_iter().partition(|r| seen.contains(&r.key));
        let destroyed = gone.len();
        let errors = self.destroy_all(gone);
        let created = made.len();
        let kept_count = kept.len();
        let mut now = kept;
        now.extend(made);
        self.ports.insert(port.to_string(), now);
        json!({"ok": errors.is_empty(), "created": created, "destroyed": destroyed - errors.len(),
               "kept": kept_count, "destroy_errors": errors})
    }

    pub fn remove(&mut self, port: &str) -> Value {
        let Some(old) = self.ports.remove(port) else {
            return json!({"ok": false, "error": format!("port {port} is not installed")});
        };
        let total = old.len();
        let errors = self.destroy_all(old);
        json!({"ok": errors.is_empty(), "destroyed": total - errors.len(), "destroy_errors": errors})
    }

    /// Per shape: does validate take it, and does a trial create (destroyed at once) succeed.
    pub fn probe(&mut self, shapes: &[Value]) -> Value {
        let results: Vec<Value> = shapes.iter().map(|s| self.probe_one(s)).collect();
        json!({"ok": true, "results": results})
    }

    fn probe_one(&mut self, shape: &Value) -> Value {
        let name = shape.get("name").cloned().unwrap_or(Value::Null);
        let flat = match shape.get("rule").map(rule::parse) {
            Some(Ok(f)) => f,
            Some(Err(e)) => return json!({"name": name, "created": false, "error": e.to_string()}),
            None => return json!({"name": name, "created": false, "error": "no rule"}),
        };
        let validate = self.device.validate(&flat).err();
        match self.device.create(&flat) {
            Ok(h) => {
                let destroy = self.device.destroy(h).err();
                json!({"name": name, "validated": validate.is_none(), "validate_error": validate,
                       "created": true, "destroy_error": destroy})
            }
            Err(e) => json!({"name": name, "validated": validate.is_none(),
                             "validate_error": validate, "created": false, "error": e}),
        }
    }

    pub fn counters(&mut self, port: &str) -> Value {
        let Some(rules) = self.ports.get(port) else {
            return json!({"ok": false, "error": format!("port {port} is not installed")});
        };
        let handles: Vec<D::Handle> = rules.iter().map(|r| r.handle).collect();
        let counters: Vec<Value> = handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| match self.device.query_count(h) {
                Ok((hits, bytes)) => json!({"rule": i, "hits": hits, "bytes": bytes}),
                Err(e) => json!({"rule": i, "error": e}),
            })
            .collect();
        json!({"ok": true, "counters": counters})
    }

    /// Every port's rules, destroyed before the port closes.
    pub fn remove_all(&mut self) {
        let ports: Vec<String> = self.ports.keys().cloned().collect();
        for p in ports {
            self.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted device (no driver on these hosts implements rte_flow): refuses rules with
    /// the given priority, like a driver refusing one shape, and keeps the live handles.
    #[derive(Default)]
    struct Scripted {
        refuse_priority: Option<u32>,
        next: u32,
        live: BTreeMap<u32, u32>,
        creates: u32,
    }

    impl FlowDevice for Scripted {
        type Handle = u32;
        fn validate(&mut self, _: &FlatRule) -> Result<(), String> {
            Ok(())
        }
        fn create(&mut self, r: &FlatRule) -> Result<u32, String> {
            self.creates += 1;
            if Some(r.priority) == self.refuse_priority {
                return Err("refused".into());
            }
            self.next += 1;
            self.live.insert(self.next, r.priority);
            Ok(self.next)
        }
        fn destroy(&mut self, h: u32) -> Result<(), String> {
            self.live
                .remove(&h)
                .map(|_| ())
                .ok_or_else(|| "no such flow".into())
        }
        fn query_count(&mut self, _: u32) -> Result<(u64, u64), String> {
            Err("no count".into())
        }
    }

    fn rule(priority: u32) -> Value {
        json!({"attr": {"group": 0, "priority": priority, "ingress": true},
               "pattern": [{"type": "eth"}], "actions": [{"type": "drop"}]})
    }

    fn rules(ps: &[u32]) -> Vec<Value> {
        ps.iter().map(|p| rule(*p)).collect()
    }

    fn live(i: &Installer<Scripted>) -> Vec<u32> {
        i.device.live.values().copied().collect()
    }

    #[test]
    fn a_refused_create_rolls_back_the_whole_port() {
        let mut i = Installer::new(Scripted {
            refuse_priority: Some(3),
            ..Scripted::default()
        });
        let r = i.install("p", &rules(&[1, 2, 3, 4]));
        assert_eq!(r["ok"], false);
        assert_eq!(r["failed_rule"], 2);
        assert_eq!(
            (r["created"].as_u64(), r["rolled_back"].as_u64()),
            (Some(2), Some(2))
        );
        assert!(live(&i).is_empty());
        assert_eq!(i.counters("p")["ok"], false);
        assert_eq!(i.install("p", &rules(&[1, 2]))["ok"], true);
        assert_eq!(live(&i), vec![1, 2]);
    }

    #[test]
    fn an_update_keeps_common_rules_and_creates_before_destroying() {
        let mut i = Installer::new(Scripted::default());
        assert_eq!(i.install("p", &rules(&[1, 2, 3]))["created"], 3);
        let r = i.update("p", &rules(&[2, 3, 5]));
        assert_eq!(r["ok"], true);
        assert_eq!(
            (r["created"].as_u64(), r["destroyed"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(r["kept"], 2);
        assert_eq!(live(&i), vec![2, 3, 5]);
        assert_eq!(i.device.creates, 4);
    }

    #[test]
    fn a_refused_update_leaves_the_old_set_in_place() {
        let mut i = Installer::new(Scripted {
            refuse_priority: Some(7),
            ..Scripted::default()
        });
        i.install("p", &rules(&[1, 2]));
        let r = i.update("p", &rules(&[2, 6, 7]));
        assert_eq!(r["ok"], false);
        assert_eq!(r["rolled_back"], 1);
        assert_eq!(live(&i), vec![1, 2]);
        assert_eq!(i.remove("p")["destroyed"], 2);
        assert!(live(&i).is_empty());
        assert_eq!(i.remove("p")["ok"], false);
    }

    #[test]
    fn a_rule_without_a_mapping_refuses_the_install_before_any_create() {
        let mut i = Installer::new(Scripted::default());
        let mut rs = rules(&[1]);
        rs.push(
            json!({"attr": {"ingress": true}, "pattern": [{"type": "icmp6_nd_na"}],
                       "actions": [{"type": "drop"}]}),
        );
        let r = i.install("p", &rs);
        assert_eq!(r["failed_rule"], 1);
        assert_eq!(i.device.creates, 0);
    }

    #[test]
    fn a_probe_creates_and_destroys_each_shape() {
        let mut i = Installer::new(Scripted {
            refuse_priority: Some(9),
            ..Scripted::default()
        });
        let r = i.probe(&[
            json!({"name": "a", "rule": rule(1)}),
            json!({"name": "b", "rule": rule(9)}),
        ]);
        assert_eq!(r["results"][0]["created"], true);
        assert_eq!(r["results"][1]["created"], false);
        assert!(live(&i).is_empty());
    }
}
