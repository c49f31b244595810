"""The schema of an agent's ``report_state`` payload, checked before a report touches state.

A report comes from the network: whatever an agent sends is checked here field by field (types,
lengths, counts, nesting) and copied into a fresh dict of plain JSON values, so what the
controller stores, persists and hands to ``sgflows status`` is always JSON it can encode. A report
that breaks the schema raises :class:`ReportError` naming the offending field; the RPC layer turns
it into ``InvalidParams`` (400) for that one call, and nothing of it is kept.

Fields the schema does not know are dropped (a newer agent may send more), never stored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from .status import CONFIGURATIONS_LIMIT, CUSTOM_VALUE_LIMIT, State

LOG = logging.getLogger(__name__)

#: Longest host name (DNS) and other short identifiers.
NAME_LIMIT = 255
#: Longest free-text field (an error or degraded reason).
TEXT_LIMIT = 1024
#: Most entries in ``degraded_reasons``, ``custom``, ``syncs`` and ``last_sync.counts``.
ENTRIES_LIMIT = 64
#: Deepest nesting inside a custom status value.
DEPTH_LIMIT = 16
#: What one custom entry may take as JSON: the value limit plus its ``{"ok", "value"}`` wrapping.
CUSTOM_ENTRY_LIMIT = CUSTOM_VALUE_LIMIT + 256

STATES = frozenset(s.value for s in State)
PHASES = STATES - {State.DEGRADED.value}
PREVIOUS_STOPS = frozenset({"clean", "unclean"})


class ReportError(ValueError):
    """A report does not follow the schema; ``field`` is the path of the offending value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"report field {field}: {problem}")
        self.field = field
        self.problem = problem


def _text(limit: int) -> Callable[[str, Any], str]:
    def check(field: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ReportError(field, f"must be a string, not {type(value).__name__}")
        if len(value) > limit:
            raise ReportError(field, f"longer than {limit} characters")
        return value

    return check


def _one_of(choices: frozenset[str]) -> Callable[[str, Any], str]:
    def check(field: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ReportError(field, f"must be one of {', '.join(sorted(choices))}")
        return str(value)

    return check


def _optional(inner: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def check(field: str, value: Any) -> Any:
        return None if value is None else inner(field, value)

    return check


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ReportError(field, f"must be true or false, not {type(value).__name__}")
    return value


def _count(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ReportError(field, "must be a non-negative integer")
    return value


def _seconds(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(field, "must be a number")
    if not math.isfinite(value) or value < 0:
        raise ReportError(field, "must be a finite non-negative number")
    return float(value)


def _map(field: str, value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ReportError(field, f"must be an object, not {type(value).__name__}")
    if len(value) > ENTRIES_LIMIT:
        raise ReportError(field, f"more than {ENTRIES_LIMIT} entries")
    for key in value:
        if not isinstance(key, str) or not key or len(key) > NAME_LIMIT:
            raise ReportError(field, f"keys must be strings of 1 to {NAME_LIMIT} characters")
    return value


def _map_of(inner: Callable[[str, Any], Any]) -> Callable[[str, Any], dict[str, Any]]:
    def check(field: str, value: Any) -> dict[str, Any]:
        return {k: inner(f"{field}.{k}", v) for k, v in _map(field, value).items()}

    return check


def plain_json(field: str, value: Any, depth: int = 0) -> Any:
    """``value`` if it is plain JSON (no bytes, no NaN, string keys, bounded depth), copied."""
    if depth > DEPTH_LIMIT:
        raise ReportError(field, f"nested deeper than {DEPTH_LIMIT} levels")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise ReportError(field, "integer out of range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ReportError(field, "NaN and infinities are not JSON")
        return value
    if isinstance(value, (list, tuple)):
        return [plain_json(f"{field}[{i}]", v, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ReportError(field, "object keys must be strings")
            out[k] = plain_json(f"{field}.{k}", v, depth + 1)
        return out
    raise ReportError(field, f"{type(value).__name__} is not a JSON value")


def json_length(value: Any) -> int:
    """Characters of ``value`` as compact JSON (how Neutron measures ``configurations``)."""
    return len(json.dumps(value, sort_keys=True, separators=(",", ":")))


def _configurations(field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ReportError(field, f"must be an object, not {type(value).__name__}")
    conf = plain_json(field, value)
    # The agent fits its own with status.fit_configurations; the controller only checks.
    if json_length(conf) > CONFIGURATIONS_LIMIT:
        raise ReportError(field, f"longer than {CONFIGURATIONS_LIMIT} characters as JSON")
    assert isinstance(conf, dict)
    return conf


def _custom_entry(field: str, value: Any) -> dict[str, Any]:
    entry = _map(field, value)
    unknown = set(entry) - {"ok", "value", "error"}
    if unknown:
        raise ReportError(field, f"unknown keys {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {"ok": _bool(f"{field}.ok", entry.get("ok"))}
    if "value" in entry:
        out["value"] = plain_json(f"{field}.value", entry["value"])
    if "error" in entry:
        out["error"] = _text(TEXT_LIMIT)(f"{field}.error", entry["error"])
    if json_length(out) > CUSTOM_ENTRY_LIMIT:
        raise ReportError(field, f"longer than {CUSTOM_ENTRY_LIMIT} characters as JSON")
    return out


_TIME = _text(64)

_LAST_SYNC_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "kind": _one_of(frozenset({"full", "resync"})),
    "started_at": _TIME,
    "finished_at": _TIME,
    "duration": _seconds,
    "counts": _map_of(_count),
}


def _last_sync(field: str, value: Any) -> dict[str, Any]:
    sync = _map(field, value)
    return {
        name: check(f"{field}.{name}", sync[name])
        for name, check in _LAST_SYNC_FIELDS.items()
        if name in sync
    }


def _transitions(field: str, value: Any) -> list[list[str]]:
    """``[[at, before, after, reason], ...]``: at most ``ENTRIES_LIMIT`` recent changes."""
    if not isinstance(value, list) or len(value) > ENTRIES_LIMIT:
        raise ReportError(field, f"must be a list of at most {ENTRIES_LIMIT} transitions")
    out = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, list) or len(item) != 4:
            raise ReportError(where, "must be [at, before, after, reason]")
        at, before, after, reason = item
        out.append([_TIME(where, at), _one_of(STATES)(where, before),
                    _one_of(STATES)(where, after), _text(TEXT_LIMIT)(where, reason)])  # fmt: skip
    return out


#: Every field a report may carry, with its check. ``host`` is also required.
FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "host": _text(NAME_LIMIT),
    "agent_type": _text(NAME_LIMIT),
    "binary": _text(NAME_LIMIT),
    "topic": _text(NAME_LIMIT),
    "configurations": _configurations,
    "start_flag": _bool,
    "uuid": _text(64),
    "time": _TIME,
    "state": _one_of(STATES),
    "phase": _one_of(PHASES),
    "state_since": _TIME,
    "degraded_reasons": _map_of(_text(TEXT_LIMIT)),
    "restarted": _bool,
    "previous_stop": _optional(_one_of(PREVIOUS_STOPS)),
    "last_sync": _optional(_last_sync),
    "syncs": _map_of(_count),
    "transitions": _transitions,
    "custom": _map_of(_custom_entry),
}


def validate_report(report: Any) -> dict[str, Any]:
    """A checked copy of ``report`` holding only known fields; :class:`ReportError` if bad."""
    if not isinstance(report, Mapping):
        raise ReportError("(report)", f"must be an object, not {type(report).__name__}")
    host = report.get("host")
    if not isinstance(host, str) or not host:
        raise ReportError("host", "a non-empty string is required")
    out = {name: check(name, report[name]) for name, check in FIELDS.items() if name in report}
    dropped = sum(1 for k in report if k not in FIELDS)
    if dropped:
        LOG.debug("report from %s: %d unknown fields dropped", host, dropped)
    return out
