"""The switch side of the end-to-end benchmarks (``e2e.py``): a private userspace Open vSwitch
whose bridge holds the workload's ports, and the figures read from it.

Used by both measuring children: ``e2e_sgflows.py`` (this checkout's venv) and
``e2e_neutron.py`` (the Neutron 29.0.0 venv, where sgflows is installed too). Standard library
plus ``tests/support`` (``PrivateOVS``: ovsdb-server + ovs-vswitchd --disable-system in a
private directory and network namespace, DESIGN.md §6).

Ports are internal ports (taps in the switch's namespace) with ``ofport_request`` = the
workload's ofport and what Nova/os-vif and the agent's ``port_bound`` write: ``iface-id``,
``attached-mac``, ``iface-status``, the local VLAN as ``Port.tag`` and ``other_config:tag``.
They are added in one OVSDB transaction before anything is timed (~12 s for 1,000 ports).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support import cleanup_leftovers, unique_name  # noqa: E402
from support.ovs import PrivateOVS  # noqa: E402

__all__ = [
    "PrivateOVS",
    "cleanup_leftovers",
    "flow_count",
    "ofctl",
    "plug_ports",
    "port_name",
    "unique_name",
    "vswitchd_cpu_s",
    "vswitchd_rss_kib",
]

#: ``ovs-ofctl`` protocol for our own reads and loads (bundles need the 1.4+ messages or the
#: ONF extension; 1.5 has both).
OPENFLOW = "OpenFlow15"


def port_name(port_id: str) -> str:
    """The VIF's device name as os-vif makes it: ``tap`` + the first 11 characters of the id."""
    return f"tap{port_id[:11]}"


def plug_ports(
    switch: PrivateOVS, bridge: str, ports: list[dict[str, Any]], vlans: dict[str, int]
) -> float:
    """Add ``ports`` (model shape) to ``bridge`` in one transaction; return the seconds taken."""
    if not ports:
        return 0.0
    args: list[str] = []
    for port in ports:
        name = port_name(port["id"])
        vlan = port.get("local_vlan", vlans.get(port["network_id"]))
        args += ["--", "add-port", bridge, name]
        if vlan is not None:
            args += [f"tag={vlan}", f"other_config:tag={vlan}"]
        args += [
            "--", "set", "interface", name, "type=internal", f"ofport_request={port['ofport']}",
            f"external_ids:iface-id={port['id']}",
            f"external_ids:attached-mac={port['mac_address']}",
            "external_ids:iface-status=active",
        ]  # fmt: skip
    t = time.perf_counter()
    switch.vsctl(*args[1:], timeout=60 + len(ports) / 10)
    _check_ofports(switch, ports)
    return time.perf_counter() - t


def _check_ofports(switch: PrivateOVS, ports: list[dict[str, Any]]) -> None:
    out = switch.vsctl(
        "--format=csv", "--no-headings", "--columns=name,ofport", "list", "interface"
    )
    got = {}
    for line in out.splitlines():
        name, _, ofport = line.partition(",")
        got[name.strip('"')] = ofport.strip()
    wrong = [
        (port_name(p["id"]), p["ofport"], got.get(port_name(p["id"])))
        for p in ports
        if got.get(port_name(p["id"])) != str(p["ofport"])
    ]
    if wrong:
        raise RuntimeError(f"ports without the ofport asked for (name, asked, got): {wrong[:5]}")


def ofctl(switch: PrivateOVS, *args: str, input: str | None = None, timeout: float = 1800) -> str:
    """``ovs-ofctl -O OpenFlow15 ARGS`` against the private switch; raise with its message."""
    proc = subprocess.run(
        ["ovs-ofctl", "-O", OPENFLOW, *args],
        input=input, capture_output=True, text=True, env=switch.env, timeout=timeout,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"ovs-ofctl {' '.join(args[:2])}: {proc.stderr.strip()[:2000]}")
    return proc.stdout


def flow_count(switch: PrivateOVS, bridge: str) -> int:
    """The bridge's flow count (``dump-aggregate``: cheap even for 100k flows)."""
    out = ofctl(switch, "dump-aggregate", bridge)
    m = re.search(r"flow_count=(\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected dump-aggregate output: {out!r}")
    return int(m.group(1))


def vswitchd_rss_kib(switch: PrivateOVS) -> int:
    """Resident memory of the switch's ovs-vswitchd (``VmRSS``), in KiB."""
    pid = switch.vswitchd_pid
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/PID/status")


def vswitchd_cpu_s(switch: PrivateOVS) -> float:
    """CPU time ovs-vswitchd has used so far (user + system, all threads), in seconds."""
    fields = Path(f"/proc/{switch.vswitchd_pid}/stat").read_text(encoding="ascii")
    # after the command name in parentheses: state is field 3, utime 14, stime 15
    rest = fields.rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
