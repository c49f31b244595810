"""Detailed agent status: a state machine, restart detection and Neutron-compatible reports.

This implements the richer status of the Neutron RFE that was accepted but never merged: besides
Neutron's ``report_state`` fields, a report says what the agent is doing (``starting``,
``full_sync``, ``active``, ``resyncing``, or ``degraded`` with reasons), since when, how the last
sync went, whether this is the first report after a process restart, and any *custom status*
registered by agent extensions.

Custom status providers::

    reporter.add_provider("metadata-election", election.status)       # () -> dict
    reporter.add_provider("dpdk", lambda: {"offloaded": 12}, timeout=0.5)

Each provider is a zero-argument callable (plain or ``async``) returning JSON-able data. It runs
with a timeout on every report; a provider that raises, times out or returns something too large
degrades its own entry (``{"ok": false, "error": ...}``), never the report. A provider still
running from an earlier report is not started again (so a stuck one costs one thread, not one
per report).
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import inspect
import json
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from . import auth

LOG = logging.getLogger(__name__)

#: Neutron stores ``configurations`` as JSON in a 4095-character column.
CONFIGURATIONS_LIMIT = 4095

#: A custom status value larger than this (as JSON) is replaced by an error.
CUSTOM_VALUE_LIMIT = 4096

#: Most custom status providers (the controller takes at most this many ``custom`` entries).
CUSTOM_PROVIDERS_LIMIT = 64

#: Transitions a report lists (``transitions``).
RECENT_TRANSITIONS = 6

#: Keys listing what was left out of an over-long ``configurations``.
OMITTED_KEY = "omitted_keys"


class State(str, enum.Enum):
    """What the agent is doing, as reported."""

    STARTING = "starting"
    FULL_SYNC = "full_sync"
    ACTIVE = "active"
    RESYNCING = "resyncing"
    DEGRADED = "degraded"


#: Allowed phase transitions; ``degraded`` overlays any phase while a reason is set.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.FULL_SYNC}),
    State.FULL_SYNC: frozenset({State.ACTIVE}),
    State.ACTIVE: frozenset({State.RESYNCING}),
    State.RESYNCING: frozenset({State.ACTIVE}),
}


class InvalidTransition(RuntimeError):
    """A phase change the state machine does not allow."""


#: Longest degraded reason or provider error a report carries (``reports.TEXT_LIMIT``).
TEXT_LIMIT = 1024


def _clip(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def make_dirs(path: str | os.PathLike[str], mode: int = 0o750) -> None:
    """Create ``path`` and its missing parents, each with ``mode`` whatever the umask
    (``mkdir -p`` would give the parents the umask's mode); existing ones are left alone."""
    target = Path(path)
    missing = []
    while not target.is_dir():
        missing.append(target)
        if target.parent == target:
            break
        target = target.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            continue  # made by another process meanwhile
        os.chmod(directory, mode)


def utc_iso(ts: float) -> str:
    """A wall-clock time as ISO 8601 UTC with microseconds (Neutron's ``time`` format)."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f"
    )


@dataclass(frozen=True)
class Transition:
    """One logged change of the reported state."""

    at: float
    before: State
    after: State
    reason: str


@dataclass
class SyncRecord:
    """The outcome of one sync (full or incremental resync)."""

    kind: str
    started_at: float
    finished_at: float
    duration: float
    counts: dict[str, int] = field(default_factory=dict)

    def to_report(self) -> dict[str, Any]:
        """The report's ``last_sync`` field."""
        return {
            "kind": self.kind,
            "started_at": utc_iso(self.started_at),
            "finished_at": utc_iso(self.finished_at),
            "duration": round(self.duration, 6),
            "counts": dict(self.counts),
        }


class StatusMachine:
    """The agent's phase, its degraded reasons, and the history of its transitions."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self.phase = State.STARTING
        self.degraded: dict[str, str] = {}
        self.since = clock()
        self.history: deque[Transition] = deque(maxlen=32)
        self.last_sync: SyncRecord | None = None
        self.sync_counts = {"full": 0, "resync": 0, "failed": 0}
        self._sync_started: tuple[float, float] | None = None
        self._listeners: list[Callable[[Transition], None]] = []

    @property
    def state(self) -> State:
        """The reported state: ``degraded`` while any reason is set, else the phase."""
        return State.DEGRADED if self.degraded else self.phase

    @property
    def start_flag(self) -> bool:
        """Neutron's ``start_flag``: true until the first full sync has completed."""
        return self.sync_counts["full"] == 0

    def recent_transitions(self, count: int = RECENT_TRANSITIONS) -> list[list[str]]:
        """The last ``count`` changes, oldest first, as ``[at, before, after, reason]`` (reason
        clipped): where the state has been lately, for a server that only sees reports."""
        return [
            [utc_iso(t.at), t.before.value, t.after.value, _clip(t.reason, 120)]
            for t in list(self.history)[-count:]
        ]

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        """Call ``listener(transition)`` after every change of the reported state."""
        self._listeners.append(listener)

    def _changed(self, before: State, reason: str) -> None:
        after = self.state
        if after == before:
            return
        self.since = self._clock()
        record = Transition(self.since, before, after, reason)
        self.history.append(record)
        LOG.info("agent state %s -> %s (%s)", before.value, after.value, reason)
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                LOG.exception("state listener failed")

    def transition(self, phase: State, reason: str) -> None:
        """Move to ``phase``; raises :class:`InvalidTransition` if the table forbids it."""
        if phase not in TRANSITIONS.get(self.phase, frozenset()):
            raise InvalidTransition(f"{self.phase.value} -> {phase.value} is not allowed")
        before = self.state
        self.phase = phase
        self._changed(before, reason)

    def set_degraded(self, key: str, reason: str) -> None:
        """Mark a component (``controller``, ``dataplane``…) as failing."""
        reason = _clip(reason)  # the controller refuses reports with longer reasons
        if self.degraded.get(key) == reason:
            return
        before = self.state
        self.degraded[key] = reason
        if before == State.DEGRADED:
            LOG.info("agent still degraded; %s: %s", key, reason)
        self._changed(before, f"{key}: {reason}")

    def clear_degraded(self, key: str) -> None:
        """A component recovered."""
        if key not in self.degraded:
            return
        before = self.state
        del self.degraded[key]
        self._changed(before, f"{key} recovered")

    def sync_started(self, reason: str) -> str:
        """Enter ``full_sync`` (first time) or ``resyncing``; returns the sync kind."""
        if self.phase == State.STARTING:
            self.transition(State.FULL_SYNC, reason)
        elif self.phase == State.ACTIVE:
            self.transition(State.RESYNCING, reason)
        elif self._sync_started is not None:
            LOG.debug("%s already under way: %s", self.phase.value, reason)
            return "full" if self.phase == State.FULL_SYNC else "resync"
        else:
            LOG.info("%s restarted: %s", self.phase.value, reason)
        self._sync_started = (self._clock(), self._monotonic())
        return "full" if self.phase == State.FULL_SYNC else "resync"

    def sync_finished(self, counts: Mapping[str, int]) -> SyncRecord:
        """The running sync succeeded: record it and become ``active``."""
        started_wall, started_mono = self._sync_started or (self._clock(), self._monotonic())
        kind = "full" if self.phase == State.FULL_SYNC else "resync"
        record = SyncRecord(
            kind=kind,
            started_at=started_wall,
            finished_at=self._clock(),
            duration=self._monotonic() - started_mono,
            counts={str(k): int(v) for k, v in counts.items()},
        )
        self.last_sync = record
        self.sync_counts[kind] += 1
        self._sync_started = None
        if self.phase in (State.FULL_SYNC, State.RESYNCING):
            self.transition(State.ACTIVE, f"{kind} sync done in {record.duration:.3f}s")
        return record

    def sync_failed(self, error: str) -> None:
        """The running sync failed; the phase stays until a retry succeeds."""
        self.sync_counts["failed"] += 1
        self._sync_started = None
        LOG.warning("%s failed: %s", self.phase.value, error)


def fit_configurations(
    conf: Mapping[str, Any], limit: int = CONFIGURATIONS_LIMIT
) -> tuple[dict[str, Any], list[str]]:
    """``conf`` made to fit ``limit`` characters of JSON, and the keys that had to go.

    Whole entries are dropped, largest first, and listed under ``omitted_keys``: the result is
    always valid JSON that fits, never a string cut in the middle.
    """

    def size(obj: Any) -> int:
        return len(json.dumps(obj, sort_keys=True, default=str))

    result = {str(k): v for k, v in conf.items()}
    if size(result) <= limit:
        return result, []
    by_size = sorted(result, key=lambda k: (size({k: result[k]}), k), reverse=True)
    omitted: list[str] = []
    for key in by_size:
        del result[key]
        omitted.append(key)
        result[OMITTED_KEY] = sorted(omitted)
        if size(result) <= limit:
            break
    while size(result) > limit and result.get(OMITTED_KEY):
        # Even the list of names is too long: keep as many as fit and count the rest.
        names = result[OMITTED_KEY]
        result[OMITTED_KEY] = names[: len(names) // 2]
        result["omitted_count"] = len(omitted)
    if size(result) > limit:
        result = {"omitted_count": len(omitted)}
    LOG.warning(
        "configurations exceed %d characters; omitted %d entries: %s",
        limit,
        len(omitted),
        ", ".join(omitted[:10]),
    )
    return result, omitted


StatusProvider = Callable[[], Union[Any, Awaitable[Any]]]


@dataclass
class _Provider:
    name: str
    func: StatusProvider
    timeout: float
    running: asyncio.Future[Any] | None = None


class RestartMarker:
    """A small state file telling a process whether it is a restart, and how the last one ended.

    On :meth:`load` the previous contents (if any) are read and the file is rewritten for this
    process with ``clean_stop: false``; :meth:`mark_clean_stop` flips that on a clean shutdown.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.previous: dict[str, Any] | None = None
        self.current: dict[str, Any] = {}

    def load(self, *, instance_uuid: str, clock: Callable[[], float] = time.time) -> None:
        """Read the previous run's record and write this run's."""
        try:
            data = json.loads(self.path.read_text())
            self.previous = data if isinstance(data, dict) else {}
        except FileNotFoundError:
            self.previous = None
        except (OSError, ValueError) as exc:
            LOG.warning(
                "state file %s unreadable (%s); treating this start as a restart", self.path, exc
            )
            self.previous = {}
        self.current = {
            "pid": os.getpid(),
            "uuid": instance_uuid,
            "started_at": clock(),
            "clean_stop": False,
            "starts": int((self.previous or {}).get("starts", 0)) + 1,
        }
        self._write()

    @property
    def restarted(self) -> bool:
        """True if a process ran on this host (with this state file) before us."""
        return self.previous is not None

    @property
    def previous_stop(self) -> str | None:
        """``clean``, ``unclean`` (crash or kill -9) or ``None`` on a first start."""
        if self.previous is None:
            return None
        return "clean" if self.previous.get("clean_stop") else "unclean"

    def mark_clean_stop(self) -> None:
        """Record that this process is shutting down cleanly."""
        self.current["clean_stop"] = True
        self._write()

    def _write(self) -> None:
        make_dirs(self.path.parent)
        auth.write_private_file(self.path, json.dumps(self.current, sort_keys=True).encode())


def jittered(interval: float, jitter: float, rng: random.Random | None = None) -> float:
    """``interval`` scaled by a uniform factor in ``[1 - jitter, 1 + jitter]``."""
    r = rng or random
    return max(0.0, interval * (1 + r.uniform(-jitter, jitter)))


class StatusReporter:
    """Builds ``report_state`` payloads from the state machine and the registered providers."""

    def __init__(
        self,
        *,
        host: str,
        machine: StatusMachine,
        configurations: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        agent_type: str = "sgflows agent",
        binary: str = "sgflows-agent",
        topic: str = "sgflows-agent",
        provider_timeout: float = 2.0,
        marker: RestartMarker | None = None,
        instance_uuid: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.machine = machine
        self._configurations = configurations or {}
        self.agent_type = agent_type
        self.binary = binary
        self.topic = topic
        self.provider_timeout = provider_timeout
        self.marker = marker
        self.uuid = instance_uuid or str(uuid.uuid4())
        self._clock = clock
        self._providers: dict[str, _Provider] = {}
        #: True until a report has been accepted by the controller after a restart.
        self.restarted = bool(marker and marker.restarted)
        self.reports_accepted = 0

    # -- custom status ----------------------------------------------------------------------

    def add_provider(
        self, name: str, provider: StatusProvider, *, timeout: float | None = None
    ) -> None:
        """Register ``provider()`` under ``custom[name]`` in every report.

        ``provider`` takes no arguments and returns JSON-able data (a dict, typically); it may be
        ``async``. It runs with ``timeout`` (default: the reporter's ``provider_timeout``).
        Registering a name again replaces the provider.
        """
        if not name or not isinstance(name, str) or len(name) > 255:
            raise ValueError("a status provider needs a name of 1 to 255 characters")
        if not callable(provider):
            raise TypeError(f"status provider {name!r} is not callable")
        if name not in self._providers and len(self._providers) >= CUSTOM_PROVIDERS_LIMIT:
            raise ValueError(f"at most {CUSTOM_PROVIDERS_LIMIT} status providers")
        self._providers[name] = _Provider(name, provider, timeout or self.provider_timeout)

    def remove_provider(self, name: str) -> None:
        """Stop reporting ``custom[name]``."""
        self._providers.pop(name, None)

    @property
    def providers(self) -> list[str]:
        """Registered provider names."""
        return sorted(self._providers)

    async def _run_provider(self, p: _Provider) -> dict[str, Any]:
        if p.running is not None and not p.running.done():
            return {"ok": False, "error": f"still running since an earlier report (>{p.timeout}s)"}
        loop = asyncio.get_running_loop()
        try:
            if inspect.iscoroutinefunction(p.func):
                value = await asyncio.wait_for(p.func(), p.timeout)
            else:
                fut = loop.run_in_executor(None, p.func)
                p.running = fut
                value = await asyncio.wait_for(asyncio.shield(fut), p.timeout)
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, p.timeout)
        except asyncio.TimeoutError:
            LOG.warning("status provider %s timed out after %.2fs", p.name, p.timeout)
            return {"ok": False, "error": f"timed out after {p.timeout}s"}
        except Exception as exc:
            LOG.warning("status provider %s failed: %s", p.name, exc)
            return {"ok": False, "error": _clip(f"{type(exc).__name__}: {exc}")}
        from .reports import plain_json  # (reports imports this module)

        try:
            encoded = json.dumps(value, sort_keys=True, allow_nan=False)
            plain_json("value", json.loads(encoded))  # the controller's own check (depth...)
        except (TypeError, ValueError, RecursionError) as exc:
            return {"ok": False, "error": _clip(f"not plain JSON: {exc}")}
        if len(encoded) > CUSTOM_VALUE_LIMIT:
            return {"ok": False, "error": f"value of {len(encoded)} characters is too large"}
        return {"ok": True, "value": json.loads(encoded)}

    async def custom_status(self) -> dict[str, Any]:
        """Run every provider concurrently."""
        providers = list(self._providers.values())
        results = await asyncio.gather(*(self._run_provider(p) for p in providers))
        return {p.name: r for p, r in zip(providers, results)}

    # -- reports ----------------------------------------------------------------------------

    def configurations(self) -> dict[str, Any]:
        """The ``configurations`` field, fitted to Neutron's 4095 characters."""
        raw = self._configurations() if callable(self._configurations) else self._configurations
        fitted, _omitted = fit_configurations(raw)
        return fitted

    async def build_report(self) -> dict[str, Any]:
        """One ``report_state`` payload."""
        m = self.machine
        return {
            "agent_type": self.agent_type,
            "binary": self.binary,
            "host": self.host,
            "topic": self.topic,
            "configurations": self.configurations(),
            "start_flag": m.start_flag,
            "uuid": self.uuid,
            "time": utc_iso(self._clock()),
            "state": m.state.value,
            "phase": m.phase.value,
            "state_since": utc_iso(m.since),
            "degraded_reasons": dict(m.degraded),
            "restarted": self.restarted,
            "previous_stop": self.marker.previous_stop if self.marker and self.restarted else None,
            "last_sync": m.last_sync.to_report() if m.last_sync else None,
            "syncs": dict(m.sync_counts),
            "transitions": m.recent_transitions(),
            "custom": await self.custom_status(),
        }

    def accepted(self) -> None:
        """The controller took a report: the restart has been announced."""
        self.reports_accepted += 1
        self.restarted = False
