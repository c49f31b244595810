"""Neutron's agent side in a test process, on a private userspace Open vSwitch.

- ``neutron_ovs`` (session): a ``PrivateOVS``, its socket directory exported (``OVS_RUNDIR``)
  so that Neutron's ``ovs-ofctl`` and OVSDB calls reach it, Neutron's config loaded and
  pointed at its database, and privsep in-process (the tests run as root; oslo.privsep's
  documented test mode, instead of a root-helper daemon).
- ``int_br`` (function): a real ``OVSIntegrationBridge`` (Neutron's native class, datapath
  ``netdev``) with the agent's own flows around the firewall.

The bridge's os-ken half is not started: the driver talks to OVSDB and ``ovs-ofctl`` only, and
the agent's default flows (table 0 → 58 → 59 → 60, table 60's priority-1 NORMAL) are written
with ``ovs-ofctl`` as ``setup_default_table`` writes them through os-ken. Running os-ken's
embedded controller in a test process needs the workarounds listed in DESIGN.md §7.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support import cleanup_leftovers, unique_name  # noqa: E402
from support.ovs import PrivateOVS  # noqa: E402

#: The agent's flows around the firewall (br_int.setup_default_table, OC table numbers).
AGENT_FLOWS = (
    "table=0,priority=0,actions=resubmit(,58)",
    "table=58,priority=0,actions=resubmit(,59)",
    "table=59,priority=0,actions=resubmit(,60)",
    "table=60,priority=1,actions=NORMAL",
    "table=23,priority=0,actions=drop",  # the canary table
)


@pytest.fixture(scope="session")
def neutron_ovs() -> Iterator[PrivateOVS]:
    cleanup_leftovers()
    with PrivateOVS() as switch:
        for key in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_PKGDATADIR"):
            os.environ[key] = switch.env[key]
        _configure_neutron(switch)
        yield switch


def _configure_neutron(switch: PrivateOVS) -> None:
    from neutron.conf.agent import ovsdb_api
    from neutron.conf.plugins.ml2.drivers import ovs_conf
    from oslo_config import cfg

    ovs_conf.register_ovs_agent_opts(cfg.CONF)
    if "ovsdb_connection" not in cfg.CONF.OVS:
        cfg.CONF.register_opts(ovsdb_api.API_OPTS, "OVS")
    from neutron.conf.agent import securitygroups_rpc

    securitygroups_rpc.register_securitygroups_opts(cfg.CONF)  # Neutron's own driver reads them
    cfg.CONF([], project="neutron")
    cfg.CONF.set_override("ovsdb_connection", f"unix:{switch.env['OVS_RUNDIR']}/db.sock", "OVS")
    import neutron.privileged

    neutron.privileged.default.set_client_mode(False)
    _daemon_conntrack_worker()


def _daemon_conntrack_worker() -> None:
    """Neutron's own driver starts a conntrack worker thread that never ends (a TODO in
    ``ip_conntrack``); as a daemon thread it no longer keeps the test process from exiting."""
    import threading
    import types

    from neutron.agent.linux import ip_conntrack

    thread = functools.partial(threading.Thread, daemon=True)
    ip_conntrack.threading = types.SimpleNamespace(Thread=thread)  # type: ignore[assignment]


@pytest.fixture
def int_br(neutron_ovs: PrivateOVS) -> Iterator[Any]:
    with integration_bridge(neutron_ovs) as bridge:
        yield bridge


@pytest.fixture
def second_int_br(neutron_ovs: PrivateOVS) -> Iterator[Any]:
    """Another integration bridge on the same switch (Neutron's driver beside ours)."""
    with integration_bridge(neutron_ovs) as bridge:
        yield bridge


@contextlib.contextmanager
def integration_bridge(neutron_ovs: PrivateOVS) -> Iterator[Any]:
    """A real ``OVSIntegrationBridge`` with the agent's own flows, deleted afterwards."""
    from neutron.plugins.ml2.drivers.openvswitch.agent.openflow.native import br_int

    name = unique_name("sgn")
    bridge = br_int.OVSIntegrationBridge(name, datapath_type="netdev", os_ken_app=None)
    bridge.create()
    neutron_ovs.vsctl(
        "set", "bridge", name, "fail-mode=secure",
        "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
    )  # fmt: skip
    _ofctl(name, "del-flows")
    _ofctl(name, "add-flows", "-", input="\n".join(AGENT_FLOWS) + "\n")
    try:
        yield bridge
    finally:
        neutron_ovs.vsctl("--if-exists", "del-br", name)


def _ofctl(bridge: str, *args: str, input: str | None = None) -> str:
    import subprocess

    return subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", args[0], bridge, *args[1:]],
        input=input, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
