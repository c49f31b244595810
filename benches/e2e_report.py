"""Tables and charts of one end-to-end run (``e2e.py``): ``results/e2e.md`` + ``e2e_*.png``.

Every figure of a table comes from the records of one invocation (``run_id``): medians over
the repeats, the spread as min-max, and ratios of medians within the same run. Charts need
matplotlib (the ``bench`` extra); without it only the Markdown is written.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SYSTEMS = ("sgflows-cli", "sgflows-session", "sgflows-driver", "neutron-ovs")
LABELS = {
    "sgflows-cli": "sgflows CLI",
    "sgflows-session": "sgflows session",
    "sgflows-driver": "sgflows driver (agent)",
    "neutron-ovs": "Neutron openvswitch (agent)",
}
CHANGE_SYSTEMS = ("sgflows-session", "sgflows-driver", "neutron-ovs")
CHANGES = ("+rule", "-rule", "+member", "+port")
Records = list[dict[str, Any]]


def load(path: Path, run_id: str | None) -> Records:
    """The records of ``run_id`` (default: the latest run in the file)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if not records:
        return []
    wanted = run_id or records[-1]["run_id"]
    return [r for r in records if r.get("run_id") == wanted]


def _ok(records: Records) -> Records:
    return [r for r in records if r.get("status") == "ok"]


def _workloads(records: Records) -> list[str]:
    seen: dict[str, int] = {}
    for r in records:
        seen.setdefault(r["workload"], r["sizes"]["ports"])
    return sorted(seen, key=lambda w: seen[w])


def _values(
    records: Records, system: str, workload: str, get: Callable[[dict[str, Any]], Any]
) -> list[float]:
    out = []
    for r in records:  # a run past its timeout keeps the figures of the phases it finished
        if r["system"] == system and r["workload"] == workload:
            try:
                value = get(r)
            except KeyError:  # a failed run: no such figure
                continue
            if value is not None:
                out.append(float(value))
    return out


def _failure(records: Records, system: str, workload: str) -> str | None:
    bad = [r for r in records if r["system"] == system and r["workload"] == workload
           and r.get("status") != "ok"]  # fmt: skip
    if not bad:
        return None
    status = bad[0]["status"]
    if status == "did not finish":
        status += f" in {bad[0].get('timeout_s', 0):,.0f} s"
    return status if len(bad) == 1 else f"{status} ({len(bad)} runs)"


def _fmt_s(v: float) -> str:
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def _cell(values: list[float], fmt: Callable[[float], str] = _fmt_s) -> str:
    if not values:
        return "—"
    med = statistics.median(values)
    if len(values) == 1 or fmt(min(values)) == fmt(max(values)):
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}-{fmt(max(values))})"


def _ratio(a: list[float], b: list[float]) -> str:
    if not a or not b or statistics.median(b) == 0:
        return "—"
    r = statistics.median(a) / statistics.median(b)
    return f"{r:,.0f}x" if r >= 10 else f"{r:.1f}x"


def cold_table(records: Records) -> list[str]:
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in records)]
    head = ["workload", "ports", *(LABELS[s] for s in systems)]
    pairs = [("neutron-ovs", "sgflows-driver"), ("neutron-ovs", "sgflows-cli")]
    pairs = [p for p in pairs if p[0] in systems and p[1] in systems]
    head += [f"{LABELS[a].split(' (')[0]} / {LABELS[b].split(' (')[0]}" for a, b in pairs]
    head.append("load average (1 min)")
    lines = _header(head)
    for w in _workloads(records):
        ports = next(r["sizes"]["ports"] for r in records if r["workload"] == w)
        cold = {s: _values(records, s, w, lambda r: r["cold_s"]) for s in systems}
        cells = [_failure(records, s, w) if not cold[s] else _cell(cold[s]) for s in systems]
        ratios = [_ratio(cold[a], cold[b]) for a, b in pairs]
        load = _load_range([r for r in records if r["workload"] == w])
        lines.append(_row([w, f"{ports:,}", *(c or "—" for c in cells), *ratios, load]))
    return lines


def parts_table(records: Records) -> list[str]:
    """Where the cold start's time goes (medians): compile and load; the agent's process CPU."""
    lines = _header(["workload", "system", "parts (median s)"])
    parts = {
        "sgflows-cli": (("compile_s", "compile (process)"), ("load_s", "sgflows load"),
                        ("vswitchd_cpu_s", "ovs-vswitchd CPU")),
        "sgflows-session": (("compile_s", "Compiler + to_ofctl"), ("load_s", "cold load"),
                            ("vswitchd_cpu_s", "ovs-vswitchd CPU")),
        "sgflows-driver": (("init_s", "agent + driver init"), ("sync_s", "sync"),
                           ("sync_cpu_s", "the agent's own CPU in it"),
                           ("vswitchd_cpu_s", "ovs-vswitchd CPU")),
    }  # fmt: skip
    parts["neutron-ovs"] = parts["sgflows-driver"]
    for w in _workloads(records):
        for system, keys in parts.items():
            got = [
                (label, _values(records, system, w, lambda r, k=key: r[k])) for key, label in keys
            ]
            got = [(label, values) for label, values in got if values]  # older records: fewer
            if got:
                text = ", ".join(f"{label} {_fmt_s(statistics.median(v))}" for label, v in got)
                lines.append(_row([w, LABELS[system], text]))
    return lines


def change_table(records: Records) -> list[str]:
    systems = [
        s for s in CHANGE_SYSTEMS if any(r["system"] == s and r.get("changes") for r in records)
    ]
    head = ["workload", "change", *(LABELS[s] for s in systems)]
    if "neutron-ovs" in systems:
        head += [f"Neutron / {LABELS[s].split(' (')[0]}" for s in systems if s != "neutron-ovs"]
    head += ["sgflows diff (+ ~ -)"]
    lines = _header(head)
    for w in _workloads(records):
        if not any(r.get("changes") for r in _ok(records) if r["workload"] == w):
            continue
        for kind in CHANGES:
            got = {s: _values(records, s, w, _change_field(kind, "s")) for s in systems}
            row = [w, kind, *(_cell(got[s]) if got[s] else _failure(records, s, w) or "—"
                              for s in systems)]  # fmt: skip
            if "neutron-ovs" in systems:
                row += [_ratio(got["neutron-ovs"], got[s]) for s in systems if s != "neutron-ovs"]
            row.append(_diff_size(records, w, kind))
            lines.append(_row(row))
    return lines


def _change_field(kind: str, key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: r.get("changes", {}).get(kind, {}).get(key)


def _diff_size(records: Records, workload: str, kind: str) -> str:
    for r in _ok(records):
        c = r.get("changes", {}).get(kind)
        if r["system"] == "sgflows-session" and r["workload"] == workload and c:
            return f"{c['added']} {c['modified']} {c['removed']}"
    return "—"


def memory_table(records: Records) -> list[str]:
    cols = ["workload", "system", "flows on the switch", "ovs-vswitchd RSS MiB"]
    cols += ["compiling process peak MiB", "after the changes: flows / peak MiB"]
    lines = _header(cols)
    mib = lambda v: f"{v / 1024:,.0f}"  # noqa: E731
    for w in _workloads(records):
        for s in SYSTEMS:
            flows = _values(records, s, w, lambda r: r["flows"])
            if not flows:
                fail = _failure(records, s, w)
                if fail:
                    lines.append(_row([w, LABELS[s], fail, "", "", ""]))
                continue
            rss = _values(records, s, w, lambda r: r["vswitchd_kib"])
            peak = _values(records, s, w, lambda r: r["compiler_peak_kib"])
            after_flows = _values(records, s, w, _change_field("+port", "flows"))
            after_peak = _values(records, s, w, lambda r: r.get("peak_kib_after_changes"))
            after = f"{_cell(after_flows, _int)} / {_cell(after_peak, mib)}" if after_flows else ""
            lines.append(
                _row([w, LABELS[s], _cell(flows, _int), _cell(rss, mib), _cell(peak, mib), after])
            )
    return lines


def _int(v: float) -> str:
    return f"{v:,.0f}"


def _header(cols: list[str]) -> list[str]:
    return [_row(cols), _row(["---", *("--:" for _ in cols[1:])])]


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _load_range(records: Records) -> str:
    loads = [x for r in records for x in (r["loadavg_start"][0], r["loadavg_end"][0])]
    return f"{min(loads):.1f}-{max(loads):.1f}"


def _invocations(records: Records) -> str:
    """Several invocations may measure into one run (a long system beside the others)."""
    pids = {r.get("invocation") for r in records} - {None}
    return f" ({len(pids)} invocations, some at the same time)" if len(pids) > 1 else ""


def _connections(records: Records) -> str:
    """How many parallel bundles the sgflows CLI and session runs loaded over."""
    counts = sorted({
        r["connections"] for r in records
        if r.get("connections") and r["system"] in ("sgflows-cli", "sgflows-session")
    })  # fmt: skip
    if not counts:  # records from before the cold loader: one bundle
        return ""
    return f", over {' or '.join(map(str, counts))} connections at once,"


def _or_note(table: list[str], note: str) -> list[str]:
    return table if len(table) > 2 else [note]


def render(records: Records) -> str:
    first = records[0]
    load = _load_range(records)
    neutron = sorted({r["neutron"] for r in _ok(records) if r.get("neutron")})
    repeats = max(r["repeat"] for r in records) + 1
    out = [
        "# End-to-end: from the model to filtered ports on a real switch (issue 18)",
        "",
        f"Run `{first['run_id']}`{_invocations(records)}, "
        f"commit `{'`, `'.join(sorted({str(r['git_head']) for r in records}))}`, "
        f"seed {first['seed']}, "
        f"Neutron {', '.join(neutron) or '—'} (the project's one pin; the recording-bridge "
        f"figures in `neutron.md` were Neutron 28.0.2), {first['cpus']} CPUs shared with other "
        f"work: 1-minute load average {load} during the run. "
        f"Up to {repeats} runs per cell, each a fresh process on a fresh private userspace "
        "Open vSwitch 3.1 whose bridge already holds the workload's ports; cells are "
        "`median (min-max)` in seconds unless said otherwise, ratios are of medians.",
        "",
        "## Cold start to filtered",
        "",
        "From the command (CLI: `sgflows compile` + `sgflows load`), the `Compiler` call "
        f"(session: `Compiler` + `to_ofctl` + the same cold load){_connections(records)} or "
        "the agent building the driver (agent: "
        "`SecurityGroupAgentRpc` + `setup_port_filters` of every port) until every flow is on "
        "the bridge; sgflows' own paths are verified by the bridge's flow count.",
        "",
        *cold_table(records),
        "",
        "Where the cold start's time goes (medians). The agent's own CPU is the measuring "
        "process's CPU time during the sync; the rest of its wall time is spent waiting for "
        "`ovs-ofctl` processes and ovs-vswitchd (on a shared machine, for the CPU too).",
        "",
        *parts_table(records),
        "",
        "## One change to enforced",
        "",
        "From the call (`Compiler.apply` + `ovs-ofctl bundle`; the agent's "
        "`security_groups_*_updated` + `setup_port_filters`) until it returns with the flows "
        "on the bridge; changes applied one after another. The last column is the session's "
        "diff in flows added, modified, removed.",
        "",
        *(_or_note(change_table(records), "(no changes in this run: `--changes-presets`)")),
        "",
        "## Flows and memory",
        "",
        "After the cold start: the bridge's flow count (the agent rows include the agent's own 5 "
        "flows), ovs-vswitchd's resident memory, and the peak resident memory (`ru_maxrss`) of "
        "the process that compiled: the `sgflows compile` process (CLI), or the whole "
        "measuring process with its interpreter, the generated workload and, for the agent "
        "rows, Neutron's modules (~150 MiB before any port).",
        "",
        *memory_table(records),
        "",
        "Reproduce: `make bench-e2e` (all), `make bench-e2e BENCH_E2E=p10,p100` (a part); "
        "`python benches/e2e.py --help`. Raw records: `results/e2e.jsonl`.",
        "",
    ]
    return "\n".join(out)


def write(jsonl: Path, out_dir: Path, run_id: str | None) -> int:
    records = load(jsonl, run_id)
    if not records:
        print(f"[e2e] no records in {jsonl}", file=sys.stderr)
        return 1
    (out_dir / "e2e.md").write_text(render(records), encoding="utf-8")
    try:
        charts(records, out_dir)
    except ImportError:
        print("[e2e] matplotlib missing (pip install -e '.[bench]'): no charts", file=sys.stderr)
    print(f"[e2e] wrote {out_dir / 'e2e.md'}", file=sys.stderr)
    failed = [r for r in records if r.get("status") != "ok"]
    return 1 if failed else 0


# --- charts ----------------------------------------------------------------------------------


def _series(
    records: Records, system: str, get: Callable[[dict[str, Any]], Any]
) -> tuple[list[int], list[float], list[float], list[float]]:
    xs, med, lo, hi = [], [], [], []
    for w in _workloads(records):
        values = _values(records, system, w, get)
        if values:
            xs.append(next(r["sizes"]["ports"] for r in records if r["workload"] == w))
            med.append(statistics.median(values))
            lo.append(statistics.median(values) - min(values))
            hi.append(max(values) - statistics.median(values))
    return xs, med, lo, hi


def _line_chart(
    records: Records,
    path: Path,
    title: str,
    ylabel: str,
    get: Callable[[dict[str, Any]], Any],
    scale: float = 1.0,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in SYSTEMS:
        xs, med, lo, hi = _series(records, system, get)
        if xs:
            yerr = [[v * scale for v in lo], [v * scale for v in hi]]
            ax.errorbar(xs, [m * scale for m in med], yerr=yerr, marker="o", capsize=3,
                        label=LABELS[system])  # fmt: skip
    save_log_chart(fig, ax, path, "ports on the bridge", ylabel, title)


def save_log_chart(fig: Any, ax: Any, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    """Labels a log-log chart the way every end-to-end chart is labelled, saves it, closes it."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _change_chart(records: Records, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [
        w
        for w in _workloads(records)
        if any(r.get("changes") for r in _ok(records) if r["workload"] == w)
    ]
    if not workloads:
        return
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
    width = 0.8 / len(CHANGE_SYSTEMS)
    for ax, w in zip(axes[0], workloads):
        for i, system in enumerate(CHANGE_SYSTEMS):
            meds = []
            for kind in CHANGES:
                values = _values(records, system, w, _change_field(kind, "s"))
                meds.append(statistics.median(values) if values else 0)
            xs = [k + (i - 1) * width for k in range(len(CHANGES))]
            ax.bar(xs, meds, width, label=LABELS[system])
            for x, med in zip(xs, meds):
                if not med and _failure(records, system, w):  # a run that did not get there
                    ax.annotate("did not\nfinish", (x, 1), xycoords=("data", "axes fraction"),
                                xytext=(0, -30), textcoords="offset points", ha="center",
                                fontsize="x-small")  # fmt: skip
        ax.set_xticks(range(len(CHANGES)), CHANGES)
        ax.set_yscale("log")
        ax.set_ylabel("seconds, call → flows on the switch (median)")
        ax.set_title(f"one change to enforced, {w}")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def charts(records: Records, out_dir: Path) -> None:
    _line_chart(
        records,
        out_dir / "e2e_cold.png",
        "cold start to filtered",
        "seconds (median, min-max)",
        lambda r: r["cold_s"],
    )
    _change_chart(records, out_dir / "e2e_change.png")
    _line_chart(
        records, out_dir / "e2e_flows.png", "flows on the switch", "flows", lambda r: r["flows"]
    )
    _line_chart(
        records,
        out_dir / "e2e_vswitchd.png",
        "ovs-vswitchd resident memory after the cold start",
        "MiB",
        lambda r: r["vswitchd_kib"],
        1 / 1024,
    )
    _line_chart(
        records,
        out_dir / "e2e_compiler_peak.png",
        "peak memory of the compiling process",
        "MiB",
        lambda r: r["compiler_peak_kib"],
        1 / 1024,
    )
