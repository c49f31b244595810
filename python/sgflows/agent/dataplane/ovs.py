"""The Open vSwitch dataplane of the standalone agent (``[agent] dataplane = ovs``).

It keeps the integration bridge's firewall flows equal to the model, in standalone mode (the
agent, not neutron-openvswitch-agent, owns the bridge's firewall):

* **Preconditions** (:meth:`OvsDataplane.start`): the bridge exists; its ``fail_mode`` is
  ``secure`` (or is set so with ``[ovs] set_fail_mode``); no flows of Neutron's OVS agent are
  on it (the two must not both program one bridge). Otherwise the agent refuses to start.
* **Ports** come from OVSDB (:mod:`.ovsdb`); a plugged port the controller has not described
  gets a closed filter (:mod:`.session`), the agent sets each port's ``tag`` to its local
  VLAN and makes VM ports ``no-flood`` (again after every ovs-vswitchd restart).
* **Apply**: through :class:`sgflows.switch.flowstate.FlowState` (shared with the Neutron
  driver), each change is one bundle of the session's diff under our cookie; the first apply
  of a process (and after any doubt) is a full sync that fixes only the difference
  (``FullSync.DIFF``: ``ovs-ofctl diff-flows``), so a restarted agent adopts correct flows with
  no gap, or onto an empty bridge a cold load over several connections, entry flow last. A
  refused bundle leaves the previous flows; the agent retries with backoff and reports
  ``degraded`` with the reason. After a change that removed or changed flows, the cut
  connections' conntrack entries of the local zones are flushed.
* **Recovery**: every ``check_interval`` the count of our flows on the bridge is compared
  with the session's; a difference (ovs-vswitchd restarted and lost them, someone deleted
  some) re-applies everything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import sgflows
from sgflows.switch.coldload import ColdLoadError
from sgflows.switch.conntrack import flush_cut_connections
from sgflows.switch.flowstate import FlowState, FullSync, Places

from . import openflow10
from .api import DataplaneBase, DataplaneError, DegradedListener, LocalPortsListener, counts_of
from .ovsdb import InterfaceWatcher, Snapshot
from .session import STANDALONE_OPTIONS, Built, build_model, update_of
from .settings import OvsSettings
from .switch import Switch, SwitchError, neutron_agent_flows

LOG = logging.getLogger(__name__)


class OvsDataplane(DataplaneBase):
    """Programs one bridge of a local Open vSwitch (see the module docstring)."""

    def __init__(self, settings: OvsSettings, *, switch: Switch | None = None) -> None:
        self.settings = settings
        self.switch = switch or Switch(
            settings.bridge, settings.ovsdb, timeout=settings.command_timeout
        )
        # Standalone: full syncs by diff, so no place of other owners is ever wiped.
        self.flows = FlowState(
            STANDALONE_OPTIONS,
            Places(frozenset()),
            full_sync=FullSync.DIFF,
        )
        self._info: dict[str, Any] | None = None
        self._snapshot: Snapshot | None = None
        self._first_snapshot = asyncio.Event()
        self._lock = asyncio.Lock()
        self._watcher: InterfaceWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._no_flood: set[tuple[str, int]] = set()
        self._expected = 0
        self._failure: str | None = None
        self._on_local_ports: LocalPortsListener | None = None
        self._on_degraded: DegradedListener | None = None
        self._wake = asyncio.Event()
        self.stats: dict[str, Any] = {
            "full_syncs": 0, "full_sync_lines": 0, "diffs": 0, "failures": 0,
            "restarts_detected": 0, "flows": 0, "closed_ports": 0, "last_apply_s": None,
            "last_bundle_lines": 0,
        }  # fmt: skip

    # -- life cycle --------------------------------------------------------------------------

    async def start(
        self,
        on_local_ports: LocalPortsListener | None = None,
        on_degraded: DegradedListener | None = None,
    ) -> None:
        """Watch OVSDB, check the bridge (raise :class:`DataplaneError` to refuse), then
        watch our flows. The flows are left alone until the controller's first reply."""
        self._on_local_ports, self._on_degraded = on_local_ports, on_degraded
        self._watcher = InterfaceWatcher(
            self.settings.ovsdb,
            self.settings.bridge,
            self._snapshot_arrived,
            uplinks=frozenset(self.settings.uplinks),
        )
        self._watcher.start(asyncio.get_running_loop())
        try:
            await asyncio.wait_for(self._first_snapshot.wait(), self.settings.start_timeout)
        except asyncio.TimeoutError:
            await self.stop()
            raise DataplaneError(f"OVSDB {self.settings.ovsdb} did not answer") from None
        try:
            await asyncio.to_thread(self._check_bridge)
        except BaseException:
            await self.stop()
            raise
        self._tasks.append(asyncio.ensure_future(self._check_loop()))

    async def stop(self) -> None:
        """Stop watching; the flows stay in force."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.stop)
            self._watcher = None

    def _check_bridge(self) -> None:
        snap = self._snapshot
        bridge = self.settings.bridge
        if snap is None or not snap.exists:
            raise DataplaneError(f"bridge {bridge} does not exist in OVSDB")
        if snap.fail_mode != "secure":
            if not self.settings.set_fail_mode:
                raise DataplaneError(
                    f"bridge {bridge} has fail_mode={snap.fail_mode or 'standalone'}: an "
                    "unfiltered fallback; set it to secure, or set [ovs] set_fail_mode = true"
                )
            LOG.warning("bridge %s: fail_mode %s -> secure", bridge, snap.fail_mode)
            self._call(self.switch.set_fail_mode_secure)
        neutron = neutron_agent_flows(self._call(self.switch.dump_flows))
        if neutron:
            raise DataplaneError(
                f"bridge {bridge} holds neutron-openvswitch-agent's flows ({neutron[0]}): use "
                "the sgflows firewall driver there, not the standalone agent"
            )
        missing = [u for u in self.settings.uplinks if u not in snap.port_names]
        if missing:
            LOG.warning("bridge %s: configured uplink(s) missing: %s", bridge, ", ".join(missing))

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except (SwitchError, ColdLoadError) as exc:
            raise DataplaneError(str(exc)) from exc

    # -- what the agent calls ------------------------------------------------------------------

    def local_ports(self) -> frozenset[str]:
        """Ids of the VM ports on the bridge (ready or not)."""
        return frozenset(self._snapshot.ports) if self._snapshot else frozenset()

    async def apply(self, info: dict[str, Any], *, full: bool) -> dict[str, int]:
        """Make the bridge enforce ``info`` for the ports plugged here."""
        self._info = info
        built = await self._reconcile(full=full)
        return counts_of(info, devices=built.model["devices"])

    def status(self) -> dict[str, Any]:
        snap = self._snapshot
        return {
            "bridge": self.settings.bridge,
            "ports": len(snap.ports) if snap else 0,
            "ovsdb_connections": snap.connection if snap else 0,
            "failure": self._failure,
            **self.stats,
        }

    # -- events ---------------------------------------------------------------------------------

    def _snapshot_arrived(self, snap: Snapshot) -> None:
        before = self._snapshot
        self._snapshot = snap
        self._first_snapshot.set()
        if before is not None and before.ports == snap.ports:
            return
        if self._on_local_ports is not None:
            self._on_local_ports(frozenset(snap.ports))
        if self._info is not None:
            self._wake.set()  # the check loop reconciles without waiting its interval

    async def _check_loop(self) -> None:
        """Reconcile after OVSDB changes, after a failure (with backoff), and whenever our
        flow count on the bridge is not the session's (ovs-vswitchd restarted)."""
        backoff = self.settings.check_interval
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            woken = self._wake.is_set()
            self._wake.clear()
            if self._info is None:
                continue
            try:
                if woken or self._failure is not None:
                    await self._reconcile(full=self._failure is not None)
                else:
                    await self._check_flows()
                backoff = self.settings.check_interval
            except DataplaneError as exc:
                LOG.warning("dataplane: %s (retrying)", exc)
                backoff = min(backoff * 2, 30.0)

    async def _check_flows(self) -> None:
        async with self._lock:  # not while an apply is changing both sides of the comparison
            if not self.flows.known:
                return
            try:
                count = await asyncio.to_thread(
                    self._call, self.switch.count_flows, self.settings.cookie
                )
            except DataplaneError as exc:  # ovs-vswitchd is down: say so, retry in full
                self._failed(str(exc))
                raise
            expected = self._expected
        if count != expected:
            self.stats["restarts_detected"] += 1
            self._no_flood.clear()  # a restarted ovs-vswitchd lost the ports' settings too
            LOG.warning(
                "bridge %s holds %d of our %d flows (ovs-vswitchd restarted?): full sync",
                self.settings.bridge, count, expected,
            )  # fmt: skip
            await self._reconcile(full=True)

    # -- applying -------------------------------------------------------------------------------

    async def _reconcile(self, *, full: bool) -> Built:
        async with self._lock:
            assert self._info is not None
            snap = self._snapshot or Snapshot(exists=False)
            built = build_model(self._info, snap.ports, self.settings.closed_vlan)
            try:
                await asyncio.to_thread(self._program, built, snap, full)
            except DataplaneError as exc:
                self._failed(str(exc))
                raise
            except sgflows.ModelError as exc:
                self._failed(f"model refused: {exc}")
                raise DataplaneError(f"model refused: {exc}") from exc
            self._succeeded()
            return built

    def _failed(self, reason: str) -> None:
        self.stats["failures"] += 1
        self.flows.forget()  # what the switch has is no longer certain: next is full
        self._no_flood.clear()  # and the ports' settings too (a restart loses them)
        self._failure = reason
        if self._on_degraded is not None:
            self._on_degraded(reason)

    def _succeeded(self) -> None:
        if self._failure is not None and self._on_degraded is not None:
            self._on_degraded(None)
        self._failure = None

    def _program(self, built: Built, snap: Snapshot, full: bool) -> None:
        """Tags, flows, no-flood, conntrack: in a worker thread, under the lock."""
        started = time.perf_counter()
        self._set_tags(built, snap)
        LOG.debug("tags set in %.3fs", time.perf_counter() - started)
        if full:
            self.flows.forget()
        cookie = self.settings.cookie
        change = self._call(self.flows.update, update_of(built.model), cookie, self.switch)
        if change.bundle or change.cold:
            LOG.debug("sending %d lines:\n%s", change.lines, (change.cold or change.bundle)[:4000])
        self._call(self.flows.install, change, self.switch)
        self._expected = change.flow_count
        if change.full:
            self.stats["full_syncs"] += 1
            self.stats["full_sync_lines"] += change.lines
        else:
            self.stats["diffs"] += 1
        LOG.debug("flows applied at %.3fs", time.perf_counter() - started)
        self._set_no_flood(snap)
        LOG.debug("no-flood set at %.3fs", time.perf_counter() - started)
        if change.cuts:
            flush_cut_connections(self.switch.conntrack, built.vlans.values())
        self.stats.update(
            flows=self._expected,
            closed_ports=len(built.closed),
            last_apply_s=round(time.perf_counter() - started, 6),
        )
        if change.lines:  # the size of the last change sent (nothing to do sends none)
            self.stats["last_bundle_lines"] = change.lines
        for port_id, why in sorted(built.closed.items()):
            LOG.info("port %s closed (drop everything): %s", port_id, why)

    def _set_tags(self, built: Built, snap: Snapshot) -> None:
        tags = {}
        for port_id, vlan in built.vlans.items():
            port = snap.ports[port_id]
            if port.tag != vlan:
                LOG.info("port %s (%s): tag %s -> %d", port_id, port.name, port.tag, vlan)
                tags[port.name] = vlan
        self._call(self.switch.set_tags, tags)

    def _set_no_flood(self, snap: Snapshot) -> None:
        """All new ports over one OpenFlow 1.0 connection (:mod:`.openflow10`); ports it
        cannot reach that way go through ``ovs-ofctl mod-port`` one by one."""
        ready = {(p.name, p.ofport) for p in snap.ports.values() if p.ofport is not None}
        self._no_flood &= ready
        todo = sorted(ready - self._no_flood)
        if not todo:
            return
        try:
            rest = set(openflow10.set_no_flood(self.settings.bridge, [n for n, _ in todo]))
        except openflow10.OpenFlowError as exc:
            LOG.warning("no-flood over OpenFlow 1.0 failed (%s): using ovs-ofctl", exc)
            rest = {name for name, _ in todo}
        for name in sorted(rest):
            self._call(self.switch.set_no_flood, name)
        self._no_flood.update(todo)
