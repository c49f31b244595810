"""Hostile ``report_state`` payloads against a real controller process (issue 16, items 2-3).

Every bad report is answered ``InvalidParams`` (400) to its sender alone; nothing of it is
stored, every other agent keeps reporting, binding activation keeps answering, the table keeps
listing, and the controller still stops cleanly (removing its ready file).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import sys
from typing import Any

import pytest
from attackhelpers import HOSTS, LAUNCH, Controller, good_report, record
from sgflows.agent import rpc


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return value


#: (name, how the report is spoiled, the field the controller names, or the start of its path)
BAD_REPORTS: list[tuple[str, dict[str, Any], str]] = [
    ("previous_stop is bytes", {"restarted": True, "previous_stop": b"\0"}, "previous_stop"),
    ("custom is a string", {"custom": "oops"}, "custom"),
    ("degraded_reasons is a list", {"degraded_reasons": ["x"]}, "degraded_reasons"),
    ("bytes inside custom", {"custom": {"x": {"ok": True, "value": b"\xff"}}}, "custom.x.value"),
    ("configurations of 4096 characters", {"configurations": {"k": "x" * 4088}}, "configurations"),
    (
        "custom nested 40 deep",
        {"custom": {"x": {"ok": True, "value": _nested(40)}}},
        "custom.x.value",
    ),
    ("NaN in last_sync", {"last_sync": {"duration": math.nan}}, "last_sync.duration"),
    ("65 custom entries", {"custom": {f"c{i}": {"ok": True} for i in range(65)}}, "custom"),
    ("state not a state", {"state": "pwned"}, "state"),
    ("host of 300 characters", {"host": "h" * 300}, "host"),
    ("host missing", {"host": None}, "host"),
    ("syncs negative", {"syncs": {"full": -1}}, "syncs.full"),
]


async def _bad_report(ctl: Controller, spoil: dict[str, Any]) -> rpc.RPCError:
    client = await ctl.client("compute-1")
    try:
        report = dict(good_report("compute-1"), **spoil)
        with pytest.raises(rpc.InvalidParams) as err:
            await client.call("report_state", report)
        return err.value
    finally:
        await client.close()


async def _everything_still_works(ctl: Controller) -> None:
    for host in HOSTS:
        client = await ctl.client(host)
        try:
            assert await client.call("report_state", good_report(host)) in ("new", "alive")
        finally:
            await client.close()
    nova = await ctl.client("nova")
    try:
        port = await nova.call("activate_port_binding", "mig", "compute-1")
        assert port["binding:host_id"] == "compute-1"
        with pytest.raises(rpc.Conflict):
            await nova.call("activate_port_binding", "mig", "compute-1")
        rows = await nova.call("list_agents")
        assert {r["host"] for r in rows} == set(HOSTS)
        json.dumps(rows)  # everything stored is plain JSON
    finally:
        await nova.close()


def test_bad_reports_are_refused_alone_and_persistence_holds(
    controller_process: Controller,
) -> None:
    ctl = controller_process
    for name, spoil, field in BAD_REPORTS:

        async def attack(spoil: dict[str, Any] = spoil, field: str = field) -> str:
            err = await _bad_report(ctl, spoil)
            assert err.code == 400, err
            assert str(err.details.get("field")).startswith(field), (err, err.details)
            return f"400 InvalidParams ({field})"

        record(ctl, f"report: {name}", attack)
    asyncio.run(_everything_still_works(ctl))
    # Nothing of the bad reports reached the database; the good ones did, one row per agent.
    with sqlite3.connect(ctl.state_file) as db:
        rows = dict(db.execute("SELECT host, report FROM agents").fetchall())
    assert set(rows) == set(HOSTS)
    assert json.loads(rows["compute-1"]) == good_report("compute-1")
    # Shutdown still runs to the end: exit 0, socket closed, ready file gone.
    assert ctl.stop() == 0
    assert not ctl.ready_file.exists()
    assert "Traceback" not in ctl.log()


def test_a_flood_of_bad_reports_costs_nothing_and_blocks_nobody(
    controller_process: Controller,
) -> None:
    ctl = controller_process
    big = {"custom": {"x": {"ok": True, "value": ["y" * 1000] * 200}}}  # ~200 kB each

    async def flood() -> str:
        client = await ctl.client("compute-1")
        try:
            report = dict(good_report("compute-1"), **big)
            results = await asyncio.gather(
                *(client.call("report_state", report) for _ in range(300)),
                return_exceptions=True,
            )
        finally:
            await client.close()
        refused = sum(isinstance(r, rpc.InvalidParams) for r in results)
        assert refused == 300, [r for r in results if not isinstance(r, rpc.InvalidParams)][:3]
        return f"300 x 200 kB pipelined: {refused} x 400"

    record(ctl, "report flood (oversized custom)", flood)
    # One warning for the flooding connection, not one per report.
    assert ctl.log().count("report refused") == 1

    async def wrong_host() -> str:
        client = await ctl.client("compute-1")
        try:
            with pytest.raises(rpc.Forbidden):
                await client.call("report_state", good_report("compute-2"))
        finally:
            await client.close()
        return "403 Forbidden"

    record(ctl, "report for another host", wrong_host)


def test_status_prints_whatever_the_table_holds(controller_process: Controller) -> None:
    ctl = controller_process
    asyncio.run(_everything_still_works(ctl))
    for args in ([], ["--json"]):
        out = subprocess.run(
            [
                sys.executable,
                str(LAUNCH),
                "status",
                "--controller",
                ctl.endpoint,
                "--identity",
                "ops",
                "--secret-file",
                str(_ops_secret(ctl)),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "compute-1" in out.stdout and "Traceback" not in out.stderr


def _ops_secret(ctl: Controller) -> Any:
    from sgflows.agent import auth

    path = ctl.root / "ops.secret"
    if not path.exists():
        auth.write_secret(path, b"o" * 32)
    return path
