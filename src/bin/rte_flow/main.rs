//! `sgflows-rte-flow`: installs sgflows' single-port rte_flow rules through DPDK's API.
//!
//! One JSON request a line on stdin, one JSON answer a line on stdout (docs/rte_flow.md,
//! "Installer"). The first request opens DPDK: `{"op": "init", "eal": [ARGS], "port": 0,
//! "rx_queues": 2}` (`tx_queues` defaults to `rx_queues`: net_tap refuses fewer), answered
//! with the queues the port got; then `install`, `update`, `remove`, `probe`, `counters`,
//! `receive` (the lengths of the frames that arrived per rx queue, for tests) and `quit`
//! (which destroys every rule and closes the port). Rules live as long as the process:
//! DPDK's flows belong to the process that created them.

mod ffi;
mod installer;
mod rule;

use std::io::{self, BufRead, Write};
use std::time::Instant;

use serde_json::{json, Value};

use installer::{FlowDevice, Installer};

fn rules_of(req: &Value) -> Result<&[Value], Value> {
    req.get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| json!({"ok": false, "error": "rules: a list is required"}))
}

fn port_of(req: &Value) -> Result<&str, Value> {
    req.get("port")
        .and_then(Value::as_str)
        .ok_or_else(|| json!({"ok": false, "error": "port: the sgflows port name is required"}))
}

/// `receive`: poll every rx queue for `seconds` (at most 60); per queue the frame lengths.
fn receive(port: &mut ffi::DpdkPort, req: &Value, queues: u16) -> Value {
    let seconds = req
        .get("seconds")
        .and_then(Value::as_f64)
        .unwrap_or(1.0)
        .clamp(0.0, 60.0);
    let deadline = Instant::now() + std::time::Duration::from_secs_f64(seconds);
    let mut seen: Vec<Vec<u32>> = vec![Vec::new(); usize::from(queues)];
    loop {
        for (q, out) in (0..queues).zip(seen.iter_mut()) {
            out.extend(port.receive(q));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    json!({"ok": true, "queues": seen})
}

/// One request on an open port; the answer carries how long the DPDK calls took.
fn serve<D: FlowDevice>(inst: &mut Installer<D>, req: &Value) -> Value {
    let start = Instant::now();
    let op = req.get("op").and_then(Value::as_str).unwrap_or("");
    let answer = match op {
        "install" | "update" => match (port_of(req), rules_of(req)) {
            (Ok(port), Ok(rules)) if op == "install" => inst.install(port, rules),
            (Ok(port), Ok(rules)) => inst.update(port, rules),
            (Err(e), _) | (_, Err(e)) => e,
        },
        "remove" => port_of(req).map_or_else(|e| e, |p| inst.remove(p)),
        "counters" => port_of(req).map_or_else(|e| e, |p| inst.counters(p)),
        "probe" => match req.get("shapes").and_then(Value::as_array) {
            Some(shapes) => inst.probe(shapes),
            None => json!({"ok": false, "error": "shapes: a list is required"}),
        },
        other => json!({"ok": false, "error": format!("unknown op {other:?}")}),
    };
    with_seconds(answer, start)
}

fn with_seconds(mut answer: Value, start: Instant) -> Value {
    if let Value::Object(m) = &mut answer {
        m.insert("seconds".into(), json!(start.elapsed().as_secs_f64()));
    }
    answer
}

fn u16_of(req: &Value, key: &str, default: u16) -> Result<u16, String> {
    match req.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| format!("{key}: an integer 0-65535")),
    }
}

/// The `init` request: EAL arguments and the port to start.
fn open(req: &Value) -> Result<ffi::DpdkPort, String> {
    if req.get("op").and_then(Value::as_str) != Some("init") {
        return Err("the first request must be {\"op\": \"init\", \"eal\": [...]}".into());
    }
    let mut args = vec!["sgflows-rte-flow".to_string()];
    for a in req
        .get("eal")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        args.push(a.as_str().ok_or("eal: a list of strings")?.to_string());
    }
    let port = u16_of(req, "port", 0)?;
    let rxq = u16_of(req, "rx_queues", 1)?.max(1);
    // As many tx queues as rx unless asked otherwise: net_tap refuses to configure a port
    // with fewer (EPERM), and other drivers do not mind.
    let txq = u16_of(req, "tx_queues", rxq)?.max(1);
    ffi::open(&args, port, rxq, txq)
}

/// The answer to `init`: the queues the port got, as DPDK reports them.
fn opened(port: &ffi::DpdkPort) -> Value {
    match port.queues() {
        Some((rx, tx)) => json!({"ok": true, "rx_queues": rx, "tx_queues": tx}),
        None => json!({"ok": true}),
    }
}

fn reply(out: &mut impl Write, v: &Value) -> bool {
    writeln!(out, "{v}").and_then(|()| out.flush()).is_ok()
}

fn main() {
    let stdin = io::stdin();
    let mut out = match ffi::protocol_output() {
        Ok(f) => io::BufWriter::new(f),
        Err(e) => {
            eprintln!("sgflows-rte-flow: cannot set up the output: {e}");
            std::process::exit(2);
        }
    };
    let mut lines = stdin.lock().lines();
    let first = match lines.next() {
        Some(Ok(line)) => serde_json::from_str::<Value>(&line).map_err(|e| e.to_string()),
        _ => Err("no request on stdin".to_string()),
    };
    let start = Instant::now();
    let first_rx_queues = first
        .as_ref()
        .ok()
        .and_then(|r| u16_of(r, "rx_queues", 1).ok())
        .unwrap_or(1)
        .max(1);
    let device = match first.and_then(|req| open(&req)) {
        Ok(d) => d,
        Err(e) => {
            reply(&mut out, &json!({"ok": false, "error": e}));
            std::process::exit(2);
        }
    };
    reply(&mut out, &with_seconds(opened(&device), start));
    let rx_queues = first_rx_queues;
    let mut inst = Installer::new(device);
    for line in lines {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(req) if req.get("op").and_then(Value::as_str) == Some("quit") => break,
            Ok(req) if req.get("op").and_then(Value::as_str) == Some("receive") => {
                receive(inst.device(), &req, rx_queues)
            }
            Ok(req) => serve(&mut inst, &req),
            Err(e) => json!({"ok": false, "error": format!("bad JSON: {e}")}),
        };
        if !reply(&mut out, &answer) {
            break;
        }
    }
    let start = Instant::now();
    inst.remove_all();
    drop(inst.into_device());
    reply(
        &mut out,
        &with_seconds(json!({"ok": true, "closed": true}), start),
    );
}
