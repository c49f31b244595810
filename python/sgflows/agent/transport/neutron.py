"""Neutron's message bus as a transport: oslo.messaging on the deployment's RabbitMQ.

Chosen by ``[DEFAULT] transport_url`` (as Neutron's own agents have it); oslo.messaging options
(``[oslo_messaging_rabbit]`` …) are read from the agent's configuration files. This module
imports oslo.messaging, so it is imported only when that transport is configured.

What goes where (Neutron 29.0.0; topics from ``neutron_lib/agent/topics.py``):

* ``report_state`` → topic ``q-reports-plugin``, version 1.4, as a *call* so that the answer
  (``new`` / ``alive`` / ``revived``) comes back (``neutron/agent/rpc.py``
  ``PluginReportStateAPI``; server side ``neutron/db/agents_db.py`` ``AgentExtRpcCallback``).
  The detailed status rides in ``configurations`` (:mod:`.neutron_state`).
* liveness probe → ``has_alive_neutron_server`` on the same topic (version 1.3: true only if
  the server also reaches its database).
* ``security_group_info_for_devices`` → topic ``q-plugin``, version 1.3, the server's *legacy*
  security-group RPC (``neutron/api/rpc/handlers/securitygroups_rpc.py``
  ``SecurityGroupServerRpcApi``). Neutron's OVS agent no longer calls it: it reads a
  push-notification cache through ``SecurityGroupServerAPIShim`` (same file). We use it on
  purpose — it needs no resource cache in the agent and hands over the whole reply in one call.
* ``devices_for_host`` → ``get_ports_by_vnic_type_and_host`` (``q-plugin``, version 1.7) for
  vnic type ``normal``: the ports whose binding names this host.
* notifications: fanout casts the ML2 plugin sends (``neutron/plugins/ml2/rpc.py``
  ``AgentNotifierApi``, ``neutron/db/securitygroups_rpc_base.py``) —
  ``security_groups_rule_updated`` / ``security_groups_member_updated`` on
  ``q-agent-notifier-security_group-update``, ``port_update``, ``port_delete``,
  ``binding_activate`` and ``binding_deactivate`` on their ``q-agent-notifier-…`` topics.

The bus has no sessions: the transport counts itself "connected" after a successful call and
"disconnected" after a call that could not reach the server (timeout, broker down), and while
disconnected probes with backoff. Every reconnection runs the agent's ``on_connected`` (a full
resync: fanout casts sent meanwhile are lost). Notifications are numbered locally (an epoch
per transport, a generation per cast) so that the agent's logic is the control plane's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import oslo_messaging
from oslo_config import cfg as oslo_cfg

from .. import rpc
from . import neutron_state
from .neutron_state import masked_url

if TYPE_CHECKING:
    from .. import config
    from . import Callbacks

LOG = logging.getLogger(__name__)

#: The exchange Neutron's RPC lives on (oslo.messaging's default would be "openstack").
CONTROL_EXCHANGE = "neutron"

#: ``neutron_lib.agent.topics``: REPORTS, PLUGIN and the AGENT prefix of fanout topics.
REPORTS_TOPIC = "q-reports-plugin"
PLUGIN_TOPIC = "q-plugin"
AGENT_PREFIX = "q-agent-notifier"

#: Fanout topics (``get_topic_name(AGENT, resource, operation)``) and what arrives on each.
FANOUT_TOPICS: dict[str, tuple[str, ...]] = {
    f"{AGENT_PREFIX}-security_group-update": (
        "security_groups_rule_updated",
        "security_groups_member_updated",
    ),
    f"{AGENT_PREFIX}-port-update": ("port_update",),
    f"{AGENT_PREFIX}-port-delete": ("port_delete",),
    f"{AGENT_PREFIX}-binding-activate": ("binding_activate",),
    f"{AGENT_PREFIX}-binding-deactivate": ("binding_deactivate",),
}

#: The request context Neutron's agents send (an admin context; the server rebuilds a
#: ``neutron_lib.context.Context`` from it).
ADMIN_CONTEXT: dict[str, Any] = {
    "is_admin": True,
    "roles": ["admin"],
    "user_id": None,
    "project_id": None,
}

#: vnic types whose ports this agent serves (``portbindings.VNIC_NORMAL``).
VNIC_TYPES = ("normal",)

#: Remote exceptions that mean "the server does not have this method or version".
_NOT_FOUND_REMOTE = {"NoSuchMethod", "UnsupportedVersion"}


def check_url(url: str, config_files: list[str]) -> None:
    """Raise ``ValueError`` if oslo.messaging cannot parse ``url``."""
    try:
        oslo_messaging.TransportURL.parse(_messaging_conf(config_files), url)
    except oslo_messaging.InvalidTransportURL as exc:
        raise ValueError(f"transport_url {masked_url(url)}: {exc}") from exc


def _messaging_conf(config_files: list[str]) -> oslo_cfg.ConfigOpts:
    """oslo.messaging's configuration, parsed from the agent's files.

    The global ``CONF``, not a private ``ConfigOpts``: oslo.messaging registers some of its
    options (``[oslo_messaging_tracing]``, 18.x) on the global one only and reads them from
    whatever it is given. The metadata privsep daemon parses the same files into it too."""
    conf = oslo_cfg.CONF
    conf(
        args=[arg for path in config_files for arg in ("--config-file", path)],
        project="sgflows",
        default_config_files=[],
        default_config_dirs=[],
    )
    return conf


class _NotificationEndpoint:
    """The agent side of the ML2 plugin's fanout casts; hands each to the event loop."""

    target = oslo_messaging.Target(version="1.5")  # binding_(de)activate are 1.5

    def __init__(self, deliver: Callable[[str, dict[str, Any]], None]) -> None:
        self._deliver = deliver

    def security_groups_rule_updated(self, context: Any, **kwargs: Any) -> None:
        self._deliver("security_groups_rule_updated", kwargs)

    def security_groups_member_updated(self, context: Any, **kwargs: Any) -> None:
        self._deliver("security_groups_member_updated", kwargs)

    def port_update(self, context: Any, **kwargs: Any) -> None:
        self._deliver("port_update", kwargs)

    def port_delete(self, context: Any, **kwargs: Any) -> None:
        self._deliver("port_delete", kwargs)

    def binding_activate(self, context: Any, **kwargs: Any) -> None:
        self._deliver("binding_activate", kwargs)

    def binding_deactivate(self, context: Any, **kwargs: Any) -> None:
        self._deliver("binding_deactivate", kwargs)


def _stop_server(server: Any) -> None:
    try:
        server.stop()
        server.wait()
    except Exception:
        LOG.exception("stopping a notification consumer failed")


class NeutronBusTransport:
    """The agent's calls as Neutron's agent RPC, notifications from the ML2 plugin's casts."""

    def __init__(
        self, cfg: config.AgentConfig, callbacks: Callbacks, *, rng: random.Random | None = None
    ) -> None:
        assert cfg.transport_url  # make_transport chose us for it
        self.url = cfg.transport_url
        self.host = cfg.host
        self.request_timeout = cfg.request_timeout
        # A probe waits no longer than a report interval: the agent reports that often anyway.
        self.probe_timeout = max(1.0, min(cfg.request_timeout, cfg.report_interval))
        self._callbacks = callbacks
        self._conf = _messaging_conf(cfg.config_files)
        # Neutron's servers and agents use the exchange "neutron" (neutron/common/config.py
        # sets it as oslo.messaging's default); [DEFAULT] control_exchange still overrides it.
        oslo_messaging.set_transport_defaults(control_exchange=CONTROL_EXCHANGE)
        self._transport = oslo_messaging.get_rpc_transport(self._conf, url=self.url)
        self.backoff = rpc.Backoff(cfg.backoff_initial, cfg.backoff_max, rng=rng)
        self.epoch = uuid.uuid4().hex
        self.generation = 0
        self.connections = 0
        self._connected = False
        self._down = asyncio.Event()
        self._servers: list[Any] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._connecting = False
        self._lost_during_connect: str | None = None
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "subscribe": self._subscribe,
            "devices_for_host": self._devices_for_host,
            "security_group_info_for_devices": self._security_group_info,
            "report_state": self._report_state,
            "activate_port_binding": self._activate_port_binding,
        }

    # -- the Transport interface ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True since the last call that reached the server, until one that could not."""
        return self._connected

    def start(self) -> None:
        """Probe the server in the background; ``on_connected`` follows its first answer."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.ensure_future(self._monitor())

    async def stop(self) -> None:
        """Stop probing, stop the notification consumers, release the transport."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.to_thread(self._stop_servers)
        self._transport.cleanup()

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """One of the agent's methods, as Neutron's RPC."""
        handler = self._methods.get(method)
        if handler is None:
            raise rpc.MethodNotFound(f"{method} has no equivalent on Neutron's bus")
        return await handler(*params, timeout=timeout or self.request_timeout)

    def describe(self) -> dict[str, Any]:
        """The bus and the topics this agent uses."""
        return {
            "transport": "neutron",
            "transport_url": masked_url(self.url),
            "rpc": {"reports": REPORTS_TOPIC, "security_groups": PLUGIN_TOPIC},
        }

    # -- connection state -------------------------------------------------------------------

    async def _monitor(self) -> None:
        """While disconnected, probe with backoff; once the server answers, run
        ``on_connected``; then wait until a call finds the server gone."""
        while not self._stopping:
            if not self._connected:
                try:
                    await self._probe()
                except rpc.RPCError as exc:
                    delay = self.backoff.next_delay()
                    LOG.info("Neutron not reachable (%s); next probe in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                self._connected = True
                self.connections += 1
                self.backoff.reset()
                self._down.clear()
                LOG.info("Neutron reachable on %s", masked_url(self.url))
                await self._run_on_connected()
                continue
            await self._down.wait()
            self._down.clear()

    async def _run_on_connected(self) -> None:
        """``on_connected``; a loss during it is told to the agent only after it returned (it
        ends by clearing the agent's degraded reason, which must not hide that loss)."""
        self._lost_during_connect = None
        self._connecting = True
        try:
            await self._callbacks.on_connected(self)
        except rpc.RPCError as exc:
            LOG.warning("on (re)connection: %s", exc)
            self._mark_down(str(exc))
        finally:
            self._connecting = False
        if self._lost_during_connect is not None:
            self._callbacks.on_disconnected(self._lost_during_connect)

    async def _probe(self) -> None:
        alive = await self._call(
            REPORTS_TOPIC, "1.3", "has_alive_neutron_server", {}, self.probe_timeout
        )
        if alive is not True:
            raise rpc.ConnectionLost("neutron-server answers but cannot reach its database")

    def _mark_down(self, reason: str) -> None:
        if self._connected:
            self._connected = False
            LOG.warning("Neutron unreachable: %s", reason)
            if self._connecting:
                self._lost_during_connect = reason
            else:
                self._callbacks.on_disconnected(reason)
        self._down.set()

    async def _call(
        self, topic: str, version: str, method: str, kwargs: dict[str, Any], timeout: float
    ) -> Any:
        """One RPC call in a worker thread, oslo's errors mapped to the agent's."""
        target = oslo_messaging.Target(topic=topic, version="1.0")
        # retry=0: a call fails at once when the broker is down (oslo.messaging's default is to
        # retry forever), so that the agent notices and reports it.
        client = oslo_messaging.get_rpc_client(self._transport, target).prepare(
            version=version, timeout=timeout, retry=0
        )
        try:
            return await asyncio.to_thread(client.call, ADMIN_CONTEXT, method, **kwargs)
        except oslo_messaging.RemoteError as exc:
            if exc.exc_type in _NOT_FOUND_REMOTE:
                raise rpc.MethodNotFound(f"{method}: {exc.exc_type}: {exc.value}") from exc
            raise rpc.InternalError(f"{method}: {exc.exc_type}: {exc.value}") from exc
        except oslo_messaging.MessagingTimeout as exc:
            error: rpc.RPCError = rpc.CallTimeout(f"{method} on {topic}: no answer in {timeout}s")
            self._mark_down(error.message)
            raise error from exc
        except (oslo_messaging.MessagingException, OSError) as exc:
            error = rpc.ConnectionLost(f"{method} on {topic}: {type(exc).__name__}: {exc}")
            self._mark_down(error.message)
            raise error from exc

    # -- the agent's methods ----------------------------------------------------------------

    async def _subscribe(self, host: str, *, timeout: float) -> dict[str, Any]:
        if not self._servers:
            await asyncio.wait_for(asyncio.to_thread(self._start_servers), timeout)
        return {"epoch": self.epoch, "generation": self.generation}

    async def _devices_for_host(self, host: str, *, timeout: float) -> list[str]:
        devices: list[str] = []
        for vnic_type in VNIC_TYPES:
            ports = await self._call(
                PLUGIN_TOPIC,
                "1.7",
                "get_ports_by_vnic_type_and_host",
                {"vnic_type": vnic_type, "host": host},
                timeout,
            )
            devices += [str(p["id"]) for p in ports or [] if isinstance(p, dict) and "id" in p]
        return sorted(set(devices))

    async def _security_group_info(self, devices: list[str], *, timeout: float) -> Any:
        return await self._call(
            PLUGIN_TOPIC,
            "1.3",
            "security_group_info_for_devices",
            {"devices": list(devices), "call_version": "1.3"},
            timeout,
        )

    async def _report_state(self, report: dict[str, Any], *, timeout: float) -> Any:
        return await self._call(
            REPORTS_TOPIC, "1.4", "report_state", neutron_state.report_kwargs(report), timeout
        )

    async def _activate_port_binding(self, port_id: str, host: str, *, timeout: float) -> Any:
        raise rpc.MethodNotFound(
            "Neutron's agents do not activate port bindings (Nova does, through the API)"
        )

    # -- notifications ----------------------------------------------------------------------

    def _start_servers(self) -> None:
        """One oslo.messaging RPC server per fanout topic (each declares its fanout queue)."""
        endpoint = _NotificationEndpoint(self._from_thread)
        for topic in FANOUT_TOPICS:
            target = oslo_messaging.Target(topic=topic, server=self.host, fanout=True)
            server = oslo_messaging.get_rpc_server(self._transport, target, [endpoint])
            server.start()
            self._servers.append(server)
        LOG.info("consuming %s", ", ".join(FANOUT_TOPICS))

    def _stop_servers(self) -> None:
        """Stop the consumers in parallel: each takes up to its listener's poll timeout (~5 s
        with the rabbit driver), one after the other they would outlast a service manager's
        stop timeout."""
        if self._servers:
            with concurrent.futures.ThreadPoolExecutor(len(self._servers)) as pool:
                list(pool.map(_stop_server, self._servers))
        self._servers = []

    def _from_thread(self, method: str, kwargs: dict[str, Any]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, method, kwargs)

    def _deliver(self, method: str, kwargs: dict[str, Any]) -> None:
        """Number the cast (in arrival order: call_soon_threadsafe keeps it) and hand it on."""
        self.generation += 1
        payload = dict(kwargs, epoch=self.epoch, generation=self.generation)
        LOG.debug("%s %s", method, kwargs)
        self._callbacks.on_notification(method, [payload])
