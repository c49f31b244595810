//! Deterministic 32-bit ids (policy ids, conjunction ids): a pure function of content, never
//! of history or input order, so that an incremental compile and a fresh compile agree.

use std::collections::{BTreeMap, BTreeSet};

/// FNV-1a, 64 bits: stable across platforms and releases (unlike std's `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A nonzero 32-bit id for a key.
pub fn id_of(key: &str) -> u32 {
    let h = fnv1a(key.as_bytes());
    let folded = ((h >> 32) ^ h) as u32;
    folded.max(1)
}

/// Ids for every key. Collisions (two keys, one hash) are resolved by probing upwards in key
/// order, so the result still depends only on the set of keys.
pub fn assign_ids(keys: &BTreeSet<String>) -> BTreeMap<String, u32> {
    assign_ids_by(keys, |k| id_of(k))
}

/// [`assign_ids`] for any key type, `hash` giving each key's preferred id.
pub fn assign_ids_by<K: Ord + Clone>(
    keys: &BTreeSet<K>,
    hash: impl Fn(&K) -> u32,
) -> BTreeMap<K, u32> {
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut out = BTreeMap::new();
    for key in keys {
        let mut id = hash(key);
        while !taken.insert(id) {
            id = id.wrapping_add(1).max(1);
        }
        out.insert(key.clone(), id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(id_of("web"), id_of("web"));
        assert_ne!(id_of("web"), id_of("db"));
        assert_ne!(id_of(""), 0);
        let keys: BTreeSet<String> = (0..10_000).map(|i| format!("k{i}")).collect();
        let ids = assign_ids(&keys);
        let distinct: BTreeSet<u32> = ids.values().copied().collect();
        assert_eq!(distinct.len(), keys.len());
        // The id of a key does not depend on unrelated keys (absent a collision).
        let few: BTreeSet<String> = ["k1".to_string(), "k2".to_string()].into();
        assert_eq!(assign_ids(&few)["k1"], ids["k1"]);
    }
}
