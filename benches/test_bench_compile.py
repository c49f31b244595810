"""pytest-benchmark: ``sgflows.compile`` on the workloads that Neutron's driver is measured on.

In the normal test run (``--benchmark-disable``) each benchmark body runs once, on the
smallest workload only, so the code cannot rot. ``make bench`` (``--benchmark-enable``) times
the presets named by ``SGFLOWS_BENCH_PRESETS`` (comma-separated names from
``workload.PRESETS``; default ``p10,p100``).

Every compile passes ``widen_unmatchable_port_ranges=True``: the workloads contain DCCP/UDP-Lite
rules with port ranges, which Neutron widens to the whole protocol; sgflows refuses them unless
asked to do the same.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload

sgflows = pytest.importorskip("sgflows")

_OPTIONS: dict[str, Any] = {"widen_unmatchable_port_ranges": True, "max_flows": 50_000_000}


def _presets(config: pytest.Config) -> list[str]:
    names = os.environ.get("SGFLOWS_BENCH_PRESETS", "p10,p100").split(",")
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in workload.PRESETS]
    if unknown:
        raise pytest.UsageError(f"SGFLOWS_BENCH_PRESETS: unknown {unknown}")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "preset" in metafunc.fixturenames:
        names = _presets(metafunc.config)
        if metafunc.config.getoption("benchmark_disable", False):
            names = ["p10"]  # smoke run in the test suite: the smallest workload, once
        metafunc.parametrize("preset", names)


_CACHE: dict[tuple[str, str], Any] = {}


def _workload(preset: str, shape: str = "model") -> Any:
    key = (preset, shape)
    if key not in _CACHE:
        model = _CACHE.get((preset, "model")) or workload.preset(preset)
        _CACHE[(preset, "model")] = model
        _CACHE[key] = model if shape == "model" else workload.to_neutron_rpc(model)
    return _CACHE[key]


def _record(benchmark: Any, preset: str, result: Any) -> None:
    sizes = workload.summary(_workload(preset))
    benchmark.extra_info.update(
        {"workload": preset, "ports": sizes["ports"], "flows": result.flow_count}
    )


@pytest.mark.parametrize("shape", ["model", "rpc"])
def test_compile(benchmark: Any, preset: str, shape: str) -> None:
    """The whole workload, from Python objects to a compiled result."""
    data = _workload(preset, shape)
    result = benchmark(sgflows.compile, data, **_OPTIONS)
    _record(benchmark, preset, result)
    assert result.flow_count > 0
    assert result.stats["ports"] == len(_workload(preset)["ports"])


def test_compile_json_bytes(benchmark: Any, preset: str) -> None:
    """From JSON bytes, as an agent reading a file or a socket would hand it over."""
    import json

    data = json.dumps(_workload(preset)).encode()
    result = benchmark(sgflows.compile, data, **_OPTIONS)
    _record(benchmark, preset, result)


def test_compile_and_render(benchmark: Any, preset: str) -> None:
    """Compile plus the ``ovs-ofctl`` text that goes to ``--bundle add-flows``."""
    data = _workload(preset)

    def run() -> tuple[Any, str]:
        result = sgflows.compile(data, **_OPTIONS)
        return result, result.to_ofctl()

    result, text = benchmark(run)
    _record(benchmark, preset, result)
    assert text.count("\n") >= result.flow_count - 1


@pytest.mark.parametrize("change", ["rule", "member", "port"])
def test_recompile_after_change(benchmark: Any, preset: str, change: str) -> None:
    """The baseline an incremental compiler must beat: one change, whole recompile; the
    number of flows that differ is recorded next to the time."""
    before = sgflows.compile(_workload(preset), **_OPTIONS)
    changed = workload.mutate(_workload(preset), change, seed=1)
    after = benchmark(sgflows.compile, changed, **_OPTIONS)
    old = set(before.to_ofctl().splitlines())
    new = set(after.to_ofctl().splitlines())
    _record(benchmark, preset, after)
    benchmark.extra_info.update(
        {"change": change, "flows_added": len(new - old), "flows_removed": len(old - new)}
    )
    assert new != old


_SESSION_KINDS = [
    "rule_add",
    "rule_remove",
    "member_add",
    "member_remove",
    "port_add",
    "port_remove",
    "port_update",
]


def _session_change(model: dict[str, Any], kind: str) -> tuple[Any, Any]:
    """One change of ``kind`` through ``sgflows.Compiler`` and the change that undoes it."""
    port = copy.deepcopy(model["ports"][0])
    group = port["security_groups"][0]
    rules = model["security_groups"][group]["rules"]
    remote = sorted(model["members"])[0]
    # IPv6, as in the criterion suite: the workloads' default groups allow IPv4 from
    # anywhere, so an IPv4 rule or member added to them reaches no flow.
    new_rule = {
        "direction": "ingress",
        "ethertype": "IPv6",
        "protocol": "tcp",
        "port_range_min": 61000,
        "port_range_max": 61000,
        "remote_ip_prefix": "2001:db8:ffff::7/128",
    }
    new_port = {**copy.deepcopy(port), "id": "bench-new-port", "ofport": 60000}
    moved = {**copy.deepcopy(port), "fixed_ips": [*port["fixed_ips"], "10.254.0.1"]}
    member = {"IPv6": ["2001:db8:ffff::9"]}
    existing = {"IPv6": model["members"][remote]["IPv6"][:1]}
    changes: dict[str, tuple[Any, Any]] = {
        "rule_add": (
            lambda c: c.add_rules(group, [new_rule]),
            lambda c: c.set_rules(group, rules),
        ),
        "rule_remove": (
            lambda c: c.remove_rules(group, [rules[1]]),
            lambda c: c.set_rules(group, rules),
        ),
        "member_add": (
            lambda c: c.add_members(remote, member),
            lambda c: c.remove_members(remote, member),
        ),
        "member_remove": (
            lambda c: c.remove_members(remote, existing),
            lambda c: c.add_members(remote, existing),
        ),
        "port_add": (lambda c: c.add_port(new_port), lambda c: c.remove_port("bench-new-port")),
        "port_remove": (lambda c: c.remove_port(port["id"]), lambda c: c.add_port(port)),
        "port_update": (lambda c: c.update_port(moved), lambda c: c.update_port(port)),
    }
    return changes[kind]


@pytest.mark.parametrize("kind", _SESSION_KINDS)
def test_session_change(benchmark: Any, preset: str, kind: str) -> None:
    """One change of each kind on a kept ``sgflows.Compiler``, from the call to the diff
    (each round undoes the previous one first, untimed)."""
    model = _workload(preset)
    compiler = sgflows.Compiler(model, **_OPTIONS)
    forward, back = _session_change(model, kind)
    applied = [False]

    def undo() -> None:
        if applied[0]:
            back(compiler)

    def change() -> Any:
        applied[0] = True
        return forward(compiler)

    diff = benchmark.pedantic(change, setup=undo, rounds=30 if preset != "p10" else 1)
    benchmark.extra_info.update(
        {"added": diff.added, "modified": diff.modified, "removed": diff.removed}
    )
    undo()
    fresh = sgflows.compile(model, **_OPTIONS)
    assert compiler.to_ofctl() == fresh.to_ofctl()
