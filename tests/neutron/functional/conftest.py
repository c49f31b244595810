"""Neutron 29.0.0's functional firewall tests on the private userspace Open vSwitch.

Neutron's ``test_firewall.py`` (shipped in the wheel) switched its ``openvswitch`` scenario off
after the eventlet removal, because its per-test os-ken controller helper no longer works.
This conftest makes it runnable again, the same way for both drivers (DESIGN.md §7):

- the process runs in a network namespace of its own (the launcher uses ``unshare -n``), with
  a private ovsdb-server/ovs-vswitchd in it: internal ports of the userspace datapath are taps
  in ovs-vswitchd's namespace, and Neutron's fixtures move them into their own namespaces;
- bridges are created with ``datapath_type=netdev`` (Neutron defaults to ``system``);
- privsep entrypoints run in-process (oslo.privsep's client mode off: we are root);
- one os-ken OpenFlow controller per process, on daemon threads, started once: per-test
  controllers cannot be stopped (``hub.kill`` is a no-op with native threads), the app's
  ``signal.signal`` calls must not run outside the main thread, and the bridges' switch
  connections are waited for before a test uses them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.ovs import PrivateOVS  # noqa: E402

os.environ.setdefault("OS_SUDO_TESTING", "1")
# We are root: commands run as they are, as children of this helper (see the script).
os.environ.setdefault("OS_ROOTWRAP_CMD", str(Path(__file__).resolve().parent / "root-helper"))
os.environ.setdefault("OS_FAIL_ON_MISSING_DEPS", "0")

_SWITCH: PrivateOVS | None = None
_BRIDGE_CLASSES: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    global _SWITCH
    debug_log = os.environ.get("SGFLOWS_OSKEN_LOG")
    if debug_log:  # os-ken's own loggers, to a file (Neutron's fixtures capture the rest)
        handler = logging.FileHandler(debug_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(name)s %(message)s"))
        for name in ("os_ken", "OfctlService", "OFPHandler", "OVSNeutronAgentOSKenApp"):
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).setLevel(logging.DEBUG)
    _SWITCH = PrivateOVS(netns=False).start()
    for key in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_PKGDATADIR"):
        os.environ[key] = _SWITCH.env[key]
    _patch_neutron(_SWITCH)
    # Before any test: Neutron's test fixtures (config resets, mocks) must not be in force
    # while the controller's threads start.
    start_controller()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SWITCH is not None:
        _SWITCH.stop()


def _patch_neutron(switch: PrivateOVS) -> None:
    import neutron.privileged
    from neutron.agent.common import ovs_lib
    from oslo_config import cfg

    for context in vars(neutron.privileged).values():
        if hasattr(context, "set_client_mode"):
            context.set_client_mode(False)
    connection = f"unix:{switch.env['OVS_RUNDIR']}/db.sock"
    from neutron.conf.agent import ovsdb_api
    from neutron.conf.plugins.ml2.drivers import ovs_conf

    ovs_conf.register_ovs_agent_opts(cfg.CONF)
    if "ovsdb_connection" not in cfg.CONF.OVS:
        cfg.CONF.register_opts(ovsdb_api.API_OPTS, "OVS")
    _force_default("OVS", "ovsdb_connection", connection)
    # Fail in seconds, not the agent's minutes, when a switch or request hangs.
    _force_default("OVS", "of_connect_timeout", 30)
    _force_default("OVS", "of_request_timeout", 30)

    original_init = ovs_lib.OVSBridge.__init__

    def netdev_init(self: Any, br_name: str, datapath_type: str | None = None, **kw: Any) -> None:
        original_init(self, br_name, datapath_type="netdev", **kw)

    ovs_lib.OVSBridge.__init__ = netdev_init
    original_add_bridge = ovs_lib.BaseOVS.add_bridge

    def netdev_add_bridge(self: Any, bridge_name: str, *args: Any, **kw: Any) -> Any:
        kw["datapath_type"] = "netdev"
        return original_add_bridge(self, bridge_name, **kw)

    ovs_lib.BaseOVS.add_bridge = netdev_add_bridge
    _patch_datapath_wait()


def _fix_features_race() -> None:
    """os-ken's ofctl service may handle a switch's features reply before the OFP handler
    (another app, another thread) has set the datapath's id, and then asserts: the switch stays
    unknown to it. Take the id from the message itself, as the OFP handler does."""
    from os_ken.app.ofctl import service

    original = service.OfctlService._switch_features_handler

    def handler(self: Any, ev: Any) -> Any:
        if ev.msg.datapath.id is None:
            ev.msg.datapath.id = ev.msg.datapath_id
        return original(self, ev)

    handler.callers = original.callers  # type: ignore[attr-defined]  # os-ken's registration
    service.OfctlService._switch_features_handler = handler


def _force_default(group: str, name: str, value: Any) -> None:
    """Change an option's declared default: Neutron's test fixtures reset every override and
    ``set_default`` after each test, and these must hold for the whole process."""
    from oslo_config import cfg

    cfg.CONF._groups[group]._opts[name]["opt"].default = value


def _patch_datapath_wait() -> None:
    """Reconnect a bridge whose switch connection never registered with os-ken.

    With native threads, os-ken's switch-features handling can race and leave a connected
    switch unknown to the ofctl service; Neutron's ``_get_dp_by_dpid`` then waits for
    ``of_connect_timeout`` (300 s). Re-setting the controller makes the switch reconnect.
    """
    import time

    from neutron.plugins.ml2.drivers.openvswitch.agent.openflow.native import ofswitch
    from os_ken.app.ofctl import api as ofctl_api

    def get_dp(self: Any, dpid_int: int) -> Any:
        deadline = time.monotonic() + 60
        kick = time.monotonic() + 2
        while time.monotonic() < deadline:
            dp = ofctl_api.get_datapath(self._app, dpid_int)
            if dp is not None:
                return dp
            if time.monotonic() > kick:
                targets = self.get_controller()
                self.del_controller()
                self.set_controller(targets)
                kick = time.monotonic() + 2
            time.sleep(0.05)
        raise RuntimeError("Switch connection timeout")

    ofswitch.OpenFlowSwitchMixin._get_dp_by_dpid = get_dp


def start_controller() -> dict[str, Any]:
    """The process's one os-ken controller; returns the agent's bridge classes."""
    if _BRIDGE_CLASSES:
        return _BRIDGE_CLASSES
    from neutron.plugins.ml2.drivers.openvswitch.agent import ovs_neutron_agent
    from neutron.plugins.ml2.drivers.openvswitch.agent.openflow.native import (
        main as of_main,
    )
    from neutron.plugins.ml2.drivers.openvswitch.agent.openflow.native import ovs_oskenapp
    from neutron.tests.common import net_helpers
    from os_ken.base import app_manager
    from os_ken.lib import hub
    from oslo_config import cfg

    ready = threading.Event()

    def agent_main(bridge_classes: dict[str, Any], register_signal: Any = None) -> None:
        _BRIDGE_CLASSES.update(bridge_classes)
        ready.set()
        threading.Event().wait()  # the agent's main loop: the tests drive the bridges

    cfg.CONF([], project="neutron")
    _force_default("OVS", "of_listen_port", net_helpers.get_free_namespace_port("tcp"))
    of_main.init_config()
    cfg.CONF.clear()  # unparsed again: the tests register more command-line options
    # The app registers signal handlers, which only the main thread may do.
    ovs_oskenapp.signal = types.SimpleNamespace(
        signal=lambda *a, **k: None,
        SIGTERM=signal.SIGTERM,
        SIGINT=signal.SIGINT,
        SIGHUP=signal.SIGHUP,
    )
    ovs_neutron_agent.main = agent_main
    # With native threads os-ken's hub.TaskExit *is* Exception: the first exception in any
    # event handler silently ends that app's event loop (every later request then hangs).
    hub.TaskExit = type("TaskExit", (BaseException,), {})
    _fix_features_race()
    # What of_main.main() runs, plus the ofctl service named explicitly: os-ken attaches a
    # required app to the module that first imported its API, and in a test process that is
    # not ovs_oskenapp (the test modules imported ofswitch first), so it would not load.
    apps = [ovs_oskenapp.__name__, "os_ken.app.ofctl.service"]
    threading.Thread(
        target=app_manager.AppManager.run_apps, args=(apps,), name="os-ken", daemon=True
    ).start()
    if not ready.wait(60):
        raise RuntimeError("os-ken controller did not start")
    return _BRIDGE_CLASSES


@pytest.fixture(autouse=True)
def _switch_alive() -> Iterator[None]:
    if _SWITCH is not None and not _SWITCH.running:
        pytest.fail(f"ovs-vswitchd died; log tail:\n{_SWITCH.log_tail()}")
    yield
