"""sgflows beside Neutron's OVS firewall driver: one command, a Markdown table and a PNG chart.

    python benches/compare.py p10 p100 p1000 --run-neutron

For each named workload (``workload.PRESETS``) it compiles with sgflows in a fresh child
process (best of ``--repeat`` runs; peak RSS from ``ru_maxrss``), appends the figures to
``benches/results/sgflows.jsonl``, optionally runs the Neutron reference on the same workloads
first (``--run-neutron``: ``benches/neutron_ref/run.sh``, appending to ``neutron.jsonl``), and
writes ``benches/results/compare.md`` and ``compare.png`` from the latest record of each
(workload, seed) in both files. Needs the ``bench`` extra (matplotlib) for the chart.

The timed sgflows work is ``compile`` plus ``to_ofctl`` (model objects to ``ovs-ofctl`` text),
which matches what Neutron's timed phase does (security-group payload to ``ovs-ofctl`` text);
neither side includes installing flows in Open vSwitch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workload  # noqa: E402  (benches/ is not a package)

RESULTS = HERE / "results"
# Same semantics as Neutron on DCCP/UDP-Lite port ranges; room for the largest workloads.
OPTIONS: dict[str, Any] = {"widen_unmatchable_port_ranges": True, "max_flows": 50_000_000}


def _git_head() -> str | None:
    """The checkout's commit: which sgflows (and which harness) produced a record."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sgflows_child(preset: str, seed: int, repeat: int) -> dict[str, Any]:
    """Inside the measuring process: generate, then compile ``repeat`` times."""
    import logging

    logging.disable(logging.WARNING)  # the widening warnings, once per rule and run
    import sgflows

    model = workload.preset(preset, seed=seed)
    rss_before = _rss_kib()
    compile_s, render_s, cpu_s = [], [], []
    result = None
    for _ in range(repeat):
        result = None
        t, c = time.perf_counter(), time.process_time()
        result = sgflows.compile(model, **OPTIONS)
        t1 = time.perf_counter()
        text = result.to_ofctl()
        t2 = time.perf_counter()
        compile_s.append(t1 - t)
        render_s.append(t2 - t1)
        cpu_s.append(time.process_time() - c)  # all threads of the process
        del text
    assert result is not None
    total = [c + r for c, r in zip(compile_s, render_s)]
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    changes = {}
    before = set(result.to_ofctl().splitlines())
    for kind in ("rule", "member"):
        # the baseline an incremental compiler must beat: one change, the whole recompile
        changed = workload.mutate(model, kind, seed=1)
        t = time.perf_counter()
        after = sgflows.compile(changed, **OPTIONS)
        text = after.to_ofctl()
        elapsed = time.perf_counter() - t
        lines = set(text.splitlines())
        changes[kind] = {
            "s": round(elapsed, 4),
            "flows_added": len(lines - before),
            "flows_removed": len(before - lines),
            "flows": after.flow_count,
        }
    return {
        "status": "ok",
        "sgflows": sgflows.__version__,
        "compile_s": round(min(compile_s), 4),
        "render_s": round(min(render_s), 4),
        "sync_s": round(min(total), 4),
        "sync_s_runs": [round(x, 4) for x in total],
        "sync_cpu_s": round(min(cpu_s), 4),
        "rss_before_kib": rss_before,
        "maxrss_kib": maxrss,
        "changes": changes,
        "flows": result.flow_count,
        "flows_per_table": result.stats.get("per_table"),
        "duplicates": result.stats.get("duplicates"),
    }


def run_sgflows(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    params = workload.PRESETS[preset]
    record: dict[str, Any] = {
        "system": "sgflows",
        "workload": preset,
        "params": params,
        "seed": args.seed,
        "sizes": workload.summary(workload.preset(preset, seed=args.seed)),
        "timeout_s": args.timeout,
        "repeat": args.repeat,
        "host": {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_head": _git_head(),
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", preset]
    cmd += ["--seed", str(args.seed), "--repeat", str(args.repeat)]
    limit = int(args.max_memory_gib * 2**30)

    def cap_memory(limit: int = limit) -> None:  # the machine is shared
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=cap_memory
    )
    try:
        stdout, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        record["status"] = "did not finish"
    else:
        try:
            record.update(json.loads(stdout.strip().splitlines()[-1]))
        except (IndexError, ValueError):
            record.update({"status": "error", "error": f"child exited {proc.returncode}"})
    record["wall_s"] = round(time.perf_counter() - t, 2)
    record["host"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    return record


def latest(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    out: dict[tuple[str, int], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                out[(r["workload"], r.get("seed", 0))] = r
    return out


def _fmt(r: dict[str, Any] | None, key: str, scale: float = 1.0, digits: int = 2) -> str:
    if r is None:
        return "—"
    if r.get("status") != "ok":
        return str(r.get("status"))
    if r.get(key) is None:
        return "—"
    return f"{r[key] * scale:,.{digits}f}"


def _change(r: dict[str, Any] | None, kind: str) -> str:
    change = (r or {}).get("changes", {}).get(kind)
    return "—" if not change else f"{change['s']:,.3g}"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> str:
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok":
        return "—"
    if not a.get(key) or not b.get(key):
        return "—"
    return f"{a[key] / b[key]:,.1f}x"


def render_markdown(rows: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]) -> str:
    lines = [
        "Time: sgflows `compile` + `to_ofctl` (best of the repeats) against Neutron's "
        "`setup_port_filters` for all ports (see benches/README.md); flows: distinct flows in "
        "the final table; memory: peak RSS of the process (Neutron's includes ~135 MiB of "
        "imported modules). CPU: the process's CPU time over the same work (steadier on this "
        "shared machine; sgflows' counts all its threads). Ratios are Neutron / sgflows. "
        "+1 rule / +1 member: one rule added to a group / one address added to a remote group; "
        "sgflows recompiles the whole model (`workload.mutate`), Neutron refreshes the affected "
        "ports through its agent path.",
        "",
        "| workload | ports | member addrs | sgflows s | Neutron s | speed-up "
        "| sgflows CPU s | Neutron CPU s | CPU ratio "
        "| sgflows flows | Neutron flows | Neutron/sgflows flows "
        "| sgflows peak MiB | Neutron peak MiB "
        "| +1 rule s: sgflows / Neutron | +1 member s: sgflows / Neutron |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, s, n in rows:
        ref = s or n or {}
        sizes = ref.get("sizes", {})
        lines.append(
            f"| {name} | {sizes.get('ports', 0):,} | {sizes.get('member_addresses', 0):,} "
            f"| {_fmt(s, 'sync_s', digits=3)} | {_fmt(n, 'sync_s')} | {_ratio(n, s, 'sync_s')} "
            f"| {_fmt(s, 'sync_cpu_s', digits=3)} | {_fmt(n, 'sync_cpu_s')} "
            f"| {_ratio(n, s, 'sync_cpu_s')} "
            f"| {_fmt(s, 'flows', digits=0)} | {_fmt(n, 'flows', digits=0)} "
            f"| {_ratio(n, s, 'flows')} "
            f"| {_fmt(s, 'maxrss_kib', 1 / 1024, 0)} | {_fmt(n, 'maxrss_kib', 1 / 1024, 0)} "
            f"| {_change(s, 'rule')} / {_change(n, 'rule')} "
            f"| {_change(s, 'member')} / {_change(n, 'member')} |"
        )
    return "\n".join(lines) + "\n"


def render_chart(
    rows: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_f) = plt.subplots(1, 2, figsize=(11, 4.5))
    for label, idx, marker, color in (
        ("sgflows", 1, "o", "tab:blue"),
        ("Neutron OVS driver", 2, "s", "tab:orange"),
    ):
        ok = [r[idx] for r in rows if r[idx] and r[idx].get("status") == "ok"]
        # the ports series as lines; workloads with big remote groups as separate markers
        for series, style in (("ports", "-"), ("members", "")):
            chosen = [r for r in ok if ("members" in r["params"]) == (series == "members")]
            points = sorted((r["sizes"]["ports"], r["sync_s"], r["flows"]) for r in chosen)
            if not points:
                continue
            members = max(r["params"].get("members", 0) for r in chosen)
            name = label if series == "ports" else f"{label}, members={members:,}"
            kw = {"marker": marker if style else "x", "linestyle": style or "none"}
            ports = [p[0] for p in points]
            ax_t.plot(ports, [p[1] for p in points], color=color, label=name, **kw)
            ax_f.plot(ports, [p[2] for p in points], color=color, label=name, **kw)
        # runs that failed (out of memory, did not finish): a dotted line at their size
        for r in rows:
            rec = r[idx]
            if rec and rec.get("status") not in (None, "ok"):
                ports = rec["sizes"]["ports"]
                for ax in (ax_t, ax_f):
                    ax.axvline(ports, color=color, linestyle=":", linewidth=1)
                    ax.annotate(
                        f"{label.split()[0]} {rec['workload']}: {rec['status']}",
                        xy=(ports, 0.5),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        fontsize=7,
                        color=color,
                        ha="right",
                        va="center",
                    )
    for ax, title, unit in ((ax_t, "time to flows", "seconds"), (ax_f, "flows", "flows")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ports (50 rules per group, 2 groups per port)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("presets", nargs="*", default=["p10", "p100", "p1000"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--max-memory-gib", type=float, default=8.0)
    parser.add_argument("--run-neutron", action="store_true", help="run the Neutron side first")
    parser.add_argument("--skip-sgflows", action="store_true", help="only redraw from results")
    args = parser.parse_args(argv)

    if args.child:
        try:
            out = sgflows_child(args.presets[0], args.seed, args.repeat)
        except MemoryError:
            out = {"status": "out of memory"}
        except Exception as e:
            out = {"status": "error", "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)
        return 0

    RESULTS.mkdir(exist_ok=True)
    if args.run_neutron:
        subprocess.run(
            [
                str(HERE / "neutron_ref" / "run.sh"),
                *args.presets,
                "--seed",
                str(args.seed),
                "--timeout",
                str(args.timeout),
                "--max-memory-gib",
                str(args.max_memory_gib),
            ],
            check=True,
        )
    if not args.skip_sgflows:
        with (RESULTS / "sgflows.jsonl").open("a", encoding="utf-8") as f:
            for preset in args.presets:
                record = run_sgflows(preset, args)
                f.write(json.dumps(record) + "\n")
                f.flush()
                print(
                    f"[compare] sgflows {preset}: {record.get('status')} "
                    f"{record.get('sync_s', '')} s, {record.get('flows', '')} flows",
                    file=sys.stderr,
                )

    ours = latest(RESULTS / "sgflows.jsonl")
    theirs = latest(RESULTS / "neutron.jsonl")
    names = sorted(
        {k for k in ours if k[1] == args.seed} | {k for k in theirs if k[1] == args.seed},
        key=lambda k: ((ours.get(k) or theirs.get(k) or {}).get("sizes", {}).get("ports", 0), k),
    )
    rows = [(k[0], ours.get(k), theirs.get(k)) for k in names]
    (RESULTS / "compare.md").write_text(render_markdown(rows), encoding="utf-8")
    try:
        render_chart(rows, RESULTS / "compare.png")
    except ImportError:
        print("[compare] matplotlib missing: pip install -e '.[bench]'", file=sys.stderr)
    sys.stdout.write(render_markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
