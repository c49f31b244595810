"""`sgflows status` prints whatever a controller answers, never a traceback (issue 16, item 3)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sgflows.agent import auth, controller, rpc
from sgflows.agent.__main__ import cli

WIRE_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.integers() | st.binary(max_size=4), children, max_size=5
        )
    ),
    max_leaves=40,
)
ROW_KEYS = st.sampled_from(
    [
        "host",
        "state",
        "alive",
        "state_since",
        "last_report",
        "last_restart",
        "custom",
        "degraded_reasons",
    ]
)


@settings(max_examples=300, deadline=None)
@given(WIRE_VALUES | st.lists(st.dictionaries(ROW_KEYS, WIRE_VALUES), max_size=4))
def test_any_answer_formats_as_a_table_and_as_json(rows: Any) -> None:
    table = controller.format_agents_table(rows)
    assert table.startswith("HOST")
    assert all(line.isprintable() for line in table.splitlines())
    json.loads(controller.format_agents_json(rows))


#: The answers that crashed `sgflows status` (exit 70) and `--json` in the issue, and worse.
HOSTILE_ROWS: list[Any] = [
    {"host": "a", "state": "active", "alive": True, "custom": "a string"},
    {"host": "b", "degraded_reasons": ["a", "list"], "alive": "yes"},
    {"host": b"\xff\x00", "custom": {"x": {"ok": True, "value": b"\x00\x01"}}},
    {"host": "d", "last_restart": [1, 2], "custom": {b"k": {"ok": 1}}, "state": {"x": 1}},
    {"host": "e\x1b[31mred\nnewline", "state_since": 1e308, "last_report": float("nan")},
    "not a row",
    None,
]


class Scripted:
    """A real RPC server answering `list_agents` with whatever the test sets."""

    def __init__(self, sock: Path, answer: Any) -> None:
        self.sock = sock
        self.answer = answer
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        import os

        creds = auth.Credentials(
            [auth.Principal("ops", frozenset({"admin"}), uids=frozenset({os.getuid()}))]
        )
        self.server = rpc.RPCServer(creds)

        async def list_agents(conn: rpc.Connection) -> Any:
            return self.answer

        self.server.register("list_agents", list_agents, roles={"admin"})
        self.loop.run_until_complete(self.server.start_unix(str(self.sock)))
        self.started.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def scripted(short_tmp: Path) -> Iterator[Scripted]:
    s = Scripted(short_tmp / "c.sock", HOSTILE_ROWS)
    try:
        yield s
    finally:
        s.close()


@pytest.mark.parametrize("answer", [HOSTILE_ROWS, "a string", {"a": "map"}, None, 7])
def test_status_survives_a_hostile_controller(scripted: Scripted, answer: Any) -> None:
    scripted.answer = answer
    runner = CliRunner()
    table = runner.invoke(cli, ["status", "--controller", f"unix:{scripted.sock}"])
    assert table.exit_code == 0, table.output
    assert "Traceback" not in table.output and "\x1b" not in table.output
    as_json = runner.invoke(cli, ["status", "--json", "--controller", f"unix:{scripted.sock}"])
    assert as_json.exit_code == 0, as_json.output
    json.loads(as_json.output)
    if answer is HOSTILE_ROWS:
        assert "a string" not in table.output  # a string `custom` is shown as "?"
        assert "0xff00" in table.output  # bytes shown as hex
        assert json.loads(as_json.output)[2]["custom"]["x"]["value"] == {"bytes_hex": "0001"}
