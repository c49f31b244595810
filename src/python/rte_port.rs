//! Bindings of the rte_flow single-port rendering (`compile_rte_flow_port`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::{issue_pairs, to_py, to_py_err, ModelArgs};
use crate::backend::rte_flow::single::{self, PortOptions, PortRendering};
use crate::backend::rte_flow::DEFAULT_MAX_RULES;

/// The result of `compile_rte_flow_port`: one port's plain rules for one driver.
#[pyclass(frozen, name = "RteFlowPortResult", module = "sgflows")]
pub(super) struct PyRteFlowPortResult {
    inner: PortRendering,
    warnings: Vec<crate::error::Issue>,
}

#[pymethods]
impl PyRteFlowPortResult {
    /// Number of rules.
    #[getter]
    fn rule_count(&self) -> usize {
        self.inner.rules.len()
    }

    /// The port's id.
    #[getter]
    fn port(&self) -> &str {
        &self.inner.port
    }

    /// The driver's name.
    #[getter]
    fn profile(&self) -> &'static str {
        self.inner.options.driver.name
    }

    /// Whether the rules can be installed (software traffic has a software queue).
    #[getter]
    fn offloadable(&self) -> bool {
        self.inner.offloadable()
    }

    /// Why the port is not offloadable, or None.
    #[getter]
    fn problem(&self) -> Option<String> {
        self.inner.problem()
    }

    /// `flow create|validate` lines; ValueError when the port is not offloadable.
    #[pyo3(signature = (command="create"))]
    fn to_testpmd(&self, py: Python<'_>, command: &str) -> PyResult<String> {
        if command != "create" && command != "validate" {
            return Err(PyValueError::new_err("command must be create or validate"));
        }
        self.inner.to_testpmd(command).map_err(|e| to_py_err(py, e))
    }

    /// The structured form as Python objects: rules and report.
    fn document<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.inner.to_json())
    }

    /// The structured form as JSON text.
    fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.inner.to_json()).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The report: directions, what goes to software and why, every rule's place.
    #[getter]
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let doc = self.inner.to_json();
        to_py(py, &doc["report"])
    }

    /// The report as readable text.
    fn report_text(&self) -> String {
        self.inner.report_text()
    }

    /// Remarks from reading the model, as (path, message).
    #[getter]
    fn warnings(&self) -> Vec<(String, String)> {
        issue_pairs(&self.warnings)
    }

    fn __len__(&self) -> usize {
        self.inner.rules.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<RteFlowPortResult {} rules for port {} on {}{}>",
            self.inner.rules.len(),
            self.inner.port,
            self.inner.options.driver.name,
            if self.inner.offloadable() {
                ""
            } else {
                ", not offloadable"
            }
        )
    }
}

/// One port's rules as plain rte_flow rules for a driver, its profile narrowed by the shapes
/// a probe refused (`refused`) and the highest priority it created (`max_priority`). See
/// `sgflows.compile_rte_flow_port` for the documented signature.
#[pyfunction]
#[pyo3(signature = (model, port, *, input_format="auto", widen_unmatchable_port_ranges=false,
    strict=None, profile="net_tap", ethdev=0, accept_queue=0, software_queue,
    max_exact_ports=64, max_rules=None, refused=None, max_priority=None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn compile_rte_flow_port(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    port: &str,
    input_format: &str,
    widen_unmatchable_port_ranges: bool,
    strict: Option<&str>,
    profile: &str,
    ethdev: u16,
    accept_queue: u16,
    software_queue: Option<u16>,
    max_exact_ports: usize,
    max_rules: Option<usize>,
    refused: Option<Vec<String>>,
    max_priority: Option<u32>,
) -> PyResult<PyRteFlowPortResult> {
    let args = ModelArgs::read(model, input_format, widen_unmatchable_port_ranges, strict)?;
    let profile_driver = single::driver_by_name(profile).ok_or_else(|| {
        let names: Vec<&str> = single::PORT_DRIVERS.iter().map(|d| d.name).collect();
        PyValueError::new_err(format!(
            "unknown single-port profile {profile:?}; expected one of {}",
            names.join(", ")
        ))
    })?;
    let refused = refused.unwrap_or_default();
    let driver =
        single::narrow(profile_driver, &refused, max_priority).map_err(|e| to_py_err(py, e))?;
    let options = PortOptions {
        driver,
        refused,
        ethdev,
        accept_queue,
        software_queue,
        max_exact_ports,
    };
    let result = py.detach(|| {
        let model = args.load()?;
        let rendering = single::render_port(
            &model,
            port,
            &options,
            max_rules.unwrap_or(DEFAULT_MAX_RULES),
        )?;
        Ok((rendering, model.warnings))
    });
    result
        .map(|(inner, warnings)| PyRteFlowPortResult { inner, warnings })
        .map_err(|e| to_py_err(py, e))
}
