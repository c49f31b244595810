//! Pure-Rust compile benchmarks on the same seeded workloads as the Python suite.
//!
//! `make bench-rust` writes the models first (`benches/workload.py`, into
//! `target/bench-models/`), then runs `cargo bench --bench compile`. A missing model is
//! reported, not silently skipped.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sgflows::{compile_openflow, load_model, InputFormat, OpenFlowOptions, ParseOptions};

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

criterion_group!(benches, bench_compile);
criterion_main!(benches);
