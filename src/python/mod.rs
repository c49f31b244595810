//! The only PyO3 code: the `sgflows._sgflows` extension module. It converts at the boundary
//! and delegates; all logic lives in the pure-Rust core.

mod convert;
mod rte_port;
mod session;

use std::collections::HashMap;

use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyMapping, PyString, PyTuple};

use crate::backend::openflow::{Compiled, OpenFlowOptions, Tables};
use crate::backend::ovn::{compile_ovn as core_compile_ovn, OvnCompiled, OvnOptions};
use crate::backend::rte_flow::{self, RteCompiled, RteFlowOptions};
use crate::error::{Error, Issue};
use crate::model::{InputFormat, ParseOptions, UnknownKeys};

create_exception!(
    sgflows,
    ModelError,
    PyValueError,
    "The model is invalid; `errors` lists every problem as (path, message)."
);
create_exception!(
    sgflows,
    FlowLimitError,
    ModelError,
    "Compiling the model would exceed `max_flows`."
);

/// Model remarks as Python sees them: (path, message) pairs.
fn issue_pairs(issues: &[Issue]) -> Vec<(String, String)> {
    issues
        .iter()
        .map(|w| (w.path.clone(), w.message.clone()))
        .collect()
}

/// Maps a core error to its Python exception, with the problems in `errors`.
fn to_py_err(py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    let issues: Vec<(String, String)> = err
        .issues()
        .into_iter()
        .map(|i| (i.path, i.message))
        .collect();
    let pyerr = match err {
        Error::TooManyFlows { .. } => FlowLimitError::new_err(message),
        Error::Option { .. } => return PyValueError::new_err(message),
        Error::Internal(_) => return PyRuntimeError::new_err(message),
        _ => ModelError::new_err(message),
    };
    if let Ok(list) = PyList::new(py, issues) {
        let _ = pyerr.value(py).setattr("errors", list);
    }
    pyerr
}

/// The input, read into something that can cross into a GIL-free section.
enum Input {
    Bytes(Vec<u8>),
    Value(serde_json::Value),
}

fn read_input(model: &Bound<'_, PyAny>) -> PyResult<Input> {
    if let Ok(b) = model.cast::<PyBytes>() {
        return Ok(Input::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(s) = model.cast::<PyString>() {
        return Ok(Input::Bytes(s.to_cow()?.as_bytes().to_vec()));
    }
    if model.is_instance_of::<PyDict>()
        || model.is_instance_of::<PyList>()
        || model.is_instance_of::<PyTuple>()
        || model.cast::<PyMapping>().is_ok()
    {
        return convert::to_value(model)
            .map(Input::Value)
            .map_err(|message| {
                to_py_err(
                    model.py(),
                    Error::Decode {
                        format: "Python objects",
                        message,
                    },
                )
            });
    }
    Err(PyTypeError::new_err(format!(
        "model must be a mapping, or JSON/msgpack bytes or text, not {}",
        model.get_type().name()?
    )))
}

fn load(input: Input, format: InputFormat, options: &ParseOptions) -> crate::Result<crate::Model> {
    match input {
        Input::Bytes(b) => crate::load_model(&b, format, options),
        Input::Value(v) => crate::parse_value(&v, options),
    }
}

/// The model and the keyword arguments of how to read it, which every compile function
/// shares, turned into options in one place (as `OpenFlowArgs` does for OpenFlow's).
pub(super) struct ModelArgs {
    input: Input,
    format: InputFormat,
    parse: ParseOptions,
}

impl ModelArgs {
    pub(super) fn read(
        model: &Bound<'_, PyAny>,
        input_format: &str,
        widen_unmatchable_port_ranges: bool,
        strict: Option<&str>,
    ) -> PyResult<ModelArgs> {
        Ok(ModelArgs {
            format: input_format_arg(input_format)?,
            input: read_input(model)?,
            parse: parse_options(widen_unmatchable_port_ranges, strict)?,
        })
    }

    /// The model, decoded and parsed (no Python objects: call it in a GIL-free section).
    pub(super) fn load(self) -> crate::Result<crate::Model> {
        load(self.input, self.format, &self.parse)
    }
}

/// The reading options: `strict` is `error`, `warn`, `ignore`, or `None` for the shape's
/// default (an error in the documented model, a warning in Neutron's RPC payload).
fn parse_options(
    widen_unmatchable_port_ranges: bool,
    strict: Option<&str>,
) -> PyResult<ParseOptions> {
    let unknown_keys = match strict {
        None => None,
        Some(name) => Some(UnknownKeys::parse(name).ok_or_else(|| {
            PyValueError::new_err(format!(
                "strict must be error, warn, ignore or None, not {name:?}"
            ))
        })?),
    };
    Ok(ParseOptions {
        widen_unmatchable_port_ranges,
        unknown_keys,
    })
}

fn input_format(name: &str) -> PyResult<InputFormat> {
    match name {
        "auto" => Ok(InputFormat::Auto),
        "json" => Ok(InputFormat::Json),
        "msgpack" => Ok(InputFormat::Msgpack),
        other => Err(PyValueError::new_err(format!(
            "input_format must be auto, json or msgpack, not {other:?}"
        ))),
    }
}

/// The OpenFlow keyword arguments `compile()` and `Compiler()` share, turned into options in
/// one place.
pub(super) struct OpenFlowArgs<'a, 'py> {
    pub(super) cookie: Option<u64>,
    pub(super) max_flows: Option<usize>,
    pub(super) entry_flow: bool,
    pub(super) normal_flow: bool,
    pub(super) port_register: u8,
    pub(super) zone_register: u8,
    pub(super) policy_register: u8,
    pub(super) tables: Option<&'a Bound<'py, PyDict>>,
    pub(super) optimise_rules: bool,
    pub(super) conjunctions: bool,
    pub(super) share_policies: bool,
    pub(super) shared_stage: bool,
    pub(super) filter_local_flood: bool,
    pub(super) foreign_ports: bool,
}

impl OpenFlowArgs<'_, '_> {
    pub(super) fn options(self) -> PyResult<OpenFlowOptions> {
        let defaults = OpenFlowOptions::default();
        Ok(OpenFlowOptions {
            tables: tables_from(self.tables)?,
            port_register: self.port_register,
            zone_register: self.zone_register,
            policy_register: self.policy_register,
            cookie: self.cookie.unwrap_or(defaults.cookie),
            max_flows: self.max_flows.unwrap_or(defaults.max_flows),
            entry_flow: self.entry_flow,
            normal_flow: self.normal_flow,
            optimise_rules: self.optimise_rules,
            conjunctions: self.conjunctions,
            share_policies: self.share_policies,
            shared_stage: self.shared_stage,
            filter_local_flood: self.filter_local_flood,
            foreign_ports: self.foreign_ports,
        })
    }
}

fn tables_from(dict: Option<&Bound<'_, PyDict>>) -> PyResult<Tables> {
    let mut t = Tables::default();
    let Some(dict) = dict else { return Ok(t) };
    for (k, v) in dict.iter() {
        let name: String = k.extract()?;
        let n: u8 = v.extract().map_err(|_| {
            PyValueError::new_err(format!("tables[{name:?}] must be an integer 0-254"))
        })?;
        let slot = match name.as_str() {
            "entry" => &mut t.entry,
            "classify" => &mut t.classify,
            "egress_base" => &mut t.egress_base,
            "egress_rules" => &mut t.egress_rules,
            "accept_or_ingress" => &mut t.accept_or_ingress,
            "ingress_base" => &mut t.ingress_base,
            "ingress_rules" => &mut t.ingress_rules,
            "egress_protocol" => &mut t.egress_protocol,
            "egress_protocol_stateless" => &mut t.egress_protocol_stateless,
            "egress_unaddressed" => &mut t.egress_unaddressed,
            "ingress_protocol" => &mut t.ingress_protocol,
            "ingress_protocol_stateless" => &mut t.ingress_protocol_stateless,
            "accepted_egress" => &mut t.accepted_egress,
            "accepted_ingress" => &mut t.accepted_ingress,
            "normal" => &mut t.normal,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown table name {other:?}"
                )));
            }
        };
        *slot = n;
    }
    Ok(t)
}

/// Writes all of `data` to a raw binary file, whose `write` may take only part of it (an
/// unbuffered `sys.stdout.buffer` is one, under `python -u`).
fn write_all_raw(file: &Bound<'_, PyAny>, mut data: &[u8]) -> PyResult<()> {
    while !data.is_empty() {
        let taken: Option<usize> = file
            .call_method1("write", (PyBytes::new(file.py(), data),))?
            .extract()?;
        match taken {
            Some(n) if n > 0 => data = &data[n.min(data.len())..],
            _ => {
                return Err(pyo3::exceptions::PyBlockingIOError::new_err(
                    "write_ofctl: the file took nothing (a non-blocking file?)",
                ))
            }
        }
    }
    Ok(())
}

/// Characters per `write()` call of `CompileResult.write_ofctl`.
const OFCTL_CHUNK: usize = 1 << 20;

/// The result of `compile()`: flows, statistics and warnings.
#[pyclass(frozen, name = "CompileResult", module = "sgflows")]
pub(super) struct PyCompileResult {
    inner: Compiled,
    /// The Python views, each built on first use: a result is immutable, and rebuilding
    /// tens of thousands of objects on every access was most of a caller's time.
    flows_view: PyOnceLock<Py<PyTuple>>,
    records_view: PyOnceLock<Py<PyTuple>>,
    stats_view: PyOnceLock<Py<PyDict>>,
}

impl PyCompileResult {
    pub(super) fn new(inner: Compiled) -> Self {
        PyCompileResult {
            inner,
            flows_view: PyOnceLock::new(),
            records_view: PyOnceLock::new(),
            stats_view: PyOnceLock::new(),
        }
    }

    /// The `(table, priority, match, actions)` tuples, built once.
    fn flow_tuples<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyTuple>> {
        let tuples = self.flows_view.get_or_try_init(py, || {
            let items = self
                .inner
                .flows
                .iter()
                .map(|f| (f.table, f.priority, &f.matches, &*f.actions));
            PyTuple::new(py, items).map(Bound::unbind)
        })?;
        Ok(tuples.bind(py))
    }

    /// The record dicts, built once; their match and actions strings are the tuples' own,
    /// and each port and rule name is one string object however many flows carry it.
    fn records<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyTuple>> {
        let records = self.records_view.get_or_try_init(py, || {
            let tuples = self.flow_tuples(py)?;
            let mut names: HashMap<String, Bound<'py, PyString>> = HashMap::new();
            let mut name = |text: &str| match names.get(text) {
                Some(s) => s.clone(),
                None => names
                    .entry(text.to_string())
                    .or_insert_with_key(|t| PyString::new(py, t))
                    .clone(),
            };
            let mut dicts = Vec::with_capacity(self.inner.flows.len());
            for (f, t) in self.inner.flows.iter().zip(tuples.iter()) {
                let d = PyDict::new(py);
                d.set_item("table", t.get_item(0)?)?;
                d.set_item("priority", t.get_item(1)?)?;
                d.set_item("match", t.get_item(2)?)?;
                d.set_item("actions", t.get_item(3)?)?;
                d.set_item("port", f.port.as_deref().map(&mut name))?;
                d.set_item("rule", f.rule.as_ref().map(|r| name(&r.to_string())))?;
                dicts.push(d);
            }
            PyTuple::new(py, dicts).map(Bound::unbind)
        })?;
        Ok(records.bind(py))
    }

    fn build_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.inner.stats;
        let d = PyDict::new(py);
        d.set_item("ports", s.ports)?;
        d.set_item("filtered_ports", s.filtered_ports)?;
        d.set_item("groups", s.groups)?;
        d.set_item("rules", s.rules)?;
        d.set_item("flows", s.flows)?;
        d.set_item("duplicates", s.duplicates)?;
        d.set_item("per_table", s.per_table.clone())?;
        d.set_item("per_port", s.per_port.clone())?;
        d.set_item("per_rule", s.per_rule.clone())?;
        d.set_item("policies", s.policies)?;
        d.set_item("conjunctions", s.conjunctions)?;
        // Lists, not sets: the stats must serialise to JSON as they are.
        let fates: std::collections::BTreeMap<&String, Vec<&String>> = s
            .rule_fates
            .iter()
            .map(|(rule, why)| (rule, why.iter().collect()))
            .collect();
        d.set_item("rule_fates", fates)?;
        Ok(d)
    }
}

#[pymethods]
impl PyCompileResult {
    /// The flows as `(table, priority, match, actions)` tuples, in output order. Built on
    /// first access; each access returns a new list of the same tuples.
    #[getter]
    pub(super) fn flows<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.flow_tuples(py)?.iter())
    }

    /// The flows with their origin: dicts with table, priority, match, actions, port, rule.
    /// Built on first call; each call returns a new list of the same dicts (copy one
    /// before changing it).
    fn flow_records<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.records(py)?.iter())
    }

    /// Writes the flows as `ovs-ofctl add-flows` text to `file` in chunks of about a
    /// megabyte, never holding the whole text: `bytes` to a binary file (`io.BufferedIOBase`:
    /// `open(path, "wb")`, `sys.stdout.buffer`, `BytesIO`; or `io.RawIOBase`, written until
    /// all is taken; no text layer decoding and re-encoding each chunk), `str` to anything
    /// else with a `write` method; returns the number of characters written (the text is
    /// ASCII: as many bytes).
    fn write_ofctl(&self, file: &Bound<'_, PyAny>) -> PyResult<usize> {
        let py = file.py();
        let io = py.import("io")?;
        let buffered = file.is_instance(&io.getattr("BufferedIOBase")?)?;
        let raw = !buffered && file.is_instance(&io.getattr("RawIOBase")?)?;
        let mut written = 0;
        self.inner.render_ofctl(OFCTL_CHUNK, |chunk| {
            written += chunk.len();
            if buffered {
                file.call_method1("write", (PyBytes::new(py, chunk.as_bytes()),))
                    .map(drop)
            } else if raw {
                write_all_raw(file, chunk.as_bytes())
            } else {
                file.call_method1("write", (chunk,)).map(drop)
            }
        })?;
        Ok(written)
    }

    /// Number of flows.
    #[getter]
    fn flow_count(&self) -> usize {
        self.inner.flows.len()
    }

    /// The cookie on every flow.
    #[getter]
    fn cookie(&self) -> u64 {
        self.inner.cookie
    }

    /// Statistics: ports, filtered_ports, groups, rules, flows, per_table, per_port,
    /// per_rule, duplicates. Built on first access; each access returns a copy (its
    /// mappings copied too).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let cached = self
            .stats_view
            .get_or_try_init(py, || self.build_stats(py).map(Bound::unbind))?
            .bind(py);
        let copy = cached.copy()?;
        for (key, value) in cached.iter() {
            if let Ok(inner) = value.cast::<PyDict>() {
                copy.set_item(key, inner.copy()?)?;
            }
        }
        Ok(copy)
    }

    /// Remarks from reading the model, as (path, message).
    #[getter]
    fn warnings(&self) -> Vec<(String, String)> {
        issue_pairs(&self.inner.warnings)
    }

    /// The flows as `ovs-ofctl add-flows` text.
    fn to_ofctl(&self, py: Python<'_>) -> String {
        py.detach(|| self.inner.to_ofctl())
    }

    /// What changes from `old` to this result, as an atomic `ovs-ofctl bundle` transaction.
    fn diff_from(&self, py: Python<'_>, old: &PyCompileResult) -> PyFlowDiff {
        PyFlowDiff {
            inner: py.detach(|| crate::diff(&old.inner, &self.inner)),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.flows.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<CompileResult {} flows for {} ports>",
            self.inner.stats.flows, self.inner.stats.ports
        )
    }
}

/// The flows that differ between two compiles.
#[pyclass(frozen, name = "FlowDiff", module = "sgflows")]
struct PyFlowDiff {
    inner: crate::FlowDiff,
}

impl PyFlowDiff {
    fn flows(&self) -> impl Iterator<Item = &crate::Flow> {
        self.inner
            .added
            .iter()
            .chain(&self.inner.modified)
            .chain(&self.inner.removed)
    }
}

#[pymethods]
impl PyFlowDiff {
    /// Flows only in the new compile.
    #[getter]
    fn added(&self) -> usize {
        self.inner.added.len()
    }

    /// Flows whose actions changed.
    #[getter]
    fn modified(&self) -> usize {
        self.inner.modified.len()
    }

    /// Flows only in the old compile.
    #[getter]
    fn removed(&self) -> usize {
        self.inner.removed.len()
    }

    /// Input for `ovs-ofctl -O OpenFlow13 bundle BRIDGE FILE` (one atomic transaction);
    /// `cookie` overrides the flows' cookie (old and new).
    #[pyo3(signature = (cookie=None))]
    fn to_bundle(&self, cookie: Option<u64>) -> String {
        match cookie {
            None => self.inner.to_bundle(),
            Some(c) => crate::FlowDiff {
                cookie: c,
                old_cookie: c,
                ..self.inner.clone()
            }
            .to_bundle(),
        }
    }

    /// The ports whose own flows the diff adds, changes or deletes (sorted).
    #[getter]
    fn ports(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<&str> =
            self.flows().filter_map(|f| f.port.as_deref()).collect();
        set.into_iter().map(str::to_string).collect()
    }

    /// The security groups whose rule flows the diff adds, changes or deletes (sorted).
    #[getter]
    fn groups(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<&String> = self
            .flows()
            .filter_map(|f| f.rule.as_ref().map(|r| &r.group))
            .collect();
        set.into_iter().cloned().collect()
    }

    fn __bool__(&self) -> bool {
        !self.inner.is_empty()
    }

    fn __repr__(&self) -> String {
        format!(
            "<FlowDiff +{} ~{} -{}>",
            self.inner.added.len(),
            self.inner.modified.len(),
            self.inner.removed.len()
        )
    }
}

/// Compiles a model to OpenFlow. See `sgflows.compile` for the documented signature.
#[pyfunction]
#[pyo3(signature = (model, *, input_format="auto", cookie=None, max_flows=None,
    widen_unmatchable_port_ranges=false, strict=None, entry_flow=true, normal_flow=true,
    port_register=5, zone_register=6, policy_register=7, tables=None,
    optimise_rules=true, conjunctions=true, share_policies=true, shared_stage=true,
    filter_local_flood=false, foreign_ports=false))]
#[allow(clippy::too_many_arguments)]
fn compile_openflow(
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
) -> PyResult<PyCompileResult> {
    let format = input_format_arg(input_format)?;
    let input = read_input(model)?;
    let parse = parse_options(widen_unmatchable_port_ranges, strict)?;
    let options = OpenFlowArgs {
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
    let result = py.detach(|| {
        let model = load(input, format, &parse)?;
        crate::compile_openflow(&model, &options)
    });
    result
        .map(PyCompileResult::new)
        .map_err(|e| to_py_err(py, e))
}

fn input_format_arg(name: &str) -> PyResult<InputFormat> {
    input_format(name)
}

/// Warnings as (path, message) and a summary of the model.
type Validated<'py> = (Vec<(String, String)>, Bound<'py, PyDict>);

/// Reads and validates a model; returns its warnings as (path, message) and a summary dict.
#[pyfunction]
#[pyo3(signature = (model, *, input_format="auto", widen_unmatchable_port_ranges=false,
    strict=None))]
fn validate<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    input_format: &str,
    widen_unmatchable_port_ranges: bool,
    strict: Option<&str>,
) -> PyResult<Validated<'py>> {
    let format = input_format_arg(input_format)?;
    let input = read_input(model)?;
    let parse = parse_options(widen_unmatchable_port_ranges, strict)?;
    let model = py
        .detach(|| load(input, format, &parse))
        .map_err(|e| to_py_err(py, e))?;
    let summary = PyDict::new(py);
    summary.set_item("ports", model.ports.len())?;
    summary.set_item("groups", model.groups.len())?;
    summary.set_item(
        "rules",
        model.groups.values().map(|g| g.rules.len()).sum::<usize>(),
    )?;
    summary.set_item(
        "stateless_groups",
        model.groups.values().filter(|g| !g.stateful).count(),
    )?;
    let warnings = issue_pairs(&model.warnings);
    Ok((warnings, summary))
}

/// Decides one packet at one port from the model alone. See `sgflows.evaluate`.
#[pyfunction]
#[pyo3(signature = (model, packet, *, port, direction="ingress", ct=None, input_format="auto",
    widen_unmatchable_port_ranges=false, strict=None))]
#[allow(clippy::too_many_arguments)]
fn evaluate<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    packet: &str,
    port: String,
    direction: &str,
    ct: Option<&str>,
    input_format: &str,
    widen_unmatchable_port_ranges: bool,
    strict: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    use crate::eval::{CtState, PacketSpec, Query};
    use crate::model::Direction;
    let format = input_format_arg(input_format)?;
    let direction = match direction {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        other => {
            return Err(PyValueError::new_err(format!(
                "direction must be ingress or egress, not {other:?}"
            )))
        }
    };
    let packet =
        PacketSpec::parse(packet).map_err(|e| PyValueError::new_err(format!("packet: {e}")))?;
    let ct = ct
        .map(CtState::parse)
        .transpose()
        .map_err(PyValueError::new_err)?;
    let input = read_input(model)?;
    let parse = parse_options(widen_unmatchable_port_ranges, strict)?;
    let query = Query {
        port,
        direction,
        packet,
        ct,
    };
    let (d, ofport, local_vlan, warnings) = py
        .detach(|| {
            let model = load(input, format, &parse)?;
            let d = crate::eval::evaluate(&model, &query)?;
            let port = model.ports.iter().find(|p| p.id == query.port);
            let warnings = issue_pairs(&model.warnings);
            Ok::<_, Error>((
                d,
                port.and_then(|p| p.ofport),
                port.and_then(|p| p.local_vlan),
                warnings,
            ))
        })
        .map_err(|e| to_py_err(py, e))?;
    let out = PyDict::new(py);
    out.set_item("warnings", warnings)?;
    out.set_item("verdict", d.verdict.as_str())?;
    out.set_item("reason", d.reason.to_string())?;
    out.set_item("kind", d.reason.kind())?;
    let rule = match &d.reason {
        crate::eval::Reason::Rule(r) => Some((r.group.clone(), r.index)),
        _ => None,
    };
    out.set_item("rule", rule)?;
    out.set_item("rule_text", d.rule_text)?;
    out.set_item(
        "matching_rules",
        d.matching_rules
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
    )?;
    out.set_item("packet", d.packet.to_flow())?;
    out.set_item("port", &query.port)?;
    out.set_item("direction", direction.as_str())?;
    out.set_item("stateful", d.stateful)?;
    out.set_item("filtered", d.filtered)?;
    out.set_item("ct", d.ct.map(CtState::as_str))?;
    out.set_item("conntrack", d.conntrack)?;
    out.set_item("ofport", ofport)?;
    out.set_item("local_vlan", local_vlan)?;
    Ok(out)
}

/// The result of `compile(target="rte_flow")`: rules, statistics, offload report, warnings.
#[pyclass(frozen, name = "RteFlowResult", module = "sgflows")]
struct PyRteFlowResult {
    inner: RteCompiled,
}

fn to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, value).map_err(|e| PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl PyRteFlowResult {
    /// Number of rte_flow rules.
    #[getter]
    fn rule_count(&self) -> usize {
        self.inner.rules.len()
    }

    /// The profile's name.
    #[getter]
    fn profile(&self) -> &'static str {
        self.inner.options.profile.name
    }

    /// The rules as testpmd commands (`flow create` or `flow validate`), one per line.
    #[pyo3(signature = (command="create"))]
    fn to_testpmd(&self, py: Python<'_>, command: &str) -> PyResult<String> {
        if command != "create" && command != "validate" {
            return Err(PyValueError::new_err("command must be create or validate"));
        }
        Ok(py.detach(|| self.inner.to_testpmd_with(command)))
    }

    /// The patterns of the rules without port items as plain `ingress` drop rules on `port`
    /// (no group, transfer or count), for drivers such as `net_tap` that judge only those.
    #[pyo3(signature = (port=0, command="validate"))]
    fn plain_drop_lines(&self, port: u16, command: &str) -> PyResult<Vec<String>> {
        if command != "create" && command != "validate" {
            return Err(PyValueError::new_err("command must be create or validate"));
        }
        Ok(self.inner.plain_drop_lines(port, command))
    }

    /// The structured form as JSON text: rules (attr, pattern with spec/mask/last, actions,
    /// origin), stats, report, warnings.
    fn to_json(&self, py: Python<'_>) -> String {
        py.detach(|| {
            let mut text = serde_json::to_string_pretty(&self.inner.to_json()).unwrap_or_default();
            text.push('\n');
            text
        })
    }

    /// The structured form as Python objects.
    fn document<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.to_json())
    }

    /// The offload report: one dict per port (mode, groups, offloaded, software, rules).
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.report.to_json())
    }

    /// The offload report as readable text.
    fn report_text(&self) -> String {
        self.inner.report_text()
    }

    /// Statistics: ports, filtered_ports, rules, groups, redundant, max_priority, per_group,
    /// per_port, per_rule, per_kind.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.stats_json())
    }

    /// Remarks from reading the model, as (path, message).
    #[getter]
    fn warnings(&self) -> Vec<(String, String)> {
        issue_pairs(&self.inner.warnings)
    }

    fn __len__(&self) -> usize {
        self.inner.rules.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<RteFlowResult {} rules for {} ports, profile {}>",
            self.inner.rules.len(),
            self.inner.stats.ports,
            self.inner.options.profile.name
        )
    }
}

/// Compiles a model to rte_flow rules. See `sgflows.compile` for the documented signature.
#[pyfunction]
#[pyo3(signature = (model, *, input_format="auto", widen_unmatchable_port_ranges=false,
    strict=None, profile="generic", proxy_port=None, uplink_port=None, software_port=None, forward="software",
    count=true, max_rules=None))]
#[allow(clippy::too_many_arguments)]
fn compile_rte_flow(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    input_format: &str,
    widen_unmatchable_port_ranges: bool,
    strict: Option<&str>,
    profile: &str,
    proxy_port: Option<u16>,
    uplink_port: Option<u16>,
    software_port: Option<u16>,
    forward: &str,
    count: bool,
    max_rules: Option<usize>,
) -> PyResult<PyRteFlowResult> {
    let format = input_format_arg(input_format)?;
    let profile = rte_flow::profiles::by_name(profile).ok_or_else(|| {
        let names: Vec<&str> = rte_flow::PROFILES.iter().map(|p| p.name).collect();
        PyValueError::new_err(format!(
            "unknown profile {profile:?}; expected one of {}",
            names.join(", ")
        ))
    })?;
    let forward = match forward {
        "software" => rte_flow::Forward::Software,
        "uplink" => rte_flow::Forward::Uplink,
        other => {
            return Err(PyValueError::new_err(format!(
                "forward must be software or uplink, not {other:?}"
            )))
        }
    };
    let input = read_input(model)?;
    let parse = parse_options(widen_unmatchable_port_ranges, strict)?;
    let result = py.detach(|| {
        // The model may name the proxy, uplink and software ports; keywords win.
        let value = match input {
            Input::Bytes(b) => crate::decode(&b, format)?,
            Input::Value(v) => v,
        };
        // Both readers judge the input; their problems are reported together.
        let (from_model, model) = match (
            rte_flow::ModelPorts::from_value(&value),
            crate::parse_value(&value, &parse),
        ) {
            (Ok(ports), Ok(model)) => (ports, model),
            (Err(a), Err(b)) => {
                let mut issues = a.issues();
                issues.extend(b.issues());
                issues.sort();
                return Err(Error::Invalid(issues));
            }
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let options = RteFlowOptions {
            profile,
            proxy_port: proxy_port.or(from_model.proxy_port).unwrap_or(0),
            uplink_port: uplink_port.or(from_model.uplink_port).unwrap_or(0),
            software_port: software_port.or(from_model.software_port),
            forward,
            count,
            max_rules: max_rules.unwrap_or(rte_flow::DEFAULT_MAX_RULES),
        };
        rte_flow::compile_rte_flow(&model, &options)
    });
    result
        .map(|inner| PyRteFlowResult { inner })
        .map_err(|e| to_py_err(py, e))
}

/// The result of `compile(target="ovn")`: Northbound rows, statistics, warnings.
#[pyclass(frozen, name = "OvnResult", module = "sgflows")]
struct PyOvnResult {
    inner: OvnCompiled,
}

#[pymethods]
impl PyOvnResult {
    /// Number of ACL rows.
    #[getter]
    fn acl_count(&self) -> usize {
        self.inner.acls.len()
    }

    /// The rows as a shell script running one `ovn-nbctl` transaction.
    fn to_nbctl(&self) -> String {
        self.inner.to_nbctl()
    }

    /// The `ovn-nbctl` commands, one argument list each (join them with `--`).
    fn nbctl_commands(&self) -> Vec<Vec<String>> {
        self.inner.nbctl_commands()
    }

    /// The rows as an OVSDB `transact` request, JSON text.
    fn to_json(&self, py: Python<'_>) -> String {
        py.detach(|| {
            let mut text =
                serde_json::to_string_pretty(&self.inner.to_transact()).unwrap_or_default();
            text.push('\n');
            text
        })
    }

    /// The `transact` request as Python objects.
    fn transact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.to_transact())
    }

    /// Statistics: acls, port_groups, address_sets, rules, per_kind, per_group, per_rule.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.stats_json())
    }

    /// Remarks from reading the model, as (path, message).
    #[getter]
    fn warnings(&self) -> Vec<(String, String)> {
        issue_pairs(&self.inner.warnings)
    }

    fn __len__(&self) -> usize {
        self.inner.acls.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<OvnResult {} ACLs, {} port groups, {} address sets>",
            self.inner.acls.len(),
            self.inner.port_groups.len(),
            self.inner.address_sets.len()
        )
    }
}

/// Compiles a model to OVN Northbound rows. See `sgflows.compile` for the signature.
#[pyfunction]
#[pyo3(signature = (model, *, input_format="auto", widen_unmatchable_port_ranges=false,
    strict=None, with_ports=false, switch="sgf_switch"))]
fn compile_ovn(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    input_format: &str,
    widen_unmatchable_port_ranges: bool,
    strict: Option<&str>,
    with_ports: bool,
    switch: &str,
) -> PyResult<PyOvnResult> {
    let args = ModelArgs::read(model, input_format, widen_unmatchable_port_ranges, strict)?;
    let options = OvnOptions {
        with_ports,
        switch: switch.to_string(),
    };
    let result = py.detach(|| core_compile_ovn(&args.load()?, &options));
    result
        .map(|inner| PyOvnResult { inner })
        .map_err(|e| to_py_err(py, e))
}

#[pymodule]
fn _sgflows(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("FlowLimitError", py.get_type::<FlowLimitError>())?;
    m.add_class::<PyCompileResult>()?;
    m.add_class::<PyFlowDiff>()?;
    m.add_class::<session::PyCompiler>()?;
    m.add_function(wrap_pyfunction!(compile_openflow, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_class::<PyRteFlowResult>()?;
    m.add_function(wrap_pyfunction!(compile_rte_flow, m)?)?;
    m.add_class::<rte_port::PyRteFlowPortResult>()?;
    m.add_function(wrap_pyfunction!(rte_port::compile_rte_flow_port, m)?)?;
    m.add_class::<PyOvnResult>()?;
    m.add_function(wrap_pyfunction!(compile_ovn, m)?)?;
    Ok(())
}
