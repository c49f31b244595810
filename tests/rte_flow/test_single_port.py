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

import json
import logging
import os
import random
import re
import shutil
import subprocess
import time
from collections import Counter
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


def _compare(model: dict[str, Any], profile: str, rng: random.Random, packets: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    reps = {p["id"]: model["bindings"][p["id"]]["representor"] for p in model["ports"]}
    rendered = {}
    for port in model["ports"]:
        r = sgflows.compile_rte_flow_port(model, port["id"], profile=profile)
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
    import wire
    from rtehelpers import parse_testpmd, testpmd_command
    from rteinterp import random_packet

    model, port = two_tier(stateless=True), "edge-1"
    started = time.monotonic()
    result = sgflows.compile_rte_flow_port(model, port)
    lines = result.to_testpmd().splitlines()
    compile_ms = (time.monotonic() - started) * 1000
    rules = _rules(lines, "ingress")
    rep = model["bindings"][port]["representor"]
    rng = random.Random("guest-edge-1")
    count = 200 if os.environ.get("SGF_GUEST_LONG") else 40
    packets: list[Packet] = []
    while len(packets) < count:
        p = random_packet(rng, model, 0)
        if p.in_port == rep:
            packets.append(p)
    base = 300
    (tmp_path / "frames.hex").write_text(
        "".join(wire.frame(p, base + i).hex() + "\n" for i, p in enumerate(packets))
    )
    shutil.copy(Path(__file__).with_name("guest_sender.py"), tmp_path / "guest_sender.py")
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
    seen = _received(output)
    table = []
    tally: Counter[str] = Counter()
    for i, p in enumerate(packets):
        queue = seen.get(base + i)
        observed = {None: "drop", ACCEPT_QUEUE: "accept", SOFTWARE_QUEUE: "software"}[queue]
        expected = _verdict(rules, p)
        evaluation = sgflows.evaluate(model, ofctl(p), port=port, direction="egress")
        table.append(f"{ofctl(p)} | evaluator {evaluation.verdict} | observed {observed}")
        assert observed == expected, table[-1]
        if observed != "software":
            assert evaluation.allowed == (observed == "accept"), table[-1]
        tally[observed] += 1
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


def test_installer_through_net_tap(tmp_path: Path) -> None:
    """The installer (DPDK's API, ``sgflows-rte-flow``) instead of testpmd in the QEMU guest:
    probe net_tap by trial creates, install the stateless example's edge-1 (every create
    checked), real frames written into the tap, the queue each arrived on read back through
    the installer; observed == the interpreted rules, a hardware accept/drop ==
    sgflows.evaluate. Then an update (one egress rule replaced), and removal."""
    import guest
    import wire
    from rteinterp import random_packet
    from sgflows import rte_install

    binary = ROOT / "target" / "release" / rte_install.BINARY
    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--features", "dpdk", "--bin", binary.name],
        cwd=ROOT,
        check=True,
    )
    model, port = two_tier(stateless=True), "edge-1"
    result = sgflows.compile_rte_flow_port(model, port)
    # The update: the edge group's egress rule to the metadata address replaced by TCP 443.
    changed = two_tier(stateless=True)
    edge = changed["security_groups"]["edge"]["rules"]
    edge[2] = {"direction": "egress", "ethertype": "IPv4", "protocol": "tcp",
               "port_range_min": 443, "port_range_max": 443}  # fmt: skip
    update = sgflows.compile_rte_flow_port(changed, port).document()["rules"]
    rules = _rules(result.to_testpmd().splitlines(), "ingress")
    rep = model["bindings"][port]["representor"]
    rng = random.Random("guest-installer-edge-1")
    count = 200 if os.environ.get("SGF_GUEST_LONG") else 40
    packets: list[Packet] = []
    while len(packets) < count:
        p = random_packet(rng, model, 0)
        if p.in_port == rep:
            packets.append(p)
    base = 300
    (tmp_path / "frames.hex").write_text(
        "".join(wire.frame(p, base + i).hex() + "\n" for i, p in enumerate(packets))
    )
    (tmp_path / "rules.json").write_text(json.dumps(result.document()["rules"]))
    (tmp_path / "update.json").write_text(json.dumps(update))
    (tmp_path / "shapes.json").write_text(json.dumps(rte_probe.installer_shapes()))
    others = {
        name: sgflows.compile_rte_flow_port(model, name).document()["rules"]
        for name in ("web-1", "web-2", "db-1")
    }
    (tmp_path / "ports.json").write_text(json.dumps(others))
    for helper in ("guest_sender.py", "guest_installer.py"):
        shutil.copy(Path(__file__).with_name(helper), tmp_path / helper)
    # The guest puts a tmpfs on /tmp, so a checkout under /tmp (as CI's may be) is not visible
    # there: the installer travels in the shared run directory, like the scripts.
    shutil.copy(binary, tmp_path / binary.name)
    script = (
        f"python3 guest_sender.py ready.log {GUEST_TAP} > sender.log 2>&1 &\n"
        f"python3 guest_installer.py ./{binary.name} {GUEST_TAP} > inst.log 2>&1\n"
        "wait\ncat sender.log inst.log\n"
    )
    run = guest.run(script, tmp_path)
    assert run.rc == 0, run.output[-3000:]
    out = json.loads((tmp_path / "installer.json").read_text())
    caps = [
        rte_probe.Capability(shape, r["created"], claimed, str(r.get("error", "")))
        for (shape, _, claimed), r in zip(rte_probe.SHAPES, out["probe"]["results"], strict=True)
    ]
    LOG.info("net_tap probe through DPDK's API:\n%s", rte_probe.render(caps))
    wrong = [c for c in caps if c.profile and not c.created]
    assert not wrong, f"net_tap refused shapes its profile claims: {wrong}"
    validated_only = [r["name"] for r in out["probe"]["results"]
                      if r.get("validated") and not r["created"]]  # fmt: skip
    assert out["install"]["ok"], out["install"]
    assert out["install"]["created"] == len(result.document()["rules"])
    seen = {length: q for q, lengths in enumerate(out["received"]) for length in lengths}
    tally: Counter[str] = Counter()
    table = []
    for i, p in enumerate(packets):
        queue = seen.get(base + i)
        observed = {None: "drop", ACCEPT_QUEUE: "accept", SOFTWARE_QUEUE: "software"}[queue]
        expected = _verdict(rules, p)
        evaluation = sgflows.evaluate(model, ofctl(p), port=port, direction="egress")
        table.append(f"{ofctl(p)} | evaluator {evaluation.verdict} | observed {observed}")
        assert observed == expected, table[-1]
        if observed != "software":
            assert evaluation.allowed == (observed == "accept"), table[-1]
        tally[observed] += 1
    assert tally["accept"] and tally["drop"] and tally["software"], tally
    upd = out["update"]
    assert upd["ok"], upd
    distinct = {json.dumps([r["attr"], r["pattern"], r["actions"]]) for r in update}
    assert upd["created"] + upd["kept"] == len(distinct)
    assert upd["created"] and upd["destroyed"], upd
    assert out["remove"]["ok"] and out["quit"]["ok"]
    for name, rules_of in others.items():
        done = out["ports"][name]
        assert done["install"]["ok"] and done["install"]["created"] == len(rules_of), done
        assert done["remove"]["destroyed"] == len(rules_of), done
    LOG.info(
        "installer in the guest, other ports: %s",
        {n: (len(others[n]), round(d["install"]["seconds"] * 1000, 1),
             round(d["remove"]["seconds"] * 1000, 1)) for n, d in out["ports"].items()},
    )  # fmt: skip
    LOG.info(
        "installer in the guest: init %.3f s, install %d rules %.1f ms, update (%d created, "
        "%d kept, %d destroyed) %.1f ms, remove %.1f ms; validate-only shapes %s; frames %s; "
        "guest run %.1f s\n%s",
        out["init"]["seconds"], len(rules), out["install"]["seconds"] * 1000, upd["created"],
        upd["kept"], upd["destroyed"], upd["seconds"] * 1000, out["remove"]["seconds"] * 1000,
        validated_only, dict(tally), run.seconds, "\n".join(table),
    )  # fmt: skip
