"""``NeutronBusTransport`` on oslo.messaging's in-process ``fake://`` driver (a real driver of
oslo.messaging that keeps its queues in memory): the method map, the numbering of fanout casts,
and the errors. A tiny server plays Neutron's RPC server here with the *signatures* of Neutron
29.0.0's endpoints; the real servers are exercised by ``test_scenario_neutron_bus.py``."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest
from sgflows.agent import config, rpc, service
from sgflows.agent.transport import Callbacks, Caller, neutron


class FakeNeutron:
    """Endpoints with the keyword signatures of Neutron's (agents_db, ml2/rpc, sg handlers)."""

    target = oslo_messaging.Target(version="1.9")

    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.reply = "alive"

    def has_alive_neutron_server(self, context: Any, **kwargs: Any) -> bool:
        return True

    def report_state(self, context: Any, **kwargs: Any) -> str:
        self.reports.append(kwargs)
        return self.reply

    def get_ports_by_vnic_type_and_host(
        self, context: Any, vnic_type: str, host: str
    ) -> list[dict[str, Any]]:
        return [{"id": "p2"}, {"id": "p1"}] if vnic_type == "normal" and host == "h1" else []

    def security_group_info_for_devices(
        self, context: Any, devices: list[str], call_version: str
    ) -> dict[str, Any]:
        assert call_version == "1.3"
        return {"devices": {d: {"id": d} for d in devices}, "security_groups": {},
                "sg_member_ips": {}}  # fmt: skip


def run(body: Any) -> None:
    async def main() -> None:
        cfg = config.AgentConfig(
            controller="", host="h1", transport_url="fake:///", report_interval=1.0,
            request_timeout=3.0, backoff_initial=0.05, backoff_max=0.2,
        )  # fmt: skip
        events: list[Any] = []

        async def on_connected(caller: Caller) -> None:
            events.append(("connected", await caller.call("subscribe", "h1")))

        transport = neutron.NeutronBusTransport(cfg, Callbacks(
            on_connected, lambda reason: events.append(("down", reason)),
            lambda method, params: events.append((method, params[0])),
        ))  # fmt: skip
        server = FakeNeutron()
        servers = [
            oslo_messaging.get_rpc_server(
                transport._transport, oslo_messaging.Target(topic=topic, server="neutron"),
                [server],
            )
            for topic in (neutron.REPORTS_TOPIC, neutron.PLUGIN_TOPIC)
        ]  # fmt: skip
        for s in servers:
            s.start()
        transport.start()
        try:
            for _ in range(100):
                if transport.connected and events:
                    break
                await asyncio.sleep(0.05)
            assert transport.connected and events[0][0] == "connected", events
            await body(transport, server, events)
        finally:
            await transport.stop()
            for s in servers:
                s.stop()
                s.wait()

    asyncio.run(main())


def test_methods_map_to_neutrons_rpc() -> None:
    async def body(t: neutron.NeutronBusTransport, server: FakeNeutron, events: Any) -> None:
        assert await t.call("devices_for_host", "h1") == ["p1", "p2"]
        info = await t.call("security_group_info_for_devices", ["p1"])
        assert info["devices"] == {"p1": {"id": "p1"}}
        server.reply = "revived"
        report = {
            "host": "h1", "agent_type": "sgflows agent", "binary": "sgflows-agent",
            "topic": "sgflows-agent", "start_flag": True, "state": "starting",
            "time": "2026-12-02T05:00:00.000000", "configurations": {"devices": []},
        }  # fmt: skip
        assert await t.call("report_state", report) == "revived"
        sent = server.reports[-1]
        assert sent["time"] == report["time"]
        state = sent["agent_state"]["agent_state"]
        assert state["start_flag"] is True and state["configurations"]["state"] == "starting"
        with pytest.raises(rpc.MethodNotFound):
            await t.call("activate_port_binding", "p1", "h1")
        with pytest.raises(rpc.MethodNotFound):
            await t.call("no_such_method")

    run(body)


def test_fanout_casts_arrive_numbered_in_order() -> None:
    async def body(t: neutron.NeutronBusTransport, server: FakeNeutron, events: Any) -> None:
        epoch = events[0][1]["epoch"]
        casts = [
            ("q-agent-notifier-security_group-update", "1.1", "security_groups_rule_updated",
             {"security_groups": ["sg1"]}),
            ("q-agent-notifier-security_group-update", "1.1", "security_groups_member_updated",
             {"security_groups": ["sg2"]}),
            ("q-agent-notifier-port-update", "1.0", "port_update",
             {"port": {"id": "p1"}, "network_type": "flat", "segmentation_id": None,
              "physical_network": "physnet1"}),
            ("q-agent-notifier-port-delete", "1.0", "port_delete", {"port_id": "p1"}),
            ("q-agent-notifier-binding-activate", "1.5", "binding_activate",
             {"port_id": "p1", "host": "h1"}),
            ("q-agent-notifier-binding-deactivate", "1.5", "binding_deactivate",
             {"port_id": "p1", "host": "h1", "network_id": "n1"}),
        ]  # fmt: skip
        for topic, version, method, kwargs in casts:
            client = oslo_messaging.get_rpc_client(
                t._transport, oslo_messaging.Target(topic=topic, version="1.0")
            )
            client.prepare(fanout=True, version=version).cast({}, method, **kwargs)
            for _ in range(100):  # one at a time: order across topics is not promised
                if len(events) > casts.index((topic, version, method, kwargs)) + 1:
                    break
                await asyncio.sleep(0.02)
        got = events[1:]
        assert [m for m, _ in got] == [c[2] for c in casts], got
        assert [p["generation"] for _, p in got] == list(range(1, len(casts) + 1))
        assert {p["epoch"] for _, p in got} == {epoch}
        assert got[0][1]["security_groups"] == ["sg1"] and got[3][1]["port_id"] == "p1"

    run(body)


class LosingNeutron(FakeNeutron):
    """Processes every report, but answers the one after :meth:`lose_next` (``revived``) only
    once the agent's call has timed out: the reply is lost, as when the broker's reply queues
    are not back yet after an outage. The server has then noted the agent alive again, so the
    next report is answered ``alive``."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self._lose = threading.Event()
        self.lost = 0  # `revived` replies the agent never received

    def lose_next(self) -> None:
        self.reply = "revived"
        self._lose.set()

    def report_state(self, context: Any, **kwargs: Any) -> str:
        reply = super().report_state(context, **kwargs)
        if self._lose.is_set():
            self._lose.clear()
            self.reply = "alive"
            self.lost += 1
            time.sleep(self.delay)
        return reply


class AppliedDataplane:
    def __init__(self) -> None:
        self.applied: list[bool] = []

    async def apply(self, info: dict[str, Any], *, full: bool) -> dict[str, int]:
        self.applied.append(full)
        return {"ports": len(info["devices"])}


def test_agent_resyncs_when_the_revived_reply_is_lost(tmp_path: Path) -> None:
    timeout = 2.0
    cfg = config.AgentConfig(
        controller="", host="h1", transport_url="fake:///", report_interval=0.3,
        request_timeout=timeout, backoff_initial=0.05, backoff_max=0.2, state_dir=str(tmp_path),
    )  # fmt: skip
    dp = AppliedDataplane()
    agent = service.Agent(cfg, dataplane=dp)  # type: ignore[arg-type]
    assert isinstance(agent.client, neutron.NeutronBusTransport)
    server = LosingNeutron(delay=timeout + 1)

    async def until(what: str, predicate: Any, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)

    async def main() -> None:
        assert isinstance(agent.client, neutron.NeutronBusTransport)
        servers = [
            oslo_messaging.get_rpc_server(
                agent.client._transport, oslo_messaging.Target(topic=topic, server="neutron"),
                [server],
            )
            for topic in (neutron.REPORTS_TOPIC, neutron.PLUGIN_TOPIC)
        ]  # fmt: skip
        for s in servers:
            s.start()
        stop = asyncio.Event()
        running = asyncio.ensure_future(agent.run(stop))
        try:
            await until("the first full sync", lambda: agent.machine.sync_counts["full"] == 1)
            resyncs = agent.machine.sync_counts["resync"]
            server.lose_next()
            await until("a failed report", lambda: agent.report_failures >= 1)
            await until("a resync", lambda: agent.machine.sync_counts["resync"] > resyncs)
            # The server said `revived`, the agent never heard it, and resynced all the same.
            assert server.lost == 1 and agent.replies.get("revived", 0) == 0, agent.replies
            assert dp.applied.count(True) >= 2, dp.applied
        finally:
            stop.set()
            await running
            for s in servers:
                s.stop()
                s.wait()

    asyncio.run(main())
