//! Renderings of a single-port result: testpmd lines, the structured form, the report text.

use std::fmt::Write;

use serde_json::{json, Value};

use super::{Attr, Fate, PortRendering, PortRule};
use crate::backend::rte_flow::profiles::PortNaming;
use crate::backend::rte_flow::{json as rte_json, render};
use crate::model::Direction;

/// The one fate action of a rule, in testpmd's grammar.
fn action(r: &PortRule, c: &PortRendering) -> String {
    match (r.fate, r.attr) {
        (Fate::Drop, _) => "drop".into(),
        (Fate::Accept, Attr::Ingress) => format!("queue index {}", c.options.accept_queue),
        (Fate::Accept, Attr::Egress) => "passthru".into(),
        // A software fate exists only with a software queue (fit.rs), from the VM.
        (Fate::Software, _) => format!("queue index {}", c.options.software_queue.unwrap_or(0)),
    }
}

fn action_json(r: &PortRule, c: &PortRendering) -> Value {
    match (r.fate, r.attr) {
        (Fate::Drop, _) => json!({"type": "drop"}),
        (Fate::Accept, Attr::Ingress) => {
            json!({"type": "queue", "conf": {"index": c.options.accept_queue}})
        }
        (Fate::Accept, Attr::Egress) => json!({"type": "passthru"}),
        (Fate::Software, _) => {
            json!({"type": "queue", "conf": {"index": c.options.software_queue.unwrap_or(0)}})
        }
    }
}

/// `flow COMMAND ETHDEV priority P ATTR pattern … / end actions ACTION / end`, one a line.
pub(super) fn testpmd(c: &PortRendering, command: &str) -> String {
    let mut out = String::with_capacity(c.rules.len() * 100);
    for r in &c.rules {
        let _ = write!(
            out,
            "flow {command} {} priority {} {} pattern ",
            c.options.ethdev,
            r.priority,
            r.attr.as_str()
        );
        for item in render::items(&r.pattern, PortNaming::Representor) {
            out.push_str(&item);
            out.push_str(" / ");
        }
        let _ = writeln!(out, "end actions {} / end", action(r, c));
    }
    out
}

fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}

fn report_json(c: &PortRendering) -> Value {
    json!({
        "port": c.port,
        "driver": c.options.driver.name,
        "probe_refused": c.options.refused,
        "ethdev": c.options.ethdev,
        "accept_queue": c.options.accept_queue,
        "software_queue": c.options.software_queue,
        "offloadable": c.offloadable(),
        "problem": c.problem(),
        "directions": c.directions.iter().map(|d| json!({
            "direction": direction_name(d.attr.direction()),
            "attr": d.attr.as_str(),
            "mode": d.mode.as_str(),
            "rules": d.rules,
            "software": d.software.iter().map(|(what, why)| json!({
                "traffic": what, "reason": why,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rules": c.rule_report.iter().map(|r| json!({
            "rule": format!("{}[{}]", r.rule.group, r.rule.index),
            "direction": direction_name(r.direction),
            "status": r.status,
            "reason": r.why,
            "port_rules": r.port_rules,
        })).collect::<Vec<_>>(),
    })
}

/// The structured form: `rules: [{port_id, attr, pattern, actions, origin}]` and `report`.
pub(super) fn document(c: &PortRendering) -> Value {
    let rules: Vec<Value> = c
        .rules
        .iter()
        .map(|r| {
            json!({
                "port_id": c.options.ethdev,
                "attr": {
                    "group": 0,
                    "priority": r.priority,
                    "ingress": r.attr == Attr::Ingress,
                    "egress": r.attr == Attr::Egress,
                },
                "pattern": rte_json::items(&r.pattern, PortNaming::Representor),
                "actions": [action_json(r, c)],
                "fate": r.fate.as_str(),
                "origin": {
                    "kind": r.kind.as_str(),
                    "rule": r.rule.as_ref().map(|x| format!("{}[{}]", x.group, x.index)),
                    "software_reason": r.why,
                },
            })
        })
        .collect();
    json!({"rules": rules, "report": report_json(c)})
}

/// The report as text: per direction the mode and what goes to software; per rule where.
pub(super) fn report_text(c: &PortRendering) -> String {
    let d = &c.options.driver;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "port {} on ethdev {} with {} ({}); accept queue {}, software queue {}",
        c.port,
        c.options.ethdev,
        d.name,
        d.summary,
        c.options.accept_queue,
        c.options
            .software_queue
            .map_or_else(|| "none".to_string(), |q| q.to_string())
    );
    if !c.options.refused.is_empty() {
        let _ = writeln!(
            out,
            "  profile narrowed by the probe, refused: {}",
            c.options.refused.join(", ")
        );
    }
    for dir in &c.directions {
        let _ = writeln!(
            out,
            "  {} ({} rules): {}, {} rules",
            direction_name(dir.attr.direction()),
            dir.attr.as_str(),
            dir.mode.as_str(),
            dir.rules
        );
        for (what, why) in &dir.software {
            let _ = writeln!(out, "    to software: {what}: {why}");
        }
    }
    for r in &c.rule_report {
        let _ = write!(
            out,
            "  rule {}[{}] ({}): {}, {} rules",
            r.rule.group,
            r.rule.index,
            direction_name(r.direction),
            r.status,
            r.port_rules
        );
        match &r.why {
            Some(why) => {
                let _ = writeln!(out, " ({why})");
            }
            None => out.push('\n'),
        }
    }
    match c.problem() {
        Some(problem) => {
            let _ = writeln!(out, "NOT OFFLOADABLE: {problem}; the install refuses");
        }
        None => {
            let _ = writeln!(out, "offloadable: {} rules", c.rules.len());
        }
    }
    out
}
