"""Helpers for the IPv6 metadata election tests: real namespaces on a Linux bridge.

Topology (DESIGN.md §6): one namespace holds a Linux bridge (``mcast_snooping 0``); each agent
namespace and a client namespace hang off it by a veth pair whose inside end is ``eth0``,
with DAD tuned to about 0.1 s (``TUNED_DAD``: ``router_solicitation_delay=0``,
``retrans_time_ms=100``, ``dad_transmits=1``) unless a test asks for other sysctls
(``KERNEL_DAD``: the kernel's defaults, up to 2 s). Agents are real processes
(``python -m sgflows.agent.election``, privsep by fork, capabilities dropped) or in-process
elections sharing one privsep daemon. Every name carries a random suffix; namespaces are
deleted at teardown and leftovers of earlier runs (prefix ``sgmd-<pid>-``, whose pid is
gone) at session start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

LOG = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[3]
PYDIR = ROOT / "python"
METADATA = "fe80::a9fe:a9fe"
PREFIX = "sgmd-"

# python/sgflows/__init__.py imports the compiled extension (sgflows._sgflows), which the
# election does not use. When it is not built, load the package without its __init__ so the
# agent modules import; with the extension built this changes nothing.
BOOTSTRAP = f"""
import sys, types
sys.path.insert(0, {str(PYDIR)!r})
try:
    import sgflows
except ImportError as exc:
    if "_sgflows" not in str(exc):
        raise
    for name in [m for m in sys.modules if m == "sgflows" or m.startswith("sgflows.")]:
        del sys.modules[name]
    pkg = types.ModuleType("sgflows")
    pkg.__path__ = [{str(PYDIR / "sgflows")!r}]
    sys.modules["sgflows"] = pkg
"""
exec(BOOTSTRAP, {})  # the same for this process (in-process elections, unit tests)
_ = types  # (used by BOOTSTRAP's own import)

T = TypeVar("T")

# Timers for tests: sub-second everything. Failover ≈ probe interval + jitter + DAD (~0.1 s);
# after a hard kill, + the lease (2 s, +1 s kernel granularity).
TEST_TIMERS: dict[str, float] = {
    "probe_interval": 0.5,
    "probe_jitter": 0.5,
    "backoff_base": 0.1,
    "backoff_max": 1.0,
    "dad_timeout": 3.0,
    "monitor_interval": 0.1,
    "announce_interval": 0.5,
    "lease": 2,
    "lease_renew": 0.5,
}

# DAD sysctls of every eth0 (conf.* and neigh.retrans_time_ms). Worst DAD time:
# router_solicitation_delay + dad_transmits * retrans_time.
TUNED_DAD: dict[str, int] = {
    "router_solicitation_delay": 0,
    "dad_transmits": 1,
    "retrans_time_ms": 100,
}
KERNEL_DAD: dict[str, int] = {
    "router_solicitation_delay": 1,
    "dad_transmits": 1,
    "retrans_time_ms": 1000,
}


def dad_seconds(dad: dict[str, int]) -> float:
    return dad["router_solicitation_delay"] + dad["dad_transmits"] * dad["retrans_time_ms"] / 1e3


FAILOVER_TIMES: dict[str, list[float]] = {}


def record_failover(kind: str, seconds: float) -> None:
    FAILOVER_TIMES.setdefault(kind, []).append(seconds)
    print(f"failover ({kind}): {seconds:.3f} s")
    LOG.info("failover (%s): %.3f s", kind, seconds)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FAILOVER_TIMES:
        return
    terminalreporter.section("metadata election: measured failover times")
    for kind, values in sorted(FAILOVER_TIMES.items()):
        terminalreporter.write_line(
            f"{kind}: n={len(values)} min={min(values):.3f} s "
            f"median={statistics.median(values):.3f} s max={max(values):.3f} s"
        )


def wait_until(
    what: str, func: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """Poll ``func`` until it returns something truthy; fail after a generous deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = func()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _delete_netns(name: str) -> None:
    ip("netns", "del", name, check=False)


@pytest.fixture(scope="session", autouse=True)
def _clean_leftovers() -> None:
    if os.geteuid() != 0:
        pytest.fail("the metadata election tests need root (network namespaces)")
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        # Names carry the pid of the test run that made them: leave a concurrent run alone.
        if name.startswith(PREFIX):
            owner = name[len(PREFIX) :].split("-", 1)[0]
            if not owner.isdigit() or not os.path.exists(f"/proc/{owner}"):
                _delete_netns(name)


class Segment:
    """A bridge namespace, ``n`` agent namespaces and a client namespace."""

    def __init__(self, n: int, dad: dict[str, int] | None = None) -> None:
        self.dad = dict(TUNED_DAD if dad is None else dad)
        self.sfx = secrets.token_hex(3)
        run = f"{PREFIX}{os.getpid()}-"
        self.bridge = f"{run}br-{self.sfx}"
        self.agents = [f"{run}a{i}-{self.sfx}" for i in range(n)]
        self.client = f"{run}cl-{self.sfx}"
        self.created: list[str] = []
        self.network_id = f"net-{self.sfx}"

    def port(self, i: int) -> str:
        """Bridge-side veth of agent ``i`` (-1: the client); at most 15 characters."""
        return f"md{'c' if i < 0 else i}{self.sfx}"

    def build(self) -> None:
        self._ns(self.bridge)
        for br in ("br0", "br1"):
            ip("-n", self.bridge, "link", "add", br, "type", "bridge", "mcast_snooping", "0")
            ip("-n", self.bridge, "link", "set", br, "up")
        for i, ns in enumerate(self.agents):
            self._attach(ns, self.port(i))
        self._attach(self.client, self.port(-1))

    def _ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _attach(self, ns: str, port: str) -> None:
        self._ns(ns)
        ip("link", "add", port, "netns", self.bridge, "type", "veth", "peer", "eth0", "netns", ns)
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                f"net.ipv6.conf.eth0.router_solicitation_delay={self.dad['router_solicitation_delay']}",
                f"net.ipv6.conf.eth0.dad_transmits={self.dad['dad_transmits']}",
                f"net.ipv6.neigh.eth0.retrans_time_ms={self.dad['retrans_time_ms']}",
            ],
            check=True,
        )
        ip("-n", self.bridge, "link", "set", port, "master", "br0", "up")
        ip("-n", ns, "link", "set", "eth0", "up")

    def destroy(self) -> None:
        for name in reversed(self.created):
            _delete_netns(name)

    # --- manipulation ---

    def set_port(self, i: int, up: bool) -> None:
        """Bridge side of agent ``i`` up or down: the agent loses or regains carrier."""
        ip("-n", self.bridge, "link", "set", self.port(i), "up" if up else "down")

    def set_eth0(self, i: int, up: bool) -> None:
        """Agent ``i``'s own interface administratively up or down."""
        ip("-n", self.agents[i], "link", "set", "eth0", "up" if up else "down")

    def move(self, i: int, bridge: str) -> None:
        """Put agent ``i``'s port on ``br0`` or ``br1`` (a partition; carrier stays up)."""
        ip("-n", self.bridge, "link", "set", self.port(i), "master", bridge)

    # --- observation (the kernel's truth) ---

    def flags(self, i: int) -> int | None:
        from pyroute2 import IPRoute

        with IPRoute(netns=self.agents[i]) as ipr:
            found = ipr.link_lookup(ifname="eth0")
            if not found:
                return None
            for msg in ipr.get_addr(family=socket.AF_INET6, index=found[0]):
                if msg.get("IFA_ADDRESS") == METADATA:
                    return int(msg.get("IFA_FLAGS") or msg["flags"])
        return None

    def holders(self) -> list[int]:
        """Agents whose eth0 holds the metadata address (DAD passed, not failed)."""
        out = []
        for i in range(len(self.agents)):
            f = self.flags(i)
            if f is not None and not f & 0x48:
                out.append(i)
        return out

    def lifetime(self, i: int) -> str | None:
        """``valid_lft ...`` of the metadata address on agent ``i`` as ``ip`` shows it."""
        out = ip("-n", self.agents[i], "-6", "-o", "addr", "show", "dev", "eth0").stdout
        for line in out.splitlines():
            if f" {METADATA}/" in line:
                words = line.split()
                return " ".join(words[words.index("valid_lft") : words.index("valid_lft") + 2])
        return None

    def own_link_local(self, ns: str) -> str:
        """The kernel's own link-local address of ``eth0`` in namespace ``ns``."""
        out = ip("-n", ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link").stdout
        for line in out.splitlines():
            addr = line.split()[3].split("/")[0]
            if addr != METADATA:
                return addr
        raise AssertionError(f"no link-local address of its own in {ns}: {out!r}")

    def route_problem(self, ns: str) -> str | None:
        """What is wrong with the ``fe80::/64`` route of ``eth0`` in ``ns`` (None: it is there,
        does not expire, and a lookup through it works)."""
        shown = ip("-n", ns, "-6", "route", "show", "table", "main", "fe80::/64", "dev", "eth0")
        text = shown.stdout.strip()
        if not text:
            return "no fe80::/64 route"
        if "expires" in text:
            return f"the fe80::/64 route expires: {text}"
        got = ip("-n", ns, "-6", "route", "get", "fe80::1", "oif", "eth0", check=False)
        if got.returncode != 0:
            return f"ip route get fe80::1 oif eth0: {got.stderr.strip()}"
        return None

    def mac(self, i: int) -> str:
        from pyroute2 import IPRoute

        with IPRoute(netns=self.agents[i]) as ipr:
            (link,) = ipr.get_links(ipr.link_lookup(ifname="eth0")[0])
            return str(link.get("IFLA_ADDRESS")).lower()

    def curl(self, path: str = "/latest/meta-data/") -> dict[str, Any] | None:
        """GET http://[fe80::a9fe:a9fe%eth0]/... from the client namespace."""
        res = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.client,
                "curl",
                "-sS",
                "-g",
                "--max-time",
                "3",  # a SYN that raced the announcement is resent after 1 s
                f"http://[{METADATA}%eth0]{path}",
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            return None
        doc: dict[str, Any] = json.loads(res.stdout)
        return doc


class Pinger:
    """ICMPv6 echo requests from the client namespace to ``target`` every ``interval``
    seconds, in a thread; ``replies`` holds the wall-clock time of each echo reply."""

    def __init__(self, seg: Segment, target: str, interval: float = 0.05) -> None:
        from sgflows.agent import privileged

        def make() -> tuple[socket.socket, int]:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            return sock, socket.if_nametoindex("eth0")

        self.sock, self.index = privileged._in_netns(seg.client, make)
        self.sock.settimeout(interval)
        self.target = target
        self.interval = interval
        self.ident = os.getpid() & 0xFFFF
        self.replies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            seq = (seq + 1) & 0xFFFF
            request = struct.pack("!BBHHH", 128, 0, 0, self.ident, seq)
            with contextlib.suppress(OSError):
                self.sock.sendto(request, (self.target, 0, 0, self.index))
            end = time.monotonic() + self.interval
            while time.monotonic() < end:
                try:
                    data, addr = self.sock.recvfrom(1500)
                except (TimeoutError, OSError):
                    break
                if (
                    len(data) >= 8
                    and data[0] == 129
                    and struct.unpack("!H", data[4:6])[0] == self.ident
                    and addr[0].split("%")[0] == self.target
                ):
                    self.replies.append(time.time())

    def first_reply_after(self, t: float) -> float | None:
        return next((r for r in list(self.replies) if r >= t), None)

    def answered_since(self, t: float) -> bool:
        return self.first_reply_after(t) is not None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def answers(seg: Segment, target: str, within: float = 2.0) -> bool:
    """Whether ``target`` answers an echo from the client namespace within ``within`` s."""
    pinger = Pinger(seg, target, interval=0.1)
    try:
        t0 = time.time()
        end = time.monotonic() + within
        while time.monotonic() < end and not pinger.answered_since(t0):
            time.sleep(0.05)
        return pinger.answered_since(t0)
    finally:
        pinger.close()


@pytest.fixture
def segment_factory() -> Iterator[Callable[..., Segment]]:
    made: list[Segment] = []

    def make(n: int = 3, dad: dict[str, int] | None = None) -> Segment:
        seg = Segment(n, dad)
        made.append(seg)
        seg.build()
        return seg

    yield make
    for seg in made:
        seg.destroy()


@pytest.fixture
def segment(segment_factory: Callable[..., Segment]) -> Segment:
    return segment_factory(3)


class AgentProcess:
    """``python -m sgflows.agent.election`` for one network, as a real process."""

    def __init__(
        self,
        seg: Segment,
        index: int,
        workdir: Path,
        *,
        proxy: str = "http",
        start_at: float | None = None,
        drop_caps: bool = True,
        timers: dict[str, float] | None = None,
        also: Sequence[tuple[Segment, int]] = (),
        privsep: str = "fork",
        extra_args: Sequence[str] = (),
        status_file: str | None = None,
    ) -> None:
        self.seg = seg
        self.index = index
        self.name = f"agent{index}"
        self.status_file = Path(status_file or workdir / f"status-{seg.sfx}-{index}.json")
        self.log_file = workdir / f"agent-{seg.sfx}-{index}.log"
        with contextlib.suppress(FileNotFoundError):
            self.status_file.unlink()
        args = [
            "--name",
            self.name,
            "--network",
            f"{seg.network_id},{seg.agents[index]},eth0",
            *[
                a
                for other, i in also
                for a in ("--network", f"{other.network_id},{other.agents[i]},eth0")
            ],
            "--privsep",
            privsep,
            *extra_args,
            "--status-file",
            str(self.status_file),
            "--status-interval",
            "0.05",
            "--proxy",
            proxy,
            "-v",
        ]
        if proxy == "command":
            argv = [
                sys.executable,
                "-c",
                BOOTSTRAP + "from sgflows.agent import metadata_proxy as m; m.main()",
                "--name",
                self.name,
                "--network-id",
                "{network_id}",
                "--listen-fd",
                "{listen_fd}",
            ]
            args += ["--proxy-argv", json.dumps(argv)]
        if drop_caps:
            args.append("--drop-capabilities")
        if start_at is not None:
            args += ["--start-at", repr(start_at)]
        for key, value in (TEST_TIMERS if timers is None else timers).items():
            args += ["--" + key.replace("_", "-"), str(value)]
        code = BOOTSTRAP + "from sgflows.agent import election; sys.exit(election.main())"
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self, seg: Segment | None = None) -> dict[str, Any] | None:
        """This agent's status for the network of ``seg`` (default: its first one); None
        before the first report or if the agent is dead."""
        if self.proc.poll() is not None:
            return None
        try:
            doc = json.loads(self.status_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        net: dict[str, Any] | None = doc["networks"].get((seg or self.seg).network_id)
        return net

    def role(self, seg: Segment | None = None) -> str | None:
        st = self.status(seg)
        return st["role"] if st else None

    def is_standby(self) -> bool:
        return self.role() == "standby"

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop on SIGTERM") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(seg: Segment, index: int, **kw: Any) -> AgentProcess:
        agent = AgentProcess(seg, index, tmp_path, **kw)
        started.append(agent)
        return agent

    yield start
    for agent in started:  # all at once: each steps down in parallel
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
    for agent in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.proc.wait(5)
        agent.close()
    for agent in started:
        # Leave the logs where a failing run can be read.
        LOG.debug("%s log:\n%s", agent.name, agent.log()[-4000:])


@pytest.fixture(scope="session")
def privsep_in_process() -> Iterator[None]:
    """The privsep daemon for in-process elections, forked from this process."""
    from oslo_config import cfg
    from oslo_privsep import priv_context
    from sgflows.agent import privileged

    cfg.CONF([])
    privileged.metadata_ctx.start(priv_context.Method.FORK)
    yield
    privileged.metadata_ctx.stop()


def leaders(procs: list[AgentProcess]) -> list[int]:
    return [a.index for a in procs if a.role() == "leader"]


def settled(seg: Segment, procs: list[AgentProcess]) -> list[int] | None:
    """``[leader]`` if the kernel and every live agent agree on exactly one; else None."""
    holders = seg.holders()
    if len(holders) != 1:
        return None
    roles = {a.index: a.role() for a in procs if a.proc.poll() is None}
    if any(r is None for r in roles.values()):
        return None
    if [i for i, r in roles.items() if r == "leader"] != holders:
        return None
    if any(r not in ("leader", "standby", "probing") for r in roles.values()):
        return None
    return holders


def wait_settled(seg: Segment, procs: list[AgentProcess], timeout: float = 20.0) -> int:
    return wait_until("exactly one leader", lambda: settled(seg, procs), timeout)[0]


def watch_stable(
    seg: Segment, procs: list[AgentProcess], leader: int, seconds: float = 2.0
) -> None:
    """Observe for ``seconds`` that leadership does not move (no flapping)."""
    since = procs[[a.index for a in procs].index(leader)].status()
    assert since is not None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        holders = seg.holders()
        assert holders == [leader], f"holders changed to {holders}"
        for a in procs:
            role = a.role()
            if a.index != leader:
                assert role != "leader", f"{a.name} became leader as well"
        time.sleep(0.1)
    now = procs[[a.index for a in procs].index(leader)].status()
    assert now is not None and now["since"] == since["since"] and now["role"] == "leader"
