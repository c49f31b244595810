"""The hardware's own verdicts against the reference evaluator (``sgflows.evaluate``, which
decides from the model alone): for every random packet that the interpreted rules decide in
hardware (dropped, or delivered to the VM or the wire) rather than send to software, the
evaluator must give the same allow/drop verdict at the same port and direction.

``forward="uplink"`` makes an accepted egress packet visible as "to the uplink"; packets to
local or group MACs are left out of the egress comparison (they continue into another port's
ingress groups or go to software).
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter

import pytest
import sgflows
from rtehelpers import two_tier
from rteinterp import (
    ARP,
    ICMP,
    ICMPV6,
    IPV4,
    IPV6,
    SCTP,
    TCP,
    UDP,
    Oracle,
    Packet,
    Switch,
    mac_str,
    random_model,
    random_packet,
)

SOFTWARE_PORT = 999


def ofctl(p: Packet) -> str:
    """The packet in ``ovs-ofctl`` flow syntax, as the evaluator reads it."""
    v6 = p.ethertype == IPV6
    f: list[str] = []
    if p.ethertype == ARP:
        assert p.arp_sha is not None and p.arp_spa is not None
        f += [
            "arp",
            f"arp_sha={mac_str(p.arp_sha)}",
            f"arp_spa={ipaddress.IPv4Address(p.arp_spa)}",
            "arp_op=1",
        ]
    elif p.ethertype in (IPV4, IPV6):
        addr = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
        src, dst = ("ipv6_src", "ipv6_dst") if v6 else ("nw_src", "nw_dst")
        keyword = {TCP: "tcp", UDP: "udp", SCTP: "sctp", ICMP: "icmp", ICMPV6: "icmp"}.get(
            p.proto or -1
        )
        if keyword:
            f.append(keyword + ("6" if v6 else ""))
        else:
            f += ["ipv6" if v6 else "ip", f"nw_proto={p.proto}"]
        f += [f"{src}={addr(p.ip_src or 0)}", f"{dst}={addr(p.ip_dst or 0)}"]
        if p.proto in (TCP, UDP, SCTP):
            f += [f"tp_src={p.sport}", f"tp_dst={p.dport}"]
        if p.proto in (ICMP, ICMPV6):
            f += [f"icmp_type={p.icmp_type}", f"icmp_code={p.icmp_code}"]
            if p.nd_target is not None and p.icmp_code == 0:
                f.append(f"nd_target={ipaddress.IPv6Address(p.nd_target)}")
    else:
        f.append(f"dl_type={p.ethertype:#06x}")
    f += [f"dl_src={mac_str(p.eth_src)}", f"dl_dst={mac_str(p.eth_dst)}"]
    return ",".join(f)


def _compare(model: dict, profile: str, rng: random.Random, packets: int) -> Counter[str]:
    result = sgflows.compile(
        model, target="rte_flow", profile=profile, forward="uplink", software_port=SOFTWARE_PORT
    )
    switch = Switch(result.to_testpmd().splitlines(), software_port=SOFTWARE_PORT)
    oracle = Oracle(model, profile, "uplink", 0)
    by_rep = {p.rep: p for p in oracle.ports}
    seen: Counter[str] = Counter()
    for _ in range(packets):
        pkt = random_packet(rng, model, 0)
        got = switch.run(pkt)
        if got[0] == "software":
            seen["software"] += 1
            continue
        if pkt.in_port == 0:
            owners = oracle.owners.get(pkt.eth_dst, [])
            if len(owners) != 1:
                continue
            port, direction, allowed = owners[0], "ingress", got == ("port", owners[0].rep)
        else:
            if pkt.eth_dst >> 40 & 1 or pkt.eth_dst in oracle.owners:
                continue
            port, direction, allowed = by_rep[pkt.in_port], "egress", got == ("port", 0)
        if got[0] != "drop" and not allowed:
            continue
        decision = sgflows.evaluate(model, ofctl(pkt), port=port.id, direction=direction)
        assert decision.allowed == allowed, (
            f"{profile}: {direction} {port.id} {ofctl(pkt)}: hardware "
            f"{'allows' if allowed else 'drops'}, evaluator {decision.verdict} ({decision.reason})"
        )
        seen[f"{direction} {'allow' if allowed else 'drop'}"] += 1
    return seen


@pytest.mark.parametrize("profile", sgflows.RTE_FLOW_PROFILES)
def test_hardware_verdicts_match_the_reference_evaluator(profile: str) -> None:
    rng = random.Random(f"eval-{profile}")
    seen: Counter[str] = Counter()
    for _ in range(12):
        seen += _compare(random_model(rng), profile, rng, 80)
    seen += _compare(two_tier(stateless=True), profile, rng, 400)
    # Every kind of hardware decision was compared, many times.
    for kind in ("ingress allow", "ingress drop", "egress allow", "egress drop"):
        assert seen[kind] >= 20, seen


@pytest.mark.parametrize("profile", sgflows.RTE_FLOW_PROFILES)
def test_advertisements_with_a_code_are_never_accepted_in_hardware(profile: str) -> None:
    """A type-136 packet with a code other than 0 and a permitted target: ``icmp6_nd_na``
    matches its target whatever the code, but it is no advertisement (the evaluator drops it,
    as the OpenFlow backend does), so the rules drop it too (or leave it to software)."""
    model = two_tier(stateless=True)
    result = sgflows.compile(
        model, target="rte_flow", profile=profile, forward="uplink", software_port=SOFTWARE_PORT
    )
    switch = Switch(result.to_testpmd().splitlines(), software_port=SOFTWARE_PORT)
    oracle = Oracle(model, profile, "uplink", 0)
    checked = 0
    for port in (p for p in oracle.ports if p.filtered):
        for mac, net in port.v6:
            for code in (0, 1, 2, 3, 64, 127, 128, 255):
                pkt = Packet(
                    in_port=port.rep, eth_src=mac, eth_dst=0x020000000077, ethertype=IPV6,
                    ip_src=int(net.network_address), ip_dst=int(net.network_address) ^ 1,
                    proto=ICMPV6, icmp_type=136, icmp_code=code,
                    nd_target=int(net.network_address),
                )  # fmt: skip
                got, want = switch.run(pkt), oracle.run(pkt)
                if profile == "ntnic" and want[0] == "software":
                    want = ("software", None)  # port_id cannot name the representor
                assert got == want, f"{profile}: {ofctl(pkt)}: rules {got}, oracle {want}"
                decision = sgflows.evaluate(model, ofctl(pkt), port=port.id, direction="egress")
                assert decision.allowed == (code == 0), ofctl(pkt)
                if got[0] != "software":
                    assert (got == ("port", 0)) == decision.allowed, f"{profile}: {ofctl(pkt)}"
                    checked += 1
    # Profiles with the item decide every one of them in hardware.
    assert checked > 0 if profile in ("generic", "full") else checked == 0
