"""Every error case of the compiler issue, through the public API: the problem is reported with
the path of the offending object."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import sgflows

Model = dict[str, Any]


def base() -> Model:
    return {
        "security_groups": {
            "web": {"stateful": True, "rules": []},
            "open": {"stateful": False, "rules": []},
        },
        "ports": [
            {
                "id": "p1",
                "mac_address": "fa:16:3e:00:00:01",
                "fixed_ips": ["10.0.0.1"],
                "security_groups": ["web"],
                "network_id": "n",
                "ofport": 1,
                "local_vlan": 1,
            },
            {
                "id": "p2",
                "mac_address": "fa:16:3e:00:00:02",
                "fixed_ips": ["10.0.0.2"],
                "security_groups": ["web"],
                "network_id": "n",
                "ofport": 2,
                "local_vlan": 1,
            },
        ],
    }


def rule(**fields: Any) -> Callable[[Model], None]:
    def apply(m: Model) -> None:
        m["security_groups"]["web"]["rules"] = [{"direction": "ingress", **fields}]

    return apply


def port(**fields: Any) -> Callable[[Model], None]:
    def apply(m: Model) -> None:
        m["ports"][1].update(fields)

    return apply


def duplicate_group_ids(m: Model) -> None:
    m["security_groups"] = [
        {"id": "web", "rules": []},
        {"id": "web", "rules": []},
        {"id": "open", "rules": []},
    ]


def duplicate_port_ids(m: Model) -> None:
    m["ports"][1]["id"] = "p1"


CASES: list[tuple[str, Callable[[Model], None], str, str]] = [
    (
        "unknown direction",
        rule(direction="out"),
        "security_groups.web.rules[0].direction",
        'unknown direction "out"',
    ),
    (
        "unknown ethertype",
        rule(ethertype="IPX"),
        "security_groups.web.rules[0].ethertype",
        'unknown ethertype "IPX"',
    ),
    (
        "unknown protocol name",
        rule(protocol="tcpx"),
        "security_groups.web.rules[0].protocol",
        'unknown protocol name "tcpx"',
    ),
    (
        "protocol number",
        rule(protocol=256),
        "security_groups.web.rules[0].protocol",
        "protocol number 256 outside 0-255",
    ),
    (
        "port outside range",
        rule(protocol="tcp", port_range_min=65536),
        "security_groups.web.rules[0].port_range_min",
        "port 65536 outside 0-65535",
    ),
    (
        "min > max",
        rule(protocol="tcp", port_range_min=80, port_range_max=22),
        "security_groups.web.rules[0]",
        "port_range_min 80 > port_range_max 22",
    ),
    (
        "ICMP type",
        rule(protocol="icmp", port_range_min=256),
        "security_groups.web.rules[0].port_range_min",
        "ICMP type 256 outside 0-255",
    ),
    (
        "ICMP code",
        rule(protocol="icmp", port_range_min=3, port_range_max=256),
        "security_groups.web.rules[0].port_range_max",
        "ICMP code 256 outside 0-255",
    ),
    (
        "ICMP code without type",
        rule(protocol="icmp", port_range_max=1),
        "security_groups.web.rules[0].port_range_max",
        "ICMP code without type",
    ),
    (
        "ports on a protocol without ports",
        rule(protocol="gre", port_range_min=1),
        "security_groups.web.rules[0]",
        "protocol 47 has no ports",
    ),
    (
        "prefix family",
        rule(ethertype="IPv6", remote_ip_prefix="10.0.0.0/8"),
        "security_groups.web.rules[0].remote_ip_prefix",
        "is not IPv6",
    ),
    (
        "malformed CIDR",
        rule(remote_ip_prefix="10.0.0.0/40"),
        "security_groups.web.rules[0].remote_ip_prefix",
        "malformed CIDR",
    ),
    (
        "malformed IP",
        port(fixed_ips=["10.0.0.256"]),
        "ports[1].fixed_ips[0]",
        "malformed IP address",
    ),
    (
        "malformed MAC",
        port(mac_address="fa:16:3e:00:00:0x"),
        "ports[1].mac_address",
        "malformed MAC address",
    ),
    (
        "two remotes",
        rule(remote_ip_prefix="10.0.0.0/8", remote_address_group_id="x"),
        "security_groups.web.rules[0]",
        "more than one remote",
    ),
    (
        "unknown group",
        port(security_groups=["web", "nope"]),
        "ports.p2.security_groups",
        'unknown security group "nope"',
    ),
    (
        "stateful and stateless",
        port(security_groups=["web", "open"]),
        "ports.p2.security_groups",
        "mixes stateful groups (web) with stateless groups (open)",
    ),
    (
        "one OpenFlow port twice",
        port(ofport=1),
        "ports.p2.ofport",
        'OpenFlow port 1 is also used by port "p1"',
    ),
    (
        "duplicate group ids",
        duplicate_group_ids,
        "security_groups[1]",
        'duplicate security group id "web"',
    ),
    ("duplicate port ids", duplicate_port_ids, "ports[1]", 'duplicate port id "p1"'),
    (
        "DCCP port range",
        rule(protocol="dccp", port_range_min=1, port_range_max=2),
        "security_groups.web.rules[0]",
        "DCCP/UDP-Lite",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_error_case(mutate: Callable[[Model], None], path: str, message: str) -> None:
    model = copy.deepcopy(base())
    mutate(model)
    with pytest.raises(sgflows.ModelError) as info:
        sgflows.compile(model)
    matches = [(p, m) for p, m in info.value.errors if p == path and message in m]
    assert matches, info.value.errors


def test_base_is_valid() -> None:
    assert sgflows.compile(base()).flow_count > 0
