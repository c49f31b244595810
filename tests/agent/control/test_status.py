"""Status state machine, configurations fitting, custom providers and the restart marker."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgflows.agent import status
from sgflows.agent.status import State


def test_phase_transitions_are_explicit() -> None:
    m = status.StatusMachine()
    seen: list[status.Transition] = []
    m.add_listener(seen.append)
    assert m.state == State.STARTING and m.start_flag
    with pytest.raises(status.InvalidTransition):
        m.transition(State.ACTIVE, "skipping the full sync")
    assert m.sync_started("connected") == "full"
    assert m.state == State.FULL_SYNC
    m.sync_finished({"ports": 3, "groups": 2})
    assert m.state == State.ACTIVE and not m.start_flag
    assert m.last_sync is not None and m.last_sync.kind == "full"
    assert m.last_sync.counts == {"ports": 3, "groups": 2}
    assert m.sync_started("generation gap") == "resync"
    assert m.state == State.RESYNCING
    with pytest.raises(status.InvalidTransition):
        m.transition(State.FULL_SYNC, "no way back")
    m.sync_failed("controller went away")
    m.sync_finished({"ports": 4})
    assert m.sync_counts == {"full": 1, "resync": 1, "failed": 1}
    assert [(t.before, t.after) for t in seen] == [
        (State.STARTING, State.FULL_SYNC),
        (State.FULL_SYNC, State.ACTIVE),
        (State.ACTIVE, State.RESYNCING),
        (State.RESYNCING, State.ACTIVE),
    ]


def test_degraded_overlays_the_phase_with_reasons() -> None:
    m = status.StatusMachine()
    m.sync_started("start")
    m.sync_finished({})
    m.set_degraded("controller", "unreachable: connection refused")
    m.set_degraded("dataplane", "ovs-vswitchd not answering")
    assert m.state == State.DEGRADED and m.phase == State.ACTIVE
    assert set(m.degraded) == {"controller", "dataplane"}
    m.clear_degraded("controller")
    assert m.state == State.DEGRADED
    m.clear_degraded("dataplane")
    assert m.state == State.ACTIVE
    afters = [t.after for t in m.history]
    assert afters == [State.FULL_SYNC, State.ACTIVE, State.DEGRADED, State.ACTIVE]


def test_configurations_fit_without_cutting_json() -> None:
    small = {"bridge": "br-int", "ports": 3}
    assert status.fit_configurations(small) == (small, [])

    conf = {"bridge": "br-int", "devices": [f"port-{i:04d}" for i in range(800)], "x": "y"}
    fitted, omitted = status.fit_configurations(conf)
    encoded = json.dumps(fitted)
    assert len(encoded) <= status.CONFIGURATIONS_LIMIT
    assert omitted == ["devices"]
    assert fitted == {"bridge": "br-int", "x": "y", "omitted_keys": ["devices"]}

    # So many big keys that even their names do not fit: still valid and within the limit.
    huge = {f"key-{i:05d}-" + "k" * 60: "v" * 100 for i in range(400)}
    fitted, omitted = status.fit_configurations(huge)
    assert len(json.dumps(fitted)) <= status.CONFIGURATIONS_LIMIT
    assert fitted["omitted_count"] == len(omitted) == 400


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=40),
        st.one_of(st.text(max_size=2000), st.integers(), st.lists(st.text(max_size=50))),
        max_size=30,
    )
)
def test_fitted_configurations_always_fit_and_keep_values(conf: dict[str, Any]) -> None:
    fitted, omitted = status.fit_configurations(conf)
    assert len(json.dumps(fitted, sort_keys=True)) <= status.CONFIGURATIONS_LIMIT
    for key, value in fitted.items():
        if key in conf and key not in (status.OMITTED_KEY, "omitted_count"):
            assert value == conf[key]
    assert set(conf) - set(fitted) <= set(omitted) | {status.OMITTED_KEY, "omitted_count"}


def test_custom_providers_degrade_their_own_field_only(tmp_path: Path) -> None:
    release = threading.Event()

    def slow() -> dict[str, Any]:
        release.wait(10)
        return {"late": True}

    def broken() -> dict[str, Any]:
        raise RuntimeError("netlink went away")

    async def async_ok() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"networks": {"net-1": "serving"}}

    class Election:  # the shape the metadata election exposes
        def status(self) -> dict[str, Any]:
            return {"net-1": {"role": "server", "address": "fe80::a9fe:a9fe"}}

    async def main() -> None:
        m = status.StatusMachine()
        reporter = status.StatusReporter(
            host="compute-1",
            machine=m,
            configurations={"bridge": "br-int"},
            provider_timeout=0.3,
        )
        reporter.add_provider("election", Election().status)
        reporter.add_provider("slow", slow)
        reporter.add_provider("broken", broken)
        reporter.add_provider("async", async_ok)
        reporter.add_provider("huge", lambda: {"blob": "x" * 10000})
        reporter.add_provider("odd", lambda: {1, 2})
        with pytest.raises(TypeError):
            reporter.add_provider("nope", 42)  # type: ignore[arg-type]

        report = await reporter.build_report()
        custom = report["custom"]
        assert custom["election"] == {
            "ok": True,
            "value": {"net-1": {"role": "server", "address": "fe80::a9fe:a9fe"}},
        }
        assert custom["async"]["ok"] is True
        assert custom["slow"] == {"ok": False, "error": "timed out after 0.3s"}
        assert custom["broken"]["ok"] is False and "netlink" in custom["broken"]["error"]
        assert custom["huge"]["ok"] is False and "too large" in custom["huge"]["error"]
        assert custom["odd"]["ok"] is False
        # The slow provider is still stuck: not started a second time.
        again = await reporter.build_report()
        assert "still running" in again["custom"]["slow"]["error"]
        release.set()
        await asyncio.sleep(0.1)
        third = await reporter.build_report()
        assert third["custom"]["slow"] == {"ok": True, "value": {"late": True}}
        reporter.remove_provider("slow")
        assert "slow" not in (await reporter.build_report())["custom"]

        # The Neutron fields are all there.
        for key in ("agent_type", "binary", "host", "topic", "configurations", "start_flag"):
            assert key in report
        assert report["start_flag"] is True and report["state"] == "starting"
        assert report["host"] == "compute-1" and report["uuid"]
        assert report["restarted"] is False and report["last_sync"] is None

    asyncio.run(main())


def test_restart_marker(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent.json"
    first = status.RestartMarker(path)
    first.load(instance_uuid="u1")
    assert not first.restarted and first.previous_stop is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    crashed = status.RestartMarker(path)
    crashed.load(instance_uuid="u2")
    assert crashed.restarted and crashed.previous_stop == "unclean"
    crashed.mark_clean_stop()

    clean = status.RestartMarker(path)
    clean.load(instance_uuid="u3")
    assert clean.restarted and clean.previous_stop == "clean"
    assert clean.current["starts"] == 3

    async def main() -> None:
        reporter = status.StatusReporter(host="h", machine=status.StatusMachine(), marker=clean)
        first_report = await reporter.build_report()
        assert first_report["restarted"] is True
        assert first_report["previous_stop"] == "clean"
        reporter.accepted()
        assert (await reporter.build_report())["restarted"] is False

    asyncio.run(main())


def test_jitter_stays_within_bounds() -> None:
    rng = random.Random(1)
    values = [status.jittered(10.0, 0.2, rng) for _ in range(200)]
    assert all(8.0 <= v <= 12.0 for v in values)
    assert max(values) - min(values) > 1.0
