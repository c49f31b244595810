//! The structured form, for programs that build `struct rte_flow_item`/`rte_flow_action`
//! arrays themselves: per rule the attributes, the items with `spec`/`mask`/`last` objects
//! (field names as in testpmd), the actions, and where the rule comes from.

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use super::pattern::{PortMatch, Upper};
use super::{Action, Pattern, PortNaming, RteCompiled, RteFlowOptions, RteRule, Stats};
use crate::model::{EtherType, Mac};

/// One item under construction.
struct Item {
    kind: &'static str,
    spec: Map<String, Value>,
    mask: Map<String, Value>,
    last: Map<String, Value>,
}

impl Item {
    fn new(kind: &'static str) -> Self {
        Item {
            kind,
            spec: Map::new(),
            mask: Map::new(),
            last: Map::new(),
        }
    }

    fn field(&mut self, name: &str, spec: Value, mask: Value) {
        self.spec.insert(name.into(), spec);
        self.mask.insert(name.into(), mask);
    }

    fn net(&mut self, name: &str, net: &IpNet) {
        let mask = match net {
            IpNet::V4(n) => n.netmask().to_string(),
            IpNet::V6(n) => n.netmask().to_string(),
        };
        self.field(name, json!(net.network().to_string()), json!(mask));
    }

    fn mac(&mut self, name: &str, m: Mac) {
        self.field(name, json!(m.to_string()), json!("ff:ff:ff:ff:ff:ff"));
    }

    fn port(&mut self, name: &str, m: &PortMatch) {
        match m {
            PortMatch::Mask(pm) => self.field(name, json!(pm.value), json!(pm.mask)),
            PortMatch::Range(r) => {
                self.field(name, json!(r.min), json!(0xffff));
                self.last.insert(name.into(), json!(r.max));
            }
        }
    }

    fn into_value(self) -> Value {
        let mut out = Map::new();
        out.insert("type".into(), json!(self.kind));
        if !self.spec.is_empty() {
            out.insert("spec".into(), Value::Object(self.spec));
            out.insert("mask".into(), Value::Object(self.mask));
        }
        if !self.last.is_empty() {
            out.insert("last".into(), Value::Object(self.last));
        }
        Value::Object(out)
    }
}

pub(super) fn items(p: &Pattern, naming: PortNaming) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(src) = p.source {
        let mut it = match naming {
            PortNaming::Representor => Item::new("represented_port"),
            PortNaming::PortId => Item::new("port_id"),
        };
        let name = match naming {
            PortNaming::Representor => "ethdev_port_id",
            PortNaming::PortId => "id",
        };
        it.field(name, json!(src.0), json!(0xffff));
        out.push(it.into_value());
    }
    let mut eth = Item::new("eth");
    if let Some(m) = p.eth_src {
        eth.mac("src", m);
    }
    if let Some(m) = p.eth_dst {
        eth.field("dst", json!(m.value.to_string()), json!(m.mask.to_string()));
    }
    if p.ip.is_none() && !matches!(p.upper, Some(Upper::Arp { .. })) {
        if let Some(t) = p.ether_type {
            eth.field("type", json!(t), json!(0xffff));
        }
    }
    out.push(eth.into_value());
    if let Some(Upper::Arp { sha, spa }) = &p.upper {
        let mut arp = Item::new("arp_eth_ipv4");
        arp.mac("sha", *sha);
        arp.net("spa", &IpNet::V4(*spa));
        out.push(arp.into_value());
        return out;
    }
    let Some(ip) = &p.ip else { return out };
    let mut l3 = Item::new(match ip.family {
        EtherType::V4 => "ipv4",
        EtherType::V6 => "ipv6",
    });
    if let Some(n) = &ip.src {
        l3.net("src", n);
    }
    if let Some(n) = &ip.dst {
        l3.net("dst", n);
    }
    if let Some(proto) = ip.proto {
        l3.field("proto", json!(proto), json!(0xff));
    }
    out.push(l3.into_value());
    match &p.upper {
        Some(Upper::Ports { proto, src, dst }) => {
            let mut l4 = Item::new(proto.item());
            if let Some(m) = src {
                l4.port("src", m);
            }
            if let Some(m) = dst {
                l4.port("dst", m);
            }
            out.push(l4.into_value());
        }
        Some(Upper::Icmp { icmp_type, code }) => {
            let mut l4 = Item::new(match ip.family {
                EtherType::V4 => "icmp",
                EtherType::V6 => "icmp6",
            });
            if let Some(t) = icmp_type {
                l4.field("type", json!(t), json!(0xff));
            }
            if let Some(c) = code {
                l4.field("code", json!(c.value), json!(c.mask));
            }
            out.push(l4.into_value());
        }
        Some(Upper::NdNa { target }) => {
            let mut na = Item::new("icmp6_nd_na");
            na.net("target_addr", target);
            out.push(na.into_value());
        }
        Some(Upper::Arp { .. }) | None => {}
    }
    out
}

fn action(a: Action, options: &RteFlowOptions) -> Value {
    match (a, options.profile.ports) {
        (Action::Jump(g), _) => json!({"type": "jump", "conf": {"group": g}}),
        (Action::Drop, _) => json!({"type": "drop"}),
        (Action::ToPort(p), PortNaming::Representor) => {
            json!({"type": "represented_port", "conf": {"ethdev_port_id": p}})
        }
        (Action::ToPort(p), PortNaming::PortId) => json!({"type": "port_id", "conf": {"id": p}}),
        (Action::ToSoftware(p), PortNaming::Representor) => {
            json!({"type": "port_representor", "conf": {"port_id": p}})
        }
        (Action::ToSoftware(_), PortNaming::PortId) => json!({
            "type": "port_id",
            "conf": {"id": options.software_port.unwrap_or(options.proxy_port)},
        }),
    }
}

fn rule(r: &RteRule, options: &RteFlowOptions) -> Value {
    let mut actions = Vec::with_capacity(2);
    if r.count {
        actions.push(json!({"type": "count"}));
    }
    actions.push(action(r.action, options));
    json!({
        "port_id": options.proxy_port,
        "attr": {"group": r.group, "priority": r.priority, "transfer": true},
        "pattern": items(&r.pattern, options.profile.ports),
        "actions": actions,
        "origin": {
            "port": r.port,
            "kind": r.kind.as_str(),
            "rule": r.rule.as_ref().map(|x| x.to_string()),
        },
    })
}

/// The statistics alone.
pub(super) fn stats(s: &Stats) -> Value {
    json!({
        "ports": s.ports,
        "filtered_ports": s.filtered_ports,
        "rules": s.rules,
        "groups": s.groups,
        "redundant": s.redundant,
        "max_priority": s.max_priority,
        "per_group": s.per_group.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<_, _>>(),
        "per_port": s.per_port,
        "per_rule": s.per_rule,
        "per_kind": s.per_kind,
    })
}

/// The whole result: options, rules, statistics, report and warnings.
pub(super) fn document(c: &RteCompiled) -> Value {
    let o = &c.options;
    let s = &c.stats;
    json!({
        "target": "rte_flow",
        "profile": o.profile.name,
        "proxy_port": o.proxy_port,
        "uplink_port": o.uplink_port,
        "forward": o.forward.as_str(),
        "rules": c.rules.iter().map(|r| rule(r, o)).collect::<Vec<_>>(),
        "stats": stats(s),
        "report": c.report.to_json(),
        "warnings": c.warnings.iter().map(|w| json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
    })
}
