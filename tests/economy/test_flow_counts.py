"""Flow counts, written down: a change that adds flows shows up here, in review.

Each optimisation is measured on its own switch (`optimise_rules`, `conjunctions`,
`share_policies`), on the bundled examples and on the seeded benchmark workload of 100 ports
(50 rules per group, two groups per port, remote groups). Verdicts are proven unchanged by
test_equivalence.py; this file only pins the economy.
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

NONE: dict[str, bool] = {"optimise_rules": False, "conjunctions": False, "share_policies": False}
ALGEBRA = {**NONE, "optimise_rules": True}
CONJ = {**ALGEBRA, "conjunctions": True}
ALL: dict[str, bool] = {}


@pytest.mark.parametrize(
    ("path", "baseline", "optimised"),
    [
        ("examples/two-tier.json", 276, 259),
        ("tests/data/neutron-rpc-payload.json", 170, 160),
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
    [(NONE, 151_364), (ALGEBRA, 28_285), (CONJ, 17_194), (ALL, 6_303)],
    ids=["none", "algebra", "algebra+conjunctions", "all"],
)
def test_seeded_workload(p100: dict[str, Any], options: dict[str, bool], expected: int) -> None:
    result = sgflows.compile(p100, widen_unmatchable_port_ranges=True, **options)
    assert result.flow_count == expected


def test_explanations_name_the_covering_rule(p100: dict[str, Any]) -> None:
    result = sgflows.compile(p100, widen_unmatchable_port_ranges=True)
    fates = result.stats["rule_fates"]
    assert fates, "the workload has duplicate and covered rules"
    reasons = {r for rs in fates.values() for r in rs}
    assert any(r.startswith("subsumed by ") for r in reasons)
    # A rule with no flows of its own is explained.
    for rule, count in result.stats["per_rule"].items():
        assert count > 0, rule
