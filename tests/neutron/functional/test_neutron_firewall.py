"""Neutron's functional firewall tests (``neutron/tests/functional/agent/test_firewall.py``)
against Neutron's own ``openvswitch`` driver and against ``sgflows``, the same way.

Both scenarios run Neutron's test code unchanged: the same connection testers, bridges and
assertions, and the same upstream skips (the tests skip by ``firewall_name``, so ours is named
``openvswitch`` too). The only difference is the driver class: ``sgflows`` is loaded through
Neutron's driver loading by its entry-point alias.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

from conftest import start_controller
from neutron.agent import firewall as neutron_firewall
from neutron.agent.linux import openvswitch_firewall
from neutron.tests.functional.agent import test_firewall as upstream


class _Mixin:
    tester: Any
    firewall: Any

    def _tester_and_bridge(self) -> Any:
        from neutron.tests.common import conn_testers

        br_int_cls = start_controller()["br_int"]
        return self.useFixture(  # type: ignore[attr-defined]
            conn_testers.OVSConnectionTester(self.ip_cidr, br_int_cls)  # type: ignore[attr-defined]
        )

    def initialize_native(self) -> tuple[Any, Any]:
        tester = self._tester_and_bridge()
        driver = openvswitch_firewall.OVSFirewallDriver(tester.bridge)
        mock.patch("neutron.agent.common.ovs_lib.OVSBridge._set_port_dead").start()
        return tester, driver

    def initialize_sgflows(self) -> tuple[Any, Any]:
        tester = self._tester_and_bridge()
        cls = neutron_firewall.load_firewall_driver_class("sgflows")
        driver = cls(integration_bridge=tester.bridge)
        mock.patch("neutron.agent.common.ovs_lib.OVSBridge._set_port_dead").start()
        return tester, driver

    def assign_vlan_to_peers(self) -> None:
        from neutron.tests.common import helpers

        bridge = getattr(self.firewall.int_br, "br", self.firewall.int_br)
        vlan = helpers.get_not_used_vlan(bridge, self.vlan_range)  # type: ignore[attr-defined]
        self.tester.set_vm_tag(vlan)
        self.tester.set_peer_tag(vlan)


def _scenario(base: type, driver: str) -> type:
    attrs: dict[str, Any] = {
        "initialize": f"initialize_{driver}",
        "firewall_name": "openvswitch",
        "scenarios": [],
        # The IPv6 class skips its setUp only because of the per-test controller helper this
        # harness replaces: restore the common setUp.
        "setUp": upstream.BaseFirewallTestCase.setUp,
    }
    return type(f"Test{base.__name__}_{driver}", (_Mixin, base), attrs)


TestFirewallNative = _scenario(upstream.FirewallTestCase, "native")
TestFirewallIPv6Native = _scenario(upstream.FirewallTestCaseIPv6, "native")
TestFirewallSgflows = _scenario(upstream.FirewallTestCase, "sgflows")
TestFirewallIPv6Sgflows = _scenario(upstream.FirewallTestCaseIPv6, "sgflows")
