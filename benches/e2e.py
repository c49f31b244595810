"""End-to-end benchmarks on a real switch: what an operator waits for (issue 18).

    python benches/e2e.py p10 p100 p1000 --repeat 3        # every system, then the report
    python benches/e2e.py p100 --systems sgflows-cli,neutron-ovs --repeat 1
    python benches/e2e.py --report-only                     # redraw from results/e2e.jsonl

Systems, each run in a fresh child process on its own private userspace Open vSwitch whose
bridge holds the workload's ports (``e2e_switch.py``):

- ``sgflows-cli``: ``sgflows compile`` + one ``ovs-ofctl --bundle add-flows`` (cold only);
- ``sgflows-session``: ``sgflows.Compiler`` + bundle, cold, then each change of
  ``e2e_changes.py`` as one ``Compiler.apply`` batch → ``ovs-ofctl bundle``
  (``e2e_sgflows.py``);
- ``sgflows-driver`` and ``neutron-ovs``: ``firewall_driver = sgflows`` and Neutron's own
  ``openvswitch`` driver through Neutron 29.0.0's ``SecurityGroupAgentRpc`` over a real
  ``OVSIntegrationBridge``, cold, then the same changes through the agent's update path
  (``e2e_neutron.py``, in the Neutron venv ``build/neutron29-venv``: ``make deps-neutron``).

Each record (one JSON line per child in ``results/e2e.jsonl``) carries the invocation's
``run_id``, the checkout's commit, the workload's sizes and the load average; the report
(``e2e_report.py``) takes every table from one invocation. The repeats are interleaved
(system after system, then the next repeat) so that the machine's load spreads over all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import workload  # noqa: E402

RESULTS = HERE / "results"
SYSTEMS = ("sgflows-cli", "sgflows-session", "sgflows-driver", "neutron-ovs")
NEUTRON_PYTHON = ROOT / "build" / "neutron29-venv" / "bin" / "python"


def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def child_argv(system: str, preset: str, args: argparse.Namespace) -> list[str]:
    """The command of one measuring run."""
    changes = ["--changes"] if preset in args.changes_presets else []
    common = ["--preset", preset, "--seed", str(args.seed), *changes]
    if system in ("sgflows-cli", "sgflows-session"):
        mode = "cli" if system == "sgflows-cli" else "session"  # the CLI run ignores --changes
        load = [] if args.connections is None else ["--connections", str(args.connections)]
        return [sys.executable, str(HERE / "e2e_sgflows.py"), "--system", mode, *common, *load]
    driver = "sgflows" if system == "sgflows-driver" else "openvswitch"
    partial = ["--partial", str(args.partial)]
    if driver == "sgflows" and args.connections is not None:
        partial += ["--connections", str(args.connections)]
    return [str(args.neutron_python), str(HERE / "e2e_neutron.py"), "--driver", driver, *common,
            *partial]  # fmt: skip


def run_child(argv: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One child with the timeout and address-space cap; its last JSON line, or the failure."""
    limit = int(args.max_memory_gib * 2**30)

    def cap_memory() -> None:  # the machine is shared: fail the run, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, PYTHONHASHSEED="0")  # Neutron iterates sets: repeatable work
    args.partial.unlink(missing_ok=True)
    t = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True, preexec_fn=cap_memory,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        # the figures of the phases it finished (cold start, some changes) are kept
        done = json.loads(args.partial.read_text()) if args.partial.exists() else {}
        done.update({"status": "did not finish", "wall_s": round(time.perf_counter() - t, 1)})
        return done
    record: dict[str, Any] = {"wall_s": round(time.perf_counter() - t, 2)}
    try:
        record.update(json.loads(stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        tail = [ln for ln in stderr.splitlines() if "widened" not in ln][-5:]
        record.update({"status": "error", "error": f"exit {proc.returncode}: {' | '.join(tail)}"})
    return record


def measure(args: argparse.Namespace) -> str:
    """Run every (preset, repeat, system); append the records; return the run id."""
    run_id = args.run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.output)
    # one file per invocation: invocations joining one run may measure at the same time
    args.partial = ROOT / "build" / f"e2e-partial-{os.getpid()}.json"
    args.partial.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    head = _git_head()
    invocation = f"{time.time():.0f}-{os.getpid()}"
    for preset in args.presets:
        sizes = workload.summary(workload.preset(preset, args.seed))
        repeats = 1 if preset in args.once else args.repeat
        for repeat in range(repeats):
            for system in args.systems:
                record = _one(system, preset, repeat, args)
                record.update({"run_id": run_id, "invocation": invocation, "git_head": head,
                               "sizes": sizes})  # fmt: skip
                with out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                print(f"[e2e] {preset} {system} #{repeat + 1}: {_brief(record)}", file=sys.stderr)
    return run_id


def _one(system: str, preset: str, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = [round(x, 2) for x in os.getloadavg()]
    record = run_child(child_argv(system, preset, args), args)
    return {
        "system": system,
        "workload": preset,
        "repeat": repeat,
        "seed": args.seed,
        "started": started,
        "loadavg_start": load_start,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "timeout_s": args.timeout,
        "max_memory_gib": args.max_memory_gib,
        **record,
    }


def _brief(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{r.get('status')} {r.get('error', '')}".strip()
    text = f"cold {r['cold_s']} s, {r['flows']} flows"
    for kind, c in r.get("changes", {}).items():
        text += f", {kind} {c['s']} s"
    return text


def _csv(text: str) -> list[str]:
    return [t for t in text.replace(" ", ",").split(",") if t]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("presets", nargs="*", default=["p10", "p100", "p1000"])
    parser.add_argument("--systems", type=_csv, default=list(SYSTEMS), help=",".join(SYSTEMS))
    parser.add_argument("--repeat", type=int, default=3, help="runs per system and workload")
    parser.add_argument("--once", type=_csv, default=["p3000"], help="workloads run only once")
    parser.add_argument(
        "--changes-presets", type=_csv, default=["p100", "p1000"],
        help="workloads whose runs apply the changes after the cold start",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    parser.add_argument("--max-memory-gib", type=float, default=10.0, help="RLIMIT_AS per child")
    parser.add_argument("--neutron-python", default=str(NEUTRON_PYTHON))
    parser.add_argument("--output", default=str(RESULTS / "e2e.jsonl"))
    parser.add_argument("--report-only", action="store_true", help="redraw the latest run")
    parser.add_argument(
        "--run-id",
        help="measure into this run (one run made by several invocations, e.g. a long "
        "system at p1000 beside the others) or, with --report-only, report it",
    )
    parser.add_argument(
        "--connections", type=int,
        help="sgflows CLI, session and driver: connections of the cold load (default: "
        "DEFAULT_CONNECTIONS)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = sorted(set(args.systems) - set(SYSTEMS)) + sorted(
        set(args.presets) - set(workload.PRESETS)
    )
    if unknown:
        parser.error(f"unknown system or workload: {', '.join(unknown)}")
    if any(s in ("sgflows-driver", "neutron-ovs") for s in args.systems) and not (
        args.report_only or Path(args.neutron_python).exists()
    ):
        parser.error(f"{args.neutron_python} missing: run `make deps-neutron` first")
    run_id = args.run_id if args.report_only else measure(args)
    import e2e_report

    return e2e_report.write(Path(args.output), Path(args.output).parent, run_id)


if __name__ == "__main__":
    sys.exit(main())
