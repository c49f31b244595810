"""From the controller's reply and the switch's ports to the changes of the shared session.

:func:`build_model` joins what the controller says (Neutron's ``security_group_info_for_devices``
reply: ports with their ``local_vlan``, rules, members) with what OVSDB says (which ports are
plugged here, their ofport): a port on the switch is filtered only once both are known, and a
port the controller has not described (yet, or at all) gets a *closed* filter — no groups, no
addresses: nothing but the pipeline's DHCP/ND bootstrap passes. That is standalone mode's fail
closed. A port the controller describes but the switch does not have is left out.

:func:`update_of` turns that model into a whole-model :class:`sgflows.switch.flowstate.Update`:
the session (:class:`~sgflows.switch.flowstate.FlowState`, shared with the Neutron driver)
works out what changed — ports, rules, statefulness, members — as one ``Compiler.apply``
batch, so that a change costs a diff of its own size.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from sgflows.switch.flowstate import Group, Update

from .ovsdb import LocalPort

LOG = logging.getLogger(__name__)

#: Compile options of standalone mode: the agent owns table 0 and table 60's default, and
#: VM ports are ``no-flood``, so broadcast between local VMs passes their ingress rules.
STANDALONE_OPTIONS: Mapping[str, Any] = {
    "entry_flow": True,
    "normal_flow": True,
    "foreign_ports": False,
    "filter_local_flood": True,
}


@dataclasses.dataclass(frozen=True)
class Built:
    """A model ready to compile, and which of its ports are closed (and why)."""

    model: dict[str, Any]
    closed: dict[str, str]  # port id -> reason
    vlans: dict[str, int]  # port id -> local VLAN (the tag the agent sets)


def build_model(info: Mapping[str, Any], local: Mapping[str, LocalPort], closed_vlan: int) -> Built:
    """The compile model of the ports plugged here (see the module docstring)."""
    devices = info.get("devices") or {}
    ports: dict[str, dict[str, Any]] = {}
    closed: dict[str, str] = {}
    vlans: dict[str, int] = {}
    for port_id, here in sorted(local.items()):
        if here.ofport is None:
            continue  # not ready: no OpenFlow port to filter yet
        described = devices.get(port_id)
        vlan = _vlan_of(described)
        if described is None:
            closed[port_id] = "no security-group information from the controller"
        elif vlan is None:
            closed[port_id] = "the controller gives no local_vlan for it"
        if port_id in closed:
            ports[port_id] = _closed_port(port_id, here, closed_vlan)
            vlans[port_id] = closed_vlan
            continue
        assert described is not None and vlan is not None
        entry = {k: v for k, v in described.items() if k not in ("bindings",)}
        entry.update(id=port_id, device=port_id, ofport=here.ofport, local_vlan=vlan)
        ports[port_id] = entry
        vlans[port_id] = vlan
    model = {
        "devices": ports,
        "security_groups": dict(info.get("security_groups") or {}),
        "sg_member_ips": dict(info.get("sg_member_ips") or {}),
    }
    if "security_group_stateful" in info:
        model["security_group_stateful"] = dict(info["security_group_stateful"])
    return Built(model=model, closed=closed, vlans=vlans)


def _vlan_of(port: Mapping[str, Any] | None) -> int | None:
    if port is None:
        return None
    vlan = port.get("local_vlan")
    return vlan if isinstance(vlan, int) and not isinstance(vlan, bool) else None


def _closed_port(port_id: str, here: LocalPort, vlan: int) -> dict[str, Any]:
    """A drop-everything filter for a port the controller has not described."""
    return {
        "id": port_id,
        "device": port_id,
        "mac_address": here.mac,
        "fixed_ips": [],
        "allowed_address_pairs": [],
        "security_groups": [],
        "port_security_enabled": True,
        "ofport": here.ofport,
        "local_vlan": vlan,
    }


#: The port keys a batch's ``add_port``/``update_port`` reads (it takes the documented
#: shape, where Neutron's extra keys such as ``device`` are errors).
_PORT_KEYS = (
    "id", "mac_address", "fixed_ips", "allowed_address_pairs", "port_security_enabled",
    "security_groups", "device_owner", "network_id", "ofport", "local_vlan",
)  # fmt: skip


def _documented_port(port: Mapping[str, Any]) -> dict[str, Any]:
    return {k: port[k] for k in _PORT_KEYS if k in port}


def update_of(model: Mapping[str, Any]) -> Update:
    """The whole-model update of a :func:`build_model` model (what it does not name is gone)."""
    stateful = model.get("security_group_stateful") or {}
    return Update(
        ports={pid: _documented_port(port) for pid, port in model["devices"].items()},
        groups={
            gid: Group(tuple(rules), _stateful(stateful.get(gid), rules))
            for gid, rules in model["security_groups"].items()
        },
        members=dict(model["sg_member_ips"]),
        complete=True,
    )


def _stateful(flag: Any, rules: Any) -> bool:
    """The controller's flag for the group, else its rules' (Neutron copies it onto every
    rule); stateful unless every flag says otherwise."""
    if isinstance(flag, bool):
        return flag
    flags = {bool(r["stateful"]) for r in rules if isinstance(r, Mapping) and "stateful" in r}
    return flags != {False}
