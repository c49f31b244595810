"""Variants of the p1000 cold load on a private userspace Open vSwitch with the workload's ports.

What ``docs/economy.md`` ("Where the switch's time goes in a cold load") was measured with: a
measurement tool, not a product path (``merged`` is deliberately unsafe). Each method is
``MODE:N:OPENFLOW:ORDER``; MODE is ``bundle`` (N ``--bundle add-flows`` at once, entry last),
``plain`` (the same without bundles), ``merged`` (the entry flow in part 0), ``cold``
(``coldload.cold_load``), ``coldold`` (``cold_load`` of the file in ``$COLDLOAD_OLD``),
``file1`` (one ``--bundle add-flows FILE``), ``tiny`` (N one-flow bundles, then ``file1``;
put it first), ``dump`` (``cold_load``'s emptiness check alone; put it first); ORDER is
``rr``, ``table``, ``chunk`` or ``tablechunk``. Environment: ``NOPORTS=1`` (no ports),
``HALF=1`` (every other non-entry flow), ``PERF=FILE`` (``perf record -g`` ovs-vswitchd over
the loads). Prints one JSON line per method.

    sudo .venv/bin/python benches/cold_load_variants.py \\
        bundle:4:OpenFlow15:rr,bundle:8:OpenFlow15:rr 3 [other_config:KEY=VALUE,...]
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import e2e_switch  # noqa: E402
import sgflows  # noqa: E402
import workload  # noqa: E402
from sgflows.switch import coldload  # noqa: E402


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def counter(switch, name: str) -> int:
    out = subprocess.run(
        [
            "ovs-appctl",
            "-t",
            f"{switch.dir}/run/ovs-vswitchd.{switch.vswitchd_pid}.ctl",
            "coverage/read-counter",
            name,
        ],
        capture_output=True,
        text=True,
        env=switch.env,
    ).stdout.strip()
    try:
        return int(out)
    except ValueError:
        return -1


def run_ofctl(switch, args: list[str], stdin: str) -> None:
    p = subprocess.run(
        ["ovs-ofctl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=switch.env,
        timeout=600,
    )
    if p.returncode:
        raise RuntimeError(p.stderr[:500])


def parallel(switch, bridge, parts: list[str], entry: str, opts: list[str]) -> None:
    def add(part: str) -> None:
        run_ofctl(switch, [*opts, "add-flows", bridge, "-"], part)

    with ThreadPoolExecutor(max_workers=max(1, len(parts))) as pool:
        list(pool.map(add, parts))
    if entry:
        add(entry)


def split(text: str, n: int, order: str) -> tuple[list[str], str]:
    entry_at = coldload.entry_table(text)
    body, entry = [], []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        (entry if coldload._table_of(s) == entry_at else body).append(s)
    if order == "chunk":  # contiguous chunks (compile order kept within a connection)
        size = -(-len(body) // n)
        parts = [body[i * size : (i + 1) * size] for i in range(n)]
    elif order == "table":  # sorted by table, dealt round-robin
        body.sort(key=coldload._table_of)
        parts = [body[i::n] for i in range(n)]
    elif order == "tablechunk":  # each connection gets whole tables where possible
        body.sort(key=coldload._table_of)
        size = -(-len(body) // n)
        parts = [body[i * size : (i + 1) * size] for i in range(n)]
    else:
        parts = [body[i::n] for i in range(n)]
    return ["".join(f"{x}\n" for x in p) for p in parts if p], "".join(f"{x}\n" for x in entry)


def method_fn(method: str, text: str, path: Path):
    # method: "<mode>:<n>:<of>:<order>", mode bundle|plain
    mode, n, of, order = method.split(":")
    n = int(n)
    parts, entry = split(text, n, order)
    opts = ["-O", of] + (["--bundle"] if mode == "bundle" else [])
    if mode == "tiny":  # n sequential one-flow bundles in an unused table, then the real load

        def tiny(sw, br):
            for i in range(n):
                run_ofctl(
                    sw,
                    ["-O", of, "--bundle", "add-flows", br, "-"],
                    f"table=200,priority={i + 1},actions=drop\n",
                )
            run_ofctl(sw, ["-O", of, "--bundle", "add-flows", br, str(path)], "")

        return tiny
    if mode == "dump":  # cold_load's emptiness check alone
        return lambda sw, br: coldload._require_empty(
            ["ovs-ofctl", "-O", of], br, {1, 60}, sw.env, 60
        )
    if mode == "coldold":
        import importlib.util

        spec = importlib.util.spec_from_file_location("coldload_old", os.environ["COLDLOAD_OLD"])
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        return lambda sw, br: old.cold_load(br, text, connections=n, env=sw.env)
    if mode == "cold":
        return lambda sw, br: coldload.cold_load(br, text, connections=n, env=sw.env)
    if mode == "merged":  # measurement only (unsafe): the entry flow rides in part 0
        parts2 = list(parts)
        parts2[0] = parts2[0] + entry
        return lambda sw, br: parallel(sw, br, parts2, "", ["-O", of, "--bundle"])
    if mode == "file1":
        return lambda sw, br: run_ofctl(sw, ["-O", of, "--bundle", "add-flows", br, str(path)], "")
    return lambda sw, br: parallel(sw, br, parts, entry, opts)


def main() -> None:
    methods = sys.argv[1].split(",")
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    extra = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else []
    model = workload.preset("p1000", 0)
    text = sgflows.compile(model, widen_unmatchable_port_ranges=True).to_ofctl()
    if os.environ.get("HALF"):  # every other non-entry flow: a compile with half the messages
        keep, k = [], 0
        for x in text.splitlines():
            if x.strip() and not x.startswith("#") and coldload._table_of(x) != 0:
                k += 1
                if k % 2:
                    continue
            keep.append(x)
        text = "\n".join(keep) + "\n"
    lines = sum(1 for x in text.splitlines() if x.strip() and not x.startswith("#"))
    vlans = {n: net["local_vlan"] for n, net in model["networks"].items()}
    res = {m: {"wall": [], "vcpu": [], "ccpu": [], "turns": []} for m in methods}
    with e2e_switch.PrivateOVS() as switch:
        path = Path(switch.dir) / "flows"
        path.write_text(text)
        bridge = switch.add_bridge("lfbr").name
        if extra:
            switch.vsctl("set", "open_vswitch", ".", *extra)
        if not os.environ.get("NOPORTS"):
            e2e_switch.plug_ports(switch, bridge, model["ports"], vlans)
        time.sleep(8)
        fns = {m: method_fn(m, text, path) for m in methods}
        print("loadavg before", os.getloadavg(), flush=True)
        perf = None
        if os.environ.get("PERF"):
            perf = subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-g",
                    "-F",
                    "2000",
                    "-p",
                    str(switch.vswitchd_pid),
                    "-o",
                    os.environ["PERF"],
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        for _ in range(repeat):
            for m in methods:
                e2e_switch.ofctl(switch, "del-flows", bridge)
                time.sleep(0.3)
                turns = counter(switch, "poll_create_node")
                c0, v0, t0 = child_cpu(), e2e_switch.vswitchd_cpu_s(switch), time.perf_counter()
                fns[m](switch, bridge)
                res[m]["wall"].append(time.perf_counter() - t0)
                res[m]["vcpu"].append(e2e_switch.vswitchd_cpu_s(switch) - v0)
                res[m]["ccpu"].append(child_cpu() - c0)
                res[m]["turns"].append((counter(switch, "poll_create_node") - turns) / 1000)
                if (
                    not m.startswith(("tiny", "dump"))
                    and e2e_switch.flow_count(switch, bridge) != lines
                ):
                    raise RuntimeError(f"{m}: flow count differs")
        if perf is not None:
            perf.send_signal(2)
            perf.wait()
        e2e_switch.ofctl(switch, "diff-flows", bridge, str(path))
        print("loadavg after", os.getloadavg(), flush=True)
        for m in methods:
            r = res[m]
            print(
                json.dumps(
                    {
                        "method": m,
                        "extra": extra,
                        "wall": round(statistics.median(r["wall"]), 3),
                        "walls": [round(x, 3) for x in r["wall"]],
                        "vswitchd_cpu": round(statistics.median(r["vcpu"]), 3),
                        "ofctl_cpu": round(statistics.median(r["ccpu"]), 3),
                        "kturns": round(statistics.median(r["turns"]), 1),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
