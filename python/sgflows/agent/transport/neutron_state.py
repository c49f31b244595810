"""The agent's report as Neutron's ``report_state`` takes it (pure functions, no oslo).

Neutron keeps only ``agent_type``, ``binary``, ``host``, ``topic``, ``start_flag``,
``configurations`` (and a few others) of an agent's state (``neutron/db/agents_db.py``
``create_or_update_agent``, 29.0.0 lines 372-429). The detailed status of an sgflows report —
state, phase, since, degraded reasons, restart, last sync, custom providers, recent
transitions — therefore goes *into* ``configurations``, which Neutron stores as JSON in a
4,095-character column and ``openstack network agent show`` prints. Whole entries are dropped
to fit, largest first, and named in ``omitted_keys``
(:func:`sgflows.agent.status.fit_configurations`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .. import status

#: Report fields copied into ``configurations`` (Neutron drops them at the top level).
DETAIL_FIELDS = (
    "state",
    "phase",
    "state_since",
    "degraded_reasons",
    "restarted",
    "previous_stop",
    "last_sync",
    "syncs",
    "transitions",
    "custom",
)

#: Report fields Neutron itself reads, passed at the top level of ``agent_state``.
NEUTRON_FIELDS = ("agent_type", "binary", "host", "topic", "start_flag")


def agent_state(report: Mapping[str, Any]) -> dict[str, Any]:
    """Neutron's ``agent_state`` for one sgflows report."""
    conf: dict[str, Any] = dict(report.get("configurations") or {})
    conf.pop(status.OMITTED_KEY, None)  # fitted again below, with the detail included
    for name in DETAIL_FIELDS:
        if name in report:
            conf[name] = report[name]
    conf["instance"] = report.get("uuid")
    fitted, _omitted = status.fit_configurations(conf)
    state = {name: report[name] for name in NEUTRON_FIELDS if name in report}
    state["configurations"] = fitted
    return state


def report_kwargs(report: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of Neutron's ``report_state`` RPC (``neutron/agent/rpc.py``
    ``PluginReportStateAPI.report_state``, 29.0.0 lines 94-106): the state wrapped twice, and
    the agent's clock (the server ignores reports older than its own start)."""
    return {"agent_state": {"agent_state": agent_state(report)}, "time": report["time"]}


def masked_url(url: str) -> str:
    """``transport_url`` with its passwords replaced by ``***`` (for status and logs)."""
    return re.sub(r"(?<=:)[^:@/,]+(?=@)", "***", url)
