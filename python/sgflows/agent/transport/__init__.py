"""How the agent reaches its server: one interface, two implementations.

The :class:`~sgflows.agent.service.Agent` holds all of the logic (state machine, syncs,
notification handling, reports); a :class:`Transport` only carries its calls and delivers
notifications, in the agent's own vocabulary (the method names of Neutron's agent RPC, which the
msgpack control plane copies):

* ``subscribe(host)`` → ``{"epoch", "generation"}``; notifications follow, each payload
  numbered with that epoch and the next generation;
* ``devices_for_host(host)`` → port ids bound to the host;
* ``security_group_info_for_devices(devices)`` → Neutron's reply shape;
* ``report_state(report)`` → ``new`` / ``alive`` / ``revived``;
* ``activate_port_binding(port_id, host)``.

Implementations:

* :class:`~sgflows.agent.transport.control.ControlPlaneTransport` — the msgpack control plane
  (``[agent] controller``), for deployments without Neutron;
* :class:`~sgflows.agent.transport.neutron.NeutronBusTransport` — Neutron's own message bus
  through oslo.messaging (``[DEFAULT] transport_url``). oslo.messaging is imported only when
  this one is configured (extra ``sgflows[neutron-bus]``).

Errors are the typed errors of :mod:`sgflows.agent.rpc` whatever the transport
(``ConnectionLost``, ``CallTimeout``, ``MethodNotFound``, ``Conflict``…), so the agent handles
them once.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .. import config

__all__ = ["Callbacks", "Caller", "Transport", "make_transport"]


class Caller(Protocol):
    """Something the agent can call methods on (a transport, or one connection of it)."""

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method`` with ``params``; raises :class:`sgflows.agent.rpc.RPCError`."""
        ...


class Transport(Caller, Protocol):
    """The agent's link to its server."""

    @property
    def connected(self) -> bool:
        """True while the server is known to be reachable."""
        ...

    def start(self) -> None:
        """Start connecting in the background (``Callbacks.on_connected`` follows)."""
        ...

    async def stop(self) -> None:
        """Disconnect and stop reconnecting."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the report's ``configurations`` says about the transport (no secrets)."""
        ...


@dataclass(frozen=True)
class Callbacks:
    """What a transport tells the agent.

    ``on_connected(caller)`` runs after every (re)connection, before other calls are let
    through (``caller`` is usable inside it); ``on_disconnected(reason)`` after every loss;
    ``on_notification(method, [payload])`` for every notification, in order.
    """

    on_connected: Callable[[Caller], Awaitable[None]]
    on_disconnected: Callable[[str], None]
    on_notification: Callable[[str, list[Any]], None]


def make_transport(
    cfg: config.AgentConfig, callbacks: Callbacks, *, rng: random.Random | None = None
) -> Transport:
    """The transport ``cfg`` chooses: Neutron's bus with ``transport_url``, else the control
    plane at ``[agent] controller``."""
    if cfg.transport_url:
        from .neutron import NeutronBusTransport  # imports oslo.messaging

        return NeutronBusTransport(cfg, callbacks, rng=rng)
    from .control import ControlPlaneTransport

    return ControlPlaneTransport(cfg, callbacks, rng=rng)
