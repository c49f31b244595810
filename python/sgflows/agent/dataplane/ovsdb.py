"""Port discovery: the local OVSDB's ``Interface`` table through the ``ovs`` library's IDL.

:class:`InterfaceWatcher` keeps an IDL replica of the bridge's ``Bridge``/``Port``/``Interface``
rows in a thread of its own and, after every change it sees, hands the event loop a whole
:class:`Snapshot` of the bridge: the ports that are ours (``external_ids:iface-id`` and
``attached-mac`` set) with their ofport (``None`` while OVSDB says ``[]`` or ``-1``: not
ready), ``Port.tag`` and the bridge's ``fail_mode``. Consumers compare snapshots, never single
events: after a reconnect the IDL re-sends every row as new and sends no deletes
(``DESIGN.md`` §5), so only a comparison of the whole table is right.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
_COLUMNS = {
    "Bridge": ["name", "ports", "fail_mode"],
    "Port": ["name", "interfaces", "tag"],
    "Interface": ["name", "ofport", "external_ids"],
}


@dataclasses.dataclass(frozen=True)
class LocalPort:
    """One VM port on the bridge, as OVSDB describes it."""

    iface_id: str
    name: str
    mac: str
    ofport: int | None  # None: not ready (OVSDB's [] or -1)
    tag: int | None


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The bridge as OVSDB shows it now (``exists`` False: no such bridge)."""

    exists: bool
    fail_mode: str | None = None
    ports: dict[str, LocalPort] = dataclasses.field(default_factory=dict)
    port_names: frozenset[str] = frozenset()
    connection: int = 0  # counts (re)connections to the database


def _optional(value: Any) -> Any:
    """Optional OVSDB columns come back as a list of zero or one item."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def snapshot_of(
    tables: Any, bridge: str, connection: int, uplinks: frozenset[str] = frozenset()
) -> Snapshot:
    """The :class:`Snapshot` of ``bridge`` in an IDL's ``tables`` (``uplinks``: port names
    that are never VM ports, whatever their external ids say)."""
    row = next((b for b in tables["Bridge"].rows.values() if b.name == bridge), None)
    if row is None:
        return Snapshot(exists=False, connection=connection)
    ports: dict[str, LocalPort] = {}
    names = set()
    for port in row.ports:
        names.add(port.name)
        if port.name in uplinks:
            continue
        for iface in port.interfaces:
            local = _local_port(iface, _optional(port.tag))
            if local is not None:
                ports[local.iface_id] = local
    return Snapshot(
        exists=True,
        fail_mode=_optional(row.fail_mode),
        ports=ports,
        port_names=frozenset(names),
        connection=connection,
    )


def _local_port(iface: Any, tag: int | None) -> LocalPort | None:
    ids = dict(iface.external_ids)
    iface_id, mac = ids.get("iface-id"), ids.get("attached-mac")
    if not iface_id or not mac:
        return None  # not a VM port (an uplink, a patch port, the agent's own)
    ofport = _optional(iface.ofport)
    ready = isinstance(ofport, int) and ofport > 0
    return LocalPort(
        iface_id=iface_id,
        name=iface.name,
        mac=mac.lower(),
        ofport=ofport if ready else None,
        tag=tag,
    )


class InterfaceWatcher:
    """An IDL replica of one bridge, watched in a thread; snapshots go to the event loop."""

    def __init__(
        self,
        remote: str,
        bridge: str,
        on_snapshot: Callable[[Snapshot], None],
        *,
        schema: str = SCHEMA,
        poll_interval: float = 0.2,
        uplinks: frozenset[str] = frozenset(),
    ) -> None:
        self.remote = remote
        self.bridge = bridge
        self._on_snapshot = on_snapshot
        self._schema = schema
        self._poll_ms = max(1, int(poll_interval * 1000))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections = 0
        self._uplinks = uplinks

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the watching thread; snapshots are delivered with ``loop.call_soon_threadsafe``."""
        import ovs.db.idl  # the agent extra's dependency, imported where it is needed

        helper = ovs.db.idl.SchemaHelper(self._schema)
        for table, columns in _COLUMNS.items():
            helper.register_columns(table, columns)
        idl = ovs.db.idl.Idl(self.remote, helper)
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(idl,), name="sgflows-ovsdb", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (within one poll interval)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, idl: Any) -> None:
        import ovs.poller

        seqno = idl.change_seqno
        session_seqno = -1
        try:
            while not self._stop.is_set():
                idl.run()
                current = idl._session.get_seqno()  # changes at every (re)connection
                if current != session_seqno and idl._session.is_connected():
                    session_seqno = current
                    self.connections += 1
                    LOG.info("OVSDB %s: connected (connection %d)", self.remote, self.connections)
                if idl.change_seqno != seqno:
                    seqno = idl.change_seqno
                    self._deliver(
                        snapshot_of(idl.tables, self.bridge, self.connections, self._uplinks)
                    )
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.timer_wait(self._poll_ms)
                poller.block()
        except Exception:  # the thread must not die silently: the agent would go blind
            LOG.exception("OVSDB watcher failed")
        finally:
            idl.close()

    def _deliver(self, snapshot: Snapshot) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_snapshot, snapshot)
