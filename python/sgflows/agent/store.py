"""The reference controller's persistent state in SQLite: the agent table and binding activations.

One row per agent, written with one ``INSERT … ON CONFLICT DO UPDATE`` per report (O(1): no
rewrite of the whole table), in WAL mode with ``synchronous = NORMAL`` so that a commit costs no
``fsync`` (a crash of the controller loses nothing; a power cut may lose the last heartbeats,
which agents resend within one report interval anyway).

The schema is versioned with ``PRAGMA user_version``: :data:`MIGRATIONS` lists the steps from
version 0 (an empty file) upwards, each applied in its own transaction, and a database written
by a newer sgflows (a version above the last step) is refused rather than guessed at.

A state file from before SQLite (the JSON agent table) found at the configured path, or at
``legacy_path`` (the earlier default name) when the database does not exist yet, is imported
once: it is moved aside to ``….json-legacy`` and its rows, checked like reports, are copied in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import reports
from .status import make_dirs

LOG = logging.getLogger(__name__)

#: Schema steps: ``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE agents (
            host TEXT PRIMARY KEY,
            first_seen REAL NOT NULL,
            heartbeat REAL NOT NULL,
            alive INTEGER NOT NULL,
            report TEXT NOT NULL,
            last_restart TEXT
        )""",
        """CREATE TABLE active_bindings (
            port_id TEXT PRIMARY KEY,
            host TEXT NOT NULL
        )""",
    ),
)

#: The version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)

_SQLITE_MAGIC = b"SQLite format 3\0"


class StoreError(RuntimeError):
    """The state database cannot be opened or is from a newer sgflows."""


@dataclass
class AgentRecord:
    """One row of the agent table."""

    host: str
    first_seen: float
    heartbeat: float
    alive: bool = True
    report: dict[str, Any] = field(default_factory=dict)
    #: The last report that announced a process restart: ``{"at", "previous_stop"}``.
    last_restart: dict[str, Any] | None = None


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


class StateStore:
    """The controller's SQLite database (see the module docstring)."""

    def __init__(
        self, path: str | os.PathLike[str], legacy_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        legacy = self._move_legacy_json_aside(self.path)
        if legacy is None and legacy_path is not None and not self.path.exists():
            legacy = self._move_legacy_json_aside(Path(legacy_path))
        try:
            make_dirs(self.path.parent, 0o750)
            self._db = self._connect()
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        self._migrate()
        if legacy is not None:
            self._import_legacy(legacy)

    # -- opening ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # Created 0600: the table holds what agents report about their hosts.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this sgflows knows "
                f"({SCHEMA_VERSION}); use the newer sgflows or another state_file"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction() as db:
                for statement in MIGRATIONS[target - 1]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target:d}")
            LOG.info("state database %s migrated to schema version %d", self.path, target)

    @property
    def version(self) -> int:
        """The schema version of the open database."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        """Close the database (checkpointing the WAL)."""
        self._db.close()

    # -- the JSON table of earlier versions -------------------------------------------------

    @staticmethod
    def _move_legacy_json_aside(path: Path) -> Any:
        try:
            st = path.stat()
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
                return None
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
            if head == _SQLITE_MAGIC:
                return None
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            msg = f"{path}: neither an SQLite database nor a JSON table: {exc}"
            raise StoreError(msg) from exc
        aside = path.with_name(path.name + ".json-legacy")
        try:
            os.replace(path, aside)
        except OSError as exc:
            raise StoreError(f"cannot move {path} aside: {exc.strerror or exc}") from exc
        LOG.warning("state file %s was a JSON table: moved to %s, importing it", path, aside)
        return data

    def _import_legacy(self, data: Any) -> None:
        agents = data.get("agents", {}) if isinstance(data, dict) else {}
        imported = 0
        for host, row in agents.items() if isinstance(agents, dict) else ():
            try:
                report = reports.validate_report(dict(row.get("report") or {}, host=host))
                record = AgentRecord(
                    host=str(host),
                    first_seen=float(row.get("first_seen", 0)),
                    heartbeat=float(row.get("heartbeat", 0)),
                    alive=bool(row.get("alive", False)),
                    report=report,
                    last_restart=_restart_or_none(row.get("last_restart")),
                )
            except (reports.ReportError, AttributeError, TypeError, ValueError) as exc:
                LOG.warning("legacy agent row %r skipped: %s", host, exc)
                continue
            self.put_agent(record)
            imported += 1
        bindings = data.get("active_bindings", {}) if isinstance(data, dict) else {}
        for port_id, host in bindings.items() if isinstance(bindings, dict) else ():
            if isinstance(port_id, str) and isinstance(host, str):
                self.set_binding(port_id, host)
        LOG.info("imported %d agents from the legacy JSON table", imported)

    # -- agents -----------------------------------------------------------------------------

    def put_agent(self, rec: AgentRecord) -> None:
        """Insert or replace one agent's row (one statement, one commit)."""
        self._db.execute(
            "INSERT INTO agents (host, first_seen, heartbeat, alive, report, last_restart) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET "
            "heartbeat = excluded.heartbeat, alive = excluded.alive, report = excluded.report, "
            "last_restart = excluded.last_restart",
            (
                rec.host,
                rec.first_seen,
                rec.heartbeat,
                int(rec.alive),
                _dumps(rec.report),
                None if rec.last_restart is None else _dumps(rec.last_restart),
            ),
        )

    def mark_dead(self, hosts: list[str]) -> None:
        """Record that these agents stopped reporting."""
        with self._transaction() as db:
            db.executemany("UPDATE agents SET alive = 0 WHERE host = ?", [(h,) for h in hosts])

    def load_agents(self) -> dict[str, AgentRecord]:
        """Every row; rows that no longer pass the report schema are skipped (and logged)."""
        out: dict[str, AgentRecord] = {}
        rows = self._db.execute(
            "SELECT host, first_seen, heartbeat, alive, report, last_restart FROM agents"
        )
        for host, first_seen, heartbeat, alive, report, last_restart in rows:
            try:
                out[host] = AgentRecord(
                    host=host,
                    first_seen=float(first_seen),
                    heartbeat=float(heartbeat),
                    alive=bool(alive),
                    report=reports.validate_report(json.loads(report)),
                    last_restart=_restart_or_none(
                        None if last_restart is None else json.loads(last_restart)
                    ),
                )
            except (reports.ReportError, TypeError, ValueError) as exc:
                LOG.warning("agent row %r in %s skipped: %s", host, self.path, exc)
        return out

    # -- bindings ---------------------------------------------------------------------------

    def set_binding(self, port_id: str, host: str) -> None:
        """Record that ``host``'s binding of ``port_id`` was activated."""
        self._db.execute(
            "INSERT INTO active_bindings (port_id, host) VALUES (?, ?) "
            "ON CONFLICT (port_id) DO UPDATE SET host = excluded.host",
            (port_id, host),
        )

    def drop_bindings(self, port_ids: list[str]) -> None:
        """Forget activations (their port or host left the model)."""
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM active_bindings WHERE port_id = ?", [(p,) for p in port_ids]
            )

    def load_bindings(self) -> dict[str, str]:
        """Port id → the host whose binding was activated."""
        rows = self._db.execute("SELECT port_id, host FROM active_bindings")
        return {str(port_id): str(host) for port_id, host in rows}


def _restart_or_none(value: Any) -> dict[str, Any] | None:
    """A stored ``last_restart`` (``{"at": str, "previous_stop": str | None}``), checked."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("last_restart must be an object")
    at = value.get("at")
    stop = value.get("previous_stop")
    if not isinstance(at, str) or not (stop is None or stop in reports.PREVIOUS_STOPS):
        raise ValueError("last_restart must hold 'at' and 'previous_stop'")
    return {"at": at, "previous_stop": stop}
