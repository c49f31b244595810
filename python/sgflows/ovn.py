"""The OVN target's rows as data: row-level diffs and syncing a live Northbound database.

``rows_of(result)`` turns ``compile(model, target="ovn")`` into ``NbRows`` (address sets and
port groups with their ACLs); ``diff_rows(old, new)`` lists what changes between two of them
row by row; ``apply(result, db)`` makes the rows sgflows owns in a Northbound database
(``external_ids:owner=sgflows``) exactly the compiled ones, in one OVSDB transaction through
the ``ovs`` Python IDL. Rows of other owners are never read for changes, written or deleted;
a name sgflows needs that another owner already uses is an error, not a takeover. The logical
switch ports belong to the deployment: port groups reference them by name, and a missing
port is an error.

    from sgflows import compile
    from sgflows.ovn import apply
    report = apply(compile(model, target="ovn"), "unix:/run/ovn/ovnnb_db.sock")
    print(report.changes)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._sgflows import OvnResult

LOG = logging.getLogger(__name__)

__all__ = [
    "AclRow",
    "ApplyError",
    "ApplyReport",
    "Change",
    "NbRows",
    "PortGroupRow",
    "apply",
    "diff_rows",
    "rows_of",
]

OWNER_KEY = "owner"
OWNER = "sgflows"
SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
_TABLES = {
    "Address_Set": ["name", "addresses", "external_ids"],
    "Port_Group": ["name", "ports", "acls", "external_ids"],
    "ACL": ["direction", "priority", "match", "action", "external_ids"],
    "Logical_Switch_Port": ["name"],
}


class ApplyError(RuntimeError):
    """The Northbound database could not be synced (the message says why)."""


@dataclass(frozen=True, order=True)
class AclRow:
    """One ACL; two ACLs are the same row when every column is equal."""

    direction: str
    priority: int
    match: str
    action: str
    external_ids: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"{self.direction} {self.priority} {self.match!r} {self.action}"


@dataclass(frozen=True)
class PortGroupRow:
    """A port group: its ports (by logical port name), ACLs and external_ids."""

    ports: frozenset[str]
    acls: frozenset[AclRow]
    external_ids: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class NbRows:
    """The rows sgflows owns: address sets (name → addresses, external_ids), port groups."""

    address_sets: Mapping[str, tuple[frozenset[str], tuple[tuple[str, str], ...]]]
    port_groups: Mapping[str, PortGroupRow]


@dataclass(frozen=True)
class Change:
    """One row-level change: ``table`` row ``name`` is ``added``, ``removed`` or
    ``modified``; ``detail`` says what (ports, addresses, ACLs added/removed)."""

    table: str
    name: str
    kind: str
    detail: tuple[str, ...] = ()

    def __str__(self) -> str:
        sign = {"added": "+", "removed": "-", "modified": "~"}[self.kind]
        lines = [f"{sign} {self.table} {self.name}"]
        lines += [f"    {d}" for d in self.detail]
        return "\n".join(lines)


@dataclass
class ApplyReport:
    """What ``apply`` changed, and how long the transaction took."""

    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        counts = {
            k: sum(c.kind == k for c in self.changes) for k in ("added", "modified", "removed")
        }
        return ", ".join(f"{n} {k}" for k, n in counts.items()) + f" rows ({self.seconds:.2f} s)"


# --- the compiled rows ------------------------------------------------------------------------


def _ovsdb(value: Any) -> Any:
    """A transact-request value as Python: sets → lists, maps → dicts, atoms as they are."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "set":
        return [_ovsdb(v) for v in value[1]]
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return {k: v for k, v in value[1]}
    return value


def _ids(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(mapping.items()))


def rows_of(result: OvnResult) -> NbRows:
    """The rows of a compile result (from its transact request)."""
    ops = result.transact()[1:]
    acls: dict[str, AclRow] = {}
    port_names = {op["uuid-name"]: op["row"]["name"] for op in ops
                  if op["table"] == "Logical_Switch_Port"}  # fmt: skip
    sets: dict[str, tuple[frozenset[str], tuple[tuple[str, str], ...]]] = {}
    groups: dict[str, PortGroupRow] = {}
    for op in ops:
        row = op["row"]
        if op["table"] == "ACL":
            acls[op["uuid-name"]] = _acl(row)
        elif op["table"] == "Address_Set":
            sets[row["name"]] = (
                frozenset(_ovsdb(row["addresses"])),
                _ids(_ovsdb(row["external_ids"])),
            )
    for op in ops:
        if op["table"] != "Port_Group":
            continue
        row = op["row"]
        ids = _ovsdb(row["external_ids"])
        refs = _ovsdb(row.get("ports", ["set", []]))
        ports = {port_names[r[1]] for r in refs} if refs else set()
        ports |= {p for p in ids.pop("sgflows:ports", "").split(",") if p}
        groups[row["name"]] = PortGroupRow(
            frozenset(ports), frozenset(acls[r[1]] for r in _ovsdb(row["acls"])), _ids(ids)
        )
    return NbRows(sets, groups)


def _acl(row: Mapping[str, Any]) -> AclRow:
    ids = row["external_ids"]
    return AclRow(
        direction=str(row["direction"]),
        priority=int(row["priority"]),
        match=str(row["match"]),
        action=str(row["action"]),
        external_ids=_ids(_ovsdb(ids) if isinstance(ids, list) else dict(ids)),
    )


# --- diff -------------------------------------------------------------------------------------


def _set_detail(what: str, old: Iterable[Any], new: Iterable[Any]) -> list[str]:
    old_set, new_set = set(old), set(new)
    return [f"+{what} {x}" for x in sorted(new_set - old_set)] + [
        f"-{what} {x}" for x in sorted(old_set - new_set)
    ]


def diff_rows(old: NbRows, new: NbRows) -> list[Change]:
    """Row-level changes from ``old`` to ``new``: address sets first, then port groups (with
    their ACLs and ports), each table in name order."""
    changes: list[Change] = []
    for name in sorted(old.address_sets.keys() | new.address_sets.keys()):
        before, after = old.address_sets.get(name), new.address_sets.get(name)
        if before == after:
            continue
        kind = "added" if before is None else "removed" if after is None else "modified"
        detail = _set_detail("address", before[0] if before else (), after[0] if after else ())
        changes.append(Change("Address_Set", name, kind, tuple(detail)))
    for name in sorted(old.port_groups.keys() | new.port_groups.keys()):
        pg_old, pg_new = old.port_groups.get(name), new.port_groups.get(name)
        if pg_old == pg_new:
            continue
        kind = "added" if pg_old is None else "removed" if pg_new is None else "modified"
        detail = _set_detail("port", pg_old.ports if pg_old else (), pg_new.ports if pg_new else ())
        detail += _set_detail("acl", pg_old.acls if pg_old else (), pg_new.acls if pg_new else ())
        if pg_old and pg_new and pg_old.external_ids != pg_new.external_ids:
            detail.append(f"external_ids {dict(pg_new.external_ids)}")
        changes.append(Change("Port_Group", name, kind, tuple(detail)))
    return changes


# --- apply ------------------------------------------------------------------------------------


def _connect(db: str, timeout: float) -> Any:
    """An IDL on the Northbound database with the tables sgflows writes, synced once."""
    import ovs.db.idl
    import ovs.poller

    if not SCHEMA.exists():
        raise ApplyError(f"{SCHEMA} missing: install ovn-common (the Northbound schema)")
    helper = ovs.db.idl.SchemaHelper(location=str(SCHEMA))
    for table, columns in _TABLES.items():
        helper.register_columns(table, columns)
    idl = ovs.db.idl.Idl(db, helper)
    deadline = time.monotonic() + timeout
    seqno = idl.change_seqno
    while idl.change_seqno == seqno:
        idl.run()
        if not idl.has_ever_connected() and time.monotonic() > deadline:
            idl.close()
            raise ApplyError(f"cannot connect to the Northbound database at {db}")
        if time.monotonic() > deadline:
            idl.close()
            raise ApplyError(f"{db}: no initial contents within {timeout:.0f} s")
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.timer_wait(100)
        poller.block()
    return idl


def _owned(row: Any) -> bool:
    return dict(row.external_ids).get(OWNER_KEY) == OWNER


def _live_rows(idl: Any) -> NbRows:
    """The rows sgflows owns in the database now."""
    sets = {
        r.name: (frozenset(r.addresses), _ids(r.external_ids))
        for r in idl.tables["Address_Set"].rows.values()
        if _owned(r)
    }
    groups = {}
    for r in idl.tables["Port_Group"].rows.values():
        if not _owned(r):
            continue
        acls = frozenset(_acl_of(a) for a in r.acls)
        ids = dict(r.external_ids)
        ids.pop("sgflows:ports", None)
        groups[r.name] = PortGroupRow(frozenset(p.name for p in r.ports), acls, _ids(ids))
    return NbRows(sets, groups)


def _acl_of(row: Any) -> AclRow:
    return AclRow(row.direction, int(row.priority), row.match, row.action, _ids(row.external_ids))


def _check_names(idl: Any, want: NbRows) -> None:
    """Refuse names another owner uses, and ports the database does not have."""
    taken = [
        f"{table} {r.name}"
        for table, names in (("Address_Set", want.address_sets), ("Port_Group", want.port_groups))
        for r in idl.tables[table].rows.values()
        if r.name in names and not _owned(r)
    ]
    if taken:
        raise ApplyError(f"rows of another owner have names sgflows needs: {', '.join(taken)}")
    ports = {r.name for r in idl.tables["Logical_Switch_Port"].rows.values()}
    missing = sorted({p for pg in want.port_groups.values() for p in pg.ports} - ports)
    if missing:
        shown = ", ".join(missing[:10]) + (
            f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise ApplyError(f"logical switch ports missing from the Northbound database: {shown}")


def _sync(idl: Any, txn: Any, want: NbRows) -> None:
    """Stage, in ``txn``, the writes that make the owned rows ``want``."""
    by_name = {t: {r.name: r for r in idl.tables[t].rows.values() if _owned(r)}
               for t in ("Address_Set", "Port_Group")}  # fmt: skip
    for name, row in by_name["Address_Set"].items():
        if name not in want.address_sets:
            row.delete()
    for name, (addresses, ids) in want.address_sets.items():
        row = by_name["Address_Set"].get(name)
        if row is None:
            row = txn.insert(idl.tables["Address_Set"])
            row.name = name
        if set(getattr(row, "addresses", [])) != addresses:
            row.addresses = sorted(addresses)
        if _ids(getattr(row, "external_ids", {})) != ids:
            row.external_ids = dict(ids)
    ports = {r.name: r for r in idl.tables["Logical_Switch_Port"].rows.values()}
    for name, row in by_name["Port_Group"].items():
        if name not in want.port_groups:
            row.delete()  # its ACLs are not root rows: the database drops them with it
    for name, pg in want.port_groups.items():
        _sync_port_group(idl, txn, by_name["Port_Group"].get(name), name, pg, ports)


def _sync_port_group(idl: Any, txn: Any, row: Any, name: str, pg: PortGroupRow,
                     ports: Mapping[str, Any]) -> None:  # fmt: skip
    if row is None:
        row = txn.insert(idl.tables["Port_Group"])
        row.name = name
        current: dict[AclRow, Any] = {}
    else:
        current = {_acl_of(a): a for a in row.acls}
    ids = dict(pg.external_ids)
    ids["sgflows:ports"] = ",".join(sorted(pg.ports))
    if _ids(getattr(row, "external_ids", {})) != _ids(ids):
        row.external_ids = ids
    if {p.name for p in getattr(row, "ports", [])} != pg.ports:
        row.ports = [ports[p] for p in sorted(pg.ports)]
    if set(current) == pg.acls:
        return
    keep = [current[a] for a in sorted(pg.acls) if a in current]
    for acl in sorted(pg.acls - current.keys()):
        new = txn.insert(idl.tables["ACL"])
        new.direction, new.priority, new.match, new.action = (
            acl.direction, acl.priority, acl.match, acl.action,
        )  # fmt: skip
        new.external_ids = dict(acl.external_ids)
        keep.append(new)
    row.acls = keep  # ACLs no longer referenced are garbage-collected (not root rows)


def apply(
    result: OvnResult, db: str, *, timeout: float = 60.0, dry_run: bool = False
) -> ApplyReport:
    """Make the rows sgflows owns in the Northbound database at ``db`` (``unix:…``,
    ``tcp:…``) the rows of ``result``, in one transaction; return the changes.

    ``result`` must be compiled without ``with_ports`` (the switch and ports are the
    deployment's). With ``dry_run`` nothing is written: the report says what would change.
    """
    import ovs.db.idl

    want = rows_of(result)
    if any(op["table"] == "Logical_Switch_Port" for op in result.transact()[1:]):
        raise ApplyError("apply manages security-group rows only: compile without with_ports")
    idl = _connect(db, timeout)
    try:
        began = time.monotonic()
        for _attempt in range(5):
            _check_names(idl, want)
            report = ApplyReport(diff_rows(_live_rows(idl), want))
            if dry_run or not report.changes:
                return report
            txn = ovs.db.idl.Transaction(idl)
            txn.add_comment("sgflows apply")
            _sync(idl, txn, want)
            status = txn.commit_block()
            if status in (ovs.db.idl.Transaction.SUCCESS, ovs.db.idl.Transaction.UNCHANGED):
                report.seconds = time.monotonic() - began
                LOG.info("applied %s to %s", report, db)
                return report
            if status != ovs.db.idl.Transaction.TRY_AGAIN:
                raise ApplyError(f"{db}: transaction {status}: {txn.get_error()}")
            LOG.info("%s changed under the transaction; retrying", db)
            _wait_for_update(idl)
        raise ApplyError(f"{db}: the database kept changing under the transaction")
    finally:
        idl.close()


def _wait_for_update(idl: Any) -> None:
    import ovs.poller

    seqno = idl.change_seqno
    deadline = time.monotonic() + 5
    while idl.change_seqno == seqno and time.monotonic() < deadline:
        idl.run()
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.timer_wait(100)
        poller.block()
