"""The hand-written verdict table (``verdict_table.py``) against the evaluator and against
the compiled flows on a real userspace Open vSwitch."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import sgflows
from click.testing import CliRunner
from proofkit import Rig, counterexample, ofports_of
from sgflows.cli import cli
from support.ovs import Bridge
from verdict_table import CASES, LOCAL_CASES, MIXED, MODELS, Case, LocalCase, fragment, rule


def test_table_covers_what_the_issue_asks() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    kinds = {c.expected for c in CASES}
    for expected in (
        "allow:rule", "drop:default-drop", "allow:implicit", "drop:anti-spoofing",
        "drop:forbidden", "allow:conntrack", "drop:conntrack", "allow:unfiltered", "drop:not-ip",
    ):  # fmt: skip
        assert expected in kinds, expected
    assert {c.model for c in CASES} == set(MODELS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_evaluator(case: Case) -> None:
    d = sgflows.evaluate(
        MODELS[case.model], case.packet, port=case.port, direction=case.direction, ct=case.ct
    )  # type: ignore[arg-type]
    verdict, kind = case.expected.split(":")
    assert (d.verdict, d.kind) == (verdict, kind), f"{d.reason}\n{d.packet}"


@pytest.mark.parametrize("shared_stage", [True, False], ids=["shared-stage", "per-binding"])
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_switch(bridge: Bridge, model_name: str, shared_stage: bool) -> None:
    model = MODELS[model_name]
    rig = Rig(bridge, ofports_of([model]))
    rig.load(model, shared_stage=shared_stage)
    cases = [c for c in CASES if c.model == model_name]
    failures = []
    for case in cases:
        d = sgflows.evaluate(
            model, case.packet, port=case.port, direction=case.direction, ct=case.ct
        )  # type: ignore[arg-type]
        switch = rig.verdict(case.port, case.direction, d.packet, case.ct)
        expected = case.expected.split(":")[0]
        if ("allow" if switch.allowed else "drop") != expected:
            failures.append(
                f"--- {case.id}: expected {expected}\n"
                + counterexample(model, case.port, case.direction, d.packet, case.ct, d, switch)
            )
    assert not failures, f"{len(failures)} of {len(cases)} cases fail on the switch:\n" + "\n".join(
        failures
    )


@pytest.mark.parametrize("case", LOCAL_CASES, ids=[c.id for c in LOCAL_CASES])
def test_evaluator_east_west(case: LocalCase) -> None:
    out = sgflows.evaluate(MIXED, case.packet, port=case.src, direction="egress", ct=case.ct)
    into = sgflows.evaluate(MIXED, out.packet, port=case.dst, direction="ingress", ct=case.ct)
    verdict = "allow" if out.allowed and into.allowed else "drop"
    assert verdict == case.expected, f"{out.reason} / {into.reason}"


def test_switch_east_west(bridge: Bridge) -> None:
    rig = Rig(bridge, ofports_of([MIXED]))
    rig.load(MIXED)
    failures = []
    for case in LOCAL_CASES:
        d = sgflows.evaluate(MIXED, case.packet, port=case.src, direction="egress", ct=case.ct)
        switch = rig.verdict_local(case.src, case.dst, d.packet, case.ct)
        if ("allow" if switch.allowed else "drop") != case.expected:
            failures.append(f"--- {case.id}: expected {case.expected}\n{switch.replay()}\n"
                            f"{switch.trace.text}")  # fmt: skip
    assert not failures, "\n".join(failures)


# Found by the proof suite (docs/proof.md, "Findings"): frames from outside for a broadcast,
# multicast or unknown-unicast MAC used to fall to NORMAL, which flooded them to the VM ports
# without their ingress rules. Table 60 now runs group-addressed frames through every local
# port's ingress pipeline and drops unknown unicast for the local networks; these cases hold
# the switch to the evaluator for them, on a port without rules and on one whose rules allow
# some of them.
FLOODED = [
    ("broadcast", "udp,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.6,nw_dst=10.0.0.255,udp_dst=9999"),
    ("multicast", "udp,dl_dst=01:00:5e:00:00:fb,nw_src=10.0.0.6,nw_dst=224.0.0.251,udp_dst=53"),
    ("unknown-unicast", "tcp,dl_dst=fa:16:3e:00:00:55,nw_src=10.0.0.6,tcp_dst=22"),
    (
        "dhcp-offer-broadcast",
        "udp,dl_dst=ff:ff:ff:ff:ff:ff,nw_src=10.0.0.2,nw_dst=255.255.255.255,udp_src=67,udp_dst=68",
    ),
    (
        "arp-request-broadcast",
        "arp,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=10.0.0.1,arp_tpa=10.0.0.5",
    ),
]
FLOOD_MODELS = {
    "no-rules": MODELS["empty_stateless"],
    "udp-allowed": fragment([rule("ingress", protocol="udp")], stateful=False),
}


@pytest.mark.parametrize("model_name", sorted(FLOOD_MODELS))
@pytest.mark.parametrize(("name", "packet"), FLOODED, ids=[n for n, _ in FLOODED])
def test_switch_flooded_ingress_follows_the_rules(
    bridge: Bridge, model_name: str, name: str, packet: str
) -> None:
    model = FLOOD_MODELS[model_name]
    d = sgflows.evaluate(model, packet, port="vm")
    rig = Rig(bridge, ofports_of([model]))
    rig.load(model)
    switch = rig.verdict("vm", "ingress", d.packet)
    assert switch.allowed == d.allowed, counterexample(
        model, "vm", "ingress", d.packet, None, d, switch
    )


def test_flood_cases_cover_both_verdicts() -> None:
    verdicts = {
        sgflows.evaluate(m, p, port="vm").allowed for m in FLOOD_MODELS.values() for _, p in FLOODED
    }
    assert verdicts == {True, False}


def test_counterexample_replays_with_sgflows_trace_and_ofproto_trace(
    bridge: Bridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a fuzzing failure prints is enough to replay both sides by hand."""
    monkeypatch.setenv("SGFLOWS_COUNTEREXAMPLES", str(tmp_path))
    case = next(c for c in CASES if c.id == "ssh_stateful-in-http-reply")
    model = MODELS[case.model]
    rig = Rig(bridge, ofports_of([model]))
    rig.load(model)
    d = sgflows.evaluate(model, case.packet, port=case.port, direction=case.direction, ct=case.ct)
    switch = rig.verdict(case.port, case.direction, d.packet, case.ct)
    text = counterexample(model, case.port, case.direction, d.packet, case.ct, d, switch)
    lines = [ln.strip() for ln in text.splitlines()]
    trace_cmd = shlex.split(next(ln for ln in lines if ln.startswith("sgflows trace ")))
    saved = Path(trace_cmd[2])
    assert saved.parent == tmp_path and json.loads(saved.read_text()) == model
    replayed = CliRunner().invoke(cli, [*trace_cmd[1:], "--json"])
    assert json.loads(replayed.output)["verdict"] == d.verdict == "allow"
    ofproto_line = next(ln for ln in lines if ln.startswith("ovs-appctl ofproto/trace"))
    ofproto = shlex.split(ofproto_line, comments=True)
    flow, ct_next = ofproto[3], ofproto[5::2]
    assert ofproto[4::2] == ["--ct-next"] * len(ct_next)
    assert rig.bridge.trace(flow, ct_next).ports == (1,)  # output to the VM's port
