"""Real packets between namespaces through ``firewall_driver = sgflows`` on Neutron's own
``OVSIntegrationBridge``: each VM is a namespace whose veth is a VIF as os-vif plugs it, the
driver is loaded and fed the agent's way, and ping/TCP pass or fail as the rules say —
including while rules, members and ports change in a loop (no packet lost: no blink).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sgflows
from harness import TAG, Host, load_driver, port_dict, sync, vm_namespace
from neutron_lib.callbacks import events, registry, resources
from support.connection import held_connection
from support.netns import Namespace, NetnsFactory
from support.ovs import PrivateOVS

pytestmark = [pytest.mark.timeout(300)]


def rule(direction: str, stateful: bool = True, **fields: Any) -> dict[str, Any]:
    return {"direction": direction, "ethertype": "IPv4", "stateful": stateful, **fields}


def tcp_in(port: int, stateful: bool = True, **fields: Any) -> dict[str, Any]:
    return rule("ingress", stateful, protocol="tcp", port_range_min=port, port_range_max=port,
                **fields)  # fmt: skip


CLIENT = [rule("egress")]
SERVER = [tcp_in(8080), rule("ingress", protocol="icmp")]
#: Stateless: the server's replies need an egress rule of their own.
BARE = [tcp_in(8080, stateful=False)]


@dataclass
class Lab:
    host: Host
    vm1: Namespace  # group client
    vm2: Namespace  # group server
    vm3: Namespace  # stateless group bare
    driver: Any

    def ports(self, vm2_groups: tuple[str, ...] = ("server",)) -> list[dict[str, Any]]:
        return [
            port_dict(self.vm1, "vm1", ["client"]),
            port_dict(self.vm2, "vm2", list(vm2_groups)),
            port_dict(self.vm3, "vm3", ["bare"]),
        ]

    def model(self) -> dict[str, Any]:
        return dict(self.driver._model.to_model())


@pytest.fixture
def lab(neutron_ovs: PrivateOVS, int_br: Any) -> Iterator[Lab]:
    host = Host(neutron_ovs, int_br.br_name)
    factory = NetnsFactory()
    driver = None
    try:
        vms = [
            vm_namespace(
                factory, host, f"vm{n}", 20 + n, f"10.0.0.{20 + n}", f"fa:16:3e:00:01:{n:02x}"
            )
            for n in (1, 2, 3)
        ]
        for a in vms:  # no ARP needed: each knows the others' MACs
            for b in vms:
                if a is not b:
                    a.add_neighbor(b.ip4, b.mac)
        driver = load_driver(int_br)
        lab = Lab(host, *vms, driver=driver)
        members = {"client": {"IPv4": [(lab.vm1.ip4, lab.vm1.mac)]}}
        sync(driver, {"client": CLIENT, "server": SERVER, "bare": BARE}, members, lab.ports())
        neutron_ovs.unixctl("revalidator/purge")
        yield lab
    finally:
        if driver is not None:  # its bridge goes with the test
            registry.unsubscribe(driver._ovs_restarted, resources.AGENT, events.OVS_RESTARTED)
        factory.cleanup()


def allowed(lab: Lab, port: str, direction: str, packet: str) -> bool:
    return bool(sgflows.evaluate(lab.model(), packet, port=port, direction=direction).allowed)


def test_allowed_and_blocked_tcp_and_icmp(lab: Lab) -> None:
    vm1, vm2 = lab.vm1, lab.vm2
    assert allowed(lab, "vm2", "ingress", f"tcp,nw_src={vm1.ip4},tcp_dst=8080")
    assert not allowed(lab, "vm2", "ingress", f"tcp,nw_src={vm1.ip4},tcp_dst=9090")
    assert vm1.ping(vm2.ip4, timeout=2.0)
    assert not vm2.ping(vm1.ip4, timeout=0.5)  # the server has no egress rule
    with vm2.tcp_server(port=8080) as ok, vm2.tcp_server(port=9090) as closed:
        assert vm1.tcp_request(vm2.ip4, ok.port, b"hi", timeout=3.0) == b"echo:hi"
        assert vm1.tcp_request(vm2.ip4, closed.port, timeout=0.5) is None
    with vm1.tcp_server(port=8080) as back:
        assert vm2.tcp_request(vm1.ip4, back.port, timeout=0.5) is None


def test_removing_a_rule_cuts_the_connection(lab: Lab, neutron_ovs: PrivateOVS) -> None:
    with held_connection(lab.vm1, lab.vm2, 8080) as say:
        assert say("one") == "one"
        lab.driver.update_security_group_rules("server", SERVER[1:])  # tcp 8080 gone
        assert say("two") == "timeout"  # the established connection is cut
        assert say("three") == "timeout"
    zone = f"zone={TAG}"
    entries = [e for e in neutron_ovs.unixctl("dpctl/dump-conntrack", zone).splitlines()
               if "dport=8080" in e]  # fmt: skip
    assert entries and all("mark=1" in e for e in entries), entries
    # The next batch that removes flows flushes the marked entries of cut connections.
    lab.driver.update_security_group_rules("server", [])
    left = [e for e in neutron_ovs.unixctl("dpctl/dump-conntrack", zone).splitlines()
            if "dport=8080" in e]  # fmt: skip
    assert left == []
    assert lab.vm1.tcp_request(lab.vm2.ip4, 8080, timeout=0.5) is None


_FLOOD = r"""
import os, select, socket, struct, sys, time
dst, interval = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF
sent, got, stop_at = 0, set(), None
nxt = time.monotonic()
print("ready", flush=True)
while stop_at is None or time.monotonic() < stop_at:
    now = time.monotonic()
    if stop_at is None and now >= nxt:
        req = struct.pack("!BBHHH", 8, 0, 0, ident, sent & 0xFFFF) + b"sgflows!"
        s.sendto(req[:2] + struct.pack("!H", csum(req)) + req[4:], (dst, 0))
        sent += 1
        nxt += interval
    wait = max(0.0, min(nxt, stop_at or nxt) - time.monotonic())
    readable = select.select([s, sys.stdin] if stop_at is None else [s], [], [], wait)[0]
    if sys.stdin in readable:
        sys.stdin.readline()
        stop_at = time.monotonic() + 3.0  # stragglers
    if s in readable:
        data = s.recv(65535)
        data = data[(data[0] & 15) * 4:]
        t, _, _, i, seq = struct.unpack("!BBHHH", data[:8])
        if t == 0 and i == ident:
            got.add(seq)
missing = sorted(set(range(sent)) - got)
print(sent, len(got), missing[:20], flush=True)
"""


@contextlib.contextmanager
def ping_flood(src: Namespace, dst: str, interval: float = 0.02) -> Iterator[list[int]]:
    """ICMP echo every ``interval`` s until the block ends; yields ``[sent, received]``
    (filled in at the end, after 3 s for late replies)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", src.name, sys.executable, "-u", "-c", _FLOOD, dst, str(interval)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    counts: list[int] = []
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield counts
        assert proc.stdin is not None
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        sent, received, missing = proc.stdout.readline().split(" ", 2)
        counts.extend([int(sent), int(received)])
        if int(sent) != int(received):
            print("missing echo sequence numbers:", missing)
    finally:
        proc.kill()
        proc.wait()


def test_no_packet_lost_while_rules_members_and_ports_change(
    lab: Lab, neutron_ovs: PrivateOVS
) -> None:
    driver = lab.driver
    extra = [tcp_in(7000, remote_group_id="client"), tcp_in(9000)]
    # 200 echoes a second: the changes take well under a second now that a batch reads its
    # ports' OVSDB facts at once, and the flood must still sample them densely (> 50 sent).
    flood = ping_flood(lab.vm1, lab.vm2.ip4, interval=0.005)
    with flood as counts, held_connection(lab.vm1, lab.vm2, 8080) as say:
        for i in range(12):
            with driver.defer_apply():  # an agent batch
                driver.update_security_group_rules("server", SERVER + extra[: i % 3])
                members = [(lab.vm1.ip4, lab.vm1.mac)] + [(f"10.0.1.{i}", None)] * (i % 2)
                driver.update_security_group_members("client", {"IPv4": members})
            # Outside a batch: one port's groups change (its table-60 flow is replaced).
            groups = ("server", "extra") if i % 2 else ("server",)
            driver.update_security_group_rules("extra", [tcp_in(6000)])
            driver.update_port_filter(lab.ports(groups)[1])
            if i == 6:  # a full reinstall (what OVS_RESTARTED does), under traffic
                registry.publish(resources.AGENT, events.OVS_RESTARTED, None,
                                 payload=events.EventPayload(None))  # fmt: skip
            assert say(f"line {i}") == f"line {i}", i  # the established connection lives
    sent, received = counts
    print(f"ping flood: {sent} sent, {received} answered")
    assert sent > 50 and received == sent, counts


def test_a_stateless_port_needs_rules_both_ways(lab: Lab) -> None:
    vm1, vm3 = lab.vm1, lab.vm3
    reply = f"tcp,nw_src={vm3.ip4},nw_dst={vm1.ip4},tcp_src=8080,tcp_dst=40000"
    assert not allowed(lab, "vm3", "egress", reply)
    with vm3.tcp_server(port=8080) as srv:
        # The SYN gets in, but the SYN-ACK has no egress rule: no conntrack to let it out.
        assert vm1.tcp_request(vm3.ip4, srv.port, b"x", timeout=0.5) is None
        lab.driver.update_security_group_rules("bare", [*BARE, rule("egress", False,
                                                                    protocol="tcp")])  # fmt: skip
        assert allowed(lab, "vm3", "egress", reply)
        assert vm1.tcp_request(vm3.ip4, srv.port, b"x", timeout=3.0) == b"echo:x"
