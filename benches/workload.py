"""Seeded generator of security-group workloads for the benchmark suite.

One call builds a model in the documented shape (``docs/model.md``); ``to_neutron_rpc`` turns
the same workload into the reply of Neutron's ``security_group_info_for_devices``, which is
what Neutron's firewall drivers consume. Both shapes describe the same policy, so sgflows and
the Neutron reference (``benches/neutron_ref``) are measured on identical inputs.

The layout imitates a compute host of a small cloud:

- ``projects`` projects, each with ``networks_per_project`` networks (IPv4 /16 and IPv6 /64,
  one local VLAN tag each) and a pool of security groups: the project's ``default`` group
  (Neutron's standard rules: ingress from itself, egress anywhere) and ``tiers`` tier groups;
- every port sits on one network of its project and in ``groups_per_port`` groups of that
  project (the default group and tier groups); half are dual-stack; some have an allowed
  address pair;
- every group has ``rules_per_group`` rules mixing directions, IPv4/IPv6, TCP/UDP/ICMP/any/
  other protocols, single ports and ranges, remote prefixes, remote groups (including the
  group itself) and address groups;
- a remote group has at least ``members`` member addresses: its ports on this host, plus
  ports on other hosts of the project's networks to make up the count;
- the groups of ``stateless_projects`` projects are stateless (a project is all stateful or all
  stateless, since Neutron refuses a port that mixes them).

Pure standard library and deterministic: the same arguments give the same dicts, in the same
order, on every run and every Python version we support.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import random
import sys
import uuid
from typing import Any

__all__ = ["PRESETS", "generate", "mutate", "preset", "summary", "to_neutron_rpc"]

# Named workloads shared by the pytest-benchmark suite and the Neutron reference runner.
PRESETS: dict[str, dict[str, Any]] = {
    "p10": {"ports": 10, "rules_per_group": 50},
    "p100": {"ports": 100, "rules_per_group": 50},
    "p1000": {"ports": 1000, "rules_per_group": 50},
    "p3000": {"ports": 3000, "rules_per_group": 50},
    "p10000": {"ports": 10000, "rules_per_group": 50},
    # Few ports, huge remote groups: the conjunction flows of Neutron's driver grow with members.
    "p100-m2000": {"ports": 100, "rules_per_group": 50, "members": 2000},
    "p1000-m2000": {"ports": 1000, "rules_per_group": 50, "members": 2000},
}

_COMMON_TCP = [22, 80, 443, 3306, 5432, 6379, 8080, 8443, 9090, 27017, 5672, 2379, 3389, 25]
_COMMON_UDP = [53, 123, 161, 500, 514, 1194, 4500, 4789, 5353, 51820]
_RANGES = [(1, 65535), (1024, 65535), (8000, 8100), (30000, 32767), (5900, 5999), (6000, 6063)]
# Neutron-lib protocol names (and numbers) other than tcp/udp/icmp that clouds use.
_OTHER_PROTOCOLS: list[Any] = ["sctp", "gre", "vrrp", "esp", "ah", 47, "112", "dccp", "udplite"]
# Neutron's ``DIRECTION_IP_PREFIX`` (neutron/db/securitygroups_rpc_base.py).
_DIRECTION_IP_PREFIX = {"ingress": "source_ip_prefix", "egress": "dest_ip_prefix"}


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _mac(n: int) -> str:
    return f"fa:16:3e:{(n >> 16) & 0xFF:02x}:{(n >> 8) & 0xFF:02x}:{n & 0xFF:02x}"


class _Network:
    def __init__(self, index: int, net_id: str, local_vlan: int) -> None:
        self.id = net_id
        self.local_vlan = local_vlan
        if not 0 < index < 256:
            raise ValueError("at most 255 networks (projects * networks_per_project)")
        self.v4 = ipaddress.IPv4Network(f"10.{index}.0.0/16")
        self.v6 = ipaddress.IPv6Network(f"fd00:{index:x}::/64")
        self._next_host = 10  # .0.1-.0.9 left to router and DHCP ports (not on this host)

    def next_host(self) -> int:
        host = self._next_host
        self._next_host += 1
        if host >= 65534:
            raise ValueError(f"network {self.id} ran out of addresses")
        return host

    def v4_addr(self, host: int) -> str:
        return str(self.v4.network_address + host)

    def v6_addr(self, host: int) -> str:
        return str(self.v6.network_address + host)


def _random_prefix(rng: random.Random, ethertype: str) -> str:
    if ethertype == "IPv4":
        plen = rng.choice([0, 8, 12, 16, 16, 24, 24, 24, 28, 32, 32])
        addr = ipaddress.IPv4Address(rng.getrandbits(32))
        return str(ipaddress.IPv4Network(f"{addr}/{plen}", strict=False))
    plen = rng.choice([0, 32, 48, 56, 64, 64, 96, 128])
    addr = ipaddress.IPv6Address((0x2001_0DB8 << 96) | rng.getrandbits(96))
    return str(ipaddress.IPv6Network(f"{addr}/{plen}", strict=False))


def _random_l4(rng: random.Random, protocol: Any, rule: dict[str, Any]) -> None:
    """Fill the port range (or ICMP type and code) of a rule."""
    if protocol in ("tcp", "udp", "sctp"):
        roll = rng.random()
        if roll < 0.6:
            port = rng.choice(_COMMON_UDP if protocol == "udp" else _COMMON_TCP)
            if rng.random() < 0.3:
                port = rng.randint(1, 65535)
            rule["port_range_min"] = rule["port_range_max"] = port
        elif roll < 0.9:
            if rng.random() < 0.5:
                lo, hi = rng.choice(_RANGES)
            else:
                lo = rng.randint(1, 65000)
                hi = min(65535, lo + rng.choice([1, 7, 15, 99, 255, 1000, 4095]))
            rule["port_range_min"], rule["port_range_max"] = lo, hi
        # else: the whole protocol
    elif protocol in ("dccp", "udplite") and rng.random() < 0.5:
        # Neutron accepts the range and its OVS driver silently ignores it (DESIGN.md section 1)
        rule["port_range_min"] = rule["port_range_max"] = rng.randint(1, 65535)
    elif protocol in ("icmp", "ipv6-icmp", "icmpv6"):
        roll = rng.random()
        v6 = protocol != "icmp" or rule["ethertype"] == "IPv6"
        if roll < 0.4:
            rule["port_range_min"] = rng.choice([128, 129, 1, 2, 3] if v6 else [8, 0, 3, 11])
        elif roll < 0.7:
            rule["port_range_min"] = rng.choice([1, 3] if v6 else [3, 11])
            rule["port_range_max"] = rng.choice([0, 1, 4] if v6 else [0, 1, 4, 13])
        # else: any ICMP type


def _rule_key(rule: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, str(v)) for k, v in rule.items()))


def _make_rule(
    rng: random.Random,
    group_id: str,
    project_groups: list[str],
    address_groups: list[str],
    remote_group_share: float,
    address_group_share: float,
) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "direction": "ingress" if rng.random() < 0.7 else "egress",
        "ethertype": "IPv4" if rng.random() < 0.75 else "IPv6",
    }
    roll = rng.random()
    protocol: Any
    if roll < 0.5:
        protocol = "tcp"
    elif roll < 0.7:
        protocol = "udp"
    elif roll < 0.85:
        if rule["ethertype"] == "IPv6":
            protocol = rng.choice(["ipv6-icmp", "icmp", "icmpv6"])
        else:
            protocol = "icmp"
    elif roll < 0.95:
        protocol = None
    else:
        protocol = rng.choice(_OTHER_PROTOCOLS)
    if protocol is not None:
        rule["protocol"] = protocol
        _random_l4(rng, protocol, rule)
    roll = rng.random()
    if roll < remote_group_share:
        remote = group_id if rng.random() < 0.4 else rng.choice(project_groups)
        rule["remote_group_id"] = remote
    elif roll < remote_group_share + address_group_share and address_groups:
        rule["remote_address_group_id"] = rng.choice(address_groups)
    elif roll < 0.95:
        rule["remote_ip_prefix"] = _random_prefix(rng, rule["ethertype"])
    # else: from (or to) anywhere
    return rule


def _default_rules(group_id: str) -> list[dict[str, Any]]:
    """The four rules Neutron puts in every project's default group."""
    return [
        {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": group_id},
        {"direction": "ingress", "ethertype": "IPv6", "remote_group_id": group_id},
        {"direction": "egress", "ethertype": "IPv4"},
        {"direction": "egress", "ethertype": "IPv6"},
    ]


def generate(
    ports: int = 1000,
    rules_per_group: int = 50,
    groups_per_port: int = 2,
    members: int | None = None,
    seed: int = 0,
    *,
    projects: int = 3,
    networks_per_project: int = 2,
    tiers: int = 4,
    stateless_projects: int = 1,
    address_groups_per_project: int = 2,
    address_group_size: int = 8,
    dual_stack: float = 0.5,
    address_pairs: float = 0.1,
    remote_group_share: float = 0.35,
    address_group_share: float = 0.1,
    first_ofport: int = 10,
) -> dict[str, Any]:
    """Build a workload in the documented model shape (``docs/model.md``).

    ``members``: the least number of member ports of every group used as a remote group (ports
    on this host count; the rest are ports of the same project's networks on other hosts).
    ``None`` keeps only the ports on this host. ``remote_group_share`` and
    ``address_group_share`` are the shares of generated rules with a remote group or an address
    group (most of the rest have a remote prefix). The last ``stateless_projects`` of the
    ``projects`` are stateless.
    """
    if ports < 0 or rules_per_group < 0 or projects < 1 or networks_per_project < 1:
        raise ValueError("ports and rules_per_group must be >= 0, projects and networks >= 1")
    if not 1 <= groups_per_port <= tiers + 1:
        raise ValueError(f"groups_per_port must be between 1 and tiers + 1 ({tiers + 1})")
    if rules_per_group < 4:
        raise ValueError("rules_per_group must be >= 4 (the default group has 4 standard rules)")
    rng = random.Random(seed)
    stateless = set(range(projects - min(max(stateless_projects, 0), projects), projects))

    networks: list[list[_Network]] = []
    security_groups: dict[str, dict[str, Any]] = {}
    address_groups: dict[str, list[str]] = {}
    project_groups: list[list[str]] = []
    project_ags: list[list[str]] = []
    for p in range(projects):
        nets = []
        for n in range(networks_per_project):
            index = p * networks_per_project + n + 1
            nets.append(_Network(index, f"net-{p}-{n}-{_uuid(rng)[:8]}", local_vlan=index))
        networks.append(nets)
        ags = []
        for a in range(address_groups_per_project):
            ag_id = f"ag-{p}-{a}-{_uuid(rng)[:8]}"
            cidrs: list[str] = []
            while len(cidrs) < address_group_size:
                cidr = _random_prefix(rng, "IPv4" if rng.random() < 0.75 else "IPv6")
                if cidr not in cidrs:
                    cidrs.append(cidr)
            address_groups[ag_id] = cidrs
            ags.append(ag_id)
        project_ags.append(ags)
        groups = [f"sg-{p}-default-{_uuid(rng)[:8]}"]
        groups += [f"sg-{p}-tier{t}-{_uuid(rng)[:8]}" for t in range(tiers)]
        project_groups.append(groups)
        for i, sg_id in enumerate(groups):
            rules = _default_rules(sg_id) if i == 0 else []
            seen = {_rule_key(r) for r in rules}
            while len(rules) < rules_per_group:
                rule = _make_rule(rng, sg_id, groups, ags, remote_group_share, address_group_share)
                key = _rule_key(rule)
                if key not in seen:  # Neutron refuses duplicate rules in a group
                    seen.add(key)
                    rules.append(rule)
            security_groups[sg_id] = {"stateful": p not in stateless, "rules": rules}

    mac_counter = 1
    port_list: list[dict[str, Any]] = []
    # Addresses of each group's members on this host: (ip, mac) per ethertype.
    group_members: dict[str, dict[str, list[list[str]]]] = {
        sg: {"IPv4": [], "IPv6": []} for sg in security_groups
    }
    for i in range(ports):
        p = i % projects
        net = networks[p][rng.randrange(networks_per_project)]
        host = net.next_host()
        mac = _mac(mac_counter)
        mac_counter += 1
        fixed_ips: list[Any] = [net.v4_addr(host)]
        if rng.random() < dual_stack:
            v6 = net.v6_addr(host)
            fixed_ips.append({"ip_address": v6} if rng.random() < 0.5 else v6)
        pairs: list[dict[str, str]] = []
        if rng.random() < address_pairs:
            vip_host = net.next_host()
            pair: dict[str, str] = {"ip_address": net.v4_addr(vip_host)}
            if rng.random() < 0.3:
                pair["ip_address"] = str(
                    ipaddress.IPv4Network(f"{net.v4_addr(vip_host)}/30", strict=False)
                )
            if rng.random() < 0.5:
                pair["mac_address"] = _mac(mac_counter)
                mac_counter += 1
            pairs.append(pair)
        groups = [project_groups[p][0]]
        groups += rng.sample(project_groups[p][1:], groups_per_port - 1)
        port = {
            "id": _uuid(rng),
            "mac_address": mac,
            "fixed_ips": fixed_ips,
            "allowed_address_pairs": pairs,
            "security_groups": groups,
            "port_security_enabled": True,
            "device_owner": "compute:nova",
            "network_id": net.id,
            "ofport": first_ofport + i,
        }
        port_list.append(port)
        for sg in groups:
            for addr in _port_addresses(port):
                group_members[sg]["IPv4" if ":" not in addr[0] else "IPv6"].append(addr)

    remote_groups = sorted(
        {
            r["remote_group_id"]
            for sg in security_groups.values()
            for r in sg["rules"]
            if "remote_group_id" in r
        }
    )
    members_out: dict[str, dict[str, list[Any]]] = {}
    for sg in remote_groups:
        p = int(sg.split("-")[1])
        local_ports = sum(1 for port in port_list if sg in port["security_groups"])
        addrs = copy.deepcopy(group_members[sg])
        for k in range(max(0, (members or 0) - local_ports)):
            net = networks[p][k % networks_per_project]
            host = net.next_host()
            mac = _mac(mac_counter)
            mac_counter += 1
            addrs["IPv4"].append([net.v4_addr(host), mac])
            if rng.random() < dual_stack:
                addrs["IPv6"].append([net.v6_addr(host), mac])
        members_out[sg] = addrs

    return {
        "security_groups": security_groups,
        "address_groups": address_groups,
        "members": members_out,
        "networks": {net.id: {"local_vlan": net.local_vlan} for nets in networks for net in nets},
        "ports": port_list,
    }


def _fixed_ip_strings(port: dict[str, Any]) -> list[str]:
    return [ip["ip_address"] if isinstance(ip, dict) else ip for ip in port["fixed_ips"]]


def _port_addresses(port: dict[str, Any]) -> list[list[str]]:
    """Member addresses a port contributes to its groups: [ip, mac] as Neutron lists them."""
    addrs = [[ip, port["mac_address"]] for ip in _fixed_ip_strings(port)]
    for pair in port.get("allowed_address_pairs", []):
        addrs.append([pair["ip_address"], pair.get("mac_address", port["mac_address"])])
    return addrs


def _protocol_for_rpc(protocol: Any) -> str | None:
    if protocol is None or protocol == "any":
        return None
    return str(protocol)  # the database column is a string: numbers arrive as "47"


def to_neutron_rpc(model: dict[str, Any]) -> dict[str, Any]:
    """The same workload as Neutron's ``security_group_info_for_devices`` reply.

    Mirrors ``SecurityGroupInfoAPIMixin.security_group_info_for_ports`` (neutron
    ``neutron/db/securitygroups_rpc_base.py``) as the OVS agent's ``SecurityGroupServerAPIShim``
    produces it: devices with string ``fixed_ips`` and provider rules (DHCP, RA); rules without
    ids, the remote prefix as ``source_ip_prefix``/``dest_ip_prefix``, the group's ``stateful``
    flag on every rule; ``sg_member_ips`` only for referenced remote groups and address groups
    and only for the ethertypes their referencing rules use; address-group CIDRs as
    ``[cidr, null]``. Sets become lists (JSON). ``bindings`` carries the ofport and local VLAN
    the agent would read from OVSDB; ``security_group_stateful`` the flag of rule-less groups.
    """
    vlans = {net_id: net["local_vlan"] for net_id, net in model.get("networks", {}).items()}
    groups = model["security_groups"]
    devices: dict[str, Any] = {}
    bindings: dict[str, Any] = {}
    used_groups: list[str] = []
    for port in model["ports"]:
        fixed = _fixed_ip_strings(port)
        device = {
            "id": port["id"],
            "device": port["id"],
            "mac_address": port["mac_address"],
            "fixed_ips": fixed,
            "allowed_address_pairs": [
                {
                    "ip_address": p["ip_address"],
                    "mac_address": p.get("mac_address", port["mac_address"]),
                }
                for p in port.get("allowed_address_pairs", [])
            ],
            "network_id": port["network_id"],
            "device_owner": port.get("device_owner", ""),
            "port_security_enabled": port.get("port_security_enabled", True),
            "security_groups": list(port["security_groups"]),
            "security_group_rules": _provider_rules(fixed),
            "security_group_source_groups": [],
            "security_group_remote_address_groups": [],
        }
        for sg in port["security_groups"]:
            if sg not in used_groups:
                used_groups.append(sg)
            for rule in groups[sg]["rules"]:
                for key, out in (
                    ("remote_group_id", "security_group_source_groups"),
                    ("remote_address_group_id", "security_group_remote_address_groups"),
                ):
                    if rule.get(key) and rule[key] not in device[out]:
                        device[out].append(rule[key])
        devices[port["id"]] = device
        bindings[port["id"]] = {
            "ofport": port["ofport"],
            "local_vlan": port.get("local_vlan", vlans.get(port["network_id"])),
        }

    security_groups: dict[str, list[dict[str, Any]]] = {}
    wanted: dict[str, set[str]] = {}  # remote id -> ethertypes its referencing rules use
    for sg in used_groups:
        rules = []
        for rule in groups[sg]["rules"]:
            out: dict[str, Any] = {"direction": rule["direction"], "ethertype": rule["ethertype"]}
            protocol = _protocol_for_rpc(rule.get("protocol"))
            if protocol is not None:
                out["protocol"] = protocol
            for key in ("port_range_min", "port_range_max"):
                if rule.get(key) is not None:
                    out[key] = rule[key]
            if rule.get("remote_ip_prefix") is not None:
                out[_DIRECTION_IP_PREFIX[rule["direction"]]] = str(
                    ipaddress.ip_network(rule["remote_ip_prefix"], strict=False)
                )
            for key in ("remote_group_id", "remote_address_group_id"):
                if rule.get(key) is not None:
                    out[key] = rule[key]
                    wanted.setdefault(rule[key], set()).add(rule["ethertype"])
            out["stateful"] = groups[sg].get("stateful", True)
            if out not in rules:
                rules.append(out)
        security_groups[sg] = rules

    members = model.get("members", {})
    sg_member_ips: dict[str, dict[str, list[list[Any]]]] = {}
    for remote_id in sorted(wanted):
        if remote_id in model.get("address_groups", {}):
            entries: dict[str, list[list[Any]]] = {"IPv4": [], "IPv6": []}
            for cidr in model["address_groups"][remote_id]:
                version = ipaddress.ip_network(cidr, strict=False).version
                entries[f"IPv{version}"].append([cidr, None])
        elif remote_id in members:
            entries = {
                et: [
                    m if isinstance(m, list) else [m, None] for m in members[remote_id].get(et, [])
                ]
                for et in ("IPv4", "IPv6")
            }
        else:
            entries = {"IPv4": [], "IPv6": []}
            for port in model["ports"]:
                if remote_id in port["security_groups"]:
                    for addr in _port_addresses(port):
                        entries["IPv6" if ":" in addr[0] else "IPv4"].append(addr)
        sg_member_ips[remote_id] = {et: entries[et] for et in sorted(wanted[remote_id])}

    return {
        "devices": devices,
        "security_groups": security_groups,
        "sg_member_ips": sg_member_ips,
        "security_group_stateful": {sg: groups[sg].get("stateful", True) for sg in used_groups},
        "bindings": bindings,
    }


def _provider_rules(fixed_ips: list[str]) -> list[dict[str, Any]]:
    """The DHCP and RA rules Neutron's server adds to every device (``_apply_provider_rule``)."""
    rules: list[dict[str, Any]] = []
    v6 = [ip for ip in fixed_ips if ":" in ip]
    if v6:
        rules.append(
            {
                "direction": "ingress",
                "ethertype": "IPv6",
                "protocol": "ipv6-icmp",
                "source_port_range_min": 134,
            }
        )
    for version, (src, dst, ethertype) in ((4, (67, 68, "IPv4")), (6, (547, 546, "IPv6"))):
        dests = [
            f"{ip}/{32 if version == 4 else 128}"
            for ip in fixed_ips
            if (":" in ip) == (version == 6)
        ]
        dests.append("255.255.255.255/32" if version == 4 else "fe80::/64")
        for dest in dests:
            rules.append(
                {
                    "direction": "ingress",
                    "ethertype": ethertype,
                    "protocol": "udp",
                    "port_range_min": dst,
                    "port_range_max": dst,
                    "source_port_range_min": src,
                    "source_port_range_max": src,
                    "dest_ip_prefix": dest,
                }
            )
    return rules


def summary(model: dict[str, Any]) -> dict[str, int]:
    """Sizes of a model: what a benchmark table reports next to its timings."""
    groups = model["security_groups"]
    remote_rules = sum(
        1
        for sg in groups.values()
        for r in sg["rules"]
        if "remote_group_id" in r or "remote_address_group_id" in r
    )
    return {
        "ports": len(model["ports"]),
        "networks": len(model.get("networks", {})),
        "security_groups": len(groups),
        "stateless_groups": sum(1 for sg in groups.values() if not sg.get("stateful", True)),
        "rules": sum(len(sg["rules"]) for sg in groups.values()),
        "remote_group_rules": remote_rules,
        "rules_per_port": sum(
            len(groups[sg]["rules"]) for port in model["ports"] for sg in port["security_groups"]
        ),
        "member_addresses": sum(
            len(v) for m in model.get("members", {}).values() for v in m.values()
        ),
        "address_groups": len(model.get("address_groups", {})),
    }


def mutate(model: dict[str, Any], kind: str, seed: int = 0) -> dict[str, Any]:
    """A copy of ``model`` after one change: ``rule`` (one rule added to a used group),
    ``member`` (one member address added to a remote group) or ``port`` (one port added).
    The baseline that an incremental compiler must beat recompiles the whole result."""
    rng = random.Random(seed)
    new = copy.deepcopy(model)
    port = rng.choice(new["ports"])
    if kind == "rule":
        sg = rng.choice(port["security_groups"])
        existing = {_rule_key(r) for r in new["security_groups"][sg]["rules"]}
        while True:
            rule = {
                "direction": "ingress",
                "ethertype": "IPv4",
                "protocol": "tcp",
                "port_range_min": rng.randint(1, 65535),
                "remote_ip_prefix": _random_prefix(rng, "IPv4"),
            }
            rule["port_range_max"] = rule["port_range_min"]
            if _rule_key(rule) not in existing:
                break
        new["security_groups"][sg]["rules"].append(rule)
    elif kind == "member":
        if not new.get("members"):
            raise ValueError("the model has no remote group")
        sg = rng.choice(sorted(new["members"]))
        taken = {m[0] if isinstance(m, list) else m for m in new["members"][sg]["IPv4"]}
        while True:
            ip = str(ipaddress.IPv4Address((198 << 24) | (18 << 16) | rng.getrandbits(15)))
            if ip not in taken:
                break
        new["members"][sg]["IPv4"].append([ip, _mac(0xFFFFFF)])
    elif kind == "port":
        clone = copy.deepcopy(port)
        clone["id"] = _uuid(rng)
        clone["mac_address"] = _mac(0xFFFFFE)
        taken = {ip for p in new["ports"] for ip in _fixed_ip_strings(p)}
        base = ipaddress.ip_address(_fixed_ip_strings(port)[0])
        candidate = base
        while str(candidate) in taken:
            candidate += 1
        clone["fixed_ips"] = [str(candidate)]
        clone["allowed_address_pairs"] = []
        clone["ofport"] = max(p["ofport"] for p in new["ports"]) + 1
        new["ports"].append(clone)
        for sg in clone["security_groups"]:
            if sg in new.get("members", {}):
                new["members"][sg]["IPv4"].append([str(candidate), clone["mac_address"]])
    else:
        raise ValueError(f"unknown change {kind!r}: rule, member or port")
    return new


def preset(name: str, seed: int = 0) -> dict[str, Any]:
    """The model of a named workload from ``PRESETS``."""
    return generate(**PRESETS[name], seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate a seeded security-group workload (docs/model.md shape, or "
        "Neutron's security_group_info_for_devices reply with --shape rpc)."
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named workload")
    parser.add_argument("--ports", type=int, default=1000)
    parser.add_argument("--rules-per-group", type=int, default=50)
    parser.add_argument("--groups-per-port", type=int, default=2)
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--projects", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", choices=["model", "rpc"], default="model")
    parser.add_argument("--summary", action="store_true", help="print the sizes to stderr")
    parser.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    args = parser.parse_args(argv)

    if args.preset:
        model = preset(args.preset, seed=args.seed)
    else:
        model = generate(
            ports=args.ports,
            rules_per_group=args.rules_per_group,
            groups_per_port=args.groups_per_port,
            members=args.members,
            seed=args.seed,
            projects=args.projects,
        )
    data = model if args.shape == "model" else to_neutron_rpc(model)
    if args.summary:
        print(json.dumps(summary(model)), file=sys.stderr)
    if args.output == "-":
        json.dump(data, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
