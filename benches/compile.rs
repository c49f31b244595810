//! Pure-Rust compile benchmarks on the same seeded workloads as the Python suite.
//!
//! `make bench-rust` writes the models first (`benches/workload.py`, into
//! `target/bench-models/`), then runs `cargo bench --bench compile`. A missing model is
//! reported, not silently skipped.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sgflows::model::{Members, Model};
use sgflows::{
    compile_openflow, load_model, Change, InputFormat, MemberSet, OpenFlowOptions, ParseOptions,
    Session,
};

const PRESETS: &[&str] = &["p10", "p100", "p1000"];

fn model_path(preset: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-models")
        .join(format!("{preset}.json"))
}

fn bench_compile(c: &mut Criterion) {
    let parse = ParseOptions {
        widen_unmatchable_port_ranges: true,
        ..ParseOptions::default()
    };
    let mut group = c.benchmark_group("openflow");
    group.sample_size(10);
    for preset in PRESETS {
        let path = model_path(preset);
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("missing {}: run `make bench-rust`", path.display());
            continue;
        };
        let model = load_model(&bytes, InputFormat::Json, &parse).expect("workload is valid");
        group.throughput(Throughput::Elements(model.ports.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse", preset), &bytes, |b, bytes| {
            b.iter(|| load_model(bytes, InputFormat::Json, &parse).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("compile", preset), &model, |b, model| {
            b.iter(|| compile_openflow(model, &OpenFlowOptions::default()).unwrap())
        });
        let compiled = compile_openflow(&model, &OpenFlowOptions::default()).unwrap();
        group.bench_with_input(BenchmarkId::new("render", preset), &compiled, |b, c| {
            b.iter(|| c.to_ofctl())
        });
    }
    group.finish();
}

/// One change of each kind on a loaded model, from the call to the diff.
fn changes(model: &Model) -> Vec<(&'static str, Change)> {
    let (gid, group) = model
        .groups
        .iter()
        .find(|(_, g)| g.rules.len() > 1)
        .expect("workload has a group with rules");
    let mut extra = group.rules[0].clone();
    extra.id = None;
    extra.l4 = sgflows::model::L4::Ports {
        dst: sgflows::model::PortRange {
            min: 61_000,
            max: 61_000,
        },
        src: sgflows::model::PortRange::ANY,
    };
    extra.protocol = Some(6);
    // A prefix no workload rule covers, so the optimiser cannot absorb the new rule.
    extra.remote = sgflows::model::Remote::Prefix(match extra.ethertype {
        sgflows::model::EtherType::V4 => "203.0.113.7/32".parse().unwrap(),
        sgflows::model::EtherType::V6 => "2001:db8:ffff::7/128".parse().unwrap(),
    });
    // A remote group some rule uses, so that a member change reaches flows.
    let member_group = model
        .groups
        .values()
        .flat_map(|g| &g.rules)
        .find_map(|r| match &r.remote {
            sgflows::model::Remote::Group(id) if model.members.contains_key(id) => Some(id.clone()),
            _ => None,
        })
        .unwrap_or(gid.clone());
    let member = Members {
        nets: vec!["10.254.254.254/32".parse().unwrap()],
    };
    let existing = Members {
        nets: model
            .members
            .get(&member_group)
            .map(|m| m.nets.iter().take(1).copied().collect())
            .unwrap_or_default(),
    };
    let port = model.ports[0].clone();
    let mut new_port = port.clone();
    new_port.id = "bench-new-port".into();
    new_port.ofport = Some(60_000);
    let mut moved = port.clone();
    moved.fixed_ips.push("10.254.0.1".parse().unwrap());
    vec![
        (
            "rule_add",
            Change::AddRules {
                group: gid.clone(),
                rules: vec![extra],
            },
        ),
        (
            "rule_remove",
            Change::RemoveRules {
                group: gid.clone(),
                rules: vec![group.rules[1].clone()],
            },
        ),
        (
            "member_add",
            Change::AddMembers {
                group: member_group.clone(),
                set: MemberSet::Group,
                members: member,
            },
        ),
        (
            "member_remove",
            Change::RemoveMembers {
                group: member_group,
                set: MemberSet::Group,
                members: existing,
            },
        ),
        ("port_add", Change::AddPort(new_port)),
        ("port_remove", Change::RemovePort(port.id.clone())),
        ("port_update", Change::UpdatePort(moved)),
    ]
}

fn bench_session(c: &mut Criterion) {
    let parse = ParseOptions {
        widen_unmatchable_port_ranges: true,
        ..ParseOptions::default()
    };
    let mut group = c.benchmark_group("session");
    group.sample_size(10);
    for preset in ["p100", "p1000"] {
        let Ok(bytes) = std::fs::read(model_path(preset)) else {
            eprintln!("missing {preset}: run `make bench-rust`");
            continue;
        };
        let model = load_model(&bytes, InputFormat::Json, &parse).expect("workload is valid");
        let session = Session::new(model.clone(), OpenFlowOptions::default()).unwrap();
        for (name, change) in changes(&model) {
            let mut probe = session.clone();
            let d = probe.apply(change.clone()).expect("bench change applies");
            eprintln!(
                "session {preset} {name}: +{} ~{} -{}",
                d.added.len(),
                d.modified.len(),
                d.removed.len()
            );
            group.bench_function(BenchmarkId::new(name, preset), |b| {
                b.iter_batched(
                    || (session.clone(), change.clone()),
                    |(mut s, ch)| s.apply(ch).unwrap(),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_compile, bench_session);
criterion_main!(benches);
