"""Malformed input never crashes the API or the CLI: random model-shaped values give a result
or a ModelError, and the CLI an exit code and a message, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import sgflows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

KEYS = [
    "security_groups",
    "ports",
    "devices",
    "sg_member_ips",
    "address_groups",
    "networks",
    "bindings",
    "id",
    "stateful",
    "rules",
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
    "remote_address_group_id",
    "mac_address",
    "fixed_ips",
    "allowed_address_pairs",
    "ip_address",
    "security_groups",
    "network_id",
    "ofport",
    "local_vlan",
    "IPv4",
    "IPv6",
]
TEXT = st.sampled_from(
    [
        "ingress",
        "egress",
        "IPv4",
        "IPv6",
        "tcp",
        "icmp",
        "10.0.0.0/8",
        "::1",
        "fa:16:3e:00:00:01",
        "web",
        "p1",
        "",
        "300",
        "-1",
    ]
) | st.text(max_size=8)
LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(
    max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(value=VALUES)
def test_api_gives_a_result_or_a_model_error(value: Any) -> None:
    try:
        sgflows.compile(value, max_flows=100_000)
    except sgflows.ModelError as e:
        assert e.errors, "a ModelError lists its problems"
    except TypeError:
        assert not isinstance(value, (dict, list, str, bytes))


def test_cli_never_prints_a_traceback() -> None:
    inputs = [
        b"\xff\xfe",
        b"{}",
        b'{"ports": [{"id": 1}]}',
        json.dumps([{"a": 1e308}]).encode(),
        b'{"security_groups": {"x": {"rules": [{"direction": null}]}}}',
        b"\x00" * 10,
    ]
    for data in inputs:
        proc = subprocess.run(
            [sys.executable, "-m", "sgflows", "compile", "-"],
            input=data,
            capture_output=True,
            timeout=60,
        )
        assert b"Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode in (0, 2), (data, proc.returncode, proc.stderr)
