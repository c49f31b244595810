"""The lease and the namespace around it (issue 22): the metadata address must never touch
the interface's ``fe80::/64`` route, and every address an agent adds must expire if the agent
dies, whenever it dies.

Agents are real processes (privsep by fork, capabilities dropped) on a Linux bridge; the
client pings over ICMPv6 from its own namespace, as a guest would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from mdhelpers import (
    METADATA,
    TEST_TIMERS,
    TUNED_DAD,
    AgentProcess,
    Pinger,
    Segment,
    answers,
    dad_seconds,
    record_failover,
    wait_settled,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

# DAD of about 0.5 s (no initial delay, one solicitation 500 ms later), and a renewal well
# after that: a leader whose route were born expired would stay mute until it renews.
HALF_SECOND_DAD = {**TUNED_DAD, "retrans_time_ms": 500}
SLOW_RENEW = {**TEST_TIMERS, "lease": 3, "lease_renew": 1.5}


def new_holder(seg: Segment, old: int) -> int:
    def one() -> list[int] | None:
        h = seg.holders()
        return h if len(h) == 1 and h[0] != old else None

    return wait_until("a new holder", one, timeout=20, interval=0.02)[0]


def all_routes_fine(seg: Segment) -> None:
    for ns in seg.agents:
        problem = seg.route_problem(ns)
        assert problem is None, f"{ns}: {problem}"


def test_new_leader_answers_within_one_dad_time_and_its_route_stays_valid(
    segment_factory: Callable[..., Segment], agents: Callable[..., AgentProcess]
) -> None:
    seg = segment_factory(3, HALF_SECOND_DAD)
    dad = dad_seconds(seg.dad)
    procs = [agents(seg, i, timers=SLOW_RENEW) for i in range(3)]
    old = wait_settled(seg, procs)
    pinger = Pinger(seg, METADATA)
    try:
        wait_until("the leader answers pings", lambda: pinger.answered_since(time.time() - 0.2))
        procs[old].terminate()
        new = new_holder(seg, old)
        # The new leader's own word for when it started leading (right after its DAD).
        st = wait_until("the new leader's status", lambda: procs[new].role() == "leader")
        assert st
        since = procs[new].status()["since"]  # type: ignore[index]
        first = wait_until(
            "an echo reply from the new leader", lambda: pinger.first_reply_after(since)
        )
        gap = first - since
        record_failover("new leader: leading until it answers pings", gap)
        assert gap <= dad, f"the new leader answered {gap:.3f} s after leading (DAD {dad} s)"
        all_routes_fine(seg)
        # Past the lease and several renewals: no route in any namespace has taken on the
        # lease, and the leader keeps answering.
        time.sleep(SLOW_RENEW["lease"] + 1.5)
        all_routes_fine(seg)
        assert pinger.answered_since(time.time() - 0.5), "the leader stopped answering"
    finally:
        pinger.close()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_holders_namespace_keeps_its_own_link_local(
    segment_factory: Callable[..., Segment], agents: Callable[..., AgentProcess], how: str
) -> None:
    seg = segment_factory(2)
    procs = [agents(seg, i) for i in range(2)]
    old = wait_settled(seg, procs)
    own = seg.own_link_local(seg.agents[old])
    assert answers(seg, own), "the holder's namespace does not answer before the test"
    if how == "SIGTERM":
        procs[old].terminate()
    else:
        procs[old].kill()
    new = new_holder(seg, old)
    assert new == 1 - old
    # Whatever lifetime the address had, it has run out (lease + kernel granularity).
    time.sleep(TEST_TIMERS["lease"] + 1.5)
    assert seg.flags(old) is None, "the stopped holder still has the metadata address"
    problem = seg.route_problem(seg.agents[old])
    assert problem is None, f"the stopped holder's namespace: {problem}"
    assert answers(seg, own), f"after {how}, {own} in the old holder's namespace is cut off"
    assert answers(seg, METADATA), "the new leader does not answer"


def test_a_crash_before_claiming_leaves_no_address(
    segment: Segment, agents: Callable[..., AgentProcess]
) -> None:
    missing = f"/run/sgflows-missing-{segment.sfx}/metadata.json"
    bad = agents(segment, 0, status_file=missing)
    seen: list[int | None] = []
    while bad.proc.poll() is None:
        seen.append(segment.flags(0))
        time.sleep(0.02)
    seen.append(segment.flags(0))
    assert bad.proc.returncode != 0
    log = bad.log()
    assert "Traceback" not in log, log[-2000:]
    assert "status file" in log and missing in log, log[-2000:]
    assert set(seen) == {None}, f"the failed agent added the address (flags {seen})"
    # Nothing left behind: a healthy agent takes the address at once.
    good = agents(segment, 1)
    assert wait_settled(segment, [good], timeout=10) == 1


def test_a_crash_after_claiming_leaves_an_address_that_expires(
    segment_factory: Callable[..., Segment], agents: Callable[..., AgentProcess]
) -> None:
    # A DAD of one second: time to kill the agent while its probe's address is tentative.
    seg = segment_factory(1, {**TUNED_DAD, "retrans_time_ms": 1000})
    timers = {**TEST_TIMERS, "lease": 3, "lease_renew": 1.0}
    agent = agents(seg, 0, timers=timers)
    wait_until(
        "the probe's tentative address",
        lambda: (seg.flags(0) or 0) & 0x40,
        timeout=20,
        interval=0.01,
    )
    agent.kill()
    lifetime = seg.lifetime(0)
    t0 = time.monotonic()
    assert lifetime is not None and lifetime != "valid_lft forever", lifetime
    # The kernel removes it within its lifetime (+1 s: it checks lifetimes once a second).
    wait_until(
        "the dead agent's address to expire",
        lambda: seg.flags(0) is None,
        timeout=timers["lease"] + 1.5,
        interval=0.05,
    )
    record_failover("crash while probing: address expired", time.monotonic() - t0)
    assert seg.route_problem(seg.agents[0]) is None
