"""Random packets through the emitted rules, run by an independent interpreter of rte_flow
semantics (``rteinterp.Switch``), against the security-group semantics (``rteinterp.Oracle``).

The interpreter fails on a group miss and on two matching rules at one priority, so every
packet also checks the layout's invariants. Verdicts are compared exactly: a drop, a port
(VM or uplink), or software on a given representor (what the OpenFlow pipeline then decides).
"""

from __future__ import annotations

import random

import pytest
import sgflows
from rtehelpers import two_tier
from rteinterp import Oracle, Switch, random_model, random_packet

SOFTWARE_PORT = 999  # ntnic: port_id of the software switch, distinct from every VM and uplink
CONFIGS = [
    (profile, forward)
    for profile in sgflows.RTE_FLOW_PROFILES
    for forward in ("software", "uplink")
]


def _check(model: dict, profile: str, forward: str, rng: random.Random, packets: int) -> int:
    uplink = 0
    result = sgflows.compile(
        model,
        target="rte_flow",
        profile=profile,
        forward=forward,
        uplink_port=uplink,
        proxy_port=uplink,
        software_port=SOFTWARE_PORT,
    )
    switch = Switch(result.to_testpmd().splitlines(), software_port=SOFTWARE_PORT)
    oracle = Oracle(model, profile, forward, uplink)
    checked = 0
    for _ in range(packets):
        pkt = random_packet(rng, model, uplink)
        got = switch.run(pkt)
        want = oracle.run(pkt)
        if profile == "ntnic" and want[0] == "software":
            want = ("software", None)  # port_id cannot name the representor it came from
        assert got == want, f"{profile}/{forward}: {pkt.describe()}: rules {got}, oracle {want}"
        checked += 1
    return checked


@pytest.mark.parametrize(("profile", "forward"), CONFIGS)
def test_random_models_agree_with_oracle(profile: str, forward: str) -> None:
    rng = random.Random(f"{profile}-{forward}-1128")
    checked = sum(_check(random_model(rng), profile, forward, rng, 150) for _ in range(25))
    assert checked == 25 * 150


@pytest.mark.parametrize(("profile", "forward"), CONFIGS)
def test_two_tier_agrees_with_oracle(profile: str, forward: str) -> None:
    rng = random.Random(5)
    assert _check(two_tier(), profile, forward, rng, 1500) == 1500


def test_interpreter_fails_on_overlap_and_miss() -> None:
    """The interpreter's own guarantees, on hand-written rules."""
    from rteinterp import Ambiguous, GroupMiss, Packet

    pkt = Packet(
        in_port=1,
        eth_src=1,
        eth_dst=2,
        ethertype=0x0800,
        ip_src=1,
        ip_dst=2,
        proto=6,
        sport=1,
        dport=80,
    )
    base = "flow create 0 group 0 priority 0 transfer pattern represented_port ethdev_port_id is 1"
    overlap = Switch(
        [
            f"{base} / eth / end actions drop / end",
            f"{base} / eth / ipv4 / tcp dst is 80 / end actions drop / end",
        ]
    )
    with pytest.raises(Ambiguous):
        overlap.run(pkt)
    miss = Switch([f"{base} / eth / ipv4 / tcp dst is 81 / end actions drop / end"])
    with pytest.raises(GroupMiss):
        miss.run(pkt)
    ok = Switch(
        [
            f"{base} / eth / ipv4 / tcp dst spec 64 dst mask 0xffc0 / end "
            "actions count / jump group 5 / end",
            "flow create 0 group 0 priority 1 transfer pattern eth / end actions drop / end",
            "flow create 0 group 5 priority 0 transfer pattern eth / end "
            "actions represented_port ethdev_port_id 7 / end",
        ]
    )
    assert ok.run(pkt) == ("port", 7)
