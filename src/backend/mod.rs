//! Backends: each lays the lowered rules out in its dataplane's own terms.

pub mod openflow;
pub mod ovn;
pub mod rte_flow;
