"""What the driver knows, as an sgflows model (Neutron's RPC payload shape, docs/model.md).

The agent hands the driver port dicts, group rules and group members in Neutron's shapes;
OVSDB gives each port's OpenFlow number, MAC and local VLAN. :class:`DriverModel` holds both and
builds the model to compile. A model error never leaves a port open and never fails the other
ports: :func:`isolate` finds the ports an error concerns and replaces them by closed ports
(no groups, no addresses: nothing but DHCP/ND bootstrap passes), so that they keep a filter
instead of falling through to the agent's ``NORMAL``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

LOG = logging.getLogger(__name__)

#: Port-dict keys the model reads; the rest of what the agent sends (``of_port`` objects,
#: bindings, extension data) stays out of the model.
PORT_KEYS = (
    "id",
    "device",
    "device_owner",
    "network_id",
    "fixed_ips",
    "allowed_address_pairs",
    "port_security_enabled",
    "security_groups",
)

#: Rule keys the compiler understands (Neutron's rule dicts from the agent's RPC).
RULE_KEYS = (
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "source_port_range_min",
    "source_port_range_max",
    "source_ip_prefix",
    "dest_ip_prefix",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "stateful",
)


@dataclasses.dataclass(frozen=True)
class PortFacts:
    """What OVSDB says about a port, read as Neutron's native driver reads it."""

    ofport: int
    mac: str
    local_vlan: int


@dataclasses.dataclass
class DriverModel:
    """Ports, groups and members as the agent told them, plus OVSDB facts per port."""

    #: device id → the port dict the agent gave (returned by the driver's ``ports``).
    ports: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: device id → facts; a filtered port without facts has no ofport or tag yet.
    facts: dict[str, PortFacts] = dataclasses.field(default_factory=dict)
    #: trusted (unfiltered) port id → facts.
    trusted: dict[str, PortFacts] = dataclasses.field(default_factory=dict)
    rules: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)
    members: dict[str, dict[str, list[Any]]] = dataclasses.field(default_factory=dict)

    def groups_in_use(self) -> set[str]:
        """Groups of known ports and the remote groups their rules name."""
        used: set[str] = set()
        for port in self.ports.values():
            used.update(port.get("security_groups") or ())
        for sg in list(used):
            for rule in self.rules.get(sg, ()):
                for key in ("remote_group_id", "remote_address_group_id"):
                    if rule.get(key):
                        used.add(str(rule[key]))
        return used

    def collect_garbage(self) -> None:
        """Forget rules and members of groups no known port uses (native does the same)."""
        used = self.groups_in_use()
        for table in (self.rules, self.members):
            for sg in [sg for sg in table if sg not in used]:
                del table[sg]

    def to_model(
        self, closed: Iterable[str] = (), dropped_groups: Iterable[str] = ()
    ) -> dict[str, Any]:
        """The sgflows model; ports in ``closed`` get a closed (drop-everything) filter, and
        the groups in ``dropped_groups`` (which only closed ports use) are left out."""
        closed = set(closed)
        dropped = set(dropped_groups)
        devices: dict[str, dict[str, Any]] = {}
        for device, port in self.ports.items():
            facts = self.facts.get(device)
            if facts is None:
                continue
            devices[device] = _port_entry(device, port, facts, device in closed)
        for port_id, facts in self.trusted.items():
            if port_id not in devices:
                devices[port_id] = _trusted_entry(port_id, facts)
        groups: dict[str, list[dict[str, Any]]] = {}
        stateful: dict[str, bool] = {}
        for sg, rules in self.rules.items():
            if sg in dropped:
                continue
            groups[sg] = [{k: r[k] for k in RULE_KEYS if r.get(k) is not None} for r in rules]
            flags = {bool(r["stateful"]) for r in rules if r.get("stateful") is not None}
            stateful[sg] = flags != {False}
        for port in devices.values():
            for sg in port["security_groups"]:
                groups.setdefault(sg, [])
        return {
            "devices": devices,
            "security_groups": groups,
            "security_group_stateful": stateful,
            "sg_member_ips": {
                sg: _members(m) for sg, m in self.members.items() if sg not in dropped
            },
        }


def _port_entry(
    device: str, port: Mapping[str, Any], facts: PortFacts, closed: bool
) -> dict[str, Any]:
    entry = {k: port[k] for k in PORT_KEYS if port.get(k) is not None}
    entry["id"] = device
    entry.setdefault("security_groups", [])
    entry["security_groups"] = list(entry["security_groups"])
    # The MAC OVSDB reports (Interface external_ids:attached-mac), as native uses it.
    entry["mac_address"] = facts.mac
    entry["ofport"] = facts.ofport
    entry["local_vlan"] = facts.local_vlan
    if closed:
        entry.update(security_groups=[], fixed_ips=[], allowed_address_pairs=[])
        entry["port_security_enabled"] = True
        entry.pop("device_owner", None)
    return entry


def _trusted_entry(port_id: str, facts: PortFacts) -> dict[str, Any]:
    return {
        "id": port_id,
        "mac_address": facts.mac,
        "fixed_ips": [],
        "security_groups": [],
        "port_security_enabled": False,
        "ofport": facts.ofport,
        "local_vlan": facts.local_vlan,
    }


def _members(members: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{ethertype: [(ip, mac|None), ...]}`` (tuples or plain addresses) as lists."""
    out: dict[str, list[Any]] = {}
    for ethertype, entries in members.items():
        out[ethertype] = [list(e) if isinstance(e, (tuple, list)) else e for e in entries]
    return out


_GROUP_PATH = re.compile(r"^(?:security_groups|sg_member_ips|security_group_stateful)\.([^.\[]+)")
_PORT_PATH = re.compile(r"^devices\.([^.\[]+)")


def ports_concerned(
    model: DriverModel, errors: Iterable[tuple[str, str]]
) -> tuple[set[str], set[str]] | None:
    """The ports and groups the model errors concern (a group's users are concerned too), or
    ``None`` when an error concerns no port or group (then nothing can be compiled)."""
    ports: set[str] = set()
    groups: set[str] = set()
    for path, message in errors:
        if match := _PORT_PATH.match(path):
            ports.add(match.group(1))
            continue
        if match := _GROUP_PATH.match(path):
            groups.add(match.group(1))
            ports.update(_ports_using(model, match.group(1)))
            continue
        LOG.error("model error not tied to a port or group: %s: %s", path, message)
        return None
    return ports, groups


def _ports_using(model: DriverModel, sg: str) -> set[str]:
    """Ports whose groups are ``sg`` or reference it as a remote group."""
    users: set[str] = set()
    for device, port in model.ports.items():
        groups = set(port.get("security_groups") or ())
        if sg in groups:
            users.add(device)
            continue
        for own in groups:
            if any(
                sg in (r.get("remote_group_id"), r.get("remote_address_group_id"))
                for r in model.rules.get(own, ())
            ):
                users.add(device)
                break
    return users
