//! A rule of the structured rendering (`document()["rules"][i]`: attr, pattern, actions) turned
//! into the flat form the C shim builds DPDK's structs from. Items the shim has no mapping for
//! are an error, so such a rule is refused, never installed without them.

use std::net::IpAddr;

use serde_json::{Map, Value};
use thiserror::Error;

pub const MAX_ITEMS: usize = 8;
pub const MAX_ACTIONS: usize = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("{0} is missing or not of the expected type")]
    Field(String),
    #[error("item {0} has no mapping in the installer")]
    Item(String),
    #[error("action {0} has no mapping in the installer")]
    Action(String),
    #[error("{0}: bad value {1}")]
    Value(String, String),
    #[error("more than {0} items or actions")]
    TooMany(usize),
}

/// Item kinds, numbered as `SGF_ITEM_*` in `csrc/sgf_rte_flow.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Eth = 1,
    Ipv4,
    Ipv6,
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmp6,
}

impl ItemKind {
    fn parse(name: &str) -> Result<Self, RuleError> {
        Ok(match name {
            "eth" => ItemKind::Eth,
            "ipv4" => ItemKind::Ipv4,
            "ipv6" => ItemKind::Ipv6,
            "tcp" => ItemKind::Tcp,
            "udp" => ItemKind::Udp,
            "sctp" => ItemKind::Sctp,
            "icmp" => ItemKind::Icmp,
            "icmp6" => ItemKind::Icmp6,
            other => return Err(RuleError::Item(other.into())),
        })
    }
}

/// One of spec/mask/last: addresses in network order, ports and ethertype in host order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub eth_type: u16,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub kind: ItemKind,
    pub spec: Option<(Fields, Fields)>,
    pub last: Option<Fields>,
}

/// Action kinds, numbered as `SGF_ACTION_*`; the argument is the queue index or jump group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drop,
    Passthru,
    Queue(u16),
    Jump(u32),
    Count,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatRule {
    pub group: u32,
    pub priority: u32,
    pub ingress: bool,
    pub egress: bool,
    pub items: Vec<Item>,
    pub actions: Vec<Action>,
}

fn uint(v: &Value, what: &str) -> Result<u64, RuleError> {
    v.as_u64().ok_or_else(|| RuleError::Field(what.into()))
}

fn bounded<T: TryFrom<u64>>(v: &Value, what: &str) -> Result<T, RuleError> {
    let n = uint(v, what)?;
    T::try_from(n).map_err(|_| RuleError::Value(what.into(), n.to_string()))
}

fn mac(v: &Value, what: &str) -> Result<[u8; 16], RuleError> {
    let text = v.as_str().ok_or_else(|| RuleError::Field(what.into()))?;
    let bad = || RuleError::Value(what.into(), text.into());
    let mut out = [0u8; 16];
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    for (slot, part) in out.iter_mut().zip(parts) {
        *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn addr(v: &Value, what: &str, v6: bool) -> Result<[u8; 16], RuleError> {
    let text = v.as_str().ok_or_else(|| RuleError::Field(what.into()))?;
    let bad = || RuleError::Value(what.into(), text.into());
    let mut out = [0u8; 16];
    match (text.parse::<IpAddr>().map_err(|_| bad())?, v6) {
        (IpAddr::V4(a), false) => out[..4].copy_from_slice(&a.octets()),
        (IpAddr::V6(a), true) => out.copy_from_slice(&a.octets()),
        _ => return Err(bad()),
    }
    Ok(out)
}

/// One spec/mask/last object of an item of `kind`.
fn fields(kind: ItemKind, obj: &Map<String, Value>, item: &str) -> Result<Fields, RuleError> {
    let mut f = Fields::default();
    for (name, v) in obj {
        let what = format!("{item}.{name}");
        match (kind, name.as_str()) {
            (ItemKind::Eth, "src") => f.src = mac(v, &what)?,
            (ItemKind::Eth, "dst") => f.dst = mac(v, &what)?,
            (ItemKind::Eth, "type") => f.eth_type = bounded(v, &what)?,
            (ItemKind::Ipv4 | ItemKind::Ipv6, "src") => {
                f.src = addr(v, &what, kind == ItemKind::Ipv6)?;
            }
            (ItemKind::Ipv4 | ItemKind::Ipv6, "dst") => {
                f.dst = addr(v, &what, kind == ItemKind::Ipv6)?;
            }
            (ItemKind::Ipv4 | ItemKind::Ipv6, "proto") => f.proto = bounded(v, &what)?,
            (ItemKind::Tcp | ItemKind::Udp | ItemKind::Sctp, "src") => {
                f.src_port = bounded(v, &what)?;
            }
            (ItemKind::Tcp | ItemKind::Udp | ItemKind::Sctp, "dst") => {
                f.dst_port = bounded(v, &what)?;
            }
            (ItemKind::Icmp | ItemKind::Icmp6, "type") => f.icmp_type = bounded(v, &what)?,
            (ItemKind::Icmp | ItemKind::Icmp6, "code") => f.icmp_code = bounded(v, &what)?,
            _ => return Err(RuleError::Item(what)),
        }
    }
    Ok(f)
}

fn object<'a>(v: &'a Value, what: &str) -> Result<Option<&'a Map<String, Value>>, RuleError> {
    match v.get(what) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(RuleError::Field(what.into())),
    }
}

fn item(v: &Value) -> Result<Item, RuleError> {
    let name = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| RuleError::Field("pattern[].type".into()))?;
    let kind = ItemKind::parse(name)?;
    let spec = object(v, "spec")?;
    let mask = object(v, "mask")?;
    let spec = match (spec, mask) {
        (Some(s), Some(m)) => Some((fields(kind, s, name)?, fields(kind, m, name)?)),
        (None, None) => None,
        _ => return Err(RuleError::Field(format!("{name}: spec and mask together"))),
    };
    let last = match object(v, "last")? {
        Some(l) if spec.is_some() => Some(fields(kind, l, name)?),
        Some(_) => return Err(RuleError::Field(format!("{name}: last without spec"))),
        None => None,
    };
    Ok(Item { kind, spec, last })
}

fn action(v: &Value) -> Result<Action, RuleError> {
    let name = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| RuleError::Field("actions[].type".into()))?;
    let conf = |key: &str| {
        v.get("conf")
            .and_then(|c| c.get(key))
            .ok_or_else(|| RuleError::Field(format!("{name}.conf.{key}")))
    };
    Ok(match name {
        "drop" => Action::Drop,
        "passthru" => Action::Passthru,
        "count" => Action::Count,
        "queue" => Action::Queue(bounded(conf("index")?, "queue.conf.index")?),
        "jump" => Action::Jump(bounded(conf("group")?, "jump.conf.group")?),
        other => return Err(RuleError::Action(other.into())),
    })
}

fn flag(attr: &Value, key: &str) -> bool {
    attr.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A rule of the structured rendering, in the flat form.
pub fn parse(rule: &Value) -> Result<FlatRule, RuleError> {
    let attr = rule
        .get("attr")
        .ok_or_else(|| RuleError::Field("attr".into()))?;
    if flag(attr, "transfer") {
        return Err(RuleError::Item("attr.transfer".into()));
    }
    let list = |key: &str| {
        rule.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| RuleError::Field(key.into()))
    };
    let items = list("pattern")?
        .iter()
        .map(item)
        .collect::<Result<Vec<_>, _>>()?;
    let actions = list("actions")?
        .iter()
        .map(action)
        .collect::<Result<Vec<_>, _>>()?;
    if items.len() > MAX_ITEMS || actions.len() > MAX_ACTIONS {
        return Err(RuleError::TooMany(MAX_ITEMS));
    }
    Ok(FlatRule {
        group: attr
            .get("group")
            .map_or(Ok(0), |g| bounded(g, "attr.group"))?,
        priority: attr
            .get("priority")
            .map_or(Ok(0), |p| bounded(p, "attr.priority"))?,
        ingress: flag(attr, "ingress"),
        egress: flag(attr, "egress"),
        items,
        actions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_rendered_rule_parses_with_its_addresses_in_network_order() {
        let r = parse(&json!({
            "attr": {"group": 0, "priority": 3, "ingress": true, "egress": false},
            "pattern": [
                {"type": "eth", "spec": {"src": "fa:16:3e:00:00:01"},
                 "mask": {"src": "ff:ff:ff:ff:ff:ff"}},
                {"type": "ipv4", "spec": {"src": "10.0.0.0", "proto": 6},
                 "mask": {"src": "255.255.255.0", "proto": 255}},
                {"type": "tcp", "spec": {"dst": 80}, "mask": {"dst": 65535}, "last": {"dst": 90}},
            ],
            "actions": [{"type": "queue", "conf": {"index": 1}}],
        }))
        .unwrap();
        assert_eq!(r.priority, 3);
        assert!(r.ingress && !r.egress);
        assert_eq!(
            r.items[0].spec.unwrap().0.src[..6],
            [0xfa, 0x16, 0x3e, 0, 0, 1]
        );
        let (spec, mask) = r.items[1].spec.unwrap();
        assert_eq!(spec.src[..4], [10, 0, 0, 0]);
        assert_eq!(mask.src[..4], [255, 255, 255, 0]);
        assert_eq!((spec.proto, mask.proto), (6, 255));
        assert_eq!(r.items[2].last.unwrap().dst_port, 90);
        assert_eq!(r.actions, vec![Action::Queue(1)]);
    }

    #[test]
    fn items_and_actions_without_a_mapping_are_errors_not_dropped() {
        let base = |pattern: Value, actions: Value| {
            parse(&json!({"attr": {"ingress": true}, "pattern": pattern, "actions": actions}))
        };
        assert_eq!(
            base(json!([{"type": "arp_eth_ipv4"}]), json!([{"type": "drop"}])),
            Err(RuleError::Item("arp_eth_ipv4".into()))
        );
        assert_eq!(
            base(json!([{"type": "eth"}]), json!([{"type": "rss"}])),
            Err(RuleError::Action("rss".into()))
        );
        assert!(base(
            json!([{"type": "tcp", "spec": {"flags": 2}, "mask": {"flags": 2}}]),
            json!([{"type": "drop"}])
        )
        .is_err());
        assert!(base(
            json!([{"type": "ipv4", "spec": {"src": "::1"}, "mask": {"src": "::1"}}]),
            json!([{"type": "drop"}])
        )
        .is_err());
        assert!(base(
            json!([{"type": "udp", "spec": {"dst": 70000}, "mask": {"dst": 65535}}]),
            json!([{"type": "drop"}])
        )
        .is_err());
        assert!(parse(&json!({"attr": {"transfer": true}, "pattern": [], "actions": []})).is_err());
    }
}
