"""Configuration files in the INI format OpenStack operators already write (oslo.config).

``sgflows agent --config-file /etc/sgflows/agent.ini`` reads ``[DEFAULT]``, ``[agent]``,
``[rpc]`` and ``[metadata]`` (the IPv6 metadata elections, :mod:`sgflows.agent.election`);
``sgflows controller`` reads ``[DEFAULT]``, ``[controller]`` and ``[rpc]``. Options are
turned into plain dataclasses at once, so the rest of the code does not depend on oslo.config.
:func:`list_opts` feeds ``oslo-config-generator`` for a commented sample file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg, types

from . import election, metadata_proxy, rpc
from .dataplane.settings import OvsSettings, RteFlowSettings

LOG_OPTS = [
    cfg.BoolOpt("debug", default=False, help="Log at DEBUG level."),
    cfg.StrOpt("log_file", help="Log to this file instead of standard error."),
]

#: The agent on Neutron's message bus (sgflows.agent.transport.neutron): the option Neutron's
#: own agents read, in [DEFAULT] like theirs, so one file can serve both.
BUS_OPTS = [
    cfg.StrOpt(
        "transport_url",
        secret=True,
        help="oslo.messaging URL of Neutron's message bus (rabbit://USER:PASS@HOST:PORT/). "
        "When set, the agent reports to and syncs from Neutron's servers over it instead of "
        "an sgflows controller ([agent] controller must then be empty). Needs oslo.messaging "
        "(pip install 'sgflows[neutron-bus]').",
    ),
]


def _limit_opt(name: str, minimum: float, help: str) -> cfg.Opt:
    """The ``[rpc]`` option for the field ``name`` of :class:`rpc.Limits`, of the field's type
    and with its default (:func:`_limits` maps the value back to the field by name)."""
    default = getattr(rpc.Limits, name)
    if _LIMIT_TYPES[name] is float:
        return cfg.FloatOpt(name, default=default, min=minimum, help=help)
    return cfg.IntOpt(name, default=default, min=int(minimum), help=help)


_LIMIT_TYPES = typing.get_type_hints(rpc.Limits)

RPC_OPTS = [
    _limit_opt(
        "max_message_bytes",
        1024,
        "Largest msgpack-RPC message accepted; a larger one closes the connection.",
    ),
    _limit_opt(
        "max_outstanding",
        1,
        "Requests handled concurrently per connection; more wait in the socket.",
    ),
    _limit_opt(
        "max_queued_notifications",
        1,
        "Notifications queued per connection before further ones are dropped "
        "(the agent then sees a generation gap and resyncs).",
    ),
    _limit_opt("write_timeout", 0.01, "Seconds a peer may stop reading before it is disconnected."),
    _limit_opt(
        "handshake_timeout",
        0.01,
        "One deadline, in seconds, from accepting a connection to its login (TLS "
        "handshake and authentication together).",
    ),
    cfg.FloatOpt(
        "request_timeout", default=30.0, min=0.01, help="Seconds to wait for an RPC answer."
    ),
    # Limits of issue 16 (transport): what one peer may make the server hold.
    _limit_opt(
        "max_decoded_bytes",
        1024,
        "Largest estimated memory one message may take once decoded; checked from the "
        "msgpack headers before decoding (a larger one closes the connection with 413).",
    ),
    _limit_opt(
        "unauthenticated_message_bytes",
        1024,
        "max_message_bytes for a server's peer that has not logged in yet.",
    ),
    _limit_opt(
        "unauthenticated_decoded_bytes",
        1024,
        "max_decoded_bytes for a server's peer that has not logged in yet.",
    ),
    _limit_opt("max_str_len", 1, "Longest string in a message, in bytes."),
    _limit_opt("max_bin_len", 1, "Longest binary value in a message, in bytes."),
    _limit_opt("max_array_len", 1, "Most items in one array of a message."),
    _limit_opt("max_map_len", 1, "Most entries in one map of a message."),
    _limit_opt(
        "max_connections",
        1,
        "Connections the server holds at once, counted from accept (TLS handshakes "
        "included); lowered to the open-file limit minus 64. At the limit the oldest "
        "connection that has not logged in is dropped for a new one.",
    ),
    _limit_opt(
        "max_unauthenticated",
        1,
        "Of max_connections, those not logged in yet (TLS handshake included); each TLS "
        "one holds ~300 KB. Beyond it the oldest of them is dropped for a new one.",
    ),
    _limit_opt(
        "max_auth_failures", 1, "Wrong proofs allowed on one connection before it is closed."
    ),
    _limit_opt(
        "idle_timeout",
        0.0,
        "Seconds a logged-in peer may send nothing (while waiting for no answer) "
        "before the server closes it; 0 disables.",
    ),
    _limit_opt(
        "close_timeout",
        0.0,
        "Seconds a closing connection may take to flush and exchange TLS close_notify "
        "before it is aborted.",
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
        help="Controller endpoint: tls:HOST:PORT or unix:/path (required unless "
        "[DEFAULT] transport_url names Neutron's bus).",
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
        choices=["ovs", "rte_flow", "file", "none"],
        help="What the agent programs: 'ovs' the local Open vSwitch bridge of [ovs], "
        "'rte_flow' the DPDK ports of [rte_flow] through DPDK's rte_flow API; for tests "
        "and dry runs 'file' writes what it would apply to STATE_DIR/applied.json, 'none' "
        "only counts.",
    ),
    # ctl-state (issue 16, item 10): reports on state changes, rate-limited.
    cfg.FloatOpt(
        "report_min_interval",
        default=1.0,
        min=0.0,
        help="Each change of the agent's state is reported at once, but two reports are at "
        "least this many seconds apart (at most report_interval).",
    ),
]

_OVS = OvsSettings()

OVS_OPTS = [
    cfg.StrOpt("bridge", default=_OVS.bridge, help="The integration bridge the agent filters."),
    cfg.StrOpt("ovsdb", default=_OVS.ovsdb, help="The local OVSDB (unix:PATH or tcp:IP:PORT)."),
    cfg.ListOpt(
        "uplinks",
        default=[],
        help="The bridge's uplink ports (names): never treated as VM ports, and checked to "
        "exist at start.",
    ),
    cfg.BoolOpt(
        "set_fail_mode",
        default=False,
        help="Set the bridge's fail_mode to secure when it is not (otherwise refuse to start).",
    ),
    cfg.StrOpt(
        "cookie",
        default=f"{_OVS.cookie:#x}",
        help="The cookie of the agent's flows (hexadecimal or decimal); keep it constant, so "
        "that a restarted agent adopts its flows.",
    ),
    cfg.IntOpt(
        "closed_vlan",
        default=_OVS.closed_vlan,
        min=1,
        max=4094,
        help="Tag (and conntrack zone) of ports the controller has not described: they get a "
        "drop-everything filter until it does.",
    ),
    cfg.FloatOpt(
        "check_interval",
        default=_OVS.check_interval,
        min=0.01,
        help="Seconds between checks that our flows are on the bridge (an ovs-vswitchd "
        "restart loses them); also the first retry delay after a failed apply.",
    ),
    cfg.FloatOpt(
        "command_timeout",
        default=_OVS.command_timeout,
        min=0.1,
        help="Seconds an ovs-ofctl/ovs-vsctl/ovs-appctl call may take.",
    ),
    cfg.FloatOpt(
        "start_timeout",
        default=_OVS.start_timeout,
        min=0.1,
        help="Seconds to wait for OVSDB at start before refusing to start.",
    ),
]

_RTE = RteFlowSettings()

RTE_FLOW_OPTS = [
    cfg.MultiStrOpt(
        "port",
        default=[],
        help="PORT_ID=VDEV, one line per VM port: the DPDK port facing it, as EAL's --vdev "
        "(e.g. port-1=net_tap0,iface=tap-port-1).",
    ),
    cfg.StrOpt(
        "profile",
        default=_RTE.profile,
        choices=["net_tap", "full"],
        help="The single-port driver profile (docs/rte_flow.md).",
    ),
    cfg.IntOpt(
        "accept_queue",
        default=_RTE.accept_queue,
        min=0,
        max=65535,
        help="The rx queue accepted traffic from the VM goes to.",
    ),
    cfg.IntOpt(
        "software_queue",
        default=_RTE.software_queue,
        min=-1,
        max=65535,
        help="The rx queue the software switch serves (traffic the driver cannot decide); -1: "
        "none, and a port needing it is not offloadable (closed).",
    ),
    cfg.StrOpt(
        "probed",
        help="A probe table saved by `sgflows rte-flow probe --save`: the shapes the driver "
        "refused narrow the profile.",
    ),
    cfg.StrOpt("binary", help="The sgflows-rte-flow installer (default: the built one)."),
    cfg.FloatOpt(
        "start_timeout",
        default=_RTE.start_timeout,
        min=0.1,
        help="Seconds an installer may take to start DPDK on its port.",
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
        "crl_file",
        help="Certificate revocation list(s) (PEM) of client_ca_file: client certificates it "
        "revokes are refused. Must hold a current CRL of every CA that signs client "
        "certificates (a CA without one fails every certificate it signed).",
    ),
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
        default="/var/lib/sgflows/controller.sqlite3",
        help="SQLite database where the agent table and binding activations persist across "
        "restarts (a JSON table of earlier versions found there is imported once).",
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


_TIMER_HELP = election.TIMER_HELP


def _timer_opts() -> list[cfg.Opt]:
    """One option per field of :class:`~sgflows.agent.election.ElectionTimers`, defaults
    taken from the dataclass (the standalone agent's ``--probe-interval`` etc. do the same)."""
    defaults = election.ElectionTimers()
    opts: list[cfg.Opt] = []
    for f in dataclasses.fields(election.ElectionTimers):
        value = getattr(defaults, f.name)
        if isinstance(value, int):
            opts.append(cfg.IntOpt(f.name, default=value, min=1, help=_TIMER_HELP[f.name]))
        else:
            opts.append(cfg.FloatOpt(f.name, default=value, min=0.0, help=_TIMER_HELP[f.name]))
    return opts


METADATA_OPTS = [
    cfg.BoolOpt(
        "enabled",
        default=False,
        help="Run the IPv6 metadata election (fe80::a9fe:a9fe, one server per network) for "
        "the networks below and report each as custom status metadata-election/NETWORK_ID.",
    ),
    cfg.MultiStrOpt(
        "network",
        default=[],
        help="A network to serve, NETWORK_ID,NAMESPACE,INTERFACE[,unbound] (repeat the line "
        "for more networks; the format of the standalone agent's --network). 'unbound' keeps "
        "the network ineligible until the control plane binds its port (see ports).",
    ),
    cfg.DictOpt(
        "ports",
        default={},
        help="NETWORK_ID:PORT_ID pairs: the network counts as bound only while the controller "
        "binds PORT_ID to this host and the dataplane applied it (binding_activate, "
        "binding_deactivate, port_delete and every resync update it). Networks not listed "
        "keep the bound flag of their network line.",
    ),
    cfg.StrOpt(
        "proxy",
        default="http",
        choices=["http", "command", "none"],
        help="What serves HTTP on the address when this agent leads: 'http' the built-in "
        "server (forwards to upstream, or answers a JSON identity without one), 'command' "
        "runs proxy_argv, 'none' nothing.",
    ),
    cfg.StrOpt(
        "proxy_argv",
        help="For proxy = command: a JSON list of strings, run without a shell; placeholders "
        "{network_id} {namespace} {interface} {address} {port} {listen_fd}.",
    ),
    cfg.StrOpt("upstream", help="For proxy = http: the metadata service URL to forward to."),
    cfg.PortOpt("proxy_port", default=80, help="TCP port the proxy listens on."),
    cfg.StrOpt(
        "privsep",
        default="helper",
        choices=["helper", "fork"],
        help="How the privsep daemon starts: 'helper' runs privsep-helper through "
        "[sgflows_metadata_privsep] helper_command (default: through sudo); 'fork' forks it "
        "from the agent, which must then start as root.",
    ),
    cfg.BoolOpt(
        "drop_capabilities",
        default=False,
        help="After the privsep daemon started, drop every capability of the agent for good.",
    ),
    *_timer_opts(),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Every option by group, for ``oslo-config-generator``."""
    return [
        ("DEFAULT", LOG_OPTS + BUS_OPTS),
        ("agent", AGENT_OPTS),
        ("controller", CONTROLLER_OPTS),
        ("metadata", METADATA_OPTS),
        ("ovs", OVS_OPTS),
        ("rpc", RPC_OPTS),
        ("rte_flow", RTE_FLOW_OPTS),
    ]


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or lacks a required option."""


@dataclass
class LogConfig:
    """``[DEFAULT]``."""

    debug: bool = False
    log_file: str | None = None


@dataclass
class MetadataConfig:
    """``[metadata]`` as plain values: the IPv6 metadata elections this agent runs."""

    enabled: bool = False
    networks: list[election.NetworkSpec] = field(default_factory=list)
    ports: dict[str, str] = field(default_factory=dict)
    proxy: str = "http"
    proxy_argv: list[str] | None = None
    upstream: str | None = None
    privsep: str = "helper"
    drop_capabilities: bool = False
    timers: election.ElectionTimers = field(default_factory=election.ElectionTimers)
    # The files the agent was started with: oslo.privsep reads [sgflows_metadata_privsep]
    # (helper_command, user, ...) from the global cfg.CONF, which the agent parses from them.
    config_files: list[str] = field(default_factory=list)


@dataclass
class AgentConfig:
    """``[agent]`` and ``[rpc]`` as plain values (``controller`` is empty on Neutron's bus)."""

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
    report_min_interval: float = 1.0
    request_timeout: float = 30.0
    limits: rpc.Limits = field(default_factory=rpc.Limits)
    log: LogConfig = field(default_factory=LogConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)
    ovs: OvsSettings = field(default_factory=OvsSettings)
    rte_flow: RteFlowSettings = field(default_factory=RteFlowSettings)
    #: Neutron's bus instead of a controller (``[DEFAULT] transport_url``).
    transport_url: str | None = None
    #: The files this configuration came from (oslo.messaging reads its own options there).
    config_files: list[str] = field(default_factory=list)


@dataclass
class ControllerConfig:
    """``[controller]`` and ``[rpc]`` as plain values."""

    model: str
    listen: list[str] = field(default_factory=lambda: ["unix:/run/sgflows/controller.sock"])
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    crl_file: str | None = None
    credentials_file: str = "/etc/sgflows/credentials.json"
    allowed_uids: list[int] = field(default_factory=list)
    state_file: str = "/var/lib/sgflows/controller.sqlite3"
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
    for path in config_files:
        _check_unknown_options(path)
    return conf


#: Groups whose every option is ours. [DEFAULT] is shared by convention (oslo libraries and
#: other OpenStack services put options there), and other groups, such as
#: [sgflows_metadata_privsep], belong to the libraries that read them.
_OUR_GROUPS = ("agent", "controller", "metadata", "ovs", "rpc", "rte_flow")


def _check_unknown_options(path: str) -> None:
    """oslo.config ignores options it does not know; in our own groups that hides typos (a
    misspelt limit silently keeps its default), so they are errors here."""
    sections: dict[str, dict[str, list[str]]] = {}
    try:
        cfg.ConfigParser(path, sections).parse()
    except (OSError, cfg.Error, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    known = dict(list_opts())
    for group in _OUR_GROUPS:
        names: set[str] = set()
        for opt in known[group]:
            names.update({opt.dest, opt.name.replace("-", "_")})
            names.update(d.name.replace("-", "_") for d in opt.deprecated_opts if d.name)
        unknown = sorted(set(sections.get(group, {})) - names)
        if unknown:
            raise ConfigError(
                f"{path}: [{group}] has unknown option(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(o.dest for o in known[group]))})"
            )


def _group(conf: cfg.ConfigOpts, name: str) -> dict[str, Any]:
    try:
        section = conf[name]
        opts = dict(list_opts())[name]
        return {opt.dest: section[opt.dest] for opt in opts}
    except (cfg.Error, ValueError) as exc:
        raise ConfigError(f"[{name}]: {exc}") from exc


def _limits(values: dict[str, Any]) -> rpc.Limits:
    """Every ``[rpc]`` option named after a field of :class:`rpc.Limits` sets that field."""
    names = {f.name for f in dataclasses.fields(rpc.Limits)}
    return rpc.Limits(**{name: value for name, value in values.items() if name in names})


def _metadata(values: dict[str, Any], config_files: Sequence[str]) -> MetadataConfig:
    ports: dict[str, str] = dict(values["ports"])
    networks: list[election.NetworkSpec] = []
    for text in values["network"]:
        try:
            spec = election._parse_network(text)  # the standalone agent's --network format
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"[metadata] network {text!r}: {exc}") from exc
        if any(n.network_id == spec.network_id for n in networks):
            raise ConfigError(f"[metadata] network {spec.network_id} given twice")
        spec.port = values["proxy_port"]
        if spec.network_id in ports:
            spec.bound = False  # until the controller binds the port here
        networks.append(spec)
    unknown = sorted(set(ports) - {n.network_id for n in networks})
    if unknown:
        raise ConfigError(f"[metadata] ports: no network line for {', '.join(unknown)}")
    argv: list[str] | None = None
    if values["proxy_argv"]:
        try:
            argv = json.loads(values["proxy_argv"])
        except ValueError as exc:
            raise ConfigError(f"[metadata] proxy_argv is not JSON: {exc}") from exc
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise ConfigError("[metadata] proxy_argv must be a JSON list of strings")
    if values["enabled"] and values["proxy"] == "command" and argv is None:
        raise ConfigError("[metadata] proxy = command needs proxy_argv")
    if values["enabled"] and not networks:
        raise ConfigError("[metadata] enabled needs at least one network line")
    if values["upstream"]:  # ctl-state (issue 16, item 8): only http(s)://host[:port]
        try:
            metadata_proxy.Upstream.parse(values["upstream"])
        except metadata_proxy.UpstreamError as exc:
            raise ConfigError(f"[metadata] upstream: {exc}") from exc
    try:
        timers = election.ElectionTimers(
            **{f.name: values[f.name] for f in dataclasses.fields(election.ElectionTimers)}
        )
    except ValueError as exc:
        raise ConfigError(f"[metadata] timers: {exc}") from exc
    return MetadataConfig(
        enabled=values["enabled"],
        networks=networks,
        ports=ports,
        proxy=values["proxy"],
        proxy_argv=argv,
        upstream=values["upstream"],
        privsep=values["privsep"],
        drop_capabilities=values["drop_capabilities"],
        timers=timers,
        config_files=list(config_files),
    )


def load_agent_config(config_files: Sequence[str]) -> AgentConfig:
    """Read the agent's configuration files (later files override earlier ones)."""
    conf = _parse(config_files)
    agent = _group(conf, "agent")
    rpc_values = _group(conf, "rpc")
    metadata = _metadata(_group(conf, "metadata"), config_files)
    if conf.transport_url:
        _check_bus(conf.transport_url, agent["controller"], config_files)
        agent["controller"] = ""
    else:
        _check_controller(agent["controller"])
    return AgentConfig(
        **agent,
        request_timeout=rpc_values["request_timeout"],
        limits=_limits(rpc_values),
        log=LogConfig(debug=conf.debug, log_file=conf.log_file),
        metadata=metadata,
        transport_url=conf.transport_url,
        config_files=list(config_files),
        ovs=_ovs(_group(conf, "ovs")),
        rte_flow=_rte_flow(_group(conf, "rte_flow")),
    )


def _check_controller(controller: str | None) -> None:
    if not controller:
        raise ConfigError(
            "[agent] controller is required (tls:HOST:PORT or unix:/path), "
            "or [DEFAULT] transport_url for Neutron's bus"
        )
    try:
        rpc.Endpoint.parse(controller)
    except ValueError as exc:
        raise ConfigError(f"[agent] controller: {exc}") from exc


def _check_bus(url: str, controller: str | None, config_files: Sequence[str]) -> None:
    """One transport only; and oslo.messaging must be installed and take the URL."""
    if controller:
        raise ConfigError(
            "give either [agent] controller (an sgflows controller) or [DEFAULT] "
            "transport_url (Neutron's bus), not both"
        )
    try:
        from .transport import neutron
    except ImportError as exc:
        raise ConfigError(
            f"[DEFAULT] transport_url needs oslo.messaging ({exc}); "
            "pip install 'sgflows[neutron-bus]'"
        ) from exc
    try:
        neutron.check_url(url, list(config_files))
    except ValueError as exc:
        raise ConfigError(f"[DEFAULT] {exc}") from exc


def _ovs(values: dict[str, Any]) -> OvsSettings:
    try:
        cookie = int(values["cookie"], 0)
    except ValueError:
        raise ConfigError(f"[ovs] cookie: not a number: {values['cookie']!r}") from None
    if not 0 < cookie < 1 << 64 or cookie == (1 << 64) - 1:
        raise ConfigError(f"[ovs] cookie: {values['cookie']} is not a usable 64-bit cookie")
    return OvsSettings(**{**values, "cookie": cookie})


def _rte_flow(values: dict[str, Any]) -> RteFlowSettings:
    ports: dict[str, str] = {}
    for line in values.pop("port") or []:
        port_id, sep, vdev = line.partition("=")
        if not sep or not port_id.strip() or not vdev.strip():
            raise ConfigError(f"[rte_flow] port: {line!r} is not PORT_ID=VDEV")
        if port_id.strip() in ports:
            raise ConfigError(f"[rte_flow] port: {port_id.strip()} given twice")
        ports[port_id.strip()] = vdev.strip()
    queue = values.pop("software_queue")
    return RteFlowSettings(ports=ports, software_queue=None if queue < 0 else queue, **values)


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
