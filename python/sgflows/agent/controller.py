"""The controller side: RPC front end, the backend interface, and the reference backend.

:class:`ControlService` puts the methods agents call on an :class:`~sgflows.agent.rpc.RPCServer`
(with their roles), numbers notifications with a generation, and fans them out to subscribed
agents. What the methods *do* is behind :class:`ControllerBackend`; :class:`ReferenceBackend`
serves a model file or directory (the documented input of ``DESIGN.md`` §1), watches it, keeps
the agent table on disk and activates port bindings. A Neutron server is a later backend.

Methods (roles):

* ``subscribe(host)`` (agent) → ``{"epoch", "generation"}``; notifications follow.
* ``report_state(report)`` (agent) → ``"new" | "alive" | "revived"``.
* ``devices_for_host(host)`` (agent) → port ids whose active binding is on ``host``.
* ``security_group_info_for_devices(devices)`` (agent, service, admin) → Neutron's reply shape,
  for the devices with a binding on the caller's host (an agent-only principal) or any device
  (``service`` or ``admin``); devices the caller may not see are left out, as unknown ones are.
* ``activate_port_binding(port_id, host)`` (service) → the port; ``Conflict`` (409) when the
  binding is already active.
* ``list_agents()`` (admin, service; agent: its own host's row) → the agent table.

An agent-only principal may only speak for the host named like itself, and every report is
checked against :mod:`~sgflows.agent.reports` before it touches state (a bad one is
``InvalidParams``, 400, for that call alone).

Notifications go only to the subscribers that need them: an agent gets those about ports with a
binding on its host and about the groups those ports use or reference (the list of groups in
the payload cut down to those); a ``service`` or ``admin`` subscriber gets all of them. They carry
``{"epoch": controller-instance-id, "generation": n, ...}``; ``n`` counts the notifications sent
on this subscription (``subscribe`` answers the current value), so an agent that sees a jump, or
a new epoch, knows it missed something and resyncs.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import reports, rpc
from .status import utc_iso
from .store import AgentRecord, StateStore

LOG = logging.getLogger(__name__)

#: Notification names (Neutron's agent RPC topics).
RULE_UPDATED = "security_groups_rule_updated"
MEMBER_UPDATED = "security_groups_member_updated"
PORT_UPDATE = "port_update"
PORT_DELETE = "port_delete"
BINDING_ACTIVATE = "binding_activate"
BINDING_DEACTIVATE = "binding_deactivate"
NOTIFICATIONS = (
    RULE_UPDATED,
    MEMBER_UPDATED,
    PORT_UPDATE,
    PORT_DELETE,
    BINDING_ACTIVATE,
    BINDING_DEACTIVATE,
)

#: Replies to ``report_state`` (Neutron's ``agent_status``).
NEW, ALIVE, REVIVED = "new", "alive", "revived"

#: Who a notification is for: host → the payload that host's agent gets (``None``: everyone).
Audience = Mapping[str, dict[str, Any]]

#: ``sink(method, payload, audience)``; ``payload`` is what service/admin subscribers get.
EventSink = Callable[[str, dict[str, Any], "Audience | None"], None]


class ControllerBackend(abc.ABC):
    """What the controller does; the RPC layer only checks roles and shapes."""

    def __init__(self) -> None:
        self._sinks: list[EventSink] = []

    def add_event_sink(self, sink: EventSink) -> None:
        """``sink(method, payload)`` receives every notification the backend emits."""
        self._sinks.append(sink)

    def emit(self, method: str, payload: dict[str, Any], audience: Audience | None = None) -> None:
        """Send a notification to every sink (``audience``: the hosts that need it)."""
        for sink in self._sinks:
            sink(method, payload, audience)

    @abc.abstractmethod
    async def report_state(self, report: dict[str, Any]) -> str:
        """Record a report; ``new``, ``alive`` or ``revived``."""

    @abc.abstractmethod
    async def security_group_info_for_devices(
        self, devices: list[str], host: str | None = None
    ) -> dict[str, Any]:
        """Neutron's ``security_group_info_for_devices`` reply for these port ids (with
        ``host``: only those with a binding on that host)."""

    @abc.abstractmethod
    async def devices_for_host(self, host: str) -> list[str]:
        """Port ids whose active binding is on ``host``."""

    @abc.abstractmethod
    async def activate_port_binding(self, port_id: str, host: str) -> dict[str, Any]:
        """Make ``host``'s binding of the port active; ``Conflict`` if it already is."""

    @abc.abstractmethod
    async def list_agents(self) -> list[dict[str, Any]]:
        """The agent table."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start background work (watching, liveness)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Stop background work and persist state."""


# --------------------------------------------------------------------------------------------
# The model


class ModelError(ValueError):
    """The model file is not in the documented shape."""


@dataclass
class Model:
    """Security groups, ports (with their bindings) and address groups, normalised."""

    security_groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    address_groups: dict[str, list[str]] = field(default_factory=dict)


def _ip_of(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping) and isinstance(entry.get("ip_address"), str):
        return str(entry["ip_address"])
    raise ModelError(f"fixed IP must be a string or {{'ip_address': ...}}, not {entry!r}")


def _merge_model(model: Model, data: Any, source: str) -> None:
    if not isinstance(data, Mapping):
        raise ModelError(f"{source}: expected a JSON object")
    groups = data.get("security_groups", {})
    if isinstance(groups, list):
        groups = {g.get("id"): g for g in groups if isinstance(g, Mapping)}
    if not isinstance(groups, Mapping):
        raise ModelError(f"{source}: security_groups must be an object or a list")
    for sg_id, group in groups.items():
        if not isinstance(sg_id, str) or not sg_id:
            raise ModelError(f"{source}: security group without an id")
        if isinstance(group, list):  # Neutron's verbatim {sg_id: [rule, ...]}
            group = {"rules": group}
        if not isinstance(group, Mapping) or not isinstance(group.get("rules", []), list):
            raise ModelError(f"{source}: security group {sg_id}: rules must be a list")
        model.security_groups[sg_id] = {
            "stateful": bool(group.get("stateful", True)),
            "rules": [dict(r) for r in group.get("rules", [])],
        }
    ports = data.get("ports", [])
    if isinstance(ports, Mapping):
        ports = [dict(p, id=k) for k, p in ports.items()]
    if not isinstance(ports, list):
        raise ModelError(f"{source}: ports must be a list or an object")
    for port in ports:
        if not isinstance(port, Mapping) or not isinstance(port.get("id"), str):
            raise ModelError(f"{source}: every port needs a string id")
        normalised = dict(port)
        normalised["fixed_ips"] = [_ip_of(ip) for ip in port.get("fixed_ips", [])]
        bindings: dict[str, str] = {}
        for b in port.get("bindings", []):
            if not isinstance(b, Mapping) or not isinstance(b.get("host"), str):
                raise ModelError(f"{source}: port {port['id']}: bindings need a host")
            bindings[b["host"]] = str(b.get("status", "INACTIVE")).upper()
        host = port.get("binding_host") or port.get("binding:host_id")
        if isinstance(host, str) and host:
            bindings.setdefault(host, "ACTIVE")
        normalised["bindings"] = bindings
        for key in ("binding_host", "binding:host_id"):
            normalised.pop(key, None)
        model.ports[port["id"]] = normalised
    address_groups = data.get("address_groups", {})
    if isinstance(address_groups, Mapping):
        for ag_id, ag in address_groups.items():
            addresses = ag.get("addresses", []) if isinstance(ag, Mapping) else ag
            model.address_groups[str(ag_id)] = [str(a) for a in addresses]


def model_files(path: Path) -> list[Path]:
    """The files making up a model: the file itself, or a directory's ``*.json``, sorted."""
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.is_file())
    return [path]


def load_model(path: str | os.PathLike[str]) -> Model:
    """Read a model file, or every ``*.json`` of a directory (merged in name order)."""
    model = Model()
    for file in model_files(Path(path)):
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{file}: {exc}") from exc
        _merge_model(model, data, str(file))
    return model


def _ethertype(ip: str) -> str:
    return "IPv6" if ipaddress.ip_network(ip, strict=False).version == 6 else "IPv4"


def _member_entries(port: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """``(ethertype, ip, mac)`` for a port's fixed IPs and allowed address pairs."""
    mac = port.get("mac_address")
    out = [(_ethertype(ip), ip, mac) for ip in port.get("fixed_ips", [])]
    for pair in port.get("allowed_address_pairs", []) or []:
        if isinstance(pair, Mapping) and isinstance(pair.get("ip_address"), str):
            ip = pair["ip_address"]
            out.append((_ethertype(ip), ip, pair.get("mac_address") or mac))
    return out


def _rpc_rule(sg_id: str, index: int, rule: Mapping[str, Any], stateful: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rule.get("id", f"{sg_id}-rule-{index}"),
        "security_group_id": sg_id,
        "direction": rule.get("direction", "ingress"),
        "ethertype": rule.get("ethertype", "IPv4"),
        "stateful": stateful,
    }
    for key in (
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_group_id",
        "remote_address_group_id",
        "source_port_range_min",
        "source_port_range_max",
    ):
        if rule.get(key) is not None:
            out[key] = rule[key]
    prefix = rule.get("remote_ip_prefix")
    if prefix is not None:
        key = "source_ip_prefix" if out["direction"] == "ingress" else "dest_ip_prefix"
        out[key] = prefix
    return out


def _host_needs(model: Model) -> dict[str, tuple[set[str], set[str]]]:
    """host → (ports with a binding there, the groups and address groups those ports use or
    reference in a rule): what that host's agent may read and needs to hear about."""
    needs: dict[str, tuple[set[str], set[str]]] = {}
    for pid, port in model.ports.items():
        groups = set(port.get("security_groups", []))
        for sg in list(groups):
            for rule in model.security_groups.get(sg, {}).get("rules", []):
                for key in ("remote_group_id", "remote_address_group_id"):
                    if isinstance(rule.get(key), str):
                        groups.add(rule[key])
        for host in port["bindings"]:
            ports, needed = needs.setdefault(host, (set(), set()))
            ports.add(pid)
            needed.update(groups)
    return needs


def _group_audience(
    needs: Mapping[str, tuple[set[str], set[str]]], groups: list[str]
) -> dict[str, dict[str, Any]]:
    """Each host that needs some of ``groups``, with the list cut down to those."""
    out = {}
    for host, (_ports, needed) in needs.items():
        mine = [g for g in groups if g in needed]
        if mine:
            out[host] = {"security_groups": mine}
    return out


def _port_audience(
    needs: Mapping[str, tuple[set[str], set[str]]], port_id: str, payload: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each host with a binding of the port."""
    return {host: payload for host, (ports, _groups) in needs.items() if port_id in ports}


# --------------------------------------------------------------------------------------------
# The reference backend


class ReferenceBackend(ControllerBackend):
    """Serves a model path to agents, watches it, and persists the agent table (SQLite)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        state_file: str | os.PathLike[str],
        *,
        agent_down_time: float = 75.0,
        watch_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        legacy_state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.model_path = Path(model_path)
        self.state_file = Path(state_file)
        self.agent_down_time = agent_down_time
        self.watch_interval = watch_interval
        self._clock = clock
        self.store = StateStore(state_file, legacy_state_file)
        self.agents: dict[str, AgentRecord] = self.store.load_agents()
        self.active_bindings: dict[str, str] = self.store.load_bindings()
        LOG.info("loaded %d agents from %s", len(self.agents), self.state_file)
        self.model = Model()
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._bad_signature: tuple[tuple[str, int, int], ...] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reload(initial=True)

    # -- model and watching -----------------------------------------------------------------

    def _current_signature(self) -> tuple[tuple[str, int, int], ...]:
        sig = []
        with contextlib.suppress(OSError):
            for file in model_files(self.model_path):
                st = file.stat()
                sig.append((str(file), st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def _active_host(self, port: Mapping[str, Any]) -> str | None:
        bindings: dict[str, str] = port.get("bindings", {})
        override = self.active_bindings.get(port["id"])
        if override is not None and override in bindings:
            return override
        for host, state in sorted(bindings.items()):
            if state == "ACTIVE":
                return host
        return None

    def _reload(self, *, initial: bool = False) -> bool:
        signature = self._current_signature()
        if signature == self._signature or signature == self._bad_signature:
            return False
        try:
            new = load_model(self.model_path)
        except (ModelError, ValueError) as exc:
            self._bad_signature = signature
            LOG.error("model %s rejected, keeping the previous one: %s", self.model_path, exc)
            return False
        old = self.model
        old_active = {pid: self._active_host(p) for pid, p in old.ports.items()}
        self.model = new
        self._signature = signature
        self._bad_signature = None
        # Drop activations that name a host the port no longer has.
        gone = [
            pid
            for pid, host in self.active_bindings.items()
            if pid not in new.ports or host not in new.ports[pid]["bindings"]
        ]
        for pid in gone:
            del self.active_bindings[pid]
        if gone:
            self.store.drop_bindings(gone)
        LOG.info(
            "model %s: %d security groups, %d ports",
            self.model_path,
            len(new.security_groups),
            len(new.ports),
        )
        if not initial:
            self._notify_changes(old, new, old_active)
        return True

    def _members(self, model: Model) -> dict[str, set[tuple[str, str, str | None]]]:
        members: dict[str, set[tuple[str, str, str | None]]] = {}
        for port in model.ports.values():
            for sg in port.get("security_groups", []):
                members.setdefault(sg, set()).update(_member_entries(port))
        return members

    def _notify_changes(self, old: Model, new: Model, old_active: Mapping[str, str | None]) -> None:
        # Who needs what, before or after the change: a host that lost a port still hears
        # about its deletion, one that gained it hears about its groups.
        needs = _host_needs(old)
        for host, (ports, groups) in _host_needs(new).items():
            had_ports, had_groups = needs.setdefault(host, (set(), set()))
            had_ports.update(ports)
            had_groups.update(groups)
        changed_groups = sorted(
            sg
            for sg in set(old.security_groups) | set(new.security_groups)
            if old.security_groups.get(sg) != new.security_groups.get(sg)
        )
        if changed_groups:
            self.emit(
                RULE_UPDATED,
                {"security_groups": changed_groups},
                _group_audience(needs, changed_groups),
            )
        old_members, new_members = self._members(old), self._members(new)
        member_groups = sorted(
            sg
            for sg in set(old_members) | set(new_members)
            if old_members.get(sg) != new_members.get(sg)
        )
        if member_groups:
            self.emit(
                MEMBER_UPDATED,
                {"security_groups": member_groups},
                _group_audience(needs, member_groups),
            )
        for pid, port in sorted(new.ports.items()):
            before = old.ports.get(pid)
            if before is None or {k: v for k, v in before.items() if k != "bindings"} != {
                k: v for k, v in port.items() if k != "bindings"
            }:
                update: dict[str, Any] = {"port": self._rpc_port(port)}
                self.emit(PORT_UPDATE, update, _port_audience(needs, pid, update))
        for pid in sorted(set(old.ports) - set(new.ports)):
            payload: dict[str, Any] = {"port_id": pid}
            self.emit(PORT_DELETE, payload, _port_audience(needs, pid, payload))
        for pid, port in sorted(new.ports.items()):
            hosts = set(port["bindings"]) | set(old.ports.get(pid, {}).get("bindings", {}))
            self._emit_binding_change(pid, old_active.get(pid), self._active_host(port), hosts)

    def _emit_binding_change(
        self, port_id: str, before: str | None, after: str | None, hosts: Iterable[str]
    ) -> None:
        """(De)activation notices, for the hosts that have a binding of the port."""
        if before == after:
            return
        hosts = set(hosts)
        if before is not None:
            payload = {"port_id": port_id, "host": before}
            self.emit(BINDING_DEACTIVATE, payload, {h: payload for h in hosts | {before}})
        if after is not None:
            payload = {"port_id": port_id, "host": after}
            self.emit(BINDING_ACTIVATE, payload, {h: payload for h in hosts | {after}})

    def check_model(self) -> bool:
        """Reload the model if its files changed; True if a new model was taken."""
        return self._reload()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                self._reload()
            except Exception:
                LOG.exception("model watch failed")

    async def _liveness(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.agent_down_time / 4))
            try:
                self.check_liveness()
            except Exception:  # a failing check must not end liveness for good
                LOG.exception("liveness check failed")

    def check_liveness(self) -> list[str]:
        """Mark agents silent for longer than ``agent_down_time`` dead; returns the newly dead."""
        now = self._clock()
        dead = []
        for rec in self.agents.values():
            if rec.alive and now - rec.heartbeat > self.agent_down_time:
                rec.alive = False
                dead.append(rec.host)
                LOG.warning("agent %s is dead: no report for %.1fs", rec.host, now - rec.heartbeat)
        if dead:
            self.store.mark_dead(dead)
        return dead

    async def start(self) -> None:
        """Start watching the model and the agents' liveness."""
        self._tasks = [
            asyncio.ensure_future(self._watch()),
            asyncio.ensure_future(self._liveness()),
        ]

    async def stop(self) -> None:
        """Stop the background tasks and close the database (every change is already in it)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.store.close()

    # -- the methods ------------------------------------------------------------------------

    async def report_state(self, report: dict[str, Any]) -> str:
        """Neutron's semantics: ``new`` for an unknown host, ``revived`` after it was dead.

        ``report`` has passed :func:`~sgflows.agent.reports.validate_report`; it is stored as is
        in the agent's row (one upsert)."""
        host = str(report["host"])
        now = self._clock()
        rec = self.agents.get(host)
        if rec is None:
            reply = NEW
            rec = self.agents[host] = AgentRecord(host=host, first_seen=now, heartbeat=now)
            LOG.info("new agent %s", host)
        elif not rec.alive or now - rec.heartbeat > self.agent_down_time:
            reply = REVIVED
            LOG.info("agent %s revived after %.1fs", host, now - rec.heartbeat)
        else:
            reply = ALIVE
        if report.get("restarted"):
            LOG.info("agent %s restarted (previous stop: %s)", host, report.get("previous_stop"))
            rec.last_restart = {"at": utc_iso(now), "previous_stop": report.get("previous_stop")}
        rec.heartbeat = now
        rec.alive = True
        rec.report = report
        self.store.put_agent(rec)
        return reply

    def _rpc_port(self, port: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in port.items() if k != "bindings"}
        out["device"] = port["id"]
        out.setdefault("security_groups", [])
        out.setdefault("port_security_enabled", True)
        out["binding:host_id"] = self._active_host(port) or ""
        return out

    async def security_group_info_for_devices(
        self, devices: list[str], host: str | None = None
    ) -> dict[str, Any]:
        """``devices``, ``security_groups`` (rules with ``stateful``) and ``sg_member_ips``.

        With ``host``, a device counts only if it has a binding (active or not: a migration
        target prepares before activation) on that host; others are left out like unknown
        ones, so an agent learns nothing about ports elsewhere, not even that they exist."""
        model = self.model
        ports = {
            d: self._rpc_port(model.ports[d])
            for d in devices
            if d in model.ports and (host is None or host in model.ports[d]["bindings"])
        }
        groups: dict[str, list[dict[str, Any]]] = {}
        remote_groups: set[str] = set()
        remote_address_groups: set[str] = set()
        for port in ports.values():
            for sg in port["security_groups"]:
                if sg in groups:
                    continue
                group = model.security_groups.get(sg, {"stateful": True, "rules": []})
                rules = [
                    _rpc_rule(sg, i, r, group["stateful"]) for i, r in enumerate(group["rules"])
                ]
                groups[sg] = rules
                remote_groups.update(r["remote_group_id"] for r in rules if "remote_group_id" in r)
                remote_address_groups.update(
                    r["remote_address_group_id"] for r in rules if "remote_address_group_id" in r
                )
        members = self._members(model)
        member_ips: dict[str, dict[str, list[list[str | None]]]] = {}
        for sg in sorted(remote_groups):
            by_type: dict[str, list[list[str | None]]] = {"IPv4": [], "IPv6": []}
            for ethertype, ip, mac in sorted(members.get(sg, set()), key=lambda e: (e[0], e[1])):
                by_type[ethertype].append([ip, mac])
            member_ips[sg] = by_type
        for ag in sorted(remote_address_groups):
            by_type = {"IPv4": [], "IPv6": []}
            for cidr in model.address_groups.get(ag, []):
                by_type[_ethertype(cidr)].append([cidr, None])
            member_ips[ag] = by_type
        return {"devices": ports, "security_groups": groups, "sg_member_ips": member_ips}

    async def devices_for_host(self, host: str) -> list[str]:
        """Ports whose active binding is on ``host``."""
        return sorted(
            pid for pid, port in self.model.ports.items() if self._active_host(port) == host
        )

    async def activate_port_binding(self, port_id: str, host: str) -> dict[str, Any]:
        """Activate the inactive binding of ``port_id`` on ``host`` (live migration)."""
        port = self.model.ports.get(port_id)
        if port is None:
            raise rpc.NotFound(f"port {port_id} not found", {"port_id": port_id})
        if host not in port["bindings"]:
            raise rpc.NotFound(
                f"port {port_id} has no binding for host {host}",
                {"port_id": port_id, "host": host},
            )
        before = self._active_host(port)
        if before == host:
            # Neutron: PortBindingAlreadyActive, HTTP 409.
            raise rpc.Conflict(
                f"binding for port {port_id} on host {host} is already active",
                {"port_id": port_id, "host": host},
            )
        # No await between the check and the change: concurrent activations serialise here.
        self.active_bindings[port_id] = host
        LOG.info("port %s: binding on %s activated (was %s)", port_id, host, before)
        self.store.set_binding(port_id, host)
        self._emit_binding_change(port_id, before, host, port["bindings"])
        return self._rpc_port(port)

    async def list_agents(self) -> list[dict[str, Any]]:
        """The agent table with liveness computed now."""
        now = self._clock()
        rows = []
        for host, rec in sorted(self.agents.items()):
            report = rec.report
            rows.append(
                {
                    "host": host,
                    "alive": rec.alive and now - rec.heartbeat <= self.agent_down_time,
                    "state": report.get("state"),
                    "state_since": report.get("state_since"),
                    "last_report": utc_iso(rec.heartbeat),
                    "seconds_since_report": round(now - rec.heartbeat, 3),
                    "first_seen": utc_iso(rec.first_seen),
                    "restarted": report.get("restarted", False),
                    "last_restart": rec.last_restart,
                    "start_flag": report.get("start_flag"),
                    "degraded_reasons": report.get("degraded_reasons", {}),
                    "last_sync": report.get("last_sync"),
                    "syncs": report.get("syncs", {}),
                    "agent_type": report.get("agent_type"),
                    "uuid": report.get("uuid"),
                    "configurations": report.get("configurations", {}),
                    "custom": report.get("custom", {}),
                }
            )
        return rows


# --------------------------------------------------------------------------------------------
# The RPC front end


def _require_str_list(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise rpc.InvalidParams(f"{name} must be an array of strings")
    return value


@dataclass
class Subscription:
    """One subscribed connection: the host it speaks for and its own notification count."""

    host: str
    #: ``service``/``admin`` principals hear every notification, agents what concerns them.
    sees_all: bool
    generation: int = 0


class ControlService:
    """Registers the controller's methods on a server and fans notifications out."""

    def __init__(self, server: rpc.RPCServer, backend: ControllerBackend) -> None:
        self.server = server
        self.backend = backend
        self.epoch = str(uuid.uuid4())
        #: Notifications published by this instance (each reaches only its audience).
        self.published = 0
        self.subscribers: dict[rpc.Connection, Subscription] = {}
        backend.add_event_sink(self.publish)
        server.on_disconnect(self._forget)
        server.register("subscribe", self._subscribe, roles={"agent"}, params=(str,))
        server.register("report_state", self._report_state, roles={"agent"}, params=(dict,))
        server.register("devices_for_host", self._devices_for_host, roles={"agent"}, params=(str,))
        server.register(
            "security_group_info_for_devices",
            self._sg_info,
            roles={"agent", "service", "admin"},
            params=(list,),
        )
        server.register(
            "activate_port_binding",
            self._activate,
            roles={"service"},
            params=(str, str),
        )
        server.register("list_agents", self._list_agents, roles={"admin", "service", "agent"})

    @staticmethod
    def _sees_all(conn: rpc.Connection) -> bool:
        return "service" in conn.roles or "admin" in conn.roles

    @classmethod
    def _check_host(cls, conn: rpc.Connection, host: str) -> None:
        """An agent-only principal may speak only for the host it is named after."""
        assert conn.principal is not None
        if cls._sees_all(conn):
            return
        if host != conn.principal.name:
            raise rpc.Forbidden(
                f"{conn.principal.name} may not act for host {host}",
                {"principal": conn.principal.name, "host": host},
            )

    def publish(
        self, method: str, payload: dict[str, Any], audience: Audience | None = None
    ) -> None:
        """Queue a notification to the subscribers in ``audience`` (all when ``None``), each
        numbered on its own subscription."""
        self.published += 1
        sent = 0
        for conn, sub in list(self.subscribers.items()):
            if sub.sees_all or audience is None:
                body = payload
            elif sub.host in audience:
                body = audience[sub.host]
            else:
                continue
            sub.generation += 1
            sent += 1
            conn.notify(method, [dict(body, epoch=self.epoch, generation=sub.generation)])
        LOG.info("notify %s to %d of %d subscribers", method, sent, len(self.subscribers))

    def _forget(self, conn: rpc.Connection) -> None:
        sub = self.subscribers.pop(conn, None)
        if sub is not None:
            LOG.info("agent %s disconnected", sub.host)

    async def _subscribe(self, conn: rpc.Connection, host: str) -> dict[str, Any]:
        self._check_host(conn, host)
        sub = self.subscribers[conn] = Subscription(host, self._sees_all(conn))
        return {"epoch": self.epoch, "generation": sub.generation}

    async def _report_state(self, conn: rpc.Connection, report: dict[str, Any]) -> str:
        try:
            checked = reports.validate_report(report)
        except reports.ReportError as exc:
            # Once per connection: a misbehaving agent must not be able to flood the log.
            conn.warn_once("bad-report", "report refused: %s", exc)
            raise rpc.InvalidParams(str(exc), {"field": exc.field}) from exc
        self._check_host(conn, checked["host"])
        return await self.backend.report_state(checked)

    async def _devices_for_host(self, conn: rpc.Connection, host: str) -> list[str]:
        self._check_host(conn, host)
        return await self.backend.devices_for_host(host)

    async def _sg_info(self, conn: rpc.Connection, devices: list[Any]) -> dict[str, Any]:
        assert conn.principal is not None
        host = None if self._sees_all(conn) else conn.principal.name
        return await self.backend.security_group_info_for_devices(
            _require_str_list("devices", devices), host
        )

    async def _activate(self, conn: rpc.Connection, port_id: str, host: str) -> dict[str, Any]:
        return await self.backend.activate_port_binding(port_id, host)

    async def _list_agents(self, conn: rpc.Connection) -> list[dict[str, Any]]:
        rows = await self.backend.list_agents()
        if self._sees_all(conn):
            return rows
        # An agent-only principal sees the row of its own host (``sgflows status`` run with
        # the agent's configuration), never another host's.
        assert conn.principal is not None
        return [row for row in rows if row.get("host") == conn.principal.name]


# --------------------------------------------------------------------------------------------
# ``sgflows status``: whatever the controller answers is printed, never a traceback


def _cell(value: Any, limit: int = 80) -> str:
    """One table cell from any value: printable, on one line, at most ``limit`` characters."""
    if value is None or value == "":
        return "-"
    if isinstance(value, (bytes, bytearray)):
        text = "0x" + bytes(value[:32]).hex()
    else:
        text = str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _restart_cell(last_restart: Any) -> str:
    if not isinstance(last_restart, Mapping):
        return "-"
    return f"{_cell(last_restart.get('at'))} ({_cell(last_restart.get('previous_stop'))})"


def _custom_cell(custom: Any) -> str:
    if not isinstance(custom, Mapping):
        return "-" if not custom else "?"
    return ",".join(
        f"{_cell(name, 40)}={'ok' if entry.get('ok') is True else 'ERR'}"
        for name, entry in sorted(custom.items(), key=lambda kv: str(kv[0]))
        if isinstance(entry, Mapping)
    )


def _state_cell(row: Mapping[Any, Any]) -> str:
    state = _cell(row.get("state"), 20)
    reasons = row.get("degraded_reasons")
    if isinstance(reasons, Mapping) and reasons:
        items = sorted(reasons.items(), key=lambda kv: str(kv[0]))
        state += "(" + ";".join(f"{_cell(k, 40)}:{_cell(v, 80)}" for k, v in items) + ")"
    elif reasons:
        state += "(?)"
    return state


def format_agents_table(rows: Any) -> str:
    """``sgflows status`` output: one line per agent, custom fields summarised.

    ``rows`` is what the controller answered; anything that is not a list of objects shows as
    ``?`` cells rather than an error, so a confused controller cannot break the command."""
    header = ["HOST", "STATE", "ALIVE", "SINCE", "LAST REPORT", "LAST RESTART", "CUSTOM"]
    lines = [header]
    for row in rows if isinstance(rows, (list, tuple)) else []:
        if not isinstance(row, Mapping):
            lines.append(["?"] * len(header))
            continue
        lines.append(
            [
                _cell(row.get("host")),
                _state_cell(row),
                "yes" if row.get("alive") is True else "DEAD",
                _cell(row.get("state_since")),
                _cell(row.get("last_report")),
                _restart_cell(row.get("last_restart")),
                _custom_cell(row.get("custom")) or "-",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"bytes_hex": bytes(value).hex()}
    return repr(value)


def _json_key(key: Any) -> str | int | float | bool | None:
    return key if isinstance(key, (str, int, float, bool)) or key is None else repr(key)


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with bytes, odd keys, NaN and deep nesting made printable as JSON."""
    if depth > 64:
        return "…"
    if isinstance(value, Mapping):
        return {str(_json_key(k)): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    return value


def format_agents_json(rows: Any) -> str:
    """``sgflows status --json`` output: the answer as JSON, bytes shown as hex."""
    return json.dumps(_json_safe(rows), indent=2, sort_keys=True, default=_json_default)
