"""Real packets between network namespaces through the compiled flows on a userspace Open
vSwitch: ping, TCP, DHCP (dnsmasq + udhcpc, and DHCPv6) and a metadata HTTP server pass or
fail as the rules say. Each scenario also asks the evaluator, so that the model, the flows
and the kernel's packets tell one story.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sgflows
from support import wait_for
from support.connection import held_connection
from support.netns import Namespace, NetnsFactory
from support.ovs import Bridge, PrivateOVS

pytestmark = [pytest.mark.ovs, pytest.mark.netns]

VLAN = 5


def rule(direction: str, ethertype: str = "IPv4", **fields: Any) -> dict[str, Any]:
    return {"direction": direction, "ethertype": ethertype, **fields}


def vm(ns: Namespace, groups: list[str], owner: str = "compute:nova") -> dict[str, Any]:
    """The model's port for a namespace: its MAC, addresses and OpenFlow number."""
    ips = [a.split("/")[0] for a in (ns.ipv4, ns.ipv6) if a]
    return {
        "id": ns.name,
        "mac_address": ns.mac,
        "fixed_ips": ips,
        "security_groups": groups,
        "device_owner": owner,
        "network_id": "net",
        "ofport": ns.ofport,
    }


def model(groups: dict[str, tuple[bool, list[dict[str, Any]]]], *ports: dict[str, Any]) -> dict:
    return {
        "security_groups": {g: {"stateful": s, "rules": r} for g, (s, r) in groups.items()},
        "networks": {"net": {"local_vlan": VLAN}},
        "ports": list(ports),
    }


def apply(bridge: Bridge, m: dict[str, Any]) -> None:
    """Replace the bridge's flows with the model's, and drop the datapath's cached megaflows
    (OVS revalidates them asynchronously: a packet right after a change could ride an old one)."""
    bridge.replace_flows(sgflows.compile(m).to_ofctl())
    bridge.ovs.unixctl("revalidator/purge")


def allowed(m: dict[str, Any], port: str, direction: str, packet: str) -> bool:
    return sgflows.evaluate(m, packet, port=port, direction=direction).allowed  # type: ignore[arg-type]


@contextlib.contextmanager
def process(ns: Namespace, *argv: str) -> Iterator[subprocess.Popen[str]]:
    proc = ns.popen(*argv)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_stateful_rules_decide_ping_and_tcp(bridge: Bridge, netns_factory: NetnsFactory) -> None:
    a = netns_factory(bridge, 1, ipv4="10.71.0.1/24", ipv6="fd00:71::1/64")
    b = netns_factory(bridge, 2, ipv4="10.71.0.2/24", ipv6="fd00:71::2/64")
    groups = {
        "client": (True, [rule("egress"), rule("egress", "IPv6")]),
        "server": (
            True,
            [
                rule("ingress", protocol="tcp", port_range_min=8080, port_range_max=8080),
                rule("ingress", protocol="icmp", port_range_min=8),
                rule("ingress", "IPv6", protocol="icmp", port_range_min=128),
            ],
        ),
    }
    m = model(groups, vm(a, ["client"]), vm(b, ["server"]))
    apply(bridge, m)
    syn = f"tcp,nw_src={a.ip4},nw_dst={b.ip4},tcp_dst="
    assert allowed(m, b.name, "ingress", syn + "8080")
    assert not allowed(m, b.name, "ingress", syn + "9090")

    assert a.ping(b.ip4) and a.ping(b.ip6)  # replies pass without a reverse rule
    assert not b.ping(a.ip4, timeout=0.5)  # b has no egress rule
    assert not b.ping(a.ip6, timeout=0.5)
    with b.tcp_server(port=8080) as ok, b.tcp_server(port=9090) as closed:
        assert a.tcp_request(b.ip4, ok.port, b"hi") == b"echo:hi"
        assert a.tcp_request(b.ip6, ok.port, b"v6") is None  # the rule is IPv4 only
        assert a.tcp_request(b.ip4, closed.port, timeout=0.5) is None
    with a.tcp_server(port=8080) as back:
        assert b.tcp_request(a.ip4, back.port, timeout=0.5) is None


def test_stateless_return_traffic_needs_a_rule(bridge: Bridge, netns_factory: NetnsFactory) -> None:
    a = netns_factory(bridge, 1, ipv4="10.72.0.1/24")
    b = netns_factory(bridge, 2, ipv4="10.72.0.2/24")
    client = [rule("egress", protocol="tcp", port_range_min=8080)]
    server = [rule("ingress", protocol="tcp", port_range_min=8080)]
    back_in, back_out = rule("ingress", protocol="tcp"), rule("egress", protocol="tcp")
    steps = [
        (client, server, False),  # the SYN-ACK has no rule at b's egress
        (client, [*server, back_out], False),  # nor at a's ingress
        ([*client, back_in], [*server, back_out], True),
    ]
    with b.tcp_server(port=8080) as srv:
        for client_rules, server_rules, works in steps:
            m = model(
                {"c": (False, client_rules), "s": (False, server_rules)},
                vm(a, ["c"]),
                vm(b, ["s"]),
            )
            apply(bridge, m)
            reply = f"tcp,nw_src={b.ip4},nw_dst={a.ip4},tcp_src=8080,tcp_dst=40000"
            assert works == (
                allowed(m, b.name, "egress", reply) and allowed(m, a.name, "ingress", reply)
            )
            got = a.tcp_request(b.ip4, srv.port, b"x", timeout=1.0 if works else 0.5)
            assert got == (b"echo:x" if works else None)


def test_removing_a_rule_ends_an_established_connection(
    ovs: PrivateOVS, bridge: Bridge, netns_factory: NetnsFactory
) -> None:
    a = netns_factory(bridge, 1, ipv4="10.73.0.1/24")
    b = netns_factory(bridge, 2, ipv4="10.73.0.2/24")
    ssh = rule("ingress", protocol="tcp", port_range_min=8022)
    with_rule = model(
        {"c": (True, [rule("egress")]), "s": (True, [ssh])}, vm(a, ["c"]), vm(b, ["s"])
    )
    without = model({"c": (True, [rule("egress")]), "s": (True, [])}, vm(a, ["c"]), vm(b, ["s"]))
    apply(bridge, with_rule)
    packet = f"tcp,nw_src={a.ip4},nw_dst={b.ip4},tcp_dst=8022"
    assert sgflows.evaluate(without, packet, port=b.name, ct="est").kind == "conntrack"

    with held_connection(a, b, 8022, reply_timeout=1.0) as say:
        assert say("one") == "one"
        assert say("two") == "two"
        apply(bridge, without)  # the rule is gone: the established connection ends
        assert say("three") == "timeout"
        assert say("four") == "timeout"
    conntrack = ovs.unixctl("dpctl/dump-conntrack", f"zone={VLAN}")
    marked = [ln for ln in conntrack.splitlines() if "dport=8022" in ln]
    assert marked and all("mark=1" in ln for ln in marked), conntrack
    assert a.tcp_request(b.ip4, 8022, timeout=0.5) is None  # and no new one starts


_UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "lease $ip" >> "$(dirname "$0")/leases.txt"
exit 0
"""

_DHCP6_CLIENT = r"""
import os, socket, struct, sys
ifname, timeout = sys.argv[1], float(sys.argv[2])
duid = struct.pack("!HH", 3, 1) + bytes.fromhex(sys.argv[3].replace(":", ""))
def opt(code, data): return struct.pack("!HH", code, len(data)) + data
def options(data):
    while len(data) >= 4:
        code, n = struct.unpack("!HH", data[:4]); yield code, data[4:4 + n]; data = data[4 + n:]
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
s.bind(("::", 546)); s.settimeout(timeout)
scope = socket.if_nametoindex(ifname)
ia = opt(3, struct.pack("!III", 1, 0, 0))
def ask(kind, extra=b""):
    xid = os.urandom(3)
    s.sendto(bytes([kind]) + xid + opt(1, duid) + opt(8, b"\0\0") + ia + extra,
             ("ff02::1:2", 547, 0, scope))
    while True:
        data, _ = s.recvfrom(2048)
        if data[1:4] == xid:
            return data
adv = ask(1)  # SOLICIT -> ADVERTISE
server = dict(options(adv[4:]))[2]
reply = ask(3, opt(2, server))  # REQUEST -> REPLY
for code, data in options(reply[4:]):
    if code == 3:
        for c2, d2 in options(data[12:]):
            if c2 == 5:
                print("lease", socket.inet_ntop(socket.AF_INET6, d2[:16]))
"""


def test_dhcp_and_dhcpv6_on_a_stateless_port_without_rules(
    bridge: Bridge, netns_factory: NetnsFactory, tmp_path: Path
) -> None:
    server = netns_factory(bridge, 3, ipv4="10.74.0.2/24", ipv6="fd00:74::2/64")
    client = netns_factory(bridge, 4)  # no address yet: DHCP gives it one
    leased4, leased6 = "10.74.0.11", "fd00:74::11"
    port = vm(client, ["empty"]) | {"fixed_ips": [leased4, leased6]}
    m = model({"empty": (False, [])}, vm(server, [], owner="network:dhcp"), port)
    apply(bridge, m)
    discover = "udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,udp_src=68,udp_dst=67"
    assert sgflows.evaluate(m, discover, port=client.name, direction="egress").kind == "implicit"

    script = tmp_path / "udhcpc.sh"
    script.write_text(_UDHCPC_SCRIPT)
    script.chmod(0o755)
    dnsmasq = (
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--port=0", "--interface=eth0", "--bind-interfaces", "--user=root",
        f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}", f"--pid-file={tmp_path / 'pid'}",
        "--dhcp-range=10.74.0.10,10.74.0.20,255.255.255.0,1h",
        "--dhcp-range=fd00:74::10,fd00:74::20,64,1h",
        f"--dhcp-host={client.mac},{leased4},[{leased6}]",
    )  # fmt: skip
    with process(server, *dnsmasq):
        out = client.exec(
            "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "8", "-T", "1", "-s", str(script),
            timeout=30,
        )  # fmt: skip
        assert (tmp_path / "leases.txt").read_text().split() == ["lease", leased4], out.stdout
        # DHCPv6 from the link-local address (kernel EUI-64 of the MAC, as the model allows).
        wait_for(
            lambda: (
                "tentative" not in client.exec("ip", "-6", "addr", "show", "dev", "eth0").stdout
            ),
            10,
            "the client's link-local address",
        )
        v6 = client.python(_DHCP6_CLIENT, "eth0", "2", client.mac, timeout=30)
        assert v6.split() == ["lease", leased6]
    # The port has no rules: everything but the network services stays blocked.
    client.exec("ip", "addr", "add", f"{leased4}/24", "dev", "eth0")
    assert not client.ping(server.ip4, timeout=0.5)


_GET = r"""
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())
except OSError as exc:
    reason = getattr(exc, "reason", exc)  # urllib wraps the socket's error
    print("failed", "timeout" if isinstance(reason, TimeoutError) else repr(reason))
"""


@pytest.mark.parametrize("stateful", [True, False], ids=["stateful", "stateless"])
def test_metadata_needs_an_explicit_rule(
    bridge: Bridge, netns_factory: NetnsFactory, tmp_path: Path, stateful: bool
) -> None:
    meta = netns_factory(bridge, 5, ipv4="169.254.169.254/16")
    guest = netns_factory(bridge, 6, ipv4="10.75.0.5/24")
    guest.exec("ip", "route", "add", "169.254.169.254/32", "dev", "eth0")
    meta.exec("ip", "route", "add", "10.75.0.0/24", "dev", "eth0")
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "meta-data").write_text("instance-id: i-sgflows\n")
    http = (sys.executable, "-m", "http.server", "80", "--bind", meta.ip4, "--directory")
    egress = rule(
        "egress", protocol="tcp", port_range_min=80, remote_ip_prefix="169.254.169.254/32"
    )
    ingress = rule("ingress", protocol="tcp", remote_ip_prefix="169.254.169.254/32")
    steps: list[tuple[list[dict[str, Any]], bool]] = [
        ([rule("egress", protocol="tcp", remote_ip_prefix="10.0.0.0/8")], False),
        ([egress], stateful),  # stateless: the server's reply needs an ingress rule too
        ([egress, ingress], True),
    ]
    url = "http://169.254.169.254/latest/meta-data"
    with process(meta, *http, str(tmp_path)):
        wait_for(lambda: "instance-id" in meta.python(_GET, url, "1"), 10, "the metadata server")
        for rules, works in steps:
            m = model(
                {"g": (stateful, rules)},
                vm(meta, [], owner="network:dhcp"),
                vm(guest, ["g"]),
            )
            apply(bridge, m)
            request = "tcp,nw_dst=169.254.169.254,tcp_src=40000,tcp_dst=80"
            assert allowed(m, guest.name, "egress", request) == (rules != steps[0][0])
            got = guest.python(_GET, url, "1.5" if works else "0.7").strip()
            assert got == ("instance-id: i-sgflows" if works else "failed timeout"), rules


_UDP_LISTEN = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
got = []
try:
    while True:
        data, addr = s.recvfrom(2048)
        got.append(f"{addr[0]}={data.decode()}")
except OSError:
    pass
print(" ".join(got), flush=True)
"""

_UDP_SEND = r"""
import socket, sys
src, dst, sport, dport, payload = sys.argv[1:6]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, int(sport)))
s.sendto(payload.encode(), (dst, int(dport)))
"""


def _listen(ns: Namespace, argv: list[str]) -> subprocess.Popen[str]:
    proc = ns.popen(*argv)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


def test_dhcp_client_traffic_from_a_forged_source_is_dropped(
    bridge: Bridge, netns_factory: NetnsFactory
) -> None:
    """DHCP client packets (UDP 68→67) pass only from a permitted source (or 0.0.0.0, which
    the dnsmasq test above covers): a VM cannot reach port 67 of a host with a forged source
    (Neutron's functional test_ip_spoofing)."""
    server = netns_factory(bridge, 3, ipv4="10.75.0.2/24")
    client = netns_factory(bridge, 4, ipv4="10.75.0.11/24")
    forged = "10.75.0.99"
    client.exec("ip", "addr", "add", f"{forged}/24", "dev", "eth0")
    client.add_neighbor(server.ip4, server.mac)
    m = model({"empty": (False, [])}, vm(server, [], owner="network:dhcp"), vm(client, ["empty"]))
    apply(bridge, m)
    request = f"udp,nw_dst={server.ip4},udp_src=68,udp_dst=67,nw_src="
    assert allowed(m, client.name, "egress", request + client.ip4)
    assert not allowed(m, client.name, "egress", request + forged)

    listener = _listen(server, [sys.executable, "-c", _UDP_LISTEN, "67", "2"])
    try:
        for src, tag in ((client.ip4, "own"), (forged, "forged")):
            client.python(_UDP_SEND, src, server.ip4, "68", "67", tag)
        out, _ = listener.communicate(timeout=15)
    finally:
        listener.kill()
    assert out.split() == [f"{client.ip4}=own"]


_RARP_LISTEN = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x8035))
s.bind(("eth0", 0x8035))
s.settimeout(float(sys.argv[1]))
print("ready", flush=True)
got = []
try:
    while True:
        frame = s.recv(2048)
        got.append(frame[6:12].hex(":"))
except OSError:
    pass
print(" ".join(got), flush=True)
"""

# A RARP "request reverse" as QEMU sends after a live migration: sender = target = the MAC.
_RARP_SEND = r"""
import socket, sys
mac = bytes.fromhex(sys.argv[1].replace(":", ""))
body = bytes.fromhex("0001080006040003") + mac + bytes(4) + mac + bytes(4)
frame = b"\xff" * 6 + mac + b"\x80\x35" + body
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
s.send(frame.ljust(60, b"\0"))
"""


def test_rarp_from_the_ports_mac_reaches_the_uplink(
    bridge: Bridge, netns_factory: NetnsFactory
) -> None:
    """QEMU announces a migrated guest with RARP from its MAC: it must leave the host (here an
    unfiltered port stands for the uplink, which NORMAL floods to); RARP from a MAC the port
    does not own is dropped. A VM of the same host gets it from NORMAL like any broadcast
    (without filter_local_flood, as documented in docs/pipeline.md)."""
    uplink = netns_factory(bridge, 5)
    guest = netns_factory(bridge, 6, ipv4="10.76.0.6/24")
    neighbour = netns_factory(bridge, 7, ipv4="10.76.0.7/24")
    foreign = "02:00:00:00:77:77"
    open_port = vm(uplink, []) | {"port_security_enabled": False}
    ports = (open_port, vm(guest, ["empty"]), vm(neighbour, ["empty"]))
    m = model({"empty": (True, [])}, *ports)
    apply(bridge, m)
    assert allowed(m, guest.name, "egress", "rarp,dl_dst=ff:ff:ff:ff:ff:ff")
    assert not allowed(m, guest.name, "egress", f"rarp,dl_src={foreign}")

    listeners = [
        _listen(ns, [sys.executable, "-c", _RARP_LISTEN, "2"]) for ns in (uplink, neighbour)
    ]
    try:
        for mac in (guest.mac, foreign):
            guest.python(_RARP_SEND, mac)
        outs = [proc.communicate(timeout=15)[0] for proc in listeners]
    finally:
        for proc in listeners:
            proc.kill()
    assert [out.split() for out in outs] == [[guest.mac], [guest.mac]]
