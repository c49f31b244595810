"""The msgpack control plane as a transport: one authenticated connection to an sgflows
controller (``[agent] controller``), kept up by :class:`~sgflows.agent.rpc.ReconnectingClient`."""

from __future__ import annotations

import logging
import random
import ssl
from typing import TYPE_CHECKING, Any

from .. import auth, rpc

if TYPE_CHECKING:
    from .. import config
    from . import Callbacks

LOG = logging.getLogger(__name__)


class ControlPlaneTransport:
    """Calls and notifications over msgpack-RPC (Unix socket or TLS)."""

    def __init__(
        self, cfg: config.AgentConfig, callbacks: Callbacks, *, rng: random.Random | None = None
    ) -> None:
        self.endpoint = rpc.Endpoint.parse(cfg.controller)
        self.client = rpc.ReconnectingClient(
            rpc.ClientSettings(
                endpoint=self.endpoint,
                identity=cfg.identity or cfg.host,
                secret=auth.load_secret(cfg.secret_file) if cfg.secret_file else None,
                ssl_context=_ssl_context(cfg, self.endpoint),
                server_hostname=cfg.server_hostname,
                limits=cfg.limits,
                call_timeout=cfg.request_timeout,
                backoff_initial=cfg.backoff_initial,
                backoff_max=cfg.backoff_max,
            ),
            on_connected=callbacks.on_connected,
            on_disconnected=callbacks.on_disconnected,
            on_notification=callbacks.on_notification,
            rng=rng,
        )

    @property
    def connected(self) -> bool:
        """True while an authenticated connection is up."""
        return self.client.connected

    def start(self) -> None:
        """Connect in the background (with backoff and jitter)."""
        self.client.start()

    async def stop(self) -> None:
        """Close the connection."""
        await self.client.stop()

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call on the current connection, waiting for one up to the call's timeout."""
        return await self.client.call(method, *params, timeout=timeout)

    def describe(self) -> dict[str, Any]:
        """The controller endpoint."""
        return {"transport": "control-plane", "controller": str(self.endpoint)}


def _ssl_context(cfg: config.AgentConfig, endpoint: rpc.Endpoint) -> ssl.SSLContext | None:
    if endpoint.scheme != "tls":
        return None
    return rpc.client_ssl_context(cfg.ca_file, cfg.cert_file, cfg.key_file)
