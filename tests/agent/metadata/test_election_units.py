"""Parts of the election that need no namespace: frames, rules, timers, proxy hooks."""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import struct
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mdhelpers import BOOTSTRAP
from sgflows.agent import privileged
from sgflows.agent.election import (
    TIMER_HELP,
    ElectionTimers,
    claim_lifetime,
    collision_backoff,
    conflict_winner,
    dad_disabled,
    dad_time,
    mac_key,
)
from sgflows.agent.metadata_proxy import CommandProxy, HTTPMetadataProxy, ProxyContext

MD_A = ipaddress.IPv6Address("fe80::a9fe:a9fe")
MD = MD_A.packed
OTHER = ipaddress.IPv6Address("fe80::1").packed


def frame(icmp_type: int, src: bytes, target: bytes, mac: str = "02:00:00:00:00:07") -> bytes:
    eth = b"\x33\x33\x00\x00\x00\x01" + bytes.fromhex(mac.replace(":", "")) + b"\x86\xdd"
    icmp = struct.pack("!BBHI", icmp_type, 0, 0, 0) + target
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), 58, 255) + src + MD
    return eth + ip6 + icmp


def test_nd_frames_are_classified() -> None:
    mac = "02:00:00:00:00:07"
    assert privileged.parse_nd_frame(frame(136, MD, MD)) == ("na", mac, str(MD_A), str(MD_A))
    assert privileged.parse_nd_frame(frame(136, OTHER, OTHER)) is None  # NA for another address
    assert privileged.parse_nd_frame(frame(135, bytes(16), MD))[0] == "probe"  # type: ignore[index]
    assert privileged.parse_nd_frame(frame(135, MD, OTHER))[0] == "ns-from"  # type: ignore[index]
    assert privileged.parse_nd_frame(frame(135, OTHER, MD))[0] == "ns"  # type: ignore[index]
    assert privileged.parse_nd_frame(frame(135, OTHER, OTHER)) is None
    assert privileged.parse_nd_frame(frame(128, MD, MD)) is None  # echo request
    assert privileged.parse_nd_frame(frame(136, MD, MD)[:70]) is None  # truncated


def test_unsolicited_na_has_override_and_our_mac() -> None:
    na = privileged._icmpv6_na("02:aa:bb:cc:dd:ee")
    icmp_type, code, _csum, flags = struct.unpack("!BBHI", na[:8])
    assert (icmp_type, code) == (136, 0)
    assert flags & 0x20000000  # override
    assert not flags & 0x40000000  # not solicited
    assert not flags & 0x80000000  # not a router
    assert na[8:24] == MD
    assert na[24:] == b"\x02\x01\x02\xaa\xbb\xcc\xdd\xee"  # target link-layer address option


macs = st.lists(
    st.integers(min_value=0, max_value=2**48 - 1).map(
        lambda n: ":".join(f"{b:02x}" for b in n.to_bytes(6, "big"))
    ),
    min_size=2,
    max_size=6,
    unique=True,
)


@settings(deadline=None, derandomize=True)
@given(macs, st.randoms())
def test_lowest_mac_keeps_whatever_the_order(ms: list[str], rnd: random.Random) -> None:
    shuffled = ms[:]
    rnd.shuffle(shuffled)
    winner = conflict_winner(shuffled)
    assert winner == conflict_winner(ms)
    assert all(mac_key(winner) <= mac_key(m) for m in ms)


def test_lowest_mac_compares_numerically() -> None:
    assert conflict_winner(["0a:00:00:00:00:00", "09:ff:ff:ff:ff:ff"]) == "09:ff:ff:ff:ff:ff"
    assert conflict_winner(["AA:00:00:00:00:01", "aa:00:00:00:00:00"]) == "aa:00:00:00:00:00"


@settings(deadline=None, derandomize=True)
@given(
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=0, max_value=2**32),
    st.floats(min_value=0.05, max_value=10.0),
    st.integers(min_value=0, max_value=3),
)
def test_collision_backoff_waits_a_dad_time_and_orders_by_mac(
    n: int, seed: int, dad: float, rank: int
) -> None:
    t = ElectionTimers(backoff_base=0.1, backoff_max=2.0)
    rng = random.Random(seed)
    spread = min(2.0, 0.1 * 2**n)
    for _ in range(20):
        wait = collision_backoff(t, n, dad, rank, rng)
        # Every probe in flight when we collided has finished before we retry...
        low = dad + rank * (dad + spread)
        assert low <= wait <= low + spread
        # ...and the next rank starts only once this rank's probe (one DAD) is over.
        assert wait + dad <= collision_backoff(t, n, dad, rank + 1, rng)


def test_dad_time_from_the_interface_sysctls() -> None:
    kernel = {
        "accept_dad": 1,
        "dad_transmits": 1,
        "retrans_time_ms": 1000,
        "router_solicitation_delay": 1,
    }
    assert dad_time(kernel) == 2.0
    assert dad_time({**kernel, "dad_transmits": 3, "router_solicitation_delay": 0}) == 3.0
    assert dad_time(None) == 2.0  # unknown: the kernel defaults
    assert not dad_disabled(kernel) and not dad_disabled(None)
    assert dad_disabled({**kernel, "accept_dad": 0})
    assert dad_disabled({**kernel, "dad_transmits": 0})
    t = ElectionTimers(lease=3, lease_renew=1.0)
    assert claim_lifetime(t, 2.0) == 3  # the lease outlives a default DAD
    assert claim_lifetime(t, 4.5) == 6  # a probe's address outlives its DAD


def test_every_timer_has_help() -> None:
    fields = set(ElectionTimers.__dataclass_fields__)
    assert set(TIMER_HELP) == fields


def test_timers_are_validated() -> None:
    with pytest.raises(ValueError):
        ElectionTimers(lease=2, lease_renew=2.0)
    with pytest.raises(ValueError):
        ElectionTimers(probe_interval=0)
    d = ElectionTimers()
    # The documented default bound: a clean failover within probe interval + jitter + DAD.
    assert d.probe_interval + d.probe_jitter + 2.0 < 10.0
    assert d.lease + 1 + d.probe_interval + d.probe_jitter + 2.0 < 10.0


@pytest.fixture
def loopback_listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def ctx_for(sock: socket.socket) -> ProxyContext:
    return ProxyContext("net-x", "ns-x", "eth0", "127.0.0.1", sock.getsockname()[1], sock)


def get(sock: socket.socket, path: str = "/x") -> tuple[int, Any]:
    host, port = sock.getsockname()[:2]
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as resp:
        return resp.status, json.loads(resp.read())


def test_command_proxy_runs_argv_without_a_shell(
    loopback_listener: socket.socket, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hostile = f"x; touch {marker}; $(touch {marker})"
    hook = CommandProxy(
        [
            sys.executable,
            "-c",
            BOOTSTRAP + "from sgflows.agent import metadata_proxy as m; m.main()",
            "--listen-fd",
            "{listen_fd}",
            "--network-id",
            "{network_id}",
            "--name",
            hostile,
        ]
    )
    handle = hook(ctx_for(loopback_listener))
    try:
        status, doc = get(loopback_listener, "/openstack/latest/meta_data.json")
        assert status == 200
        assert doc["server"] == hostile  # one literal argument, never interpreted
        assert doc["network_id"] == "net-x"
        assert doc["path"] == "/openstack/latest/meta_data.json"
        assert handle.alive()
    finally:
        handle.stop()
    assert not handle.alive()
    assert not marker.exists()


def test_command_proxy_refuses_a_command_string() -> None:
    with pytest.raises(TypeError):
        CommandProxy("metadata-proxy --port 80")
    with pytest.raises(TypeError):
        CommandProxy([])


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_proxy_forwards_to_upstream(loopback_listener: socket.socket) -> None:
    upstream = HTTPServer(("127.0.0.1", 0), _Upstream)
    t = threading.Thread(target=upstream.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{upstream.server_address[1]}"
        handle = HTTPMetadataProxy("agent-x", upstream=url)(ctx_for(loopback_listener))
        try:
            status, doc = get(loopback_listener, "/latest/meta-data/instance-id")
            assert status == 200
            assert doc["path"] == "/latest/meta-data/instance-id"
            headers = {k.lower(): v for k, v in doc["headers"].items()}
            assert headers["x-neutron-network-id"] == "net-x"
            assert headers["x-forwarded-for"] == "127.0.0.1"
        finally:
            handle.stop()
        assert not handle.alive()
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_http_proxy_reports_a_dead_upstream(loopback_listener: socket.socket) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    handle = HTTPMetadataProxy("a", upstream=f"http://127.0.0.1:{port}", upstream_timeout=2)(
        ctx_for(loopback_listener)
    )
    try:
        host, lport = loopback_listener.getsockname()[:2]
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://{host}:{lport}/", timeout=5)
        assert exc.value.code == 502
    finally:
        handle.stop()


def test_argument_checks_of_the_privileged_side() -> None:
    for ns in ("..", "a/b", "", "x" * 65):
        with pytest.raises(privileged.PrivilegedError):
            privileged._check(ns, "eth0")
    for ifname in ("", "a" * 16, "eth0/..", "eth 0"):
        with pytest.raises(privileged.PrivilegedError):
            privileged._check("sgmd-nonexistent", ifname)
    with pytest.raises(privileged.PrivilegedError):
        privileged._check("sgmd-does-not-exist", "eth0")
