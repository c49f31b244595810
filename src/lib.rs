//! # sgflows
//!
//! A compiler from Neutron-style security groups (stateful and stateless) to Open vSwitch
//! flows (`ovs-ofctl` syntax). The pipeline is:
//!
//! 1. [`model`]: decode JSON/msgpack, read either input shape, validate, normalise;
//! 2. [`ir`]: lower each port's rules to normalised matches (port masks, remote addresses);
//! 3. [`backend::openflow`]: lay the matches out in a conntrack-aware table pipeline.
//!
//! The crate is pure Rust; the Python bindings live behind the `python` feature.

pub mod backend;
pub mod error;
pub mod eval;
pub mod ir;
pub mod model;

#[cfg(feature = "python")]
mod python;

pub use backend::openflow::{
    compile_openflow, diff, Change, Compiled, Flow, FlowDiff, MemberSet, OpenFlowOptions, Session,
    Stats,
};
pub use backend::ovn::{compile_ovn, OvnCompiled, OvnOptions};
pub use backend::rte_flow::{compile_rte_flow, RteCompiled, RteFlowOptions};
pub use error::{Error, Issue, Result};
pub use model::{decode, load_model, parse_value, InputFormat, Model, ParseOptions, UnknownKeys};
