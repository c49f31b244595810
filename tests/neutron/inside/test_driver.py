"""``firewall_driver = sgflows`` driven like neutron-openvswitch-agent drives it.

The driver is loaded through Neutron's own driver loading by its entry-point alias, built as
the agent builds it (``cls(integration_bridge=int_br)``) on a real ``OVSIntegrationBridge``,
and fed port dicts, rules and members in the agent's shapes. Verdicts come from
``ofproto/trace`` on the switch and are checked against ``sgflows.evaluate`` on the model the
driver compiled.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import harness
import pytest
import sgflows
from harness import TAG, Host, Vif, port_dict
from neutron_lib.callbacks import events, registry, resources
from sgflows.neutron.firewall import FlowApplyError, SgflowsFirewallDriver
from sgflows.switch.coldload import DEFAULT_CONNECTIONS
from support.ovs import PrivateOVS

UPLINK = 50  # a patch-like port the driver never hears of: traffic from "outside"
OUTSIDE_MAC = "fa:16:3e:aa:aa:aa"
OUTSIDE_IP = "10.0.0.9"

VM1 = Vif("port-vm1", "tapvm1", 5, "fa:16:3e:00:00:01", "10.0.0.5")
VM2 = Vif("port-vm2", "tapvm2", 6, "fa:16:3e:00:00:02", "10.0.0.6")
DHCP = Vif("port-dhcp", "tapdhcp", 7, "fa:16:3e:00:00:07", "10.0.0.2")
STRANGER = Vif("port-other", "tapother", 8, "fa:16:3e:00:00:08", "10.0.0.8")

WEB_RULES: list[dict[str, Any]] = [
    {"direction": "egress", "ethertype": "IPv4", "security_group_id": "web", "stateful": True},
    {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
     "port_range_max": 22, "source_ip_prefix": "10.0.0.0/24", "security_group_id": "web",
     "stateful": True},
    {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "web",
     "security_group_id": "web", "stateful": True},
]  # fmt: skip


@pytest.fixture
def host(neutron_ovs: PrivateOVS, int_br: Any) -> Host:
    h = Host(neutron_ovs, int_br.br_name)
    h.plug(UPLINK_VIF, tag=None)
    return h


UPLINK_VIF = Vif("uplink", "uplink", UPLINK, OUTSIDE_MAC, OUTSIDE_IP)


def load_driver(int_br: Any) -> SgflowsFirewallDriver:
    driver = harness.load_driver(int_br)
    assert isinstance(driver, SgflowsFirewallDriver)
    return driver


def first_sync(driver: SgflowsFirewallDriver, ports: Sequence[dict[str, Any]]) -> None:
    members = {"web": {"IPv4": [(VM1.ip, VM1.mac), (VM2.ip, VM2.mac)], "IPv6": []}}
    harness.sync(driver, {"web": WEB_RULES}, members, ports, [DHCP.device])


@pytest.fixture
def running(host: Host, int_br: Any) -> Iterator[SgflowsFirewallDriver]:
    for vif in (VM1, VM2, DHCP, STRANGER):
        host.plug(vif)
    driver = load_driver(int_br)
    first_sync(driver, [port_dict(VM1), port_dict(VM2)])
    yield driver


def ingress(vif: Vif, proto: str, dst_port: int, src_ip: str = OUTSIDE_IP) -> str:
    return (
        f"in_port={UPLINK},dl_vlan={TAG},dl_src={OUTSIDE_MAC},dl_dst={vif.mac},{proto},"
        f"nw_src={src_ip},nw_dst={vif.ip},tp_dst={dst_port}"
    )


def model_of(driver: SgflowsFirewallDriver) -> dict[str, Any]:
    return driver._model.to_model()


def check_ingress_verdicts(host: Host, driver: SgflowsFirewallDriver) -> dict[str, str]:
    """Trace TCP from outside to each VM and compare with the reference evaluator."""
    model = model_of(driver)
    seen = {}
    for vif in (VM1, VM2):
        for src, dport in ((OUTSIDE_IP, 22), (OUTSIDE_IP, 80), ("192.0.2.1", 22), (VM2.ip, 80)):
            want = sgflows.evaluate(
                model, f"tcp,nw_src={src},tp_dst={dport}", port=vif.device, direction="ingress"
            ).verdict
            ports = host.trace(ingress(vif, "tcp", dport, src), ["trk,new"])
            got = "allow" if vif.ofport in ports else "drop"
            assert got == want, (vif.device, src, dport, ports)
            seen[f"{vif.device} {src}:{dport}"] = got
    return seen


def test_loaded_by_alias_keeps_the_bridge_contract(running: SgflowsFirewallDriver, host: Host,
                                                    int_br: Any) -> None:  # fmt: skip
    cookie = f"cookie={int_br.default_cookie:#x},"
    flows = host.flows()
    ours = [f for f in flows if f.startswith(cookie)]
    assert ours, flows
    assert not [f for f in ours if " table=0," in f or f.startswith(f"{cookie} table=0,")]
    table60 = [f for f in ours if "table=60," in f]
    assert {int(f.split("priority=")[1].split(",")[0].split(" ")[0]) for f in table60} <= {
        90, 100,
    }  # fmt: skip
    assert any("table=60, priority=1 actions=NORMAL" in f for f in flows), "agent's NORMAL gone"
    # Every flow in the firewall's tables carries the agent's cookie.
    for f in flows:
        if any(f" table={t}," in f for t in (71, 72, 73, 81, 82, 91, 92, 94)):
            assert f.startswith(cookie), f
    assert set(running.ports) == {VM1.device, VM2.device}
    assert running.ports[VM1.device]["security_groups"] == ["web"]


def test_first_install_cold_loads_over_the_one_default_count(int_br: Any) -> None:
    """The driver's first install takes ``sgflows load``'s connection count (the others'
    agreement: ``tests/functional/test_cold_load.py``)."""
    assert load_driver(int_br)._flows.cold_connections == DEFAULT_CONNECTIONS


def test_verdicts_match_the_evaluator(running: SgflowsFirewallDriver, host: Host) -> None:
    seen = check_ingress_verdicts(host, running)
    assert seen[f"{VM1.device} {OUTSIDE_IP}:22"] == "allow"
    assert seen[f"{VM1.device} {OUTSIDE_IP}:80"] == "drop"
    assert seen[f"{VM1.device} {VM2.ip}:80"] == "allow"  # remote group
    assert seen[f"{VM1.device} 192.0.2.1:22"] == "drop"


def test_unknown_ports_keep_the_agents_normal(running: SgflowsFirewallDriver, host: Host) -> None:
    # STRANGER is on the bridge and the network but the driver was never told about it.
    flow = (
        f"in_port={UPLINK},dl_vlan={TAG},dl_src={OUTSIDE_MAC},dl_dst={STRANGER.mac},tcp,"
        f"nw_src={OUTSIDE_IP},nw_dst={STRANGER.ip},tp_dst=80"
    )
    assert host.trace(flow), "unknown port's traffic dropped"
    broadcast = f"in_port={UPLINK},dl_vlan={TAG},dl_src={OUTSIDE_MAC},dl_dst=ff:ff:ff:ff:ff:ff,arp"
    assert STRANGER.ofport in host.trace(broadcast)


def test_rule_and_member_updates(running: SgflowsFirewallDriver, host: Host) -> None:
    # Outside a batch every call applies at once.
    running.update_security_group_rules("web", [r for r in WEB_RULES if r.get("protocol") != "tcp"])
    seen = check_ingress_verdicts(host, running)
    assert seen[f"{VM1.device} {OUTSIDE_IP}:22"] == "drop"
    running.update_security_group_members("web", {"IPv4": [(VM1.ip, VM1.mac)], "IPv6": []})
    seen = check_ingress_verdicts(host, running)
    assert seen[f"{VM1.device} {VM2.ip}:80"] == "drop"
    running.remove_port_filter(port_dict(VM2))
    assert not [f for f in host.flows() if f"in_port={VM2.ofport} " in f]
    assert set(running.ports) == {VM1.device}


def test_agent_restart_moves_every_flow_to_the_new_cookie(
    running: SgflowsFirewallDriver, host: Host, int_br: Any
) -> None:
    from neutron.plugins.ml2.drivers.openvswitch.agent.openflow.native import br_int

    old = int_br.default_cookie
    # A new agent process: a new bridge object with a new random default cookie.
    new_br = br_int.OVSIntegrationBridge(int_br.br_name, datapath_type="netdev", os_ken_app=None)
    assert new_br.default_cookie != old
    registry.unsubscribe(running._ovs_restarted, resources.AGENT, events.OVS_RESTARTED)
    fresh = load_driver(new_br)
    first_sync(fresh, [port_dict(VM1), port_dict(VM2)])
    flows = host.flows()
    firewall_places = [
        f for f in flows
        if any(f" table={t}," in f for t in (71, 72, 73, 81, 82, 91, 92, 93, 94))
        or (" table=60," in f and " priority=1 " not in f)
    ]  # fmt: skip
    assert firewall_places
    assert all(f.startswith(f"cookie={new_br.default_cookie:#x},") for f in firewall_places)
    check_ingress_verdicts(host, fresh)


def test_ovs_restarted_reinstalls(running: SgflowsFirewallDriver, host: Host) -> None:
    subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", "del-flows", host.bridge, "table=60"], check=True
    )
    assert host.trace(ingress(VM1, "tcp", 80), ["trk,new"]) == ()
    registry.publish(resources.AGENT, events.OVS_RESTARTED, None, payload=events.EventPayload(None))
    assert [f for f in host.flows() if f"in_port={VM1.ofport} " in f]
    check_ingress_verdicts(host, running)


def test_port_without_ofport_loses_its_flows(running: SgflowsFirewallDriver, host: Host) -> None:
    host.unplug(VM2)
    running.update_port_filter(port_dict(VM2))
    assert not [f for f in host.flows() if f"in_port={VM2.ofport} " in f]
    assert VM2.device not in running.ports


def test_a_batch_reads_every_ports_facts_at_its_end(
    running: SgflowsFirewallDriver, host: Host
) -> None:
    """The facts of a batch's ports are read together when it ends: each port gets its own
    (ofport, MAC, VLAN), and ports without an OpenFlow port or a local VLAN stay unfiltered."""
    host.unplug(VM2)
    with running.defer_apply():
        for vif in (STRANGER, VM2, UPLINK_VIF):
            running.prepare_port_filter(port_dict(vif))
        running.process_trusted_ports(["port-nowhere"])
        assert STRANGER.device in running.ports  # known to the agent during the batch
    assert sorted(running.ports) == sorted([VM1.device, STRANGER.device])
    flows = host.flows()
    assert [f for f in flows if f"in_port={STRANGER.ofport} " in f]
    assert [f for f in flows if STRANGER.mac in f]  # the MAC its Interface row says
    assert not [f for f in flows if f"in_port={VM2.ofport} " in f]
    assert not [f for f in flows if f"in_port={UPLINK} " in f]


def test_model_error_closes_only_its_port(running: SgflowsFirewallDriver, host: Host) -> None:
    bad = [{"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 90, "port_range_max": 80, "stateful": True}]  # fmt: skip
    running.update_security_group_rules("broken", bad)
    running.update_port_filter(port_dict(VM2, groups=("web", "broken")))
    # VM2 keeps a table-60 flow (no fall-through to NORMAL) and drops everything.
    assert [f for f in host.flows() if f"in_port={VM2.ofport} " in f]
    assert VM2.ofport not in host.trace(ingress(VM2, "tcp", 22), ["trk,new"])
    assert VM1.ofport in host.trace(ingress(VM1, "tcp", 22), ["trk,new"])


def test_failed_apply_raises_out_of_the_batch(running: SgflowsFirewallDriver) -> None:
    running.ofctl.bridge_name = "no-such-br"
    with pytest.raises(FlowApplyError), running.defer_apply():
        running.update_security_group_rules("web", WEB_RULES[:1])
