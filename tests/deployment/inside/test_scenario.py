"""The OVS agent with ``firewall_driver = sgflows`` (and ``openvswitch`` as the reference) on a
real one-host Neutron: everything through the API, real packets between namespaces.

Network type: **flat** on the provider bridge ``br-phys`` (physnet1) of the userspace switch.
VMs are namespaces plugged as os-vif plugs them: an OVS port on ``br-int`` with
``external_ids:iface-id`` (the Neutron port), ``attached-mac`` and ``iface-status=active``.

Each check is recorded (expected, observed) for the side-by-side report; the test asserts at its
end that every observation matched, so that one wrong verdict does not hide the others.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import RESULTS
from deployment import HOST, PHYSNET, PROJECT, Deployment, DeploymentError
from support import run
from support.netns import Namespace, NetnsFactory

LOG = logging.getLogger(__name__)

pytestmark = [pytest.mark.ovs, pytest.mark.netns]

DRIVERS = ("sgflows", "openvswitch")
SETTLE = 30.0  # seconds for the agent to apply an API change (it polls every second)


@dataclass
class Vm:
    name: str
    port: dict[str, Any]
    ns: Namespace
    ofport: int

    @property
    def ip4(self) -> str:
        return self.ns.ip4

    @property
    def ip6(self) -> str:
        return self.ns.ip6


class Scenario:
    """One driver's run: its network, groups, VMs; records what it observes."""

    def __init__(self, d: Deployment, driver: str, netns: NetnsFactory) -> None:
        self.d = d
        self.driver = driver
        self.netns = netns
        self.tag = f"{driver[:4]}{uuid.uuid4().hex[:4]}"
        self.checks: dict[str, dict[str, Any]] = {}
        self.figures: dict[str, Any] = {}
        self.vms: dict[str, Vm] = {}
        self.groups: list[str] = []
        RESULTS[driver] = {"checks": self.checks, "figures": self.figures}

    # recording

    def expect(self, check: str, expected: bool, probe: Callable[[], bool],
               settle: float = SETTLE) -> None:  # fmt: skip
        """Poll ``probe`` until it gives ``expected`` (or ``settle`` runs out); record it."""
        deadline = time.monotonic() + settle
        observed = probe()
        while observed != expected and time.monotonic() < deadline:
            time.sleep(0.5)
            observed = probe()
        self.checks[check] = {"expected": _word(expected), "observed": _word(observed)}

    def delete_resources(self, net: dict[str, Any]) -> None:
        """Delete the scenario's ports, network and groups (best effort, errors logged)."""
        ports = self.d.api("GET", f"ports?network_id={net['id']}")["ports"]
        paths = [f"ports/{p['id']}" for p in ports] + [f"networks/{net['id']}"]
        paths += [f"security-groups/{g}" for g in self.groups]
        for path in paths:
            try:
                self.d.api("DELETE", path)
            except DeploymentError as exc:
                LOG.warning("cleanup: %s", exc)

    def failures(self) -> list[str]:
        return [c for c, r in self.checks.items() if r["expected"] != r["observed"]]

    # the API

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"project_id": PROJECT, **body}
        reply = self.d.api("POST", f"{kind}s", {kind: body})
        return dict(reply[kind])

    def group(self, name: str, *, stateful: bool = True) -> dict[str, Any]:
        group = self.create("security_group",
                            {"name": f"{self.tag}-{name}", "stateful": stateful})  # fmt: skip
        self.groups.append(group["id"])
        return group

    def rule(self, group: dict[str, Any], **rule: Any) -> dict[str, Any]:
        return self.create("security_group_rule",
                           {"security_group_id": group["id"], "direction": "ingress",
                            "ethertype": "IPv4", **rule})  # fmt: skip

    def network(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        net = self.create("network", {
            "name": f"{self.tag}-net", "provider:network_type": "flat",
            "provider:physical_network": PHYSNET, "port_security_enabled": True,
        })  # fmt: skip
        v4 = self.create("subnet", {"network_id": net["id"], "ip_version": 4,
                                    "cidr": "10.20.0.0/24", "enable_dhcp": False,
                                    "gateway_ip": None})  # fmt: skip
        v6 = self.create("subnet", {"network_id": net["id"], "ip_version": 6,
                                    "cidr": "fd20::/64", "enable_dhcp": False,
                                    "gateway_ip": None})  # fmt: skip
        return net, v4, v6

    # VMs

    def boot(self, name: str, net: dict[str, Any], groups: list[dict[str, Any]]) -> Vm:
        """A port bound to this host, plugged into a namespace as os-vif would."""
        port = self.create("port", {
            "network_id": net["id"], "name": f"{self.tag}-{name}",
            "security_groups": [g["id"] for g in groups], "binding:host_id": HOST,
            "device_owner": "compute:nova", "device_id": str(uuid.uuid4()),
        })  # fmt: skip
        ips = {4: "", 6: ""}
        for fixed in port["fixed_ips"]:
            ips[6 if ":" in fixed["ip_address"] else 4] = fixed["ip_address"]
        ns = self.netns(ipv4=f"{ips[4]}/24", ipv6=f"{ips[6]}/64", mac=port["mac_address"])
        self.d_vsctl(
            "add-port", "br-int", ns.host_ifname, "--", "set", "Interface", ns.host_ifname,
            f"external_ids:iface-id={port['id']}",
            f"external_ids:attached-mac={port['mac_address']}",
            "external_ids:iface-status=active", f"external_ids:vm-uuid={port['device_id']}",
        )  # fmt: skip
        ofport = int(self.d_vsctl("get", "Interface", ns.host_ifname, "ofport"))
        vm = Vm(name, port, ns, ofport)
        self.vms[name] = vm
        return vm

    def d_vsctl(self, *args: str) -> str:
        return run("ovs-vsctl", *args, env=self.d.neutron_env()).stdout.strip()

    def wait_active(self, vm: Vm, timeout: float = 60.0) -> float:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            status = self.d.api("GET", f"ports/{vm.port['id']}")["port"]["status"]
            if status == "ACTIVE":
                return time.monotonic() - began
            self.d.agent_alive_or_raise()
            time.sleep(0.5)
        raise DeploymentError(f"port of {vm.name} not ACTIVE after {timeout} s")

    def neighbours(self) -> None:
        """Static ARP/ND entries between all VMs (the checks are about IP, not ARP)."""
        for a in self.vms.values():
            for b in self.vms.values():
                if a is not b:
                    a.ns.add_neighbor(b.ip4, b.port["mac_address"])
                    a.ns.add_neighbor(b.ip6, b.port["mac_address"])

    # the switch

    def flows(self) -> list[str]:
        out = run("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", "--no-stats",
                  env=self.d.neutron_env()).stdout  # fmt: skip
        return [line.strip() for line in out.splitlines() if "cookie=" in line]

    def cookies(self) -> set[str]:
        return {f.split(",")[0] for f in self.flows()}

    def firewall_flows(self) -> list[str]:
        """Flows in the firewall's tables: 60 (but the agent's NORMAL at priority 1) and up."""
        picked = []
        for flow in self.flows():
            table = int(flow.split("table=")[1].split(",")[0]) if "table=" in flow else 0
            if table >= 60 and not (table == 60 and "priority=1," in flow):
                picked.append(flow)
        return picked

    def flows_of(self, vm: Vm) -> list[str]:
        """Firewall flows naming the VM's ofport or MAC."""
        marks = (f"in_port={vm.ofport},", f"reg5={hex(vm.ofport)},",
                 f"dl_dst={vm.port['mac_address']}", f"dl_src={vm.port['mac_address']}",
                 f"output:{vm.ofport}")  # fmt: skip
        return [f for f in self.firewall_flows() if any(m in f for m in marks)]


def _word(b: bool) -> str:
    return "pass" if b else "block"


def tcp(a: Vm, dst: str, port: int) -> Callable[[], bool]:
    return lambda: a.ns.tcp_request(dst, port, b"x", timeout=1.0) == b"echo:x"


def ping(a: Vm, dst: str) -> Callable[[], bool]:
    return lambda: a.ns.ping(dst, count=1, timeout=1.0)


class Pinger:
    """Pings in a background thread; counts requests and replies (the no-gap check)."""

    def __init__(self, vm: Vm, dst: str) -> None:
        self.vm, self.dst = vm, dst
        self.sent = self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            got = self.vm.ns.ping_count(self.dst, count=20, timeout=0.5)
            self.sent += 20
            self.received += got

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture
def netns() -> Iterator[NetnsFactory]:
    factory = NetnsFactory()
    yield factory
    factory.cleanup()


@pytest.mark.parametrize("driver", DRIVERS)
def test_scenario(deployment: Deployment, netns: NetnsFactory, driver: str) -> None:
    s = Scenario(deployment, driver, netns)
    _start_agent(s)
    net, _v4, _v6 = s.network()
    try:
        _run(s, net)
        RESULTS[driver]["agent_show"] = _agent_show(deployment)
    finally:
        log = _stop_agent(s)
        s.delete_resources(net)  # one flat network per physnet: the next driver needs it
    loaded_sgflows = "sgflows" in log and "firewall driver on bridge br-int" in log
    assert loaded_sgflows == (driver == "sgflows"), "the agent loaded the wrong driver"
    failures = s.failures()
    assert not failures, f"{driver}: {failures}\n{json.dumps(s.checks, indent=1)}"


def _run(s: Scenario, net: dict[str, Any]) -> None:
    web = s.group("web")
    client_sg = s.group("client")
    other_sg = s.group("other")
    stateless = s.group("stateless", stateful=False)
    r8080 = s.rule(web, protocol="tcp", port_range_min=8080, port_range_max=8080,
                   remote_ip_prefix="0.0.0.0/0")  # fmt: skip
    s.rule(web, protocol="icmp", remote_group_id=client_sg["id"])
    s.rule(web, protocol="ipv6-icmp", ethertype="IPv6", remote_group_id=client_sg["id"])
    s.rule(stateless, protocol="tcp", port_range_min=9090, port_range_max=9090)

    began = time.monotonic()
    server = s.boot("server", net, [web])
    client = s.boot("client", net, [client_sg])
    other = s.boot("other", net, [other_sg])
    sless = s.boot("stateless", net, [stateless])
    for vm in s.vms.values():
        s.wait_active(vm)
    s.figures["ports_active_seconds"] = round(time.monotonic() - began, 1)
    s.neighbours()
    s.figures["br_int_flows"] = len(s.flows())
    s.figures["firewall_table_flows"] = len(s.firewall_flows())

    _initial_rules(s, server, client, other, sless)
    _rule_and_member_changes(s, web, r8080, server, client, other)
    _agent_restart(s, server, client)
    _port_deletion(s, server, client)


def _stop_agent(s: Scenario) -> str:
    """Stop the agent and drop br-int (the next driver starts clean); return the agent's log."""
    agent = s.d.agent
    log = agent.log.read_text(errors="replace") if agent is not None else ""
    s.d.stop_agent()
    # oslo.log lines: "DATE TIME PID LEVEL logger ..."; a record's every line has that prefix
    # (tracebacks too): keep the first line of each record.
    records: dict[tuple[str, ...], str] = {}
    for line in log.splitlines():
        fields = line.split(" ", 5)
        if fields[3:4] == ["ERROR"]:
            records.setdefault(tuple(fields[:5]), line[:300])
    errors = list(records.values())
    s.figures["agent_log_errors"] = len(errors)
    RESULTS[s.driver]["agent_errors"] = errors[:8]
    run("ovs-vsctl", "--if-exists", "del-br", "br-int", env=s.d.neutron_env())
    return log


def _start_agent(s: Scenario) -> None:
    began = time.monotonic()
    s.d.start_agent(s.driver)
    s.d.wait_agent_alive()
    s.figures["agent_alive_seconds"] = round(time.monotonic() - began, 1)


def _initial_rules(s: Scenario, server: Vm, client: Vm, other: Vm, sless: Vm) -> None:
    with server.ns.tcp_server(port=8080), server.ns.tcp_server(port=22):
        s.expect("tcp 8080 to server (IPv4 rule)", True, tcp(client, server.ip4, 8080))
        s.expect("tcp 22 to server (no rule)", False, tcp(client, server.ip4, 22), settle=0)
        s.expect("tcp 8080 to server over IPv6 (IPv4-only rule)", False,
                 tcp(client, server.ip6, 8080), settle=0)  # fmt: skip
    s.expect("ping server from remote-group member", True, ping(client, server.ip4))
    s.expect("ping6 server from remote-group member", True, ping(client, server.ip6))
    s.expect("ping server from non-member", False, ping(other, server.ip4), settle=0)
    with sless.ns.tcp_server(port=9090), sless.ns.tcp_server(port=9091):
        s.expect("tcp 9090 to stateless port (stateless rule)", True, tcp(client, sless.ip4, 9090))
        s.expect("tcp 9091 to stateless port (no rule)", False, tcp(client, sless.ip4, 9091),
                 settle=0)  # fmt: skip


def _rule_and_member_changes(s: Scenario, web: dict[str, Any], r8080: dict[str, Any],
                             server: Vm, client: Vm, other: Vm) -> None:  # fmt: skip
    with server.ns.tcp_server(port=8080), server.ns.tcp_server(port=22):
        s.rule(web, protocol="tcp", port_range_min=22, port_range_max=22)
        s.expect("tcp 22 after adding its rule", True, tcp(client, server.ip4, 22))
        s.d.api("DELETE", f"security-group-rules/{r8080['id']}")
        s.expect("tcp 8080 after deleting its rule", False, tcp(client, server.ip4, 8080))
    client_sg_id = client.port["security_groups"][0]
    s.d.api(
        "PUT",
        f"ports/{other.port['id']}",
        {"port": {"security_groups": [*other.port["security_groups"], client_sg_id]}},
    )
    s.expect("ping server after non-member joins the remote group", True,
             ping(other, server.ip4))  # fmt: skip
    s.d.api(
        "PUT",
        f"ports/{other.port['id']}",
        {"port": {"security_groups": other.port["security_groups"]}},
    )
    s.expect("ping server after it leaves the remote group", False, ping(other, server.ip4))


def _agent_restart(s: Scenario, server: Vm, client: Vm) -> None:
    """Restart the agent under a steady ping: the new agent's first sync must leave no gap."""
    old = s.cookies()
    with Pinger(client, server.ip4) as pinger:
        time.sleep(2)
        s.d.stop_agent()
        s.d.start_agent(s.driver)
        s.d.wait_agent_alive()
        # Done when the new agent has cleaned the old cookies (its first full pass is over).
        deadline = time.monotonic() + 90
        while s.cookies() & old and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(3)
    s.figures["restart_pings_sent"] = pinger.sent
    s.figures["restart_pings_lost"] = pinger.sent - pinger.received
    s.checks["old cookies gone after restart"] = {
        "expected": "pass", "observed": _word(not s.cookies() & old)}  # fmt: skip
    # No gap across a restart is sgflows' claim; Neutron's own driver is the reference here and
    # its losses are a figure (under a loaded CI machine it lost 90 of 740 pings once).
    if s.driver == "sgflows":
        s.checks["no ping lost during agent restart"] = {
            "expected": "pass",
            "observed": _word(pinger.sent > 0 and pinger.sent == pinger.received),
        }
    s.expect("ping server after restart", True, ping(client, server.ip4), settle=5)


def _port_deletion(s: Scenario, server: Vm, client: Vm) -> None:
    assert s.flows_of(server), "the server port has firewall flows before its deletion"
    s.d.api("DELETE", f"ports/{server.port['id']}")
    s.expect("server's firewall flows gone after port deletion", True,
             lambda: not s.flows_of(server))  # fmt: skip
    s.expect("ping deleted server port", False, ping(client, server.ip4), settle=5)


def _agent_show(d: Deployment) -> str:
    agents = d.openstack("network", "agent", "list", "-f", "json")
    out: str = d.openstack("network", "agent", "show", agents[0]["ID"], "-f", "yaml")
    return out
