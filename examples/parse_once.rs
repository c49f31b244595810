//! Reads a model file the way `sgflows compile` does (`load_model` on its bytes), for profiling
//! the parse alone: `cargo build --release --example parse_once`, then
//! `valgrind --tool=callgrind target/release/examples/parse_once build/p1000.json`.
//!
//! `parse_once FILE [N] [--compile]`: parses N times (default 1) and prints the thread CPU
//! time of each parse (median and minimum); with `--compile`, also compiles the last model
//! to OpenFlow with the defaults and prints the flow count.

use std::time::Duration;

use sgflows::{compile_openflow, load_model, InputFormat, OpenFlowOptions, ParseOptions};

fn thread_cpu() -> Duration {
    // The thread's CPU time, so that other processes on a loaded machine do not count.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: parse_once FILE [N] [--compile]");
        std::process::exit(2);
    };
    let runs: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    let compile = args.iter().any(|a| a == "--compile");
    let bytes = std::fs::read(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1);
    });
    let options = ParseOptions {
        widen_unmatchable_port_ranges: true,
        unknown_keys: None,
    };
    let mut times = Vec::with_capacity(runs);
    let mut model = None;
    for _ in 0..runs {
        let start = thread_cpu();
        let parsed = load_model(&bytes, InputFormat::Auto, &options);
        times.push(thread_cpu() - start);
        model = Some(parsed);
    }
    let model = match model {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
        None => unreachable!("runs >= 1"),
    };
    times.sort();
    println!(
        "{} ports, {} groups, {} warnings; parse median {:.2} ms, min {:.2} ms over {runs}",
        model.ports.len(),
        model.groups.len(),
        model.warnings.len(),
        times[runs / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
    );
    if compile {
        match compile_openflow(&model, &OpenFlowOptions::default()) {
            Ok(c) => println!("{} flows", c.flows.len()),
            Err(e) => eprintln!("{e}"),
        }
    }
}
