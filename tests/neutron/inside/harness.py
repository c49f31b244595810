"""The agent's side of a firewall driver on a real ``OVSIntegrationBridge``, reusable by tests
and benchmarks that run in the Neutron venv (they need ``neutron`` importable).

- :class:`Vif`, :func:`port_dict`: a VM port as OVSDB and the agent's port dicts know it.
- :class:`Host`: what Nova/os-vif and the agent's ``port_bound`` write into OVSDB for a VIF
  (internal ports for traces, or a namespace's veth for real packets), plus flows and traces.
- :func:`load_driver`: a driver loaded the agent's way (stevedore alias, then
  ``cls(integration_bridge=int_br)``), ``sgflows`` or Neutron's own ``openvswitch``.
- :func:`sync`: the agent's first ``_apply_port_filter`` (one batch: rules, members, ports,
  trusted ports).
- :func:`vm_namespace`: a namespace plugged as a VIF (real packets).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from neutron.agent import firewall
from support.netns import Namespace, NetnsFactory
from support.ovs import Bridge, PrivateOVS, parse_dpif_show, parse_trace

#: The local VLAN the agent's ``port_bound`` gave the test network.
TAG = 3


@dataclass(frozen=True)
class Vif:
    device: str
    name: str
    ofport: int
    mac: str
    ip: str


def port_dict(
    vif: Vif | Namespace, device: str | None = None, groups: Sequence[str] = ("web",)
) -> dict[str, Any]:
    """A port as the agent passes it (security_group_info_for_devices)."""
    if isinstance(vif, Vif):
        device, mac, ip = vif.device, vif.mac, vif.ip
    else:
        assert device is not None, "a namespace needs its device id"
        mac, ip = vif.mac, vif.ip4
    return {
        "device": device,
        "id": device,
        "mac_address": mac,
        "fixed_ips": [ip],
        "allowed_address_pairs": [],
        "security_groups": list(groups),
        "security_group_source_groups": [],
        "port_security_enabled": True,
        "device_owner": "compute:nova",
        "network_id": "net-1",
        "admin_state_up": True,
    }


class Host:
    """What Nova/os-vif and the agent's ``port_bound`` write into OVSDB for a VIF."""

    def __init__(self, ovs: PrivateOVS, bridge: str) -> None:
        self.ovs, self.bridge = ovs, bridge

    def plug(self, vif: Vif, tag: int | None = TAG) -> None:
        """An internal port (for traces) with the VIF's external ids and local VLAN."""
        self.ovs.vsctl(
            "add-port", self.bridge, vif.name, "--", "set", "interface", vif.name,
            "type=internal", f"ofport_request={vif.ofport}",
        )  # fmt: skip
        self.describe(vif.name, vif.device, vif.mac, tag)

    def describe(self, name: str, device: str, mac: str, tag: int | None = TAG) -> None:
        """The external ids os-vif writes and the tag ``port_bound`` writes."""
        self.ovs.vsctl(
            "set", "interface", name, f"external_ids:iface-id={device}",
            f"external_ids:attached-mac={mac}", "external_ids:iface-status=active",
        )  # fmt: skip
        if tag is not None:
            self.ovs.vsctl("set", "port", name, f"other_config:tag={tag}", f"tag={tag}")

    def unplug(self, vif: Vif) -> None:
        self.ovs.vsctl("--if-exists", "del-port", self.bridge, vif.name)

    def flows(self) -> list[str]:
        out = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "--no-stats", self.bridge],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return [line.strip() for line in out.splitlines() if "actions=" in line]

    def trace(self, flow: str, ct_next: Sequence[str] = ()) -> tuple[int, ...]:
        """The OpenFlow ports ``flow`` leaves by (``()``: dropped)."""
        params = [self.bridge, flow]
        for state in ct_next:
            params += ["--ct-next", state]
        text = self.ovs.unixctl("ofproto/trace", *params)
        dp_map = parse_dpif_show(self.ovs.unixctl("dpif/show"))[self.bridge]
        return parse_trace(flow, text, dp_map).ports


def vm_namespace(
    factory: NetnsFactory, host: Host, device: str, ofport: int, ip: str, mac: str
) -> Namespace:
    """A namespace whose veth is the VIF ``device`` on the host's bridge (real packets)."""
    bridge = Bridge(host.ovs, host.bridge, protocol="OpenFlow13")
    ns = factory(bridge, ofport, ipv4=f"{ip}/24", mac=mac)
    host.describe(ns.host_ifname, device, mac)
    return ns


def load_driver(int_br: Any, name: str = "sgflows") -> Any:
    """The agent's way: stevedore alias, then ``cls(integration_bridge=int_br)``."""
    cls = firewall.load_firewall_driver_class(name)
    return cls(integration_bridge=int_br)


def sync(
    driver: Any,
    rules: Mapping[str, list[dict[str, Any]]],
    members: Mapping[str, Mapping[str, list[Any]]],
    ports: Sequence[dict[str, Any]],
    trusted: Sequence[str] = (),
) -> None:
    """The agent's first ``_apply_port_filter``: one batch of rules, members, ports, trusted."""
    with driver.defer_apply():
        for sg, group_rules in rules.items():
            driver.update_security_group_rules(sg, group_rules)
        for sg, group_members in members.items():
            driver.update_security_group_members(sg, group_members)
        for port in ports:
            driver.prepare_port_filter(port)
        driver.process_trusted_ports(list(trusted))
