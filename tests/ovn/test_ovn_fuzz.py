"""Differential fuzzing of the OVN target: random models (the proof suite's strategy), the
rows loaded into the private Northbound database, every port bound on the private chassis,
and for IP packets near the rules' edges two verdicts compared with ``sgflows.evaluate``: the
logical one (``ovn-trace`` through northd's logical flows) and the physical one
(``ofproto/trace`` through the OpenFlow flows ovn-controller installed on ``br-int``).

Packets enter and leave through an added port ``sink`` without port security. The VM's end
is one of its fixed addresses with its own MAC (OVN's port security, from
``Logical_Switch_Port.port_security``, and the evaluator's anti-spoofing agree on those).
Left out, as documented differences of this slice (``docs/ovn.md``): ARP, neighbour
discovery and MLD (OVN's own ACL-stage flows), DHCP ports (a VM sending DHCP server replies
is forbidden by the evaluator, only by the rules in OVN), and connection states other than
``new``.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import sgflows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.ovn import OvnCentral, OvnChassis, exact_flow, physical_verdict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proof"))
from strategies import EDGE_PORTS, candidate_addresses, models

SWITCH = "sgf_fuzz"
SINK_MAC = "fa:16:3e:99:99:99"
PACKETS_PER_MODEL = int(os.environ.get("SGFLOWS_OVN_PACKETS", "30"))
DHCP_PORTS = {67, 68, 546, 547}
PORTS = [p for p in EDGE_PORTS if p not in DHCP_PORTS]
ICMP_TYPES = {False: [0, 3, 8, 11], True: [1, 128, 129]}

settings.register_profile("ovn-ci", max_examples=12, deadline=None, derandomize=True)
settings.register_profile("ovn-long", max_examples=300, deadline=None)
PROFILE = os.environ.get("SGFLOWS_OVN_PROFILE", "ovn-ci")

Packet = tuple[str, str, dict[str, Any]]

#: Verdicts compared in this run, by verdict (the next test checks both were exercised).
STATS: Counter[str] = Counter()


def with_sink(model: dict[str, Any]) -> dict[str, Any]:
    sink = {
        "id": "sink",
        "mac_address": SINK_MAC,
        "fixed_ips": [],
        "allowed_address_pairs": [],
        "security_groups": [],
        "port_security_enabled": False,
        "device_owner": "compute:nova",
    }
    return {**model, "ports": [*model["ports"], sink]}


def _rule_biased(
    draw: st.DrawFn, model: dict[str, Any], port: dict[str, Any], direction: str, f: dict[str, Any]
) -> None:
    """Half the time, take the protocol, port edges and remote from one of the port's rules
    (of the packet's direction and family), so that rules match often."""
    mine = [r for g in port["security_groups"] for r in model["security_groups"][g]["rules"]
            if r["direction"] == direction and (r["ethertype"] == "IPv6") == f["v6"]]  # fmt: skip
    if not mine or draw(st.booleans()):
        return
    rule = draw(st.sampled_from(mine))
    proto = rule.get("protocol")
    if proto in ("tcp", "udp", "sctp", "icmp"):
        f["proto"] = proto
    lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
    if proto == "icmp" and lo is not None:
        f["icmp"] = lo
    elif lo is not None:
        edges = [e for e in (lo - 1, lo, hi, (hi or lo) + 1) if e is not None and 0 <= e <= 65535]
        edges = [e for e in edges if e not in DHCP_PORTS]
        if edges:
            f["dst"] = draw(st.sampled_from(edges))
    prefix = rule.get("remote_ip_prefix")
    if prefix:
        f["remote"] = str(next(iter(ipaddress.ip_network(prefix).hosts()), f["remote"]))


@st.composite
def ovn_packets(draw: st.DrawFn, model: dict[str, Any]) -> Packet | None:
    port = draw(st.sampled_from(model["ports"][:-1]))  # not the sink
    families = sorted({":" in ip for ip in port["fixed_ips"]})
    if not families:
        return None
    v6 = draw(st.sampled_from(families))
    own = [ip for ip in port["fixed_ips"] if (":" in ip) == v6]
    direction = draw(st.sampled_from(["ingress", "egress"]))
    fields: dict[str, Any] = {
        "v6": v6,
        "vm": draw(st.sampled_from(own)),
        "remote": draw(st.sampled_from(candidate_addresses(model, v6))),
        "proto": draw(st.sampled_from(["tcp", "udp", "sctp", "icmp"])),
        "dst": draw(st.sampled_from(PORTS)),
        "src": draw(st.sampled_from(PORTS)),
        "icmp": draw(st.sampled_from(ICMP_TYPES[v6])),
    }
    _rule_biased(draw, model, port, direction, fields)
    if fields["proto"] == "icmp" and fields["icmp"] not in ICMP_TYPES[v6]:
        fields["icmp"] = ICMP_TYPES[v6][0]  # not ND/MLD/DHCP-like types: see the docstring
    remote = ipaddress.ip_address(fields["remote"])
    if (
        remote.is_unspecified
        or remote.is_multicast
        or remote.is_link_local
        or fields["remote"] == fields["vm"]
    ):
        return None
    return port["id"], direction, fields


def _ends(port: dict[str, Any], direction: str, f: dict[str, Any]) -> tuple[str, ...]:
    if direction == "ingress":
        return "sink", SINK_MAC, port["mac_address"], f["remote"], f["vm"]
    return port["id"], port["mac_address"], SINK_MAC, f["vm"], f["remote"]


def microflow(port: dict[str, Any], direction: str, f: dict[str, Any]) -> str:
    inport, eth_src, eth_dst, src, dst = _ends(port, direction, f)
    ip = "ip6" if f["v6"] else "ip4"
    clauses = [f'inport == "{inport}"', f"eth.src == {eth_src}", f"eth.dst == {eth_dst}",
               f"{ip}.src == {src}", f"{ip}.dst == {dst}", "ip.ttl == 64"]  # fmt: skip
    if f["proto"] == "icmp":
        icmp = "icmp6" if f["v6"] else "icmp4"
        clauses += [icmp, f"{icmp}.type == {f['icmp']}", f"{icmp}.code == 0"]
    else:
        clauses += [
            f["proto"],
            f"{f['proto']}.dst == {f['dst']}",
            f"{f['proto']}.src == {f['src']}",
        ]
    return " && ".join(clauses)


def ofctl(port: dict[str, Any], direction: str, f: dict[str, Any]) -> str:
    _, _, _, src, dst = _ends(port, direction, f)
    six = "6" if f["v6"] else ""
    addr = ("ipv6_src", "ipv6_dst") if f["v6"] else ("nw_src", "nw_dst")
    if f["proto"] == "icmp":
        head = f"icmp{six},icmp_type={f['icmp']},icmp_code=0"
    else:
        head = f"{f['proto']}{six},tp_dst={f['dst']},tp_src={f['src']}"
    return f"{head},{addr[0]}={src},{addr[1]}={dst}"


def physical_flow(ofports: dict[str, int], port: dict[str, Any], direction: str,
                  f: dict[str, Any]) -> str:  # fmt: skip
    inport, eth_src, eth_dst, _, _ = _ends(port, direction, f)
    head = f"in_port={ofports[inport]},dl_src={eth_src},dl_dst={eth_dst},"
    return head + exact_flow(ofctl(port, direction, f))


def trace(central: OvnCentral, port: dict[str, Any], direction: str, f: dict[str, Any]) -> str:
    flow = microflow(port, direction, f)
    done = subprocess.run(
        ["ovn-trace", f"--db={central.sb}", "--minimal", "--ct=new", SWITCH, flow],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    receiver = port["id"] if direction == "ingress" else "sink"
    return "allow" if f'output("{receiver}")' in done.stdout else "drop"


def load(chassis: OvnChassis, model: dict[str, Any], script: Path) -> dict[str, int]:
    """Load the model's rows and bind every port on the chassis; {port id: OpenFlow port}."""
    chassis.unbind_all()
    chassis.central.reset()
    result = sgflows.compile(model, target="ovn", with_ports=True, switch=SWITCH)
    script.write_text(result.to_nbctl())
    subprocess.run(["sh", str(script), f"--db={chassis.central.nb}", "--wait=sb"], check=True,
                   capture_output=True)  # fmt: skip
    ofports = {p["id"]: chassis.bind(p["id"]) for p in model["ports"]}
    chassis.wait_bound()
    return ofports


@settings(
    settings.get_profile(PROFILE),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)  # fmt: skip
@given(data=st.data())
def test_ovn_trace_agrees_with_evaluator(
    ovn_chassis: OvnChassis, tmp_path: Path, data: st.DataObject
) -> None:
    model = with_sink(data.draw(models()))
    ofports = load(ovn_chassis, model, tmp_path / "rows.sh")
    ports = {p["id"]: p for p in model["ports"]}
    drawn = data.draw(st.lists(ovn_packets(model), min_size=PACKETS_PER_MODEL,
                               max_size=PACKETS_PER_MODEL))  # fmt: skip
    for packet in drawn:
        if packet is None or packet[0] == "sink":
            continue
        port_id, direction, fields = packet
        port = ports[port_id]
        expected = sgflows.evaluate(model, ofctl(port, direction, fields), port=port_id,
                                    direction=direction, ct="new")  # type: ignore[arg-type]  # fmt: skip
        logical = trace(ovn_chassis.central, port, direction, fields)
        flow = physical_flow(ofports, port, direction, fields)
        receiver = port_id if direction == "ingress" else "sink"
        physical = physical_verdict(ovn_chassis, flow, ofports[receiver])
        STATS[expected.verdict] += 1
        assert (logical, physical) == (expected.verdict, expected.verdict), (
            f"{port_id} {direction}: ovn-trace {logical}, ofproto/trace {physical}, evaluator "
            f"{expected.verdict} ({expected.reason})\nmicroflow: "
            f"{microflow(port, direction, fields)}\nflow: {flow}\n"
            f"rows:\n{sgflows.compile(model, target='ovn').to_nbctl()}"
        )


def test_fuzz_exercised_both_verdicts(record_property: Any) -> None:
    """Runs after the fuzz test (file order): a run that never allowed or never dropped a
    packet proved little."""
    record_property("ovn_fuzz_verdicts", dict(STATS))
    assert STATS["allow"] > 0 and STATS["drop"] > 0, dict(STATS)
