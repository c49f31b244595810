"""A real controller process to attack, its resident memory, and the table of outcomes.

Each attack test records one row (attack, outcome, RSS before/after, the latency of a
legitimate call made while or right after the attack ran); the rows are printed at the end of
the run (``pytest_terminal_summary``) so the figures travel with the test output. Latencies are
figures, not assertions: this is a shared machine, and speed belongs in benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PYTHON_DIR = ROOT / "python"
LAUNCH = ROOT / "tests" / "agent" / "control" / "launch.py"

# The control plane is pure Python: let the suite run before the Rust core is built (as
# tests/agent/control/conftest.py does).
try:
    import sgflows  # noqa: F401
except ImportError:  # pragma: no cover - depends on the build
    import types

    for _name in [m for m in sys.modules if m == "sgflows" or m.startswith("sgflows.")]:
        del sys.modules[_name]
    _package = types.ModuleType("sgflows")
    _package.__path__ = [str(PYTHON_DIR / "sgflows")]
    sys.modules["sgflows"] = _package

from sgflows.agent import auth, rpc  # noqa: E402

HOSTS = ("compute-1", "compute-2", "compute-3")
#: No unauthenticated or rejected input may grow the controller by more than this.
RSS_BUDGET_KB = 64 * 1024

ROWS: list[dict[str, Any]] = []


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def model() -> dict[str, Any]:
    """Two hosts with their own groups, one shared group, one migrating port."""
    return {
        "security_groups": {
            "web": {"rules": [{"direction": "ingress", "remote_group_id": "web"}]},
            "db": {"rules": [{"direction": "ingress", "remote_group_id": "db"}]},
            "ops": {"rules": [{"direction": "egress"}]},
        },
        "ports": [
            {
                "id": "w1",
                "fixed_ips": ["10.0.0.1"],
                "security_groups": ["web"],
                "binding_host": "compute-1",
            },
            {
                "id": "d2",
                "fixed_ips": ["10.0.0.2"],
                "security_groups": ["db"],
                "binding_host": "compute-2",
            },
            {
                "id": "o3",
                "fixed_ips": ["10.0.0.3"],
                "security_groups": ["ops"],
                "binding_host": "compute-3",
            },
            {
                "id": "mig",
                "fixed_ips": ["10.0.0.9"],
                "security_groups": ["ops"],
                "bindings": [{"host": "compute-3", "status": "ACTIVE"}, {"host": "compute-1"}],
            },
        ],
    }


@dataclass
class Controller:
    """A controller process with a Unix socket and a TLS-less loopback-free setup."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None
    secrets: dict[str, bytes] = field(default_factory=dict)

    @property
    def sock(self) -> Path:
        return self.root / "run" / "c.sock"  # run/ does not exist: the controller makes it

    @property
    def state_file(self) -> Path:
        return self.root / "state" / "controller.sqlite3"

    @property
    def ready_file(self) -> Path:
        return self.root / "ready.json"

    @property
    def endpoint(self) -> str:
        return f"unix:{self.sock}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_model(self, data: dict[str, Any]) -> None:
        path = self.root / "model.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    def setup(self) -> None:
        principals: dict[str, Any] = {
            "nova": {"secret": "n" * 32, "roles": ["service"]},
            "ops": {"secret": "o" * 32, "roles": ["admin"]},
        }
        for host in HOSTS:
            self.secrets[host] = auth.generate_secret()
            principals[host] = {"secret": self.secrets[host].decode(), "roles": ["agent"]}
        creds = self.root / "credentials.json"
        auth.write_private_file(creds, json.dumps({"principals": principals}).encode())
        self.write_model(model())
        (self.root / "controller.ini").write_text(
            f"""[controller]
listen = {self.endpoint}
credentials_file = {creds}
model = {self.root / "model.json"}
state_file = {self.state_file}
agent_down_time = 30
watch_interval = 0.05
ready_file = {self.ready_file}
"""
        )

    def start(self) -> None:
        log = open(self.root / "controller.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(LAUNCH),
                "controller",
                "--config-file",
                str(self.root / "controller.ini"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"controller did not start:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return (self.root / "controller.log").read_text(errors="replace")

    async def client(
        self, identity: str, on_notification: Callable[[str, list[Any]], None] | None = None
    ) -> rpc.RPCClient:
        """A logged-in client over the Unix socket."""
        client = await rpc.RPCClient.connect(
            self.endpoint, call_timeout=20, connect_timeout=20, on_notification=on_notification
        )
        secret = {"nova": b"n" * 32, "ops": b"o" * 32}.get(identity) or self.secrets[identity]
        await client.login(identity, secret)
        return client


@pytest.fixture
def controller_process() -> Iterator[Controller]:
    with tempfile.TemporaryDirectory(prefix="sgf-atk-") as d:  # short: Unix socket paths
        ctl = Controller(Path(d))
        ctl.setup()
        ctl.start()
        try:
            yield ctl
        finally:
            ctl.kill()
            if "Traceback" in ctl.log():
                print(f"--- controller.log ---\n{ctl.log()[-4000:]}")


def good_report(host: str) -> dict[str, Any]:
    """A report as a healthy agent sends it."""
    return {
        "agent_type": "sgflows agent",
        "binary": "sgflows-agent",
        "host": host,
        "topic": "sgflows-agent",
        "configurations": {"devices": ["w1"]},
        "start_flag": False,
        "uuid": "8a4b3c2d-0000-4000-8000-000000000001",
        "time": "2026-12-01T20:00:00.000000",
        "state": "active",
        "phase": "active",
        "state_since": "2026-12-01T20:00:00.000000",
        "degraded_reasons": {},
        "restarted": False,
        "previous_stop": None,
        "last_sync": None,
        "syncs": {"full": 1, "resync": 0, "failed": 0},
        "custom": {"dpdk": {"ok": True, "value": {"offloaded": 3}}},
    }


async def legit_latency(ctl: Controller) -> float:
    """Seconds for a legitimate agent to connect, log in and have a report accepted."""
    start = time.perf_counter()
    client = await ctl.client("compute-3")
    try:
        await client.call("report_state", good_report("compute-3"))
        return time.perf_counter() - start
    finally:
        await client.close()


def record(
    ctl: Controller,
    attack: str,
    run: Callable[[], Awaitable[str]],
) -> dict[str, Any]:
    """Run one attack against ``ctl``: RSS before and after, the outcome it returns, and the
    worst latency of legitimate calls made one after another for as long as the attack runs
    (at least one). Asserts the memory budget."""

    async def main() -> tuple[str, float]:
        attack_task = asyncio.ensure_future(run())
        latencies = [await legit_latency(ctl)]
        while not attack_task.done():
            latencies.append(await legit_latency(ctl))
        return await attack_task, max(latencies)

    before = rss_kb(ctl.pid)
    outcome, latency = asyncio.run(main())
    after = rss_kb(ctl.pid)
    row = {
        "attack": attack,
        "outcome": outcome,
        "rss_before_mb": round(before / 1024, 1),
        "rss_after_mb": round(after / 1024, 1),
        "legit_latency_ms": round(latency * 1000, 1),
    }
    ROWS.append(row)
    assert after - before <= RSS_BUDGET_KB, row
    assert ctl.proc is not None and ctl.proc.poll() is None, "the controller died"
    return row


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The table of attacks, for the issue's resolution note."""
    if not ROWS:
        return
    tr = terminalreporter
    tr.section("controller attacks (RSS of the controller process)")
    tr.write_line("| attack | outcome | RSS before → after (MB) | legitimate call (ms) |")
    tr.write_line("|---|---|---|---|")
    for r in ROWS:
        tr.write_line(
            f"| {r['attack']} | {r['outcome']} | {r['rss_before_mb']} → {r['rss_after_mb']} "
            f"| {r['legit_latency_ms']} |"
        )
