"""``sgflows agent`` with ``dataplane = ovs`` on a real userspace Open vSwitch, fed by the
reference controller: port discovery through OVSDB, fail closed, session diffs as bundles,
adoption after a restart, recovery from switch restarts, and real packets while rules change.
Each test has its own switch (own network namespace), controller and agent."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
from typing import Any

import pytest
from sgflows.agent.dataplane import DataplaneError
from sgflows.agent.dataplane.ovs import OvsDataplane
from sgflows.agent.dataplane.settings import OvsSettings
from support.hypervisor import COOKIE, FOREIGN, Hypervisor, vm_port
from support.waiting import wait_until

pytestmark = pytest.mark.ovs

MAC_A, MAC_B, MAC_C = "fa:16:3e:00:00:0a", "fa:16:3e:00:00:0b", "fa:16:3e:00:00:0c"
WEB_RULES: list[dict[str, Any]] = [
    {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80},
    {"direction": "ingress", "protocol": "icmp"},
    {"direction": "egress"},
]


def model(*ports: dict[str, Any], rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "security_groups": {"web": {"rules": WEB_RULES if rules is None else rules}},
        "ports": list(ports),
    }


PORT_A = vm_port("vm-a", MAC_A, "10.0.0.10", ["web"])
PORT_B = vm_port("vm-b", MAC_B, "10.0.0.11", ["web"], vlan=7)
PORT_C = vm_port("vm-c", MAC_C, "10.0.0.12", ["web"])


def started(hv: Hypervisor, *ports: dict[str, Any]) -> None:
    hv.write_model(model(*ports))
    hv.start_controller()
    hv.start_agent()
    wait_until("agent active", lambda: hv.state() == "active")


def test_ports_plugged_and_unplugged_get_and_lose_filters(hv: Hypervisor) -> None:
    started(hv, PORT_A, PORT_B)
    hv.plug("vm-a", 3, MAC_A)
    wait_until("vm-a filtered", lambda: hv.flows_of_port(3) and not hv.differences())
    assert hv.tag_of("vm-a") == "5"  # the model's local VLAN, set by the agent
    # A port the controller does not know (yet) is closed: nothing but the bootstrap passes.
    hv.plug("vm-c", 5, MAC_C)
    wait_until("vm-c closed", lambda: hv.dataplane_status()["closed_ports"] == 1)
    verdict = hv.bridge.trace(
        f"in_port=5,dl_src={MAC_C},dl_dst={MAC_A},ip,nw_src=10.0.0.12,nw_dst=10.0.0.10",
        ["trk,new"],
    )
    assert verdict.dropped, verdict.text
    # Its model arrives: filtered like the others, the bridge equal to a fresh compile.
    hv.write_model(model(PORT_A, PORT_B, PORT_C))
    wait_until("vm-c filtered", lambda: hv.dataplane_status()["closed_ports"] == 0)
    wait_until("bridge equals a fresh compile", lambda: not hv.differences())
    allowed = hv.bridge.trace(
        f"in_port=5,dl_src={MAC_C},dl_dst={MAC_A},tcp,nw_src=10.0.0.12,nw_dst=10.0.0.10,tp_dst=80",
        ["trk,new", "trk,new"],
    )
    assert allowed.ports == (3,), allowed.text
    hv.unplug("vm-a")
    wait_until("vm-a's flows gone", lambda: not hv.flows_of_port(3))
    assert not hv.differences()
    assert hv.foreign_flow_present()


def test_a_rule_change_is_a_diff_of_its_size(hv: Hypervisor) -> None:
    started(hv, PORT_A, PORT_B)
    hv.plug("vm-a", 3, MAC_A)
    hv.plug("vm-b", 4, MAC_B)
    wait_until("both filtered", lambda: hv.flows_of_port(3) and hv.flows_of_port(4))
    wait_until("settled", lambda: not hv.differences())
    # The report shows what the switch holds (reports trail the switch by an interval).
    count = len(hv.our_flows())
    before = wait_until(
        "the report caught up", lambda: (s := hv.dataplane_status())["flows"] == count and s
    )
    ssh = {"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}
    rules = [*WEB_RULES, ssh]
    hv.write_model(model(PORT_A, PORT_B, rules=rules))
    after = wait_until(
        "the rule applied",
        lambda: (
            (s := hv.dataplane_status())["diffs"] > before["diffs"]
            and s["flows"] > before["flows"]
            and s
        ),
    )
    # One added rule of a group both ports share: a few flows, not the bridge's hundreds.
    assert 0 < after["last_bundle_lines"] <= 8 < before["flows"]
    assert after["full_syncs"] == before["full_syncs"]
    assert not hv.differences()
    assert hv.foreign_flow_present()


def test_restarts_keep_or_restore_the_flows(hv: Hypervisor) -> None:
    started(hv, PORT_A, PORT_B)
    hv.plug("vm-a", 3, MAC_A)
    hv.plug("vm-b", 4, MAC_B)
    wait_until("settled", lambda: hv.flows_of_port(4) and not hv.differences())
    flows = sorted(hv.our_flows())
    name_a = hv.plugged["vm-a"][0]
    assert "NO_FLOOD" in port_config(hv, name_a)

    # kill -9 of the agent: the flows stay; a new agent adopts them (nothing to change).
    old = hv.row()["uuid"]
    hv.stop("agent", signal.SIGKILL)
    assert sorted(hv.our_flows()) == flows
    hv.start_agent()
    status = wait_until(
        "the new agent synced",
        lambda: hv.row()["uuid"] != old and (s := hv.dataplane_status())["full_syncs"] >= 1 and s,
    )
    # It found its flows right: its full sync sent nothing.
    assert status["full_sync_lines"] == 0 and sorted(hv.our_flows()) == flows

    # ovs-vswitchd dies and comes back without flows: everything is re-applied, no-flood too.
    assert hv.foreign_flow_present()
    hv.ovs.kill_vswitchd()
    wait_until(
        "degraded while ovs-vswitchd is down",
        lambda: "dataplane" in hv.row()["degraded_reasons"] and hv.state() == "degraded",
    )
    hv.ovs.start_vswitchd()
    hv.bridge.add_flows(FOREIGN)  # its owner puts it back, as the agent does its own
    wait_until("flows restored", lambda: sorted(hv.our_flows()) == flows)
    wait_until("no-flood again", lambda: "NO_FLOOD" in port_config(hv, name_a))
    # Seen as lost flows, or as a refused apply while it was down: a full sync either way. The
    # status is the agent's periodic report, which may lag the flows by one interval.
    wait_until(
        "the restart counted as a full sync",
        lambda: (
            (s := hv.dataplane_status())["restarts_detected"] + s["failures"] >= 1
            and s["full_syncs"] >= 2
        ),
    )
    wait_until("active", lambda: hv.state() == "active")

    # ovsdb-server restarts: the IDL reconnects and sees new ports again.
    hv.ovs.restart_ovsdb()
    hv.plug("vm-c", 5, MAC_C)
    wait_until("vm-c closed after the reconnect", lambda: hv.flows_of_port(5))
    # The status is the agent's periodic report, which may lag the flows by one interval.
    wait_until("reconnect counted", lambda: hv.dataplane_status()["ovsdb_connections"] >= 2)

    # The controller goes away: flows stay, the agent says degraded, then resyncs.
    hv.stop("controller")
    with_c = sorted(hv.our_flows())
    hv.start_controller()
    wait_until("active after the controller's return", lambda: hv.state() == "active")
    assert sorted(hv.our_flows()) == with_c
    assert not hv.differences()
    assert hv.foreign_flow_present()


def port_config(hv: Hypervisor, name: str) -> str:
    # NO_FLOOD is an OpenFlow 1.0 port setting: only 1.0 shows it.
    out = subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow10", "show", hv.bridge.name],
        env=hv.ovs.env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if f"({name})" in line:
            return "\n".join(lines[i : i + 3])
    return ""


def test_the_agent_refuses_unsafe_bridges(hv: Hypervisor, monkeypatch: Any) -> None:
    for key in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR"):  # ovs-ofctl finds this switch
        monkeypatch.setenv(key, hv.ovs.env[key])
    settings = OvsSettings(
        bridge=hv.bridge.name, ovsdb=hv.ovs.db_remote, cookie=COOKIE, start_timeout=5
    )
    hv.ovs.vsctl("set-fail-mode", hv.bridge.name, "standalone")
    with pytest.raises(DataplaneError, match="fail_mode=standalone"):
        asyncio.run(OvsDataplane(settings).start())
    # The command says why in one line and exits 1, before it connects anywhere.
    assert hv.start_agent().wait(30) == 1
    assert "Error: bridge" in hv.log("agent") and "Traceback" not in hv.log("agent")
    hv.procs.pop("agent")
    asyncio.run(_start_and_stop(OvsDataplane(dataclasses.replace(settings, set_fail_mode=True))))
    assert hv.ovs.vsctl("get-fail-mode", hv.bridge.name).strip() == "secure"
    hv.bridge.add_flows("cookie=0x1234,table=23,priority=0,actions=drop")  # Neutron's canary
    with pytest.raises(DataplaneError, match="neutron-openvswitch-agent"):
        asyncio.run(OvsDataplane(settings).start())
    with pytest.raises(DataplaneError, match="does not exist"):
        asyncio.run(OvsDataplane(dataclasses.replace(settings, bridge="sgnone0")).start())


async def _start_and_stop(dp: OvsDataplane) -> None:
    await dp.start()
    await dp.stop()


def test_real_packets_while_rules_change(hv: Hypervisor, netns_factory: Any) -> None:
    """Both policies allow ICMP and drop TCP 9000; they differ on TCP 80/22. While they
    alternate, every ping passes and no connection to 9000 does."""
    one = [*WEB_RULES]
    two = [r for r in WEB_RULES if r.get("port_range_min") != 80] + [
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}
    ]
    a_port, b_port = dict(PORT_A), dict(PORT_B, local_vlan=5)
    hv.write_model(model(a_port, b_port, rules=one))
    hv.start_controller()
    hv.start_agent()
    wait_until("agent active", lambda: hv.state() == "active")
    a = netns_factory(hv.bridge, 3, ipv4="10.0.0.10/24", mac=MAC_A)
    b = netns_factory(hv.bridge, 4, ipv4="10.0.0.11/24", mac=MAC_B)
    hv.adopt("vm-a", a.host_ifname, 3, MAC_A)
    hv.adopt("vm-b", b.host_ifname, 4, MAC_B)
    wait_until("both filtered", lambda: not hv.differences() and hv.flows_of_port(4))
    a.add_neighbor(b.ip4, MAC_B)
    b.add_neighbor(a.ip4, MAC_A)
    applied = hv.dataplane_status()["diffs"]
    with b.tcp_server(port=9000):
        assert a.ping(b.ip4, timeout=2)
        for n in range(6):
            hv.write_model(model(a_port, b_port, rules=two if n % 2 == 0 else one))
            for _ in range(3):  # during and after the change
                assert a.ping(b.ip4, timeout=2), f"ping dropped at change {n}"
                assert a.tcp_request(b.ip4, 9000, timeout=0.3) is None, f"9000 open at {n}"
        wait_until("settled", lambda: not hv.differences())
    # The policies really alternated on the switch (changes may coalesce, not vanish).
    assert hv.dataplane_status()["diffs"] >= applied + 3
    assert hv.foreign_flow_present()
