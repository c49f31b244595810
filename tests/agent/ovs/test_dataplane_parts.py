"""The Open vSwitch dataplane's pure parts: diff-flows parsing and the full-sync bundle,
Neutron's flows, the model join (fail closed) and the shared session in standalone mode."""

from __future__ import annotations

from typing import Any

import pytest
from sgflows.agent import config
from sgflows.agent.dataplane.ovsdb import LocalPort, snapshot_of
from sgflows.agent.dataplane.session import STANDALONE_OPTIONS, build_model, update_of
from sgflows.agent.dataplane.switch import neutron_agent_flows
from sgflows.switch.bundles import diff_bundle, parse_diff_flows
from sgflows.switch.flowstate import FlowState, FullSync, Places

DIFF = """\
-table=5 priority=100 cookie=0x7 actions=drop
-table=60 priority=100,in_port=1 cookie=0x5 actions=set_field:0x1->reg5,goto_table:71
+table=60 priority=100,in_port=1 cookie=0x5 actions=set_field:0x2->reg5,goto_table:71
-table=71 priority=100,ip,nw_src=10.0.0.1 cookie=0x5 actions=drop
+priority=0 cookie=0x5 actions=resubmit(,60)
"""


def test_full_sync_adds_what_differs_and_deletes_only_our_extra_flows() -> None:
    switch_only, file_only = parse_diff_flows(DIFF)
    assert [f.table for f in switch_only] == [5, 60, 71]
    assert [(f.table, f.match) for f in file_only] == [
        (60, "priority=100,in_port=1"),
        (0, "priority=0"),
    ]
    bundle = diff_bundle(DIFF, 0x5).splitlines()
    assert bundle == [
        "flow add table=60,priority=100,in_port=1,cookie=0x5"
        " actions=set_field:0x2->reg5,goto_table:71",
        "flow add table=0,priority=0,cookie=0x5 actions=resubmit(,60)",
        # the changed flow is replaced by its add, never deleted; cookie 0x7 is not ours
        "flow delete_strict table=71,priority=100,ip,nw_src=10.0.0.1,cookie=0x5/-1",
    ]
    assert diff_bundle("", 0x5) == ""


def test_neutron_agent_flows_are_recognised() -> None:
    dump = (
        " cookie=0x1, table=0, priority=0 actions=resubmit(,60)\n"
        " cookie=0x9, table=0, priority=0 actions=resubmit(,58)\n"
        " cookie=0x9, table=23, priority=0 actions=drop\n"
    )
    assert len(neutron_agent_flows(dump)) == 2
    assert neutron_agent_flows(dump.splitlines()[0]) == []


RULES = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
          "port_range_max": 22, "stateful": True}]  # fmt: skip


def info(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"devices": {p["id"]: p for p in ports}, "security_groups": {"g": RULES},
            "sg_member_ips": {}}  # fmt: skip


def port(port_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": port_id, "device": port_id, "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": ["10.0.0.1"], "security_groups": ["g"], "local_vlan": 3,
            **extra}  # fmt: skip


def local(port_id: str, ofport: int | None) -> LocalPort:
    return LocalPort(port_id, f"tap-{port_id}", "fa:16:3e:00:00:01", ofport, None)


def test_unknown_ports_are_closed_and_unready_ports_left_out() -> None:
    built = build_model(
        info(port("a"), port("nv", local_vlan=None)),
        {"a": local("a", 3), "b": local("b", 4), "nv": local("nv", 6), "w": local("w", None)},
        4094,
    )
    assert set(built.model["devices"]) == {"a", "b", "nv"}
    assert set(built.closed) == {"b", "nv"}
    assert built.vlans == {"a": 3, "b": 4094, "nv": 4094}
    closed = built.model["devices"]["b"]
    assert closed["security_groups"] == [] and closed["fixed_ips"] == []


class FakeSwitch:
    """The dataplane's ``Switch`` as the session sees it: what it was sent, in order."""

    def __init__(self, dump: str = "") -> None:
        self.dump = dump
        self.sent: list[tuple[str, str]] = []

    def bundle(self, text: str) -> None:
        self.sent.append(("bundle", text))

    def add_flows(self, text: str) -> None:
        self.sent.append(("add-flows", text))

    def dump_flows(self) -> str:
        return self.dump

    def diff_flows(self, flows: str) -> str:
        self.sent.append(("diff-flows", flows))
        return DIFF


def standalone() -> FlowState:
    return FlowState(
        STANDALONE_OPTIONS, Places(frozenset()), full_sync=FullSync.DIFF, cold_min_ports=1
    )


def test_standalone_session_cold_loads_then_diffs_ports_rules_and_members() -> None:
    state, switch = standalone(), FakeSwitch()
    from_members = {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "g"}
    groups = {"security_groups": {"g": [*RULES, from_members]}}
    first = build_model({**info(port("a")), **groups}, {"a": local("a", 3)}, 4094).model
    change = state.update(update_of(first), 0x77, switch)
    # An empty bridge: a cold load, the entry flow (table 0) in the last part alone.
    assert change.full and change.cold and not change.bundle
    state.install(change, switch)
    assert [kind for kind, _ in switch.sent] == ["add-flows"] * len(switch.sent)
    *parts, entry = [text for _, text in switch.sent]
    assert parts and all("table=0," not in text for text in parts)
    assert entry.strip().startswith("cookie=0x77,table=0,")
    assert sum(text.count("\n") for _, text in switch.sent) == change.flow_count
    # A port and then a member change: O(change) bundles, the session never rebuilt.
    switch.sent.clear()
    plugged = {"a": local("a", 3), "b": local("b", 4)}
    second = build_model({**info(port("a")), **groups}, plugged, 4094).model
    change = state.update(update_of(second), 0x77, switch)
    assert not change.full and change.added > 0 and switch.sent == []
    state.install(change, switch)
    switch.sent.clear()
    third = dict(second, sg_member_ips={"g": {"IPv4": [["10.0.0.9", None]], "IPv6": []}})
    change = state.update(update_of(third), 0x77, switch)
    assert not change.full and change.added > 0 and change.bundle.startswith("flow add ")
    state.install(change, switch)
    assert [kind for kind, _ in switch.sent] == ["bundle"]
    # Doubt (forget): a full sync by diff-flows against what the bridge holds now.
    state.forget()
    switch.dump = " cookie=0x77, table=71, priority=100,ip actions=drop\n"
    change = state.update(update_of(third), 0x77, switch)
    assert change.full and not change.cold and change.bundle == diff_bundle(DIFF, 0x77)
    assert switch.sent[-1][0] == "diff-flows" and "cookie=0x77," in switch.sent[-1][1]


def test_standalone_statefulness_comes_from_the_flag_or_the_rules() -> None:
    model = build_model(info(port("a")), {"a": local("a", 3)}, 4094).model
    assert update_of(model).groups["g"].stateful
    stateless = [dict(r, stateful=False) for r in RULES]
    model = dict(model, security_groups={"g": stateless})
    assert not update_of(model).groups["g"].stateful
    model = dict(model, security_group_stateful={"g": True})
    assert update_of(model).groups["g"].stateful
    with pytest.raises(TypeError, match="diff_flows"):
        standalone().update(update_of(model), 1, _NoDiff())


class _NoDiff:
    def bundle(self, text: str) -> None:
        raise AssertionError("nothing is sent before the diff")

    def add_flows(self, text: str) -> None:
        raise AssertionError("nothing is sent before the diff")

    def dump_flows(self) -> str:
        return " cookie=0x1, table=71, priority=1 actions=drop\n"


def test_ovs_options_are_read(tmp_path: Any) -> None:
    ini = tmp_path / "agent.ini"
    ini.write_text("[agent]\ncontroller = unix:/x\ndataplane = ovs\n[ovs]\nbridge = br-x\n"
                   "uplinks = eth1, patch-tun\ncookie = 0x10\n")  # fmt: skip
    cfg = config.load_agent_config([str(ini)])
    assert (cfg.dataplane, cfg.ovs.bridge, cfg.ovs.uplinks, cfg.ovs.cookie) == (
        "ovs", "br-x", ["eth1", "patch-tun"], 0x10,
    )  # fmt: skip
    ini.write_text("[agent]\ncontroller = unix:/x\n[ovs]\ncookie = nope\n")
    with pytest.raises(config.ConfigError, match="cookie"):
        config.load_agent_config([str(ini)])
    ini.write_text("[agent]\ncontroller = unix:/x\n[ovs]\nbrdige = br-x\n")
    with pytest.raises(config.ConfigError, match="brdige"):
        config.load_agent_config([str(ini)])


class Row:
    def __init__(self, **columns: Any) -> None:
        self.__dict__.update(columns)


class Table:
    def __init__(self, *rows: Row) -> None:
        self.rows = {i: r for i, r in enumerate(rows)}


def test_snapshot_reads_vm_ports_and_skips_uplinks_and_unready() -> None:
    def iface(name: str, ofport: Any, **ids: str) -> Row:
        return Row(name=name, ofport=ofport, external_ids=ids)

    vm = {"iface-id": "a", "attached-mac": "FA:16:3E:00:00:01"}
    ports = [
        Row(name="tap-a", tag=[3], interfaces=[iface("tap-a", [7], **vm)]),
        Row(name="tap-b", tag=[], interfaces=[iface("tap-b", [-1], **{**vm, "iface-id": "b"})]),
        Row(name="eth1", tag=[], interfaces=[iface("eth1", [1], **{**vm, "iface-id": "u"})]),
        Row(name="patch", tag=[], interfaces=[iface("patch", [2])]),
    ]
    tables = {"Bridge": Table(Row(name="br", ports=ports, fail_mode=["secure"]))}
    snap = snapshot_of(tables, "br", 1, frozenset({"eth1"}))
    assert snap.exists and snap.fail_mode == "secure"
    assert snap.ports == {
        "a": LocalPort("a", "tap-a", "fa:16:3e:00:00:01", 7, 3),
        "b": LocalPort("b", "tap-b", "fa:16:3e:00:00:01", None, None),
    }
    assert snap.port_names == {"tap-a", "tap-b", "eth1", "patch"}
    assert not snapshot_of(tables, "other", 1).exists
