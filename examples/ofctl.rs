//! Compiles a JSON model to ofctl text on stdout, unwidened ranges widened (as the benches
//! and `sgflows compile --widen-unmatchable-port-ranges` do): for comparing the full
//! compile's output of two builds with `cmp`.
//!
//! `cargo run --release --example ofctl -- target/bench-models/p1000.json > p1000.ofctl`

use std::io::Write;
use std::process::ExitCode;

use sgflows::{compile_openflow, load_model, InputFormat, OpenFlowOptions, ParseOptions};

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: ofctl MODEL.json");
        return ExitCode::FAILURE;
    };
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ofctl: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    let parse = ParseOptions {
        widen_unmatchable_port_ranges: true,
        ..ParseOptions::default()
    };
    let model = load_model(&bytes, InputFormat::Json, &parse)?;
    let compiled = compile_openflow(&model, &OpenFlowOptions::default())?;
    std::io::stdout()
        .lock()
        .write_all(compiled.to_ofctl().as_bytes())?;
    Ok(())
}
