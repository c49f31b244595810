"""``[ovs]``: the Open vSwitch dataplane's settings as a plain dataclass (importable without
the Rust core, as the configuration is)."""

from __future__ import annotations

import dataclasses

#: Our flows' cookie unless configured: constant across restarts, so that a restarted agent
#: finds and adopts its own flows ("SG" in the top bytes).
DEFAULT_COOKIE = 0x5347_0000_0000_0001


@dataclasses.dataclass
class OvsSettings:
    """``[ovs]``."""

    bridge: str = "br-int"
    ovsdb: str = "unix:/var/run/openvswitch/db.sock"
    uplinks: list[str] = dataclasses.field(default_factory=list)
    set_fail_mode: bool = False
    cookie: int = DEFAULT_COOKIE
    closed_vlan: int = 4094
    check_interval: float = 2.0
    command_timeout: float = 30.0
    start_timeout: float = 10.0


@dataclasses.dataclass
class RteFlowSettings:
    """``[rte_flow]``: the DPDK rte_flow dataplane (:mod:`.rte_flow`)."""

    #: VM port id → the DPDK port facing it, as EAL's ``--vdev`` (``net_tap0,iface=tap0``).
    ports: dict[str, str] = dataclasses.field(default_factory=dict)
    profile: str = "net_tap"
    accept_queue: int = 0
    #: ``None``: no software path (a port needing one is not offloadable, and closed).
    software_queue: int | None = 1
    #: A probe table (``sgflows rte-flow probe --save``) that narrows the profile.
    probed: str | None = None
    #: The ``sgflows-rte-flow`` binary (default: ``sgflows.rte_install.find_binary``).
    binary: str | None = None
    start_timeout: float = 120.0
