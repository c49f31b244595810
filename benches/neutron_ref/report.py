"""Turn the Neutron reference's JSON lines into a Markdown table (standard library only).

    python benches/neutron_ref/report.py benches/results/neutron.jsonl > benches/results/neutron.md

The last record of each (workload, seed) wins, so re-running one size updates its row.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:,.0f}"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:,.2f}"


def _load(r: dict[str, Any]) -> str:
    host = r.get("host", {})
    loads = [host[k][0] for k in ("loadavg_start", "loadavg_end") if k in host]
    return "—" if not loads else f"{max(loads):.1f}"


def _row(r: dict[str, Any], with_version: bool = False) -> str:
    s = r["sizes"]
    name = f"{r['workload']} ({r.get('neutron') or '?'})" if with_version else r["workload"]
    head = (
        f"| {name} | {s['ports']:,} | {s['rules_per_port'] // max(s['ports'], 1):,} "
        f"| {s['member_addresses']:,} "
    )
    if r.get("status") != "ok":
        detail = r.get("status", "?")
        if r.get("status") == "did not finish":
            detail += f" in {r.get('timeout_s', 0):.0f} s"
        elif r.get("status") == "out of memory":
            detail += f" (cap {r.get('max_memory_gib', 0):g} GiB, after {r.get('wall_s', 0):.0f} s)"
        return head + f"| {detail} | | | | | | | | | {_load(r)} |"
    neutron_own = r["maxrss_kib"] - r["rss_before_kib"] - r.get("recorder_log_kib", 0)
    ch = r.get("changes", {})
    rule = ch.get("rule", {})
    member = ch.get("member", {})
    return head + (
        f"| {r['sync_s']:,.2f} | {_num(r.get('sync_cpu_s'))} "
        f"| {_mib(r['maxrss_kib'])} | {_mib(neutron_own)} "
        f"| {r['add_flow_calls']:,} | {r['flows']:,} | {r['flows'] / s['ports']:,.0f} "
        f"| {rule.get('s', float('nan')):,.2f} / {rule.get('add_flow_calls', 0):,} "
        f"| {member.get('s', float('nan')):,.2f} / {member.get('add_flow_calls', 0):,} "
        f"| {_load(r)} |"
    )


def render(records: list[dict[str, Any]]) -> str:
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for r in records:
        latest[(r["workload"], r.get("seed", 0))] = r
    rows = sorted(latest.values(), key=lambda r: (r["sizes"]["ports"], r["workload"]))
    versions = sorted({r.get("neutron") for r in rows if r.get("neutron")})
    out = [
        f"Neutron {', '.join(versions) or '?'} `OVSFirewallDriver`, driven through "
        "`SecurityGroupAgentRpc` with a recording bridge (see benches/README.md).",
        "",
        "| workload | ports | rules/port | member addrs | sync s | CPU s | peak RSS MiB "
        "| Neutron's own MiB | add_flow calls | distinct flows | flows/port "
        "| +1 rule: s / add_flow | +1 member: s / add_flow | load |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    out += [_row(r, with_version=len(versions) > 1) for r in rows]  # rows of several versions
    out += [
        "",
        "- workload: `benches/workload.py` presets (seed in the JSON): 3 projects x 2 networks,"
        " 2 groups per port of 50 rules each, ~45 % of rules with a remote group or address"
        " group; `member addrs` counts the member addresses of all remote groups.",
        "- `sync s`: wall time of `SecurityGroupAgentRpc.setup_port_filters` for all ports"
        " (payload to `ovs-ofctl` text, nothing installed in a switch); `CPU s`: the process's"
        " CPU time over the same phase; `load`: the host's 1-minute load average (2 cores,"
        " shared with other work) at the start or end of the run, whichever is higher.",
        "- `peak RSS`: the child's `ru_maxrss` (interpreter, Neutron's modules and the payload"
        " take ~135 MiB before any port); `Neutron's own` subtracts the RSS before the sync and"
        " the recorder's log of flow text.",
        "- `add_flow calls`: flows sent to the bridge; `distinct flows`: the table left on the"
        " bridge, keyed by (table, priority, match).",
        "- `+1 rule` / `+1 member`: one TCP rule added to a group, one address added to a remote"
        " group, through the agent's refresh path: wall time / flows re-sent (the table changes"
        " by a few dozen flows).",
        "",
        "Reproduce: `benches/neutron_ref/run.sh p10 p100 p1000` then"
        " `python3 benches/neutron_ref/report.py benches/results/neutron.jsonl`.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("jsonl", nargs="+")
    args = parser.parse_args(argv)
    records = []
    for path in args.jsonl:
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    sys.stdout.write(render(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
