"""From the controller's reply and the switch's ports to compiler-session diffs.

:func:`build_model` joins what the controller says (Neutron's ``security_group_info_for_devices``
reply: ports with their ``local_vlan``, rules, members) with what OVSDB says (which ports are
plugged here, their ofport): a port on the switch is filtered only once both are known, and a
port the controller has not described (yet, or at all) gets a *closed* filter — no groups, no
addresses: nothing but the pipeline's DHCP/ND bootstrap passes. That is standalone mode's fail
closed. A port the controller describes but the switch does not have is left out.

:class:`ModelSession` keeps one :class:`sgflows.Compiler` and turns each new model into one
batch of changes (``Compiler.apply``), so that a rule or port change costs a diff of its own
size; a change the batch cannot express (members, statefulness, an error) rebuilds the session
and diffs the whole result instead.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import sgflows

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


class ModelSession:
    """One compiler session under our cookie; :meth:`update` gives each change's diff."""

    def __init__(self, cookie: int, options: Mapping[str, Any] | None = None) -> None:
        self.cookie = cookie
        self._options = dict(STANDALONE_OPTIONS if options is None else options)
        self._compiler: sgflows.Compiler | None = None
        self._model: dict[str, Any] | None = None
        self.rebuilds = 0

    @property
    def compiler(self) -> sgflows.Compiler | None:
        """The session (``None`` before the first model)."""
        return self._compiler

    def start(self, model: dict[str, Any]) -> sgflows.Compiler:
        """A new session on ``model`` (raises ``sgflows.ModelError``); nothing is kept
        until :meth:`commit`."""
        return sgflows.Compiler(model, cookie=self.cookie, **self._options)

    def commit(self, compiler: sgflows.Compiler, model: dict[str, Any]) -> None:
        """``compiler`` (holding ``model``) is what the switch now has."""
        self._compiler, self._model = compiler, model

    def forget(self) -> None:
        """The switch lost what we knew it had: the next change is a full sync."""
        self._compiler = self._model = None

    def update(self, model: dict[str, Any]) -> tuple[sgflows.Compiler, sgflows.FlowDiff]:
        """The diff from the committed model to ``model``, and the session holding it.

        The committed session is changed in place when the change is a plain batch; the
        caller commits it once the diff is on the switch (or :meth:`forget`\\ s it)."""
        if self._compiler is None or self._model is None:
            raise RuntimeError("no committed session: do a full sync first")
        batch = _batch(self._model, model)
        if batch is not None:
            try:
                return self._compiler, self._compiler.apply(batch)
            except sgflows.ModelError as exc:
                LOG.info("batch not applicable (%s): rebuilding the session", exc)
                # The session may be half-changed: it is dropped below either way.
        self.rebuilds += 1
        old = self._compiler.result()
        fresh = self.start(model)
        self._compiler = None  # no longer what the switch has, until committed
        return fresh, fresh.result().diff_from(old)


def _batch(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[Any, ...]] | None:
    """``Compiler.apply`` changes from ``old`` to ``new``, or ``None`` when members or
    statefulness changed (the session is rebuilt then)."""
    if old.get("sg_member_ips") != new.get("sg_member_ips") or old.get(
        "security_group_stateful"
    ) != new.get("security_group_stateful"):
        return None
    batch: list[tuple[Any, ...]] = []
    old_groups, new_groups = old["security_groups"], new["security_groups"]
    for group, rules in sorted(new_groups.items()):
        if old_groups.get(group) != rules:
            if group not in old_groups or _statefulness(old_groups[group]) != _statefulness(rules):
                return None
            batch.append(("set_rules", group, rules))
    old_ports, new_ports = old["devices"], new["devices"]
    for port_id, port in sorted(new_ports.items()):
        if port_id not in old_ports:
            batch.append(("add_port", _documented_port(port)))
        elif old_ports[port_id] != port:
            batch.append(("update_port", _documented_port(port)))
    batch.extend(("remove_port", port_id) for port_id in sorted(set(old_ports) - set(new_ports)))
    return batch


#: The port keys a batch's ``add_port``/``update_port`` reads (it takes the documented
#: shape, where Neutron's extra keys such as ``device`` are errors).
_PORT_KEYS = (
    "id", "mac_address", "fixed_ips", "allowed_address_pairs", "port_security_enabled",
    "security_groups", "device_owner", "network_id", "ofport", "local_vlan",
)  # fmt: skip


def _documented_port(port: Mapping[str, Any]) -> dict[str, Any]:
    return {k: port[k] for k in _PORT_KEYS if k in port}


def _statefulness(rules: Any) -> set[Any]:
    return {r.get("stateful") for r in rules if isinstance(r, Mapping)}
