"""The single-port (non-transfer) rendering against the reference evaluator.

For random models and edge-biased packets (``rteinterp.random_packet``), every filtered
port's plain rules are interpreted like the NIC would (lowest priority wins, two matching
rules at one priority with different fates fail the test): a packet the rules accept or drop
must get the same verdict from ``sgflows.evaluate`` for that port and direction; a packet
they send to the software queue is decided by the switch (counted, not compared). Run for
``net_tap`` (which sends ICMP, ARP, port blocks and everything to the VM to software) and for
``full``. The packets-through-``net_tap`` check in the QEMU guest is ``test_testpmd.py``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sgflows
from rtehelpers import two_tier
from rteinterp import Packet, mac_int, parse_line, random_model, rule_matches
from sgflows import rte_probe
from test_evaluator import ofctl

LOG = logging.getLogger(__name__)

ACCEPT_QUEUE, SOFTWARE_QUEUE = 0, 1
ROOT = Path(__file__).resolve().parents[2]


def _rules(lines: list[str], attr: str) -> list[Any]:
    """The lines of one attribute, parsed (the interpreter knows transfer rules' syntax:
    the attribute is taken out first)."""
    out = []
    for line in lines:
        if f" {attr} pattern " in line:
            out.append(parse_line(line.replace(f" {attr} pattern ", " pattern ")))
    return out


def _verdict(rules: list[Any], p: Packet) -> str:
    matching = [r for r in rules if rule_matches(r, p)]
    if not matching:
        return "none"
    best = min(r.priority for r in matching)
    fates = {" ".join([r.actions[0][0], *r.actions[0][1]]) for r in matching if r.priority == best}
    assert len(fates) == 1, f"ambiguous at priority {best}: {fates} for {p.describe()}"
    fate = fates.pop()
    if fate == "drop":
        return "drop"
    if fate in (f"queue index {ACCEPT_QUEUE}", "passthru"):
        return "accept"
    assert fate == f"queue index {SOFTWARE_QUEUE}", fate
    return "software"


def _compare(
    model: dict[str, Any],
    profile: str,
    rng: random.Random,
    packets: int,
    **narrowing: Any,
) -> Counter[str]:
    seen: Counter[str] = Counter()
    reps = {p["id"]: model["bindings"][p["id"]]["representor"] for p in model["ports"]}
    rendered = {}
    for port in model["ports"]:
        r = sgflows.compile_rte_flow_port(model, port["id"], profile=profile, **narrowing)
        assert r.offloadable, r.report_text()
        lines = r.to_testpmd().splitlines()
        assert all(" transfer " not in x and " group " not in x for x in lines)
        modes = {d["attr"]: d["mode"] for d in r.report["directions"]}
        rendered[port["id"]] = (_rules(lines, "ingress"), _rules(lines, "egress"), modes)
    by_mac = {mac_int(p["mac_address"]): p["id"] for p in model["ports"]}
    for _ in range(packets):
        pkt = random_packet_for(rng, model)
        if pkt.in_port != 0:
            port = next(pid for pid, rep in reps.items() if rep == pkt.in_port)
            rules, direction, mode = rendered[port][0], "egress", rendered[port][2]["ingress"]
        else:
            if pkt.eth_dst not in by_mac:
                continue
            port = by_mac[pkt.eth_dst]
            rules, direction, mode = rendered[port][1], "ingress", rendered[port][2]["egress"]
        if mode == "unfiltered":
            continue
        if pkt.icmp_type == 136 and pkt.icmp_code and profile == "full":
            # Known gap of the transfer layout (not of this rendering): the icmp6_nd_na item
            # checks the target but not the code, while the evaluator (like Open vSwitch)
            # drops an advertisement with code != 0. test_evaluator.py does not see it
            # because it leaves out packets to local MACs.
            continue
        got = _verdict(rules, pkt)
        if mode == "software":
            # Nothing installed towards the VM, or one rule to software from it.
            assert got in ("none", "software"), (port, direction, got)
            seen[f"{direction} software"] += 1
            continue
        assert got != "none", f"{port} {direction}: no rule matched {pkt.describe()}"
        if got == "software":
            seen[f"{direction} software"] += 1
            continue
        decision = sgflows.evaluate(model, ofctl(pkt), port=port, direction=direction)
        assert decision.allowed == (got == "accept"), (
            f"{profile}: {direction} {port} {ofctl(pkt)}: rules {got}, evaluator "
            f"{decision.verdict} ({decision.reason})"
        )
        seen[f"{direction} {got}"] += 1
    return seen


def random_packet_for(rng: random.Random, model: dict[str, Any]) -> Packet:
    return __import__("rteinterp").random_packet(rng, model, 0)


@pytest.mark.parametrize("profile", sgflows.RTE_FLOW_PORT_PROFILES)
def test_port_rules_agree_with_the_evaluator(profile: str) -> None:
    rng = random.Random(f"single-{profile}")
    seen: Counter[str] = Counter()
    for _ in range(12):
        seen += _compare(random_model(rng), profile, rng, 80)
    seen += _compare(two_tier(stateless=True), profile, rng, 400)
    for kind in ("egress accept", "egress drop", "egress software"):
        assert seen[kind] >= 20, seen
    if profile == "full":
        for kind in ("ingress accept", "ingress drop"):
            assert seen[kind] >= 20, seen
    else:
        # net_tap has no icmp6 item for the ND allowances: all traffic to the VM is the
        # switch's.
        assert seen["ingress software"] >= 20 and not seen["ingress accept"], seen


def _probe_refusing(*shapes: str) -> list[rte_probe.Capability]:
    """A probe table in which the driver created every shape but ``shapes``."""
    unknown = set(shapes) - {s for s, _, _ in rte_probe.SHAPES}
    assert not unknown, unknown
    return [rte_probe.Capability(s, s not in shapes, claimed, "" if s not in shapes else "refused")
            for s, _, claimed in rte_probe.SHAPES]  # fmt: skip


def test_a_probe_refusing_ip_addresses_moves_their_rules_to_software() -> None:
    model = two_tier(stateless=True)
    narrowing = rte_probe.narrowing(_probe_refusing("ipv4 prefix/exact/proto"))
    assert narrowing == {"refused": ["ipv4 prefix/exact/proto"], "max_priority": None}
    plain = sgflows.compile_rte_flow_port(model, "web-1")
    narrowed = sgflows.compile_rte_flow_port(model, "web-1", **narrowing)
    assert narrowed.offloadable, narrowed.report_text()

    def addressed(r: sgflows.RteFlowPortResult) -> list[Any]:
        return [x for x in r.document()["rules"] if x["fate"] != "software"
                and any(i["type"] in ("ipv4", "ipv6") and (i.get("spec") or {}).keys()
                        & {"src", "dst"} for i in x["pattern"])]  # fmt: skip

    assert addressed(plain) and not addressed(narrowed)
    before = {x["rule"]: x["status"] for x in plain.report["rules"]}
    moved = [x for x in narrowed.report["rules"]
             if x["status"] == "software" and before[x["rule"]] == "offloaded"]  # fmt: skip
    assert moved and all("matches no IP addresses" in x["reason"] for x in moved), moved
    assert narrowed.report["probe_refused"] == ["ipv4 prefix/exact/proto"]
    assert "narrowed by the probe, refused: ipv4 prefix/exact/proto" in narrowed.report_text()
    rng = random.Random("probe-ip")
    seen = _compare(model, "net_tap", rng, 400, **narrowing)
    assert seen["egress software"] > _compare(model, "net_tap", rng, 400)["egress software"]


@pytest.mark.parametrize("profile", sgflows.RTE_FLOW_PORT_PROFILES)
def test_every_refused_shape_keeps_the_verdicts_of_the_evaluator(profile: str) -> None:
    """Each shape refused alone (and the priority bound narrowed): the rules still agree
    with sgflows.evaluate where they decide, or the port refuses to install (queue)."""
    rng = random.Random(f"probe-each-{profile}")
    models = [random_model(rng) for _ in range(2)] + [two_tier(stateless=True)]
    for shape, _, _ in rte_probe.SHAPES:
        narrowing = rte_probe.narrowing(_probe_refusing(shape))
        if shape == "queue action":
            r = sgflows.compile_rte_flow_port(models[-1], "web-1", profile=profile, **narrowing)
            assert not r.offloadable and "refuses the queue action" in (r.problem or "")
            continue
        for model in models:
            _compare(model, profile, rng, 60, **narrowing)
    tight = rte_probe.narrowing(_probe_refusing("priority 4094"))
    assert tight["max_priority"] == max(
        rte_probe.trial_priority(i) for i, (_, text, _) in enumerate(rte_probe.SHAPES)
        if "PRIO" in text
    )  # fmt: skip
    few = sgflows.compile_rte_flow_port(models[-1], "web-1", profile=profile, max_priority=2)
    assert all(x["attr"]["priority"] <= 2 for x in few.document()["rules"])


def test_a_probe_never_widens_and_unknown_shapes_are_refused() -> None:
    model = two_tier(stateless=True)
    plain = sgflows.compile_rte_flow_port(model, "edge-1").to_json()
    assert sgflows.compile_rte_flow_port(model, "edge-1", refused=[]).to_json() == plain
    assert sgflows.compile_rte_flow_port(model, "edge-1", max_priority=65535).to_json() == plain
    with pytest.raises(ValueError, match='unknown probed shape "vxlan"'):
        sgflows.compile_rte_flow_port(model, "edge-1", refused=["vxlan"])


def test_cli_probed_table_narrows_compile_and_is_shown(tmp_path: Path) -> None:
    from test_api import ROOT, _cli

    saved = tmp_path / "probe.json"
    saved.write_text(rte_probe.to_json(_probe_refusing("eth src exact")))
    shown = _cli("rte-flow", "show", str(saved))
    assert shown.returncode == 0, shown.stderr
    assert "eth src exact              refused  <- profile says yes" in shown.stdout
    assert "narrows the profile by: eth src exact" in shown.stdout
    example = str(ROOT / "examples" / "two-tier.json")
    args = ["compile", example, "--target", "rte_flow", "--port", "edge-1", "--report"]
    out = _cli(*args, "--probed", str(saved))
    assert out.returncode == 0, out.stderr
    assert "profile narrowed by the probe, refused: eth src exact" in out.stderr
    assert out.stdout != _cli(*args).stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    refused = _cli(*args, "--probed", str(bad))
    assert refused.returncode == 2 and "not a probe result" in refused.stderr
    transfer = _cli("compile", example, "--target", "rte_flow", "--probed", str(saved))
    assert transfer.returncode == 2 and "only with --port" in transfer.stderr


def test_not_offloadable_without_a_software_queue() -> None:
    r = sgflows.compile_rte_flow_port(two_tier(), "web-1", software_queue=None)
    assert not r.offloadable and r.problem and "no software queue" in r.problem
    with pytest.raises(ValueError, match="web-1 is not offloadable on net_tap"):
        r.to_testpmd()
    doc = r.document()
    assert doc["report"]["offloadable"] is False
    assert any(x["status"] == "software" for x in doc["report"]["rules"])


def test_cli_single_port() -> None:
    from test_api import ROOT, _cli

    example = str(ROOT / "examples" / "two-tier.json")
    out = _cli("compile", example, "--target", "rte_flow", "--port", "edge-1", "--report")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines and all(x.startswith("flow create 0 priority ") for x in lines)
    assert "port edge-1 on ethdev 0 with net_tap" in out.stderr
    assert "rule edge[1] (egress): software" in out.stderr
    refused = _cli(
        "compile", example, "--target", "rte_flow", "--port", "edge-1", "--no-software-queue"
    )
    assert refused.returncode == 2 and not refused.stdout
    assert "port edge-1 is not offloadable on net_tap" in refused.stderr
    assert "Traceback" not in refused.stderr
    mixed = _cli(
        "compile", example, "--target", "rte_flow", "--port", "edge-1", "--forward", "uplink"
    )
    assert mixed.returncode == 2 and "not with --port" in mixed.stderr
    tap = _cli("compile", example, "--target", "rte_flow", "--profile", "net_tap")
    assert tap.returncode == 2 and "give --port" in tap.stderr
    doc = json.loads(
        _cli(
            "compile",
            example,
            "--target",
            "rte_flow",
            "--port",
            "web-1",
            "--profile",
            "full",
            "--format",
            "json",
            "--ethdev",
            "3",
        ).stdout
    )
    assert doc["rules"][0]["port_id"] == 3 and doc["report"]["driver"] == "full"


GUEST_TAP = "sgftap0"
#: Frame lengths: frame i of a phase is BASE + i bytes long, so the lengths name the frames.
BASE = 300
LONG = bool(os.environ.get("SGF_GUEST_LONG"))


def _guest_frames(long: int, short: int) -> int:
    return long if LONG else short


def _packets_from_vm(model: dict[str, Any], port: str, seed: str, count: int) -> list[Packet]:
    """``count`` edge-biased packets (``rteinterp.random_packet``) the VM of ``port`` sends."""
    from rteinterp import random_packet

    rep = model["bindings"][port]["representor"]
    rng = random.Random(seed)
    packets: list[Packet] = []
    while len(packets) < count:
        p = random_packet(rng, model, 0)
        if p.in_port == rep:
            packets.append(p)
    return packets


def _hex_frames(packets: list[Packet]) -> list[str]:
    import wire

    return [wire.frame(p, BASE + i).hex() for i, p in enumerate(packets)]


def _copy_guest_scripts(shared: Path) -> None:
    for helper in ("guest_sender.py", "guest_installer.py", "guest_agent.py"):
        shutil.copy(Path(__file__).with_name(helper), shared / helper)


AGENT_PORT = "agent-port"


def _agent_info(extra_rule: bool) -> dict[str, Any]:
    """Neutron's reply for one stateless port (as the agent's dataplane gets it)."""
    rules = [
        {
            "direction": "egress",
            "ethertype": "IPv4",
            "protocol": "udp",
            "port_range_min": 53,
            "port_range_max": 53,
        },
        {
            "direction": "egress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": 80,
            "port_range_max": 80,
            "remote_ip_prefix": "10.0.0.0/24",
        },
    ]
    if extra_rule:
        rules.append(
            {
                "direction": "egress",
                "ethertype": "IPv6",
                "protocol": "tcp",
                "port_range_min": 443,
                "port_range_max": 443,
            }
        )
    device = {
        "id": AGENT_PORT,
        "device": AGENT_PORT,
        "mac_address": "fa:16:3e:00:00:0a",
        "fixed_ips": ["10.0.0.10", "2001:db8::a"],
        "security_groups": ["g"],
        "port_security_enabled": True,
    }
    return {"devices": {AGENT_PORT: device}, "security_groups": {"g": rules},
            "sg_member_ips": {}, "security_group_stateful": {"g": False}}  # fmt: skip


def _agent_in_guest(shared: Path, binary: str) -> str:
    """The guest script's part that runs the agent's rte_flow dataplane (guest_agent.py) with
    this interpreter and a copy of the package (a checkout under /tmp is not visible there)."""
    (shared / "info.json").write_text(json.dumps(_agent_info(False)))
    (shared / "changed.json").write_text(json.dumps(_agent_info(True)))
    package = Path(sgflows.__file__).parent
    shutil.copytree(package, shared / "pkg" / "sgflows",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    python = os.path.realpath(sys.executable)
    return (f"PYTHONPATH=pkg {python} -S guest_agent.py ./{binary} {AGENT_PORT} sgftap1 "
            "> agent.log 2>&1\ncat agent.log\n")  # fmt: skip


def _check_agent_in_guest(out: dict[str, Any]) -> None:
    """The dataplane closed the port at start, created the rendering, updated it, removed it."""

    def port(step: str) -> dict[str, Any]:
        assert "error" not in out[step], out[step]
        status: dict[str, Any] = out[step]["ports"][AGENT_PORT]
        return status

    assert port("started")["state"] == "closed" and port("started")["rules"] == 2
    for step, extra in (("info", False), ("changed", True)):
        want = sgflows.compile_rte_flow_port(_agent_info(extra), AGENT_PORT).document()["rules"]
        assert port(step)["state"] == "partial" and port(step)["rules"] == len(want), out[step]
    assert out["changed"]["stats"]["updates"] == 3 and out["stopped"]["ports"] == {}


def _check_frames(
    model: dict[str, Any],
    port: str,
    lines: list[str],
    packets: list[Packet],
    queue_of: dict[int, int],
    *,
    fuller: list[str] | None = None,
) -> tuple[Counter[str], list[str]]:
    """Each frame's queue (``queue_of``: length → queue; absent: dropped) against the
    interpreted rules (``lines``) and ``sgflows.evaluate``: observed == interpreted, and a
    hardware accept/drop == the evaluator's. A frame sent to software is checked against
    the evaluator through ``fuller`` (the port's rules for the ``full`` profile) where those
    decide it in hardware. Returns the tally and the packet table."""
    rules = _rules(lines, "ingress")
    full = _rules(fuller, "ingress") if fuller is not None else []
    tally: Counter[str] = Counter()
    table = []
    for i, p in enumerate(packets):
        queue = queue_of.get(BASE + i)
        observed = {None: "drop", ACCEPT_QUEUE: "accept", SOFTWARE_QUEUE: "software"}[queue]
        expected = _verdict(rules, p)
        evaluation = sgflows.evaluate(model, ofctl(p), port=port, direction="egress")
        row = f"{ofctl(p)} | evaluator {evaluation.verdict} | observed {observed}"
        assert observed == expected, f"{port}: {row} | interpreted {expected}"
        if observed != "software":
            assert evaluation.allowed == (observed == "accept"), f"{port}: {row}"
        elif full and (hw := _verdict(full, p)) in ("accept", "drop"):
            row += f" | full profile {hw}"
            assert evaluation.allowed == (hw == "accept"), f"{port}: {row}"
            tally["software, checked"] += 1
        table.append(row)
        tally[observed] += 1
    return tally, table


def _received(output: str) -> dict[int, int]:
    """Frame length → the queue testpmd's verbose rxonly mode saw it on."""
    seen: dict[int, int] = {}
    queue = None
    for line in output.splitlines():
        m = re.search(r"port 0/queue (\d+): received \d+ packets", line)
        if m:
            queue = int(m.group(1))
            continue
        m = re.search(r" length=(\d+) ", line)
        if m and queue is not None:
            seen[int(m.group(1))] = queue
    return seen


@pytest.mark.skipif(
    not os.environ.get("SGF_GUEST_LONG"),
    reason="a second guest boot: test_installer_through_net_tap checks the same frames through "
    "DPDK's API in CI; SGF_GUEST_LONG=1 runs this testpmd one too",
)
def test_packets_through_net_tap(tmp_path: Path) -> None:
    """Real frames through net_tap in the QEMU guest (guest.py): the port's rules created
    by testpmd on a tap with two queues, the frames written into the tap by
    guest_sender.py, and what arrives on which queue read from testpmd's verbose output.
    Observed == the interpreted rules, and a hardware accept/drop == sgflows.evaluate.
    CI: 40 frames of the example's stateless edge-1; SGF_GUEST_LONG=1: 200."""
    import shlex

    import guest
    from rtehelpers import parse_testpmd, testpmd_command

    model, port = two_tier(stateless=True), "edge-1"
    started = time.monotonic()
    result = sgflows.compile_rte_flow_port(model, port)
    lines = result.to_testpmd().splitlines()
    compile_ms = (time.monotonic() - started) * 1000
    packets = _packets_from_vm(model, port, "guest-edge-1", _guest_frames(200, 40))
    (tmp_path / "frames.hex").write_text("".join(x + "\n" for x in _hex_frames(packets)))
    _copy_guest_scripts(tmp_path)
    probes = rte_probe.commands(0)
    setup = [*probes, *lines]
    (tmp_path / "commands").write_text(
        "".join(x + "\n" for x in [*setup, "set fwd rxonly", "set verbose 1", "start"])
    )
    testpmd = shlex.join(
        [*testpmd_command(f"net_tap0,iface={GUEST_TAP}", "sgf-guest"), "--rxq=2", "--txq=2"]
    )
    script = (
        f"python3 guest_sender.py tp.log {GUEST_TAP} > sender.log 2>&1 &\n"
        "( cat commands; while [ ! -f sent ]; do sleep 0.5; done; sleep 2; "
        f"echo stop; echo quit ) | {testpmd} > tp.log 2>&1\n"
        "wait\ncat sender.log\n"
    )
    run = guest.run(script, tmp_path)
    output = (tmp_path / "tp.log").read_text(errors="replace")
    assert run.rc == 0, run.output[-3000:]
    verdicts = parse_testpmd(setup, output)
    caps = rte_probe.table([v.output for v in verdicts[: len(rte_probe.SHAPES)]])
    LOG.info("net_tap probe (flow create in the guest):\n%s", rte_probe.render(caps))
    wrong = [c for c in caps if c.profile and not c.created]
    assert not wrong, f"net_tap refused shapes its profile claims: {wrong}"
    assert {c.shape for c in caps if c.created} >= {"tcp exact", "queue action", "egress drop"}
    refused = [v.command + ": " + v.output for v in verdicts[len(probes) + 1 :] if not v.accepted]
    assert not refused, refused[:3]
    tally, table = _check_frames(model, port, lines, packets, _received(output))
    LOG.info(
        "net_tap guest: %d rules (compiled in %.1f ms), %d frames %s, guest run %.1f s\n%s",
        len(lines),
        compile_ms,
        len(packets),
        dict(tally),
        run.seconds,
        "\n".join(table),
    )
    assert tally["accept"] and tally["drop"] and tally["software"], tally


def test_probe_cli_on_a_port_without_rte_flow(tmp_path: Path) -> None:
    """``sgflows rte-flow probe`` on net_null (no rte_flow at all): every trial refused, and
    the table says where the net_tap profile claims more; the guest run above probes
    net_tap itself."""
    from test_api import _cli

    saved = tmp_path / "probe.json"
    out = _cli("rte-flow", "probe", "--vdev", "net_null0", "--via", "testpmd", "--save", str(saved))
    assert out.returncode == 0, out.stderr
    assert "tcp exact                  refused  <- profile says yes" in out.stdout
    caps = json.loads(saved.read_text())
    assert len(caps) == len(rte_probe.SHAPES) and not any(c["created"] for c in caps)
    assert all("Function not implemented" in c["detail"] for c in caps)
    missing = _cli(
        "rte-flow",
        "probe",
        "--vdev",
        "net_null0",
        "--via",
        "testpmd",
        "--testpmd",
        "no-such-testpmd",
    )
    assert missing.returncode == 1 and "no-such-testpmd not found" in missing.stderr


def _changed(model: dict[str, Any], port: str) -> dict[str, Any]:
    """The model with one of the port's groups changed (a new one for a port without): its
    first rule dropped and a TCP 443 egress rule added."""
    changed = copy.deepcopy(model)
    groups = next(p for p in changed["ports"] if p["id"] == port)["security_groups"]
    if not groups:
        changed["security_groups"]["updated"] = {"stateful": False, "rules": []}
        groups.append("updated")
    rules = changed["security_groups"][groups[0]]["rules"]
    del rules[:1]
    rules.append({"direction": "egress", "ethertype": "IPv4", "protocol": "tcp",
                  "port_range_min": 443, "port_range_max": 443})  # fmt: skip
    return changed


def _filtered_port(model: dict[str, Any]) -> str | None:
    """A port of the model whose traffic from the VM the rules decide, at least in part."""
    for port in model["ports"]:
        modes = {d["attr"]: d["mode"] for d in
                 sgflows.compile_rte_flow_port(model, port["id"]).report["directions"]}  # fmt: skip
        if modes["ingress"] in ("offloaded", "partial"):
            return str(port["id"])
    return None


@dataclass
class _Phase:
    """One rule set of a round: the model it comes from, its rules, the frames sent."""

    model: dict[str, Any]
    lines: list[str]
    rules: list[Any]
    packets: list[Packet]

    @classmethod
    def of(cls, model: dict[str, Any], port: str, seed: str, frames: int) -> _Phase:
        result = sgflows.compile_rte_flow_port(model, port)
        return cls(model, result.to_testpmd().splitlines(), result.document()["rules"],
                   _packets_from_vm(model, port, seed, frames))  # fmt: skip


def _guest_rounds() -> list[tuple[str, list[_Phase]]]:
    """The example's stateless edge-1, then seeded random models (a filtered port of each):
    each installed, then updated to the model with one rule changed."""
    edge = two_tier(stateless=True)
    edge_changed = two_tier(stateless=True)
    # The edge group's egress rule to the metadata address replaced by TCP 443.
    edge_changed["security_groups"]["edge"]["rules"][2] = {
        "direction": "egress", "ethertype": "IPv4", "protocol": "tcp",
        "port_range_min": 443, "port_range_max": 443}  # fmt: skip
    n = _guest_frames(200, 40)
    edge_phases = [
        _Phase.of(edge, "edge-1", "guest-installer-edge-1", n),
        _Phase.of(edge_changed, "edge-1", "guest-edge-1-update", n // 2),
    ]
    rounds = [("edge-1", edge_phases)]
    rng = random.Random("guest-random-models")
    while len(rounds) < 1 + _guest_frames(6, 2):
        model = random_model(rng)
        port = _filtered_port(model)
        if port is None:
            continue
        seed, frames = f"guest-{len(rounds)}", _guest_frames(40, 20)
        phases = [
            _Phase.of(model, port, seed, frames),
            _Phase.of(_changed(model, port), port, seed + "-update", frames),
        ]
        rounds.append((port, phases))
    return rounds


def _check_round(port: str, phases: list[_Phase], done: dict[str, Any]) -> Counter[str]:
    """A round's answers: every create checked, every frame's verdict, the removal."""
    tally: Counter[str] = Counter()
    held: set[str] = set()
    for i, (phase, answer) in enumerate(zip(phases, done["phases"], strict=True)):
        op = "install" if i == 0 else "update"
        res = answer[op]
        assert res["ok"], (port, op, res)
        # The installer's identity of a rule: attr, pattern, actions.
        wanted = {json.dumps([r["attr"], r["pattern"], r["actions"]]) for r in phase.rules}
        if op == "install":
            assert res["created"] == len(phase.rules), (port, res)
        else:
            diff = (len(wanted - held), len(wanted & held), len(held - wanted))
            assert (res["created"], res["kept"], res["destroyed"]) == diff, (port, res)
        held = wanted
        queue_of = {n: q for q, lengths in enumerate(answer["received"]) for n in lengths}
        fuller = sgflows.compile_rte_flow_port(phase.model, port, profile="full")
        got, table = _check_frames(phase.model, port, phase.lines, phase.packets, queue_of,
                                   fuller=fuller.to_testpmd().splitlines())  # fmt: skip
        LOG.info("guest %s %s (%d rules), %s:\n%s", port, op, len(phase.rules), dict(got),
                 "\n".join(table))  # fmt: skip
        tally += got
    assert done["remove"]["ok"] and done["remove"]["destroyed"], (port, done["remove"])
    return tally


def _ms(answer: dict[str, Any]) -> float:
    return round(float(answer["seconds"]) * 1000, 1)


#: The guest boots and runs under plain TCG emulation: at load ~20 on two cores its boot alone
#: took two minutes; guest.run's own timeout (600 s) is the bound that matters.
@pytest.mark.timeout(900)
def test_installer_through_net_tap(tmp_path: Path, installer_binary: str) -> None:
    """The installer (DPDK's API, ``sgflows-rte-flow``) in the QEMU guest on net_tap: probe
    by trial creates, then rounds — the stateless example's edge-1 and seeded random models
    (CI: 2, SGF_GUEST_LONG=1: 6) — each installed (every create checked), real frames
    written into the tap and the queue each arrived on read back, updated to the model with
    one rule changed (frames again), removed. Observed == the interpreted rules, a hardware
    accept/drop == sgflows.evaluate, software-queued frames checked against it through the
    full profile's rules. Then the example's other ports installed and removed (times)."""
    import guest

    binary = Path(installer_binary)
    rounds = _guest_rounds()
    model = two_tier(stateless=True)
    others = {
        name: sgflows.compile_rte_flow_port(model, name).document()["rules"]
        for name in ("web-1", "web-2", "db-1")
    }
    plan = {
        "probe": rte_probe.installer_shapes(),
        "rounds": [{"port": port, "phases": [{"rules": ph.rules, "frames": _hex_frames(ph.packets)}
                                             for ph in phases]}
                   for port, phases in rounds],
        "ports": others,
    }  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    _copy_guest_scripts(tmp_path)
    # The guest puts a tmpfs on /tmp, so a checkout under /tmp (as CI's may be) is not visible
    # there: the installer travels in the shared run directory, like the scripts.
    shutil.copy(binary, tmp_path / binary.name)
    script = f"python3 guest_installer.py ./{binary.name} {GUEST_TAP} > inst.log 2>&1\n"
    script += "cat inst.log\n" + _agent_in_guest(tmp_path, binary.name)
    run = guest.run(script, tmp_path)
    assert run.rc == 0, run.output[-3000:]
    out = json.loads((tmp_path / "installer.json").read_text())
    # Started with the default tx queues (as many as rx), which net_tap insists on.
    assert (out["init"]["rx_queues"], out["init"]["tx_queues"]) == (2, 2), out["init"]
    caps = [
        rte_probe.Capability(shape, r["created"], claimed, str(r.get("error", "")))
        for (shape, _, claimed), r in zip(rte_probe.SHAPES, out["probe"]["results"], strict=True)
    ]
    LOG.info("net_tap probe through DPDK's API:\n%s", rte_probe.render(caps))
    wrong = [c for c in caps if c.profile and not c.created]
    assert not wrong, f"net_tap refused shapes its profile claims: {wrong}"
    validated_only = [r["name"] for r in out["probe"]["results"]
                      if r.get("validated") and not r["created"]]  # fmt: skip
    tally: Counter[str] = Counter()
    for (port, phases), done in zip(rounds, out["rounds"], strict=True):
        tally += _check_round(port, phases, done)
    assert tally["accept"] and tally["drop"] and tally["software"], tally
    edge_update = out["rounds"][0]["phases"][1]["update"]
    assert edge_update["created"] and edge_update["destroyed"], edge_update
    assert out["quit"]["ok"]
    _check_agent_in_guest(json.loads((tmp_path / "agent.json").read_text()))
    for name, rules_of in others.items():
        done = out["ports"][name]
        assert done["install"]["ok"] and done["install"]["created"] == len(rules_of), done
        assert done["remove"]["destroyed"] == len(rules_of), done
    times = [(port, [_ms(ph[op]) for ph, op in zip(d["phases"], ("install", "update"))],
              _ms(d["remove"])) for (port, _), d in zip(rounds, out["rounds"])]  # fmt: skip
    LOG.info(
        "installer in the guest: init %.3f s; rounds (port, [install, update] ms, remove ms) "
        "%s; other ports %s; validate-only shapes %s; frames %s; installer %.1f s, guest run "
        "%.1f s",
        out["init"]["seconds"], times,
        {n: (len(others[n]), _ms(d["install"]), _ms(d["remove"]))
         for n, d in out["ports"].items()},
        validated_only, dict(tally), out["seconds"], run.seconds,
    )  # fmt: skip
