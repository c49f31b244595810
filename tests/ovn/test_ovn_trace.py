"""The OVN target against the reference evaluator: the example's rows loaded into a private
Northbound database, the ports of the table bound on the private chassis, each packet traced
through northd's logical flows (``ovn-trace``) and through the OpenFlow flows ovn-controller
installed on ``br-int`` (``ofproto/trace``), and both verdicts compared with
``sgflows.evaluate`` for the same packet.

The packets enter or leave through ``nfv-1``, a port without port security, so that any
source address can be sent and any destination received.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import sgflows
from support.ovn import OvnCentral, OvnChassis, exact_flow, physical_verdict

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two-tier.json"
SWITCH = "sgf_switch"
SINK = ("nfv-1", "fa:16:3e:00:01:41")
MACS = {
    "web-1": "fa:16:3e:00:00:11",
    "db-1": "fa:16:3e:00:00:21",
    "edge-1": "fa:16:3e:00:01:31",
}
ADDRESSES = {"web-1": "10.0.0.11", "db-1": "10.0.0.21", "edge-1": "10.1.0.31"}


@dataclass(frozen=True)
class Case:
    """A packet at ``port``: ``remote`` is the far end's address."""

    port: str
    direction: str
    proto: str
    remote: str
    dst_port: int | None = None
    src_port: int | None = None
    icmp: tuple[int, int] | None = None
    source: str | None = None  # the port's own address unless given (e.g. spoofed)


CASES = [
    Case("web-1", "ingress", "tcp", "192.0.2.9", 80),
    Case("web-1", "ingress", "tcp", "192.0.2.9", 81),
    Case("web-1", "ingress", "tcp", "192.0.2.9", 443),
    Case("web-1", "ingress", "tcp", "192.0.2.9", 22),
    Case("web-1", "ingress", "tcp", "10.0.0.12", 22),
    Case("web-1", "ingress", "udp", "192.0.2.9", 53),
    Case("web-1", "ingress", "icmp", "192.0.2.9", icmp=(8, 0)),
    Case("web-1", "ingress", "icmp", "192.0.2.9", icmp=(13, 0)),
    Case("web-1", "egress", "tcp", "192.0.2.9", 5),
    Case("web-1", "egress", "udp", "192.0.2.9", 68, src_port=67),
    Case("web-1", "egress", "udp", "192.0.2.9", 67, src_port=68),
    Case("db-1", "ingress", "tcp", "10.0.0.12", 5432),
    Case("db-1", "ingress", "tcp", "10.0.0.100", 5432),
    Case("db-1", "ingress", "tcp", "10.0.0.13", 5432),
    Case("db-1", "ingress", "tcp", "10.0.0.12", 5433),
    Case("db-1", "ingress", "tcp", "198.51.100.7", 22),
    Case("edge-1", "ingress", "udp", "192.0.2.9", 5000),
    Case("edge-1", "ingress", "udp", "192.0.2.9", 5099),
    Case("edge-1", "ingress", "udp", "192.0.2.9", 5100),
    Case("edge-1", "ingress", "tcp", "192.0.2.9", 5000),
    Case("edge-1", "egress", "udp", "192.0.2.9", 1023),
    Case("edge-1", "egress", "udp", "192.0.2.9", 1024),
    Case("edge-1", "egress", "tcp", "169.254.169.254", 80),
    Case("edge-1", "egress", "tcp", "169.254.169.254", 443),
    Case("edge-1", "egress", "udp", "10.1.0.1", 67, src_port=68),
    Case("edge-1", "ingress", "udp", "10.1.0.1", 68, src_port=67),
    # DHCP requests: one ACL per group allows them, OVN's port security checks the source.
    Case("edge-1", "egress", "udp", "255.255.255.255", 67, src_port=68, source="0.0.0.0"),
    Case("web-1", "egress", "udp", "10.0.0.1", 67, src_port=68, source="10.0.0.99"),
    Case("db-1", "egress", "udp", "10.0.0.1", 67, src_port=68),
]


def _ends(case: Case) -> tuple[str, str, str, str, str]:
    """(inport, eth.src, eth.dst, ip4.src, ip4.dst) of the case's packet."""
    mac, address = MACS[case.port], case.source or ADDRESSES[case.port]
    if case.direction == "ingress":
        return SINK[0], SINK[1], mac, case.remote, address
    return case.port, mac, SINK[1], address, case.remote


def _microflow(case: Case) -> str:
    inport, eth_src, eth_dst, ip_src, ip_dst = _ends(case)
    clauses = [
        f'inport == "{inport}"',
        f"eth.src == {eth_src}",
        f"eth.dst == {eth_dst}",
        f"ip4.src == {ip_src}",
        f"ip4.dst == {ip_dst}",
        "ip.ttl == 64",
    ]
    if case.proto == "icmp":
        assert case.icmp is not None
        clauses += ["icmp4", f"icmp4.type == {case.icmp[0]}", f"icmp4.code == {case.icmp[1]}"]
    else:
        clauses += [
            case.proto,
            f"{case.proto}.dst == {case.dst_port}",
            f"{case.proto}.src == {case.src_port or 40000}",
        ]
    return " && ".join(clauses)


def _ofctl_packet(case: Case) -> str:
    _, _, _, ip_src, ip_dst = _ends(case)
    fields = [case.proto, f"nw_src={ip_src}", f"nw_dst={ip_dst}"]
    if case.proto == "icmp":
        assert case.icmp is not None
        fields += [f"icmp_type={case.icmp[0]}", f"icmp_code={case.icmp[1]}"]
    else:
        fields += [f"tp_dst={case.dst_port}", f"tp_src={case.src_port or 40000}"]
    return ",".join(fields)


def _physical_flow(case: Case, ofports: dict[str, int]) -> str:
    inport, eth_src, eth_dst, _, _ = _ends(case)
    head = f"in_port={ofports[inport]},dl_src={eth_src},dl_dst={eth_dst},"
    return head + exact_flow(_ofctl_packet(case))


def _trace_verdict(central: OvnCentral, case: Case) -> str:
    """``allow`` when the packet reaches the receiving port, else ``drop``."""
    done = subprocess.run(
        ["ovn-trace", f"--db={central.sb}", "--minimal", "--ct=new", SWITCH, _microflow(case)],
        capture_output=True,
        text=True,
        check=True,
    )
    receiver = case.port if case.direction == "ingress" else SINK[0]
    return "allow" if f'output("{receiver}")' in done.stdout else "drop"


@dataclass(frozen=True)
class Loaded:
    central: OvnCentral
    chassis: OvnChassis
    ofports: dict[str, int]


@pytest.fixture(scope="module")
def loaded(ovn_chassis: OvnChassis, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    central = ovn_chassis.central
    ovn_chassis.unbind_all()
    central.reset()
    result = sgflows.compile(EXAMPLE.read_bytes(), target="ovn", with_ports=True, switch=SWITCH)
    script = tmp_path_factory.mktemp("ovn") / "rows.sh"
    script.write_text(result.to_nbctl())
    subprocess.run(["sh", str(script), f"--db={central.nb}", "--wait=sb"], check=True,
                   capture_output=True)  # fmt: skip
    ofports = {port: ovn_chassis.bind(port) for port in [*MACS, SINK[0]]}
    ovn_chassis.wait_bound()
    return Loaded(central, ovn_chassis, ofports)


def test_rows_are_owned_and_named_ours(loaded: Loaded) -> None:
    owners = loaded.central.nbctl("--bare", "--columns=external_ids", "list", "ACL").split("\n")
    rows = [row for row in owners if row.strip()]
    assert rows and all("owner=sgflows" in row for row in rows)
    groups = loaded.central.nbctl("--bare", "--columns=name", "list", "Port_Group").split()
    assert sorted(groups) == ["sgf_db", "sgf_drop", "sgf_edge", "sgf_web"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.port}-{c.direction}-{c.proto}-"
                         f"{c.remote}-{c.dst_port or c.icmp}")  # fmt: skip
def test_trace_agrees_with_evaluator(loaded: Loaded, case: Case) -> None:
    expected = sgflows.evaluate(
        EXAMPLE.read_bytes(),
        _ofctl_packet(case),
        port=case.port,
        direction=case.direction,  # type: ignore[arg-type]
        ct="new",
    )
    receiver = case.port if case.direction == "ingress" else SINK[0]
    flow = _physical_flow(case, loaded.ofports)
    physical = physical_verdict(loaded.chassis, flow, loaded.ofports[receiver])
    logical = _trace_verdict(loaded.central, case)
    assert (logical, physical) == (expected.verdict, expected.verdict), (
        f"ovn-trace {logical}, ofproto/trace {physical} ({flow}): {expected.reason}"
    )


def test_chassis_installed_flows(loaded: Loaded) -> None:
    """ovn-controller claimed every bound port and installed flows for them on br-int."""
    bindings = loaded.central.sbctl("--bare", "--columns=logical_port,chassis", "list",
                                    "Port_Binding")  # fmt: skip
    assert all(port in bindings for port in loaded.ofports)
    assert loaded.chassis.flow_count() > 100
