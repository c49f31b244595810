"""What the driver knows, and what changed since the last apply.

The agent hands the driver port dicts, group rules and group members in Neutron's shapes;
OVSDB gives each port's OpenFlow number, MAC and local VLAN. :class:`DriverModel` holds both,
remembers which ports, groups and member sets changed, and turns them into a
:class:`sgflows.switch.flowstate.Update` (the documented model's shapes) for the compiler
session: :meth:`DriverModel.take_update` (what changed) or :meth:`DriverModel.full_update`
(everything). :meth:`DriverModel.to_model` is the same knowledge as one model in Neutron's RPC
payload shape, for a whole compile and the reference evaluator.

A model error never leaves a port open and never fails the other ports:
:func:`ports_concerned` finds the ports an error concerns, and both builders replace them by
closed ports (no groups, no addresses: nothing but DHCP/ND bootstrap passes), so that they keep
a filter instead of falling through to the agent's ``NORMAL``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import sgflows
from sgflows.switch.flowstate import Group, Update

LOG = logging.getLogger(__name__)

#: Port-dict keys the model reads; the rest of what the agent sends (``of_port`` objects,
#: bindings, extension data) stays out of the model.
PORT_KEYS = (
    "id",
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
#: Rule keys the agent sends that say nothing the filter needs (no warning).
IGNORED_RULE_KEYS = frozenset({"id", "security_group_id", "tenant_id", "project_id"})
#: Protocols whose port ranges Open vSwitch cannot match: Neutron opens the whole protocol.
_UNMATCHABLE_PORTS = frozenset({"dccp", "udplite", "33", "136"})


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

    #: What changed since the last update was taken (port, group and member-set ids).
    dirty_ports: set[str] = dataclasses.field(default_factory=set)
    dirty_groups: set[str] = dataclasses.field(default_factory=set)
    dirty_members: set[str] = dataclasses.field(default_factory=set)
    #: member-set id → how many rules name it, by kind (``remote_group_id`` or
    #: ``remote_address_group_id``): Neutron sends both kinds as members, the session keeps
    #: security groups and address groups apart.
    _refs: dict[str, Counter[str]] = dataclasses.field(default_factory=dict)

    # -- what the agent says ----------------------------------------------------------------

    def set_port(self, device: str, port: dict[str, Any], facts: PortFacts | None) -> None:
        """A filtered port (without facts: no OpenFlow port, nothing to filter)."""
        if facts is None:
            self.remove_port(device)
            return
        self.ports[device] = port
        self.facts[device] = facts
        self.dirty_ports.add(device)

    def remove_port(self, device: str) -> None:
        """A filtered port is gone."""
        self.ports.pop(device, None)
        self.facts.pop(device, None)
        self.dirty_ports.add(device)

    def set_trusted(self, port_id: str, facts: PortFacts | None) -> None:
        """A trusted port (``None``: gone, or no OpenFlow port)."""
        if facts is None:
            self.trusted.pop(port_id, None)
        else:
            self.trusted[port_id] = facts
        self.dirty_ports.add(port_id)

    def set_rules(self, sg: str, rules: Iterable[Mapping[str, Any]]) -> None:
        """A group's rules, all of them."""
        old = self.rules.get(sg)
        self._count_refs(old or (), -1)
        self.rules[sg] = [dict(r) for r in rules]
        self._count_refs(self.rules[sg], +1)
        self.dirty_groups.add(sg)
        if bool(old) != bool(self.rules[sg]):
            # Ports name only groups with rules (see _port_entry): its users change.
            self.dirty_ports.update(d for d, p in self.ports.items() if sg in _groups_of(p))

    def set_members(self, sg: str, members: Mapping[str, Iterable[Any]]) -> None:
        """A remote group's (or address group's) members: ``{ethertype: [(ip, mac), ...]}``."""
        self.members[sg] = {k: list(v) for k, v in members.items()}
        self.dirty_members.add(sg)

    def _count_refs(self, rules: Iterable[Mapping[str, Any]], step: int) -> None:
        for rule in rules:
            for kind in ("remote_group_id", "remote_address_group_id"):
                target = rule.get(kind)
                if not target:
                    continue
                counts = self._refs.setdefault(str(target), Counter())
                before = {k for k, n in counts.items() if n > 0}
                counts[kind] += step
                if {k for k, n in counts.items() if n > 0} != before:
                    # The member set moves between the session's id spaces.
                    self.dirty_members.add(str(target))

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
        for sg in [sg for sg in self.rules if sg not in used]:
            self._count_refs(self.rules.pop(sg), -1)
            self.dirty_groups.add(sg)
        for sg in [sg for sg in self.members if sg not in used]:
            del self.members[sg]
            self.dirty_members.add(sg)

    # -- what the compiler session gets -----------------------------------------------------

    def take_update(self, closed: Iterable[str] = (), dropped: Iterable[str] = ()) -> Update:
        """The new state of what changed since the last update (then nothing is dirty)."""
        closed, dropped = set(closed), set(dropped)
        update = Update()
        for device in self.dirty_ports:
            entry = self._port_or_trusted(device, device in closed)
            update.ports[device] = entry
        for sg in self.dirty_groups:
            update.groups[sg] = self._group(sg, dropped)
        for sg in self.dirty_members:
            update.members[sg], update.address_groups[sg] = self._member_sets(sg, dropped)
        self.dirty_ports.clear()
        self.dirty_groups.clear()
        self.dirty_members.clear()
        return update

    def full_update(self, closed: Iterable[str] = (), dropped: Iterable[str] = ()) -> Update:
        """Everything, as a complete update (what it does not name is gone)."""
        self.dirty_ports = set(self.ports) | set(self.trusted)
        self.dirty_groups = set(self.rules)
        self.dirty_members = set(self.members)
        update = self.take_update(closed, dropped)
        update.ports = {k: v for k, v in update.ports.items() if v is not None}
        update.complete = True
        return update

    def _port_or_trusted(self, device: str, closed: bool) -> dict[str, Any] | None:
        facts = self.facts.get(device)
        if device in self.ports and facts is not None:
            return _port_entry(device, self.ports[device], facts, closed, self.rules)
        trusted = self.trusted.get(device)
        return _trusted_entry(device, trusted) if trusted is not None else None

    def _group(self, sg: str, dropped: set[str]) -> Group | None:
        rules = self.rules.get(sg)
        if rules is None or sg in dropped:
            return None
        return Group(tuple(rule_entry(sg, i, r) for i, r in enumerate(rules)), _stateful(rules))

    def _member_sets(
        self, sg: str, dropped: set[str]
    ) -> tuple[dict[str, list[Any]] | None, dict[str, list[Any]] | None]:
        """The set as the session's remote-group members and/or address group."""
        members = self.members.get(sg)
        if members is None or sg in dropped:
            return None, None
        kinds = {k for k, n in self._refs.get(sg, Counter()).items() if n > 0}
        value = _members(members)
        as_group = value if "remote_group_id" in kinds or not kinds else None
        as_address_group = value if "remote_address_group_id" in kinds else None
        return as_group, as_address_group

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
            devices[device] = _port_entry(device, port, facts, device in closed, self.rules)
        for port_id, facts in self.trusted.items():
            if port_id not in devices:
                devices[port_id] = _trusted_entry(port_id, facts)
        groups: dict[str, list[dict[str, Any]]] = {}
        stateful: dict[str, bool] = {}
        for sg, rules in self.rules.items():
            if sg in dropped:
                continue
            groups[sg] = [{k: r[k] for k in RULE_KEYS if r.get(k) is not None} for r in rules]
            stateful[sg] = _stateful(rules)
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


def _stateful(rules: Iterable[Mapping[str, Any]]) -> bool:
    """A group's statefulness from its rules' flags (Neutron copies it to every rule)."""
    flags = {bool(r["stateful"]) for r in rules if r.get("stateful") is not None}
    return flags != {False}


def rule_entry(sg: str, index: int, rule: Mapping[str, Any]) -> dict[str, Any]:
    """A rule as the compiler reads it; keys it does not know are left out with a warning
    (a refused rule would leave new ports unfiltered), and a port range on a protocol Open
    vSwitch cannot match ports of is widened by the compiler, as Neutron does: said here."""
    unknown = sorted(k for k in rule if k not in RULE_KEYS and k not in IGNORED_RULE_KEYS)
    if unknown:
        LOG.warning("group %s rule %d: unknown keys ignored: %s", sg, index, ", ".join(unknown))
    entry = {k: rule[k] for k in RULE_KEYS if rule.get(k) is not None}
    ranges = [k for k in entry if k.startswith(("port_range", "source_port_range"))]
    if ranges and str(entry.get("protocol", "")).lower() in _UNMATCHABLE_PORTS:
        LOG.warning(
            "group %s rule %d: Open vSwitch cannot match %s ports: the rule allows the whole "
            "protocol, as in Neutron",
            sg,
            index,
            entry["protocol"],
        )
    return entry


def _groups_of(port: Mapping[str, Any]) -> list[str]:
    return [str(g) for g in port.get("security_groups") or ()]


def _port_entry(
    device: str,
    port: Mapping[str, Any],
    facts: PortFacts,
    closed: bool,
    rules: Mapping[str, list[Any]],
) -> dict[str, Any]:
    entry = {k: port[k] for k in PORT_KEYS if port.get(k) is not None}
    entry["id"] = device
    # A group without rules adds nothing to a port's policy, and the agent cannot tell
    # whether it is stateful (Neutron copies the flag onto rules): naming it could make a
    # stateless port look mixed (refused, so closed).
    entry["security_groups"] = [g for g in _groups_of(port) if rules.get(g)]
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


def find_closed(model: DriverModel, options: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """The ports to close and the groups to leave out so that the whole model compiles (a
    whole compile per round: only when something is wrong). Raises :class:`sgflows.ModelError`
    when an error concerns no port or group."""
    closed: set[str] = set()
    dropped: set[str] = set()
    while True:
        try:
            sgflows.compile(model.to_model(closed, dropped), **options)
        except sgflows.FlowLimitError:
            raise
        except sgflows.ModelError as e:
            concerned = ports_concerned(model, e.errors)
            if concerned is None or (concerned[0] <= closed and concerned[1] <= dropped):
                raise
            for path, message in e.errors:
                LOG.error("model error, closing its ports: %s: %s", path, message)
            closed |= concerned[0]
            dropped |= concerned[1]
            continue
        return closed, dropped


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
