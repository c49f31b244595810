"""Differential fuzzing: random valid models and packets near their edges; the compiled flows
on a real userspace Open vSwitch and the evaluator must agree on every packet.

CI runs the bounded, derandomized ``ci`` profile; ``SGFLOWS_PROOF_PROFILE=long`` (1,000
models) or ``=soak`` (20,000) search further. A failure prints the shrunk model as JSON and
the ``sgflows trace`` / ``ofproto/trace`` commands that replay it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import sgflows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proofkit import Rig, counterexample
from strategies import east_west, models, packets
from support.ovs import Bridge

PACKETS_PER_MODEL = int(os.environ.get("SGFLOWS_PROOF_PACKETS", "40"))

LOCAL_PER_MODEL = PACKETS_PER_MODEL // 4

STATS = {
    "models": 0,
    "packets": 0,
    "local_packets": 0,
    "egress": 0,
    "egress_passing_anti_spoofing": 0,
    "allowed": 0,
}

Packet = tuple[str, str, str, str]
Scenario = tuple[dict[str, Any], list[Packet], list[Packet]]

# The profile registered by this directory's conftest (not imported from it: under
# importlib mode another directory's conftest can shadow the name).
PROFILE = os.environ.get("SGFLOWS_PROOF_PROFILE", "ci")


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    model = draw(models())
    n = PACKETS_PER_MODEL
    pkts = draw(st.lists(packets(model), min_size=n, max_size=n))
    k = LOCAL_PER_MODEL
    local = [p for p in draw(st.lists(east_west(model), min_size=k, max_size=k)) if p]
    return model, pkts, local


@pytest.fixture
def rig(bridge: Bridge) -> Iterator[Rig]:
    yield Rig(bridge, range(1, 4))


@settings(
    settings.get_profile(PROFILE),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one bridge, reloaded for every model
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(scenario=scenarios())
def test_switch_agrees_with_evaluator(rig: Rig, scenario: Scenario) -> None:
    model, pkts, local = scenario
    rig.load(model)
    STATS["models"] += 1
    for port, direction, packet, ct in pkts:
        d = sgflows.evaluate(model, packet, port=port, direction=direction, ct=ct)  # type: ignore[arg-type]
        switch = rig.verdict(port, direction, d.packet, ct)
        STATS["packets"] += 1
        STATS["allowed"] += d.allowed
        STATS["egress"] += direction == "egress"
        STATS["egress_passing_anti_spoofing"] += direction == "egress" and d.kind != "anti-spoofing"
        assert switch.allowed == d.allowed, counterexample(
            model, port, direction, d.packet, ct, d, switch
        )
    # Between two ports of the host: the source's egress AND the destination's ingress.
    for src, dst, packet, ct in local:
        out = sgflows.evaluate(model, packet, port=src, direction="egress", ct=ct)
        into = sgflows.evaluate(model, out.packet, port=dst, direction="ingress", ct=ct)
        switch = rig.verdict_local(src, dst, out.packet, ct)
        STATS["local_packets"] += 1
        expected = out.allowed and into.allowed
        decided_by = out if not out.allowed else into
        if switch.allowed != expected:
            raise AssertionError(
                f"from {src} to {dst} (the switch traced both pipelines)\n"
                + counterexample(
                    model, decided_by.port, decided_by.direction, out.packet, ct, decided_by,
                    switch,
                )
            )  # fmt: skip


def test_fuzz_figures(record_property: Any) -> None:
    """Runs after the fuzzer (file order): reports how much it covered."""
    for key, value in STATS.items():
        record_property(key, value)
    print(f"\nfuzzing: {STATS}")
    if STATS["models"]:
        assert STATS["packets"] == STATS["models"] * PACKETS_PER_MODEL
        assert 0 < STATS["allowed"] < STATS["packets"], "the fuzzer must see both verdicts"
        assert STATS["egress_passing_anti_spoofing"] * 2 >= STATS["egress"], STATS
