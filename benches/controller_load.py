"""What agents' status reports cost the reference controller (issue 16, item 4).

A real controller process (``sgflows controller``, SQLite state) and ``--agents`` agents, each
with its own row; every agent reports once (the table is full), then ``--reports`` reports are
sent round-robin over ``--connections`` connections as fast as the controller answers them. The
controller's CPU time (user + system, from ``/proc/PID/stat``) over those reports, divided by
their number, is the cost of one report; at ``--agents`` agents every ``--interval`` seconds
the controller spends ``cost x agents / interval`` of one core on reports.

The reports are built by the agent's own :class:`~sgflows.agent.status.StatusReporter` with a
realistic ``configurations`` (20 devices, counters) and two custom status providers, about
1 kB of msgpack each.

    python benches/controller_load.py --agents 1000 --interval 30 --reports 3000

prints a Markdown row and, with ``--record``, appends it to ``benches/results/controller.md``.
CPU time is used rather than wall-clock time: steadier on a shared machine, and it is what the
"share of one core" means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benches" / "results" / "controller.md"
SECRET = b"b" * 32


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _reports(agents: int) -> list[dict[str, Any]]:
    from sgflows.agent import status

    out = []
    for i in range(agents):
        machine = status.StatusMachine()
        machine.sync_started("start")
        machine.sync_finished({"ports": 20, "security_groups": 4, "rules": 200})
        reporter = status.StatusReporter(
            host=f"compute-{i:04d}",
            machine=machine,
            configurations={
                "controller": "tls:controller.example:6640",
                "report_interval": 30.0,
                "dataplane": "OVSDataplane",
                "devices": [f"port-{i:04d}-{d:02d}" for d in range(20)],
                "notifications": {"notifications": 12, "gaps": 0, "refreshes": 3, "ignored": 9},
                "report_replies": {"new": 1, "alive": 1000},
            },
        )
        reporter.add_provider("dpdk", lambda: {"offloaded": 12, "software": 3})
        reporter.add_provider("metadata-election/net-1", lambda: {"role": "standby"})
        out.append(await reporter.build_report())
    return out


def _start_controller(root: Path) -> subprocess.Popen[bytes]:
    from sgflows.agent import auth

    creds = root / "credentials.json"
    # One principal speaks for every host (agent + service), so few connections carry them.
    principals = {"bench": {"secret": SECRET.decode(), "roles": ["agent", "service"]}}
    auth.write_private_file(creds, json.dumps({"principals": principals}).encode())
    (root / "model.json").write_text("{}")
    ready = root / "ready.json"
    (root / "controller.ini").write_text(
        f"""[controller]
listen = unix:{root / "c.sock"}
credentials_file = {creds}
model = {root / "model.json"}
state_file = {root / "controller.sqlite3"}
agent_down_time = 75
ready_file = {ready}
[DEFAULT]
log_file = {root / "controller.log"}
"""
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sgflows.agent",
            "controller",
            "--config-file",
            str(root / "controller.ini"),
        ],
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("controller did not start")
        time.sleep(0.05)
    return proc


async def _send(
    root: Path,
    reports: list[dict[str, Any]],
    total: int,
    connections: int,
    proc: subprocess.Popen[bytes],
) -> dict[str, float]:
    from sgflows.agent import rpc

    clients = []
    for _ in range(connections):
        client = await rpc.RPCClient.connect(f"unix:{root / 'c.sock'}", call_timeout=60)
        await client.login("bench", SECRET)
        clients.append(client)

    async def worker(client: rpc.RPCClient, indexes: range) -> None:
        for i in indexes:
            await client.call("report_state", reports[i % len(reports)])

    try:
        # Fill the table: every agent has a row, so what follows are updates.
        await asyncio.gather(
            *(worker(c, range(k, len(reports), connections)) for k, c in enumerate(clients))
        )
        cpu0, wall0 = _cpu_seconds(proc.pid), time.perf_counter()
        await asyncio.gather(
            *(worker(c, range(k, total, connections)) for k, c in enumerate(clients))
        )
        cpu1, wall1 = _cpu_seconds(proc.pid), time.perf_counter()
    finally:
        for client in clients:
            await client.close()
    return {"cpu": cpu1 - cpu0, "wall": wall1 - wall0}


def run(agents: int, interval: float, total: int, connections: int) -> dict[str, Any]:
    """Measure; returns the figures (see the module docstring)."""
    reports = asyncio.run(_reports(agents))
    size = sum(len(msgpack.packb(r)) for r in reports) / len(reports)
    with tempfile.TemporaryDirectory(prefix="sgf-bench-") as d:
        root = Path(d)
        proc = _start_controller(root)
        try:
            figures = asyncio.run(_send(root, reports, total, connections, proc))
            rss = _rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        db_kb = sum(p.stat().st_size for p in root.glob("controller.sqlite3*")) / 1024
    per_report = figures["cpu"] / total
    return {
        "agents": agents,
        "interval": interval,
        "reports": total,
        "connections": connections,
        "report_bytes": round(size),
        "cpu_ms_per_report": round(per_report * 1000, 3),
        "wall_reports_per_s": round(total / figures["wall"]),
        "core_share_pct": round(100 * per_report * agents / interval, 2),
        "controller_rss_mb": round(rss, 1),
        "db_kb": round(db_kb),
    }


def markdown_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['agents']} | {r['interval']:g} s | {r['reports']} | {r['report_bytes']} B "
        f"| {r['cpu_ms_per_report']} ms | {r['core_share_pct']} % | {r['wall_reports_per_s']}/s "
        f"| {r['controller_rss_mb']} MB | {r['db_kb']} kB |"
    )


HEADER = (
    "| agents | interval | reports measured | report size | controller CPU per report "
    "| share of one core | throughput | controller RSS | database |\n"
    "|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--record", action="store_true", help=f"append to {RESULTS}")
    args = parser.parse_args(argv)
    result = run(args.agents, args.interval, args.reports, args.connections)
    print(HEADER)
    print(markdown_row(result))
    print(json.dumps(result))
    if args.record:
        if not RESULTS.exists():
            RESULTS.write_text(
                "# Status reports: what they cost the reference controller\n\n"
                "`python benches/controller_load.py --record` (see its docstring). Share of one "
                "core = controller CPU per report x agents / interval.\n\n" + HEADER + "\n"
            )
        with RESULTS.open("a") as f:
            f.write(markdown_row(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
