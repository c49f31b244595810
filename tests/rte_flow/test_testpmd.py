"""Every emitted line through Debian's ``dpdk-testpmd`` (DESIGN.md §6).

What this proves, and what it cannot:

* ``net_null`` implements no rte_flow at all, and no software driver implements ``transfer``
  or representor items/actions: for the transfer rules testpmd proves the syntax only. Every
  line must be parsed (no ``Bad arguments``) and reach the driver (``port_flow_complain``).
* ``net_tap`` judges plain ``ingress`` rules (``flow validate``; creating them needs TC
  flower, absent in this kernel): the patterns of every rule outside group 0, rendered as
  plain drop rules, must be validated by the driver whenever they use only the items it
  implements (eth, ipv4, ipv6, tcp, udp: anti-spoofing by MAC and prefix, DHCP, rule ports
  as masks, catch-alls); the others (icmp, icmp6, arp, sctp) must be refused, not misparsed.
"""

from __future__ import annotations

import logging
import os
import random
import re
from typing import Any

import pytest
import sgflows
from rtehelpers import TESTPMD_MAX_LINE, run_testpmd, two_tier
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


@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="no /dev/net/tun")
def test_rule_patterns_accepted_by_net_tap() -> None:
    rng = random.Random(7)
    lines: set[str] = set()
    for model in [two_tier(), two_tier(stateless=True)] + [random_model(rng) for _ in range(3)]:
        result = sgflows.compile(model, target="rte_flow", profile="generic")
        lines.update(result.plain_drop_lines(port=0, command="validate"))
    distinct = sorted(lines)
    iface = f"dtap{os.getpid() % 100000}"
    verdicts = run_testpmd(distinct, vdev=f"net_tap0,iface={iface}")
    judged = 0
    for v in verdicts:
        assert not v.syntax_error, v.command
        items = {part.split()[0] for part in v.command.split(" pattern ")[1].split(" / ")}
        items.discard("end")
        if items <= TAP_ITEMS:
            assert v.accepted, f"net_tap refused {v.command}: {v.output}"
            judged += 1
        else:
            assert v.refused, v.command
    LOG.info("net_tap judged %d of %d plain lines", judged, len(verdicts))
    assert judged >= 80, judged
