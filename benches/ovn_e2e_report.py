"""The table and charts of ``ovn_e2e.py``: its measures, kept as JSON lines beside the Markdown
(``results/ovn_e2e.jsonl``), the table (``results/ovn_e2e.md``) and, with matplotlib (the
``bench`` extra), one chart per measure against the ports (``results/ovn_e2e_*.png``)."""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from e2e_report import save_log_chart

VARIANTS = ("neutron", "sgflows")
LABELS = {"neutron": "Neutron 29.0.0's acl.py rows", "sgflows": "sgflows --target ovn rows"}


@dataclass
class Measure:
    """One variant loaded on one workload."""

    preset: str
    variant: str
    acls: int
    #: ``None``: ``--wait=hv`` did not return within ``timeout``
    seconds: float | None
    flows: int
    base_flows: int
    northd_mb: float
    controller_mb: float
    #: 1-minute load average right after the load: the machine is shared
    load1: float = 0.0
    #: times ovn-controller lost its OpenFlow connection to br-int during this load
    drops: int = 0
    ports: int = 0
    timeout: int = 0
    commit: str = ""
    #: UTC, when the load began
    started: str = ""
    #: the invocation's arguments
    command: str = ""
    #: ``""``: the cold load; else the change (``+rule`` …) applied after it
    change: str = ""
    #: what the change committed (``+1 ACL``), as ``ovn_changes.summary`` says it
    committed: str = ""
    #: sgflows' changes: of ``seconds``, ``sgflows.ovn.apply`` connecting and reading its rows
    connect_seconds: float | None = None


def save(results: list[Measure], path: Path) -> None:
    path.write_text("".join(json.dumps(dataclasses.asdict(m)) + "\n" for m in results))


def read(path: Path) -> list[Measure]:
    names = {f.name for f in dataclasses.fields(Measure)}
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            out.append(Measure(**{k: v for k, v in json.loads(line).items() if k in names}))
    return out


LOAD_LINE = "Machine load average at the end: "


def recorded_load(table: str) -> str:
    """The end-of-run load average a rendered table states (``unknown`` without one)."""
    for line in table.splitlines():
        if line.startswith(LOAD_LINE):
            return line[len(LOAD_LINE) :].rstrip(".")
    return "unknown"


def render(results: list[Measure], load_avg: str) -> str:
    commits = sorted({m.commit for m in results})
    commands = sorted({m.command for m in results})
    times = sorted(m.started for m in results if m.started)
    lines = [
        "# OVN end to end: sgflows' rows beside Neutron's (`benches/ovn_e2e.py`)",
        "",
        "One chassis, every port local; Neutron's rows from Neutron 29.0.0's `acl.py`. "
        f"Commit `{'`, `'.join(commits)}`; one invocation (`python benches/ovn_e2e.py "
        f"{' | '.join(commands)}`), {_span(times)}; a fresh OVN per run; cells with several "
        "runs are `median (min-max)`; the ratio is of medians in the same invocation.",
        f"{LOAD_LINE}{load_avg}.",
        "",
        "| workload | rows | runs | ACLs | NB commit → flows installed (s) | Neutron / sgflows "
        "| flows on br-int (rules) | northd RSS (MB) | ovn-controller RSS (MB) "
        "| br-int connection lost | load average (1 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells: dict[tuple[str, str], list[Measure]] = {}
    for m in results:
        if m.change:
            continue
        cells.setdefault((m.preset, m.variant), []).append(m)
    for (preset, _), runs in cells.items():
        lines.append(_row(runs, cells.get((preset, "neutron")), cells.get((preset, "sgflows"))))
    lines += [
        "",
        "Flows in parentheses: beyond the switch's own flows without any rule (first run; "
        '`?`: not counted, a load did not finish). "br-int connection lost": how often '
        "ovn-controller's log says one of its OpenFlow connections to br-int dropped during "
        "the load, summed over the runs (after a loss of the flow connection it recomputes "
        "and reinstalls every flow; `OVS OpenFlow connection reconnected` in its log).",
    ]
    if any(m.change for m in results):
        lines += ["", *_change_table(results)]
    return "\n".join(lines) + "\n"


def _change_table(results: list[Measure]) -> list[str]:
    """The second table: each change after the cold load, both sides, medians and ratios."""
    cells: dict[tuple[str, str], dict[str, list[Measure]]] = {}
    for m in results:
        if m.change:
            cells.setdefault((m.preset, m.change), {}).setdefault(m.variant, []).append(m)
    lines = [
        "## One change to enforced",
        "",
        "After each side's cold load, the four changes of `benches/e2e_changes.py` (the OpenFlow "
        "benchmark's, on the same workloads) one after another, each committed as only the rows "
        "that changed and timed from the start of its Northbound transaction until "
        "`ovn-nbctl --wait=hv` returns. Neutron: the rows its `acl.py` makes for the model after "
        "the change, compared with those before, as one `ovn-nbctl` transaction of the calls "
        "its OVN driver makes (`acl-add`/`acl-del` on the port group, ports added to port "
        "groups; a remote group's member is a logical port in its port group). sgflows: "
        "`sgflows.ovn.apply` of the new model's compile result (one IDL transaction of the row "
        "diff; connecting its IDL and reading the rows it owns included, and shown apart in the "
        "last but one column), then `ovn-nbctl --wait=hv sync`. "
        "Both sides' rows are made before the clock starts. The +port change's port is bound "
        "on the chassis, and the +member change's remote logical port exists, from the start "
        "(in no port group until their change).",
        "",
        "| workload | change | runs | Neutron (s) | sgflows (s) | Neutron / sgflows "
        "| ACLs after (Neutron / sgflows) | flows on br-int after (Neutron / sgflows) "
        "| Neutron committed | sgflows committed | sgflows: apply's connect (s) "
        "| load average (1 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    for (preset, change), sides in cells.items():
        neutron, ours = sides.get("neutron", []), sides.get("sgflows", [])
        runs = max(len(neutron), len(ours))
        loads = [m.load1 for m in [*neutron, *ours]]
        lines.append(
            f"| {preset} | {change} | {runs} | {_seconds(neutron)} | {_seconds(ours)} | "
            f"{_change_ratio(neutron, ours)} | "
            f"{_first(neutron, 'acls')} / {_first(ours, 'acls')} | "
            f"{_first(neutron, 'flows')} / {_first(ours, 'flows')} | "
            f"{_committed(neutron)} | {_committed(ours)} | {_connects(ours)} | "
            f"{_spread(loads, '{:.1f}')} |"
        )
    return lines


def _seconds(runs: list[Measure]) -> str:
    finished = [m.seconds for m in runs if m.seconds is not None]
    text = _spread(finished, "{:.2f}") if finished else ""
    if len(finished) < len(runs):
        late = f"{len(runs) - len(finished)} did not finish in {runs[0].timeout:,} s"
        text = f"{text}; {late}" if text else late
    return text or "—"


def _change_ratio(neutron: list[Measure], ours: list[Measure]) -> str:
    """As ``_ratio``, with two decimals below 1 (a change can be faster on either side)."""
    ratio = _ratio(neutron, ours)
    if not ratio:
        return ratio
    med_a = statistics.median(m.seconds for m in neutron if m.seconds is not None)
    med_b = statistics.median(m.seconds for m in ours if m.seconds is not None)
    return f"{med_a / med_b:.2f}x" if med_a < med_b else ratio


def _connects(runs: list[Measure]) -> str:
    values = [m.connect_seconds for m in runs if m.connect_seconds is not None]
    return _spread(values, "{:.2f}") if values else "—"


def _first(runs: list[Measure], name: str) -> str:
    return f"{getattr(runs[0], name):,}" if runs else "—"


def _committed(runs: list[Measure]) -> str:
    """What the change committed; every run commits the same rows (else each is shown)."""
    return "; ".join(sorted({m.committed for m in runs})) or "—"


def _row(runs: list[Measure], neutron: list[Measure] | None, ours: list[Measure] | None) -> str:
    first = runs[0]
    finished = [m.seconds for m in runs if m.seconds is not None]
    seconds = _spread(finished, "{:.1f}") if finished else ""
    if len(finished) < len(runs):
        late = f"{len(runs) - len(finished)} did not finish in {first.timeout:,} s"
        seconds = f"{seconds}; {late}" if seconds else late
    rules = f"{first.flows - first.base_flows:,}" if first.base_flows else "?"
    ratio = _ratio(neutron, ours) if first.variant == "neutron" else ""
    return (
        f"| {first.preset} | {first.variant} | {len(runs)} | {first.acls:,} | {seconds} | "
        f"{ratio} | {first.flows:,} ({rules}) | "
        f"{statistics.median(m.northd_mb for m in runs):.0f} | "
        f"{statistics.median(m.controller_mb for m in runs):.0f} | "
        f"{sum(m.drops for m in runs)} | {_spread([m.load1 for m in runs], '{:.1f}')} |"
    )


def _span(times: list[str]) -> str:
    if not times:
        return "times unknown"
    return f"{times[0]} to {times[-1][11:]} UTC (the loads' starts)"


def _spread(values: list[float], fmt: str) -> str:
    med = fmt.format(statistics.median(values))
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def _ratio(a: list[Measure] | None, b: list[Measure] | None) -> str:
    """Neutron's median over sgflows'; only when every run of both finished."""
    if not a or not b or any(m.seconds is None for m in [*a, *b]):
        return ""
    med_a = statistics.median(m.seconds for m in a if m.seconds is not None)
    med_b = statistics.median(m.seconds for m in b if m.seconds is not None)
    return f"{med_a / med_b:.1f}x" if med_b > 0 else ""


# --- charts ----------------------------------------------------------------------------------


def charts(results: list[Measure], stem: Path) -> list[Path]:
    """One chart per measure (``<stem>_time.png``, ``_flows``, ``_controller``); none without
    matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print(
            "[ovn_e2e] matplotlib missing (pip install -e '.[bench]'): no charts", file=sys.stderr
        )
        return []
    matplotlib.use("Agg")
    cold = [m for m in results if not m.change]
    made = []
    for suffix, title, ylabel, get in (
        ("time", "OVN: Northbound commit to flows installed (--wait=hv)", "seconds "
         "(median, min-max; x: not done in the timeout)", lambda m: m.seconds),
        ("flows", "OVN: OpenFlow flows on br-int", "flows", lambda m: float(m.flows)),
        ("controller", "OVN: ovn-controller resident memory after the load", "MB",
         lambda m: m.controller_mb),
    ):  # fmt: skip
        path = stem.with_name(f"{stem.name}_{suffix}.png")
        _line_chart(cold, path, title, ylabel, get)
        made.append(path)
    if any(m.change for m in results):
        path = stem.with_name(f"{stem.name}_change.png")
        _change_chart([m for m in results if m.change], path)
        made.append(path)
    return made


def _change_chart(results: list[Measure], path: Path) -> None:
    """Per workload, each change's median seconds (min-max bars), Neutron's beside sgflows'."""
    import matplotlib.pyplot as plt

    presets = sorted({m.preset for m in results}, key=lambda p: min(
        m.ports for m in results if m.preset == p))  # fmt: skip
    kinds = list(dict.fromkeys(m.change for m in results))
    fig, axes = plt.subplots(1, len(presets), figsize=(5 * len(presets), 4.5), squeeze=False)
    for ax, preset in zip(axes[0], presets, strict=True):
        for i, variant in enumerate(VARIANTS):
            xs, med, lo, hi = [], [], [], []
            for k, kind in enumerate(kinds):
                values = [m.seconds for m in results if (m.preset, m.variant, m.change)
                          == (preset, variant, kind) and m.seconds is not None]  # fmt: skip
                if values:
                    xs.append(k + (i - 0.5) * 0.4)
                    med.append(statistics.median(values))
                    lo.append(med[-1] - min(values))
                    hi.append(max(values) - med[-1])
            ax.bar(xs, med, width=0.4, yerr=[lo, hi], capsize=3, label=LABELS[variant])
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_yscale("log")
        ax.set_title(f"{preset}: Northbound commit to flows installed")
        ax.set_ylabel("seconds (median, min-max)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _line_chart(results: list[Measure], path: Path, title: str, ylabel: str,
                get: Callable[[Measure], float | None]) -> None:  # fmt: skip
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in VARIANTS:
        xs, med, lo, hi, late = _series(results, variant, get)
        if xs:
            ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=LABELS[variant])
        for x, timeout in late:  # a load that did not finish: its timeout, marked
            ax.plot([x], [timeout], marker="x", color="black", linestyle="none")
            ax.annotate(f"{variant}: not done\nin {timeout:,} s", (x, timeout), fontsize="x-small",
                        xytext=(-60, 6), textcoords="offset points")  # fmt: skip
    xlabel = "ports on the logical switch (all bound on one chassis)"
    save_log_chart(fig, ax, path, xlabel, ylabel, title)


def _series(
    results: list[Measure], variant: str, get: Callable[[Measure], float | None]
) -> tuple[list[int], list[float], list[float], list[float], list[tuple[int, int]]]:
    xs, med, lo, hi, late = [], [], [], [], []
    for ports in sorted({m.ports for m in results if m.variant == variant}):
        runs = [m for m in results if m.variant == variant and m.ports == ports]
        # a load that did not finish has no figure of its own: its flows were still coming
        values = [v for m in runs if m.seconds is not None and (v := get(m)) is not None]
        if any(m.seconds is None for m in runs) and get(runs[0]) is None:
            late.append((ports, runs[0].timeout))
        if values:
            xs.append(ports)
            med.append(statistics.median(values))
            lo.append(med[-1] - min(values))
            hi.append(max(values) - med[-1])
    return xs, med, lo, hi, late
