"""Network namespaces wired to a private OVS bridge, for tests with real packets.

Each ``Namespace`` has one veth pair: ``eth0`` inside (MAC, IPv4, IPv6 without DAD, transmit
checksum offload off: partial checksums make userspace conntrack mark TCP SYNs invalid) and a
host end that becomes an OVS port with ``ofport_request``. The host end lives where the
switch's ovs-vswitchd runs (``PrivateOVS.netns``, its own namespace by default), with no
addresses of its own (``addrgenmode none``: no IPv6 router solicitations or DAD on the port).
Everything runs through ``ip netns exec``, so nothing but iproute2, ethtool and this
interpreter is needed: ``ping`` and TCP client/server are small Python scripts run inside.

    factory = NetnsFactory()
    a = factory(bridge, 1, ipv4="10.0.0.1/24", ipv6="fd00::1/64")
    b = factory(bridge, 2, ipv4="10.0.0.2/24", ipv6="fd00::2/64")
    assert a.ping(b.ip4)
    with b.tcp_server() as srv:
        assert a.tcp_request(b.ip4, srv.port, b"hi") == b"echo:hi"
    factory.cleanup()
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import secrets
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from . import CommandError, record, require_tools, run, unique_name

if TYPE_CHECKING:
    from .ovs import Bridge

LOG = logging.getLogger(__name__)

__all__ = ["Namespace", "NetnsFactory", "TcpServer", "link_exists"]

TOOLS = ("ip", "ethtool")

_PING = r"""
import os, select, socket, struct, sys, time
dst, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
ident = os.getpid() & 0xFFFF
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF
got = 0
for seq in range(count):
    req = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, ident, seq) + b"sgflows!"
    if not v6:  # the kernel fills in ICMPv6 checksums itself
        req = req[:2] + struct.pack("!H", csum(req)) + req[4:]
    s.sendto(req, (dst, 0))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]:
            break
        data = s.recv(65535)
        if not v6:
            data = data[(data[0] & 15) * 4:]
        t, _, _, i, sq = struct.unpack("!BBHHH", data[:8])
        if t == (129 if v6 else 0) and i == ident and sq == seq:
            got += 1
            break
print(got)
"""

_TCP_SERVER = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(64)
print(s.getsockname()[1], flush=True)
while True:
    c, addr = s.accept()
    c.settimeout(10)
    with c:
        data = b""
        try:
            while chunk := c.recv(65536):
                data += chunk
            c.sendall(b"echo:" + data)
        except OSError as exc:
            print("error", addr[0], exc, flush=True)
            continue
    print("conn", addr[0], len(data), flush=True)
"""

_TCP_CLIENT = r"""
import socket, sys
dst, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
payload = sys.stdin.read().strip()
try:
    c = socket.create_connection((dst, port), timeout=timeout)
    c.sendall(bytes.fromhex(payload))
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while chunk := c.recv(65536):
        reply += chunk
except OSError as exc:
    print("ERR", type(exc).__name__, exc)
    sys.exit(3)
print(reply.hex())
"""


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


class TcpServer:
    """An echo server in a namespace: replies ``b"echo:" + everything received``.

    ``port`` is the port it bound (0 asks the kernel for a free one). Use as a context manager
    or call ``stop()``; ``log()`` returns its lines after stopping (``conn ADDR NBYTES``).
    """

    def __init__(self, ns: Namespace, host: str = "::", port: int = 0, timeout: float = 5.0):
        self.ns = ns
        self.proc = ns.popen(sys.executable, "-u", "-c", _TCP_SERVER, host, str(port))
        assert self.proc.stdout is not None
        ready = select.select([self.proc.stdout], [], [], timeout)[0]
        line = self.proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"TCP server in {ns.name} did not start: {line!r}{self._rest()}")
        self.port = int(line)
        self._lines: list[str] = []

    def _rest(self) -> str:
        with contextlib.suppress(Exception):
            out, err = self.proc.communicate(timeout=1)
            return f"{out}{err}"
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, _ = self.proc.communicate(timeout=5)
            self._lines = (out or "").splitlines()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self in self.ns.servers:
            self.ns.servers.remove(self)

    def log(self) -> list[str]:
        return list(getattr(self, "_lines", []))

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class Namespace:
    """A network namespace with ``eth0``; the veth's host end may be a bridge port."""

    name: str
    host_ifname: str
    mac: str
    ipv4: str | None = None  # with prefix length, e.g. "10.0.0.1/24"
    ipv6: str | None = None  # e.g. "fd00::1/64"
    ifname: str = "eth0"
    bridge: Bridge | None = None
    ofport: int | None = None
    host_netns: str | None = None  # where host_ifname lives (None: the test process's)
    servers: list[TcpServer] = field(default_factory=list, repr=False)

    @property
    def ip4(self) -> str:
        if self.ipv4 is None:
            raise ValueError(f"{self.name} has no IPv4 address")
        return self.ipv4.split("/")[0]

    @property
    def ip6(self) -> str:
        if self.ipv6 is None:
            raise ValueError(f"{self.name} has no IPv6 address")
        return self.ipv6.split("/")[0]

    def exec(
        self, *argv: str, check: bool = True, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace; ``CommandError`` on failure if ``check``."""
        return run(
            "ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout, input=input
        )

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        """Start ``argv`` inside the namespace (text pipes for stdout/stderr).

        The caller stops it; it also gets SIGTERM if the test process dies.
        """
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )

    def python(self, code: str, *args: str, timeout: float = 30.0) -> str:
        """Run Python ``code`` (with ``sys.argv[1:] = args``) inside; return its stdout."""
        return self.exec(sys.executable, "-c", code, *args, timeout=timeout).stdout

    def ping(self, dst: str, *, count: int = 1, timeout: float = 1.0) -> bool:
        """ICMP/ICMPv6 echo to ``dst``; True if every one of ``count`` requests got a reply."""
        return self.ping_count(dst, count=count, timeout=timeout) == count

    def ping_count(self, dst: str, *, count: int = 1, timeout: float = 1.0) -> int:
        """Number of echo replies received for ``count`` requests (``timeout`` each)."""
        out = self.python(_PING, dst, str(count), str(timeout), timeout=count * timeout + 10)
        return int(out.strip())

    def tcp_server(self, host: str = "::", port: int = 0) -> TcpServer:
        """Start an echo server (``::`` also accepts IPv4); stop it or use ``with``."""
        server = TcpServer(self, host, port)
        self.servers.append(server)
        return server

    def tcp_request(
        self, dst: str, port: int, payload: bytes = b"hello", *, timeout: float = 2.0
    ) -> bytes | None:
        """Connect, send ``payload``, half-close, return the reply; None if it failed."""
        proc = self.exec(
            sys.executable, "-c", _TCP_CLIENT, dst, str(port), str(timeout),
            input=payload.hex(), check=False, timeout=timeout * 3 + 10,
        )  # fmt: skip
        if proc.returncode == 3:
            LOG.info("%s -> %s:%s: %s", self.name, dst, port, proc.stdout.strip())
            return None
        if proc.returncode != 0:
            raise CommandError(proc.args, proc.returncode, proc.stdout, proc.stderr)
        return bytes.fromhex(proc.stdout.strip())

    def add_neighbor(self, ip: str, mac: str) -> None:
        """A permanent ARP/ND entry, so tests need not let ARP or ND through."""
        self.exec(
            "ip", "neigh", "replace", ip, "lladdr", mac, "dev", self.ifname, "nud", "permanent"
        )

    def delete(self) -> None:
        """Stop servers, remove the OVS port, delete the namespace (and so the veth pair)."""
        for server in list(self.servers):
            server.stop()
        if self.bridge is not None and self.bridge.ovs.running:
            with contextlib.suppress(Exception):
                self.bridge.del_port(self.host_ifname)
        run("ip", "netns", "del", self.name, check=False)  # takes the veth pair along
        if link_exists(self.host_ifname, self.host_netns):
            run(*_ip(self.host_netns), "link", "del", self.host_ifname, check=False)


def _ip(netns: str | None) -> tuple[str, ...]:
    return ("ip", "-n", netns) if netns else ("ip",)


def link_exists(name: str, netns: str | None = None) -> bool:
    """Whether device ``name`` exists in ``netns`` (None: the test process's namespace)."""
    return run(*_ip(netns), "link", "show", "dev", name, check=False).returncode == 0


class NetnsFactory:
    """Creates namespaces with unique names and deletes them all in ``cleanup()``."""

    def __init__(self) -> None:
        require_tools(*TOOLS)
        self.namespaces: list[Namespace] = []

    def __call__(
        self,
        bridge: Bridge | None = None,
        ofport: int | None = None,
        *,
        ipv4: str | None = None,
        ipv6: str | None = None,
        mac: str | None = None,
        tx_checksum: bool = False,
    ) -> Namespace:
        """A namespace whose veth host end is port ``ofport`` of ``bridge`` (if given).

        ``mac`` defaults to ``02:00:00:00:HH:LL`` from ``ofport`` (random without one).
        ``tx_checksum=False`` runs ``ethtool -K eth0 tx off`` (TCP through userspace OVS).
        """
        if (bridge is None) != (ofport is None):
            raise ValueError("give both bridge and ofport, or neither")
        name = unique_name("sgn")
        host = unique_name("sgv")
        if mac is None:
            if ofport is not None:
                mac = f"02:00:00:00:{ofport >> 8 & 0xFF:02x}:{ofport & 0xFF:02x}"
            else:
                rnd = secrets.token_hex(5)
                mac = "02:" + ":".join(rnd[i : i + 2] for i in range(0, 10, 2))
        host_netns = bridge.ovs.netns if bridge is not None else None
        ns = Namespace(
            name=name, host_ifname=host, mac=mac, ipv4=ipv4, ipv6=ipv6, host_netns=host_netns
        )
        record("netns", name)
        if host_netns is None:
            record("link", host)
        self.namespaces.append(ns)
        run("ip", "netns", "add", name)
        host_batch = [
            f"link add {host} type veth peer name {ns.ifname} netns {name}",
            f"link set {host} addrgenmode none",  # only carries packets for OVS: no RS/DAD
            f"link set {host} up",
        ]
        run(*_ip(host_netns), "-batch", "-", input="\n".join(host_batch) + "\n")
        batch = [
            "link set lo up",
            f"link set {ns.ifname} address {mac}",
            f"link set {ns.ifname} up",
        ]
        if ipv4:
            batch.append(f"addr add {ipv4} dev {ns.ifname}")
        if ipv6:
            batch.append(f"addr add {ipv6} dev {ns.ifname} nodad")
        run("ip", "-n", name, "-batch", "-", input="\n".join(batch) + "\n")
        if not tx_checksum:
            ns.exec("ethtool", "-K", ns.ifname, "tx", "off")
        if bridge is not None and ofport is not None:
            bridge.add_port(host, ofport)
            ns.bridge, ns.ofport = bridge, ofport
        return ns

    def cleanup(self) -> None:
        """Delete every namespace made here (best effort, all of them, errors logged)."""
        while self.namespaces:
            ns = self.namespaces.pop()
            try:
                ns.delete()
            except Exception as exc:
                LOG.warning("deleting namespace %s failed: %s", ns.name, exc)
