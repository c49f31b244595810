"""One IPv6 metadata server per network, elected by duplicate address detection.

Every agent that serves a network runs a :class:`MetadataElection` for it. The election
claims ``fe80::a9fe:a9fe`` on the network's interface and lets the kernel's duplicate
address detection decide (RFC 4862): the address flags read over netlink say who won.

The address carries a finite lifetime from the moment it is added (a lease the leader
renews), so an agent that dies at any point loses its claim to the kernel, and it installs no
prefix route (``IFA_F_NOPREFIXROUTE``): the interface's own ``fe80::/64`` route serves it and
never inherits the lease.

- **Won** → *leader*: the lease is renewed, the proxy hook starts on a socket bound to the
  address, and an unsolicited neighbour advertisement with the override flag tells clients
  the new MAC. The leader re-announces periodically.
- **Lost to a holder** (an NA for the address was seen) → *standby*: the failed address is
  removed and a new probe follows after ``probe_interval`` plus random jitter, so standbys
  take over soon after the leader goes.
- **Lost with no holder** (only other probes were seen: simultaneous DAD, RFC 4862 §5.4.3,
  fails everyone) → back off at least one DAD time of the interface (so that every probe in
  flight has finished and a winner among them is visible), the colliders in MAC order one
  DAD time apart, plus random exponential jitter: the lowest MAC retries first and wins.
- **Conflict**: DAD is not consensus, so after a partition heals two leaders may hold the
  address. Leaders watch NS/NA frames; an NA for the address (or an NS sent from it) from
  another MAC is a conflict, resolved by a fixed rule: the lowest MAC keeps the address, the
  other steps down.
- Only an interface that is up, has carrier and whose port is bound (:meth:`set_bound`,
  from configuration or the control plane) may claim; a leader whose interface stops being
  eligible steps down. :meth:`stop` steps down cleanly (address removed, proxy stopped).

Privileged work goes through :mod:`sgflows.agent.privileged` (oslo.privsep); the status of
each network is ``MetadataElection.status()``, ready to be plugged into the status report.
``python -m sgflows.agent.election`` runs a standalone election agent.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import logging
import math
import os
import random
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sgflows.agent import privileged
from sgflows.agent.metadata_proxy import (
    CommandProxy,
    HTTPMetadataProxy,
    ProxyContext,
    ProxyHandle,
    ProxyHook,
)

LOG = logging.getLogger(__name__)

METADATA_ADDRESS = privileged.METADATA_ADDRESS


class Role(str, enum.Enum):
    """Where an agent stands for one network."""

    STARTING = "starting"
    INELIGIBLE = "ineligible"  # interface down, no carrier, or port not bound
    PROBING = "probing"
    STANDBY = "standby"
    LEADER = "leader"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ElectionTimers:
    """Every interval of the election, in seconds; tests shrink them.

    Failover after a clean step-down or a link loss takes at most ``probe_interval +
    probe_jitter`` plus one DAD time *D* (the kernel's: up to ``router_solicitation_delay`` of
    initial delay plus ``dad_transmits * retrans_time``, at most 2 s with default sysctls):
    about 4 s by default. When two standbys' probes collide, add about ``2 D`` plus the
    first jitter (``2 * backoff_base``): about 8.5 s. After a hard crash add the rest of the
    ``lease`` (+1 s kernel granularity): about 8 s, 12.5 s with a collision.
    """

    probe_interval: float = 1.0
    probe_jitter: float = 1.0
    backoff_base: float = 0.1
    backoff_max: float = 2.0
    dad_timeout: float = 5.0
    dad_poll: float = 0.05
    monitor_interval: float = 0.25
    announce_interval: float = 2.0
    lease: int = 3
    lease_renew: float = 1.0
    failure_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.lease < 1 or self.lease_renew >= self.lease:
            raise ValueError("the lease must be >= 1 s and renewed more often than it lasts")
        for name in ("probe_interval", "dad_timeout", "dad_poll", "monitor_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.backoff_max < self.backoff_base:
            raise ValueError("backoff_max must be at least backoff_base")


TIMER_HELP = {
    "probe_interval": "Seconds a standby waits between probes (plus up to probe_jitter).",
    "probe_jitter": "Random extra delay, up to this many seconds, before each probe.",
    "backoff_base": "After simultaneous probes failed everyone: the random spread added to "
    "the backoff (which is at least one DAD time of the interface); doubles each time.",
    "backoff_max": "Largest random spread of the backoff after simultaneous probes.",
    "dad_timeout": "Seconds to wait for duplicate address detection to finish (at least one "
    "DAD time of the interface + 1 s is waited in any case).",
    "dad_poll": "Seconds between reads of the address flags during DAD.",
    "monitor_interval": "Seconds between checks of the interface and address.",
    "announce_interval": "Seconds between a leader's unsolicited neighbour advertisements.",
    "lease": "Lifetime in seconds of the address (renewed by the leader; it expires if the "
    "agent dies). A probe's address lives at least one DAD time + 1 s.",
    "lease_renew": "Seconds between renewals of the lease (less than lease).",
    "failure_backoff": "Seconds to wait after a failed step (privsep error, proxy died).",
}
"""Help text of each :class:`ElectionTimers` field (command line and ``[metadata]``)."""


@dataclass
class NetworkSpec:
    """A network this agent serves: its namespace and interface, and whether the port is
    bound and wired (as confirmed by the control plane or configuration)."""

    network_id: str
    namespace: str
    interface: str
    bound: bool = True
    port: int = 80


def mac_key(mac: str) -> int:
    """Order of MAC addresses for conflict resolution (lowest keeps the address)."""
    return int(mac.replace(":", "").replace("-", ""), 16)


def conflict_winner(macs: Sequence[str]) -> str:
    """The MAC that keeps the address among conflicting holders: the lowest."""
    return min(macs, key=mac_key)


def dad_time(settings: dict[str, Any] | None) -> float:
    """The longest a DAD of the interface takes, in seconds: up to
    ``router_solicitation_delay`` before the first solicitation, then ``dad_transmits``
    solicitations ``retrans_time_ms`` apart (kernel defaults: 1 s + 1 x 1 s = 2 s)."""
    if settings is None:
        return 2.0
    return (
        float(settings["router_solicitation_delay"])
        + int(settings["dad_transmits"]) * float(settings["retrans_time_ms"]) / 1000.0
    )


def dad_disabled(settings: dict[str, Any] | None) -> bool:
    """No DAD on the interface: every claim would win, so the election cannot run there."""
    return settings is not None and (
        int(settings["accept_dad"]) <= 0 or int(settings["dad_transmits"]) <= 0
    )


def collision_backoff(
    timers: ElectionTimers, collisions: int, dad: float, rank: int, rng: random.Random
) -> float:
    """The wait before probing again after the ``collisions``-th mutual DAD failure in a row.

    At least one DAD time ``dad``: every probe that collided with ours has finished by then,
    so if one of them won we lose to its NA instead of failing it. The ``rank``-th lowest
    MAC among the colliders we saw waits one more DAD time (plus the spread) per rank: the
    lowest retries alone and wins, the others then find it holding the address. A random
    spread, doubling with each collision in a row, separates colliders that ranked alike.
    """
    spread = min(timers.backoff_max, timers.backoff_base * float(1 << min(collisions, 16)))
    return dad + rank * (dad + spread) + rng.uniform(0.0, spread)


def claim_lifetime(timers: ElectionTimers, dad: float) -> int:
    """The lifetime of a probe's address: the lease, but long enough to outlive its DAD."""
    return max(timers.lease, math.ceil(dad) + 1)


class NetlinkOps:
    """The privileged operations the election needs (privsep entrypoints)."""

    def interface_state(self, ns: str, ifname: str) -> dict[str, Any] | None:
        """Link facts (index, mac, up, carrier) and ``flags`` of the metadata address."""
        state = privileged.interface_state(ns, ifname)
        return dict(state) if state is not None else None

    def address_flags(self, ns: str, ifname: str) -> int | None:
        flags = privileged.address_flags(ns, ifname)
        return int(flags) if flags is not None else None

    def claim(self, ns: str, ifname: str, lifetime: int) -> bool:
        return bool(privileged.claim_address(ns, ifname, lifetime))

    def set_lease(self, ns: str, ifname: str, lifetime: int) -> bool:
        return bool(privileged.set_address_lease(ns, ifname, lifetime))

    def release(self, ns: str, ifname: str) -> bool:
        return bool(privileged.release_address(ns, ifname))

    def announce(self, ns: str, ifname: str) -> bool:
        return bool(privileged.announce(ns, ifname))

    def watch_start(self, ns: str, ifname: str) -> None:
        privileged.watch_start(ns, ifname)

    def watch_drain(self, ns: str, ifname: str) -> list[tuple[str, str, str, str]]:
        return [
            (str(k), str(m), str(s), str(t)) for k, m, s, t in privileged.watch_drain(ns, ifname)
        ]

    def watch_stop(self, ns: str, ifname: str) -> None:
        privileged.watch_stop(ns, ifname)

    def listener(self, ns: str, ifname: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A listening socket on the metadata address, created by the privileged daemon."""
        name = "\0sgflows-md-" + secrets.token_hex(16)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as inbox:
            inbox.bind(name)
            inbox.settimeout(timeout)
            privileged.send_listener(ns, ifname, port, name)
            _msg, fds, _flags, _addr = socket.recv_fds(inbox, 16, 1)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise RuntimeError("no listening socket received")
        sock = socket.socket(fileno=fds[0])
        if sock.type != socket.SOCK_STREAM or sock.getsockname()[:2] != (METADATA_ADDRESS, port):
            sock.close()
            raise RuntimeError("received a socket that is not the metadata listener")
        return sock


class MetadataElection:
    """The election for one network, run in its own thread; :meth:`status` for reports."""

    def __init__(
        self,
        spec: NetworkSpec,
        proxy_hook: ProxyHook | None = None,
        timers: ElectionTimers | None = None,
        ops: NetlinkOps | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.timers = timers or ElectionTimers()
        self.ops = ops or NetlinkOps()
        self.proxy_hook = proxy_hook
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound = spec.bound
        # state (guarded by _lock for readers; written by the election thread)
        self._role = Role.STARTING
        self._since = time.time()
        self._probes = 0
        self._wins = 0
        self._collisions_total = 0
        self._collisions_in_row = 0
        self._conflicts = 0
        self._last_conflict: dict[str, Any] | None = None
        self._last_failure: dict[str, Any] | None = None
        self._last_step_down: dict[str, Any] | None = None
        self._ineligible_reason: str | None = None
        self._holder_mac: str | None = None
        self._own_mac = ""
        self._dad_time = dad_time(None)
        # leader resources
        self._proxy: ProxyHandle | None = None
        self._listen: socket.socket | None = None
        self._next_probe = 0.0
        self._next_renew = 0.0
        self._next_announce = 0.0
        self._watching = False

    # --- public API ------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        with self._lock:
            return self._role

    def start(self) -> None:
        """Start electing in a background thread."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._run, name=f"metadata-election-{self.spec.network_id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Step down cleanly (address removed, proxy stopped) and stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def set_bound(self, bound: bool) -> None:
        """The control plane says whether the network's port is bound and wired."""
        with self._lock:
            self._bound = bound
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """Custom status for the agent's report (JSON-ready, small)."""
        with self._lock:
            return {
                "network_id": self.spec.network_id,
                "namespace": self.spec.namespace,
                "interface": self.spec.interface,
                "address": METADATA_ADDRESS,
                "role": self._role.value,
                "since": self._since,
                "bound": self._bound,
                "ineligible_reason": self._ineligible_reason,
                "mac": self._own_mac,
                "holder_mac": self._holder_mac,
                "probes": self._probes,
                "wins": self._wins,
                "collisions": self._collisions_total,
                "dad_time": self._dad_time,
                "last_failure": self._last_failure,
                "last_step_down": self._last_step_down,
                "conflicts": {"count": self._conflicts, "last": self._last_conflict},
                "proxy_running": self._proxy is not None and self._proxy.alive(),
            }

    # --- the loop --------------------------------------------------------------------------

    def _set_role(self, role: Role) -> None:
        with self._lock:
            if role is not self._role:
                # A standby probes again and again: that is not news, and "since" keeps
                # saying when it became a standby.
                quiet = {role, self._role} == {Role.PROBING, Role.STANDBY}
                LOG.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "metadata election %s: %s -> %s",
                    self.spec.network_id,
                    self._role.value,
                    role.value,
                )
                self._role = role
                if not quiet:
                    self._since = time.time()

    def _failure(self, reason: str) -> None:
        LOG.warning("metadata election %s: %s", self.spec.network_id, reason)
        with self._lock:
            self._last_failure = {"at": time.time(), "reason": reason}

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)
        self._wake.clear()

    def _run(self) -> None:
        ns, ifname = self.spec.namespace, self.spec.interface
        try:
            # A previous incarnation may have left the address behind: it is not ours to
            # keep (nobody serves behind it), so remove it and probe again.
            if self.ops.release(ns, ifname):
                LOG.info("metadata election %s: removed a stale address", self.spec.network_id)
        except Exception as exc:
            self._failure(f"initial cleanup failed: {exc}")
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:
                LOG.exception("metadata election %s: step failed", self.spec.network_id)
                self._failure(f"{type(exc).__name__}: {exc}")
                if self.role is Role.LEADER:
                    self._step_down(f"error: {exc}")
                self._watching = False
                self._next_probe = time.monotonic() + self.timers.failure_backoff
                self._wait(self.timers.failure_backoff)
        self._shutdown()

    def _shutdown(self) -> None:
        if self.role is Role.LEADER:
            self._step_down("shutdown")
        else:
            try:
                self.ops.release(self.spec.namespace, self.spec.interface)
            except Exception as exc:
                self._failure(f"release at shutdown failed: {exc}")
        try:
            self.ops.watch_stop(self.spec.namespace, self.spec.interface)
        except Exception as exc:
            LOG.debug("watch_stop: %s", exc)
        self._set_role(Role.STOPPED)

    def _eligibility(self, link: dict[str, Any] | None) -> str | None:
        """None if the interface may claim, else why not."""
        with self._lock:
            bound = self._bound
        if not bound:
            return "port not bound"
        if link is None:
            return "no interface"
        self._own_mac = str(link["mac"]).lower()
        settings = link.get("dad")
        with self._lock:
            self._dad_time = dad_time(settings)
        if not link["up"]:
            return "interface down"
        if not link["carrier"]:
            return "no carrier"
        if dad_disabled(settings):
            return "duplicate address detection disabled"
        return None

    def _ensure_watch(self) -> None:
        if not self._watching:
            self.ops.watch_start(self.spec.namespace, self.spec.interface)
            self._watching = True

    def _drain(self) -> list[tuple[str, str, str, str]]:
        """ND frames about the address since the last drain; restarts a watch that failed
        (interface replaced, privsep daemon restarted) and reports nothing for that round."""
        try:
            return self.ops.watch_drain(self.spec.namespace, self.spec.interface)
        except privileged.PrivilegedError as exc:
            LOG.info("metadata election %s: restarting ND watch (%s)", self.spec.network_id, exc)
            self._watching = False
            self._ensure_watch()
            return []

    def _step(self) -> None:
        link = self.ops.interface_state(self.spec.namespace, self.spec.interface)
        why = self._eligibility(link)
        with self._lock:
            self._ineligible_reason = why
        if self.role is Role.LEADER:
            if why is not None:
                self._step_down(why)
                self._set_role(Role.INELIGIBLE)
                return
            assert link is not None
            self._leader_tick(link["flags"])
            self._wait(self.timers.monitor_interval)
            return
        if why is not None:
            if self.role is not Role.INELIGIBLE:
                self._set_role(Role.INELIGIBLE)
            self._wait(self.timers.monitor_interval)
            return
        now = time.monotonic()
        if self.role in (Role.INELIGIBLE, Role.STARTING):
            # Became eligible: probe soon, with a little jitter against simultaneous starts.
            self._set_role(Role.STANDBY)
            self._next_probe = now + self._rng.uniform(0.0, self.timers.backoff_base)
        if now < self._next_probe:
            self._wait(min(self.timers.monitor_interval, self._next_probe - now))
            return
        self._probe()

    # --- probing ---------------------------------------------------------------------------

    def _probe(self) -> None:
        ns, ifname = self.spec.namespace, self.spec.interface
        t = self.timers
        self._ensure_watch()
        self._drain()  # forget frames from before this probe
        with self._lock:
            self._probes += 1
            dad = self._dad_time
        self._set_role(Role.PROBING)
        if not self.ops.claim(ns, ifname, claim_lifetime(t, dad)):
            # Someone (not this incarnation: we release before probing) left it there.
            self.ops.release(ns, ifname)
            self._set_role(Role.STANDBY)
            self._next_probe = time.monotonic() + self._rng.uniform(0.0, t.backoff_base)
            return
        started = time.monotonic()
        outcome = self._await_dad(max(t.dad_timeout, dad + 1.0))
        if self._stop.is_set():
            self.ops.release(ns, ifname)
            return
        LOG.debug(
            "metadata election %s: probe %s after %.3f s",
            self.spec.network_id,
            outcome,
            time.monotonic() - started,
        )
        if outcome == "won":
            self._become_leader()
            return
        frames = self._drain()
        self.ops.release(ns, ifname)
        self._after_lost_probe(outcome, frames, dad)

    def _await_dad(self, timeout: float) -> str:
        """Poll the claimed address until DAD ends: ``won``, ``dadfailed``, ``vanished``
        (gone: the kernel deletes a non-permanent address that fails DAD, and a link flush
        removes it too) or ``timeout``."""
        ns, ifname = self.spec.namespace, self.spec.interface
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            flags = self.ops.address_flags(ns, ifname)
            if flags is None:
                return "vanished"
            if flags & privileged.IFA_F_DADFAILED:
                return "dadfailed"
            if not flags & privileged.IFA_F_TENTATIVE:
                return "won"
            if time.monotonic() > deadline:
                return "timeout"
            time.sleep(self.timers.dad_poll)
        return "stopped"

    def _after_lost_probe(
        self, outcome: str, frames: list[tuple[str, str, str, str]], dad: float
    ) -> None:
        """Decide what a probe that did not win means, from the ND frames seen during it."""
        t = self.timers
        holders = sorted(
            {mac for kind, mac, _s, _t in frames if kind in ("na", "ns-from")} - {self._own_mac},
            key=mac_key,
        )
        probers = {mac for kind, mac, _s, _t in frames if kind == "probe"} - {self._own_mac}
        now = time.monotonic()
        if outcome in ("dadfailed", "vanished") and holders:
            with self._lock:
                self._holder_mac = holders[0]
                self._collisions_in_row = 0
            self._set_role(Role.STANDBY)
            self._next_probe = now + t.probe_interval + self._rng.uniform(0.0, t.probe_jitter)
            return
        if outcome == "vanished" and not probers:
            self._failure("metadata address vanished during DAD")
            self._set_role(Role.STANDBY)
            self._next_probe = now + self._rng.uniform(0.0, t.probe_jitter)
            return
        # Mutual failure (or a DAD that never finished): nobody holds it; back off and retry.
        rank = sum(1 for mac in probers if mac_key(mac) < mac_key(self._own_mac or "0"))
        with self._lock:
            self._collisions_total += 1
            self._collisions_in_row += 1
            row = self._collisions_in_row
            self._last_failure = {
                "at": time.time(),
                "reason": f"simultaneous probe ({outcome}, {row} in a row, rank {rank})",
            }
        self._set_role(Role.STANDBY)
        self._next_probe = now + collision_backoff(t, row, dad, rank, self._rng)

    # --- leading ---------------------------------------------------------------------------

    def _become_leader(self) -> None:
        ns, ifname = self.spec.namespace, self.spec.interface
        t = self.timers
        if not self.ops.set_lease(ns, ifname, t.lease):
            self._failure("address lost right after DAD")
            self.ops.release(ns, ifname)
            self._set_role(Role.STANDBY)
            self._next_probe = time.monotonic() + self._rng.uniform(0.0, t.probe_jitter)
            return
        with self._lock:
            self._wins += 1
            self._collisions_in_row = 0
            self._holder_mac = self._own_mac
        self.ops.announce(ns, ifname)
        now = time.monotonic()
        self._next_renew = now + t.lease_renew
        self._next_announce = now + t.announce_interval
        if self.proxy_hook is not None:
            try:
                self._listen = self.ops.listener(ns, ifname, self.spec.port)
                ctx = ProxyContext(
                    network_id=self.spec.network_id,
                    namespace=ns,
                    interface=ifname,
                    address=METADATA_ADDRESS,
                    port=self.spec.port,
                    listen_socket=self._listen,
                )
                proxy = self.proxy_hook(ctx)
                with self._lock:
                    self._proxy = proxy
            except Exception as exc:
                self._failure(f"metadata proxy failed to start: {exc}")
                self._step_down("proxy failed to start", delay=t.failure_backoff)
                return
        # The role says "leader" only once the proxy serves: the status (and whoever waits
        # for it) must never see a leader that does not answer yet.
        self._set_role(Role.LEADER)
        # A second announcement once the proxy listens: a client that resolved us during
        # the start-up gets the final word.
        self.ops.announce(ns, ifname)

    def _leader_tick(self, flags: int | None) -> None:
        ns, ifname = self.spec.namespace, self.spec.interface
        t = self.timers
        if flags is None or flags & (privileged.IFA_F_TENTATIVE | privileged.IFA_F_DADFAILED):
            self._failure(f"lost the metadata address (flags {flags})")
            self._step_down("address lost")
            return
        proxy = self._proxy
        if proxy is not None and not proxy.alive():
            self._failure("metadata proxy died")
            self._step_down("proxy died", delay=t.failure_backoff)
            return
        now = time.monotonic()
        if now >= self._next_renew:
            if not self.ops.set_lease(ns, ifname, t.lease):
                self._failure("could not renew the address lease")
                self._step_down("lease renewal failed")
                return
            self._next_renew = now + t.lease_renew
        frames = self._drain()
        others = {mac for kind, mac, _s, _t in frames if kind in ("na", "ns-from")}
        others.discard(self._own_mac)
        if others:
            keeper = conflict_winner([*others, self._own_mac])
            with self._lock:
                self._conflicts += len(others)
                self._last_conflict = {
                    "at": time.time(),
                    "macs": sorted(others, key=mac_key),
                    "kept": keeper == self._own_mac,
                }
            if keeper != self._own_mac:
                LOG.warning(
                    "metadata election %s: %s also holds the address; lowest MAC keeps it",
                    self.spec.network_id,
                    keeper,
                )
                with self._lock:
                    self._holder_mac = keeper
                self._step_down(f"conflict: {keeper} has the lower MAC")
                return
            self.ops.announce(ns, ifname)  # make sure the other holder hears us
            self._next_announce = now + t.announce_interval
        elif now >= self._next_announce:
            self.ops.announce(ns, ifname)
            self._next_announce = now + t.announce_interval

    def _step_down(self, reason: str, delay: float | None = None) -> None:
        """Leave leadership: address removed first (a standby can take over), then proxy."""
        ns, ifname = self.spec.namespace, self.spec.interface
        t = self.timers
        LOG.info("metadata election %s: stepping down (%s)", self.spec.network_id, reason)
        try:
            self.ops.release(ns, ifname)
        except Exception as exc:
            self._failure(f"release failed: {exc}")
        with self._lock:
            proxy, self._proxy = self._proxy, None
            self._last_step_down = {"at": time.time(), "reason": reason}
        if proxy is not None:
            try:
                proxy.stop()
            except Exception as exc:
                self._failure(f"proxy stop failed: {exc}")
        if self._listen is not None:
            self._listen.close()
            self._listen = None
        self._set_role(Role.STANDBY)
        wait = delay if delay is not None else t.probe_interval
        self._next_probe = time.monotonic() + wait + self._rng.uniform(0.0, t.probe_jitter)


@dataclass
class MetadataElectionManager:
    """The elections of one agent, one per network."""

    proxy_hook: ProxyHook | None = None
    timers: ElectionTimers = field(default_factory=ElectionTimers)
    ops: NetlinkOps = field(default_factory=NetlinkOps)
    elections: dict[str, MetadataElection] = field(default_factory=dict)

    def add_network(self, spec: NetworkSpec) -> MetadataElection:
        if spec.network_id in self.elections:
            raise ValueError(f"network {spec.network_id} already has an election")
        election = MetadataElection(spec, self.proxy_hook, self.timers, self.ops)
        self.elections[spec.network_id] = election
        election.start()
        return election

    def remove_network(self, network_id: str) -> None:
        election = self.elections.pop(network_id, None)
        if election is not None:
            election.stop()

    def set_bound(self, network_id: str, bound: bool) -> None:
        self.elections[network_id].set_bound(bound)

    def status_providers(self) -> dict[str, MetadataElection]:
        """Per network, an object with ``status() -> dict`` for the status reporter."""
        return dict(self.elections)

    def status(self) -> dict[str, dict[str, Any]]:
        return {nid: e.status() for nid, e in self.elections.items()}

    def stop(self) -> None:
        """Step down everywhere, in parallel so that every standby can take over at once."""
        threads = [threading.Thread(target=e.stop, daemon=True) for e in self.elections.values()]
        for th in threads:
            th.start()
        for th in threads:
            th.join()


# --- standalone agent ----------------------------------------------------------------------


def _parse_network(text: str) -> NetworkSpec:
    parts = text.split(",")
    if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] not in ("bound", "unbound")):
        raise argparse.ArgumentTypeError("expected NETWORK_ID,NAMESPACE,INTERFACE[,unbound]")
    return NetworkSpec(parts[0], parts[1], parts[2], bound=len(parts) == 3 or parts[3] == "bound")


def drop_capabilities() -> None:
    """Drop every capability of this process for good (after the privsep daemon started).

    ``SECBIT_NOROOT`` (locked) keeps a uid-0 agent from regaining them through ``execve``.
    """
    import ctypes

    from oslo_privsep import capabilities as caps

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_securebits, noroot, noroot_locked = 28, 1 << 0, 1 << 1
    if libc.prctl(pr_set_securebits, noroot | noroot_locked, 0, 0, 0) != 0:
        LOG.warning("could not set SECBIT_NOROOT: errno %d", ctypes.get_errno())
    caps.drop_all_caps_except([], [], [])


def _write_status(path: str, name: str, manager: MetadataElectionManager) -> None:
    doc = {"name": name, "pid": os.getpid(), "time": time.time(), "networks": manager.status()}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


class StartupError(Exception):
    """The standalone agent cannot start (reported in one line, before any claim)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sgflows.agent.election",
        description="Run the IPv6 metadata election (fe80::a9fe:a9fe, one server per "
        "network) for the given networks until SIGTERM/SIGINT. See docs/metadata-election.md.",
    )
    p.add_argument("--name", default=socket.gethostname(), help="name served by the proxy")
    p.add_argument(
        "--network",
        action="append",
        type=_parse_network,
        required=True,
        metavar="ID,NAMESPACE,INTERFACE[,unbound]",
        help="a network to serve: NAMESPACE is a named network namespace (/run/netns/NAME), "
        "INTERFACE the network's port in it; 'unbound' waits for the port to be bound "
        "(repeat for more networks)",
    )
    p.add_argument("--port", type=int, default=80, help="TCP port of the metadata proxy")
    p.add_argument("--proxy", choices=("http", "command", "none"), default="http")
    p.add_argument("--proxy-argv", default=None, help="JSON list of strings (--proxy command)")
    p.add_argument("--upstream", default=None, help="metadata service URL for --proxy http")
    p.add_argument(
        "--privsep",
        choices=("fork", "helper"),
        default="helper",
        help="fork: the agent starts as root and forks the daemon (then use "
        "--drop-capabilities); helper: privsep-helper through the context's helper_command",
    )
    p.add_argument(
        "--config-file",
        action="append",
        default=[],
        help="oslo.config file, e.g. [sgflows_metadata_privsep] helper_command = ...",
    )
    p.add_argument("--drop-capabilities", action="store_true")
    p.add_argument("--status-file", default=None, help="write every network's status here (JSON)")
    p.add_argument(
        "--status-interval", type=float, default=0.2, help="seconds between status writes"
    )
    p.add_argument("--start-at", type=float, default=None, help="wall-clock time to start")
    timers = p.add_argument_group("election timers (seconds)")
    defaults = ElectionTimers()
    for f in dataclasses.fields(ElectionTimers):
        value = getattr(defaults, f.name)
        timers.add_argument(
            "--" + f.name.replace("_", "-"),
            type=type(value),
            default=value,
            help=f"{TIMER_HELP[f.name]} (default {value})",
        )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug log of the election (pyroute2, oslo.privsep and asyncio stay quieter)",
    )
    return p


def _configure_logging(name: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(name)s %(message)s",
    )
    # Under -v, keep the debug log to the election's own records: pyroute2 logs netlink
    # traffic, oslo.privsep every call and reply (several per monitor tick), asyncio its
    # event loops (one per privsep call).
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    logging.getLogger("oslo_privsep").setLevel(logging.INFO)
    logging.getLogger("oslo.privsep").setLevel(logging.INFO)
    logging.getLogger("asyncio").setLevel(logging.INFO)
    # A log reader that went away (a closed pipe) must not turn every record into a
    # traceback on stderr, nor stop the agent from stepping down.
    logging.raiseExceptions = False


def _proxy_hook(args: argparse.Namespace) -> ProxyHook | None:
    if args.proxy == "http":
        return HTTPMetadataProxy(args.name, upstream=args.upstream)
    if args.proxy == "command":
        if not args.proxy_argv:
            raise StartupError("--proxy command needs --proxy-argv")
        try:
            argv = json.loads(args.proxy_argv)
        except json.JSONDecodeError as exc:
            raise StartupError(f"--proxy-argv is not JSON: {exc}") from exc
        try:
            return CommandProxy(argv)
        except (TypeError, ValueError) as exc:
            raise StartupError(f"--proxy-argv: {exc}") from exc
    return None


def _prepare(args: argparse.Namespace) -> MetadataElectionManager:
    """Everything that can fail, done before the first claim: a claim made by an agent that
    then dies would block everyone else until its lease runs out."""
    try:
        timers = ElectionTimers(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(ElectionTimers)}
        )
    except ValueError as exc:
        raise StartupError(f"timers: {exc}") from exc
    manager = MetadataElectionManager(proxy_hook=_proxy_hook(args), timers=timers)
    if args.status_file:
        try:
            _write_status(args.status_file, args.name, manager)
        except OSError as exc:
            raise StartupError(f"cannot write the status file: {exc}") from exc
    return manager


def _start_privsep(args: argparse.Namespace) -> None:
    from oslo_config import cfg
    from oslo_privsep import priv_context

    cfg.CONF([arg for f in args.config_file for arg in ("--config-file", f)], project="sgflows")
    # A service manager signals the whole process group (or cgroup) at stop. The forked
    # privsep daemon inherits SIG_IGN here, so it outlives the signal and the agent can
    # still step down through it; it exits when the agent closes the channel.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        privileged.start_daemon(
            priv_context.Method.FORK if args.privsep == "fork" else priv_context.Method.ROOTWRAP
        )
    except Exception as exc:
        raise StartupError(f"the privsep daemon did not start: {exc}") from exc
    if args.drop_capabilities:
        drop_capabilities()


def _serve(args: argparse.Namespace, manager: MetadataElectionManager) -> None:
    """Run the elections until SIGTERM/SIGINT, then step down everywhere (also on error)."""
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    status_ok = True
    try:
        for spec in args.network:
            spec.port = args.port
            manager.add_network(spec)
        while not done.wait(args.status_interval):
            if args.status_file:
                status_ok = _try_write_status(args, manager, status_ok)
    finally:
        manager.stop()
    if args.status_file:
        _try_write_status(args, manager, status_ok)


def _try_write_status(
    args: argparse.Namespace, manager: MetadataElectionManager, was_ok: bool
) -> bool:
    """Write the status file; a failure is logged once (until it works again), never fatal."""
    try:
        _write_status(args.status_file, args.name, manager)
    except OSError as exc:
        if was_ok:
            LOG.error("cannot write the status file: %s", exc)
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run the metadata election for the given networks until SIGTERM/SIGINT."""
    args = _parser().parse_args(argv)
    _configure_logging(args.name, args.verbose)
    try:
        manager = _prepare(args)
        _start_privsep(args)
    except StartupError as exc:
        print(f"python -m sgflows.agent.election: error: {exc}", file=sys.stderr)
        return 2
    try:
        _serve(args, manager)
    except Exception as exc:
        # The elections have stepped down (_serve's finally); say why we stop, in one line.
        LOG.debug("the election agent failed", exc_info=True)
        LOG.error("metadata election agent failed: %s: %s", type(exc).__name__, exc)
        return 1
    LOG.info("metadata election agent stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
