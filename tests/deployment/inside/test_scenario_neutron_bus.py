"""``sgflows agent`` on Neutron's message bus (``[DEFAULT] transport_url``), against the real
servers of the deployment: its status in Neutron's agent table, security groups over the
server's legacy RPC, and what an outage of RabbitMQ, a restart and a silence look like.

The file sorts after ``test_scenario.py`` on purpose: it stops RabbitMQ, and the OVS-agent
scenarios should not run on a bus that was just restarted.

Every state is kept in ``RESULTS["bus"]["agent_shows"]`` and summarised at the end of the run
(``conftest.pytest_terminal_summary``; in full in ``$SGFLOWS_DEPLOY_REPORT``): the output of
``openstack network agent show -f json`` for the states that last, and for the fleeting ones
(the first report, the report right after an outage or a restart, which the next report
replaces within a second) the API record the poll caught — the same row the client prints.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RESULTS
from deployment import AGENT_DOWN_TIME, PHYSNET, PROJECT, Daemon, Deployment, DeploymentError

LOG = logging.getLogger(__name__)

pytestmark = [pytest.mark.ovs, pytest.mark.netns]

#: Our agent's host: not the OVS agent's, so that the two never share a row or a port.
BUS_HOST = "sgflows-bus-host"
AGENT_TYPE = "sgflows agent"
REPORT_INTERVAL = 1.0


class BusAgent:
    """One ``sgflows agent`` process on the deployment's bus, and its row in Neutron."""

    def __init__(self, d: Deployment, base: Path) -> None:
        self.d = d
        self.base = base
        self.conf = base / "agent.ini"
        self.state_dir = base / "state"
        self.conf.write_text(
            "[DEFAULT]\n"
            f"transport_url = {d.mq.url}\n"
            f"log_file = {base / 'agent.log'}\n"
            "debug = true\n"
            "[agent]\n"
            f"host = {BUS_HOST}\n"
            f"state_dir = {self.state_dir}\n"
            f"report_interval = {REPORT_INTERVAL}\n"
            "report_jitter = 0\n"
            "report_min_interval = 0.5\n"
            "backoff_initial = 0.2\n"
            "backoff_max = 1\n"
            "[rpc]\n"
            "request_timeout = 5\n"
        )
        self.daemon: Daemon | None = None
        self.shows: list[dict[str, Any]] = []
        RESULTS["bus"] = {"checks": {}, "agent_shows": self.shows}

    def start(self) -> None:
        self.daemon = Daemon(
            "sgflows-agent",
            [self.d.bin("python"), "-m", "sgflows.agent", "agent", "--config-file", str(self.conf)],
            self.base / "agent.out",
            {**os.environ, "PYTHONWARNINGS": "ignore"},
        ).start()  # fmt: skip

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            assert self.daemon.proc is not None
            code = self.daemon.proc.returncode
            self.daemon = None
            assert code == 0, f"agent exited {code}: {self.log()[-3000:]}"

    def signal(self, sig: signal.Signals) -> None:
        assert self.daemon is not None and self.daemon.proc is not None
        os.kill(self.daemon.proc.pid, sig)

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.base / "agent.log",
                 self.base / "agent.out") if p.exists()]  # fmt: skip
        return "\n".join(parts)

    # Neutron's view

    def record(self) -> dict[str, Any]:
        """Our row in Neutron's agent table, through the API ({} before the first report)."""
        agents = self.d.api("GET", f"agents?host={BUS_HOST}")["agents"]
        return dict(agents[0]) if agents else {}

    def keep(self, label: str, record: dict[str, Any]) -> None:
        """Keep an API record (``GET /v2.0/agents``) caught by a poll, for the report."""
        self.shows.append({"label": label, "source": "API", "show": record})

    def show(self, label: str) -> dict[str, Any]:
        """``openstack network agent show`` (JSON), kept for the report under ``label``."""
        agent_id = self.record()["id"]
        shown = self.d.openstack("network", "agent", "show", agent_id, "-f", "json")
        self.shows.append({"label": label, "source": "openstack network agent show",
                           "show": shown})  # fmt: skip
        return dict(shown)

    def wait(self, what: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
        """Poll the API (every 0.1 s) until ``check(record)``; the matching record."""
        deadline = time.monotonic() + timeout
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for daemon in [self.daemon, *self.d.servers]:
                if daemon is not None:
                    daemon.check_alive()  # an exited server: its log's tail, not a timeout
            record = self.record()
            if record and check(record):
                return record
            time.sleep(0.1)
        last = json.dumps(record)[:3000]
        raise AssertionError(
            f"{what}: not seen in {timeout:.0f} s; last record {last}\n"
            f"agent log:\n{self.log()[-4000:]}"
        )

    def applied(self) -> dict[str, Any]:
        """What the agent's reference dataplane last applied (STATE_DIR/applied.json)."""
        path = self.state_dir / "applied.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}


def conf(record: dict[str, Any]) -> dict[str, Any]:
    value = record.get("configurations") or {}
    return dict(value) if isinstance(value, dict) else {}


def state_is(*states: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: conf(r).get("state") in states


@pytest.fixture
def bus_agent(deployment: Deployment, tmp_path: Path) -> Iterator[BusAgent]:
    agent = BusAgent(deployment, tmp_path)
    try:
        yield agent
    finally:
        if agent.daemon is not None:
            agent.daemon.stop()
        if deployment.mq.server is None:
            deployment.mq.start_server()  # leave the bus up for whatever runs next


def _create(d: Deployment, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return dict(d.api("POST", f"{kind}s", {kind: {"project_id": PROJECT, **body}})[kind])


def _network_with_port(d: Deployment, tag: str) -> tuple[dict[str, Any], ...]:
    """A flat network, a group and a port bound to our host (the network, group, port)."""
    net = _create(d, "network", {"name": f"bus-{tag}", "provider:network_type": "flat",
                                 "provider:physical_network": PHYSNET})  # fmt: skip
    _create(d, "subnet", {"network_id": net["id"], "ip_version": 4, "cidr": "10.77.0.0/24",
                          "enable_dhcp": False, "gateway_ip": None})  # fmt: skip
    sg = _create(d, "security_group", {"name": f"bus-{tag}"})
    port = _create(d, "port", {"network_id": net["id"], "security_groups": [sg["id"]],
                               "binding:host_id": BUS_HOST, "name": f"bus-{tag}"})  # fmt: skip
    return net, sg, port


def _delete(d: Deployment, net: dict[str, Any], sg: dict[str, Any], port: dict[str, Any]) -> None:
    """Leave the deployment as found (there is one flat network per physical network)."""
    for path in (f"ports/{port['id']}", f"networks/{net['id']}", f"security-groups/{sg['id']}"):
        try:
            d.api("DELETE", path)
        except DeploymentError as exc:
            LOG.warning("cleanup: %s", exc)


def _rules_applied(agent: BusAgent, sg_id: str) -> list[dict[str, Any]]:
    info = agent.applied().get("info") or {}
    return list((info.get("security_groups") or {}).get(sg_id, []))


def test_sgflows_agent_on_neutrons_bus(deployment: Deployment, bus_agent: BusAgent) -> None:
    resources: list[tuple[dict[str, Any], ...]] = []
    try:
        _scenario(deployment, bus_agent, resources)
    finally:
        for net, sg, port in resources:
            _delete(deployment, net, sg, port)


def _scenario(d: Deployment, agent: BusAgent, resources: list[tuple[dict[str, Any], ...]]) -> None:
    checks = RESULTS["bus"]["checks"]

    # A port bound to our host before the agent starts: its first full sync finds it through
    # get_ports_by_vnic_type_and_host (ML2 cannot bind it here: no mechanism driver knows our
    # agent type, so no port_update is sent for it).
    net, sg, port = _network_with_port(d, uuid.uuid4().hex[:6])
    resources.append((net, sg, port))

    # 1. Start: the first report (starting, start_flag) comes before the first full sync.
    agent.start()
    seen: list[str] = []

    def note(record: dict[str, Any]) -> bool:
        state = conf(record).get("state")
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        return state == "active"

    first = agent.wait("the agent registers", lambda r: True)
    agent.keep("first report", first)
    active = agent.wait("active after the first full sync", note)
    seen_all = [conf(first).get("state"), *seen]
    assert conf(first).get("state") in ("starting", "full_sync", "active"), first
    assert active["agent_type"] == AGENT_TYPE and active["binary"] == "sgflows-agent"
    assert active["alive"] is True
    path = [t[2] for t in conf(active)["transitions"]]
    assert path[:2] == ["full_sync", "active"], conf(active)["transitions"]
    assert conf(active)["syncs"]["full"] == 1 and conf(active)["transport"] == "neutron"
    assert "***" in conf(active)["transport_url"]  # the password is not in the agent table
    checks["states at start"] = {"expected": "starting..active", "observed": "/".join(seen_all)}
    agent.show("active")
    listed = d.openstack("network", "agent", "list", "--host", BUS_HOST, "-f", "json")
    assert [a["Agent Type"] for a in listed] == [AGENT_TYPE], listed

    # 2. Security groups over the legacy RPC, and its fanout notifications.
    deadline = time.monotonic() + 30
    while port["id"] not in (agent.applied().get("info") or {}).get("devices", {}):
        assert time.monotonic() < deadline, f"port never applied: {agent.log()[-3000:]}"
        time.sleep(0.2)
    before = len(_rules_applied(agent, sg["id"]))
    _create(d, "security_group_rule", {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp",
        "port_range_min": 8080, "port_range_max": 8080})  # fmt: skip
    while not any(r.get("port_range_min") == 8080 for r in _rules_applied(agent, sg["id"])):
        assert time.monotonic() < deadline, f"rule never applied: {agent.log()[-3000:]}"
        time.sleep(0.2)
    after = len(_rules_applied(agent, sg["id"]))
    checks["rule change applied"] = {"expected": "yes", "observed": f"{before}->{after} rules"}
    assert "security_groups_rule_updated" in agent.log()

    # 3. RabbitMQ stopped: Neutron marks the agent dead after agent_down_time; the agent
    #    degrades; once the bus is back its first report says so, then it resyncs.
    full_before = conf(agent.record())["syncs"]["full"]
    resync_before = conf(agent.record())["syncs"]["resync"]
    failures_before = conf(agent.record())["report_failures"]
    d.mq.stop_server()
    down_at = time.monotonic()
    dead = agent.wait("alive false while RabbitMQ is down", lambda r: r["alive"] is False,
                      AGENT_DOWN_TIME + 30)  # fmt: skip
    checks["alive after agent_down_time, bus down"] = {
        "expected": "False",
        "observed": f"{dead['alive']} after {time.monotonic() - down_at:.1f}s",
    }
    agent.show("RabbitMQ stopped (last report before the outage)")
    d.mq.start_server()
    degraded = agent.wait("the degraded report after the outage", state_is("degraded"), 90)
    assert "controller" in conf(degraded)["degraded_reasons"], conf(degraded)
    agent.keep("RabbitMQ back: first report", degraded)

    def resynced(r: dict[str, Any]) -> bool:
        return state_is("active")(r) and r["alive"] and conf(r)["syncs"]["resync"] > resync_before

    back = agent.wait("resynced and active again", resynced, 90)
    # The resync follows the reconnection, whatever the server answered: the report it
    # answered `revived` may have had its reply lost (the call timed out while the broker's
    # reply queues came back), and the next report is then `alive`. Either the agent saw
    # `revived`, or a report failed: what it must do in both cases is resync.
    replies, failures = conf(back)["report_replies"], conf(back)["report_failures"]
    assert replies.get("revived", 0) >= 1 or failures > failures_before, (replies, failures)
    checks["after the outage"] = {
        "expected": "degraded, revived or a failed report, resync",
        "observed": f"replies {replies}, {failures - failures_before} failed report(s)",
    }
    agent.show("RabbitMQ back: active")

    # 4. Restart: the first report of the new process says `restarted` (clean stop).
    agent.stop()
    agent.start()
    restarted = agent.wait("restarted reported", lambda r: conf(r).get("restarted") is True)
    assert conf(restarted)["previous_stop"] == "clean", conf(restarted)
    agent.keep("after an agent restart: first report", restarted)
    again = agent.wait("active after the restart", state_is("active"))
    assert conf(again)["restarted"] is False and conf(again)["syncs"]["full"] == 1
    observed = f"{conf(restarted)['restarted']}, {conf(restarted)['previous_stop']}"
    checks["restart"] = {"expected": "restarted, clean", "observed": observed}

    # 5. Silence (process frozen): alive false after agent_down_time; `revived` → full sync
    #    (counted as a resync: the agent was already active).
    syncs = conf(again)["syncs"]
    agent.signal(signal.SIGSTOP)
    try:
        silent = agent.wait("alive false without reports", lambda r: r["alive"] is False,
                            AGENT_DOWN_TIME + 30)  # fmt: skip
        agent.show("frozen for agent_down_time")
    finally:
        agent.signal(signal.SIGCONT)
    revived = agent.wait(
        "resync after revived",
        lambda r: (
            r["alive"] and conf(r)["syncs"]["resync"] > syncs["resync"] and state_is("active")(r)
        ),
    )
    assert conf(revived)["report_replies"].get("revived", 0) >= 1
    observed = f"alive {silent['alive']}, then syncs {conf(revived)['syncs']}"
    checks["revived → full resync"] = {"expected": "yes", "observed": observed}
    agent.show("revived: resynced")
    agent.stop()
    assert full_before == 1
    # Our own code logs every unexpected failure at ERROR (oslo.messaging logs the outage
    # itself at ERROR too, under its own name).
    ours = [line for line in agent.log().splitlines() if " ERROR sgflows" in line]
    if ours:
        raise DeploymentError("errors in the agent's log:\n" + "\n".join(ours[-20:]))
