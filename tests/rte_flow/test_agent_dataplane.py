"""The agent's rte_flow dataplane (``sgflows.agent.dataplane.rte_flow``): per-port rule sets
through the installer, fail closed. The life cycle and every refusal path run against a
scripted installer that refuses what a test says (as a driver would); the real installer runs
on this host's ``net_null`` (which creates no rule at all: the dataplane must refuse to start
rather than leave the port open). Rules that take effect are the guest's
(``test_single_port.py``)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sgflows
from sgflows import rte_probe
from sgflows.agent import config
from sgflows.agent.dataplane.api import DataplaneError
from sgflows.agent.dataplane.rte_flow import CLOSED_RULES, RteFlowDataplane
from sgflows.agent.dataplane.settings import RteFlowSettings

MAC = "fa:16:3e:00:00:0a"


def _info(*ports: str, stateful: bool = False, **extra: Any) -> dict[str, Any]:
    rules = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
              "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "10.0.0.0/24"},
             {"direction": "egress", "ethertype": "IPv4"}]  # fmt: skip
    devices = {
        p: {"id": p, "device": p, "mac_address": f"fa:16:3e:00:00:{i + 10:02x}",
            "fixed_ips": [f"10.0.0.{i + 10}"], "security_groups": ["g"],
            "port_security_enabled": True, **extra}
        for i, p in enumerate(ports)
    }  # fmt: skip
    return {"devices": devices, "security_groups": {"g": rules}, "sg_member_ips": {},
            "security_group_stateful": {"g": stateful}}  # fmt: skip


class ScriptedInstaller:
    """The installer's update/remove/close as a driver would answer them: a rule set is
    created whole or not at all, and ``refuse`` says which rules the driver refuses."""

    def __init__(self, refuse: Callable[[dict[str, Any]], bool]) -> None:
        self.refuse = refuse
        self.held: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[tuple[str, str, int]] = []
        self.closed = False

    def update(self, port: str, rules: Sequence[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(("update", port, len(rules)))
        for i, rule in enumerate(rules):
            if self.refuse(rule):
                return {"ok": False, "failed_rule": i, "error": "refused", "rolled_back": 0}
        old = self.held.get(port, [])
        self.held[port] = list(rules)
        key = json.dumps
        kept = sum(1 for r in rules if key(r) in {key(o) for o in old})
        return {"ok": True, "created": len(rules) - kept, "kept": kept,
                "destroyed": len(old) - kept}  # fmt: skip

    def remove(self, port: str) -> dict[str, Any]:
        self.calls.append(("remove", port, len(self.held.get(port, []))))
        return {"ok": True, "destroyed": len(self.held.pop(port, []))}

    def close(self) -> dict[str, Any]:
        self.closed = True
        return {"ok": True}


def _dataplane(
    refuse: Callable[[dict[str, Any]], bool] = lambda r: False, **settings: Any
) -> tuple[RteFlowDataplane, dict[str, ScriptedInstaller]]:
    made: dict[str, ScriptedInstaller] = {}

    def factory(port_id: str, index: int, s: RteFlowSettings) -> ScriptedInstaller:
        made[port_id] = ScriptedInstaller(refuse)
        return made[port_id]

    ports = {"a": "net_tap0,iface=sgfa", "b": "net_tap1,iface=sgfb"}
    dp = RteFlowDataplane(RteFlowSettings(ports=ports, **settings), installer=factory)
    return dp, made


def _has_item(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda rule: any(i["type"] == kind for i in rule["pattern"])


def test_ports_are_closed_until_described_then_installed_updated_and_removed() -> None:
    async def scenario() -> None:
        dp, inst = _dataplane()
        seen: list[frozenset[str]] = []
        await dp.start(seen.append)
        assert seen == [frozenset({"a", "b"})]
        assert inst["a"].held["a"] == CLOSED_RULES and inst["b"].held["b"] == CLOSED_RULES
        assert dp.status()["ports"]["a"]["state"] == "closed"
        counts = await dp.apply(_info("a"), full=True)
        assert counts["ports"] == 2
        want = sgflows.compile_rte_flow_port(_info("a"), "a").document()["rules"]
        assert inst["a"].held["a"] == want
        status = dp.status()["ports"]
        assert status["a"]["state"] == "partial" and status["a"]["rules"] == len(want)
        # b is not described: it stays closed and says why.
        assert inst["b"].held["b"] == CLOSED_RULES
        assert status["b"] == {
            **status["b"],
            "state": "closed",
            "reason": "no security-group information from the controller",
        }
        # Unchanged rendering: nothing sent; a changed one: one update to the new set.
        calls = len(inst["a"].calls)
        await dp.apply(_info("a", "b"), full=False)
        assert len(inst["a"].calls) == calls and dp.stats["unchanged"] == 1
        changed = _info("a", "b")
        changed["security_groups"]["g"][0]["port_range_max"] = 23
        await dp.apply(changed, full=False)
        assert inst["a"].calls[-1] == ("update", "a", len(inst["a"].held["a"]))
        assert (
            inst["a"].held["a"] == sgflows.compile_rte_flow_port(changed, "a").document()["rules"]
        )
        # The controller forgets a: closed again, not removed.
        await dp.apply(_info("b"), full=False)
        assert inst["a"].held["a"] == CLOSED_RULES
        assert (await dp.remove_port("a"))["ok"] and inst["a"].closed
        assert "a" not in dp.local_ports() and inst["a"].held == {}
        await dp.stop()
        assert inst["b"].closed and inst["b"].held == {}

    asyncio.run(scenario())


def test_a_refused_rule_set_closes_the_port_and_degrades() -> None:
    async def scenario() -> None:
        dp, inst = _dataplane(_has_item("ipv4"))
        degraded: list[str | None] = []
        await dp.start(None, degraded.append)
        with pytest.raises(DataplaneError, match=r"a: rule .*: refused"):
            await dp.apply(_info("a", "b"), full=True)
        assert inst["a"].held["a"] == CLOSED_RULES
        assert dp.status()["ports"]["a"]["state"] == "refused"
        assert degraded and degraded[-1] and "refused" in degraded[-1]
        await dp.stop()

    asyncio.run(scenario())


def test_a_port_that_is_not_offloadable_is_closed() -> None:
    async def scenario() -> None:
        # A stateful port needs software, and there is no software queue.
        dp, inst = _dataplane(software_queue=None)
        await dp.start()
        await dp.apply(_info("a", stateful=True), full=True)
        status = dp.status()["ports"]["a"]
        assert status["state"] == "not offloadable" and "no software queue" in status["reason"]
        assert inst["a"].held["a"] == CLOSED_RULES
        await dp.stop()

    asyncio.run(scenario())


def test_a_driver_refusing_even_the_closed_rules_is_reported_open() -> None:
    async def scenario() -> None:
        dp, inst = _dataplane(lambda rule: True)
        with pytest.raises(DataplaneError, match="not even the closed rules"):
            await dp.start()
        assert all(i.closed for i in inst.values())

    asyncio.run(scenario())


def test_the_probe_table_narrows_the_rendering(tmp_path: Path) -> None:
    table = tmp_path / "probe.json"
    caps = [rte_probe.Capability(s, s != "ipv4 prefix/exact/proto", claimed, "")
            for s, _, claimed in rte_probe.SHAPES]  # fmt: skip
    table.write_text(rte_probe.to_json(caps))

    async def scenario() -> None:
        dp, inst = _dataplane(probed=str(table))
        await dp.start()
        await dp.apply(_info("a"), full=True)
        narrowed = sgflows.compile_rte_flow_port(
            _info("a"), "a", refused=["ipv4 prefix/exact/proto"]
        ).document()["rules"]
        assert inst["a"].held["a"] == narrowed
        assert narrowed != sgflows.compile_rte_flow_port(_info("a"), "a").document()["rules"]
        await dp.stop()

    asyncio.run(scenario())
    table.write_text("{}")
    with pytest.raises(DataplaneError, match="not a probe result"):
        RteFlowDataplane(RteFlowSettings(ports={"a": "x"}, probed=str(table)))


def test_the_rte_flow_section_is_read(tmp_path: Path) -> None:
    conf = tmp_path / "agent.conf"
    conf.write_text(
        "[agent]\ncontroller = unix:/run/x.sock\ndataplane = rte_flow\n"
        "[rte_flow]\nport = a=net_tap0,iface=tap-a\nport = b=net_null0\nsoftware_queue = -1\n"
    )
    cfg = config.load_agent_config([str(conf)])
    assert cfg.dataplane == "rte_flow"
    assert cfg.rte_flow.ports == {"a": "net_tap0,iface=tap-a", "b": "net_null0"}
    assert cfg.rte_flow.software_queue is None and cfg.rte_flow.profile == "net_tap"
    conf.write_text("[agent]\ncontroller = unix:/run/x.sock\n[rte_flow]\nport = nodevice\n")
    with pytest.raises(config.ConfigError, match="not PORT_ID=VDEV"):
        config.load_agent_config([str(conf)])


def test_on_net_null_the_real_installer_refuses_to_start_open(installer_binary: str) -> None:
    """net_null creates no rule: not even the closed set, so the dataplane refuses to start
    (the agent then does not start) instead of serving an open port."""
    settings = RteFlowSettings(ports={"a": f"net_null{os.getpid() % 100}"},
                               binary=installer_binary)  # fmt: skip

    async def scenario() -> None:
        dp = RteFlowDataplane(settings)
        refusal = r"a: not even the closed rules: rule 0: .*Function not implemented"
        with pytest.raises(DataplaneError, match=refusal):
            await dp.start()
        assert dp.local_ports() == frozenset()

    asyncio.run(scenario())
    missing = RteFlowDataplane(RteFlowSettings(ports={"a": "net_null0"}, binary="/nonexistent"))
    with pytest.raises(DataplaneError, match="a \\(net_null0\\)"):
        asyncio.run(missing.start())
