"""Times ``sgflows.compile`` on one model file: thread CPU time and wall clock, median of N.

Measures whichever ``sgflows`` is first on ``sys.path``, so two builds can be compared in one
run on the same machine state (``PYTHONPATH=DIR`` puts a copy of another build first)::

    python benches/compile_timing.py build/p1000.json -n 20
    PYTHONPATH=build/before_pkg python benches/compile_timing.py build/p1000.json -n 20

``--input dict`` passes the decoded model (Python objects) instead of the file's bytes.
Every compile passes ``widen_unmatchable_port_ranges=True`` (the workloads need it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import sgflows


def measure(model: Any, runs: int) -> tuple[list[float], list[float], int]:
    """Thread CPU and wall seconds of each of `runs` compiles, and the flow count."""
    cpu: list[float] = []
    wall: list[float] = []
    flows = 0
    for _ in range(runs):
        c0, w0 = time.thread_time(), time.perf_counter()
        result = sgflows.compile(model, widen_unmatchable_port_ranges=True)
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
        flows = result.flow_count
        del result
    return cpu, wall, flows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument("--input", choices=["bytes", "dict"], default="bytes")
    args = parser.parse_args(argv)
    data = args.model.read_bytes()
    model: Any = json.loads(data) if args.input == "dict" else data
    measure(model, 2)  # warm up: first-touch allocations, caches
    cpu, wall, flows = measure(model, args.runs)
    where = Path(sgflows.__file__).parent
    print(
        f"{args.model.name} ({args.input}, {flows} flows, sgflows from {where}): "
        f"thread CPU median {statistics.median(cpu) * 1e3:.1f} ms (min {min(cpu) * 1e3:.1f}), "
        f"wall median {statistics.median(wall) * 1e3:.1f} ms (min {min(wall) * 1e3:.1f}) "
        f"over {args.runs}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
