"""Every emitted line through Debian's ``dpdk-testpmd`` (DESIGN.md §6).

What this proves, and what it cannot:

* ``net_null`` implements no rte_flow at all, and no software driver implements ``transfer``
  or representor items/actions: for the transfer rules testpmd proves the syntax only. Every
  line must be parsed (no ``Bad arguments``) and reach the driver (``port_flow_complain``).
* ``net_tap`` judges plain ``ingress`` rules by CREATING them, in a QEMU guest running
  Debian's kernel (``guest.py``; this host's kernel lacks TC flower, so every create fails
  here). ``flow validate`` is not enough: it accepts masked L4 ports that create refuses.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import sgflows
from rtehelpers import TESTPMD_MAX_LINE, run_testpmd, run_testpmd_in_guest, two_tier
from rteinterp import random_model

LOG = logging.getLogger(__name__)

# dpdk-testpmd comes with dpdk-dev, which `make deps-system` installs: its absence fails the
# tests (run_testpmd says so) rather than skipping them.

TAP_ITEMS = {"eth", "ipv4", "ipv6", "tcp", "udp"}


def _compile_all(model: dict[str, Any]) -> list[str]:
    lines = []
    for profile in sgflows.RTE_FLOW_PROFILES:
        for forward in ("software", "uplink"):
            result = sgflows.compile(
                model, target="rte_flow", profile=profile, forward=forward, software_port=99
            )
            lines.extend(result.to_testpmd().splitlines())
    return lines


def _template(line: str) -> str:
    """A line with its numbers, addresses and MACs blanked: its syntactic shape."""
    return re.sub(r"[0-9a-f:.x]+(?= |$)", "N", line)


def test_every_line_parses_on_net_null() -> None:
    """Every line of the example (as given, and with every group stateless so that every
    rule is emitted) under every profile and forward target, plus one line of each shape
    from random models. testpmd parses ~80 lines a second, hence the shapes."""
    example = set(_compile_all(two_tier())) | set(_compile_all(two_tier(stateless=True)))
    shapes = {_template(line): line for line in example}
    rng = random.Random(20261128)
    extra = set()
    for _ in range(8):
        for line in _compile_all(random_model(rng)):
            if _template(line) not in shapes:
                shapes[_template(line)] = line
                extra.add(line)
    distinct = sorted(example | extra)
    assert len(example) > 1000 and extra
    assert max(len(line) for line in distinct) <= TESTPMD_MAX_LINE
    verdicts = run_testpmd(distinct)
    bad = [v.command for v in verdicts if v.syntax_error]
    assert not bad, f"{len(bad)} lines testpmd cannot parse, e.g. {bad[:3]}"
    # Parsed lines reach the driver, which refuses them (no rte_flow on net_null).
    unanswered = [v.command for v in verdicts if not v.refused]
    assert not unanswered, unanswered[:3]
    for item in (
        "represented_port",
        "port_representor",
        "port_id id",
        "arp_eth_ipv4",
        "icmp6_nd_na",
        " last ",
        "icmp type",
        "icmp6 type",
        "sctp",
        " mask 0x",
    ):
        assert any(item in line for line in distinct), item


def test_testpmd_reports_syntax_errors() -> None:
    """The harness itself: a broken line is caught, a good one is not."""
    good = (
        "flow create 0 group 1 priority 0 transfer pattern eth / ipv4 / tcp dst is 80 / end "
        "actions count / drop / end"
    )
    verdicts = run_testpmd([good, good.replace("tcp dst is 80", "tcp dport is 80")])
    assert not verdicts[0].syntax_error and verdicts[0].refused
    assert verdicts[1].syntax_error


def _tap_creates(line: str) -> bool:
    """What net_tap (DPDK 22.11) creates, as observed in the guest: only eth, ipv4, ipv6, tcp
    and udp items, and L4 ports exact (a masked port is "item not supported", although
    ``flow validate`` accepts it: its validate skips the per-item checks)."""
    items = [part.split() for part in line.split(" pattern ")[1].split(" / ")]
    names = {item[0] for item in items if item[0] != "end"}
    masked_port = any(item[0] in ("tcp", "udp") and "mask" in item for item in items)
    return names <= TAP_ITEMS and not masked_port


def test_rule_patterns_created_by_net_tap(tmp_path: Path) -> None:
    """Every rule's pattern, as a plain ingress drop rule, CREATED on net_tap inside the QEMU
    guest (guest.py: Debian's kernel has the TC flower modules this host's kernel lacks).
    In CI one line per syntactic shape (~40 s of emulation); with SGF_GUEST_LONG=1 every
    line (~150 s for ~320 lines)."""
    rng = random.Random(7)
    lines: set[str] = set()
    for model in [two_tier(), two_tier(stateless=True)] + [random_model(rng) for _ in range(3)]:
        result = sgflows.compile(model, target="rte_flow", profile="generic")
        lines.update(result.plain_drop_lines(port=0, command="create"))
    if os.environ.get("SGF_GUEST_LONG"):
        distinct = sorted(lines)
    else:
        distinct = sorted({_template(line): line for line in sorted(lines)}.values())
    verdicts, seconds = run_testpmd_in_guest(distinct, tmp_path, vdev="net_tap0,iface=dtap0")
    LOG.info("guest created %d lines in %.1f s", len(distinct), seconds)
    created = 0
    for v in verdicts:
        assert not v.syntax_error, v.command
        if _tap_creates(v.command):
            assert v.accepted, f"net_tap refused {v.command}: {v.output}"
            created += 1
        else:
            assert v.refused and "not supported" in v.output, f"{v.command}: {v.output}"
    LOG.info("net_tap created %d of %d plain lines", created, len(verdicts))
    # Both kinds are present: the shapes it takes and the ones it refuses.
    assert 0 < created < len(verdicts), created
    assert any(" mask 0x" in v.command and not v.accepted for v in verdicts if " tcp " in v.command)
