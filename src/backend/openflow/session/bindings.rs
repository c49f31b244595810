//! The ports' binding facts a port change is checked against (OpenFlow port numbers, and
//! which local VLAN each network has), indexed so that the check is a look-up instead of a
//! scan of every port (10,000 at p10000, on every port change).

use std::collections::{BTreeMap, HashMap};

use crate::model::Port;

/// What the conflict check reads of one port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Binding {
    ofport: Option<u32>,
    network: Option<String>,
    tag: Option<u16>,
}

impl Binding {
    fn of(port: &Port) -> Binding {
        Binding {
            ofport: port.ofport,
            network: port.network_id.clone(),
            tag: port.local_vlan,
        }
    }
}

/// The binding facts of every port of a model, counted by OpenFlow port number, by network
/// (its ports' local VLANs) and by local VLAN (its ports' networks). Kept up to date by
/// [`Bindings::set`] for each port a change (or its undo) touched.
#[derive(Debug, Clone, Default)]
pub(super) struct Bindings {
    ports: HashMap<String, Binding>,
    ofports: HashMap<u32, usize>,
    /// Network → how many of its ports have each local VLAN (`None`: no VLAN).
    networks: HashMap<String, BTreeMap<Option<u16>, usize>>,
    /// Local VLAN → how many ports of each network have it (ports with a network only).
    tags: HashMap<u16, BTreeMap<String, usize>>,
}

impl Bindings {
    /// The index of `ports`.
    pub(super) fn of<'p>(ports: impl IntoIterator<Item = &'p Port>) -> Bindings {
        let mut b = Bindings::default();
        for port in ports {
            b.set(&port.id, Some(port));
        }
        b
    }

    /// Puts port `id`'s current version (`None`: the port is gone) in place of what was
    /// indexed for it.
    pub(super) fn set(&mut self, id: &str, port: Option<&Port>) {
        let new = port.map(Binding::of);
        if self.ports.get(id) == new.as_ref() {
            return;
        }
        if let Some(old) = self.ports.remove(id) {
            self.count(&old, false);
        }
        if let Some(new) = new {
            self.count(&new, true);
            self.ports.insert(id.to_string(), new);
        }
    }

    fn count(&mut self, b: &Binding, add: bool) {
        fn step<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, add: bool) {
            let n = map.entry(key).or_default();
            if add {
                *n += 1;
            } else {
                *n -= 1;
            }
        }
        fn step_in<K: Ord>(map: &mut BTreeMap<K, usize>, key: K, add: bool) -> bool {
            let n = map.entry(key).or_default();
            if add {
                *n += 1;
            } else {
                *n -= 1;
            }
            *n == 0
        }
        if let Some(ofport) = b.ofport {
            step(&mut self.ofports, ofport, add);
            if self.ofports.get(&ofport) == Some(&0) {
                self.ofports.remove(&ofport);
            }
        }
        let Some(network) = &b.network else {
            return;
        };
        let tags = self.networks.entry(network.clone()).or_default();
        if step_in(tags, b.tag, add) {
            tags.remove(&b.tag);
            if tags.is_empty() {
                self.networks.remove(network);
            }
        }
        if let Some(tag) = b.tag {
            let networks = self.tags.entry(tag).or_default();
            if step_in(networks, network.clone(), add) {
                networks.remove(network);
                if networks.is_empty() {
                    self.tags.remove(&tag);
                }
            }
        }
    }

    /// Whether another port (than `port`, which is indexed) has its OpenFlow port number, or
    /// a network and local VLAN of which one agrees with `port`'s and the other does not.
    /// `port` must have a number and a VLAN.
    pub(super) fn conflicts(&self, port: &Port, ofport: u32, tag: u16) -> bool {
        if self.ofports.get(&ofport).copied().unwrap_or(0) > 1 {
            return true;
        }
        let Some(network) = &port.network_id else {
            return false;
        };
        // Its own entries are (network, tag) in both maps: any other key is another port's.
        let other_tag = self
            .networks
            .get(network)
            .is_some_and(|tags| tags.keys().any(|t| *t != Some(tag)));
        let other_network = self
            .tags
            .get(&tag)
            .is_some_and(|networks| networks.keys().any(|n| n != network));
        other_tag || other_network
    }
}
