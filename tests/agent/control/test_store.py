"""The SQLite agent table: migrations, one statement per report, legacy import (issue 16, 4)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from sgflows.agent import controller, store


def report(host: str, **extra: Any) -> dict[str, Any]:
    return {"host": host, "state": "active", "custom": {"x": {"ok": True, "value": 1}}, **extra}


def test_a_new_database_is_migrated_wal_and_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "c.sqlite3"
    db = store.StateStore(path)
    assert db.version == store.SCHEMA_VERSION
    db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert raw.execute("PRAGMA user_version").fetchone() == (store.SCHEMA_VERSION,)
    store.StateStore(path).close()  # reopening migrates nothing and keeps the version


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    with pytest.raises(store.StoreError, match="newer"):
        store.StateStore(path)


def test_garbage_at_the_path_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    path.write_bytes(b"\x00\x01 not a database")
    with pytest.raises(store.StoreError):
        store.StateStore(path)
    assert path.read_bytes() == b"\x00\x01 not a database"


def test_one_statement_per_report_whatever_the_table_size(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    backend = controller.ReferenceBackend(tmp_path / "model.json", tmp_path / "c.sqlite3")
    statements: list[str] = []
    backend.store._db.set_trace_callback(statements.append)

    def cost(host: str) -> int:
        statements.clear()
        asyncio.run(backend.report_state(report(host)))
        return len(statements)

    first = cost("h0")
    for i in range(1, 500):
        asyncio.run(backend.report_state(report(f"h{i}")))
    assert cost("h0") == first == 1  # one upsert, not a rewrite of 500 rows
    assert statements[0].startswith("INSERT INTO agents")


def test_state_survives_a_restart_and_bad_rows_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    path = tmp_path / "c.sqlite3"
    backend = controller.ReferenceBackend(tmp_path / "model.json", path)
    asyncio.run(backend.report_state(report("h1", restarted=True, previous_stop="clean")))
    asyncio.run(backend.report_state(report("h2")))
    asyncio.run(backend.stop())
    with sqlite3.connect(path) as raw:  # a row damaged behind our back
        raw.execute("UPDATE agents SET report = '{\"host\": 5}' WHERE host = 'h2'")
    again = controller.ReferenceBackend(tmp_path / "model.json", path)
    assert set(again.agents) == {"h1"}
    assert again.agents["h1"].last_restart is not None
    assert again.agents["h1"].last_restart["previous_stop"] == "clean"


def test_the_json_table_of_earlier_versions_is_imported_once(tmp_path: Path) -> None:
    path = tmp_path / "controller-state.json"
    legacy = {
        "agents": {
            "h1": {
                "first_seen": 1.0,
                "heartbeat": 2.0,
                "alive": True,
                "report": report("h1"),
                "last_restart": None,
            },
            # The poisoned row of the issue: never imported.
            "h2": {
                "first_seen": 1.0,
                "heartbeat": 2.0,
                "alive": True,
                "report": {"host": "h2", "custom": "oops"},
                "last_restart": None,
            },
        },
        "active_bindings": {"p1": "h1"},
    }
    path.write_text(json.dumps(legacy))
    db = store.StateStore(path)
    assert set(db.load_agents()) == {"h1"}
    assert db.load_bindings() == {"p1": "h1"}
    db.close()
    assert json.loads(path.with_name(path.name + ".json-legacy").read_text()) == legacy
    assert path.read_bytes().startswith(b"SQLite format 3\0")


def test_the_json_table_under_its_old_default_name_is_imported(tmp_path: Path) -> None:
    old = tmp_path / "controller-state.json"
    old.write_text(json.dumps({"agents": {"h1": {"report": report("h1"), "heartbeat": 5.0}}}))
    db = store.StateStore(tmp_path / "controller.sqlite3", legacy_path=old)
    assert db.load_agents()["h1"].heartbeat == 5.0
    db.close()
    assert not old.exists()
    # Once: a second start does not look for it again.
    old.write_text(json.dumps({"agents": {"h2": {"report": report("h2")}}}))
    db = store.StateStore(tmp_path / "controller.sqlite3", legacy_path=old)
    assert set(db.load_agents()) == {"h1"}
    db.close()


def test_the_controller_command_reports_a_bad_state_file_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from sgflows.agent import auth
    from sgflows.agent.__main__ import cli

    (tmp_path / "model.json").write_text("{}")
    creds = tmp_path / "credentials.json"
    auth.write_private_file(creds, b'{"principals": {}}')
    state = tmp_path / "state.sqlite3"
    state.write_bytes(b"\x00 not a database")
    ini = tmp_path / "controller.ini"
    ini.write_text(
        f"[controller]\nlisten = unix:{tmp_path / 'c.sock'}\ncredentials_file = {creds}\n"
        f"model = {tmp_path / 'model.json'}\nstate_file = {state}\n"
    )
    result = CliRunner().invoke(cli, ["controller", "--config-file", str(ini)])
    assert result.exit_code == 1, result.output
    assert str(state) in result.output and "Traceback" not in result.output
