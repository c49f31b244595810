"""The ``sgflows agent`` service, and the ``controller`` and ``status`` commands.

The agent keeps one authenticated connection to the controller
(:class:`~sgflows.agent.rpc.ReconnectingClient`), subscribes to notifications, keeps its
dataplane in sync and reports its status every ``report_interval`` (with jitter).

The dataplane is chosen by ``[agent] dataplane`` (:mod:`sgflows.agent.dataplane`): ``ovs``
programs the local Open vSwitch bridge (:class:`~sgflows.agent.dataplane.ovs.OvsDataplane`:
OVSDB port discovery, session diffs as bundles, fail closed, recovery); ``file`` and ``none``
program nothing and are for tests and dry runs. The Open vSwitch dataplane starts before the
agent connects (it refuses an unsafe bridge, and the agent then does not start), tells the
agent about ports plugged on the bridge (the agent asks the controller for their
security-group information, all new ones in one call), and reports ``degraded`` with its
reason while the switch cannot be programmed; what it applied stays in force while the
controller is unreachable.

When it resyncs, in full:

* after every (re)connection: notifications sent while it was away are lost;
* on a generation gap, or a notification from a new controller epoch;
* when ``report_state`` answers ``revived``, or ``new`` although it had reported before
  (the controller forgot it);
* after a failed update or dataplane error (retried with backoff).

Other notifications refresh only what they concern; binding (de)activations are acted on for
this agent's host only.

With ``[metadata] enabled``, the agent also runs the IPv6 metadata election
(:mod:`sgflows.agent.election`) for each configured network: the elections start with the
agent, each reports as custom status ``metadata-election/<network id>``, and they step down
(address removed, proxy stopped) before the agent disconnects at shutdown. A network listed in
``[metadata] ports`` is bound only while the controller binds that port to this host and the
dataplane applied it. :func:`start_metadata_privsep` starts the privileged daemon before the
event loop (``agent_command`` does it).

Click commands for the ``sgflows`` group: :data:`agent_command`, :data:`controller_command`,
:data:`status_command`; plain entry points: :func:`main`, :func:`controller_main`,
:func:`status_main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from . import auth, config, controller, election, rpc, status, store, transport
from .dataplane import Dataplane, DataplaneError, FileDataplane, NullDataplane
from .dataplane.api import DataplaneBase
from .metadata_proxy import CommandProxy, HTTPMetadataProxy, ProxyHook

LOG = logging.getLogger(__name__)

#: The port attribute naming the host a Neutron port is bound to (``portbindings.HOST_ID``).
NEUTRON_BINDING_HOST = "binding:host_id"

#: Where ``sgflows status`` looks without ``--controller``: the controller's default socket.
DEFAULT_CONTROLLER = config.CONTROLLER_OPTS[0].default[0]


def make_dataplane(cfg: config.AgentConfig) -> Dataplane:
    """The dataplane ``[agent] dataplane`` names."""
    if cfg.dataplane == "ovs":
        from .dataplane.ovs import OvsDataplane  # needs the Rust core and the ovs library

        return OvsDataplane(cfg.ovs)
    if cfg.dataplane == "rte_flow":
        from .dataplane.rte_flow import RteFlowDataplane  # needs the Rust core

        return RteFlowDataplane(cfg.rte_flow)
    if cfg.dataplane == "file":
        return FileDataplane(Path(cfg.state_dir) / "applied.json")
    return NullDataplane()


def metadata_proxy_hook(md: config.MetadataConfig, name: str) -> ProxyHook | None:
    """The proxy a leader starts, from ``[metadata] proxy`` (``name``: what ``http`` answers
    as ``server`` when it has no upstream)."""
    if md.proxy == "http":
        return HTTPMetadataProxy(name, upstream=md.upstream)
    if md.proxy == "command":
        if not md.proxy_argv:
            raise config.ConfigError("[metadata] proxy = command needs proxy_argv")
        return CommandProxy(md.proxy_argv)
    return None


def start_metadata_privsep(md: config.MetadataConfig) -> None:
    """Start the metadata elections' privsep daemon, then drop capabilities if configured.

    Call it before the event loop and its signal handlers exist, as the standalone election
    agent does: the daemon inherits an ignored SIGTERM/SIGINT, so it outlives the signal a
    service manager sends to the whole process group and the agent can still step down through
    it (it exits when the agent closes the channel). ``[sgflows_metadata_privsep]`` (e.g.
    ``helper_command``) is read from the agent's own configuration files. An ``Agent`` run
    without it (in-process) starts the daemon on its first privileged call, through the helper.
    """
    from oslo_config import cfg as oslo_cfg
    from oslo_privsep import priv_context

    from . import privileged

    oslo_cfg.CONF(
        [arg for path in md.config_files for arg in ("--config-file", path)],
        project="sgflows",
        default_config_files=[],
        default_config_dirs=[],
    )
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        privileged.start_daemon(
            priv_context.Method.FORK if md.privsep == "fork" else priv_context.Method.ROOTWRAP
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    LOG.info("metadata privsep daemon started (%s)", md.privsep)
    if md.drop_capabilities:
        election.drop_capabilities()
        LOG.info("capabilities dropped")


def stop_metadata_privsep() -> None:
    """Close the channel to the privsep daemon (it exits), waiting a bounded time for it;
    one that does not exit is ended (SIGTERM, then SIGKILL: ``privileged.stop_daemon``)."""
    from . import privileged

    privileged.stop_daemon()


class Agent:
    """One agent: connection, subscriptions, sync, status reports (and, when configured, the
    IPv6 metadata elections of its networks)."""

    def __init__(
        self,
        cfg: config.AgentConfig,
        *,
        dataplane: Dataplane | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.host = cfg.host
        self._rng = rng or random.Random()
        state_dir = Path(cfg.state_dir)
        self.machine = status.StatusMachine()
        self.marker = status.RestartMarker(state_dir / "agent-state.json")
        self.reporter = status.StatusReporter(
            host=cfg.host,
            machine=self.machine,
            configurations=self._configurations,
            provider_timeout=cfg.status_provider_timeout,
            marker=self.marker,
        )
        self.dataplane = dataplane if dataplane is not None else make_dataplane(cfg)
        self.static_devices = bool(cfg.devices)
        self.devices: set[str] = set(cfg.devices)
        self.groups: set[str] = set()
        self._asked: frozenset[str] = frozenset()  # devices the last sync asked about
        self.epoch: str | None = None
        self.generation = 0
        self.counters = {"notifications": 0, "gaps": 0, "refreshes": 0, "ignored": 0}
        self.last_reply: str | None = None
        self.replies: dict[str, int] = {}
        #: Reports that got no reply (bus or server gone, or the reply lost to the timeout).
        #: The server may still have processed one: its ``revived`` is then never seen, so the
        #: resync after an outage comes from the reconnection (``_on_connected``), not from it.
        self.report_failures = 0
        self._full_wanted = True
        self._sync_reason = "start"
        self._sync_event = asyncio.Event()
        self._report_event = asyncio.Event()
        self._last_report = -float("inf")  # loop time of the last report sent
        # Every change of the reported state is reported at once (rate-limited in
        # _report_loop), so `sgflows status` does not lag a sync by a report interval.
        self.machine.add_listener(lambda _transition: self._report_event.set())
        self._sync_backoff = rpc.Backoff(cfg.backoff_initial, cfg.backoff_max, rng=self._rng)
        self._retry_handle: asyncio.TimerHandle | None = None
        # IPv6 metadata elections ([metadata]); started by run().
        self.metadata: election.MetadataElectionManager | None = None
        self._metadata_bound: dict[str, bool] = {}
        if cfg.metadata.enabled:
            self.metadata = election.MetadataElectionManager(
                proxy_hook=metadata_proxy_hook(cfg.metadata, cfg.host),
                timers=cfg.metadata.timers,
            )
        #: The link to the server: the msgpack control plane or Neutron's bus (see transport).
        self.client: transport.Transport = transport.make_transport(
            cfg,
            transport.Callbacks(
                on_connected=self._on_connected,
                on_disconnected=self._on_disconnected,
                on_notification=self._on_notification,
            ),
            rng=self._rng,
        )

    # -- the dataplane's own events --------------------------------------------------------------

    async def _start_dataplane(self) -> None:
        if not isinstance(self.dataplane, DataplaneBase):
            return
        await self.dataplane.start(self._local_ports_changed, self._dataplane_degraded)
        self.add_status_provider("dataplane", self.dataplane.status)

    def _local_ports_changed(self, ports: frozenset[str]) -> None:
        """Ports plugged on the switch that the last sync did not ask about: one refresh asks
        the controller for all of them at once (a batch, not one call per port)."""
        new = ports - self._asked
        if new and self.client.connected:  # else the sync on connecting asks about them
            LOG.info("%d new port(s) on the switch: asking the controller", len(new))
            self.request_sync("new ports on the switch", full=False)

    def _dataplane_degraded(self, reason: str | None) -> None:
        if reason is None:
            self.machine.clear_degraded("dataplane")
        else:
            self.machine.set_degraded("dataplane", reason)

    def add_status_provider(
        self, name: str, provider: status.StatusProvider, *, timeout: float | None = None
    ) -> None:
        """Report ``provider()`` as ``custom[name]`` (see :meth:`StatusReporter.add_provider`)."""
        self.reporter.add_provider(name, provider, timeout=timeout)

    def _configurations(self) -> dict[str, Any]:
        return {
            **self.client.describe(),
            "report_interval": self.cfg.report_interval,
            "dataplane": type(self.dataplane).__name__,
            "devices": sorted(self.devices),
            "notifications": dict(self.counters),
            "report_replies": dict(self.replies),
            "report_failures": self.report_failures,
            **(
                {"metadata_networks": sorted(n.network_id for n in self.cfg.metadata.networks)}
                if self.metadata is not None
                else {}
            ),
        }

    # -- IPv6 metadata elections --------------------------------------------------------------

    def _start_metadata(self) -> None:
        if self.metadata is None:
            return
        for spec in self.cfg.metadata.networks:
            elected = self.metadata.add_network(dataclasses.replace(spec))
            self.add_status_provider(f"metadata-election/{spec.network_id}", elected.status)
            if spec.network_id in self.cfg.metadata.ports:
                self._metadata_bound[spec.network_id] = spec.bound
            LOG.info(
                "metadata election for %s on %s/%s started",
                spec.network_id,
                spec.namespace,
                spec.interface,
            )

    async def _stop_metadata(self) -> None:
        """Step down everywhere (address removed, proxy stopped), in parallel."""
        if self.metadata is None or not self.metadata.elections:
            return
        LOG.info("stepping down from %d metadata election(s)", len(self.metadata.elections))
        await asyncio.to_thread(self.metadata.stop)
        for network_id in self.metadata.elections:
            self.reporter.remove_provider(f"metadata-election/{network_id}")
        LOG.info("metadata elections stopped")

    def _set_metadata_bound(self, network_id: str, bound: bool, why: str) -> None:
        if self.metadata is None or self._metadata_bound.get(network_id) == bound:
            return
        self._metadata_bound[network_id] = bound
        LOG.info("metadata network %s %s (%s)", network_id, "bound" if bound else "unbound", why)
        self.metadata.set_bound(network_id, bound)

    def _metadata_port_gone(self, port_id: str, why: str) -> None:
        """Unbind at once the networks whose port left this host (no need to wait a sync)."""
        for network_id, port in self.cfg.metadata.ports.items():
            if port == port_id:
                self._set_metadata_bound(network_id, False, why)

    def _metadata_after_sync(self, info: dict[str, Any]) -> None:
        """A network listed in ``[metadata] ports`` is bound while its port is one of this
        host's devices and the dataplane applied it (it is wired)."""
        applied = info.get("devices") or {}
        for network_id, port_id in self.cfg.metadata.ports.items():
            bound = port_id in self.devices and port_id in applied
            self._set_metadata_bound(network_id, bound, "sync")

    # -- running ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly."""
        self.marker.load(instance_uuid=self.reporter.uuid)
        self.reporter.restarted = self.marker.restarted
        if self.marker.restarted:
            LOG.info("agent restarted (previous stop: %s)", self.marker.previous_stop)
        LOG.info("agent %s starting; %s", self.host, self.client.describe())
        tasks: list[asyncio.Future[None]] = []
        try:
            await self._start_dataplane()
            self._start_metadata()
            self.client.start()
            tasks += [
                asyncio.ensure_future(self._sync_loop()),
                asyncio.ensure_future(self._report_loop()),
            ]
            await stop.wait()
        finally:
            LOG.info("agent %s stopping", self.host)
            # Step down first: a standby on another node takes over while we disconnect.
            try:
                await self._stop_metadata()
            except Exception:
                LOG.exception("stopping the metadata elections failed")
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._retry_handle is not None:
                self._retry_handle.cancel()
            await self.client.stop()
            if isinstance(self.dataplane, DataplaneBase):
                await self.dataplane.stop()
            self.marker.mark_clean_stop()
            LOG.info("agent %s stopped", self.host)

    def request_sync(self, reason: str, *, full: bool = True) -> None:
        """Ask the sync loop for a full resync (or a refresh of the current devices)."""
        if full:
            self._full_wanted = True
        self._sync_reason = reason
        self._sync_event.set()

    # -- connection events ------------------------------------------------------------------

    async def _on_connected(self, client: transport.Caller) -> None:
        sub = await client.call("subscribe", self.host)
        self.epoch = str(sub["epoch"])
        self.generation = int(sub["generation"])
        # Tell the server what the state was while we were away (starting, or degraded with
        # its reason) before resyncing: on Neutron's bus that report is the only way `agent
        # show` ever sees those states. Its reply may ask for a sync; nothing runs it before
        # the lines below (no await between), so it is the same one sync.
        await self.report_once(client)
        # Whatever happened while we were away is unknown: resync in full. The phase changes
        # before the degraded reason clears, so the state goes degraded -> resyncing directly.
        self.machine.sync_started("connected to the controller")
        self.machine.clear_degraded("controller")
        self.request_sync("connected to the controller")
        self._report_event.set()

    def _on_disconnected(self, reason: str) -> None:
        self.epoch = None
        self.machine.set_degraded("controller", f"unreachable: {reason}")

    def _on_notification(self, method: str, params: list[Any]) -> None:
        self.counters["notifications"] += 1
        if not params or not isinstance(params[0], dict):
            LOG.warning("malformed %s notification; resyncing", method)
            self.request_sync(f"malformed {method} notification")
            return
        payload: dict[str, Any] = params[0]
        epoch, generation = payload.get("epoch"), payload.get("generation")
        if not isinstance(generation, int) or not isinstance(epoch, str):
            LOG.warning("%s without epoch or generation; resyncing", method)
            self.request_sync(f"unnumbered {method} notification")
            return
        if epoch != self.epoch:
            # A different controller instance numbers from scratch: adopt it and resync.
            self.counters["gaps"] += 1
            LOG.warning("%s from a new controller epoch %s; resyncing", method, epoch)
            self.epoch, self.generation = epoch, generation
            self.request_sync("controller epoch changed")
            return
        expected = self.generation + 1
        self.generation = max(self.generation, generation)
        if generation != expected:
            self.counters["gaps"] += 1
            LOG.warning(
                "generation gap: expected %d, got %d (%s); resyncing", expected, generation, method
            )
            self.request_sync(f"generation gap {expected}..{generation}")
            return
        self._handle(method, payload)

    def _handle(self, method: str, payload: dict[str, Any]) -> None:
        if method in (controller.RULE_UPDATED, controller.MEMBER_UPDATED):
            groups = set(payload.get("security_groups", []))
            if groups & self.groups or not self.groups:
                self.request_sync(method, full=False)
                return
        elif method == controller.PORT_UPDATE:
            port = payload.get("port") or {}
            if port.get("id") in self.devices:
                self.request_sync(method, full=False)
                return
            if not self.static_devices and port.get(NEUTRON_BINDING_HOST) == self.host:
                # Neutron's port_update after binding a port here (no binding_activate then).
                LOG.info("port %s bound to this host", port.get("id"))
                self.devices.add(str(port.get("id")))
                self.request_sync(method, full=False)
                return
        elif method == controller.PORT_DELETE:
            self._metadata_port_gone(str(payload.get("port_id")), "port deleted")
            if payload.get("port_id") in self.devices:
                self.devices.discard(payload["port_id"])
                self.request_sync(method, full=False)
                return
        elif method in (controller.BINDING_ACTIVATE, controller.BINDING_DEACTIVATE):
            if payload.get("host") == self.host:
                port_id = str(payload.get("port_id"))
                if method == controller.BINDING_ACTIVATE:
                    LOG.info("binding of port %s activated on this host", port_id)
                    self.devices.add(port_id)
                else:
                    LOG.info("binding of port %s deactivated on this host", port_id)
                    self.devices.discard(port_id)
                    self._metadata_port_gone(port_id, "binding deactivated")
                self.request_sync(method, full=False)
                return
        else:
            LOG.warning("unknown notification %s ignored", method)
        self.counters["ignored"] += 1
        LOG.debug("%s does not concern this agent", method)

    # -- syncing ----------------------------------------------------------------------------

    async def _sync_loop(self) -> None:
        while True:
            await self._sync_event.wait()
            self._sync_event.clear()
            full, reason = self._full_wanted, self._sync_reason
            self._full_wanted = False
            try:
                await self._sync(full, reason)
                self._sync_backoff.reset()
            except asyncio.CancelledError:
                raise
            except (rpc.RPCError, DataplaneError) as exc:
                if isinstance(exc, DataplaneError):
                    self.machine.set_degraded("dataplane", str(exc))
                if full:
                    self.machine.sync_failed(str(exc))
                else:
                    LOG.warning("refresh failed (%s); resyncing in full", exc)
                self._full_wanted = True
                self._sync_reason = f"retry after: {exc}"
                delay = self._sync_backoff.next_delay()
                loop = asyncio.get_running_loop()
                self._retry_handle = loop.call_later(delay, self._sync_event.set)
            except Exception:
                LOG.exception("sync failed unexpectedly")
                self._full_wanted = True

    async def _sync(self, full: bool, reason: str) -> None:
        if full:
            self.machine.sync_started(reason)
            if not self.static_devices:
                self.devices = set(await self.client.call("devices_for_host", self.host))
        asked = frozenset(self.devices) | self._local_ports()
        info = await self.client.call("security_group_info_for_devices", sorted(asked))
        self._asked = asked
        counts = await self.dataplane.apply(info, full=full)
        self.machine.clear_degraded("dataplane")
        self._metadata_after_sync(info)
        self.groups = set(info.get("security_groups", {}))
        for members in (info.get("sg_member_ips") or {}).keys():
            self.groups.add(members)
        if full:
            self.machine.sync_finished(counts)
        else:
            self.counters["refreshes"] += 1
            LOG.info("refreshed after %s: %s", reason, counts)

    def _local_ports(self) -> frozenset[str]:
        """Ports plugged on the switch: asked about even before the controller binds them
        here (the controller answers only for ports with a binding on this host)."""
        if isinstance(self.dataplane, DataplaneBase) and not self.static_devices:
            return self.dataplane.local_ports()
        return frozenset()

    # -- reporting --------------------------------------------------------------------------

    async def _report_loop(self) -> None:
        """A report every (jittered) ``report_interval``, and one after each state change, but
        never two within ``report_min_interval``: a flapping state costs the controller at
        most one report per that interval."""
        loop = asyncio.get_running_loop()
        min_gap = min(self.cfg.report_min_interval, self.cfg.report_interval)
        while True:
            delay = status.jittered(self.cfg.report_interval, self.cfg.report_jitter, self._rng)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._report_event.wait(), delay)
            wait = self._last_report + min_gap - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # changes during the wait ride on this report
            self._report_event.clear()
            if self.client.connected:
                await self.report_once()

    async def report_once(self, caller: transport.Caller | None = None) -> str | None:
        """Send one report (through ``caller``, default the transport) and act on the reply;
        returns the reply (None if it failed)."""
        self._last_report = asyncio.get_running_loop().time()
        report = await self.reporter.build_report()
        try:
            reply = await (caller or self.client).call("report_state", report)
        except rpc.RPCError as exc:
            self.report_failures += 1
            LOG.warning("report_state failed: %s", exc)
            return None
        self.last_reply = str(reply)
        self.replies[self.last_reply] = self.replies.get(self.last_reply, 0) + 1
        if reply == controller.REVIVED:
            LOG.warning("controller says this agent was dead (revived): full resync")
            self.request_sync("controller replied revived")
        elif reply == controller.NEW and self.reporter.reports_accepted > 0:
            LOG.warning("controller forgot this agent (new): full resync")
            self.request_sync("controller replied new")
        self.reporter.accepted()
        return self.last_reply

    # -- bindings ---------------------------------------------------------------------------

    async def activate_binding(self, port_id: str) -> bool:
        """Activate this host's binding of ``port_id``; True if already active here (409)."""
        try:
            await self.client.call("activate_port_binding", port_id, self.host)
        except rpc.Conflict as exc:
            if exc.details.get("host") == self.host:
                LOG.info("binding of %s already active on this host", port_id)
                return True
            raise
        return False


# --------------------------------------------------------------------------------------------
# Processes


def setup_logging(log: config.LogConfig) -> None:
    """Standard logging: stderr *or* a file (never both), INFO or DEBUG.

    The handlers already on the root logger (``sgflows -v`` installs one on stderr) are
    replaced, so with ``log_file`` every line goes to the file only."""
    if log.log_file:
        status.make_dirs(Path(log.log_file).parent)
    handler: logging.Handler = (
        logging.FileHandler(log.log_file) if log.log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(
        handlers=[handler], level=logging.DEBUG if log.debug else logging.INFO, force=True
    )


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_agent(cfg: config.AgentConfig, stop: asyncio.Event | None = None) -> None:
    """Run an agent until SIGTERM/SIGINT (or ``stop``)."""
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    agent = Agent(cfg)
    await agent.run(stop)


async def run_controller(cfg: config.ControllerConfig, stop: asyncio.Event | None = None) -> None:
    """Run the reference controller until SIGTERM/SIGINT (or ``stop``)."""
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    credentials = auth.Credentials.load(cfg.credentials_file)
    server = rpc.RPCServer(
        credentials,
        limits=cfg.limits,
        name="sgflows-controller",
        allowed_uids=cfg.allowed_uids or None,
    )
    backend = controller.ReferenceBackend(
        cfg.model,
        cfg.state_file,
        agent_down_time=cfg.agent_down_time,
        watch_interval=cfg.watch_interval,
        # The JSON table of earlier versions, under its default name next to the database.
        legacy_state_file=Path(cfg.state_file).with_name("controller-state.json"),
    )
    controller.ControlService(server, backend)
    ssl_context = None
    if cfg.cert_file and cfg.key_file:
        ssl_context = rpc.server_ssl_context(
            cfg.cert_file, cfg.key_file, cfg.client_ca_file, cfg.crl_file
        )
    wrote_ready = False
    try:
        endpoints = [rpc.Endpoint.parse(ep) for ep in cfg.listen]
        make_socket_dirs(endpoints)
        bound = [await server.start(ep, ssl_context) for ep in endpoints]
    except BaseException:
        # Not started (e.g. another controller answers on the socket): touch nothing of
        # the state, only release what was bound.
        await server.close()
        raise
    try:
        await backend.start()
        if cfg.ready_file:
            ready = {"pid": os.getpid(), "endpoints": [str(ep) for ep in bound]}
            auth.write_private_file(cfg.ready_file, json.dumps(ready).encode())
            wrote_ready = True
        LOG.info("controller ready on %s", ", ".join(str(ep) for ep in bound))
        await stop.wait()
    finally:
        LOG.info("controller stopping")
        if wrote_ready and cfg.ready_file:
            # A ready file left behind would tell the next reader a dead controller is up.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cfg.ready_file)
        try:
            await backend.stop()
        finally:
            await server.close()
        LOG.info("controller stopped")


def make_socket_dirs(endpoints: Sequence[rpc.Endpoint]) -> None:
    """Create the directories of the Unix socket endpoints when missing (``/run/sgflows`` is
    on a tmpfs that starts empty at boot). Mode 0755: the socket itself is 0600."""
    for ep in endpoints:
        if ep.scheme == "unix" and ep.path:
            directory = Path(ep.path).parent
            if not directory.is_dir():
                try:
                    status.make_dirs(directory, 0o755)
                except OSError as exc:
                    raise rpc.ListenError(
                        f"cannot listen on {ep}: cannot create directory {directory}: "
                        f"{exc.strerror or exc}"
                    ) from exc
                LOG.info("created %s for the controller socket", directory)


async def fetch_agents(
    endpoint: str,
    *,
    identity: str | None,
    secret: bytes | None,
    ssl_context: Any,
    server_hostname: str | None,
    timeout: float,
) -> list[dict[str, Any]]:
    """Log in and return the controller's agent table."""
    client = await rpc.RPCClient.connect(
        endpoint,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        call_timeout=timeout,
        connect_timeout=timeout,
    )
    try:
        await client.login(identity, secret)
        rows: list[dict[str, Any]] = await client.call("list_agents")
        return rows
    finally:
        await client.close()


_CONFIG_FILE = click.option(
    "--config-file",
    "config_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="INI configuration file (repeatable; later files override earlier ones).",
)


def _load(loader: Callable[[Sequence[str]], Any], files: Sequence[str]) -> Any:
    try:
        return loader(list(files))
    except (config.ConfigError, auth.CredentialError) as exc:
        raise click.UsageError(str(exc)) from exc


@click.command("agent")
@_CONFIG_FILE
@click.option("--debug", is_flag=True, default=False, help="Log at DEBUG level.")
def agent_command(config_files: tuple[str, ...], debug: bool) -> None:
    """Run the sgflows agent: sync security groups from the controller and report status."""
    cfg: config.AgentConfig = _load(config.load_agent_config, config_files)
    cfg.log.debug = cfg.log.debug or debug
    setup_logging(cfg.log)
    privsep = False
    try:
        if cfg.metadata.enabled:
            try:
                start_metadata_privsep(cfg.metadata)
            except Exception as exc:
                raise click.ClickException(f"metadata privsep daemon: {exc}") from exc
            privsep = True
        asyncio.run(run_agent(cfg))
    except (auth.CredentialError, DataplaneError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if privsep:
            stop_metadata_privsep()


@click.command("controller")
@_CONFIG_FILE
@click.option("--debug", is_flag=True, default=False, help="Log at DEBUG level.")
def controller_command(config_files: tuple[str, ...], debug: bool) -> None:
    """Run the reference controller: serve a model to agents and keep the agent table."""
    cfg: config.ControllerConfig = _load(config.load_controller_config, config_files)
    cfg.log.debug = cfg.log.debug or debug
    setup_logging(cfg.log)
    try:
        asyncio.run(run_controller(cfg))
    except (auth.CredentialError, store.StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    except rpc.ListenError as exc:
        raise _StartError(str(exc)) from exc


class _StartError(click.ClickException):
    """The controller cannot listen where it is configured to (exit 2, like a bad option)."""

    exit_code = 2


@click.command("status")
@click.option(
    "--config-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Take the controller endpoint and TLS/secret settings from this agent config file.",
)
@click.option(
    "--controller",
    "endpoint",
    help=f"Controller endpoint (tls:HOST:PORT or unix:PATH; default {DEFAULT_CONTROLLER}).",
)
@click.option(
    "--identity",
    help="Principal: admin or service lists every agent, an agent principal its own host.",
)
@click.option("--secret-file", type=click.Path(dir_okay=False), help="Its secret (mode 0600).")
@click.option("--ca-file", type=click.Path(dir_okay=False), help="CA verifying the controller.")
@click.option("--cert-file", type=click.Path(dir_okay=False), help="Client certificate.")
@click.option("--key-file", type=click.Path(dir_okay=False), help="Client certificate key.")
@click.option("--server-hostname", help="Name expected in the controller's certificate.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_command(
    config_file: str | None,
    endpoint: str | None,
    identity: str | None,
    secret_file: str | None,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    server_hostname: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Show the agents the controller knows: state, since, last report, custom status."""
    as_agent = None
    if config_file:
        cfg: config.AgentConfig = _load(config.load_agent_config, [config_file])
        endpoint = endpoint or cfg.controller
        if identity is None:
            as_agent = identity = cfg.identity or cfg.host
        secret_file = secret_file or cfg.secret_file
        ca_file = ca_file or cfg.ca_file
        cert_file = cert_file or cfg.cert_file
        key_file = key_file or cfg.key_file
        server_hostname = server_hostname or cfg.server_hostname
    endpoint = endpoint or DEFAULT_CONTROLLER
    try:
        ep = rpc.Endpoint.parse(endpoint)
        secret = auth.load_secret(secret_file) if secret_file else None
        ssl_context = (
            rpc.client_ssl_context(ca_file, cert_file, key_file) if ep.scheme == "tls" else None
        )
    except (ValueError, OSError, ssl.SSLError, auth.CredentialError) as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        rows = asyncio.run(
            fetch_agents(
                endpoint,
                identity=identity,
                secret=secret,
                ssl_context=ssl_context,
                server_hostname=server_hostname,
                timeout=timeout,
            )
        )
    except rpc.ConnectionLost as exc:
        hint = "" if config_file or endpoint != DEFAULT_CONTROLLER else " (give --controller)"
        raise click.ClickException(f"cannot reach the controller: {exc.message}{hint}") from exc
    except rpc.RPCError as exc:
        raise click.ClickException(f"{exc.type_name}: {exc.message}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"cannot reach the controller at {endpoint}: {exc}") from exc
    if as_agent is not None:
        click.echo(
            f"logged in as {as_agent}, the agent of {config_file}: the controller shows an agent "
            "its own host only (an admin or service --identity lists every agent)",
            err=True,
        )
    if as_json:
        click.echo(controller.format_agents_json(rows))
    else:
        click.echo(controller.format_agents_table(rows))


def main(argv: Sequence[str] | None = None) -> int:
    """``sgflows-agent`` entry point."""
    return _run_click(agent_command, argv, "sgflows-agent")


def controller_main(argv: Sequence[str] | None = None) -> int:
    """``sgflows-controller`` entry point."""
    return _run_click(controller_command, argv, "sgflows-controller")


def status_main(argv: Sequence[str] | None = None) -> int:
    """``sgflows-status`` entry point."""
    return _run_click(status_command, argv, "sgflows-status")


def _run_click(command: click.Command, argv: Sequence[str] | None, prog: str) -> int:
    try:
        command.main(args=list(argv) if argv is not None else None, prog_name=prog)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
