"""The reference backend on its own: model diffs, liveness, persistence, bindings."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sgflows.agent import controller, rpc


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


MODEL: dict[str, Any] = {
    "security_groups": [
        {
            "id": "web",
            "stateful": True,
            "rules": [{"direction": "ingress", "remote_group_id": "web"}],
        },
        {"id": "db", "stateful": False, "rules": []},
    ],
    "ports": [
        {"id": "p1", "fixed_ips": ["10.0.0.1"], "security_groups": ["web"], "binding_host": "h1"},
        {"id": "p2", "fixed_ips": ["10.0.0.2"], "security_groups": ["db"], "binding_host": "h2"},
    ],
}


def write_model(path: Path, model: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(model))
    os.replace(tmp, path)
    # Make sure the watcher sees a new signature even within one mtime tick.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def make_backend(tmp_path: Path, clock: Clock) -> tuple[controller.ReferenceBackend, list[Any]]:
    backend = controller.ReferenceBackend(
        tmp_path / "model.json", tmp_path / "state.db", agent_down_time=10, clock=clock
    )
    events: list[Any] = []
    backend.add_event_sink(lambda method, payload, audience: events.append((method, payload)))
    return backend, events


def test_model_changes_become_notifications(tmp_path: Path) -> None:
    model_path = tmp_path / "model.json"
    write_model(model_path, MODEL)
    backend, events = make_backend(tmp_path, Clock())
    assert backend.check_model() is False and events == []

    changed = copy.deepcopy(MODEL)
    changed["security_groups"][1]["rules"].append({"direction": "egress"})  # db rules
    changed["ports"][1]["security_groups"] = ["db", "web"]  # p2 joins web: web members change
    del changed["ports"][0]  # p1 deleted
    changed["ports"].append(
        {"id": "p3", "fixed_ips": ["10.0.0.3"], "security_groups": ["db"], "binding_host": "h2"}
    )
    write_model(model_path, changed)
    assert backend.check_model() is True
    methods = [m for m, _ in events]
    assert (controller.RULE_UPDATED, {"security_groups": ["db"]}) in events
    assert (controller.MEMBER_UPDATED, {"security_groups": ["db", "web"]}) in events
    assert (controller.PORT_DELETE, {"port_id": "p1"}) in events
    assert (controller.BINDING_DEACTIVATE, {"port_id": "p1", "host": "h1"}) not in events
    assert (controller.BINDING_ACTIVATE, {"port_id": "p3", "host": "h2"}) in events
    updated = sorted(p["port"]["id"] for m, p in events if m == controller.PORT_UPDATE)
    assert updated == ["p2", "p3"]
    assert methods.index(controller.RULE_UPDATED) < methods.index(controller.PORT_UPDATE)

    # A broken model is refused and the previous one kept.
    events.clear()
    model_path.write_text("{not json")
    assert backend.check_model() is False and events == []
    assert asyncio.run(backend.devices_for_host("h2")) == ["p2", "p3"]


def test_liveness_replies_and_persistence(tmp_path: Path) -> None:
    write_model(tmp_path / "model.json", MODEL)
    clock = Clock()
    backend, _ = make_backend(tmp_path, clock)

    async def report(b: controller.ReferenceBackend, **extra: Any) -> str:
        return await b.report_state({"host": "h1", "state": "active", **extra})

    assert asyncio.run(report(backend)) == controller.NEW
    clock.now += 5
    assert asyncio.run(report(backend)) == controller.ALIVE
    clock.now += 11
    assert backend.check_liveness() == ["h1"]
    assert backend.check_liveness() == []  # logged once
    [row] = asyncio.run(backend.list_agents())
    assert row["alive"] is False
    assert asyncio.run(report(backend, restarted=True, previous_stop="clean")) == controller.REVIVED
    [row] = asyncio.run(backend.list_agents())
    assert row["alive"] is True and row["last_restart"]["previous_stop"] == "clean"

    # A new controller instance reads the table: the agent is known.
    clock.now += 1
    again, _ = make_backend(tmp_path, clock)
    assert asyncio.run(report(again)) == controller.ALIVE
    clock.now += 60
    third, _ = make_backend(tmp_path, clock)
    assert asyncio.run(report(third)) == controller.REVIVED


def test_binding_activation(tmp_path: Path) -> None:
    model = copy.deepcopy(MODEL)
    model["ports"].append(
        {
            "id": "vm",
            "fixed_ips": ["10.0.0.9"],
            "security_groups": ["web"],
            "bindings": [{"host": "h1", "status": "ACTIVE"}, {"host": "h2"}],
        }
    )
    write_model(tmp_path / "model.json", model)
    backend, events = make_backend(tmp_path, Clock())

    async def main() -> None:
        with pytest.raises(rpc.NotFound):
            await backend.activate_port_binding("nope", "h2")
        with pytest.raises(rpc.NotFound):
            await backend.activate_port_binding("vm", "h3")
        with pytest.raises(rpc.Conflict) as err:
            await backend.activate_port_binding("vm", "h1")
        assert err.value.details == {"port_id": "vm", "host": "h1"}
        port = await backend.activate_port_binding("vm", "h2")
        assert port["binding:host_id"] == "h2"
        assert await backend.devices_for_host("h2") == ["p2", "vm"]

    asyncio.run(main())
    assert events == [
        (controller.BINDING_DEACTIVATE, {"port_id": "vm", "host": "h1"}),
        (controller.BINDING_ACTIVATE, {"port_id": "vm", "host": "h2"}),
    ]
    # Persisted: a new instance still has vm active on h2.
    again, _ = make_backend(tmp_path, Clock())
    assert asyncio.run(again.devices_for_host("h2")) == ["p2", "vm"]


def test_neutron_reply_shape(tmp_path: Path) -> None:
    model = copy.deepcopy(MODEL)
    model["address_groups"] = {"ag": {"addresses": ["192.0.2.0/24", "2001:db8::/64"]}}
    model["security_groups"][1]["rules"] = [
        {"direction": "egress", "ethertype": "IPv4", "remote_address_group_id": "ag"},
        {"direction": "egress", "ethertype": "IPv6", "remote_ip_prefix": "::/0"},
    ]
    write_model(tmp_path / "model.json", model)
    backend, _ = make_backend(tmp_path, Clock())
    info = asyncio.run(backend.security_group_info_for_devices(["p2", "unknown"]))
    assert list(info["devices"]) == ["p2"]
    port = info["devices"]["p2"]
    assert port["device"] == "p2" and port["binding:host_id"] == "h2"
    rules = info["security_groups"]["db"]
    assert all(r["stateful"] is False and r["security_group_id"] == "db" for r in rules)
    assert rules[1]["dest_ip_prefix"] == "::/0" and "remote_ip_prefix" not in rules[1]
    assert info["sg_member_ips"] == {
        "ag": {"IPv4": [["192.0.2.0/24", None]], "IPv6": [["2001:db8::/64", None]]}
    }


def test_notifications_name_the_hosts_that_need_them(tmp_path: Path) -> None:
    model = copy.deepcopy(MODEL)
    model["security_groups"][1]["rules"] = [{"direction": "ingress", "remote_group_id": "web"}]
    model["ports"].append(
        {"id": "p3", "fixed_ips": ["10.0.0.3"], "security_groups": [], "binding_host": "h3"}
    )
    write_model(tmp_path / "model.json", model)
    backend = controller.ReferenceBackend(tmp_path / "model.json", tmp_path / "state.db")
    events: list[tuple[str, dict[str, Any], Any]] = []
    backend.add_event_sink(
        lambda method, payload, audience: events.append((method, payload, audience))
    )
    # web's members change: h1 (in web) and h2 (db references web) need it; h3 does not.
    model["ports"][0]["fixed_ips"] = ["10.0.0.11"]
    write_model(tmp_path / "model.json", model)
    assert backend.check_model()
    by_method = {method: (payload, audience) for method, payload, audience in events}
    payload, audience = by_method[controller.MEMBER_UPDATED]
    assert payload == {"security_groups": ["web"]}
    assert audience == {"h1": {"security_groups": ["web"]}, "h2": {"security_groups": ["web"]}}
    payload, audience = by_method[controller.PORT_UPDATE]
    assert payload["port"]["id"] == "p1" and set(audience) == {"h1"}
    # db's rules change: only h2, and the list is cut down to what h2 needs.
    events.clear()
    model["security_groups"][1]["rules"].append({"direction": "egress"})
    model["security_groups"][0]["rules"].append({"direction": "egress"})
    write_model(tmp_path / "model.json", model)
    assert backend.check_model()
    [(_method, payload, audience)] = events
    assert payload == {"security_groups": ["db", "web"]}
    assert audience == {
        "h1": {"security_groups": ["web"]},
        "h2": {"security_groups": ["db", "web"]},
    }


def test_an_agent_reads_only_devices_bound_to_its_host(tmp_path: Path) -> None:
    write_model(tmp_path / "model.json", MODEL)
    backend, _ = make_backend(tmp_path, Clock())
    mine = asyncio.run(backend.security_group_info_for_devices(["p1", "p2"], "h1"))
    assert list(mine["devices"]) == ["p1"] and list(mine["security_groups"]) == ["web"]
    everything = asyncio.run(backend.security_group_info_for_devices(["p1", "p2"]))
    assert sorted(everything["devices"]) == ["p1", "p2"]
