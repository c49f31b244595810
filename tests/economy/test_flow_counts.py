"""Flow counts, written down: a change that adds flows shows up here, in review.

Each optimisation is measured on its own switch (`optimise_rules`, `conjunctions`,
`share_policies`, `shared_stage`), on the bundled examples and on the seeded benchmark workloads
of 100 and 1,000 ports (50 rules per group, two groups per port, remote groups). Verdicts are
proven unchanged by test_equivalence.py; this file only pins the economy.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import sgflows

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benches"))

import workload  # noqa: E402

NONE: dict[str, bool] = {
    "optimise_rules": False,
    "conjunctions": False,
    "share_policies": False,
    "shared_stage": False,
}
ALGEBRA = {**NONE, "optimise_rules": True}
CONJ = {**ALGEBRA, "conjunctions": True}
POLICIES = {**CONJ, "share_policies": True}
ALL: dict[str, bool] = {}


@pytest.mark.parametrize(
    ("path", "baseline", "optimised"),
    [
        ("examples/two-tier.json", 258, 179),
        ("tests/data/neutron-rpc-payload.json", 162, 123),
    ],
)
def test_bundled_models(path: str, baseline: int, optimised: int) -> None:
    data = (ROOT / path).read_bytes()
    assert sgflows.compile(data, **NONE).flow_count == baseline
    assert sgflows.compile(data).flow_count == optimised


@pytest.fixture(scope="module")
def p100() -> dict[str, Any]:
    return workload.preset("p100", seed=0)


@pytest.mark.parametrize(
    ("options", "expected"),
    [(NONE, 150_850), (ALGEBRA, 27_771), (CONJ, 16_680), (POLICIES, 5_789), (ALL, 2_887)],
    ids=["none", "algebra", "algebra+conjunctions", "+shared-policies", "all"],
)
def test_seeded_workload(p100: dict[str, Any], options: dict[str, bool], expected: int) -> None:
    result = sgflows.compile(p100, widen_unmatchable_port_ranges=True, **options)
    assert result.flow_count == expected


def test_p1000_target() -> None:
    """Issue 11's target: at most 25,000 flows for the seeded 1,000-port workload."""
    p1000 = workload.preset("p1000", seed=0)
    result = sgflows.compile(p1000, widen_unmatchable_port_ranges=True)
    assert result.flow_count == 15_510
    assert result.flow_count <= 25_000
    assert (
        sgflows.compile(p1000, widen_unmatchable_port_ranges=True, shared_stage=False).flow_count
        == 44_996
    )


def _port(**extra: Any) -> dict[str, Any]:
    return {
        "id": "vm",
        "mac_address": "fa:16:3e:00:00:01",
        "fixed_ips": ["10.0.0.5", "2001:db8::5"],
        "security_groups": ["sg"],
        "network_id": "net",
        "ofport": 1,
        **extra,
    }


def _base_flows(port: dict[str, Any], **options: bool) -> int:
    model = {
        "security_groups": {"sg": {"rules": []}},
        "networks": {"net": {"local_vlan": 7}},
        "ports": [port],
    }
    records = sgflows.compile(model, **options).flow_records()
    return sum(1 for r in records if r["port"] == "vm" and r["table"] in (71, 81))


def test_per_port_binding_stage_costs() -> None:
    """Per filtered port in tables 71+81: at most 8 flows for one IPv4 and one IPv6 fixed IP
    and no pairs, 2 per further address, 3 per pair with its own MAC (issue 11)."""
    base = _base_flows(_port())
    assert base == 8
    assert _base_flows(_port(), shared_stage=False) == 42
    more = _base_flows(_port(fixed_ips=["10.0.0.5", "10.0.0.6", "2001:db8::5", "2001:db8::6"]))
    assert more - base == 2 * 2
    pairs = [
        {"ip_address": "10.0.0.100", "mac_address": "fa:16:3e:00:00:99"},
        {"ip_address": "2001:db8::100", "mac_address": "fa:16:3e:00:00:98"},
    ]
    assert _base_flows(_port(allowed_address_pairs=pairs)) - base == 2 * 3
    same_mac = [{"ip_address": "10.0.0.100"}]
    assert _base_flows(_port(allowed_address_pairs=same_mac)) - base == 2


def test_explanations_name_the_covering_rule(p100: dict[str, Any]) -> None:
    result = sgflows.compile(p100, widen_unmatchable_port_ranges=True)
    fates = result.stats["rule_fates"]
    assert fates, "the workload has duplicate and covered rules"
    reasons = {r for rs in fates.values() for r in rs}
    assert any(r.startswith("subsumed by ") for r in reasons)
    # A rule with no flows of its own is explained.
    for rule, count in result.stats["per_rule"].items():
        assert count > 0, rule
