"""Why loading a compile into a bridge with many ports is slow, and the cold load that fixes it.

One private userspace Open vSwitch (``e2e_switch.PrivateOVS``, its own netns), one bridge with
the preset's ports plugged as ``e2e.py`` plugs them (internal ports, or none with
``--no-ports``), then the preset's compile loaded ``--repeat`` times per method, alternating,
the bridge emptied (``del-flows``) before each load:

- ``bundle``: one ``ovs-ofctl --bundle add-flows`` (the CLI's documented command);
- ``coldN``: ``sgflows.switch.coldload.cold_load`` over N connections.

Each load is checked: the bridge's flow count equals the compile's lines, and the cold load's
table equals the bundle's (``diff-flows``). Prints one JSON line per method: median wall
seconds, median ovs-vswitchd CPU seconds, all walls, the load average before and after.

    sudo .venv/bin/python benches/bridge_load.py p1000 --repeat 5 --connections 4 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import e2e_switch
import sgflows
import workload
from sgflows.switch.coldload import cold_load


def _load(switch: e2e_switch.PrivateOVS, bridge: str, method: str, path: Path) -> None:
    if method == "bundle":
        e2e_switch.ofctl(switch, "--bundle", "add-flows", bridge, str(path))
    else:
        text = path.read_text(encoding="utf-8")
        cold_load(bridge, text, connections=int(method[4:]), env=switch.env)


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    model = workload.preset(args.preset, args.seed)
    text = sgflows.compile(model, widen_unmatchable_port_ranges=True).to_ofctl()
    lines = sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#"))
    methods = ["bundle", *(f"cold{n}" for n in args.connections)]
    vlans = {n: net["local_vlan"] for n, net in model["networks"].items()}
    walls: dict[str, list[float]] = {m: [] for m in methods}
    cpus: dict[str, list[float]] = {m: [] for m in methods}
    load_before = os.getloadavg()[0]
    e2e_switch.cleanup_leftovers()
    with (
        tempfile.TemporaryDirectory(prefix="sgflows-bload-") as tmp,
        e2e_switch.PrivateOVS() as switch,
    ):
        path = Path(tmp) / "flows"
        path.write_text(text, encoding="utf-8")
        bridge = switch.add_bridge(e2e_switch.unique_name("bld")).name
        ports = [] if args.no_ports else model["ports"]
        e2e_switch.plug_ports(switch, bridge, ports, vlans)
        time.sleep(args.settle)  # let ovs-vswitchd finish configuring the new ports
        for _ in range(args.repeat):
            for method in methods:
                e2e_switch.ofctl(switch, "del-flows", bridge)
                cpu, t = e2e_switch.vswitchd_cpu_s(switch), time.perf_counter()
                _load(switch, bridge, method, path)
                walls[method].append(time.perf_counter() - t)
                cpus[method].append(e2e_switch.vswitchd_cpu_s(switch) - cpu)
                if e2e_switch.flow_count(switch, bridge) != lines:
                    raise RuntimeError(f"{method}: flow count differs from the compile")
                e2e_switch.ofctl(switch, "diff-flows", bridge, str(path))
    load_after = os.getloadavg()[0]
    return [
        {
            "preset": args.preset,
            "ports": len(ports),
            "flows": lines,
            "method": m,
            "wall_s": round(statistics.median(walls[m]), 3),
            "vswitchd_cpu_s": round(statistics.median(cpus[m]), 2),
            "walls": [round(w, 3) for w in walls[m]],
            "loadavg": [round(load_before, 2), round(load_after, 2)],
        }
        for m in methods
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("preset", choices=sorted(workload.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="*", default=[4])
    parser.add_argument("--no-ports", action="store_true", help="an empty bridge (the baseline)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after plugging")
    args = parser.parse_args(argv)
    for record in run(args):
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
