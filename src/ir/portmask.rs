//! Port ranges as value/mask pairs: the minimal set of aligned power-of-two blocks whose
//! union is exactly the range (at most 30 pairs for a 16-bit range).

use crate::model::PortRange;

/// A port match: ports `p` with `p & mask == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMask {
    /// The value, with bits outside the mask cleared.
    pub value: u16,
    /// The mask; `0xffff` is an exact port.
    pub mask: u16,
}

impl PortMask {
    /// The first and last port the pair matches.
    pub fn bounds(&self) -> (u16, u16) {
        (self.value, self.value | !self.mask)
    }
}

/// The minimal list of value/mask pairs covering `range` exactly, in ascending order.
/// The whole range `0–65535` gives one pair with mask 0.
pub fn port_masks(range: PortRange) -> Vec<PortMask> {
    let mut out = Vec::new();
    let mut lo = u32::from(range.min);
    let hi = u32::from(range.max);
    while lo <= hi {
        // The largest aligned block starting at `lo` that does not pass `hi`.
        let mut size: u32 = if lo == 0 {
            1 << 16
        } else {
            1 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push(PortMask {
            value: lo as u16,
            mask: (0x1_0000 - size) as u16,
        });
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(min: u16, max: u16) -> PortRange {
        PortRange { min, max }
    }

    #[test]
    fn exact_port_is_one_pair() {
        assert_eq!(
            port_masks(r(22, 22)),
            vec![PortMask {
                value: 22,
                mask: 0xffff
            }]
        );
    }

    #[test]
    fn whole_range_is_one_wildcard() {
        assert_eq!(
            port_masks(r(0, 65535)),
            vec![PortMask { value: 0, mask: 0 }]
        );
    }

    #[test]
    fn one_to_max_needs_sixteen_pairs() {
        // Neutron's masking gives 16 for 1-65535 too.
        assert_eq!(port_masks(r(1, 65535)).len(), 16);
    }

    #[test]
    fn worst_case_is_thirty() {
        assert_eq!(port_masks(r(1, 65534)).len(), 30);
    }

    #[test]
    fn aligned_block() {
        assert_eq!(
            port_masks(r(1024, 2047)),
            vec![PortMask {
                value: 1024,
                mask: 0xfc00
            }]
        );
    }

    proptest! {
        #[test]
        fn covers_exactly(a in any::<u16>(), b in any::<u16>(), p in any::<u16>()) {
            let (min, max) = if a <= b { (a, b) } else { (b, a) };
            let masks = port_masks(r(min, max));
            let hits = masks.iter().filter(|m| p & m.mask == m.value).count();
            let inside = (min..=max).contains(&p);
            prop_assert_eq!(hits, usize::from(inside));
            prop_assert!(masks.len() <= 30);
            for m in &masks {
                prop_assert_eq!(m.value & !m.mask, 0);
            }
        }
    }
}
