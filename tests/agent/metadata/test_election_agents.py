"""Three election agents (real processes) on one network: leadership, failover, partitions.

Every agent runs privsep by fork and then drops all its capabilities, so every privileged
step of these tests goes through the privsep daemon. Failover times are measured and
printed (summary at the end of the run), never asserted against tight bounds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mdhelpers import (
    BOOTSTRAP,
    AgentProcess,
    Segment,
    record_failover,
    settled,
    wait_settled,
    wait_until,
    watch_stable,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

CAP_NET_ADMIN = 12
LABELS = {
    "link down": "link down",
    "SIGTERM": "SIGTERM (clean step-down)",
    "SIGKILL": "SIGKILL (lease expiry)",
}


def cap_eff(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapEff")


def children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(x) for x in f.read().split()]
    return found


def served_by(seg: Segment) -> str | None:
    doc = seg.curl()
    return str(doc["server"]) if doc else None


def serves(seg: Segment, index: int) -> Callable[[], bool]:
    """A probe for wait_until: the client's request is answered by agent ``index``."""
    return lambda: served_by(seg) == f"agent{index}"


def time_to_new_leader(seg: Segment, procs: list[AgentProcess], old: int, t0: float) -> int:
    """Wait for a single new holder other than ``old``; return it (time recorded by caller)."""

    def new_holder() -> list[int] | None:
        h = seg.holders()
        return h if len(h) == 1 and h[0] != old else None

    return wait_until("a new leader", new_holder, timeout=20, interval=0.02)[0]


def test_one_leader_among_three_without_cap_net_admin(
    segment: Segment, agents: Callable[..., AgentProcess]
) -> None:
    first = agents(segment, 0)
    wait_until("agent0 leads", lambda: first.role() == "leader")
    rest = [agents(segment, 1), agents(segment, 2)]
    procs = [first, *rest]
    wait_until("the others stand by", lambda: all(a.role() == "standby" for a in rest))
    assert wait_settled(segment, procs) == 0
    watch_stable(segment, procs, 0, seconds=2.0)
    # Standbys keep probing (and losing to the holder, not to each other).
    for a in rest:
        st = a.status()
        assert st is not None
        assert st["probes"] >= 2 and st["holder_mac"] == segment.mac(0)
    # The agents hold no capability; their privsep daemons hold exactly the narrow set.
    for a in procs:
        assert cap_eff(a.pid) == 0, f"{a.name} kept capabilities"
        daemons = children(a.pid)
        assert daemons, "no privsep daemon"
        assert any(cap_eff(d) & (1 << CAP_NET_ADMIN) for d in daemons)
    # Something real serves HTTP on the address: the leader's in-process proxy.
    doc = wait_until("metadata over HTTP", segment.curl)
    assert doc["server"] == "agent0" and doc["network_id"] == segment.network_id
    assert doc["path"] == "/latest/meta-data/"
    st = first.status()
    assert st is not None and st["proxy_running"] and st["role"] == "leader"


@pytest.mark.parametrize("round_", range(2))
def test_simultaneous_start_processes(
    segment_factory: Callable[[int], Segment],
    agents: Callable[..., AgentProcess],
    round_: int,
) -> None:
    seg = segment_factory(3)
    start_at = time.time() + 1.5  # all three past their imports, then claim at once
    procs = [agents(seg, i, start_at=start_at) for i in range(3)]
    leader = wait_settled(seg, procs)
    watch_stable(seg, procs, leader, seconds=1.0)
    probes = [a.status()["probes"] for a in procs]  # type: ignore[index]
    collisions = [a.status()["collisions"] for a in procs]  # type: ignore[index]
    print(f"round {round_}: leader agent{leader}, probes {probes}, collisions {collisions}")


def test_leader_killed_then_restarted(
    segment: Segment, agents: Callable[..., AgentProcess], tmp_path: Any
) -> None:
    procs = [agents(segment, i) for i in range(3)]
    old = wait_settled(segment, procs)
    before = wait_until("HTTP from the client", lambda: served_by(segment))
    assert before == f"agent{old}"

    # Hard kill: no step-down; the lease runs out in the kernel and a standby wins.
    t0 = time.monotonic()
    procs[old].kill()
    new = time_to_new_leader(segment, procs, old, t0)
    record_failover("SIGKILL (lease expiry)", time.monotonic() - t0)
    live = [a for a in procs if a.index != old]
    assert wait_settled(segment, live) == new
    # The client that talked to the old leader reaches the new one (NA with override).
    after = wait_until("HTTP reaches the new leader", lambda: served_by(segment) == f"agent{new}")
    assert after
    record_failover("SIGKILL (lease expiry), until HTTP answers", time.monotonic() - t0)

    # The old leader comes back: it stands by, and leadership does not move.
    back = agents(segment, old)
    procs2 = [*live, back]
    wait_until("restarted agent stands by", lambda: back.role() == "standby")
    assert wait_settled(segment, procs2) == new
    watch_stable(segment, procs2, new, seconds=2.0)
    assert served_by(segment) == f"agent{new}"

    # Clean stop (SIGTERM): the leader steps down and a standby takes over quickly.
    leader_proc = next(a for a in procs2 if a.index == new)
    t0 = time.monotonic()
    assert leader_proc.terminate() == 0
    third = time_to_new_leader(segment, procs2, new, t0)
    record_failover("SIGTERM (clean step-down)", time.monotonic() - t0)
    assert "stepping down (shutdown)" in leader_proc.log()
    assert segment.flags(new) is None, "the stopped leader left its address behind"
    remaining = [a for a in procs2 if a.index != new]
    assert wait_settled(segment, remaining) == third
    wait_until("HTTP after clean failover", serves(segment, third))
    record_failover("SIGTERM (clean step-down), until HTTP answers", time.monotonic() - t0)


def test_leader_link_down_then_up(segment: Segment, agents: Callable[..., AgentProcess]) -> None:
    procs = [agents(segment, i, proxy="command") for i in range(3)]
    old = wait_settled(segment, procs)
    assert wait_until("HTTP from the command proxy", lambda: served_by(segment)) == f"agent{old}"

    t0 = time.monotonic()
    segment.set_port(old, False)  # the leader loses carrier
    new = time_to_new_leader(segment, procs, old, t0)
    record_failover("link down", time.monotonic() - t0)
    wait_until("old leader ineligible", lambda: procs[old].role() == "ineligible")
    assert segment.flags(old) is None, "a leader without carrier kept the address"
    wait_until("HTTP after link failover", serves(segment, new))
    record_failover("link down, until HTTP answers", time.monotonic() - t0)

    segment.set_port(old, True)
    wait_until("old leader back as standby", lambda: procs[old].role() == "standby")
    assert wait_settled(segment, procs) == new
    watch_stable(segment, procs, new, seconds=2.0)
    st = procs[old].status()
    assert st is not None and st["last_step_down"]["reason"] == "no carrier"


def test_partition_healed_lowest_mac_keeps(
    segment: Segment, agents: Callable[..., AgentProcess]
) -> None:
    # Agent 0 alone on br1, agents 1 and 2 (and the client) on br0: each side elects one.
    segment.move(0, "br1")
    procs = [agents(segment, i) for i in range(3)]

    def two_leaders() -> list[int] | None:
        h = segment.holders()
        roles = [a.role() for a in procs]
        if 0 in h and len(h) == 2 and roles.count("leader") == 2:
            return h
        return None

    pair = wait_until("a leader on each side", two_leaders)
    other = pair[1] if pair[0] == 0 else pair[0]
    macs = {0: segment.mac(0), other: segment.mac(other)}
    keeper = min(macs, key=lambda i: int(macs[i].replace(":", ""), 16))
    loser = other if keeper == 0 else 0

    t0 = time.monotonic()
    segment.move(0, "br0")  # heal
    assert wait_settled(segment, procs) == keeper
    record_failover("partition healed, conflict resolved", time.monotonic() - t0)
    kept = procs[keeper].status()
    lost = procs[loser].status()
    assert kept is not None and lost is not None
    # The loser saw the keeper's announcement and yielded. The keeper may never have seen
    # the loser (it yields at the first frame it sees); if it did, it kept the address.
    assert lost["conflicts"]["count"] >= 1 and lost["conflicts"]["last"]["kept"] is False
    assert macs[keeper] in lost["conflicts"]["last"]["macs"]
    if kept["conflicts"]["count"]:
        assert kept["conflicts"]["last"]["kept"] is True
    assert lost["last_step_down"]["reason"].startswith("conflict")
    watch_stable(segment, procs, keeper, seconds=2.0)
    assert settled(segment, procs) == [keeper]
    wait_until("HTTP reaches the keeper", lambda: served_by(segment) == f"agent{keeper}")


def test_failover_repeated(segment: Segment, agents: Callable[..., AgentProcess]) -> None:
    """Many failovers in a row (link down, clean stop, hard kill), each measured.

    After each one: a single new leader, the client's HTTP request reaches it, and the
    previous leader comes back as a standby.
    """
    procs: dict[int, AgentProcess] = {i: agents(segment, i) for i in range(3)}
    leader = wait_settled(segment, list(procs.values()))
    for kind in ["link down"] * 3 + ["SIGTERM"] * 2 + ["SIGKILL"] * 2:
        wait_until("HTTP before", serves(segment, leader))
        t0 = time.monotonic()
        if kind == "link down":
            segment.set_port(leader, False)
        elif kind == "SIGTERM":
            procs[leader].terminate()
        else:
            procs[leader].kill()
        new = time_to_new_leader(segment, list(procs.values()), leader, t0)
        record_failover(LABELS[kind], time.monotonic() - t0)
        wait_until("HTTP after", serves(segment, new))
        record_failover(f"{LABELS[kind]}, until HTTP answers", time.monotonic() - t0)
        # Bring the old leader back; it must stand by.
        if kind == "link down":
            segment.set_port(leader, True)
        else:
            procs[leader] = agents(segment, leader)
        wait_until("old leader stands by", procs[leader].is_standby)
        assert wait_settled(segment, list(procs.values())) == new
        leader = new


def proxy_child(agent: AgentProcess) -> int:
    """The pid of the command proxy started by ``agent`` (not its privsep daemon)."""

    def find() -> list[int] | None:
        for pid in children(agent.pid):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                # The privsep daemon (a fork of the agent) carries the unrendered template
                # inside one JSON argument; only the proxy has "--listen-fd" on its own.
                if b"--listen-fd" in f.read().split(b"\0"):
                    return [pid]
        return None

    return wait_until(f"{agent.name}'s proxy process", find)[0]


def pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_proxy_death_hands_over_and_proxies_die_with_their_agent(
    segment: Segment, agents: Callable[..., AgentProcess]
) -> None:
    procs = [agents(segment, i, proxy="command") for i in range(3)]
    old = wait_settled(segment, procs)
    assert wait_until("HTTP", lambda: served_by(segment)) == f"agent{old}"

    # The leader's proxy dies: a leader that cannot serve steps down, another one serves.
    os.kill(proxy_child(procs[old]), signal.SIGKILL)
    new = time_to_new_leader(segment, procs, old, time.monotonic())
    wait_until("HTTP from the new leader", serves(segment, new))
    st = procs[old].status()
    assert st is not None and st["last_step_down"]["reason"] == "proxy died"
    assert st["last_failure"] is not None
    wait_until("old leader stands by", procs[old].is_standby)

    # A hard-killed agent takes its proxy process along (parent-death signal).
    child = proxy_child(procs[new])
    procs[new].kill()
    wait_until("the orphaned proxy exits", lambda: pid_gone(child), timeout=10)
    rest = [a for a in procs if a.index != new]
    third = wait_settled(segment, rest)
    wait_until("HTTP after the kill", serves(segment, third))


def test_two_networks_elect_independently(
    segment_factory: Callable[[int], Segment], agents: Callable[..., AgentProcess]
) -> None:
    """Two agents serving the same two networks: one leader per network, and trouble on
    one network moves only that network's leadership."""
    net_a, net_b = segment_factory(2), segment_factory(2)
    procs = [agents(net_a, i, also=[(net_b, i)]) for i in range(2)]

    def leader_of(seg: Segment) -> int:
        def one() -> list[int] | None:
            h = seg.holders()
            roles = [a.role(seg) for a in procs]
            ok = len(h) == 1 and roles.count("leader") == 1 and roles[h[0]] == "leader"
            return h if ok else None

        return wait_until(f"one leader on {seg.network_id}", one)[0]

    a, b = leader_of(net_a), leader_of(net_b)
    assert wait_until("HTTP on A", lambda: served_by(net_a)) == f"agent{a}"
    assert wait_until("HTTP on B", lambda: served_by(net_b)) == f"agent{b}"
    since_b = procs[b].status(net_b)["since"]  # type: ignore[index]

    net_a.set_port(a, False)  # only network A loses its leader's link
    wait_until("A fails over", lambda: net_a.holders() == [1 - a])
    wait_until("HTTP on A after failover", serves(net_a, 1 - a))
    assert leader_of(net_b) == b
    st = procs[b].status(net_b)
    assert st is not None and st["role"] == "leader" and st["since"] == since_b
    assert served_by(net_b) == f"agent{b}"


def test_privsep_helper_mode(
    segment: Segment, agents: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """The daemon started through privsep-helper (``helper_command`` from a config file)
    instead of a fork; the agent then drops every capability and still leads and serves."""
    helper = tmp_path / "privsep_helper.py"
    helper.write_text(BOOTSTRAP + "from oslo_privsep.daemon import helper_main\nhelper_main()\n")
    conf = tmp_path / "agent.conf"
    conf.write_text(f"[sgflows_metadata_privsep]\nhelper_command = {sys.executable} {helper}\n")
    agent = agents(segment, 0, privsep="helper", extra_args=["--config-file", str(conf)])
    assert wait_settled(segment, [agent]) == 0
    assert wait_until("HTTP", lambda: served_by(segment)) == "agent0"
    assert cap_eff(agent.pid) == 0
    assert "Running privsep helper" in agent.log()
    # The helper's daemon is not a child of the agent (it daemonised), unlike with fork.
    assert not any(cap_eff(c) for c in children(agent.pid))
    assert agent.terminate() == 0
    assert segment.flags(0) is None
