"""``sgflows.switch.coldload``: a compile loaded over several connections into an empty bridge
holds exactly the compile, the entry flows go last, and a refused load leaves no entry."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sgflows
from sgflows import cli
from sgflows.agent.dataplane.ovs import OvsDataplane
from sgflows.agent.dataplane.settings import OvsSettings
from sgflows.switch.bundles import flow_line
from sgflows.switch.coldload import (
    DEFAULT_CONNECTIONS,
    ColdLoadError,
    cold_load,
    load_parallel,
    split_for_cold_load,
    tables_of,
)
from sgflows.switch.flowstate import FlowState, Group, Update
from support.ovs import Bridge

ROOT = Path(__file__).resolve().parents[2]


def _compile(**options: Any) -> str:
    model: dict[str, Any] = json.loads((ROOT / "examples" / "two-tier.json").read_text())
    return sgflows.compile(model, **options).to_ofctl()


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def test_every_cold_load_takes_the_one_default_count() -> None:
    """``sgflows load``, ``cold_load``, ``load_parallel``, the session (``FlowState``) and the
    agent's first install load over the same number of connections (the driver's: in
    ``tests/neutron/inside/test_driver.py``)."""
    load_option = next(p for p in cli.load.params if p.name == "connections")
    defaults = {
        "sgflows load": load_option.default,
        "cold_load": inspect.signature(cold_load).parameters["connections"].default,
        "load_parallel": inspect.signature(load_parallel).parameters["connections"].default,
        "FlowState": FlowState({}).cold_connections,
        "agent": OvsDataplane(OvsSettings()).flows.cold_connections,
    }
    assert defaults == dict.fromkeys(defaults, DEFAULT_CONNECTIONS)
    assert DEFAULT_CONNECTIONS > 1  # 1 would mean: never cold load


def test_split_puts_every_flow_in_one_part_and_the_entry_tables_apart() -> None:
    text = _compile()
    parts, entry = split_for_cold_load(text, 3)
    assert len(parts) == 3
    assert sorted(ln for p in [*parts, entry] for ln in _lines(p)) == sorted(_lines(text))
    assert tables_of(entry) == {0}
    assert all(0 not in tables_of(p) for p in parts)
    # Without its entry flow (driver mode: table 0 is the agent's) the entry is table 60.
    parts, entry = split_for_cold_load(_compile(entry_flow=False), 2)
    assert tables_of(entry) == {60}
    assert all(60 not in tables_of(p) for p in parts)
    with pytest.raises(ValueError, match="at least 1"):
        split_for_cold_load(text, 0)


@pytest.mark.parametrize("connections", [1, 4])
def test_cold_load_gives_exactly_the_compile(
    bridge: Bridge, tmp_path: Path, connections: int
) -> None:
    text = _compile()
    cold_load(bridge.name, text, connections=connections, env=bridge.ovs.env)
    expected = tmp_path / "flows"
    expected.write_text(text)
    bridge.ofctl("diff-flows", bridge.name, str(expected))  # exit 0 only if identical
    assert bridge.flow_count() == len(_lines(text))


def test_agent_flows_in_the_entry_table_are_kept(bridge: Bridge) -> None:
    bridge.add_flows("table=60,priority=1,actions=NORMAL")
    text = _compile(entry_flow=False)
    cold_load(bridge.name, text, env=bridge.ovs.env)
    assert bridge.flow_count() == len(_lines(text)) + 1
    assert any("priority=1 actions=NORMAL" in f for f in bridge.dump_flows("table=60"))


def test_a_bridge_with_firewall_flows_is_refused_untouched(bridge: Bridge) -> None:
    bridge.add_flows("table=71,priority=1,actions=drop")
    with pytest.raises(ColdLoadError, match=r"table\(s\) 71"):
        cold_load(bridge.name, _compile(), env=bridge.ovs.env)
    assert bridge.flow_count() == 1


def test_a_refused_part_sends_no_entry_flow(bridge: Bridge) -> None:
    text = _compile() + "table=72,priority=5,ip,nw_src=not-an-address actions=drop\n"
    with pytest.raises(ColdLoadError, match="refused 1 of 2 parts"):
        cold_load(bridge.name, text, connections=2, env=bridge.ovs.env)
    assert bridge.dump_flows("table=0") == []
    assert bridge.flow_count() > 0  # the other part did commit: only the entry is held back


def test_cli_load_gives_the_compile_and_refuses_a_second_load(
    bridge: Bridge, tmp_path: Path
) -> None:
    flows = tmp_path / "flows"
    flows.write_text(_compile())

    def load() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "sgflows", "load", bridge.name, str(flows)]
        return subprocess.run(argv, capture_output=True, text=True, env=bridge.ovs.env)

    first = load()
    assert first.returncode == 0, first.stderr
    bridge.ofctl("diff-flows", bridge.name, str(flows))
    second = load()
    assert second.returncode == 1
    assert "already has flows" in second.stderr
    assert "Traceback" not in second.stderr


class _BridgeOfctl:
    """The session's ``Ofctl`` on a private switch's bridge (plain ``ovs-ofctl``)."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.bundles: list[str] = []
        self.parts: list[str] = []

    def bundle(self, text: str) -> None:
        self.bundles.append(text)
        self.bridge.ofctl("bundle", self.bridge.name, "-", input=text)

    def add_flows(self, text: str) -> None:
        self.parts.append(text)
        self.bridge.ofctl("--bundle", "add-flows", self.bridge.name, "-", input=text)

    def dump_flows(self) -> str:
        return self.bridge.ofctl("dump-flows", "--no-stats", self.bridge.name)


def test_the_sessions_first_install_cold_loads_an_empty_bridge(
    bridge: Bridge, tmp_path: Path
) -> None:
    """``FlowState`` (the driver's and the agent's session) cold loads its first install onto
    empty tables, entry last; the bridge then holds exactly the compile, and the next change is
    one bundle of the difference."""
    model: dict[str, Any] = json.loads((ROOT / "examples" / "two-tier.json").read_text())
    bridge.add_flows("table=60,priority=1,actions=NORMAL")  # the agent's own, in the entry table
    state = FlowState({"entry_flow": False}, cold_connections=3, cold_min_ports=1)
    ofctl = _BridgeOfctl(bridge)
    update = Update(
        ports={
            p["id"]: dict(p, local_vlan=model["networks"][p["network_id"]]["local_vlan"])
            for p in model["ports"]
        },
        groups={
            gid: Group(g["rules"], g.get("stateful", True))
            for gid, g in model["security_groups"].items()
        },
        address_groups={
            gid: {"IPv4": [n for n in nets if ":" not in n], "IPv6": [n for n in nets if ":" in n]}
            for gid, nets in model["address_groups"].items()
        },
        complete=True,
    )
    change = state.update(update, 0x5, ofctl)
    assert change.cold and not change.bundle
    state.install(change, ofctl)
    assert ofctl.bundles == [] and len(ofctl.parts) == 4
    assert tables_of(ofctl.parts[-1]) == {60}  # the entry part, sent last
    expected = tmp_path / "flows"
    flows = [flow_line(0x5, *flow) for flow in state.compiler.flows()]
    expected.write_text("\n".join([*flows, "table=60,priority=1,actions=NORMAL"]) + "\n")
    bridge.ofctl("diff-flows", bridge.name, str(expected))  # exit 0 only if identical
    # Known now: a change is one small bundle.
    http = {"direction": "ingress", "protocol": "tcp", "port_range_min": 8080}
    web = [*model["security_groups"]["web"]["rules"], http]
    change = state.update(Update(groups={"web": Group(web)}), 0x5, ofctl)
    assert not change.full and not change.cold and change.bundle
    state.install(change, ofctl)
    assert len(ofctl.bundles) == 1 and change.lines < 10
