//! The compiled rows as an `ovn-nbctl` invocation (every command joined by `--`, so one
//! transaction) and as an OVSDB `transact` request.

use serde_json::{json, Value};

use super::{Acl, AddressSet, OvnCompiled, PortGroup, SwitchPort, OWNER};

/// Quotes a value for `ovn-nbctl`'s database syntax (`key=value` arguments): a JSON-style
/// string in double quotes.
fn db_string(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Quotes one argument for a POSIX shell.
fn shell(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.=:@/,".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn external_ids_args(ids: &[(&str, String)]) -> Vec<String> {
    ids.iter()
        .map(|(k, v)| format!("external_ids:{}={}", db_string(k), db_string(v)))
        .collect()
}

fn rule_list(acl: &Acl) -> String {
    let names: Vec<String> = acl.rules.iter().map(ToString::to_string).collect();
    names.join(",")
}

fn acl_ids(acl: &Acl) -> Vec<(&'static str, String)> {
    let mut ids = vec![
        ("owner", OWNER.to_string()),
        ("sgflows:kind", acl.kind.as_str().to_string()),
    ];
    if !acl.group.is_empty() {
        ids.push(("sgflows:group", acl.group.clone()));
    }
    if !acl.rules.is_empty() {
        ids.push(("sgflows:rules", rule_list(acl)));
    }
    ids
}

fn group_ids(pg: &PortGroup) -> Vec<(&'static str, String)> {
    let mut ids = vec![("owner", OWNER.to_string())];
    if !pg.group.is_empty() {
        ids.push(("sgflows:group", pg.group.clone()));
    }
    ids
}

fn set_ids(set: &AddressSet) -> Vec<(&'static str, String)> {
    vec![
        ("owner", OWNER.to_string()),
        ("sgflows:source", set.source.clone()),
    ]
}

fn nbctl_switch(switch: &str, ports: &[SwitchPort]) -> Vec<Vec<String>> {
    let mut out = vec![vec!["ls-add".into(), switch.into()]];
    for port in ports {
        out.push(vec!["lsp-add".into(), switch.into(), port.name.clone()]);
        let mut addresses = vec!["lsp-set-addresses".into(), port.name.clone()];
        addresses.extend(port.addresses.iter().cloned());
        out.push(addresses);
        if !port.port_security.is_empty() {
            let mut security = vec!["lsp-set-port-security".into(), port.name.clone()];
            security.extend(port.port_security.iter().cloned());
            out.push(security);
        }
    }
    out
}

impl OvnCompiled {
    /// The `ovn-nbctl` commands, one argument vector each.
    pub fn nbctl_commands(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        if let Some((switch, ports)) = &self.switch {
            out.extend(nbctl_switch(switch, ports));
        }
        for set in &self.address_sets {
            let mut cmd = vec![
                "create".into(),
                "Address_Set".into(),
                format!("name={}", db_string(&set.name)),
            ];
            if !set.addresses.is_empty() {
                let quoted: Vec<String> = set.addresses.iter().map(|a| db_string(a)).collect();
                cmd.push(format!("addresses=[{}]", quoted.join(",")));
            }
            cmd.extend(external_ids_args(&set_ids(set)));
            out.push(cmd);
        }
        for pg in &self.port_groups {
            let mut cmd = vec!["pg-add".into(), pg.name.clone()];
            cmd.extend(pg.ports.iter().cloned());
            out.push(cmd);
            let mut set = vec!["set".into(), "Port_Group".into(), pg.name.clone()];
            set.extend(external_ids_args(&group_ids(pg)));
            out.push(set);
        }
        for (n, acl) in self.acls.iter().enumerate() {
            let id = format!("@acl{n}");
            let mut cmd = vec![
                format!("--id={id}"),
                "create".into(),
                "ACL".into(),
                format!("direction={}", acl.direction.as_str()),
                format!("priority={}", acl.priority),
                format!("match={}", db_string(&acl.r#match)),
                format!("action={}", acl.action),
            ];
            cmd.extend(external_ids_args(&acl_ids(acl)));
            out.push(cmd);
            out.push(vec![
                "add".into(),
                "Port_Group".into(),
                acl.port_group.clone(),
                "acls".into(),
                id,
            ]);
        }
        out
    }

    /// A shell script running every command in one `ovn-nbctl` call (one transaction).
    /// Extra `ovn-nbctl` options (`--db=…`, `--wait=hv`) are passed through from `"$@"`.
    pub fn to_nbctl(&self) -> String {
        let mut text = String::from(
            "#!/bin/sh\n# OVN Northbound rows compiled by sgflows: one ovn-nbctl transaction.\n\
             # Usage: sh this-file [ovn-nbctl options such as --db=... --wait=hv]\n\
             exec ovn-nbctl \"$@\"",
        );
        for cmd in self.nbctl_commands() {
            let args: Vec<String> = cmd.iter().map(|a| shell(a)).collect();
            text.push_str(" \\\n  -- ");
            text.push_str(&args.join(" "));
        }
        text.push('\n');
        text
    }

    /// An OVSDB `transact` request (`ovsdb-client transact`): inserts only, ports referenced
    /// by name-uuid when the switch and its ports are created in the same request. Without
    /// them, port groups are inserted without ports (OVSDB references need UUIDs) and name
    /// their ports in `external_ids:sgflows:ports`.
    pub fn to_transact(&self) -> Value {
        let mut ops: Vec<Value> = vec![json!("OVN_Northbound")];
        let with_ports = self.switch.is_some();
        if let Some((switch, ports)) = &self.switch {
            let mut refs = Vec::new();
            for (n, port) in ports.iter().enumerate() {
                let uuid = format!("lsp{n}");
                ops.push(json!({
                    "op": "insert", "table": "Logical_Switch_Port", "uuid-name": uuid,
                    "row": {
                        "name": port.name,
                        "addresses": ovsdb_set(port.addresses.iter().map(|a| json!(a))),
                        "port_security": ovsdb_set(port.port_security.iter().map(|a| json!(a))),
                        "external_ids": ovsdb_map(&[("owner", OWNER.to_string())]),
                    }
                }));
                refs.push(json!(["named-uuid", uuid]));
            }
            ops.push(json!({
                "op": "insert", "table": "Logical_Switch",
                "row": {"name": switch, "ports": ["set", refs],
                        "external_ids": ovsdb_map(&[("owner", OWNER.to_string())])}
            }));
        }
        for set in &self.address_sets {
            ops.push(json!({
                "op": "insert", "table": "Address_Set",
                "row": {"name": set.name,
                        "addresses": ovsdb_set(set.addresses.iter().map(|a| json!(a))),
                        "external_ids": ovsdb_map(&set_ids(set))}
            }));
        }
        for (n, acl) in self.acls.iter().enumerate() {
            ops.push(json!({
                "op": "insert", "table": "ACL", "uuid-name": format!("acl{n}"),
                "row": {"direction": acl.direction.as_str(), "priority": acl.priority,
                        "match": acl.r#match, "action": acl.action,
                        "external_ids": ovsdb_map(&acl_ids(acl))}
            }));
        }
        for pg in &self.port_groups {
            ops.push(self.port_group_op(pg, with_ports));
        }
        Value::Array(ops)
    }

    fn port_group_op(&self, pg: &PortGroup, with_ports: bool) -> Value {
        let acls = self
            .acls
            .iter()
            .enumerate()
            .filter(|(_, a)| a.port_group == pg.name)
            .map(|(n, _)| json!(["named-uuid", format!("acl{n}")]));
        let mut ids = group_ids(pg);
        let mut row = json!({"name": pg.name, "acls": ovsdb_set(acls)});
        if with_ports {
            let names: Vec<&String> = self
                .switch
                .iter()
                .flat_map(|(_, p)| p)
                .map(|p| &p.name)
                .collect();
            let refs = pg
                .ports
                .iter()
                .filter_map(|p| names.iter().position(|n| *n == p))
                .map(|i| json!(["named-uuid", format!("lsp{i}")]));
            row["ports"] = ovsdb_set(refs);
        } else {
            ids.push(("sgflows:ports", pg.ports.join(",")));
        }
        row["external_ids"] = ovsdb_map(&ids);
        json!({"op": "insert", "table": "Port_Group", "row": row})
    }
}

fn ovsdb_set(items: impl Iterator<Item = Value>) -> Value {
    json!(["set", items.collect::<Vec<_>>()])
}

fn ovsdb_map(pairs: &[(&str, String)]) -> Value {
    let items: Vec<Value> = pairs.iter().map(|(k, v)| json!([k, v])).collect();
    json!(["map", items])
}

impl OvnCompiled {
    /// Statistics as JSON: acls, port_groups, address_sets, rules, per_kind, per_group,
    /// per_rule (`"group[index]"` → ACL count, or the reason it has none).
    pub fn stats_json(&self) -> Value {
        let per_rule: serde_json::Map<String, Value> = self
            .stats
            .per_rule
            .iter()
            .map(|(r, outcome)| {
                let v = match outcome {
                    super::RuleOutcome::Acls(n) => json!(n),
                    super::RuleOutcome::Gone(fate) => json!(fate.to_string()),
                };
                (r.to_string(), v)
            })
            .collect();
        json!({
            "acls": self.acls.len(),
            "port_groups": self.port_groups.len(),
            "address_sets": self.address_sets.len(),
            "rules": self.stats.rules,
            "per_kind": self.stats.per_kind,
            "per_group": self.stats.per_group,
            "per_rule": per_rule,
        })
    }
}
