"""Neutron's own ML2/OVN Northbound rows for a model, made by Neutron's code.

Run with the pinned Neutron's interpreter (``build/neutron29-venv/bin/python``, from ``make
deps-neutron``): reads a model (``docs/model.md``), or a list of them, on standard input and
writes JSON with the port groups, address sets and ACLs Neutron 29.0.0 would create for it
(for each). The ACLs come from
``neutron.common.ovn.acl`` itself (``add_acls_for_drop_port_group`` and, per rule, the function
``add_acls_for_sg_port_group`` calls); names from ``neutron.common.ovn.utils``. Only the
translation of our model into Neutron's rule dicts is written here.

Remote groups in ML2/OVN match OVN's own ``$pg_<id>_ip4/_ip6`` address sets, which hold the
addresses of the port group's logical ports; the model's members on other hosts are therefore
given as extra (unbound) logical ports ``remote_ports`` in those port groups, so that both
sides match the same addresses. Prefix members (allowed address pairs with a mask) cannot be
logical-port addresses and are left out, as ML2/OVN leaves address pairs out of those sets.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from typing import Any

from neutron.common.ovn import acl, utils
from neutron.common.ovn import constants as ovn_const


def neutron_rule(group: str, index: int, rule: dict[str, Any]) -> dict[str, Any]:
    """One rule of the model in the shape ``acl._add_sg_rule_acl_for_port_group`` reads."""
    prefix = rule.get("remote_ip_prefix")
    return {
        "id": f"{group}[{index}]",
        "direction": rule["direction"],
        "ethertype": rule["ethertype"],
        "protocol": None if rule.get("protocol") is None else str(rule["protocol"]),
        "port_range_min": rule.get("port_range_min"),
        "port_range_max": rule.get("port_range_max"),
        "remote_group_id": rule.get("remote_group_id"),
        "remote_address_group_id": rule.get("remote_address_group_id"),
        "normalized_cidr": str(ipaddress.ip_network(prefix, strict=False)) if prefix else None,
    }


def acls(model: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(acl.add_acls_for_drop_port_group(ovn_const.OVN_DROP_PORT_GROUP_NAME))
    for gid, group in model["security_groups"].items():
        pg = utils.ovn_port_group_name(gid)
        stateful = acl.is_sg_stateful(group)
        for i, rule in enumerate(group["rules"]):
            out.append(
                acl._add_sg_rule_acl_for_port_group(pg, stateful, neutron_rule(gid, i, rule))
            )
    return out


def _member_address(entry: Any) -> tuple[str, str | None]:
    return (entry[0], entry[1]) if isinstance(entry, list) else (entry, None)


def remote_ports(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Logical ports for the members that are no local port: {name: {mac, ips, groups}}."""
    local = {ip if isinstance(ip, str) else ip["ip_address"]
             for p in model["ports"] for ip in p["fixed_ips"]}  # fmt: skip
    ports: dict[str, dict[str, Any]] = {}
    for gid, families in model.get("members", {}).items():
        for entries in families.values():
            for entry in entries:
                ip, mac = _member_address(entry)
                if "/" in ip or ip in local:
                    continue
                n = len(ports)
                mac = mac or f"fa:16:3f:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"
                name = f"remote-{mac.replace(':', '')}"
                port = ports.setdefault(name, {"mac": mac, "ips": [], "groups": []})
                if ip not in port["ips"]:
                    port["ips"].append(ip)
                if gid not in port["groups"]:
                    port["groups"].append(gid)
    return ports


def port_groups(model: dict[str, Any], remote: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {
        utils.ovn_port_group_name(g): [] for g in model["security_groups"]
    }
    drop = groups.setdefault(ovn_const.OVN_DROP_PORT_GROUP_NAME, [])
    for port in model["ports"]:
        if not port.get("port_security_enabled", True) or utils.is_network_device_port(port):
            continue
        drop.append(port["id"])
        for g in port["security_groups"]:
            groups[utils.ovn_port_group_name(g)].append(port["id"])
    for name, port in remote.items():
        for g in port["groups"]:
            groups[utils.ovn_port_group_name(g)].append(name)
    return groups


def address_sets(model: dict[str, Any]) -> dict[str, list[str]]:
    sets: dict[str, list[str]] = {}
    for ag, prefixes in model.get("address_groups", {}).items():
        for version in ("ip4", "ip6"):
            want = 6 if version == "ip6" else 4
            sets[utils.ovn_ag_addrset_name(ag, version)] = [
                str(ipaddress.ip_network(p, strict=False)) for p in prefixes
                if ipaddress.ip_network(p, strict=False).version == want
            ]  # fmt: skip
    return sets


def rows_of(model: dict[str, Any]) -> dict[str, Any]:
    remote = remote_ports(model)
    return {
        "acls": acls(model),
        "port_groups": port_groups(model, remote),
        "address_sets": address_sets(model),
        "remote_ports": remote,
    }


def main() -> int:
    """A model in, its rows out; a list of models (one Neutron import for all), a list."""
    given = json.load(sys.stdin)
    json.dump([rows_of(m) for m in given] if isinstance(given, list) else rows_of(given),
              sys.stdout)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
