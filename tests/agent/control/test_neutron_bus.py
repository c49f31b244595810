"""The parts of the Neutron-bus transport that need no broker: the choice of transport in the
configuration, and the report as Neutron's ``report_state`` takes it. The transport itself runs
against the real servers of ``tests/deployment`` (``test_scenario_neutron_bus.py``)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import pytest
from sgflows.agent import config, status
from sgflows.agent.transport import neutron_state

HAVE_OSLO_MESSAGING = importlib.util.find_spec("oslo_messaging") is not None


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def report(**providers: object) -> dict[str, object]:
    machine = status.StatusMachine()
    machine.sync_started("connected")
    machine.sync_finished({"ports": 3})
    machine.set_degraded("dataplane", "ovs-vswitchd down")
    reporter = status.StatusReporter(
        host="compute-1", machine=machine, configurations={"transport": "neutron"}
    )
    for name, value in providers.items():
        reporter.add_provider(name, lambda value=value: value)
    return asyncio.run(reporter.build_report())


def test_neutron_gets_the_detailed_status_inside_configurations() -> None:
    election = {"role": "leader", "since": "2026-12-02T05:00:00", "bound": True}
    state = neutron_state.agent_state(report(**{"metadata-election/net-1": election}))
    assert set(state) == {"agent_type", "binary", "host", "topic", "start_flag", "configurations"}
    assert state["agent_type"] == "sgflows agent" and state["start_flag"] is False
    conf = state["configurations"]
    assert conf["state"] == "degraded" and conf["phase"] == "active"
    assert conf["degraded_reasons"] == {"dataplane": "ovs-vswitchd down"}
    assert [t[2] for t in conf["transitions"]] == ["full_sync", "active", "degraded"]
    assert conf["custom"]["metadata-election/net-1"] == {"ok": True, "value": election}
    assert conf["transport"] == "neutron" and conf["syncs"]["full"] == 1


def test_configurations_stay_within_neutrons_4095_characters() -> None:
    # Twelve networks of ~1,000 characters each: every provider fits its own 4,096, together
    # they do not fit Neutron's column.
    many = {f"metadata-election/net-{i}": {"role": "standby", "x": "x" * 1000} for i in range(12)}
    state = neutron_state.agent_state(report(**many))
    text = json.dumps(state["configurations"], sort_keys=True)
    assert len(text) <= status.CONFIGURATIONS_LIMIT
    conf = state["configurations"]
    assert "custom" in conf[status.OMITTED_KEY]  # dropped whole and named, not cut
    assert conf["state"] == "degraded"  # the small, important entries stay


def test_report_kwargs_wrap_the_state_like_neutrons_own_agents() -> None:
    r = report()
    kwargs = neutron_state.report_kwargs(r)
    assert set(kwargs) == {"agent_state", "time"} and kwargs["time"] == r["time"]
    assert kwargs["agent_state"]["agent_state"]["host"] == "compute-1"


def test_transport_url_passwords_are_masked() -> None:
    url = "rabbit://neutron:s3cret@10.0.0.1:5672,neutron:other@10.0.0.2:5672/vhost"
    assert neutron_state.masked_url(url) == (
        "rabbit://neutron:***@10.0.0.1:5672,neutron:***@10.0.0.2:5672/vhost"
    )


def test_one_transport_only(tmp_path: Path) -> None:
    ini = write(
        tmp_path / "a.ini",
        "[DEFAULT]\ntransport_url = rabbit://u:p@127.0.0.1:5672/\n"
        "[agent]\ncontroller = unix:/run/sgflows/controller.sock\n",
    )
    with pytest.raises(config.ConfigError, match="not both"):
        config.load_agent_config([ini])


def test_neither_transport_is_an_error_naming_both(tmp_path: Path) -> None:
    ini = write(tmp_path / "a.ini", "[agent]\nhost = x\n")
    with pytest.raises(config.ConfigError, match=r"controller is required.*transport_url"):
        config.load_agent_config([ini])


def test_transport_url_chooses_neutrons_bus(tmp_path: Path) -> None:
    ini = write(tmp_path / "a.ini", "[DEFAULT]\ntransport_url = rabbit://u:p@127.0.0.1:5672/\n")
    if not HAVE_OSLO_MESSAGING:
        # oslo.messaging is no hard dependency: without it the error says what to install.
        with pytest.raises(config.ConfigError, match=r"sgflows\[neutron-bus\]"):
            config.load_agent_config([ini])
        return
    cfg = config.load_agent_config([ini])
    assert cfg.transport_url == "rabbit://u:p@127.0.0.1:5672/" and cfg.controller == ""
    assert cfg.config_files == [ini]
