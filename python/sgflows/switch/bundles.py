"""The bundles that change an Open vSwitch bridge, for the Neutron firewall driver (driver
mode) and the agent's Open vSwitch dataplane (standalone mode).

An incremental change is the session's :class:`sgflows.FlowDiff` (``FlowDiff.to_bundle``). A
*full* sync, when the bridge's state is not known to match the session, comes in two kinds:

- :func:`replace_bundle` (driver mode): delete every flow in the firewall's :class:`Places`,
  whatever its cookie (an earlier agent's, Neutron's own driver's, ours from a failed update),
  and add every flow of the session, in one ordered atomic bundle;
- :func:`diff_bundle` (standalone mode): ``ovs-ofctl diff-flows BRIDGE FILE`` prints both
  sides normalised by Open vSwitch's own parser, so the bundle compares like with like (the
  text of ``dump-flows`` is not the text ``add-flows`` takes) and touches only what is wrong:
  flows of ours that are right stay as they are (a restarted agent adopts them with no gap),
  and flows of other cookies are never deleted.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class Places:
    """Where the firewall's flows live: whole tables, and priority ranges of tables shared
    with their owner (a full sync deletes whatever it finds there)."""

    tables: frozenset[int]
    priorities: Mapping[int, range] = dataclasses.field(default_factory=dict)

    def holds(self, table: int, priority: int) -> bool:
        """Whether a flow at ``table``/``priority`` is the firewall's."""
        if table in self.tables:
            return True
        span = self.priorities.get(table)
        return span is not None and priority in span


#: Tables of the firewall (sgflows.DEFAULT_TABLES: neutron-lib's 71-73, 81, 82, 91-94 and our
#: 74-76, 83, 84): every flow in them is ours. Not 77/78: the agent's DHCP extension owns them.
FIREWALL_TABLES = frozenset({71, 72, 73, 74, 75, 76, 81, 82, 83, 84, 91, 92, 93, 94})
#: The agent's table in front of the firewall; ours are its priorities 21-100 (the agent's
#: NORMAL is 1, DVR 20, Neutron's functional tests 4, the DHCP/DNS diversions 101/102).
CLASSIFY_TABLE = 60
CLASSIFY_PRIORITIES = range(21, 101)
#: Driver mode (inside neutron-openvswitch-agent): the agent owns table 0 and the rest of 60.
DRIVER_PLACES = Places(FIREWALL_TABLES, {CLASSIFY_TABLE: CLASSIFY_PRIORITIES})


# -- replacing everything in the firewall's places -----------------------------------------


def replace_bundle(
    flows: Iterable[tuple[int, int, str, str]],
    cookie: int,
    dump: str,
    places: Places = DRIVER_PLACES,
) -> str:
    """Delete every flow ``dump`` shows in ``places``, then add every flow of ``flows``
    (``Compiler.flows()`` tuples) under ``cookie``: one ordered atomic bundle."""
    lines = place_deletes(dump, places)
    lines.extend(f"flow add {flow_line(cookie, *flow)}" for flow in flows)
    return "\n".join(lines) + "\n"


def flow_line(cookie: int, table: int, priority: int, match: str, actions: str) -> str:
    """One flow in ``ovs-ofctl add-flows`` syntax."""
    head = f"cookie={cookie:#x},table={table},priority={priority}"
    return f"{head},{match} actions={actions}" if match else f"{head} actions={actions}"


_COOKIE = re.compile(r"\bcookie=(0x[0-9a-f]+)")
_TABLE = re.compile(r"\btable=(\d+)")
_PRIORITY = re.compile(r"\bpriority=(\d+)")
#: dump-flows fields that describe a flow's state, not its match.
_NOT_MATCH = re.compile(
    r"^(cookie|duration|table|n_packets|n_bytes|idle_age|hard_age|idle_timeout|"
    r"hard_timeout|importance|reset_counts|send_flow_rem|no_packet_counts|no_byte_counts)\b"
)


def place_deletes(dump: str, places: Places = DRIVER_PLACES) -> list[str]:
    """``delete_strict`` lines for every flow of ``dump`` in ``places``, whatever its cookie."""
    out = []
    for line in dump.splitlines():
        flow = _parse_dump_line(line)
        if flow is not None and places.holds(flow[1], flow[2]):
            out.append(_delete_strict(*flow))
    return out


def stale_deletes(dump: str, cookie: int, places: Places = DRIVER_PLACES) -> list[str]:
    """``delete_strict`` lines for flows in ``places`` under another cookie than ``cookie``."""
    out = []
    for line in dump.splitlines():
        flow = _parse_dump_line(line)
        if flow is not None and flow[0] != cookie and places.holds(flow[1], flow[2]):
            out.append(_delete_strict(*flow))
    return out


def dump_tables(dump: str) -> set[int]:
    """The tables that ``dump`` (``dump-flows`` output) shows flows in."""
    return {flow[1] for line in dump.splitlines() if (flow := _parse_dump_line(line)) is not None}


def _delete_strict(cookie: int, table: int, priority: int, match: str) -> str:
    spec = ",".join(p for p in (f"table={table}", f"priority={priority}", match) if p)
    return f"flow delete_strict cookie={cookie:#x}/-1,{spec}"


def _parse_dump_line(line: str) -> tuple[int, int, int, str] | None:
    """``(cookie, table, priority, match)`` of one ``dump-flows`` line, or ``None``."""
    head, sep, _actions = line.strip().partition(" actions=")
    if not sep:
        return None
    cookie = _COOKIE.search(head)
    table = _TABLE.search(head)
    priority = _PRIORITY.search(head)
    fields = [f.strip() for f in head.replace(", ", ",").split(",") if f.strip()]
    match = [f for f in fields if not _NOT_MATCH.match(f) and not f.startswith("priority=")]
    return (
        int(cookie.group(1), 16) if cookie else 0,
        int(table.group(1)) if table else 0,
        int(priority.group(1)) if priority else 32768,
        ",".join(match),
    )


# -- touching only the difference (standalone) ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flow:
    """One flow as ``diff-flows`` prints it: where it is, its cookie, the rest."""

    table: int
    match: str  # "priority=P[,fields]"
    cookie: int
    actions: str

    @property
    def place(self) -> tuple[int, str]:
        return self.table, self.match

    def add_line(self) -> str:
        where = f"table={self.table},{self.match},cookie={self.cookie:#x}"
        return f"flow add {where} actions={self.actions}"

    def delete_line(self) -> str:
        return f"flow delete_strict table={self.table},{self.match},cookie={self.cookie:#x}/-1"


#: ``diff-flows`` leaves out ``table=0`` and a zero cookie, as ``dump-flows`` does.
_DIFF_LINE = re.compile(r"^([+-])(?:table=(\d+) )?(\S+)(?: cookie=(0x[0-9a-f]+))? actions=(.*)$")


def parse_diff_flows(text: str) -> tuple[list[Flow], list[Flow]]:
    """``diff-flows`` output → (only on the switch, only in the file)."""
    switch_only: list[Flow] = []
    file_only: list[Flow] = []
    for line in text.splitlines():
        found = _DIFF_LINE.match(line.strip())
        if found is None:
            continue
        sign, table, match, cookie, actions = found.groups()
        flow = Flow(int(table or 0), match, int(cookie, 16) if cookie else 0, actions)
        (switch_only if sign == "-" else file_only).append(flow)
    return switch_only, file_only


def diff_bundle(diff_text: str, cookie: int) -> str:
    """The bundle that makes the switch's flows of ``cookie`` equal to the file's, from
    ``diff-flows`` output: add what is missing or different (an ``add`` replaces a flow of
    the same place), delete what is ours and should not be there. Empty when nothing
    differs."""
    switch_only, file_only = parse_diff_flows(diff_text)
    wanted = {f.place for f in file_only}
    lines = [f.add_line() for f in file_only]
    lines += [f.delete_line() for f in switch_only if f.cookie == cookie and f.place not in wanted]
    return "\n".join(lines) + "\n" if lines else ""
