"""Real packets through OVN: namespaces whose veth host ends are bound on the private chassis
(``external_ids:iface-id``), the model's rows loaded with ``--with-ports``, and traffic sent
between them through the flows ovn-controller installed on ``br-int``.

- TCP: the client reaches the server's allowed port and not another one it listens on.
- DHCP: the stateless port ``lease`` has a group with no rules at all; it gets its address from
  OVN's native DHCP responder (the ``DHCP_Options`` row this test creates), through sgflows'
  implicit DHCP ACLs only.
- Metadata: the endpoint is a namespace on a port without port security (``meta``) holding
  169.254.169.254 and serving TCP on port 80, as Neutron's metadata proxy would. The client,
  whose group allows all IPv4 egress, reaches it (so the endpoint works); the stateless port,
  with no rule for it, does not: metadata is never implicit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sgflows
from support import run
from support.netns import Namespace, NetnsFactory
from support.ovn import OvnChassis

SWITCH = "sgf_pkt"
METADATA = "169.254.169.254"
GATEWAY = ("10.9.0.1", "fa:16:3e:09:00:01")  # the DHCP server's identity (OVN answers)


def _port(pid: str, mac: str, ip: str, groups: list[str], security: bool = True) -> dict[str, Any]:
    return {"id": pid, "mac_address": mac, "fixed_ips": [ip], "security_groups": groups,
            "port_security_enabled": security, "device_owner": "compute:nova"}  # fmt: skip


MODEL: dict[str, Any] = {
    "security_groups": {
        "srv": {
            "stateful": True,
            "rules": [
                {
                    "direction": "ingress",
                    "ethertype": "IPv4",
                    "protocol": "tcp",
                    "port_range_min": 8080,
                    "port_range_max": 8080,
                }
            ],
        },
        "cli": {"stateful": True, "rules": [{"direction": "egress", "ethertype": "IPv4"}]},
        "bare": {"stateful": False, "rules": []},
    },
    "ports": [
        _port("server", "fa:16:3e:09:00:10", "10.9.0.10", ["srv"]),
        _port("client", "fa:16:3e:09:00:20", "10.9.0.20", ["cli"]),
        _port("lease", "fa:16:3e:09:00:30", "10.9.0.30", ["bare"]),
        _port("meta", "fa:16:3e:09:00:fe", METADATA, [], security=False),
    ],
}


@dataclass
class Site:
    chassis: OvnChassis
    ns: dict[str, Namespace]


#: Addresses configured in the namespaces (``lease`` gets its own by DHCP).
STATIC = {"server": "10.9.0.10/24", "client": "10.9.0.20/24", "meta": f"{METADATA}/32"}


def _attach(chassis: OvnChassis, factory: NetnsFactory, port: dict[str, Any]) -> Namespace:
    """A namespace for ``port`` with its MAC; its veth host end moved into the switch's
    namespace and bound to the logical port."""
    assert chassis.ovs is not None and chassis.ovs.netns is not None
    ns = factory(mac=port["mac_address"], ipv4=STATIC.get(port["id"]))
    run("ip", "link", "set", ns.host_ifname, "netns", chassis.ovs.netns)
    ns.host_netns = chassis.ovs.netns
    chassis.ovs.ip("link", "set", ns.host_ifname, "up")
    chassis.bind(port["id"], device=ns.host_ifname)
    return ns


def _routes(ns: Namespace, *routes: str) -> None:
    for route in routes:
        ns.exec("ip", "route", "add", route, "dev", ns.ifname)


@pytest.fixture(scope="module")
def site(ovn_chassis: OvnChassis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    central = ovn_chassis.central
    ovn_chassis.unbind_all()
    central.reset()
    script = tmp_path_factory.mktemp("ovn-pkt") / "rows.sh"
    script.write_text(
        sgflows.compile(MODEL, target="ovn", with_ports=True, switch=SWITCH).to_nbctl()
    )
    run("sh", str(script), f"--db={central.nb}")
    factory = NetnsFactory()
    try:
        ns = {p["id"]: _attach(ovn_chassis, factory, p) for p in MODEL["ports"]}
        _routes(ns["server"], f"{METADATA}/32")
        _routes(ns["client"], f"{METADATA}/32")
        _routes(ns["meta"], "10.9.0.0/24")
        ovn_chassis.wait_bound()
        yield Site(ovn_chassis, ns)
    finally:
        ovn_chassis.unbind_all()
        factory.cleanup()


def test_tcp_allowed_port_and_blocked_port(site: Site) -> None:
    server, client = site.ns["server"], site.ns["client"]
    with server.tcp_server("0.0.0.0", 8080) as allowed, server.tcp_server("0.0.0.0", 8081) as other:
        assert client.tcp_request(server.ip4, allowed.port, b"hi") == b"echo:hi"
        assert client.tcp_request(server.ip4, other.port, b"hi", timeout=1.0) is None


def _dhcp_options(site: Site) -> None:
    nbctl = site.chassis.central.nbctl
    uuid = nbctl("dhcp-options-create", "10.9.0.0/24", "owner=sgflows-test").strip()
    if not uuid:  # ovn-nbctl prints nothing here: find the row by its external_ids
        uuid = nbctl("--bare", "--columns=_uuid", "find", "DHCP_Options",
                     "external_ids:owner=sgflows-test").split()[0]  # fmt: skip
    nbctl("dhcp-options-set-options", uuid, "lease_time=3600", f"router={GATEWAY[0]}",
          f"server_id={GATEWAY[0]}", f"server_mac={GATEWAY[1]}")  # fmt: skip
    nbctl("lsp-set-dhcpv4-options", "lease", uuid)
    site.chassis.wait()


def test_stateless_port_gets_native_dhcp_lease_without_rules(site: Site) -> None:
    assert MODEL["security_groups"]["bare"]["rules"] == []
    _dhcp_options(site)
    lease = site.ns["lease"]
    Path(f"/etc/netns/{lease.name}").mkdir(parents=True, exist_ok=True)  # udhcpc: resolv.conf
    try:
        out = lease.exec("udhcpc", "-i", lease.ifname, "-f", "-q", "-n", "-t", "5", "-T", "1",
                         "-s", "/bin/true", timeout=30).stderr  # fmt: skip
    finally:
        run("rm", "-rf", f"/etc/netns/{lease.name}")
    assert re.search(r"lease of 10\.9\.0\.30 obtained", out), out


def test_metadata_needs_a_rule(site: Site) -> None:
    meta, client, lease = site.ns["meta"], site.ns["client"], site.ns["lease"]
    lease.exec("ip", "addr", "replace", "10.9.0.30/24", "dev", lease.ifname)
    lease.exec("ip", "route", "replace", f"{METADATA}/32", "dev", lease.ifname)
    with meta.tcp_server("0.0.0.0", 80) as endpoint:
        assert client.tcp_request(METADATA, endpoint.port, b"md") == b"echo:md"
        assert lease.tcp_request(METADATA, endpoint.port, b"md", timeout=1.0) is None
