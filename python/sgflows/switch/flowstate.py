"""What is installed on an Open vSwitch bridge, and the one transaction that changes it.

:class:`FlowState` keeps a compiler session (:class:`sgflows.Compiler`) and a mirror of the
model it holds, and turns the new state of some entities into one atomic ``ovs-ofctl bundle``.
The caller says what ports, groups and member sets look like *now*; :class:`FlowState` works
out the session changes (``add_port``/``update_port``/``remove_port``, ``set_rules``,
``set_stateful``, ``add_members``/``remove_members``), applies them as one
``Compiler.apply`` batch and renders its :class:`sgflows.FlowDiff` as the bundle: an O(change)
bundle, computed by the session (which does not depend on how the session computes it).

API (shared by the Neutron firewall driver and the agent's Open vSwitch dataplane)::

    state = FlowState(options, places=DRIVER_PLACES)   # options: Compiler keyword options
    change = state.update(Update(ports={"p1": port_entry, "p2": None},
                                 groups={"web": Group(rules, stateful=True)},
                                 members={"web": {"IPv4": ["10.0.0.5"]}}),
                          cookie, ofctl)              # sgflows.ModelError: nothing changed
    state.install(change, ofctl)                      # send it; committed once taken
    state.forget()                                    # the bridge lost our flows

- Entries are in the documented model's shapes (``docs/model.md``): a port as in ``ports``
  (with ``ofport`` and ``local_vlan``), a group's rules as in its ``rules``, members as one
  group of ``members`` (``{"IPv4": [ip or [ip, mac], ...], "IPv6": [...]}``), an address
  group the same way. ``None`` means gone; ``Update(complete=True)`` says that every entity
  it does not name is gone (a whole-model sync).
- The session never derives remote-group members from ports: members are what the caller says.
- A refused update raises :class:`sgflows.ModelError` and changes nothing (session and mirror).
- Every change is one bundle (all or nothing): a port's table-60 flow is never removed before
  its replacement is in, so no packet falls through to the agent's ``NORMAL`` unfiltered.
- A *full* sync happens when the switch's state is not known to match the session: the
  first install, a new cookie (a new agent process), after :meth:`FlowState.forget`
  (ovs-vswitchd restarted, or the caller lost track), and after an update that was never
  :meth:`committed <committed>` (its bundle failed). Its kind is the caller's mode
  (:class:`FullSync`, :mod:`sgflows.switch.bundles`): ``REPLACE`` (driver) deletes every flow
  in the caller's :class:`Places` whatever its cookie and adds every flow of the session in one
  ordered atomic bundle, so the switch goes from the old policy to the new one in one step and
  no conjunction id of an old flow survives beside a new flow reusing it; ``DIFF``
  (standalone) changes only what ``ovs-ofctl diff-flows`` shows wrong and never touches other
  cookies' flows.
- A full sync of at least ``cold_min_ports`` ports onto a bridge with none of the tables it
  loads populated (but for the entry table) is a *cold load* instead
  (:mod:`sgflows.switch.coldload`): the flows go over several connections at once, the entry
  flows last, so no packet meets a partial load.

Nothing here imports Neutron.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import sgflows

from .bundles import DRIVER_PLACES, Places, diff_bundle, dump_tables, flow_line, replace_bundle
from .coldload import DEFAULT_CONNECTIONS, entry_table, load_parallel

LOG = logging.getLogger(__name__)

__all__ = [
    "COLD_MIN_PORTS",
    "DRIVER_PLACES",
    "Change",
    "DiffingOfctl",
    "FlowState",
    "FullSync",
    "Group",
    "MemberSet",
    "Ofctl",
    "Places",
    "Update",
]


#: Fewest ports for a first install by cold load. Our choice between two measurements
#: (docs/economy.md): on a bridge without ports a cold load took about twice one bundle's
#: time, with 1,000 ports about half; in between is not measured.
COLD_MIN_PORTS = 100

#: The model a session starts from; everything arrives as changes.
_EMPTY_MODEL: Mapping[str, Any] = {"ports": [], "security_groups": {}}


class Ofctl(Protocol):
    """How flows reach the bridge: ``ovs-ofctl`` through the agent's privileged helper
    (driver mode) or directly (standalone). Every method raises if the switch refuses."""

    def bundle(self, text: str) -> None:
        """Apply ``ovs-ofctl bundle`` input atomically."""

    def add_flows(self, text: str) -> None:
        """``ovs-ofctl --bundle add-flows BRIDGE -``: one connection, one bundle."""

    def dump_flows(self) -> str:
        """``ovs-ofctl dump-flows --no-stats`` of the bridge."""


@runtime_checkable
class DiffingOfctl(Ofctl, Protocol):
    """An :class:`Ofctl` that also diffs (what ``FullSync.DIFF`` needs)."""

    def diff_flows(self, flows: str) -> str:
        """``ovs-ofctl diff-flows`` of the bridge against ``flows``."""


class FullSync(enum.Enum):
    """How a full sync treats the flows already on the bridge."""

    #: Driver mode: delete everything in the :class:`Places`, whatever its cookie.
    REPLACE = "replace"
    #: Standalone: fix only the difference; other cookies' flows are never touched.
    DIFF = "diff"


@dataclasses.dataclass(frozen=True)
class Group:
    """A security group as the session holds it."""

    rules: Sequence[Mapping[str, Any]] = ()
    stateful: bool = True


#: A member set: ``{ethertype: [ip or (ip, mac), ...]}``.
MemberSet = Mapping[str, Sequence[Any]]


@dataclasses.dataclass
class Update:
    """The new state of some entities (``None``: gone). With ``complete``, every entity not
    named is gone too."""

    ports: dict[str, Mapping[str, Any] | None] = dataclasses.field(default_factory=dict)
    groups: dict[str, Group | None] = dataclasses.field(default_factory=dict)
    members: dict[str, MemberSet | None] = dataclasses.field(default_factory=dict)
    address_groups: dict[str, MemberSet | None] = dataclasses.field(default_factory=dict)
    complete: bool = False

    def __bool__(self) -> bool:
        return self.complete or any((self.ports, self.groups, self.members, self.address_groups))


@dataclasses.dataclass(frozen=True)
class Change:
    """One update: the bundle that installs it, or for a cold load the ``add-flows`` text
    (``cold``); both empty: nothing to send."""

    bundle: str
    full: bool
    cookie: int
    added: int
    modified: int
    removed: int
    flow_count: int
    port_count: int
    cold: str = ""

    @property
    def lines(self) -> int:
        """Lines sent to the switch."""
        return (self.cold or self.bundle).count("\n")

    @property
    def cuts(self) -> bool:
        """Whether it removed or changed flows (cut connections' conntrack entries can go)."""
        return bool(self.removed or self.modified) or "delete_strict" in self.bundle


class FlowState:
    """The compiler session, what it holds, and whether the bridge holds the same."""

    def __init__(
        self,
        options: Mapping[str, Any],
        places: Places = DRIVER_PLACES,
        *,
        full_sync: FullSync = FullSync.REPLACE,
        cold_connections: int = DEFAULT_CONNECTIONS,
        cold_min_ports: int = COLD_MIN_PORTS,
    ) -> None:
        self._options = {k: v for k, v in options.items() if k != "cookie"}
        self.places = places
        self.full_sync = full_sync
        #: Connections of a cold load; 1: never cold load (always one bundle).
        self.cold_connections = cold_connections
        #: Fewest ports for a cold load (it pays on a bridge with many ports only).
        self.cold_min_ports = cold_min_ports
        self._compiler: sgflows.Compiler | None = None
        self._mirror = _Mirror()
        self._flow_count = 0
        #: The cookie our flows have on the bridge; ``None``: the bridge's state is unknown.
        self._bridge_cookie: int | None = None

    @property
    def compiler(self) -> sgflows.Compiler:
        """The session (created empty on first use)."""
        if self._compiler is None:
            self._compiler = sgflows.Compiler(_EMPTY_MODEL, **self._options)
            self._flow_count = len(self._compiler.flows())
        return self._compiler

    @property
    def installed(self) -> sgflows.CompileResult | None:
        """What is on the bridge (``None`` when unknown). A copy: O(flows)."""
        if self._bridge_cookie is None:
            return None
        return self.compiler.result()

    @property
    def known(self) -> bool:
        """Whether the bridge is known to hold the session's flows."""
        return self._bridge_cookie is not None

    def forget(self) -> None:
        """The bridge lost our flows (ovs-vswitchd restarted): the next change is full."""
        self._bridge_cookie = None

    def update(self, update: Update, cookie: int, ofctl: Ofctl) -> Change:
        """Apply ``update`` to the session and return the bundle that takes the bridge there.
        Raises :class:`sgflows.ModelError` (and changes nothing) when the session refuses it."""
        batch, writes = self._mirror.changes(update)
        diff = self.compiler.apply(batch) if batch else None
        self._mirror.commit(writes)
        if diff is not None:
            self._flow_count += diff.added - diff.removed
        full = self._bridge_cookie != cookie
        cold = ""
        if full:
            bundle, cold = self._full_sync(cookie, ofctl)
        else:
            bundle = diff.to_bundle(cookie) if diff else ""
        if bundle or cold:
            # Unknown until the switch took it.
            self._bridge_cookie = None
        return Change(
            bundle=bundle,
            cold=cold,
            full=full,
            cookie=cookie,
            added=diff.added if diff else 0,
            modified=diff.modified if diff else 0,
            removed=diff.removed if diff else 0,
            flow_count=self._flow_count,
            port_count=len(self._mirror.ports),
        )

    def committed(self, change: Change) -> None:
        """The change's bundle is on the bridge."""
        self._bridge_cookie = change.cookie

    def install(self, change: Change, ofctl: Ofctl) -> None:
        """Send ``change`` (its bundle, or its cold load) and mark it :meth:`committed`. What
        the switch refuses raises (a cold load: :class:`~sgflows.switch.coldload.ColdLoadError`)
        and leaves the change uncommitted: the next update is a full sync."""
        if change.cold:
            load_parallel(ofctl.add_flows, change.cold, self.cold_connections)
        elif change.bundle:
            ofctl.bundle(change.bundle)
        self.committed(change)

    def _full_sync(self, cookie: int, ofctl: Ofctl) -> tuple[str, str]:
        """``(bundle, cold)``: the full sync's bundle, or the text of a cold load when the
        bridge is empty where the session's flows go (but for their entry table)."""
        flows = self.compiler.flows()
        text = "".join(f"{flow_line(cookie, *flow)}\n" for flow in flows)
        cold = self.cold_connections > 1 and len(self._mirror.ports) >= self.cold_min_ports
        dump = ofctl.dump_flows() if cold or self.full_sync is FullSync.REPLACE else ""
        if cold and text:
            loaded = {flow[0] for flow in flows} - {entry_table(text)}
            if not loaded & dump_tables(dump):
                return "", text
        if self.full_sync is FullSync.DIFF:
            if not isinstance(ofctl, DiffingOfctl):
                raise TypeError(f"{type(ofctl).__name__} has no diff_flows for FullSync.DIFF")
            return diff_bundle(ofctl.diff_flows(text), cookie), ""
        return replace_bundle(flows, cookie, dump, self.places), ""


#: A pending write to the mirror: ``(table, key, value or None for gone)``.
_Write = tuple[dict[str, Any], str, Any]


class _Mirror:
    """What the session holds, in the caller's terms, to compute minimal changes."""

    def __init__(self) -> None:
        self.ports: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, Group] = {}
        self.members: dict[str, dict[str, set[str]]] = {}
        self.address_groups: dict[str, dict[str, set[str]]] = {}

    def changes(self, update: Update) -> tuple[list[tuple[Any, ...]], list[_Write]]:
        """The session batch that turns this mirror into ``update``'s state, and the writes
        that make the mirror follow once the session accepted it (O(change))."""
        batch: list[tuple[Any, ...]] = []
        writes: list[_Write] = []
        for gid, group in _entries(update.groups, self.groups, update.complete):
            batch.extend(self._group_changes(gid, group, writes))
        for held, named, is_ag in (
            (self.members, update.members, False),
            (self.address_groups, update.address_groups, True),
        ):
            for gid, members in _entries(named, held, update.complete):
                batch.extend(_member_changes(held, gid, members, is_ag, writes))
        for pid, port in _entries(update.ports, self.ports, update.complete):
            batch.extend(self._port_changes(pid, port, writes))
        # Groups first (a new port names them), member removals before additions (an address
        # written two ways must survive), then ports. sort() is stable.
        batch.sort(key=lambda c: _ORDER[c[0]])
        return batch, writes

    @staticmethod
    def commit(writes: Iterable[_Write]) -> None:
        """Make the mirror follow an accepted batch."""
        for table, key, value in writes:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    def _group_changes(
        self, gid: str, group: Group | None, writes: list[_Write]
    ) -> list[tuple[Any, ...]]:
        """A group's changes; a gone group is emptied (the session keeps its id)."""
        new = Group(tuple(dict(r) for r in group.rules), group.stateful) if group else Group()
        old = self.groups.get(gid)
        out: list[tuple[Any, ...]] = []
        if old is None or list(old.rules) != list(new.rules):
            out.append(("set_rules", gid, [dict(r) for r in new.rules]))
        if (old.stateful if old else True) != new.stateful:
            out.append(("set_stateful", gid, new.stateful))
        writes.append((self.groups, gid, new if group else None))
        return out

    def _port_changes(
        self, pid: str, port: Mapping[str, Any] | None, writes: list[_Write]
    ) -> list[tuple[Any, ...]]:
        old = self.ports.get(pid)
        if port is None:
            if old is None:
                return []
            writes.append((self.ports, pid, None))
            return [("remove_port", pid)]
        entry = dict(port, id=pid)
        writes.append((self.ports, pid, entry))
        if old is None:
            return [("add_port", entry)]
        return [] if old == entry else [("update_port", entry)]


#: Order of a batch: groups, member removals, member additions, ports.
_ORDER = {
    "set_rules": 0,
    "set_stateful": 0,
    "remove_members": 1,
    "add_members": 2,
    "remove_port": 3,
    "add_port": 3,
    "update_port": 3,
}


def _entries(
    named: Mapping[str, Any], held: Mapping[str, Any], complete: bool
) -> Iterable[tuple[str, Any]]:
    """The entities an update names, plus (when complete) the held ones it does not."""
    yield from named.items()
    if complete:
        for key in [k for k in held if k not in named]:
            yield key, None


def _member_changes(
    held: dict[str, dict[str, set[str]]],
    gid: str,
    members: MemberSet | None,
    address_group: bool,
    writes: list[_Write],
) -> list[tuple[Any, ...]]:
    """``remove_members``/``add_members`` for the addresses that differ."""
    old = held.get(gid, {})
    new = _address_sets(members or {})
    gone = {eth: sorted(ips - new.get(eth, set())) for eth, ips in old.items()}
    came = {eth: sorted(ips - old.get(eth, set())) for eth, ips in new.items()}
    writes.append((held, gid, new if members is not None else None))
    out: list[tuple[Any, ...]] = []
    for kind, change in (("remove_members", gone), ("add_members", came)):
        change = {eth: ips for eth, ips in change.items() if ips}
        if change:
            out.append((kind, gid, change, address_group))
    return out


def _address_sets(members: MemberSet) -> dict[str, set[str]]:
    """``{ethertype: {normalised prefix}}`` (MACs play no part in a filter)."""
    out: dict[str, set[str]] = {}
    for ethertype, entries in members.items():
        ips = out.setdefault(str(ethertype), set())
        for entry in entries:
            ip = entry[0] if isinstance(entry, (list, tuple)) else entry
            ips.add(_prefix(str(ip)))
    return out


def _prefix(ip: str) -> str:
    """A host or prefix as one spelling (the session truncates host bits the same way); an
    invalid address is kept as it is, for the session to refuse with its path."""
    try:
        net = ipaddress.ip_network(ip, strict=False)
    except ValueError:
        return ip
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
