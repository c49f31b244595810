"""The driver's Neutron-free parts: the model it builds, its bundles, conntrack parsing."""

from __future__ import annotations

import sgflows
from sgflows.neutron.model import DriverModel, PortFacts, ports_concerned
from sgflows.switch.conntrack import marked_entries
from sgflows.switch.flowstate import FlowState, full_bundle, stale_deletes

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


def test_first_install_is_one_bundle_of_adds_then_deletes() -> None:
    result = sgflows.compile(_model().to_model({"p2"}, {"bad"}), cookie=0x2, **OPTIONS)
    text = full_bundle(result, " cookie=0x1, table=82, priority=70,ip actions=drop\n")
    lines = text.splitlines()
    assert all(line.startswith("flow add cookie=0x2,") for line in lines[:-1])
    assert lines[-1] == "flow delete_strict cookie=0x1/-1,table=82,priority=70,ip"


class _NoOfctl:
    def bundle(self, text: str) -> None:
        raise AssertionError("not used")

    def dump_flows(self) -> str:
        return ""


def test_flow_state_diffs_under_one_cookie_and_reinstalls_under_another() -> None:
    state = FlowState(OPTIONS)
    m = _model().to_model({"p2"}, {"bad"})
    first = state.replace(state.compile(m, 0x2), _NoOfctl())
    assert first.full
    state.committed(first)
    same = state.replace(state.compile(m, 0x2), _NoOfctl())
    assert not same.full and same.bundle == ""
    moved = state.replace(state.compile(m, 0x3), _NoOfctl())
    assert moved.full
    state.forget()
    assert state.replace(state.compile(m, 0x2), _NoOfctl()).full


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
