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


def _row(r: dict[str, Any]) -> str:
    s = r["sizes"]
    head = (
        f"| {r['workload']} | {s['ports']:,} | {s['rules_per_port'] // max(s['ports'], 1):,} "
        f"| {s['member_addresses']:,} "
    )
    if r.get("status") != "ok":
        detail = r.get("status", "?")
        if r.get("status") == "did not finish":
            detail += f" in {r.get('timeout_s', 0):.0f} s"
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
    out += [_row(r) for r in rows]
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
