"""The DPDK rte_flow dataplane of the standalone agent (``[agent] dataplane = rte_flow``).

Each VM port of ``[rte_flow] port`` faces its own DPDK ethdev port (``PORT_ID=VDEV``, e.g. a
``net_tap``); the dataplane keeps that port's rules equal to the port's single-port rendering
(:func:`sgflows.compile_rte_flow_port`, docs/rte_flow.md "Single port") through one
``sgflows-rte-flow`` installer per port (:mod:`sgflows.rte_install`: DPDK's flows belong to
the process that created them, and one EAL runs per process):

* **Start**: every installer starts and its port gets the *closed* rule set (drop in both
  directions) before the controller's first reply, so a port is never open while the agent
  waits. An installer that cannot start (no binary, DPDK refuses the port) refuses the start.
* **Apply**: each port's rules are rendered from the reply, narrowed by the probe's table when
  ``[rte_flow] probed`` names one, and moved to with the installer's ``update`` — new rules
  created first, old ones destroyed last, all or nothing (a refused create leaves the previous
  set). A rendering that did not change is not sent again.
* **Fail closed**: a port the controller does not describe, a port the driver cannot filter
  (``not offloadable``: it needs software and has no software queue, or the driver refuses the
  ``queue`` action), and a port whose rules the driver refused get the closed set, and the
  status says why (``closed``, ``not offloadable``, ``refused``). When even the closed set
  cannot be created the port is reported ``open`` and the apply fails (the agent reports
  ``degraded`` and retries): it is never silently left open.
* **Removal** (:meth:`RteFlowDataplane.remove_port`, and at stop): the port's rules destroyed
  and its installer ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import sgflows

from .api import DataplaneBase, DataplaneError, DegradedListener, LocalPortsListener, counts_of
from .settings import RteFlowSettings

LOG = logging.getLogger(__name__)


class PortInstaller(Protocol):
    """What the dataplane needs of :class:`sgflows.rte_install.Installer`."""

    def update(self, port: str, rules: Sequence[dict[str, Any]]) -> dict[str, Any]: ...
    def remove(self, port: str) -> dict[str, Any]: ...
    def close(self) -> dict[str, Any]: ...


#: Makes the installer of one port: (port id, index of the port, settings) → installer.
InstallerFactory = Callable[[str, int, RteFlowSettings], PortInstaller]


def _closed_rule(ingress: bool) -> dict[str, Any]:
    # Priorities differ: net_tap (TC flower) refuses a second rule with one pattern at one
    # priority even in the other direction ("File exists", seen in the guest).
    attr = {"group": 0, "priority": 0 if ingress else 1, "ingress": ingress, "egress": not ingress}
    return {"attr": attr, "pattern": [{"type": "eth"}], "actions": [{"type": "drop"}]}


#: Drop everything, from the VM and to it: the rule set of a port that must not be open.
CLOSED_RULES: list[dict[str, Any]] = [_closed_rule(True), _closed_rule(False)]


def real_installer(port_id: str, index: int, settings: RteFlowSettings) -> PortInstaller:
    """An ``sgflows-rte-flow`` process on the port's vdev (a file prefix of its own)."""
    from sgflows import rte_install

    vdev = settings.ports[port_id]
    queues = max(2, settings.accept_queue + 1, (settings.software_queue or 0) + 1)
    try:
        # The installer gives the port as many tx queues as rx (net_tap needs that).
        return rte_install.Installer(
            rte_install.eal_args(vdev, prefix=f"sgfagent{index}"),
            rx_queues=queues,
            binary=settings.binary,
            timeout=settings.start_timeout,
        )
    except (OSError, rte_install.InstallerError) as exc:
        raise DataplaneError(f"{port_id} ({vdev}): {exc}") from exc


def load_narrowing(path: str | None) -> dict[str, Any]:
    """``compile_rte_flow_port``'s narrowing from a probe table saved by
    ``sgflows rte-flow probe --save`` (nothing without one)."""
    if not path:
        return {}
    from sgflows import rte_probe

    try:
        with open(path, encoding="utf-8") as f:
            return rte_probe.narrowing(rte_probe.from_json(f.read()))
    except (OSError, ValueError) as exc:
        raise DataplaneError(f"[rte_flow] probed = {path}: {exc}") from exc


class _Port:
    """One port's installer and what it holds."""

    def __init__(self, installer: PortInstaller) -> None:
        self.installer = installer
        self.rules: list[dict[str, Any]] | None = None  # what the installer holds
        self.state = "starting"
        self.reason: str | None = None
        self.last_apply_s: float | None = None

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason,
                "rules": len(self.rules or []), "last_apply_s": self.last_apply_s}  # fmt: skip


class RteFlowDataplane(DataplaneBase):
    """Programs one DPDK port per VM port (see the module docstring)."""

    def __init__(
        self, settings: RteFlowSettings, *, installer: InstallerFactory | None = None
    ) -> None:
        self.settings = settings
        self._factory = installer or real_installer
        self._narrowing = load_narrowing(settings.probed)
        self._ports: dict[str, _Port] = {}
        self._lock = asyncio.Lock()
        self._on_degraded: DegradedListener | None = None
        self.stats: dict[str, Any] = {"applies": 0, "updates": 0, "unchanged": 0, "failures": 0}

    # -- life cycle --------------------------------------------------------------------------

    async def start(
        self,
        on_local_ports: LocalPortsListener | None = None,
        on_degraded: DegradedListener | None = None,
    ) -> None:
        """Start every port's installer and close the port until the controller answers."""
        self._on_degraded = on_degraded
        if not self.settings.ports:
            raise DataplaneError("[rte_flow] port: no ports configured (PORT_ID=VDEV)")
        async with self._lock:
            await asyncio.to_thread(self._start_ports)
        if on_local_ports is not None:
            on_local_ports(self.local_ports())

    def _start_ports(self) -> None:
        for index, port_id in enumerate(sorted(self.settings.ports)):
            try:
                entry = _Port(self._factory(port_id, index, self.settings))
            except DataplaneError:
                self._stop_ports()
                raise
            self._ports[port_id] = entry
            if not self._move(port_id, entry, CLOSED_RULES, "closed", "waiting for the controller"):
                self._stop_ports()
                raise DataplaneError(f"{port_id}: {entry.reason}")

    async def stop(self) -> None:
        """Remove every port's rules and end the installers."""
        async with self._lock:
            await asyncio.to_thread(self._stop_ports)

    def _stop_ports(self) -> None:
        for port_id in list(self._ports):
            self._remove(port_id)

    async def remove_port(self, port_id: str) -> dict[str, Any]:
        """A port taken off this host: its rules destroyed, its installer ended."""
        async with self._lock:
            return await asyncio.to_thread(self._remove, port_id)

    def _remove(self, port_id: str) -> dict[str, Any]:
        entry = self._ports.pop(port_id, None)
        if entry is None:
            return {"ok": False, "error": f"port {port_id} is not served"}
        answer = entry.installer.remove(port_id) if entry.rules is not None else {"ok": True}
        entry.installer.close()
        return answer

    def local_ports(self) -> frozenset[str]:
        return frozenset(self._ports)

    def status(self) -> dict[str, Any]:
        return {"profile": self.settings.profile, "stats": dict(self.stats),
                "ports": {p: e.status() for p, e in sorted(self._ports.items())}}  # fmt: skip

    # -- apply -------------------------------------------------------------------------------

    async def apply(self, info: dict[str, Any], *, full: bool) -> dict[str, int]:
        """Move every port to its rendering of ``info`` (see the module docstring)."""
        async with self._lock:
            failures = await asyncio.to_thread(self._apply_all, info, full)
        self.stats["applies"] += 1
        if failures:
            self.stats["failures"] += 1
            reason = "; ".join(failures)
            if self._on_degraded is not None:
                self._on_degraded(reason)
            raise DataplaneError(reason)
        if self._on_degraded is not None:
            self._on_degraded(None)
        return counts_of(info, self._ports)

    def _apply_all(self, info: Mapping[str, Any], full: bool) -> list[str]:
        failures = []
        for port_id, entry in sorted(self._ports.items()):
            rules, state, reason = self.rendering(info, port_id)
            if rules == entry.rules and not full:
                self.stats["unchanged"] += 1
                entry.state, entry.reason = state, reason
                continue
            if not self._move(port_id, entry, rules, state, reason):
                failures.append(f"{port_id}: {entry.reason}")
        return failures

    def rendering(self, info: Mapping[str, Any], port_id: str) -> tuple[list[Any], str, str | None]:
        """The port's rules, its state and why: the rendering, or the closed set."""
        if port_id not in (info.get("devices") or {}):
            return CLOSED_RULES, "closed", "no security-group information from the controller"
        s = self.settings
        try:
            result = sgflows.compile_rte_flow_port(
                dict(info), port_id, profile=s.profile, accept_queue=s.accept_queue,
                software_queue=s.software_queue, **self._narrowing,
            )  # fmt: skip
        except ValueError as exc:
            return CLOSED_RULES, "closed", f"cannot render: {exc}"
        if not result.offloadable:
            return CLOSED_RULES, "not offloadable", result.problem
        modes = {d["mode"] for d in result.report["directions"]} - {"unfiltered"}
        state = "offloaded" if modes <= {"offloaded"} else "partial"
        rules: list[Any] = result.document()["rules"]
        return rules, state, None

    def _move(
        self,
        port_id: str,
        entry: _Port,
        rules: list[dict[str, Any]],
        state: str,
        reason: str | None,
    ) -> bool:
        """The installer moved to ``rules`` (create first, destroy last); on a refusal, to
        the closed set. False when the port is left with rules other than wanted."""
        started = time.monotonic()
        answer = entry.installer.update(port_id, rules)
        self.stats["updates"] += 1
        entry.last_apply_s = round(time.monotonic() - started, 6)
        if answer.get("ok"):
            entry.rules, entry.state, entry.reason = rules, state, reason
            return True
        refusal = _refusal(answer)
        LOG.warning("%s: the driver refused its rules: %s", port_id, refusal)
        if rules is not CLOSED_RULES:
            if self._move(port_id, entry, CLOSED_RULES, "refused", refusal):
                return False
        if entry.rules is None:
            entry.state, entry.reason = "open", f"not even the closed rules: {refusal}"
        elif entry.rules is not CLOSED_RULES:
            entry.state = "stale"
            entry.reason = f"kept its previous rules, the closed ones refused: {refusal}"
        return False


def _refusal(answer: Mapping[str, Any]) -> str:
    if "failed_rule" in answer:
        return f"rule {answer['failed_rule']}: {answer.get('error')}"
    return str(answer.get("error") or json.dumps(answer.get("destroy_errors")))
