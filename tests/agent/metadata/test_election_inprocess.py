"""Elections run in this process (one shared privsep daemon): eligibility, binding, races."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from mdhelpers import METADATA, TEST_TIMERS, Segment, answers, ip, wait_until
from sgflows.agent import privileged
from sgflows.agent.election import (
    ElectionTimers,
    MetadataElection,
    MetadataElectionManager,
    NetworkSpec,
    Role,
)
from sgflows.agent.metadata_proxy import HTTPMetadataProxy

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
    pytest.mark.usefixtures("privsep_in_process"),
]

TIMERS = ElectionTimers(**TEST_TIMERS)  # type: ignore[arg-type]

Factory = Callable[..., MetadataElection]


@pytest.fixture
def election() -> Iterator[Factory]:
    made: list[MetadataElection] = []

    def make(seg: Segment, i: int, *, bound: bool = True, start: bool = True) -> MetadataElection:
        spec = NetworkSpec(seg.network_id, seg.agents[i], "eth0", bound=bound)
        e = MetadataElection(spec, HTTPMetadataProxy(f"agent{i}"), TIMERS)
        made.append(e)
        if start:
            e.start()
        return e

    yield make
    for e in made:
        e.stop()


def never_leads(seg: Segment, i: int, e: MetadataElection, seconds: float) -> None:
    """Watch for ``seconds``: agent ``i`` never holds the address nor claims leadership."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert e.role is not Role.LEADER
        assert seg.flags(i) is None, "an ineligible agent put the address on its interface"
        time.sleep(0.05)


def test_down_interface_never_wins(segment: Segment, election: Factory) -> None:
    segment.set_eth0(0, False)
    e = election(segment, 0)
    wait_until("ineligible", lambda: e.role is Role.INELIGIBLE)
    never_leads(segment, 0, e, 2.0)
    assert e.status()["ineligible_reason"] == "interface down"
    assert e.status()["probes"] == 0

    segment.set_eth0(0, True)
    wait_until("leader once up", lambda: segment.holders() == [0] and e.role is Role.LEADER)

    # Down and up again while leading: step down, then lead again, with no error on the way
    # (the ND watch survives the link going down).
    segment.set_eth0(0, False)
    wait_until("steps down when down", lambda: e.role is Role.INELIGIBLE)
    assert segment.flags(0) is None
    segment.set_eth0(0, True)
    wait_until("leads again", lambda: segment.holders() == [0] and e.role is Role.LEADER)
    assert e.status()["last_failure"] is None
    assert e.status()["wins"] == 2

    # Carrier lost (the bridge side goes down): the leader steps down and stays out.
    segment.set_port(0, False)
    wait_until("steps down without carrier", lambda: e.role is Role.INELIGIBLE)
    assert e.status()["ineligible_reason"] == "no carrier"
    assert e.status()["last_step_down"]["reason"] == "no carrier"
    never_leads(segment, 0, e, 1.5)


def test_unbound_port_never_wins_until_bound(segment: Segment, election: Factory) -> None:
    e = election(segment, 0, bound=False)
    wait_until("ineligible", lambda: e.role is Role.INELIGIBLE)
    never_leads(segment, 0, e, 2.0)
    assert e.status()["ineligible_reason"] == "port not bound"

    e.set_bound(True)
    wait_until("leader once bound", lambda: segment.holders() == [0] and e.role is Role.LEADER)
    doc = wait_until("HTTP", segment.curl)
    assert doc["server"] == "agent0"
    assert e.status()["proxy_running"]

    e.set_bound(False)  # the control plane unbinds the port: step down
    wait_until("steps down when unbound", lambda: e.role is Role.INELIGIBLE)
    assert segment.flags(0) is None
    assert not e.status()["proxy_running"]
    assert segment.curl() is None


def test_standby_takes_over_after_clean_stop(segment: Segment, election: Factory) -> None:
    a = election(segment, 0)
    wait_until("agent0 leads", lambda: a.role is Role.LEADER)
    b = election(segment, 1)
    wait_until("agent1 stands by", lambda: b.role is Role.STANDBY and b.status()["probes"] >= 1)
    assert b.status()["holder_mac"] == segment.mac(0)
    # Probing again and again does not reset when the standby became one.
    since = b.status()["since"]
    wait_until("agent1 probes again", lambda: b.status()["probes"] >= 3)
    assert b.status()["since"] == since
    a.stop()
    assert a.role is Role.STOPPED and segment.flags(0) is None
    wait_until("agent1 leads", lambda: segment.holders() == [1] and b.role is Role.LEADER)
    doc = wait_until("HTTP from agent1", segment.curl)
    assert doc["server"] == "agent1"


def test_simultaneous_starts_repeated(segment: Segment, election: Factory) -> None:
    """Three elections started in the same instant, many times: always exactly one leader."""
    rounds, collisions, settle = 12, [], []
    for _ in range(rounds):
        es = [election(segment, i, start=False) for i in range(3)]
        t0 = time.monotonic()
        for e in es:
            e.start()

        def one_leader(es: list[MetadataElection] = es) -> list[int] | None:
            holders = segment.holders()
            leads = [i for i, e in enumerate(es) if e.role is Role.LEADER]
            if len(holders) == 1 and leads == holders:
                return holders
            return None

        (leader,) = wait_until("exactly one leader", one_leader)
        settle.append(time.monotonic() - t0)
        collisions.append(sum(e.status()["collisions"] for e in es))
        # Hold still for a moment: nobody else takes it.
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            assert segment.holders() == [leader]
            assert [i for i, e in enumerate(es) if e.role is Role.LEADER] == [leader]
            time.sleep(0.05)
        threads = [threading.Thread(target=e.stop) for e in es]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert segment.holders() == []
    print(
        f"{rounds} simultaneous starts: collisions per round {collisions}; time to one "
        f"leader median {statistics.median(settle):.3f} s, max {max(settle):.3f} s"
    )


def test_status_provider_api(segment: Segment) -> None:
    manager = MetadataElectionManager(proxy_hook=HTTPMetadataProxy("agent0"), timers=TIMERS)
    try:
        manager.add_network(NetworkSpec(segment.network_id, segment.agents[0], "eth0"))
        providers = manager.status_providers()
        assert list(providers) == [segment.network_id]
        provider = providers[segment.network_id]
        wait_until("leader", lambda: provider.status()["role"] == "leader")
        st = provider.status()
        json.dumps(st)  # report-ready
        assert len(json.dumps(manager.status())) < 4095  # Neutron's configurations cap
        assert st["address"] == "fe80::a9fe:a9fe"
        assert st["since"] <= time.time() and st["probes"] >= 1 and st["wins"] == 1
        assert st["conflicts"] == {"count": 0, "last": None}
        assert st["mac"] == segment.mac(0) == st["holder_mac"]
        assert set(st) >= {"role", "since", "probes", "last_failure", "conflicts"}
    finally:
        manager.stop()
    assert manager.status()[segment.network_id]["role"] == "stopped"
    assert segment.flags(0) is None


def test_privsep_refuses_other_namespaces_and_names(segment: Segment) -> None:
    with pytest.raises(privileged.PrivilegedError):
        privileged.address_flags("../../proc/1/ns/net", "eth0")
    with pytest.raises(privileged.PrivilegedError):
        privileged.claim_address(segment.agents[0], "eth0 label x", 3)
    with pytest.raises(privileged.PrivilegedError):
        privileged.claim_address(segment.agents[0], "eth0", 0)
    with pytest.raises(privileged.PrivilegedError):
        privileged.send_listener(segment.agents[0], "eth0", 80, "/tmp/not-a-handover")
    with pytest.raises(privileged.PrivilegedError):
        privileged.set_address_lease(segment.agents[0], "eth0", 0)
    # The daemon runs the real thing: it can add and remove the address.
    assert privileged.claim_address(segment.agents[0], "eth0", 3) is True
    assert privileged.claim_address(segment.agents[0], "eth0", 3) is False
    # Finite from the first moment, and without a prefix route of its own.
    assert segment.lifetime(0) in ("valid_lft 3sec", "valid_lft 2sec")
    flags = privileged.address_flags(segment.agents[0], "eth0")
    assert flags is not None and flags & privileged.IFA_F_NOPREFIXROUTE
    assert privileged.release_address(segment.agents[0], "eth0") is True
    assert privileged.address_flags(segment.agents[0], "eth0") is None


def test_claim_brings_the_link_local_route_an_interface_lacks(segment: Segment) -> None:
    """The metadata address has no prefix route of its own; on an interface without a
    link-local address (so without the kernel's fe80::/64 route) the claim adds that route,
    and the address answers."""
    ns = segment.agents[0]
    ip("-n", ns, "-6", "addr", "flush", "dev", "eth0", "scope", "link")
    assert segment.route_problem(ns) == "no fe80::/64 route"
    assert privileged.claim_address(ns, "eth0", 5) is True
    try:
        assert segment.route_problem(ns) is None
        wait_until("DAD passes", lambda: segment.holders() == [0])
        assert answers(segment, METADATA)
    finally:
        privileged.release_address(ns, "eth0")
    # The route stays (it is the interface's, not the address's).
    assert segment.route_problem(ns) is None
