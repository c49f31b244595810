"""The report schema: what the controller accepts from an agent (issue 16, items 2-3)."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgflows.agent import reports, status

#: Any value msgpack could deliver: JSON plus bytes, NaN, non-string keys, deep nesting.
WIRE_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.integers() | st.binary(max_size=4), children, max_size=4
        )
    ),
    max_leaves=30,
)


def real_report() -> dict[str, Any]:
    """A report built by the agent's own reporter, in a degraded state with custom status."""
    machine = status.StatusMachine()
    machine.sync_started("start")
    machine.sync_finished({"ports": 2})
    machine.set_degraded("dataplane", "x" * 5000)  # clipped by the agent
    reporter = status.StatusReporter(
        host="compute-1", machine=machine, configurations={"k": "v" * 9000}
    )
    reporter.add_provider("ok", lambda: {"a": [1, 2.5, None]})
    reporter.add_provider("deep", lambda: json.loads("[" * 40 + "]" * 40))
    reporter.add_provider("nan", lambda: math.nan)
    reporter.add_provider("boom", lambda: 1 / 0)
    return asyncio.run(reporter.build_report())


def test_the_agents_own_reports_pass_and_round_trip() -> None:
    report = real_report()
    checked = reports.validate_report(report)
    assert checked == report
    assert checked["custom"]["ok"] == {"ok": True, "value": {"a": [1, 2.5, None]}}
    # Providers returning what the controller would refuse degrade their own entry only.
    for name in ("deep", "nan", "boom"):
        assert checked["custom"][name]["ok"] is False, name
    assert len(checked["degraded_reasons"]["dataplane"]) <= reports.TEXT_LIMIT


def test_configurations_limit_is_4095_characters() -> None:
    fits = {"k": "x" * (4095 - len('{"k":""}'))}
    assert reports.json_length(fits) == 4095
    assert reports.validate_report({"host": "h", "configurations": fits})["configurations"]
    over = {"k": fits["k"] + "x"}
    with pytest.raises(reports.ReportError, match="configurations"):
        reports.validate_report({"host": "h", "configurations": over})


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        ({"previous_stop": b"\0"}, "previous_stop"),
        ({"custom": "x"}, "custom"),
        ({"custom": {"x": "y"}}, "custom.x"),
        ({"custom": {"x": {"ok": True, "value": b"1"}}}, "custom.x.value"),
        ({"custom": {"x": {"ok": True, "extra": 1}}}, "custom.x"),
        ({"degraded_reasons": ["x"]}, "degraded_reasons"),
        ({"degraded_reasons": {"x": 1}}, "degraded_reasons.x"),
        ({"start_flag": 1}, "start_flag"),
        ({"syncs": {"full": True}}, "syncs.full"),
        ({"last_sync": {"kind": "partial"}}, "last_sync.kind"),
        ({"last_sync": {"duration": math.inf}}, "last_sync.duration"),
        ({"phase": "degraded"}, "phase"),
        ({"uuid": "u" * 65}, "uuid"),
        ({"host": ""}, "host"),
        ({"configurations": []}, "configurations"),
    ],
)
def test_bad_fields_are_named(spoil: dict[str, Any], field: str) -> None:
    with pytest.raises(reports.ReportError) as err:
        reports.validate_report({"host": "h", **spoil})
    assert err.value.field == field


def test_unknown_fields_are_dropped_not_stored() -> None:
    assert reports.validate_report({"host": "h", "future": b"\0" * 100}) == {"host": "h"}


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(reports.FIELDS)) | st.text(max_size=5), WIRE_VALUES, max_size=8
    )
)
def test_anything_is_refused_or_stored_as_plain_json(report: dict[str, Any]) -> None:
    report.setdefault("host", "compute-1")
    try:
        checked = reports.validate_report(report)
    except reports.ReportError:
        return
    encoded = json.dumps(checked, allow_nan=False)  # never raises: plain JSON only
    assert json.loads(encoded) == checked
    assert set(checked) <= set(reports.FIELDS)


def test_the_agent_registers_no_more_custom_entries_than_the_controller_takes() -> None:
    reporter = status.StatusReporter(host="h", machine=status.StatusMachine())
    for i in range(status.CUSTOM_PROVIDERS_LIMIT):
        reporter.add_provider(f"p{i}", dict)
    reporter.add_provider("p0", dict)  # replacing one is fine
    with pytest.raises(ValueError, match="at most"):
        reporter.add_provider("one-more", dict)
    with pytest.raises(ValueError):
        reporter.add_provider("n" * 256, dict)
    assert reports.validate_report(asyncio.run(reporter.build_report()))
