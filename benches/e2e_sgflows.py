"""One measuring run of sgflows on a private userspace Open vSwitch (a child of ``e2e.py``).

``--system cli``: the operator's command-line path, cold: ``sgflows compile MODEL -o FILE``
then ``sgflows load BRIDGE FILE --connections N`` (the cold loader: N parallel bundles, the
entry flows last), timed from the first command's start to the last flow on the bridge;
verified by the bridge's flow count = the lines compiled.

``--system session``: the API path, cold (``sgflows.Compiler(model)``, ``to_ofctl()``, then
``sgflows.switch.coldload.cold_load`` over N connections, what ``sgflows load`` runs) and then
each change of ``e2e_changes.plan`` as one
``Compiler.apply`` batch whose ``FlowDiff.to_bundle()`` goes to ``ovs-ofctl bundle``, timed
from the call to the bundle's return; after each, the bridge's flow count must equal the
session's flow count (a mismatch fails the run).

The bridge carries only sgflows' flows (its own table 0 and table 94 NORMAL: standalone mode,
no agent). Prints one JSON object on standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e_changes  # noqa: E402
import e2e_switch  # noqa: E402
import workload  # noqa: E402
from sgflows.switch.coldload import DEFAULT_CONNECTIONS, cold_load  # noqa: E402

#: Compile options of every sgflows run (the workloads hold DCCP/UDP-Lite port ranges).
OPTIONS: dict[str, Any] = {"widen_unmatchable_port_ranges": True}


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``argv``; return (seconds, its peak RSS in KiB). Raise on a non-zero exit."""
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - t
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}")
    return elapsed, usage.ru_maxrss


def cold_cli(
    switch: e2e_switch.PrivateOVS, bridge: str, model_path: Path, cli: str, connections: int
) -> dict[str, Any]:
    flows_path = model_path.with_suffix(".flows")
    compile_argv = [cli, "compile", str(model_path), "-o", str(flows_path),
                    "--widen-unmatchable-port-ranges"]  # fmt: skip
    load_argv = [cli, "load", bridge, str(flows_path), "--connections", str(connections)]
    compile_s, compile_rss = _run_timed(compile_argv, switch.env)
    load_s, _ = _run_timed(load_argv, switch.env)
    compiled = sum(1 for line in flows_path.open() if line.strip() and not line.startswith("#"))
    on_switch = e2e_switch.flow_count(switch, bridge)
    if on_switch != compiled:
        raise RuntimeError(f"{on_switch} flows on the bridge, {compiled} compiled")
    return {
        "cold_s": round(compile_s + load_s, 4),
        "compile_s": round(compile_s, 4),
        "load_s": round(load_s, 4),
        "flows": on_switch,
        "compiler_peak_kib": compile_rss,
    }


def cold_session(
    switch: e2e_switch.PrivateOVS, bridge: str, model: dict[str, Any], connections: int
) -> tuple[Any, dict[str, Any]]:
    import sgflows

    rss_before = _rss_kib()
    t = time.perf_counter()
    compiler = sgflows.Compiler(model, **OPTIONS)
    text = compiler.to_ofctl()
    compile_s = time.perf_counter() - t
    cold_load(bridge, text, connections=connections, env=switch.env)
    cold_s = time.perf_counter() - t
    expected = len(compiler.flows())
    on_switch = e2e_switch.flow_count(switch, bridge)
    if on_switch != expected:
        raise RuntimeError(f"{on_switch} flows on the bridge, the session holds {expected}")
    figures = {
        "cold_s": round(cold_s, 4),
        "compile_s": round(compile_s, 4),
        "load_s": round(cold_s - compile_s, 4),
        "flows": on_switch,
        "compiler_peak_kib": _maxrss_kib(),
        # the process held the interpreter, sgflows and the generated model before
        "rss_before_compile_kib": rss_before,
    }
    return compiler, figures


def session_change(
    switch: e2e_switch.PrivateOVS, bridge: str, compiler: Any, change: e2e_changes.Change,
    vlans: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    if change.port is not None:  # Nova plugs the VIF before anyone filters it: not timed
        e2e_switch.plug_ports(switch, bridge, [change.port], vlans)
    t = time.perf_counter()
    diff = compiler.apply(change.session_batch())
    bundle = diff.to_bundle()
    compute_s = time.perf_counter() - t
    if bundle.strip():
        e2e_switch.ofctl(switch, "bundle", bridge, "-", input=bundle)
    elapsed = time.perf_counter() - t
    expected = len(compiler.flows())
    on_switch = e2e_switch.flow_count(switch, bridge)
    if on_switch != expected:
        raise RuntimeError(f"{change.kind}: {on_switch} flows on the bridge, session {expected}")
    return {
        "s": round(elapsed, 4),
        "compute_s": round(compute_s, 4),
        "added": diff.added,
        "modified": diff.modified,
        "removed": diff.removed,
        "flows": on_switch,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = workload.preset(args.preset, args.seed)
    vlans = {n: net["local_vlan"] for n, net in model["networks"].items()}
    result: dict[str, Any] = {"status": "ok", "connections": args.connections}
    e2e_switch.cleanup_leftovers()
    with (
        tempfile.TemporaryDirectory(prefix="sgflows-e2e-") as tmp,
        e2e_switch.PrivateOVS() as switch,
    ):
        bridge = switch.add_bridge(e2e_switch.unique_name("bnc")).name
        result["plug_s"] = round(e2e_switch.plug_ports(switch, bridge, model["ports"], vlans), 2)
        result["vswitchd_before_kib"] = e2e_switch.vswitchd_rss_kib(switch)
        cpu_before = e2e_switch.vswitchd_cpu_s(switch)
        if args.system == "cli":
            model_path = Path(tmp) / f"{args.preset}.json"
            model_path.write_text(json.dumps(model), encoding="utf-8")
            result.update(cold_cli(switch, bridge, model_path, args.cli, args.connections))
        else:
            compiler, figures = cold_session(switch, bridge, model, args.connections)
            result.update(figures)
        result["vswitchd_kib"] = e2e_switch.vswitchd_rss_kib(switch)
        result["vswitchd_cpu_s"] = round(e2e_switch.vswitchd_cpu_s(switch) - cpu_before, 2)
        if args.system == "session" and args.changes:
            changes = {}
            for change in e2e_changes.plan(model, args.seed):
                changes[change.kind] = session_change(switch, bridge, compiler, change, vlans)
            result["changes"] = changes
            result["peak_kib_after_changes"] = _maxrss_kib()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--system", choices=["cli", "session"], required=True)
    parser.add_argument("--preset", required=True, choices=sorted(workload.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli", default=str(Path(sys.executable).with_name("sgflows")))
    parser.add_argument("--changes", action="store_true", help="session: the changes too")
    parser.add_argument(
        "--connections", type=int, default=DEFAULT_CONNECTIONS,
        help="cold load: ovs-ofctl connections at once (sgflows load --connections)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except Exception as e:  # one JSON line whatever happens: the parent records it
        result = {"status": "error", "error": f"{type(e).__name__}: {e}"[:4000]}
    result["maxrss_kib"] = _maxrss_kib()
    print(json.dumps(result), flush=True)
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
