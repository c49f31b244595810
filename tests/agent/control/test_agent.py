"""The agent against a scripted controller on a real Unix socket: gaps, replies, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sgflows.agent import auth, config, controller, reports, rpc, service
from sgflows.agent.status import State

SECRET = b"s" * 32


class ScriptedController:
    """A real RPC server whose answers the test decides."""

    def __init__(self) -> None:
        creds = auth.Credentials(
            [auth.Principal("compute-1", frozenset({"agent", "service"}), secret=SECRET)]
        )
        self.server = rpc.RPCServer(creds)
        self.epoch = "epoch-1"
        self.generation = 10
        self.replies: list[str] = []
        self.reports: list[dict[str, Any]] = []
        self.info_calls: list[list[str]] = []
        self.active_host = "compute-2"
        self.subscribers: list[rpc.Connection] = []
        s = self.server
        s.register("subscribe", self._subscribe, params=(str,))
        s.register("report_state", self._report, params=(dict,))
        s.register("devices_for_host", self._devices, params=(str,))
        s.register("security_group_info_for_devices", self._info, params=(list,))
        s.register("activate_port_binding", self._activate, params=(str, str))

    async def _subscribe(self, conn: rpc.Connection, host: str) -> dict[str, Any]:
        self.subscribers.append(conn)
        return {"epoch": self.epoch, "generation": self.generation}

    async def _report(self, conn: rpc.Connection, report: dict[str, Any]) -> str:
        reports.validate_report(report)  # what the agent sends passes the controller's schema
        self.reports.append(report)
        return self.replies.pop(0) if self.replies else controller.ALIVE

    async def _devices(self, conn: rpc.Connection, host: str) -> list[str]:
        return ["p1"]

    async def _info(self, conn: rpc.Connection, devices: list[str]) -> dict[str, Any]:
        self.info_calls.append(devices)
        return {
            "devices": {d: {"id": d, "security_groups": ["web"]} for d in devices},
            "security_groups": {"web": [{"direction": "ingress", "ethertype": "IPv4"}]},
            "sg_member_ips": {},
        }

    async def _activate(self, conn: rpc.Connection, port_id: str, host: str) -> dict[str, Any]:
        raise rpc.Conflict("already active", {"port_id": port_id, "host": self.active_host})

    def push(self, method: str, payload: dict[str, Any], generation: int | None = None) -> None:
        self.generation = generation if generation is not None else self.generation + 1
        message = dict(payload, epoch=self.epoch, generation=self.generation)
        for conn in self.subscribers:
            conn.notify(method, [message])


class RecordingDataplane:
    def __init__(self) -> None:
        self.applied: list[tuple[bool, dict[str, Any]]] = []
        self.failures = 0

    async def apply(self, info: dict[str, Any], *, full: bool) -> dict[str, int]:
        if self.failures:
            self.failures -= 1
            raise service.DataplaneError("ovs-vswitchd is not answering")
        self.applied.append((full, info))
        return {"ports": len(info["devices"])}


async def until(what: str, predicate: Callable[[], Any], timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def run_with_agent(
    tmp: Path,
    body: Callable[[ScriptedController, service.Agent, RecordingDataplane], Awaitable[None]],
    **settings: Any,
) -> None:
    async def main() -> None:
        ctl = ScriptedController()
        sock = tmp / "c.sock"
        await ctl.server.start_unix(str(sock))
        secret_file = tmp / "secret"
        auth.write_secret(secret_file, SECRET)
        cfg = config.AgentConfig(
            controller=f"unix:{sock}",
            host="compute-1",
            secret_file=str(secret_file),
            report_interval=0.05,
            backoff_initial=0.02,
            backoff_max=0.1,
            state_dir=str(tmp / "state"),
            request_timeout=5,
        )
        for name, value in settings.items():
            setattr(cfg, name, value)
        dataplane = RecordingDataplane()
        agent = service.Agent(cfg, dataplane=dataplane)
        stop = asyncio.Event()
        runner = asyncio.ensure_future(agent.run(stop))
        try:
            await until("first full sync", lambda: agent.machine.state == State.ACTIVE)
            await body(ctl, agent, dataplane)
        finally:
            stop.set()
            await asyncio.wait_for(runner, 10)
            await ctl.server.close()

    asyncio.run(asyncio.wait_for(main(), 40))


def test_generation_gaps_and_epochs(short_tmp: Path) -> None:
    async def body(ctl: ScriptedController, agent: service.Agent, dp: RecordingDataplane) -> None:
        assert agent.machine.sync_counts["full"] == 1 and dp.applied[0][0] is True
        # In order, and concerning us: a refresh, not a resync.
        ctl.push(controller.RULE_UPDATED, {"security_groups": ["web"]})
        await until("refresh", lambda: agent.counters["refreshes"] == 1)
        assert agent.machine.sync_counts["resync"] == 0 and dp.applied[-1][0] is False
        # A jump of the generation: something was lost, resync in full.
        ctl.push(controller.MEMBER_UPDATED, {"security_groups": ["web"]}, ctl.generation + 2)
        await until("resync after gap", lambda: agent.machine.sync_counts["resync"] == 1)
        assert agent.counters["gaps"] == 1
        # A new epoch: resync, then follow the new numbering without further resyncs.
        ctl.epoch = "epoch-2"
        ctl.push(controller.RULE_UPDATED, {"security_groups": ["web"]}, 1)
        await until("resync after epoch", lambda: agent.machine.sync_counts["resync"] == 2)
        ctl.push(controller.RULE_UPDATED, {"security_groups": ["web"]})
        await until("refresh in new epoch", lambda: agent.counters["refreshes"] == 2)
        assert agent.machine.sync_counts["resync"] == 2
        # Groups and ports of others, and bindings of other hosts, are ignored.
        ignored = agent.counters["ignored"]
        ctl.push(controller.RULE_UPDATED, {"security_groups": ["not-ours"]})
        ctl.push(controller.PORT_DELETE, {"port_id": "someone-elses"})
        ctl.push(controller.BINDING_ACTIVATE, {"port_id": "p9", "host": "compute-9"})
        await until("ignored", lambda: agent.counters["ignored"] == ignored + 3)
        assert "p9" not in agent.devices
        # A binding activated on our host adds the port.
        ctl.push(controller.BINDING_ACTIVATE, {"port_id": "p9", "host": "compute-1"})
        await until("p9 applied", lambda: "p9" in dp.applied[-1][1]["devices"])
        ctl.push(controller.BINDING_DEACTIVATE, {"port_id": "p9", "host": "compute-1"})
        await until("p9 removed", lambda: "p9" not in dp.applied[-1][1]["devices"])
        assert agent.machine.sync_counts["resync"] == 2

    run_with_agent(short_tmp, body)


def test_report_replies_revived_and_new_trigger_full_resyncs(short_tmp: Path) -> None:
    async def body(ctl: ScriptedController, agent: service.Agent, dp: RecordingDataplane) -> None:
        await until("reports accepted", lambda: agent.reporter.reports_accepted >= 2)
        first = ctl.reports[0]
        assert first["start_flag"] in (True, False) and first["host"] == "compute-1"
        assert any(r["start_flag"] is False for r in ctl.reports)
        resyncs = agent.machine.sync_counts["resync"]
        ctl.replies.append(controller.REVIVED)
        await until("resync after revived", lambda: agent.machine.sync_counts["resync"] > resyncs)
        resyncs = agent.machine.sync_counts["resync"]
        ctl.replies.append(controller.NEW)  # the controller forgot us
        await until("resync after new", lambda: agent.machine.sync_counts["resync"] > resyncs)
        assert agent.replies[controller.REVIVED] == 1 and agent.replies[controller.NEW] >= 1

    run_with_agent(short_tmp, body)


def test_dataplane_failure_degrades_then_recovers(short_tmp: Path) -> None:
    async def body(ctl: ScriptedController, agent: service.Agent, dp: RecordingDataplane) -> None:
        dp.failures = 10**6  # until the test says otherwise
        agent.request_sync("test")
        await until("degraded", lambda: agent.machine.state == State.DEGRADED)
        assert "ovs-vswitchd" in agent.machine.degraded["dataplane"]
        await until(
            "a degraded report",
            lambda: any(
                r["state"] == "degraded" and "dataplane" in r["degraded_reasons"]
                for r in ctl.reports
            ),
        )
        dp.failures = 0
        await until("recovered", lambda: agent.machine.state == State.ACTIVE)
        assert agent.machine.sync_counts["failed"] >= 1
        assert not agent.machine.degraded

    run_with_agent(short_tmp, body)


def test_activate_binding_treats_409_on_own_host_as_success(short_tmp: Path) -> None:
    async def body(ctl: ScriptedController, agent: service.Agent, dp: RecordingDataplane) -> None:
        ctl.active_host = "compute-1"
        assert await agent.activate_binding("p4") is True
        ctl.active_host = "compute-2"
        with pytest.raises(rpc.Conflict) as err:
            await agent.activate_binding("p4")
        assert err.value.code == 409

    run_with_agent(short_tmp, body)


def test_custom_status_reaches_the_controller(short_tmp: Path) -> None:
    async def body(ctl: ScriptedController, agent: service.Agent, dp: RecordingDataplane) -> None:
        agent.add_status_provider("election", lambda: {"net-1": "serving"})
        agent.add_status_provider("broken", lambda: 1 / 0)
        await until(
            "custom status reported", lambda: any("election" in r["custom"] for r in ctl.reports)
        )
        report = [r for r in ctl.reports if "election" in r["custom"]][-1]
        assert report["custom"]["election"] == {"ok": True, "value": {"net-1": "serving"}}
        assert report["custom"]["broken"]["ok"] is False
        assert report["state"] == "active"
        assert len(report["configurations"]) > 0

    run_with_agent(short_tmp, body)


def test_state_changes_are_reported_at_once_but_rate_limited(short_tmp: Path) -> None:
    """With a report interval of 5 minutes, `active` still reaches the controller right after
    the sync; a burst of changes costs a few reports, not one each."""

    async def body(ctl: ScriptedController, agent: service.Agent, dp: RecordingDataplane) -> None:
        await until("active reported", lambda: any(r["state"] == "active" for r in ctl.reports))
        before = len(ctl.reports)
        for i in range(50):  # flapping: 100 state changes
            agent.machine.set_degraded("dataplane", f"flap {i}")
            agent.machine.clear_degraded("dataplane")
        agent.machine.set_degraded("dataplane", "down for good")
        await until(
            "the last state reported",
            lambda: ctl.reports[-1]["degraded_reasons"] == {"dataplane": "down for good"},
        )
        # 101 changes inside one min_interval: one report now, one after the interval.
        assert len(ctl.reports) - before <= 3, len(ctl.reports) - before

    run_with_agent(short_tmp, body, report_interval=300.0, report_min_interval=0.5)


def test_neutrons_port_update_for_a_port_bound_here_adds_it(short_tmp: Path) -> None:
    """On Neutron's bus a port newly bound to this host arrives as port_update (binding:host_id),
    not as binding_activate; bound elsewhere it is ignored."""

    async def body(ctl: ScriptedController, agent: service.Agent, dp: RecordingDataplane) -> None:
        ignored = agent.counters["ignored"]
        ctl.push(controller.PORT_UPDATE, {"port": {"id": "p7", "binding:host_id": "compute-2"}})
        await until("ignored", lambda: agent.counters["ignored"] == ignored + 1)
        assert "p7" not in agent.devices
        ctl.push(controller.PORT_UPDATE, {"port": {"id": "p7", "binding:host_id": "compute-1"}})
        await until("p7 applied", lambda: "p7" in dp.applied[-1][1]["devices"])
        assert agent.machine.sync_counts["resync"] == 0  # a refresh, not a resync

    run_with_agent(short_tmp, body)
