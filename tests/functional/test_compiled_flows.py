"""Compiled flows on a real userspace Open vSwitch: they load atomically, the switch holds
exactly as many as were emitted, and `ofproto/trace` gives the verdicts the model says."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import sgflows
from support import run
from support.ovs import Bridge

ROOT = Path(__file__).resolve().parents[2]
RPC_PAYLOAD = ROOT / "tests" / "data" / "neutron-rpc-payload.json"
EXAMPLES = [*sorted((ROOT / "examples").glob("*.json")), RPC_PAYLOAD]
UPLINK = 100

MAC = {
    "web-1": "fa:16:3e:00:00:11",
    "web-2": "fa:16:3e:00:00:12",
    "db-1": "fa:16:3e:00:00:21",
    "dhcp-a": "fa:16:3e:00:00:02",
    "edge-1": "fa:16:3e:00:01:31",
    "nfv-1": "fa:16:3e:00:01:41",
}
OFPORT = {"web-1": 11, "web-2": 12, "db-1": 21, "dhcp-a": 2, "edge-1": 31, "nfv-1": 41}


def load(bridge: Bridge, model: Any) -> sgflows.CompileResult:
    result = sgflows.compile(model)
    bridge.add_flows(result.to_ofctl())
    return result


def add_ports(bridge: Bridge, ofports: list[int]) -> None:
    for n in ofports:
        bridge.add_port(f"{bridge.name[:8]}p{n}", n, internal=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_switch_holds_every_flow(bridge: Bridge, path: Path) -> None:
    result = load(bridge, path.read_bytes())
    assert bridge.flow_count() == result.flow_count
    # The cookie lets the owner delete exactly its flows.
    bridge.ofctl("del-flows", bridge.name, f"cookie={result.cookie:#x}/-1")
    assert bridge.flow_count() == 0


def egress(port: str, what: str, **fields: str) -> str:
    base = f"in_port={OFPORT[port]},{what},dl_src={MAC[port]}"
    return ",".join([base, *(f"{k}={v}" for k, v in fields.items())])


@pytest.fixture
def two_tier(bridge: Bridge) -> Bridge:
    load(bridge, (ROOT / "examples" / "two-tier.json").read_bytes())
    add_ports(bridge, [*OFPORT.values(), UPLINK])
    return bridge


NEW2 = ["trk,new", "trk,new"]


def test_remote_group_member_allowed_other_port_dropped(two_tier: Bridge) -> None:
    to_db = egress(
        "web-1", "tcp", dl_dst=MAC["db-1"], nw_src="10.0.0.11", nw_dst="10.0.0.21", tp_dst="5432"
    )
    assert two_tier.trace(to_db, NEW2).ports == (OFPORT["db-1"],)
    assert two_tier.trace(to_db.replace("tp_dst=5432", "tp_dst=5433"), NEW2).dropped
    # db-1 is not in group web: its own connection to db's port 5432 is refused by db-1's
    # ingress rule (remote group web), though db-1's egress allows it.
    from_edge = egress(
        "web-2", "tcp", dl_dst=MAC["db-1"], nw_src="10.0.0.100", nw_dst="10.0.0.21", tp_dst="5432"
    )
    assert two_tier.trace(from_edge, NEW2).ports == (OFPORT["db-1"],)  # a pair IP is a member


def test_spoofed_sources_dropped(two_tier: Bridge) -> None:
    good = egress("web-1", "udp", dl_dst=MAC["web-2"], nw_src="10.0.0.11", nw_dst="10.0.0.12")
    spoofed_ip = good.replace("nw_src=10.0.0.11", "nw_src=10.0.0.99")
    spoofed_mac = good.replace(f"dl_src={MAC['web-1']}", "dl_src=fa:16:3e:99:99:99")
    for flow in (spoofed_ip, spoofed_mac):
        assert two_tier.trace(flow, NEW2).dropped, flow
    arp_ok = egress(
        "web-1",
        "arp",
        arp_spa="10.0.0.11",
        arp_sha=MAC["web-1"],
        arp_tpa="10.0.0.12",
        dl_dst="ff:ff:ff:ff:ff:ff",
        arp_op="1",
    )
    assert not two_tier.trace(arp_ok).dropped
    assert two_tier.trace(arp_ok.replace("arp_spa=10.0.0.11", "arp_spa=10.0.0.12")).dropped


def test_stateful_reply_accepted_new_connection_dropped(two_tier: Bridge) -> None:
    reply = (
        f"in_port={UPLINK},dl_vlan=1,dl_dst={MAC['web-1']},udp,nw_src=8.8.8.8,"
        "nw_dst=10.0.0.11,udp_src=53,udp_dst=40000"
    )
    assert two_tier.trace(reply, ["trk,est,rpl"]).ports == (OFPORT["web-1"],)
    assert two_tier.trace(reply, ["trk,new"]).dropped
    assert two_tier.trace(reply, ["trk,inv"]).dropped
    http = reply.replace("udp_src=53,udp_dst=40000", "tcp_src=40000,tcp_dst=80").replace(
        "udp", "tcp"
    )
    assert two_tier.trace(http, ["trk,new"]).ports == (OFPORT["web-1"],)


def test_stateless_port_dhcp_and_rules(two_tier: Bridge) -> None:
    discover = egress(
        "edge-1",
        "udp",
        dl_dst="ff:ff:ff:ff:ff:ff",
        nw_src="0.0.0.0",
        nw_dst="255.255.255.255",
        udp_src="68",
        udp_dst="67",
    )
    assert not two_tier.trace(discover).dropped
    offer = (
        f"in_port={UPLINK},dl_vlan=2,dl_dst={MAC['edge-1']},udp,nw_src=10.1.0.2,"
        "nw_dst=10.1.0.31,udp_src=67,udp_dst=68"
    )
    assert two_tier.trace(offer).ports == (OFPORT["edge-1"],)
    inbound = offer.replace("udp_src=67,udp_dst=68", "udp_src=9,udp_dst=5050")
    assert two_tier.trace(inbound).ports == (OFPORT["edge-1"],)
    # No conntrack: a "reply" to an egress flow is just another ingress packet.
    tcp_in = inbound.replace("udp_src=9,udp_dst=5050", "tcp_src=80,tcp_dst=4000").replace(
        "udp", "tcp"
    )
    assert two_tier.trace(tcp_in).dropped


def test_dhcp_server_and_router_advertisement_from_vm_dropped(two_tier: Bridge) -> None:
    offer = egress(
        "web-1",
        "udp",
        dl_dst="ff:ff:ff:ff:ff:ff",
        nw_src="10.0.0.11",
        nw_dst="255.255.255.255",
        udp_src="67",
        udp_dst="68",
    )
    assert two_tier.trace(offer, ["trk,new"]).dropped
    ra = egress(
        "web-1",
        "icmp6",
        dl_dst="33:33:00:00:00:01",
        ipv6_src="fe80::f816:3eff:fe00:11",
        ipv6_dst="ff02::1",
        icmpv6_type="134",
        icmpv6_code="0",
    )
    assert two_tier.trace(ra).dropped


def test_port_security_disabled_passes(two_tier: Bridge) -> None:
    anything = egress(
        "nfv-1", "tcp", dl_dst=MAC["edge-1"], nw_src="6.6.6.6", nw_dst="10.1.0.31", tp_dst="4444"
    )
    # Reaches edge-1's ingress pipeline, which has no rule for it: dropped there.
    assert two_tier.trace(anything).dropped
    to_uplink = anything.replace(f"dl_dst={MAC['edge-1']}", "dl_dst=fa:16:3e:77:77:77")
    assert not two_tier.trace(to_uplink).dropped


def stateless_model(with_metadata_rule: bool) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    if with_metadata_rule:
        rules = [
            {
                "direction": "egress",
                "ethertype": "IPv4",
                "protocol": "tcp",
                "port_range_min": 80,
                "port_range_max": 80,
                "remote_ip_prefix": "169.254.169.254/32",
            },
        ]
    return {
        "security_groups": {"sl": {"stateful": False, "rules": rules}},
        "ports": [
            {
                "id": "vm",
                "mac_address": "fa:16:3e:00:00:05",
                "fixed_ips": ["10.0.0.5"],
                "security_groups": ["sl"],
                "network_id": "n",
                "ofport": 5,
                "local_vlan": 9,
            }
        ],
    }


@pytest.mark.parametrize("with_rule", [False, True])
def test_metadata_needs_an_explicit_rule(bridge: Bridge, with_rule: bool) -> None:
    load(bridge, stateless_model(with_rule))
    add_ports(bridge, [5, UPLINK])
    flow = (
        "in_port=5,tcp,dl_src=fa:16:3e:00:00:05,dl_dst=fa:16:3e:00:00:01,nw_src=10.0.0.5,"
        "nw_dst=169.254.169.254,tp_dst=80"
    )
    assert bridge.trace(flow).dropped is (not with_rule)


def test_cookie_owned_flows_replace_cleanly(bridge: Bridge) -> None:
    first = sgflows.compile(stateless_model(False), cookie=0x11)
    bridge.add_flows(first.to_ofctl())
    second = sgflows.compile(copy.deepcopy(stateless_model(True)), cookie=0x11)
    bridge.replace_flows(second.to_ofctl())
    assert bridge.flow_count() == second.flow_count
    dumped = "\n".join(bridge.dump_flows())
    assert "169.254.169.254" in dumped


def test_rpc_payload_traces(bridge: Bridge) -> None:
    payload = json.loads((ROOT / "tests/data/neutron-rpc-payload.json").read_text())
    load(bridge, payload)
    add_ports(bridge, [5, 6, UPLINK])
    ssh = (
        "in_port=100,dl_vlan=3,dl_dst=fa:16:3e:4a:1b:01,tcp,nw_src=203.0.113.9,"
        "nw_dst=192.168.10.5,tp_dst=22"
    )
    assert bridge.trace(ssh, ["trk,new"]).ports == (5,)
    assert bridge.trace(ssh.replace("203.0.113.9", "198.51.100.9"), ["trk,new"]).dropped
    # Address group 10.20.0.0/16 on ports 8000-8100 (port 6 only).
    web = ssh.replace("fa:16:3e:4a:1b:01", "fa:16:3e:4a:1b:02").replace(
        "192.168.10.5", "192.168.10.6"
    )
    web = web.replace("203.0.113.9", "10.20.3.4")
    for port, expected in [("7999", True), ("8000", False), ("8100", False), ("8101", True)]:
        assert (
            bridge.trace(web.replace("tp_dst=22", f"tp_dst={port}"), ["trk,new"]).dropped
            is expected
        )


def test_diff_bundle_turns_old_flows_into_new(bridge: Bridge, tmp_path: Path) -> None:
    old_model = json.loads((ROOT / "examples" / "two-tier.json").read_text())
    new_model = copy.deepcopy(old_model)
    new_model["security_groups"]["web"]["rules"].append(
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 8080}
    )
    del new_model["security_groups"]["db"]["rules"][2]  # the SSH rule of db
    new_model["ports"] = [p for p in new_model["ports"] if p["id"] != "web-2"]
    old, new = sgflows.compile(old_model), sgflows.compile(new_model)
    bridge.add_flows(old.to_ofctl())
    changes = new.diff_from(old)
    assert changes and changes.added and changes.removed
    bundle = tmp_path / "change.bundle"
    bundle.write_text(changes.to_bundle())
    bridge.ofctl("bundle", bridge.name, str(bundle))
    expected = tmp_path / "new.flows"
    expected.write_text(new.to_ofctl())
    # diff-flows exits 0 when the bridge holds exactly the given flows.
    bridge.ofctl("diff-flows", bridge.name, str(expected))
    assert bridge.flow_count() == new.flow_count


def test_local_flood_follows_ingress_rules_with_protected_ports(bridge: Bridge) -> None:
    """With filter_local_flood and VM ports `no-flood`, a broadcast one VM sends reaches only
    the local ports whose ingress rules allow it (and the uplink); NORMAL adds nothing."""

    def vm(name: str, n: int, groups: list[str]) -> dict[str, Any]:
        return {"id": name, "mac_address": f"fa:16:3e:00:00:0{n}", "fixed_ips": [f"10.0.0.{n}"],
                "security_groups": groups, "network_id": "net", "ofport": n}  # fmt: skip

    model = {
        "security_groups": {
            "out": {"stateful": False, "rules": [{"direction": "egress", "protocol": "udp"}]},
            "in9999": {
                "stateful": False,
                "rules": [{"direction": "ingress", "protocol": "udp", "port_range_min": 9999}],
            },
            "closed": {"stateful": False, "rules": []},
        },
        "networks": {"net": {"local_vlan": 7}},
        "ports": [vm("a", 1, ["out"]), vm("b", 2, ["in9999"]), vm("c", 3, ["closed"])],
    }
    bridge.add_flows(sgflows.compile(model, filter_local_flood=True).to_ofctl())
    for n in (1, 2, 3, UPLINK):
        name = f"{bridge.name[:8]}q{n}"
        bridge.add_port(name, n, internal=True)
    for n in (1, 2, 3):  # what the agent does when it plugs a VM port (OpenFlow 1.0 config)
        run("ovs-ofctl", "-O", "OpenFlow10", "mod-port", bridge.name, str(n), "no-flood",
            env=bridge.ovs.env)  # fmt: skip
    flood = ("in_port=1,dl_src=fa:16:3e:00:00:01,dl_dst=ff:ff:ff:ff:ff:ff,udp,nw_src=10.0.0.1,"
             "nw_dst=10.0.0.255,udp_src=5000,udp_dst=9999")  # fmt: skip
    vms = {1, 2, 3}
    assert vms & set(bridge.trace(flood).ports) == {2}
    other = flood.replace("udp_dst=9999", "udp_dst=9998")
    assert vms & set(bridge.trace(other).ports) == set()
    assert UPLINK in bridge.trace(other).ports
    # Without the option, NORMAL floods it to every port, rules or not.
    bridge.replace_flows(sgflows.compile(model).to_ofctl())
    bridge.ovs.unixctl("revalidator/purge")
    for n in (1, 2, 3):
        run("ovs-ofctl", "-O", "OpenFlow10", "mod-port", bridge.name, str(n), "flood",
            env=bridge.ovs.env)  # fmt: skip
    assert vms & set(bridge.trace(other).ports) == {2, 3}
