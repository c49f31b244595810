//! Applies one port change to a session N times, each followed by its undo, and prints the
//! mean time per change (wall clock): a small driver for `perf` or `callgrind`.
//!
//! `cargo run --release --example session_change -- target/bench-models/p10000.json port_add 20`
//! (changes: `port_add`, `port_remove`, `port_update`, `rule_remove`, `member_add`, as in the criterion
//! bench). Under callgrind, `--toggle-collect='*timed_change*'` counts the changes alone,
//! not their undos.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use sgflows::{load_model, Change, InputFormat, OpenFlowOptions, ParseOptions, Session};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, name, n] = args.as_slice() else {
        eprintln!(
            "usage: session_change MODEL.json port_add|port_remove|port_update|rule_remove|member_add N"
        );
        return ExitCode::FAILURE;
    };
    match run(path, name, n.parse().unwrap_or(20)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session_change: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str, name: &str, n: u32) -> Result<(), Box<dyn std::error::Error>> {
    let parse = ParseOptions {
        widen_unmatchable_port_ranges: true,
        ..ParseOptions::default()
    };
    let model = load_model(&std::fs::read(path)?, InputFormat::Json, &parse)?;
    let port = model.ports.first().ok_or("the model has no port")?.clone();
    let (change, undo) = match name {
        "port_add" => {
            let mut new = port.clone();
            new.id = "bench-new-port".into();
            new.ofport = Some(60_000);
            (
                Change::AddPort(new),
                Change::RemovePort("bench-new-port".into()),
            )
        }
        "port_remove" => (Change::RemovePort(port.id.clone()), Change::AddPort(port)),
        // The bench's -rule: the second rule of the first group with more than one rule.
        "rule_remove" => {
            let (gid, group) = model
                .groups
                .iter()
                .find(|(_, g)| g.rules.len() > 1)
                .ok_or("the model has no group with two rules")?;
            (
                Change::RemoveRules {
                    group: gid.clone(),
                    rules: vec![group.rules[1].clone()],
                },
                Change::SetRules {
                    group: gid.clone(),
                    rules: group.rules.clone(),
                },
            )
        }
        // The bench's +member: an IPv6 member of the first group's remote group.
        "member_add" => {
            let group = model
                .groups
                .values()
                .flat_map(|g| &g.rules)
                .find_map(|r| match &r.remote {
                    sgflows::model::Remote::Group(id) if model.members.contains_key(id) => {
                        Some(id.clone())
                    }
                    _ => None,
                })
                .ok_or("the model has no remote group with members")?;
            let members = sgflows::model::Members {
                nets: vec!["2001:db8:ffff::9/128".parse()?],
            };
            (
                Change::AddMembers {
                    group: group.clone(),
                    set: sgflows::MemberSet::Group,
                    members: members.clone(),
                },
                Change::RemoveMembers {
                    group,
                    set: sgflows::MemberSet::Group,
                    members,
                },
            )
        }
        "port_update" => {
            let mut moved = port.clone();
            moved.fixed_ips.push("10.254.0.1".parse()?);
            (Change::UpdatePort(moved), Change::UpdatePort(port))
        }
        _ => return Err(format!("unknown change {name:?}").into()),
    };
    let mut session = Session::new(model, OpenFlowOptions::default())?;
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        let d = timed_change(&mut session, change.clone())?;
        total += start.elapsed();
        std::hint::black_box(d);
        session.apply(undo.clone())?;
    }
    println!(
        "{name}: {:.1} µs per change ({n} changes, each undone)",
        total.as_secs_f64() * 1e6 / f64::from(n.max(1))
    );
    Ok(())
}

/// The change measured (a function of its own, so that a profiler can tell it from its undo).
#[inline(never)]
fn timed_change(session: &mut Session, change: Change) -> sgflows::Result<sgflows::FlowDiff> {
    session.apply(change)
}
