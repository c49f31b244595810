"""Privileged operations of the IPv6 metadata election, behind an oslo.privsep context.

The agent itself needs no ``CAP_NET_ADMIN``: everything that touches a namespace's links,
addresses or raw sockets runs in the privsep daemon through the narrow entrypoints below.
Each entrypoint acts on one thing only — the metadata address ``fe80::a9fe:a9fe`` on one
interface of one network namespace — and validates its arguments, so a compromised agent
cannot use the daemon to configure arbitrary addresses.

Start the daemon once per process before the first call::

    from oslo_config import cfg
    from oslo_privsep import priv_context
    cfg.CONF([])                      # or the agent's real command line
    privileged.metadata_ctx.start(priv_context.Method.FORK)   # or the default (privsep-helper)

Results travel as msgpack: return plain data (lists arrive as tuples).
"""

from __future__ import annotations

import array
import ctypes
import errno
import ipaddress
import logging
import os
import re
import select
import signal
import socket
import struct
import threading
import time
from typing import Any, Callable, TypeVar

from oslo_privsep import capabilities as caps
from oslo_privsep import priv_context
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

LOG = logging.getLogger(__name__)

METADATA_ADDRESS = "fe80::a9fe:a9fe"
METADATA_PREFIXLEN = 64

# Address flags (linux/if_addr.h), read from the IFA_FLAGS attribute.
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
# The address installs no prefix route of its own. Without it, adding or replacing a
# link-local address with a finite lifetime puts that lifetime on the interface's shared
# fe80::/64 route (the kernel's, from its own link-local address); on Linux 6.x the replace
# even sets an expiry already in the past. The namespace then loses every link-local route
# (its own address too) whenever the lease lapses, and a new leader cannot answer until the
# kernel rebuilds the route. The metadata address rides on the interface's fe80::/64 route.
IFA_F_NOPREFIXROUTE = 0x200

PRIVSEP_SECTION = "sgflows_metadata_privsep"
#: Bound on one privileged call (each is a few netlink messages): a daemon that stopped
#: answering fails the call (the election records the failure) instead of hanging it forever.
CALL_TIMEOUT = 30.0
#: How long closing the channel waits for the daemon to exit (see :func:`stop_daemon`).
STOP_TIMEOUT = 5.0
#: After that, how long the daemon has to exit on SIGTERM, then on SIGKILL.
KILL_GRACE = 2.0
#: Bound on asking a daemon started on first use for its pid (at stop, see :func:`stop_daemon`).
PID_TIMEOUT = 2.0

metadata_ctx = priv_context.PrivContext(
    "sgflows",
    cfg_section=PRIVSEP_SECTION,
    pypath=__name__ + ".metadata_ctx",
    timeout=CALL_TIMEOUT,
    capabilities=[
        caps.CAP_NET_ADMIN,  # addresses
        caps.CAP_SYS_ADMIN,  # setns() into the network's namespace
        caps.CAP_NET_RAW,  # neighbour advertisements out, ND watch in
        caps.CAP_NET_BIND_SERVICE,  # the metadata proxy's port 80
    ],
)

_NETNS_DIR = "/run/netns"
_NETNS_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-@]{1,15}$")
_CLONE_NEWNET = 0x40000000
_ETH_P_IPV6 = 0x86DD
_SO_ATTACH_FILTER = 26
_PACKET_OUTGOING = 4
_ICMPV6_NS = 135
_ICMPV6_NA = 136
_METADATA_BYTES = ipaddress.IPv6Address(METADATA_ADDRESS).packed
_RT_TABLE_MAIN = 254
_RTPROT_KERNEL = 2
_IP6_RT_PRIO_ADDRCONF = 256  # the metric the kernel gives its own prefix routes
_MAX_LIFETIME = 3600

_T = TypeVar("_T")


class _Daemon:
    """The daemon process behind one channel: its pid and, where the kernel has them, a pidfd,
    which cannot name another process once the daemon has exited and its pid is reused (a
    helper-started daemon is no child of ours, so nothing keeps its pid)."""

    def __init__(self, channel: Any, pid: int) -> None:
        self.channel = channel
        self.pid = pid
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError) as exc:  # no pidfd (old kernel), or gone already
            LOG.debug("no pidfd for the privsep daemon (pid %d): %s", pid, exc)
            self.pidfd = None

    def signal(self, signum: signal.Signals) -> None:
        if self.pidfd is not None:
            signal.pidfd_send_signal(self.pidfd, signum)
        else:
            os.kill(self.pid, signum)

    def wait(self, timeout: float) -> bool:
        """Whether the daemon has exited within ``timeout`` (reaped if it is our child)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._exited():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.pidfd is not None:
                select.select([self.pidfd], [], [], left)  # readable once it has exited
            else:
                time.sleep(min(left, 0.05))

    def _exited(self) -> bool:
        try:
            pid, _status = os.waitpid(self.pid, os.WNOHANG)  # a forked daemon: our child
            if pid:
                return True
        except ChildProcessError:
            pass  # not our child (helper-started)
        if self.pidfd is not None:
            ready, _, _ = select.select([self.pidfd], [], [], 0)
            return bool(ready)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, and not ours to signal
        return False

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


_daemon: _Daemon | None = None


@metadata_ctx.entrypoint_with_timeout(PID_TIMEOUT)
def daemon_pid() -> int:
    """The privsep daemon's own pid (so that the agent can end it if it hangs at stop)."""
    return os.getpid()


def _track_daemon(pid: int, channel: Any = None) -> None:
    """Remember ``pid`` as the daemon behind ``channel`` (default: the current one)."""
    global _daemon
    if _daemon is not None:
        _daemon.close()
    _daemon = _Daemon(channel if channel is not None else metadata_ctx.channel, pid)


def _current_daemon(channel: Any) -> _Daemon | None:
    """The daemon behind ``channel``: as remembered at start, else asked (a daemon started on
    the first privileged call); None if it cannot say."""
    if _daemon is not None and _daemon.channel is channel:
        return _daemon
    if not getattr(channel, "running", False):
        return None  # its reader has stopped: asking would start a new daemon
    try:
        _track_daemon(int(daemon_pid()), channel)
    except Exception as exc:  # any failure only means "pid unknown"
        LOG.warning("the metadata privsep daemon did not tell its pid: %s", exc)
        return None
    return _daemon


def start_daemon(method: Any) -> None:
    """Start the daemon of :data:`metadata_ctx` (``priv_context.Method.FORK`` or
    ``ROOTWRAP``).

    With ``FORK`` the daemon is a fork that runs inside ``metadata_ctx.start()``; when its
    loop fails (``BrokenPipeError`` once the agent closed the channel while the daemon was
    still sending it a log record, as happens at shutdown under debug logging), oslo.privsep
    lets the exception rise in the child, which would then run the agent's own code as a
    second agent. The child exits here instead, quietly when its peer is simply gone.
    """
    parent = os.getpid()
    try:
        metadata_ctx.start(method)
    except BaseException as exc:
        if os.getpid() != parent:
            gone = isinstance(exc, (BrokenPipeError, ConnectionResetError, EOFError))
            os._exit(0 if gone else 1)
        raise
    _current_daemon(metadata_ctx.channel)


def stop_daemon(timeout: float = STOP_TIMEOUT, kill_grace: float = KILL_GRACE) -> bool:
    """Close the channel to the daemon (it exits on EOF), and end it if it does not: True once
    it is gone, False if it is still running.

    ``PrivContext.stop()`` joins the channel's reader thread without a bound, i.e. waits for
    the daemon to exit. A helper-started daemon exits through a full interpreter shutdown
    (joining its worker threads) and may be slow or stuck under load: the agent must still
    exit promptly on SIGTERM. After ``timeout`` the daemon gets SIGTERM (which a forked one
    ignores: it inherits the agent's ignored SIGTERM, see ``service.start_metadata_privsep``),
    then SIGKILL, ``kill_grace`` each. A daemon whose pid is unknown, or that is not ours to
    signal (started through sudo by an unprivileged agent), is left running: it still saw EOF.
    """
    global _daemon
    channel = metadata_ctx.channel
    if channel is None:
        return True
    daemon = _current_daemon(channel)
    _daemon = None
    metadata_ctx.channel = None
    try:
        channel.writer.close()  # half close: the daemon's request loop ends
    except OSError as exc:
        LOG.debug("closing the privsep channel: %s", exc)
    channel.reader_thread.join(timeout)
    try:
        if not channel.reader_thread.is_alive():
            return True  # it closed its end: it is exiting
        if daemon is None:
            LOG.warning(
                "the metadata privsep daemon did not exit within %.1f s and its pid is "
                "unknown; leaving it",
                timeout,
            )
            return False
        LOG.warning(
            "the metadata privsep daemon (pid %d) did not exit within %.1f s; ending it",
            daemon.pid,
            timeout,
        )
        return _end(daemon, kill_grace)
    finally:
        if daemon is not None:
            daemon.close()


def _end(daemon: _Daemon, grace: float) -> bool:
    """SIGTERM, then SIGKILL, ``grace`` seconds each; whether the daemon is gone."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            daemon.signal(signum)
        except ProcessLookupError:
            return True
        except PermissionError:
            LOG.warning(
                "not allowed to signal the metadata privsep daemon (pid %d); leaving it",
                daemon.pid,
            )
            return False
        if daemon.wait(grace):
            LOG.warning("the metadata privsep daemon (pid %d) ended on %s", daemon.pid, signum.name)
            return True
        LOG.warning("the metadata privsep daemon (pid %d) outlived %s", daemon.pid, signum.name)
    return False


class PrivilegedError(Exception):
    """A privileged operation was refused (bad argument) or failed."""


def _check(netns: str, ifname: str) -> None:
    if not isinstance(netns, str) or not _NETNS_NAME.match(netns) or netns in (".", ".."):
        raise PrivilegedError(f"invalid namespace name {netns!r}")
    if not isinstance(ifname, str) or not _IFNAME.match(ifname) or ifname in (".", ".."):
        raise PrivilegedError(f"invalid interface name {ifname!r}")
    if not os.path.exists(os.path.join(_NETNS_DIR, netns)):
        raise PrivilegedError(f"no such network namespace {netns!r}")


def _ifindex(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _metadata_addr_msg(ipr: Any, index: int) -> Any:
    for msg in ipr.get_addr(family=socket.AF_INET6, index=index):
        if msg.get("IFA_ADDRESS") == METADATA_ADDRESS:
            return msg
    return None


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _in_netns(netns: str, func: Callable[[], _T]) -> _T:
    """Run ``func`` in a short-lived thread moved into ``netns``.

    ``setns(CLONE_NEWNET)`` is per thread: the thread that moved dies afterwards, so the
    daemon's worker threads never change namespace. Sockets keep the namespace they were
    created in.
    """
    result: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(os.path.join(_NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc().setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(func())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


# --- links and addresses -------------------------------------------------------------------


def _with_ipr(netns: str, work: Callable[[Any], _T]) -> _T:
    """Run ``work(ipr)`` with an rtnetlink socket of ``netns``.

    ``IPRoute(netns=...)`` forks a helper process per socket in pyroute2 0.9; opening a plain
    ``IPRoute()`` in a thread that entered the namespace costs a third and forks nothing.
    """

    def run() -> _T:
        with IPRoute() as ipr:
            return work(ipr)

    return _in_netns(netns, run)


def _link_info(ipr: Any, index: int) -> dict[str, Any]:
    (link,) = ipr.get_links(index)
    flags = int(link["flags"])
    return {
        "index": index,
        "mac": str(link.get("IFLA_ADDRESS") or "").lower(),
        "up": bool(flags & 0x1),  # IFF_UP
        "carrier": bool(flags & 0x10000),  # IFF_LOWER_UP
    }


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def _dad_settings(ifname: str) -> dict[str, int] | None:
    """The duplicate address detection sysctls of ``ifname`` in this thread's namespace
    (``/proc/sys/net`` shows the namespace of the thread that opens it), None if absent.
    ``router_solicitation_delay`` (whole seconds) bounds the kernel's random delay before the
    first solicitation; then ``dad_transmits`` solicitations ``retrans_time_ms`` apart."""
    conf = f"/proc/sys/net/ipv6/conf/{ifname}"
    try:
        return {
            "accept_dad": _read_int(f"{conf}/accept_dad"),
            "dad_transmits": _read_int(f"{conf}/dad_transmits"),
            "router_solicitation_delay": _read_int(f"{conf}/router_solicitation_delay"),
            "retrans_time_ms": _read_int(f"/proc/sys/net/ipv6/neigh/{ifname}/retrans_time_ms"),
        }
    except FileNotFoundError:
        return None


def _flags_of(msg: Any) -> int:
    return int(msg.get("IFA_FLAGS") or msg["flags"])


@metadata_ctx.entrypoint
def interface_state(netns: str, ifname: str) -> dict[str, Any] | None:
    """Index, MAC, up, carrier of ``ifname``, ``flags``: the IFA_FLAGS of the metadata
    address on it (None when absent), and ``dad``: its DAD sysctls (see
    :func:`_dad_settings`). None when the interface does not exist."""
    _check(netns, ifname)

    def work(ipr: Any) -> dict[str, Any] | None:
        index = _ifindex(ipr, ifname)
        if index is None:
            return None
        info = _link_info(ipr, index)
        msg = _metadata_addr_msg(ipr, index)
        info["flags"] = None if msg is None else _flags_of(msg)
        info["dad"] = _dad_settings(ifname)
        return info

    return _with_ipr(netns, work)


@metadata_ctx.entrypoint
def address_flags(netns: str, ifname: str) -> int | None:
    """IFA_FLAGS of the metadata address on ``ifname``; None when it is absent."""
    _check(netns, ifname)

    def work(ipr: Any) -> int | None:
        index = _ifindex(ipr, ifname)
        msg = None if index is None else _metadata_addr_msg(ipr, index)
        return None if msg is None else _flags_of(msg)

    return _with_ipr(netns, work)


def _check_lifetime(lifetime: int) -> int:
    lifetime = int(lifetime)
    if not 1 <= lifetime <= _MAX_LIFETIME:
        raise PrivilegedError(f"lease out of range: {lifetime}")
    return lifetime


def _has_link_local_route(ipr: Any, index: int) -> bool:
    """Whether the main table has an unexpiring ``fe80::/64`` route through ``index``."""
    for route in ipr.get_routes(family=socket.AF_INET6, table=_RT_TABLE_MAIN):
        if (
            route.get("RTA_DST") == "fe80::"
            and route["dst_len"] == 64
            and route.get("RTA_OIF") == index
            and not (route.get("RTA_CACHEINFO") or {}).get("rta_expires")
        ):
            return True
    return False


def _ensure_link_local_route(ipr: Any, index: int) -> None:
    """The metadata address has no prefix route of its own (``IFA_F_NOPREFIXROUTE``): the
    interface's ``fe80::/64`` route, which the kernel adds with the interface's own
    link-local address, carries its traffic. An interface without one (``addr_gen_mode``
    none) gets the same permanent route the kernel would have added."""
    if not _has_link_local_route(ipr, index):
        LOG.info("adding the missing fe80::/64 route of interface %d", index)
        ipr.route(
            "replace",
            family=socket.AF_INET6,
            dst="fe80::",
            dst_len=64,
            oif=index,
            table=_RT_TABLE_MAIN,
            proto=_RTPROT_KERNEL,
            priority=_IP6_RT_PRIO_ADDRCONF,
        )


def _put_address(ipr: Any, command: str, index: int, lifetime: int) -> None:
    ipr.addr(
        command,
        index=index,
        address=METADATA_ADDRESS,
        prefixlen=METADATA_PREFIXLEN,
        family=socket.AF_INET6,
        IFA_FLAGS=IFA_F_NOPREFIXROUTE,
        valid_lft=lifetime,
        preferred_lft=lifetime,
    )


@metadata_ctx.entrypoint
def claim_address(netns: str, ifname: str, lifetime: int) -> bool:
    """Add the metadata address with a lifetime of ``lifetime`` seconds (DAD runs).

    The lifetime is finite from the first moment: an agent that dies at any point after the
    claim leaves an address the kernel removes within ``lifetime``. (A non-permanent address
    that fails DAD is deleted by the kernel, so the caller tells failure from removal by the
    ND frames it saw.) Returns False if the address is already there.
    """
    _check(netns, ifname)
    lifetime = _check_lifetime(lifetime)

    def work(ipr: Any) -> bool:
        index = _ifindex(ipr, ifname)
        if index is None:
            raise PrivilegedError(f"no interface {ifname} in {netns}")
        _ensure_link_local_route(ipr, index)
        try:
            _put_address(ipr, "add", index, lifetime)
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise
        return True

    return _with_ipr(netns, work)


@metadata_ctx.entrypoint
def set_address_lease(netns: str, ifname: str, lifetime: int) -> bool:
    """Renew the held metadata address for ``lifetime`` seconds.

    A leader renews this lease while it is alive; if the agent dies without stepping down,
    the kernel expires the address and a standby wins its next probe. Returns False (and
    changes nothing) when the address is absent, tentative or failed.
    """
    _check(netns, ifname)
    lifetime = _check_lifetime(lifetime)

    def work(ipr: Any) -> bool:
        index = _ifindex(ipr, ifname)
        msg = None if index is None else _metadata_addr_msg(ipr, index)
        if index is None or msg is None or _flags_of(msg) & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            return False
        _put_address(ipr, "replace", index, lifetime)
        return True

    return _with_ipr(netns, work)


@metadata_ctx.entrypoint
def release_address(netns: str, ifname: str) -> bool:
    """Remove the metadata address; True if it was there."""
    _check(netns, ifname)

    def work(ipr: Any) -> bool:
        index = _ifindex(ipr, ifname)
        if index is None:
            return False
        try:
            ipr.addr(
                "del",
                index=index,
                address=METADATA_ADDRESS,
                prefixlen=METADATA_PREFIXLEN,
                family=socket.AF_INET6,
            )
        except NetlinkError as exc:
            if exc.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True

    return _with_ipr(netns, work)


# --- neighbour discovery -------------------------------------------------------------------


def _icmpv6_na(mac: str) -> bytes:
    """Unsolicited neighbour advertisement for the metadata address, override flag set."""
    flags = 0x20000000  # O (override); not R, not S (RFC 4861 §7.2.6)
    tlla = bytes([2, 1]) + bytes.fromhex(mac.replace(":", ""))
    # type, code, checksum (the kernel fills it in for ICMPv6 raw sockets), flags, target
    return struct.pack("!BBHI", _ICMPV6_NA, 0, 0, flags) + _METADATA_BYTES + tlla


@metadata_ctx.entrypoint
def announce(netns: str, ifname: str) -> bool:
    """Send an unsolicited NA (override) for the held metadata address to all nodes.

    Clients that cached a previous holder's MAC switch at once, and a second holder after a
    partition sees us. Returns False if the address is not held (nothing sent).
    """
    _check(netns, ifname)

    def work(ipr: Any) -> bool:
        index = _ifindex(ipr, ifname)
        msg = None if index is None else _metadata_addr_msg(ipr, index)
        if index is None or msg is None or _flags_of(msg) & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
            return False
        mac = _link_info(ipr, index)["mac"]
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.bind((METADATA_ADDRESS, 0, 0, index))
            sock.sendto(_icmpv6_na(mac), ("ff02::1", 0, 0, index))
        return True

    return _with_ipr(netns, work)


# Classic BPF: IPv6, next header ICMPv6, type NS or NA (no extension headers: ND never
# carries them). Keeps the watch socket quiet on busy interfaces.
_ND_FILTER = [
    (0x28, 0, 0, 12),  # ldh [12]            ethertype
    (0x15, 0, 6, _ETH_P_IPV6),  # jeq #0x86dd
    (0x30, 0, 0, 20),  # ldb [20]            next header
    (0x15, 0, 4, 58),  # jeq #58 (ICMPv6)
    (0x30, 0, 0, 54),  # ldb [54]            ICMPv6 type
    (0x15, 1, 0, _ICMPV6_NS),
    (0x15, 0, 1, _ICMPV6_NA),
    (0x06, 0, 0, 0x40000),  # ret accept
    (0x06, 0, 0, 0),  # ret drop
]


def _attach_nd_filter(sock: socket.socket) -> None:
    prog = b"".join(struct.pack("HBBI", *insn) for insn in _ND_FILTER)
    buf = ctypes.create_string_buffer(prog)
    fprog = struct.pack("HL", len(_ND_FILTER), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


_watches: dict[tuple[str, str], socket.socket] = {}
_watch_lock = threading.Lock()


def parse_nd_frame(frame: bytes) -> tuple[str, str, str, str] | None:
    """(kind, source MAC, IPv6 source, target) of an NS/NA frame about the metadata address.

    ``kind`` is ``"na"`` (someone advertises the address), ``"probe"`` (a DAD solicitation
    for it, IPv6 source ``::``), ``"ns-from"`` (a solicitation sent *from* the address, so by
    a holder) or ``"ns"`` (a client resolving it). None for anything else.
    """
    if len(frame) < 78 or frame[12:14] != b"\x86\xdd" or frame[20] != 58:
        return None
    icmp_type = frame[54]
    if icmp_type not in (_ICMPV6_NS, _ICMPV6_NA):
        return None
    mac = ":".join(f"{b:02x}" for b in frame[6:12])
    src = frame[22:38]
    target = frame[62:78]
    src_text = str(ipaddress.IPv6Address(src))
    target_text = str(ipaddress.IPv6Address(target))
    if icmp_type == _ICMPV6_NA:
        if target != _METADATA_BYTES:
            return None
        return ("na", mac, src_text, target_text)
    if src == _METADATA_BYTES:
        return ("ns-from", mac, src_text, target_text)
    if target != _METADATA_BYTES:
        return None
    if src == bytes(16):
        return ("probe", mac, src_text, target_text)
    return ("ns", mac, src_text, target_text)


@metadata_ctx.entrypoint
def watch_start(netns: str, ifname: str) -> None:
    """Start recording NS/NA frames seen on ``ifname`` (idempotent)."""
    _check(netns, ifname)
    key = (netns, ifname)
    with _watch_lock:
        if key in _watches:
            return

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_IPV6))
        try:
            _attach_nd_filter(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            sock.bind((ifname, _ETH_P_IPV6))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    sock = _in_netns(netns, make)
    with _watch_lock:
        if key in _watches:
            sock.close()
        else:
            _watches[key] = sock


@metadata_ctx.entrypoint
def watch_drain(netns: str, ifname: str) -> list[tuple[str, str, str, str]]:
    """Return and forget the NS/NA frames about the metadata address seen since last drain.

    Frames this host sent itself are left out. Raises if the watch is not started (or the
    interface went away: the caller restarts it).
    """
    _check(netns, ifname)
    with _watch_lock:
        sock = _watches.get((netns, ifname))
        if sock is None:
            raise PrivilegedError(f"no ND watch on {netns}/{ifname}")
        seen: list[tuple[str, str, str, str]] = []
        while True:
            try:
                frame, addr = sock.recvfrom(2048)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENETDOWN:
                    # The link went down since the last drain (a one-shot error): the socket
                    # listens again once the link is back up.
                    break
                # ENETDOWN/ENXIO after the interface vanished: drop the watch.
                sock.close()
                del _watches[(netns, ifname)]
                raise PrivilegedError(f"ND watch on {netns}/{ifname} failed: {exc}") from exc
            if addr[2] == _PACKET_OUTGOING:
                continue
            parsed = parse_nd_frame(frame)
            if parsed is not None:
                seen.append(parsed)
        return seen


@metadata_ctx.entrypoint
def watch_stop(netns: str, ifname: str) -> None:
    """Stop recording NS/NA frames on ``ifname``."""
    with _watch_lock:
        sock = _watches.pop((netns, ifname), None)
    if sock is not None:
        sock.close()


# --- the metadata proxy's listening socket -------------------------------------------------


_HANDOVER_NAME = re.compile(r"^\0sgflows-md-[0-9a-f]{16,64}$")


@metadata_ctx.entrypoint
def send_listener(netns: str, ifname: str, port: int, handover: str) -> None:
    """Bind a TCP listener to ``[fe80::a9fe:a9fe%ifname]:port`` and hand it over.

    The socket is created in the namespace (and may use a port below 1024), then passed with
    SCM_RIGHTS to the unprivileged agent's datagram socket bound at the abstract Unix name
    ``handover`` (``"\\0sgflows-md-<hex>"``): the proxy itself runs without any capability.
    """
    _check(netns, ifname)
    port = int(port)
    if not 1 <= port <= 65535:
        raise PrivilegedError(f"invalid port {port}")
    if not isinstance(handover, str) or not _HANDOVER_NAME.match(handover):
        raise PrivilegedError(f"invalid handover socket name {handover!r}")

    def make() -> socket.socket:
        index = socket.if_nametoindex(ifname)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((METADATA_ADDRESS, port, 0, index))
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        return sock

    listener = _in_netns(netns, make)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as out:
            # socket.send_fds() ignores its address argument before Python 3.12.
            fds = array.array("i", [listener.fileno()])
            out.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], 0, handover)
    finally:
        listener.close()
