"""What the driver has on the bridge, and the one transaction that changes it.

:class:`FlowState` is the single seam between the driver and the compiler. Today it compiles
the whole model at every apply and sends ``CompileResult.diff_from`` the last installed result
(an O(model) compile, an O(change) bundle). When the compiler session of issue 12
(``sgflows.Compiler``, O(change) diffs) exists, only this class changes: the driver calls
``replace(model)`` and ``committed()`` either way.

Every change is one ``ovs-ofctl bundle`` (all or nothing): a port's table-60 flow is never
removed before its replacement is in, so no packet ever falls through to the agent's
``NORMAL`` unfiltered. The first install of a driver instance (agent start, or after
ovs-vswitchd restarted) adds every flow under the agent's new cookie — an ``add`` of an
existing match replaces that flow, cookie included — and in the same bundle deletes every
flow left in the firewall's places under another cookie (an earlier agent's, or Neutron's
own ``openvswitch`` driver's), so that the switch goes from the old policy to the new one in
one step and no conjunction id of an old flow survives beside a new flow reusing it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol

import sgflows

LOG = logging.getLogger(__name__)

#: Tables of the firewall (neutron-lib ovs_constants 71-94): every flow in them is ours.
FIREWALL_TABLES = frozenset({71, 72, 73, 81, 82, 91, 92, 93, 94})
#: The agent's table in front of the firewall; ours are its priorities 21-100 (the agent's
#: NORMAL is 1, DVR 20, Neutron's functional tests 4, the DHCP/DNS diversions 101/102).
CLASSIFY_TABLE = 60
CLASSIFY_PRIORITIES = range(21, 101)


class Ofctl(Protocol):
    """How flows reach the bridge (``ovs-ofctl`` through the agent's privileged helper)."""

    def bundle(self, text: str) -> None:
        """Apply ``ovs-ofctl bundle`` input atomically; raise if the switch refuses it."""

    def dump_flows(self) -> str:
        """``ovs-ofctl dump-flows --no-stats`` of the bridge."""


@dataclasses.dataclass(frozen=True)
class Change:
    """One apply: the compiled result and the bundle that installs it (empty: no change)."""

    result: sgflows.CompileResult
    bundle: str
    full: bool


class FlowState:
    """The installed compile result and how to go from it to a new model."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = dict(options)
        self._installed: sgflows.CompileResult | None = None

    @property
    def installed(self) -> sgflows.CompileResult | None:
        """What is on the bridge (``None`` before the first install)."""
        return self._installed

    def forget(self) -> None:
        """The bridge lost our flows (ovs-vswitchd restarted): the next change is full."""
        self._installed = None

    def compile(self, model: Mapping[str, Any], cookie: int) -> sgflows.CompileResult:
        """Compile ``model`` with the driver's options under ``cookie``."""
        return sgflows.compile(model, cookie=cookie, **self._options)

    def replace(self, result: sgflows.CompileResult, ofctl: Ofctl) -> Change:
        """The bundle that turns what is installed into ``result``."""
        old = self._installed
        if old is not None and old.cookie == result.cookie:
            diff = result.diff_from(old)
            LOG.debug("diff: +%d ~%d -%d", diff.added, diff.modified, diff.removed)
            return Change(result, diff.to_bundle() if diff else "", full=False)
        return Change(result, full_bundle(result, ofctl.dump_flows()), full=True)

    def committed(self, change: Change) -> None:
        """The change's bundle is on the bridge."""
        self._installed = change.result


def full_bundle(result: sgflows.CompileResult, dump: str) -> str:
    """Add every flow of ``result``, then delete what other cookies left in our places."""
    lines = [f"flow add {line}" for line in result.to_ofctl().splitlines() if line.strip()]
    lines.extend(stale_deletes(dump, result.cookie))
    return "\n".join(lines) + "\n"


_COOKIE = re.compile(r"\bcookie=(0x[0-9a-f]+)")
_TABLE = re.compile(r"\btable=(\d+)")
_PRIORITY = re.compile(r"\bpriority=(\d+)")
#: dump-flows fields that describe a flow's state, not its match.
_NOT_MATCH = re.compile(
    r"^(cookie|duration|table|n_packets|n_bytes|idle_age|hard_age|idle_timeout|"
    r"hard_timeout|importance|reset_counts|send_flow_rem|no_packet_counts|no_byte_counts)\b"
)


def stale_deletes(dump: str, cookie: int) -> list[str]:
    """``delete_strict`` lines for flows in the firewall's places under another cookie."""
    out = []
    for line in dump.splitlines():
        flow = _parse_dump_line(line)
        if flow is None:
            continue
        flow_cookie, table, priority, match = flow
        if flow_cookie == cookie:
            continue
        if table in FIREWALL_TABLES or (
            table == CLASSIFY_TABLE and priority in CLASSIFY_PRIORITIES
        ):
            spec = ",".join(p for p in (f"table={table}", f"priority={priority}", match) if p)
            out.append(f"flow delete_strict cookie={flow_cookie:#x}/-1,{spec}")
    return out


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
