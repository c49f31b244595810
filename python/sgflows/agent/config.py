"""Configuration files in the INI format OpenStack operators already write (oslo.config).

``sgflows agent --config-file /etc/sgflows/agent.ini`` reads ``[DEFAULT]``, ``[agent]`` and
``[rpc]``; ``sgflows controller`` reads ``[DEFAULT]``, ``[controller]`` and ``[rpc]``. Options are
turned into plain dataclasses at once, so the rest of the code does not depend on oslo.config.
:func:`list_opts` feeds ``oslo-config-generator`` for a commented sample file.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg, types

from . import rpc

LOG_OPTS = [
    cfg.BoolOpt("debug", default=False, help="Log at DEBUG level."),
    cfg.StrOpt("log_file", help="Log to this file instead of standard error."),
]

RPC_OPTS = [
    cfg.IntOpt(
        "max_message_bytes",
        default=rpc.Limits.max_message_bytes,
        min=1024,
        help="Largest msgpack-RPC message accepted; a larger one closes the connection.",
    ),
    cfg.IntOpt(
        "max_outstanding",
        default=rpc.Limits.max_outstanding,
        min=1,
        help="Requests handled concurrently per connection; more wait in the socket.",
    ),
    cfg.IntOpt(
        "max_queued_notifications",
        default=rpc.Limits.max_queued_notifications,
        min=1,
        help="Notifications queued per connection before further ones are dropped "
        "(the agent then sees a generation gap and resyncs).",
    ),
    cfg.FloatOpt(
        "write_timeout",
        default=rpc.Limits.write_timeout,
        min=0.01,
        help="Seconds a peer may stop reading before it is disconnected.",
    ),
    cfg.FloatOpt(
        "handshake_timeout",
        default=rpc.Limits.handshake_timeout,
        min=0.01,
        help="Seconds for the TLS handshake and authentication of a new connection.",
    ),
    cfg.FloatOpt(
        "request_timeout", default=30.0, min=0.01, help="Seconds to wait for an RPC answer."
    ),
]

AGENT_OPTS = [
    cfg.StrOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<the system's host name>",
        help="This node's name, as Neutron knows it.",
    ),
    cfg.StrOpt(
        "controller",
        help="Controller endpoint: tls:HOST:PORT or unix:/path (required).",
    ),
    cfg.StrOpt("identity", help="Principal to log in as (default: the host name)."),
    cfg.StrOpt("secret_file", help="File (mode 0600) holding this agent's shared secret."),
    cfg.StrOpt("ca_file", help="CA certificate(s) that verify the controller."),
    cfg.StrOpt("cert_file", help="Client certificate (instead of, or besides, a secret)."),
    cfg.StrOpt("key_file", help="Key of the client certificate."),
    cfg.StrOpt("server_hostname", help="Name to expect in the controller's certificate."),
    cfg.FloatOpt("report_interval", default=30.0, min=0.01, help="Seconds between status reports."),
    cfg.FloatOpt(
        "report_jitter",
        default=0.1,
        min=0.0,
        max=0.9,
        help="Each interval is scaled by a random factor in [1-jitter, 1+jitter].",
    ),
    cfg.FloatOpt(
        "backoff_initial", default=0.5, min=0.01, help="First reconnection delay, in seconds."
    ),
    cfg.FloatOpt("backoff_max", default=30.0, min=0.01, help="Longest reconnection delay."),
    cfg.StrOpt(
        "state_dir",
        default="/var/lib/sgflows",
        help="Directory for the restart marker and the reference dataplane's output.",
    ),
    cfg.ListOpt(
        "devices",
        default=[],
        help="Port ids to serve; empty means those the controller binds to this host.",
    ),
    cfg.FloatOpt(
        "status_provider_timeout",
        default=2.0,
        min=0.01,
        help="Seconds each custom status provider may take per report.",
    ),
    cfg.StrOpt(
        "dataplane",
        default="file",
        choices=["file", "none"],
        help="Reference dataplane: 'file' writes what it applies to STATE_DIR/applied.json.",
    ),
]

CONTROLLER_OPTS = [
    cfg.ListOpt(
        "listen",
        default=["unix:/run/sgflows/controller.sock"],
        help="Endpoints to listen on: unix:/path and/or tls:ADDRESS:PORT (port 0: any free).",
    ),
    cfg.StrOpt("cert_file", help="Server certificate (needed for tls: endpoints)."),
    cfg.StrOpt("key_file", help="Key of the server certificate."),
    cfg.StrOpt("client_ca_file", help="CA that signs client certificates, if agents use them."),
    cfg.StrOpt(
        "credentials_file",
        default="/etc/sgflows/credentials.json",
        help="JSON principals table (mode 0600): secrets, certificate CNs, uids and roles.",
    ),
    cfg.ListOpt(
        "allowed_uids",
        item_type=types.Integer(),
        default=[],
        help="Uids allowed on the Unix socket (default: root and the controller's own uid).",
    ),
    cfg.StrOpt("model", help="Model file or directory of *.json files to serve (required)."),
    cfg.StrOpt(
        "state_file",
        default="/var/lib/sgflows/controller-state.json",
        help="Where the agent table and binding activations persist across restarts.",
    ),
    cfg.FloatOpt(
        "agent_down_time",
        default=75.0,
        min=0.01,
        help="Seconds without a report after which an agent is marked dead.",
    ),
    cfg.FloatOpt(
        "watch_interval", default=1.0, min=0.01, help="Seconds between checks of the model."
    ),
    cfg.StrOpt(
        "ready_file",
        help="Write the bound endpoints and the pid here once listening (JSON).",
    ),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Every option by group, for ``oslo-config-generator``."""
    return [
        ("DEFAULT", LOG_OPTS),
        ("agent", AGENT_OPTS),
        ("controller", CONTROLLER_OPTS),
        ("rpc", RPC_OPTS),
    ]


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or lacks a required option."""


@dataclass
class LogConfig:
    """``[DEFAULT]``."""

    debug: bool = False
    log_file: str | None = None


@dataclass
class AgentConfig:
    """``[agent]`` and ``[rpc]`` as plain values."""

    controller: str
    host: str = field(default_factory=socket.gethostname)
    identity: str | None = None
    secret_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname: str | None = None
    report_interval: float = 30.0
    report_jitter: float = 0.1
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    state_dir: str = "/var/lib/sgflows"
    devices: list[str] = field(default_factory=list)
    status_provider_timeout: float = 2.0
    dataplane: str = "file"
    request_timeout: float = 30.0
    limits: rpc.Limits = field(default_factory=rpc.Limits)
    log: LogConfig = field(default_factory=LogConfig)


@dataclass
class ControllerConfig:
    """``[controller]`` and ``[rpc]`` as plain values."""

    model: str
    listen: list[str] = field(default_factory=lambda: ["unix:/run/sgflows/controller.sock"])
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    credentials_file: str = "/etc/sgflows/credentials.json"
    allowed_uids: list[int] = field(default_factory=list)
    state_file: str = "/var/lib/sgflows/controller-state.json"
    agent_down_time: float = 75.0
    watch_interval: float = 1.0
    ready_file: str | None = None
    limits: rpc.Limits = field(default_factory=rpc.Limits)
    log: LogConfig = field(default_factory=LogConfig)


def _parse(config_files: Sequence[str]) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    for group, opts in list_opts():
        conf.register_opts(opts, group=None if group == "DEFAULT" else group)
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    try:
        conf(args=args, project="sgflows", default_config_files=[], default_config_dirs=[])
    except (cfg.Error, ValueError) as exc:
        raise ConfigError(str(exc)) from exc
    return conf


def _group(conf: cfg.ConfigOpts, name: str) -> dict[str, Any]:
    try:
        section = conf[name]
        opts = dict(list_opts())[name]
        return {opt.dest: section[opt.dest] for opt in opts}
    except (cfg.Error, ValueError) as exc:
        raise ConfigError(f"[{name}]: {exc}") from exc


def _limits(values: dict[str, Any]) -> rpc.Limits:
    return rpc.Limits(
        max_message_bytes=values["max_message_bytes"],
        max_outstanding=values["max_outstanding"],
        max_queued_notifications=values["max_queued_notifications"],
        write_timeout=values["write_timeout"],
        handshake_timeout=values["handshake_timeout"],
    )


def load_agent_config(config_files: Sequence[str]) -> AgentConfig:
    """Read the agent's configuration files (later files override earlier ones)."""
    conf = _parse(config_files)
    agent = _group(conf, "agent")
    rpc_values = _group(conf, "rpc")
    if not agent["controller"]:
        raise ConfigError("[agent] controller is required (tls:HOST:PORT or unix:/path)")
    try:
        rpc.Endpoint.parse(agent["controller"])
    except ValueError as exc:
        raise ConfigError(f"[agent] controller: {exc}") from exc
    return AgentConfig(
        **agent,
        request_timeout=rpc_values["request_timeout"],
        limits=_limits(rpc_values),
        log=LogConfig(debug=conf.debug, log_file=conf.log_file),
    )


def load_controller_config(config_files: Sequence[str]) -> ControllerConfig:
    """Read the controller's configuration files."""
    conf = _parse(config_files)
    values = _group(conf, "controller")
    rpc_values = _group(conf, "rpc")
    if not values["model"]:
        raise ConfigError("[controller] model is required (a file or a directory)")
    for endpoint in values["listen"]:
        try:
            ep = rpc.Endpoint.parse(endpoint)
        except ValueError as exc:
            raise ConfigError(f"[controller] listen: {exc}") from exc
        if ep.scheme == "tls" and not (values["cert_file"] and values["key_file"]):
            raise ConfigError(f"[controller] listen {endpoint}: needs cert_file and key_file")
    return ControllerConfig(
        **values,
        limits=_limits(rpc_values),
        log=LogConfig(debug=conf.debug, log_file=conf.log_file),
    )
