"""The driver's Neutron-free parts: the model it builds, its bundles, conntrack parsing."""

from __future__ import annotations

import pytest
import sgflows
from sgflows.neutron.model import DriverModel, PortFacts, find_closed, ports_concerned
from sgflows.switch.bundles import Places, place_deletes, stale_deletes
from sgflows.switch.coldload import ColdLoadError
from sgflows.switch.conntrack import marked_entries
from sgflows.switch.flowstate import FlowState, Update

OPTIONS = {"entry_flow": False, "foreign_ports": True, "widen_unmatchable_port_ranges": True}


def _model() -> DriverModel:
    m = DriverModel()
    for n, groups in ((1, ["web"]), (2, ["web", "bad"])):
        device = f"p{n}"
        m.ports[device] = {
            "device": device, "fixed_ips": [f"10.0.0.{n}"], "security_groups": groups,
            "mac_address": "ignored: OVSDB wins", "of_port": object(),
        }  # fmt: skip
        m.facts[device] = PortFacts(ofport=n, mac=f"fa:16:3e:00:00:0{n}", local_vlan=3)
    m.rules["web"] = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                       "port_range_min": 22, "port_range_max": 22, "stateful": True}]  # fmt: skip
    m.rules["bad"] = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                       "port_range_min": 90, "port_range_max": 80}]  # fmt: skip
    return m


def test_model_error_closes_only_the_ports_it_concerns() -> None:
    m = _model()
    try:
        sgflows.compile(m.to_model(), **OPTIONS)
    except sgflows.ModelError as e:
        concerned = ports_concerned(m, e.errors)
    else:
        raise AssertionError("the bad range compiled")
    assert concerned == ({"p2"}, {"bad"})
    model = m.to_model(*concerned)
    result = sgflows.compile(model, **OPTIONS)
    assert model["devices"]["p2"]["security_groups"] == []
    assert model["devices"]["p1"]["mac_address"] == "fa:16:3e:00:00:01"
    # p2 keeps its table-60 flow: closed, not left to the agent's NORMAL.
    assert any("in_port=2 " in line for line in result.to_ofctl().splitlines())
    verdict = sgflows.evaluate(model, "tcp,tp_dst=22", port="p2", direction="ingress")
    assert verdict.verdict == "drop"


def test_garbage_collection_keeps_remote_groups() -> None:
    m = _model()
    m.rules["web"].append({"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "db"})
    m.members["db"] = {"IPv4": [("10.1.0.1", None)]}
    m.members["gone"] = {"IPv4": []}
    m.collect_garbage()
    assert set(m.members) == {"db"}


def test_stale_deletes_spare_the_agents_flows_and_ours() -> None:
    dump = "\n".join([
        "NXST_FLOW reply (xid=0x4):",
        " cookie=0x1, table=0, priority=0 actions=resubmit(,58)",
        " cookie=0x1, table=60, priority=1 actions=NORMAL",
        " cookie=0x1, table=60, priority=101,udp,tp_src=68 actions=resubmit(,77)",
        " cookie=0x1, table=60, priority=100,in_port=5 actions=resubmit(,71)",
        " cookie=0x2, table=71, priority=65,ip,in_port=5 actions=drop",
        " cookie=0x2, table=72, priority=70 actions=drop",
    ])  # fmt: skip
    assert stale_deletes(dump, cookie=0x2) == [
        "flow delete_strict cookie=0x1/-1,table=60,priority=100,in_port=5"
    ]


class _Bridge:
    """A stand-in for ``ovs-ofctl`` on a bridge (no switch in this suite): it records bundles
    and dumps a fixed text."""

    def __init__(self, dump: str = "") -> None:
        self.dump = dump
        self.bundles: list[str] = []
        self.added: list[str] = []

    def bundle(self, text: str) -> None:
        self.bundles.append(text)

    def add_flows(self, text: str) -> None:
        self.added.append(text)

    def dump_flows(self) -> str:
        return self.dump


def _driver_model() -> DriverModel:
    """_model() built through the driver's own calls, without the bad group."""
    m = DriverModel()
    m.set_rules("web", _model().rules["web"])
    for n in (1, 2):
        port = {"device": f"p{n}", "fixed_ips": [f"10.0.0.{n}"], "security_groups": ["web"]}
        m.set_port(f"p{n}", port, PortFacts(ofport=n, mac=f"fa:16:3e:00:00:0{n}", local_vlan=3))
    return m


def _session_flows(state: FlowState) -> list[tuple[int, int, str, str]]:
    return sorted(state.compiler.flows())


def _compiled_flows(m: DriverModel) -> list[tuple[int, int, str, str]]:
    return sorted(sgflows.compile(m.to_model(), **OPTIONS).flows)


def test_first_install_deletes_our_places_then_adds_everything() -> None:
    dump = "\n".join([
        " cookie=0x1, table=60, priority=1 actions=NORMAL",
        " cookie=0x1, table=82, priority=70,ip actions=drop",
        " cookie=0x2, table=76, priority=10,ip actions=drop",
    ])  # fmt: skip
    state = FlowState(OPTIONS)
    change = state.update(_driver_model().full_update(), 0x2, _Bridge(dump))
    assert change.full
    lines = change.bundle.splitlines()
    # Whatever the cookie, flows in our places go; the agent's NORMAL stays.
    assert lines[:2] == [
        "flow delete_strict cookie=0x1/-1,table=82,priority=70,ip",
        "flow delete_strict cookie=0x2/-1,table=76,priority=10,ip",
    ]
    assert all(line.startswith("flow add cookie=0x2,") for line in lines[2:])
    assert len(lines) - 2 == change.flow_count == len(_compiled_flows(_driver_model()))


def test_first_install_onto_empty_firewall_tables_is_a_cold_load_entry_last() -> None:
    # The agent's own flows (tables 0 and 60) are there; the firewall's tables are empty.
    dump = "\n".join([
        " cookie=0x1, priority=0 actions=resubmit(,58)",
        " cookie=0x1, table=60, priority=1 actions=NORMAL",
    ])  # fmt: skip
    state, bridge = FlowState(OPTIONS, cold_connections=3, cold_min_ports=2), _Bridge(dump)
    change = state.update(_driver_model().full_update(), 0x2, bridge)
    assert change.full and change.cold and change.bundle == ""
    assert not state.known  # nothing is known to be there until it went through
    state.install(change, bridge)
    assert state.known and bridge.bundles == []
    *parts, entry = bridge.added
    assert len(parts) == 3 and all("table=60," not in part for part in parts)
    assert {line.split(",")[1] for line in entry.splitlines()} == {"table=60"}
    assert sum(len(text.splitlines()) for text in bridge.added) == change.flow_count
    # With flows of another driver in a firewall table: one replacing bundle instead.
    stale = dump + "\n cookie=0x9, table=71, priority=65,ip actions=drop"
    state = FlowState(OPTIONS, cold_min_ports=2)
    change = state.update(_driver_model().full_update(), 0x2, _Bridge(stale))
    assert not change.cold and "delete_strict cookie=0x9/-1,table=71" in change.bundle


def test_a_refused_cold_load_part_sends_no_entry_and_stays_unknown() -> None:
    class Refusing(_Bridge):
        def add_flows(self, text: str) -> None:
            if "table=60," not in text and not self.added:
                self.added.append("refused")
                raise RuntimeError("OFPBFC_MSG_FAILED")
            super().add_flows(text)

    state, bridge = FlowState(OPTIONS, cold_connections=2, cold_min_ports=2), Refusing()
    change = state.update(_driver_model().full_update(), 0x2, bridge)
    with pytest.raises(ColdLoadError, match="refused 1 of 2 parts"):
        state.install(change, bridge)
    assert not any("table=60," in text for text in bridge.added)
    assert not state.known and state.update(Update(), 0x2, bridge).full


def test_places_are_a_parameter() -> None:
    dump = " cookie=0x1, table=0, priority=0 actions=resubmit(,58)\n"
    assert place_deletes(dump) == []
    assert place_deletes(dump, Places(frozenset({0}))) == [
        "flow delete_strict cookie=0x1/-1,table=0,priority=0"
    ]


def test_flow_state_sends_diffs_after_the_first_install() -> None:
    state, bridge, m = FlowState(OPTIONS), _Bridge(), _driver_model()
    state.committed(state.update(m.take_update(), 0x2, bridge))
    assert state.update(m.take_update(), 0x2, bridge).bundle == ""
    m.set_members("web", {"IPv4": [("10.0.0.1", None), ("10.0.0.7", "fa:16:3e:00:00:07")]})
    m.set_rules("web", [*m.rules["web"], {"direction": "ingress", "ethertype": "IPv4",
                                          "remote_group_id": "web", "stateful": True}])  # fmt: skip
    change = state.update(m.take_update(), 0x2, bridge)
    assert not change.full and change.added and "flow add cookie=0x2," in change.bundle
    assert _session_flows(state) == _compiled_flows(m)
    state.committed(change)
    # A member moves: only its flows change.
    m.set_members("web", {"IPv4": [("10.0.0.1", None), ("10.0.0.8", None)]})
    change = state.update(m.take_update(), 0x2, bridge)
    assert "10.0.0.8" in change.bundle and "10.0.0.7" in change.bundle
    assert change.added + change.modified + change.removed < change.flow_count
    assert _session_flows(state) == _compiled_flows(m)
    state.committed(change)
    m.remove_port("p2")
    m.collect_garbage()
    change = state.update(m.take_update(), 0x2, bridge)
    assert change.removed and "in_port=2" in change.bundle
    assert _session_flows(state) == _compiled_flows(m)


def test_flow_state_is_full_after_a_new_cookie_a_restart_or_a_failed_bundle() -> None:
    state, bridge, m = FlowState(OPTIONS), _Bridge(), _driver_model()
    state.committed(state.update(m.take_update(), 0x2, bridge))
    assert state.update(Update(), 0x3, bridge).full  # a new agent's cookie
    # That bundle was never committed (the switch refused it): the next one is full too.
    assert state.update(Update(), 0x3, bridge).full
    state.committed(state.update(Update(), 0x3, bridge))
    assert not state.update(Update(), 0x3, bridge).full
    state.committed(state.update(Update(), 0x3, bridge))
    state.forget()
    assert state.update(Update(), 0x3, bridge).full


def test_a_refused_update_changes_nothing() -> None:
    state, bridge, m = FlowState(OPTIONS), _Bridge(), _driver_model()
    state.committed(state.update(m.take_update(), 0x2, bridge))
    before = _session_flows(state)
    m.set_rules("bad", _model().rules["bad"])
    port = {"device": "p2", "fixed_ips": ["10.0.0.2"], "security_groups": ["web", "bad"]}
    m.set_port("p2", port, PortFacts(ofport=2, mac="fa:16:3e:00:00:02", local_vlan=3))
    with pytest.raises(sgflows.ModelError):
        state.update(m.take_update(), 0x2, bridge)
    assert _session_flows(state) == before
    # The driver's way out: close what the error concerns, give the whole model.
    closed, dropped = find_closed(m, OPTIONS)
    assert (closed, dropped) == ({"p2"}, {"bad"})
    change = state.update(m.full_update(closed, dropped), 0x2, bridge)
    assert not change.full and change.bundle
    assert _session_flows(state) == sorted(
        sgflows.compile(m.to_model(closed, dropped), **OPTIONS).flows
    )


def test_member_sets_follow_how_rules_name_them() -> None:
    m = _driver_model()
    m.set_rules("web", [{"direction": "ingress", "ethertype": "IPv4",
                         "remote_address_group_id": "office"}])  # fmt: skip
    m.set_members("office", {"IPv4": [("192.0.2.0/24", None)]})
    update = m.take_update()
    assert update.address_groups["office"] == {"IPv4": [["192.0.2.0/24", None]]}
    assert update.members["office"] is None
    state = FlowState(OPTIONS)
    state.update(update, 0x2, _Bridge())
    assert _session_flows(state) == _compiled_flows(m)
    # The same id named as a remote group instead: the set moves to the other id space.
    m.set_rules("web", [{"direction": "ingress", "ethertype": "IPv4",
                         "remote_group_id": "office"}])  # fmt: skip
    update = m.take_update()
    assert update.members["office"] and update.address_groups["office"] is None
    state.update(update, 0x2, _Bridge())
    assert _session_flows(state) == _compiled_flows(m)


def test_unknown_rule_keys_and_widened_ranges_warn(caplog: pytest.LogCaptureFixture) -> None:
    m = _driver_model()
    m.set_rules("web", [{"direction": "ingress", "ethertype": "IPv4", "protocol": "dccp",
                         "port_range_min": 5, "port_range_max": 6, "remote_ip_prefx": "1.2.3.4",
                         "security_group_id": "web"}])  # fmt: skip
    with caplog.at_level("WARNING"):
        state = FlowState(OPTIONS)
        state.update(m.take_update(), 0x2, _Bridge())
    assert "unknown keys ignored: remote_ip_prefx" in caplog.text
    assert "cannot match dccp ports" in caplog.text
    assert _session_flows(state) == _compiled_flows(m)


def test_marked_conntrack_entries() -> None:
    dump = (
        "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=5000,dport=22),reply=(src=10.0.0.2,"
        "dst=10.0.0.1,sport=22,dport=5000),zone=3,mark=1,protoinfo=(state=ESTABLISHED)\n"
        "udp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=1,dport=2),reply=(src=10.0.0.2,"
        "dst=10.0.0.1,sport=2,dport=1),zone=3\n"
        "icmpv6,orig=(src=fd00::1,dst=fd00::2,id=7,type=128,code=0),reply=(src=fd00::2,"
        "dst=fd00::1,id=7,type=129,code=0),zone=3,mark=1\n"
    )
    assert marked_entries(dump) == [
        "ct_nw_src=10.0.0.1,ct_nw_dst=10.0.0.2,ct_nw_proto=6,ct_tp_src=5000,ct_tp_dst=22",
        "ct_ipv6_src=fd00::1,ct_ipv6_dst=fd00::2,ct_nw_proto=58,icmp_id=7,icmp_type=128,"
        "icmp_code=0",
    ]


def test_groups_without_rules_are_not_named_by_ports() -> None:
    # A stateless port also in a group without rules: the agent cannot tell that group's
    # statefulness, so it must not make the port look mixed (refused, hence closed).
    m = _driver_model()
    stateless = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                  "port_range_min": 8080, "port_range_max": 8080, "stateful": False}]  # fmt: skip
    m.set_rules("web", stateless)
    m.set_rules("empty", [])
    port = {"device": "p1", "fixed_ips": ["10.0.0.1"], "security_groups": ["web", "empty"]}
    m.set_port("p1", port, PortFacts(ofport=1, mac="fa:16:3e:00:00:01", local_vlan=3))
    state = FlowState(OPTIONS)
    state.update(m.take_update(), 0x2, _Bridge())
    assert find_closed(m, OPTIONS) == (set(), set())
    assert _session_flows(state) == _compiled_flows(m)
    # Rules arrive for the empty group: the port names it from now on.
    m.set_rules("empty", [dict(stateless[0], port_range_min=22, port_range_max=22)])
    update = m.take_update()
    assert update.ports["p1"] is not None and "empty" in update.ports["p1"]["security_groups"]
    state.update(update, 0x2, _Bridge())
    assert _session_flows(state) == _compiled_flows(m)


def test_full_sync_spares_the_agents_dhcp_tables() -> None:
    dump = " cookie=0x1, table=77, priority=100,udp actions=LOCAL\n"  # dhcp extension
    assert place_deletes(dump) == []
