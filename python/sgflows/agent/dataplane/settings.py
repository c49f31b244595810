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
