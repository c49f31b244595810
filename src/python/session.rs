//! `sgflows.Compiler`: a compiler session in Python. Arguments come in the input's own
//! shapes (a port as in `ports`, rules as in a group's `rules`, members as in
//! `sg_member_ips`); each is read by the model's own parser, wrapped in a small document.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use serde_json::{json, Map, Value};

use super::{convert, read_input, to_py_err, PyCompileResult, PyFlowDiff};
use crate::backend::openflow::{Change, MemberSet, OpenFlowOptions, Session};
use crate::error::Error;
use crate::model::{Members, ParseOptions, Port, Rule};

/// A compiled model kept between changes; every change returns the minimal `FlowDiff`.
#[pyclass(frozen, name = "Compiler", module = "sgflows")]
pub(super) struct PyCompiler {
    // One change at a time: the lock makes the object safe to share between threads.
    session: Mutex<Session>,
    /// The current flows as a `CompileResult`, built on first use and dropped by the next
    /// change, so that `flows()` and `result()` do not rebuild their objects per call.
    /// Only touched with `session` locked (so a change can never leave a stale view).
    view: Mutex<Option<Py<PyCompileResult>>>,
    parse: ParseOptions,
    /// The input's `networks` (network id → local VLAN), so that a new port may name its
    /// network instead of carrying `local_vlan`.
    networks: Value,
}

fn value_of(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    convert::to_value(obj).map_err(|message| {
        to_py_err(
            obj.py(),
            Error::Decode {
                format: "Python objects",
                message,
            },
        )
    })
}

/// Every string a key named `key` holds anywhere in `v` (remote group ids of rule dicts).
fn strings_under(v: &Value, key: &str, out: &mut Map<String, Value>, empty: &Value) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                match inner {
                    Value::String(s) if k == key => {
                        out.insert(s.clone(), empty.clone());
                    }
                    _ => strings_under(inner, key, out, empty),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|x| strings_under(x, key, out, empty)),
        _ => {}
    }
}

/// Reads rule dicts as a group's `rules`; the remote groups they name are declared empty so
/// that the small document validates on its own (the session checks the real references).
fn read_rules(rules: Value, options: &ParseOptions) -> crate::Result<Vec<Rule>> {
    let mut members = Map::new();
    strings_under(&rules, "remote_group_id", &mut members, &json!({}));
    let mut address_groups = Map::new();
    strings_under(
        &rules,
        "remote_address_group_id",
        &mut address_groups,
        &json!([]),
    );
    let doc = json!({"security_groups": {"g": {"rules": rules}},
                     "members": members, "address_groups": address_groups});
    let mut model = crate::parse_value(&doc, options)?;
    Ok(model
        .groups
        .remove("g")
        .map(|g| g.rules)
        .unwrap_or_default())
}

/// Reads a port dict as in `ports`; its groups are declared empty for the same reason.
fn read_port(port: Value, networks: &Value, options: &ParseOptions) -> crate::Result<Port> {
    let mut groups = Map::new();
    if let Some(list) = port.get("security_groups").and_then(Value::as_array) {
        for g in list.iter().filter_map(Value::as_str) {
            groups.insert(g.to_string(), json!({"rules": []}));
        }
    }
    let doc = json!({"ports": [port], "security_groups": groups, "networks": networks});
    let mut model = crate::parse_value(&doc, options)?;
    model
        .ports
        .pop()
        .ok_or_else(|| Error::Internal("a parsed port went missing".into()))
}

/// Reads `{"IPv4": [ip or [ip, mac], ...], "IPv6": [...]}` (one group of `sg_member_ips`).
fn read_members(members: Value, options: &ParseOptions) -> crate::Result<Members> {
    let doc = json!({"members": {"g": members}});
    let mut model = crate::parse_value(&doc, options)?;
    Ok(model.members.remove("g").unwrap_or_default())
}

fn member_set(address_group: bool) -> MemberSet {
    if address_group {
        MemberSet::AddressGroup
    } else {
        MemberSet::Group
    }
}

impl PyCompiler {
    pub(super) fn create(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        format: crate::model::InputFormat,
        parse: ParseOptions,
        options: OpenFlowOptions,
    ) -> PyResult<PyCompiler> {
        let input = read_input(model)?;
        let (session, networks) = py
            .detach(|| {
                let value = match input {
                    super::Input::Bytes(b) => crate::decode(&b, format)?,
                    super::Input::Value(v) => v,
                };
                let networks = value.get("networks").cloned().unwrap_or(json!({}));
                let model = crate::parse_value(&value, &parse)?;
                Ok::<_, Error>((Session::new(model, options)?, networks))
            })
            .map_err(|e| to_py_err(py, e))?;
        Ok(PyCompiler {
            session: Mutex::new(session),
            view: Mutex::new(None),
            parse,
            networks,
        })
    }

    /// Builds the change without the GIL's help, then applies it under the lock.
    fn run(
        &self,
        py: Python<'_>,
        build: impl FnOnce(&ParseOptions, &Value) -> crate::Result<Change> + Send,
    ) -> PyResult<PyFlowDiff> {
        let parse = self.parse;
        let (result, stale) = py.detach(|| {
            let change = match build(&parse, &self.networks) {
                Ok(c) => c,
                Err(e) => return (Err(e), None),
            };
            let Ok(mut session) = self.session.lock() else {
                let poisoned = Error::Internal("a change panicked earlier".into());
                return (Err(poisoned), None);
            };
            let result = session.apply(change);
            // Handed back to be dropped with the GIL held.
            let stale = self.view.lock().ok().and_then(|mut v| v.take());
            (result, stale)
        });
        drop(stale);
        result
            .map(|inner| PyFlowDiff { inner })
            .map_err(|e| to_py_err(py, e))
    }
}

/// One change of a batch, as `(kind, args...)`.
fn batch_change(item: &Bound<'_, PyAny>) -> PyResult<(String, Vec<Value>)> {
    let list = item.cast::<pyo3::types::PyTuple>().map(|t| t.to_list());
    let list: Bound<'_, PyList> = match list {
        Ok(l) => l,
        Err(_) => item.cast::<PyList>()?.clone(),
    };
    let kind: String = list.get_item(0)?.extract()?;
    let args = list
        .iter()
        .skip(1)
        .map(|a| value_of(&a))
        .collect::<PyResult<Vec<Value>>>()?;
    Ok((kind, args))
}

fn arg_str(args: &[Value], i: usize, kind: &str) -> crate::Result<String> {
    args.get(i)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad_batch(kind, &format!("argument {i} must be a string")))
}

fn arg(args: &[Value], i: usize, kind: &str) -> crate::Result<Value> {
    args.get(i)
        .cloned()
        .ok_or_else(|| bad_batch(kind, &format!("argument {i} is missing")))
}

fn bad_batch(kind: &str, message: &str) -> Error {
    Error::Invalid(vec![crate::error::Issue::new(
        format!("batch.{kind}"),
        message,
    )])
}

fn change_of(
    kind: &str,
    args: &[Value],
    parse: &ParseOptions,
    networks: &Value,
) -> crate::Result<Change> {
    Ok(match kind {
        "add_port" => Change::AddPort(read_port(arg(args, 0, kind)?, networks, parse)?),
        "update_port" => Change::UpdatePort(read_port(arg(args, 0, kind)?, networks, parse)?),
        "remove_port" => Change::RemovePort(arg_str(args, 0, kind)?),
        "set_rules" | "add_rules" | "remove_rules" => {
            let group = arg_str(args, 0, kind)?;
            let rules = read_rules(arg(args, 1, kind)?, parse)?;
            match kind {
                "set_rules" => Change::SetRules { group, rules },
                "add_rules" => Change::AddRules { group, rules },
                _ => Change::RemoveRules { group, rules },
            }
        }
        "add_members" | "remove_members" => {
            let group = arg_str(args, 0, kind)?;
            let members = read_members(arg(args, 1, kind)?, parse)?;
            let set = member_set(args.get(2).and_then(Value::as_bool).unwrap_or(false));
            if kind == "add_members" {
                Change::AddMembers {
                    group,
                    set,
                    members,
                }
            } else {
                Change::RemoveMembers {
                    group,
                    set,
                    members,
                }
            }
        }
        "set_stateful" => Change::SetStateful {
            group: arg_str(args, 0, kind)?,
            stateful: args
                .get(1)
                .and_then(Value::as_bool)
                .ok_or_else(|| bad_batch(kind, "argument 1 must be a boolean"))?,
        },
        other => return Err(bad_batch(other, "unknown change")),
    })
}

#[pymethods]
impl PyCompiler {
    /// Compiles `model` (as `compile()` takes it) and keeps it for changes.
    #[new]
    #[pyo3(signature = (model, *, input_format="auto", cookie=None, max_flows=None,
        widen_unmatchable_port_ranges=false, strict=None, entry_flow=true, normal_flow=true,
        port_register=5, zone_register=6, policy_register=7, tables=None,
        optimise_rules=true, conjunctions=true, share_policies=true, shared_stage=true,
        filter_local_flood=false, foreign_ports=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Bound<'_, PyAny>,
        input_format: &str,
        cookie: Option<u64>,
        max_flows: Option<usize>,
        widen_unmatchable_port_ranges: bool,
        strict: Option<&str>,
        entry_flow: bool,
        normal_flow: bool,
        port_register: u8,
        zone_register: u8,
        policy_register: u8,
        tables: Option<&Bound<'_, PyDict>>,
        optimise_rules: bool,
        conjunctions: bool,
        share_policies: bool,
        shared_stage: bool,
        filter_local_flood: bool,
        foreign_ports: bool,
    ) -> PyResult<PyCompiler> {
        let format = super::input_format_arg(input_format)?;
        let parse = super::parse_options(widen_unmatchable_port_ranges, strict)?;
        let options = super::OpenFlowArgs {
            cookie,
            max_flows,
            entry_flow,
            normal_flow,
            port_register,
            zone_register,
            policy_register,
            tables,
            optimise_rules,
            conjunctions,
            share_policies,
            shared_stage,
            filter_local_flood,
            foreign_ports,
        }
        .options()?;
        PyCompiler::create(py, model, format, parse, options)
    }

    /// A new port, as in the model's `ports`.
    fn add_port(&self, py: Python<'_>, port: &Bound<'_, PyAny>) -> PyResult<PyFlowDiff> {
        let port = value_of(port)?;
        self.run(py, move |p, n| Ok(Change::AddPort(read_port(port, n, p)?)))
    }

    /// A port replaced by a new version with the same id.
    fn update_port(&self, py: Python<'_>, port: &Bound<'_, PyAny>) -> PyResult<PyFlowDiff> {
        let port = value_of(port)?;
        self.run(py, move |p, n| {
            Ok(Change::UpdatePort(read_port(port, n, p)?))
        })
    }

    /// A port removed, by id.
    fn remove_port(&self, py: Python<'_>, port_id: String) -> PyResult<PyFlowDiff> {
        self.run(py, move |_, _| Ok(Change::RemovePort(port_id)))
    }

    /// A group's rules replaced (rule dicts as in the model).
    fn set_rules(
        &self,
        py: Python<'_>,
        group_id: String,
        rules: &Bound<'_, PyAny>,
    ) -> PyResult<PyFlowDiff> {
        let rules = value_of(rules)?;
        self.run(py, move |p, _| {
            Ok(Change::SetRules {
                group: group_id,
                rules: read_rules(rules, p)?,
            })
        })
    }

    /// Rules added to a group.
    fn add_rules(
        &self,
        py: Python<'_>,
        group_id: String,
        rules: &Bound<'_, PyAny>,
    ) -> PyResult<PyFlowDiff> {
        let rules = value_of(rules)?;
        self.run(py, move |p, _| {
            Ok(Change::AddRules {
                group: group_id,
                rules: read_rules(rules, p)?,
            })
        })
    }

    /// Rules removed from a group, by `id` where they have one, else by content.
    fn remove_rules(
        &self,
        py: Python<'_>,
        group_id: String,
        rules: &Bound<'_, PyAny>,
    ) -> PyResult<PyFlowDiff> {
        let rules = value_of(rules)?;
        self.run(py, move |p, _| {
            Ok(Change::RemoveRules {
                group: group_id,
                rules: read_rules(rules, p)?,
            })
        })
    }

    /// Member addresses added, in the shape of one group of `sg_member_ips`.
    #[pyo3(signature = (group_id, members, *, address_group=false))]
    fn add_members(
        &self,
        py: Python<'_>,
        group_id: String,
        members: &Bound<'_, PyAny>,
        address_group: bool,
    ) -> PyResult<PyFlowDiff> {
        let members = value_of(members)?;
        self.run(py, move |p, _| {
            Ok(Change::AddMembers {
                group: group_id,
                set: member_set(address_group),
                members: read_members(members, p)?,
            })
        })
    }

    /// Member addresses removed.
    #[pyo3(signature = (group_id, members, *, address_group=false))]
    fn remove_members(
        &self,
        py: Python<'_>,
        group_id: String,
        members: &Bound<'_, PyAny>,
        address_group: bool,
    ) -> PyResult<PyFlowDiff> {
        let members = value_of(members)?;
        self.run(py, move |p, _| {
            Ok(Change::RemoveMembers {
                group: group_id,
                set: member_set(address_group),
                members: read_members(members, p)?,
            })
        })
    }

    /// A group's statefulness changed.
    fn set_stateful(
        &self,
        py: Python<'_>,
        group_id: String,
        stateful: bool,
    ) -> PyResult<PyFlowDiff> {
        self.run(py, move |_, _| {
            Ok(Change::SetStateful {
                group: group_id,
                stateful,
            })
        })
    }

    /// Several changes as one: `[("add_rules", group_id, rules), ("remove_port", id), ...]`.
    fn apply(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<PyFlowDiff> {
        let items = batch
            .try_iter()?
            .map(|item| batch_change(&item?))
            .collect::<PyResult<Vec<_>>>()?;
        self.run(py, move |p, n| {
            let changes = items
                .iter()
                .map(|(kind, args)| change_of(kind, args, p, n))
                .collect::<crate::Result<Vec<_>>>()?;
            Ok(Change::Batch(changes))
        })
    }

    /// The current flows, as `compile()` would give them for the current model: one
    /// object until the next change.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyCompileResult>> {
        let poisoned = || to_py_err(py, Error::Internal("a change panicked earlier".into()));
        let session = self.session.lock().map_err(|_| poisoned())?;
        let mut view = self.view.lock().map_err(|_| poisoned())?;
        if let Some(result) = view.as_ref() {
            return Ok(result.clone_ref(py));
        }
        let result = Py::new(py, PyCompileResult::new(session.compiled().clone()))?;
        *view = Some(result.clone_ref(py));
        Ok(result)
    }

    /// The current flows as `(table, priority, match, actions)` tuples (a new list of the
    /// same tuples until the next change).
    fn flows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.result(py)?.bind(py).get().flows(py)
    }

    /// The current flows as `ovs-ofctl add-flows` input.
    fn to_ofctl(&self, py: Python<'_>) -> PyResult<String> {
        let session = self
            .session
            .lock()
            .map_err(|_| to_py_err(py, Error::Internal("a change panicked earlier".into())))?;
        Ok(session.compiled().to_ofctl())
    }

    fn __repr__(&self) -> String {
        match self.session.lock() {
            Ok(s) => format!(
                "<Compiler {} ports, {} flows>",
                s.model().ports.len(),
                s.compiled().flows.len()
            ),
            Err(_) => "<Compiler (poisoned)>".into(),
        }
    }
}
