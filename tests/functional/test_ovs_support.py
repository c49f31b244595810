"""The functional-test support works: private OVS, flows, traces, namespaces, real packets.

Every flow here is hand-written (not sgflows output): these tests check the harness, so that
a failure in a compiler test means the compiler, not the plumbing.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support import REGISTRY_DIR, CommandError, cleanup_leftovers, unique_name
from support.netns import NetnsFactory, link_exists
from support.ovs import LOCAL, Bridge, PrivateOVS, parse_dpif_show, parse_trace

pytestmark = pytest.mark.ovs

# A stateful pipeline in the shape sgflows emits: conntrack in zone 7, new TCP/22 and ICMP
# from port 1 to port 2 allowed and committed, established both ways, ARP forwarded.
CT_FIREWALL = """\
table=0,priority=100,arp,in_port=1,actions=output:2
table=0,priority=100,arp,in_port=2,actions=output:1
table=0,priority=50,ip,actions=ct(table=1,zone=7)
table=1,priority=100,ct_state=+trk+est-rel-inv,ip,in_port=1,actions=output:2
table=1,priority=100,ct_state=+trk+est-rel-inv,ip,in_port=2,actions=output:1
table=1,priority=90,ct_state=+trk+new-inv,tcp,in_port=1,tp_dst=22,actions=ct(commit,zone=7),output:2
table=1,priority=90,ct_state=+trk+new-inv,icmp,in_port=1,actions=ct(commit,zone=7),output:2
table=1,priority=0,actions=drop
"""

PATCH_1_2 = "in_port=1,actions=output:2\nin_port=2,actions=output:1\n"


def test_private_ovs_runs_in_its_own_directory(ovs: PrivateOVS) -> None:
    assert ovs.dir is not None and ovs.running
    for var, sub in (("OVS_RUNDIR", "run"), ("OVS_DBDIR", "db"), ("OVS_LOGDIR", "log")):
        assert ovs.env[var] == str(ovs.dir / sub)
    assert (ovs.dir / "run" / "db.sock").exists()
    assert "3." in ovs.appctl("version")
    assert ovs.unixctl("version") == ovs.appctl("version")


def test_bridge_is_userspace_secure_and_empty(ovs: PrivateOVS, bridge: Bridge) -> None:
    assert len(bridge.name) <= 15 and bridge.name in ovs.bridges
    get = lambda col: ovs.vsctl("get", "bridge", bridge.name, col).strip()  # noqa: E731
    assert get("datapath_type") == "netdev"
    assert get("fail_mode") == "secure"
    assert "OpenFlow15" in get("protocols") and "OpenFlow13" in get("protocols")
    assert bridge.flow_count() == 0
    assert bridge.dump_flows() == []
    assert bridge.datapath_ports() == {1: LOCAL} or LOCAL in bridge.datapath_ports().values()
    assert bridge.trace("in_port=LOCAL,ip").dropped


def test_bundle_add_flows_and_count(bridge: Bridge) -> None:
    bridge.add_flows(
        "table=0,priority=10,ip,actions=resubmit(,1)\n"
        "table=0,priority=0,actions=drop\n"
        "\n"
        "# comments and blank lines are allowed\n"
        "table=1,priority=10,ip,nw_src=10.0.0.0/8,actions=LOCAL\n"
    )
    bridge.add_flows([f"table=2,priority=5,tcp,tp_dst={p},actions=drop" for p in (22, 80, 443)])
    assert bridge.flow_count() == 6
    flows = bridge.dump_flows()
    assert len(flows) == 6
    assert not any("n_packets" in f or "duration" in f for f in flows)
    assert "table=1, priority=10,ip,nw_src=10.0.0.0/8 actions=LOCAL" in flows
    assert len(bridge.dump_flows("table=2")) == 3
    bridge.add_flows(["table=3,actions=drop"], bundle=False)
    assert bridge.flow_count() == 7
    bridge.del_flows("table=2")
    assert bridge.flow_count() == 4


def test_bad_flow_is_rejected_atomically_with_ofctl_message(bridge: Bridge) -> None:
    bridge.add_flows("priority=1,actions=drop\n")
    bad = (
        "priority=2,ip,actions=drop\npriority=3,tcp,actions=drop\npriority=4,bogus=1,actions=drop\n"
    )
    with pytest.raises(CommandError) as err:
        bridge.add_flows(bad)
    message = str(err.value)
    assert "-:3: unknown keyword bogus" in message  # ovs-ofctl's own words, with the line
    assert err.value.returncode == 1
    assert bridge.flow_count() == 1  # nothing of the rejected bundle was applied

    # Parsed fine by ovs-ofctl but refused by the switch (no such group): in a bundle the
    # commit fails as a whole; without one, the flows before the bad one stay applied.
    refused = "priority=5,ip,actions=drop\npriority=6,actions=group:99\n"
    with pytest.raises(CommandError) as err:
        bridge.add_flows(refused)
    assert "OFPBAC_BAD_OUT_GROUP" in str(err.value) and "group:99" in str(err.value)
    assert bridge.flow_count() == 1
    with pytest.raises(CommandError, match="OFPBAC_BAD_OUT_GROUP"):
        bridge.add_flows(refused, bundle=False)
    assert bridge.flow_count() == 2


def test_replace_flows(bridge: Bridge) -> None:
    bridge.add_flows("priority=1,ip,actions=drop\npriority=2,tcp,actions=drop\n")
    bridge.replace_flows("priority=2,tcp,actions=drop\npriority=3,udp,actions=drop\n")
    assert sorted(bridge.dump_flows()) == [
        "priority=2,tcp actions=drop",
        "priority=3,udp actions=drop",
    ]


def test_trace_verdicts_with_conntrack(bridge: Bridge) -> None:
    bridge.add_port(unique_name("sgp"), 1, internal=True)
    bridge.add_port(unique_name("sgp"), 2, internal=True)
    bridge.add_flows(CT_FIREWALL)
    ssh = "in_port=1,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2,tp_src=40000,tp_dst=22"

    allowed = bridge.trace(ssh, ct_next=["trk,new"])
    assert allowed.ports == (2,) and not allowed.dropped
    assert allowed.passes == 2 and not allowed.recirculates
    assert "ct(commit,zone=7)" in allowed.datapath_actions
    assert allowed.dp_ports != allowed.ports or bridge.datapath_ports()[allowed.dp_ports[0]] == 2

    assert bridge.trace(ssh).ports == (2,)  # without --ct-next, each ct() gives trk,new
    assert bridge.trace(ssh.replace("tp_dst=22", "tp_dst=80"), ["trk,new"]).dropped
    assert bridge.trace(ssh, ["trk,inv"]).dropped
    reply = "in_port=2,tcp,nw_src=10.0.0.2,nw_dst=10.0.0.1,tp_src=22,tp_dst=40000"
    assert bridge.trace(reply, ["trk,est"]).ports == (1,)
    assert bridge.trace(reply, ["trk,new"]).dropped
    assert bridge.trace("in_port=2,arp,arp_tpa=10.0.0.1").ports == (1,)
    assert bridge.trace("in_port=2,arp").passes == 1

    many = bridge.trace_many([(ssh, ["trk,new"]), (reply, ["trk,est"]), "in_port=1,udp"] * 50)
    assert [r.ports for r in many[:3]] == [(2,), (1,), ()]
    assert len(many) == 150

    bridge.add_flows("table=1,priority=95,udp,actions=LOCAL,output:1,output:2")
    multi = bridge.trace("in_port=2,udp", ["trk,new"])
    assert multi.ports == (LOCAL, 1)  # output to the in_port is dropped (needs IN_PORT)


def test_parse_trace_and_dpif_show() -> None:
    dpif = (
        "netdev@ovs-netdev: hit:0 missed:0\n  br-a:\n    br-a 65534/1: (tap)\n"
        "    p1 1/3: (tap)\n  br-b:\n    br-b 65534/2: (tap)\n    v 7/4:\n"
    )
    maps = parse_dpif_show(dpif)
    assert maps == {"br-a": {1: LOCAL, 3: 1}, "br-b": {2: LOCAL, 4: 7}}
    text = (
        "Datapath actions: ct(zone=7),recirc(0x1)\n...\n"
        "Datapath actions: ct(commit,zone=7,exec(set(ct_mark(0x1)))),3,1\n"
    )
    r = parse_trace("f", text, maps["br-a"])
    assert r.ports == (1, LOCAL) and r.dp_ports == (3, 1) and r.passes == 2
    assert r.actions[0] == "ct(commit,zone=7,exec(set(ct_mark(0x1))))"
    assert parse_trace("f", "Datapath actions: drop\n", {}).dropped
    stuck = parse_trace("f", "Datapath actions: ct(zone=7),recirc(0x1)\n", {})
    assert stuck.dropped and stuck.recirculates
    with pytest.raises(ValueError):
        parse_trace("f", "no verdict", {})


@pytest.mark.netns
def test_ping_between_namespaces(bridge: Bridge, netns_factory: NetnsFactory) -> None:
    a = netns_factory(bridge, 1, ipv4="10.9.0.1/24", ipv6="fd00:9::1/64")
    b = netns_factory(bridge, 2, ipv4="10.9.0.2/24", ipv6="fd00:9::2/64")
    assert bridge.ports == {a.host_ifname: 1, b.host_ifname: 2}
    assert a.exec("ethtool", "-k", "eth0").stdout.count("tx-checksumming: off") == 1
    assert not a.ping(b.ip4, timeout=0.3)  # secure bridge, no flows: nothing passes

    bridge.add_flows(PATCH_1_2)
    assert a.ping(b.ip4, count=2)
    assert b.ping(a.ip4)
    assert a.ping(b.ip6)
    assert b.ping(a.ip6)

    bridge.del_flows("in_port=2")  # one direction only: replies are lost
    a.add_neighbor(b.ip4, b.mac)
    assert not a.ping(b.ip4, timeout=0.3)


@pytest.mark.netns
def test_tcp_through_userspace_conntrack(
    ovs: PrivateOVS, bridge: Bridge, netns_factory: NetnsFactory
) -> None:
    a = netns_factory(bridge, 1, ipv4="10.9.1.1/24")
    b = netns_factory(bridge, 2, ipv4="10.9.1.2/24")
    bridge.add_flows(CT_FIREWALL)

    with b.tcp_server(port=22) as srv:
        assert a.tcp_request(b.ip4, srv.port, b"over ssh") == b"echo:over ssh"
        assert a.tcp_request(b.ip4, srv.port, b"x" * 100_000) == b"echo:" + b"x" * 100_000
    assert srv.log()[:1] == [f"conn ::ffff:{a.ip4} 8"]
    with a.tcp_server(port=22) as back:  # new connections from port 2 are not allowed
        assert b.tcp_request(a.ip4, back.port, timeout=0.5) is None
    with b.tcp_server() as other:  # nor to any port but 22
        assert a.tcp_request(b.ip4, other.port, timeout=0.5) is None
    assert a.ping(b.ip4) and not b.ping(a.ip4, timeout=0.3)

    conntrack = ovs.unixctl("dpctl/dump-conntrack", "zone=7")
    assert f"tcp,orig=(src={a.ip4},dst={b.ip4}" in conntrack


def test_stop_reaps_daemons_and_removes_everything(tmp_path: Path) -> None:
    switch = PrivateOVS().start()
    assert switch.dir is not None
    directory = switch.dir
    br = switch.add_bridge()
    port = unique_name("sgp")
    br.add_port(port, 3, internal=True)
    pids = [int(p.read_text()) for p in (directory / "run").glob("*.pid")]
    assert len(pids) == 2
    assert switch.netns is not None
    netns = switch.netns
    assert link_exists("ovs-netdev", netns)  # the userspace datapath's own tap
    for link in (br.name, port):  # bridge and internal-port taps: there, not here
        assert link_exists(link, netns) and not link_exists(link)
    switch.stop()
    switch.stop()  # idempotent
    assert not directory.exists()
    assert not Path(f"/run/netns/{netns}").exists()
    for pid in pids:  # reaped at once: not even a zombie is left
        assert not Path(f"/proc/{pid}").exists()


def test_two_switches_side_by_side(ovs: PrivateOVS, bridge: Bridge) -> None:
    # Each in its own namespace: two userspace datapaths do not fight over "ovs-netdev".
    with PrivateOVS() as other:
        br = other.add_bridge(bridge.name)  # even the same bridge name
        br.add_flows(PATCH_1_2)
        assert br.flow_count() == 2 and bridge.flow_count() == 0
    assert ovs.running and bridge.trace("in_port=LOCAL,ip").dropped


@pytest.mark.netns
def test_netns_cleanup(bridge: Bridge) -> None:
    factory = NetnsFactory()
    ns = factory(bridge, 4, ipv4="10.9.2.1/24")
    server = ns.tcp_server()
    assert Path(f"/run/netns/{ns.name}").exists()
    factory.cleanup()
    assert server.proc.poll() is not None
    assert not Path(f"/run/netns/{ns.name}").exists()
    assert not link_exists(ns.host_ifname, bridge.ovs.netns)
    assert ns.host_ifname not in bridge.ports
    assert ns.host_ifname not in bridge.ovs.vsctl("list-ports", bridge.name)


@pytest.mark.netns
def test_leftovers_of_a_dead_process_are_cleaned() -> None:
    ns, link = unique_name("sgn"), unique_name("sgd")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    peer = unique_name("sgd")
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", peer], check=True)
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    dead = REGISTRY_DIR / f"{2**22 + os.getpid() % 1000}.0.txt"  # no such pid
    dead.write_text(f"netns {ns}\nlink {link}\novsdir /nonexistent/sgflows-ovs-x\n")
    assert cleanup_leftovers() >= 1
    assert not dead.exists()
    assert not Path(f"/run/netns/{ns}").exists()
    assert not Path(f"/sys/class/net/{link}").exists()
