//! The group budget of a port: a port with representor `rep` numbers its groups in
//! `[(rep+1)*STRIDE, (rep+2)*STRIDE)`, so a port with more groups than `STRIDE` would spill
//! into its neighbour's numbers and mix the two ports' rules. The per-port fallback to
//! software judges the filtering groups before the accept group of `forward=uplink` is
//! added; this check runs on the final list of every port, just before numbering.

use crate::error::{Error, Issue, Result};

/// `Ok` when the groups of `port` (their segment counts) fit its numbering range of
/// `stride` group numbers; otherwise an error naming the port.
pub(super) fn check_port_groups(
    port: &str,
    segments: impl IntoIterator<Item = usize>,
    stride: u32,
) -> Result<()> {
    let used: usize = segments.into_iter().sum();
    if used <= stride as usize {
        return Ok(());
    }
    Err(Error::Invalid(vec![Issue::new(
        format!("ports.{port}"),
        format!(
            "needs {used} rte_flow groups, a port has {stride} (with forward=uplink the accept \
             group comes on top of the filtering groups); merge or drop rules, or use \
             forward=software"
        ),
    )]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_range_fits_and_one_more_does_not() {
        assert!(check_port_groups("p1", [200, 56], 256).is_ok());
        let err = check_port_groups("p1", [200, 56, 1], 256).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ports.p1: needs 257 rte_flow groups, a port has 256"),
            "{text}"
        );
    }
}
