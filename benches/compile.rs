//! Pure-Rust compile benchmarks on the same seeded workloads as the Python suite.
//!
//! `make bench-rust` writes the models first (`benches/workload.py`, into
//! `target/bench-models/`), then runs `cargo bench --bench compile`. A missing model is
//! reported, not silently skipped.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sgflows::model::{Members, Model};
use sgflows::{
    compile_openflow, load_model, Change, InputFormat, MemberSet, OpenFlowOptions, ParseOptions,
    Session,
};

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
    for preset in presets("SGFLOWS_BENCH_PRESETS", "p10,p100,p1000") {
        let path = model_path(&preset);
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("missing {}: run `make bench-rust`", path.display());
            continue;
        };
        let model = load_model(&bytes, InputFormat::Json, &parse).expect("workload is valid");
        group.throughput(Throughput::Elements(model.ports.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse", &preset), &bytes, |b, bytes| {
            b.iter(|| load_model(bytes, InputFormat::Json, &parse).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("compile", &preset), &model, |b, model| {
            b.iter(|| compile_openflow(model, &OpenFlowOptions::default()).unwrap())
        });
        let compiled = compile_openflow(&model, &OpenFlowOptions::default()).unwrap();
        group.bench_with_input(BenchmarkId::new("render", &preset), &compiled, |b, c| {
            b.iter(|| c.to_ofctl())
        });
    }
    group.finish();
}

/// One change of each kind on a loaded model, each with the change that undoes it (so the
/// benchmark can run many iterations on one session instead of cloning it per iteration).
fn changes(model: &Model) -> Vec<(&'static str, Change, Change)> {
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
    // IPv6, from a prefix no workload rule covers, so that the optimiser cannot absorb the
    // new rule: the workloads' default groups allow IPv4 from anywhere (any IPv4 rule added
    // to them changes no flow), but IPv6 only from their members and from a few prefixes.
    extra.ethertype = sgflows::model::EtherType::V6;
    extra.remote = sgflows::model::Remote::Prefix("2001:db8:ffff::7/128".parse().unwrap());
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
    // IPv6 members, for the same reason as the new rule's family: an IPv4 member of a
    // default group is covered by its IPv4-from-anywhere rule and reaches no flow.
    let member = Members {
        nets: vec!["2001:db8:ffff::9/128".parse().unwrap()],
    };
    let existing = Members {
        nets: model
            .members
            .get(&member_group)
            .map(|m| {
                m.nets
                    .iter()
                    .filter(|n| matches!(n, ipnet::IpNet::V6(_)))
                    .take(1)
                    .copied()
                    .collect()
            })
            .unwrap_or_default(),
    };
    let port = model.ports[0].clone();
    let mut new_port = port.clone();
    new_port.id = "bench-new-port".into();
    new_port.ofport = Some(60_000);
    let mut moved = port.clone();
    moved.fixed_ips.push("10.254.0.1".parse().unwrap());
    let rules = |group: &str, rules: Vec<sgflows::model::Rule>| Change::AddRules {
        group: group.to_string(),
        rules,
    };
    let restore = Change::SetRules {
        group: gid.clone(),
        rules: group.rules.clone(),
    };
    let members = |members: Members, add: bool| {
        let group = member_group.clone();
        let set = MemberSet::Group;
        if add {
            Change::AddMembers {
                group,
                set,
                members,
            }
        } else {
            Change::RemoveMembers {
                group,
                set,
                members,
            }
        }
    };
    vec![
        ("rule_add", rules(gid, vec![extra]), restore.clone()),
        (
            "rule_remove",
            Change::RemoveRules {
                group: gid.clone(),
                rules: vec![group.rules[1].clone()],
            },
            restore,
        ),
        (
            "member_add",
            members(member.clone(), true),
            members(member, false),
        ),
        (
            "member_remove",
            members(existing.clone(), false),
            members(existing, true),
        ),
        (
            "port_add",
            Change::AddPort(new_port),
            Change::RemovePort("bench-new-port".into()),
        ),
        (
            "port_remove",
            Change::RemovePort(port.id.clone()),
            Change::AddPort(port.clone()),
        ),
        (
            "port_update",
            Change::UpdatePort(moved),
            Change::UpdatePort(port),
        ),
    ]
}

/// The time a change takes: wall-clock by default; the thread's CPU time with
/// `SGFLOWS_BENCH_CLOCK=cpu`, which a loaded machine (other processes taking turns on the
/// cores) inflates far less.
fn clock() -> fn() -> std::time::Duration {
    fn cpu() -> std::time::Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to fill in.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }
    fn wall() -> std::time::Duration {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed()
    }
    if std::env::var("SGFLOWS_BENCH_CLOCK").is_ok_and(|c| c == "cpu") {
        cpu
    } else {
        wall
    }
}

/// Presets from the comma-separated environment variable `var`, else `default`
/// (`SGFLOWS_BENCH_PRESETS` for the full compile, `SGFLOWS_BENCH_SESSION` for the session).
fn presets(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(str::to_string)
        .collect()
}

fn bench_session(c: &mut Criterion) {
    let parse = ParseOptions {
        widen_unmatchable_port_ranges: true,
        ..ParseOptions::default()
    };
    let mut group = c.benchmark_group("session");
    group.sample_size(20);
    for preset in presets("SGFLOWS_BENCH_SESSION", "p100,p1000,p10000") {
        let Ok(bytes) = std::fs::read(model_path(&preset)) else {
            eprintln!(
                "missing {}: run `make bench-rust`",
                model_path(&preset).display()
            );
            continue;
        };
        let model = load_model(&bytes, InputFormat::Json, &parse).expect("workload is valid");
        let mut session = Session::new(model.clone(), OpenFlowOptions::default()).unwrap();
        let now = clock();
        for (name, change, undo) in changes(&model) {
            let runs = (session.policy_recomputes(), session.bucket_recomputes());
            let d = session.apply(change.clone()).expect("bench change applies");
            let runs = (
                session.policy_recomputes() - runs.0,
                session.bucket_recomputes() - runs.1,
            );
            session.apply(undo.clone()).expect("bench change undoes");
            eprintln!(
                "session {preset} {name}: +{} ~{} -{}, {} policies ({} buckets) recomputed",
                d.added.len(),
                d.modified.len(),
                d.removed.len(),
                runs.0,
                runs.1
            );
            group.bench_function(BenchmarkId::new(name, &preset), |b| {
                b.iter_custom(|iters| {
                    let mut total = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        let (forward, back) = (change.clone(), undo.clone());
                        let start = now();
                        let d = session.apply(forward).unwrap();
                        total += now() - start;
                        std::hint::black_box(d);
                        session.apply(back).unwrap();
                    }
                    total
                })
            });
        }
        eprintln!("session {preset}: id shifts {}", session.id_shifts());
    }
    group.finish();
}

criterion_group!(benches, bench_compile, bench_session);
criterion_main!(benches);
