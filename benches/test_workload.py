"""The workload generator: deterministic, in the documented shape, with the sizes asked for."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload

_DIRECTIONS = {"ingress", "egress"}
_ETHERTYPES = {"IPv4", "IPv6"}


@pytest.fixture(scope="module")
def model() -> dict:
    return workload.generate(ports=60, rules_per_group=20, groups_per_port=3, members=80, seed=7)


def test_same_seed_same_bytes() -> None:
    a = workload.generate(ports=50, rules_per_group=12, seed=3)
    b = workload.generate(ports=50, rules_per_group=12, seed=3)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(workload.to_neutron_rpc(a)) == json.dumps(workload.to_neutron_rpc(b))


def test_other_seed_other_workload() -> None:
    a = workload.generate(ports=20, rules_per_group=12, seed=1)
    b = workload.generate(ports=20, rules_per_group=12, seed=2)
    assert a != b


def test_sizes(model: dict) -> None:
    assert len(model["ports"]) == 60
    for sg in model["security_groups"].values():
        assert len(sg["rules"]) == 20
        keys = [json.dumps(r, sort_keys=True) for r in sg["rules"]]
        assert len(keys) == len(set(keys)), "Neutron refuses duplicate rules"
    for port in model["ports"]:
        assert len(port["security_groups"]) == 3
        assert len(set(port["security_groups"])) == 3
    # every remote group has at least `members` member ports (IPv4 address each)
    for sg, members in model["members"].items():
        assert len(members["IPv4"]) >= 80, sg


def test_documented_shape(model: dict) -> None:
    groups = model["security_groups"]
    vlans = {net["local_vlan"] for net in model["networks"].values()}
    assert len(vlans) == len(model["networks"])
    ofports = [p["ofport"] for p in model["ports"]]
    assert len(set(ofports)) == len(ofports)
    ids = [p["id"] for p in model["ports"]]
    assert len(set(ids)) == len(ids)
    addresses: list[str] = []
    for port in model["ports"]:
        assert port["network_id"] in model["networks"]
        assert port["port_security_enabled"] is True
        assert isinstance(port["ofport"], int)
        stateful = {groups[sg]["stateful"] for sg in port["security_groups"]}
        assert len(stateful) == 1, "a port never mixes stateful and stateless groups"
        for ip in port["fixed_ips"]:
            addresses.append(ip["ip_address"] if isinstance(ip, dict) else ip)
        for pair in port["allowed_address_pairs"]:
            ipaddress.ip_network(pair["ip_address"], strict=False)
    assert len(set(addresses)) == len(addresses)
    for sg_id, sg in groups.items():
        assert isinstance(sg["stateful"], bool)
        for rule in sg["rules"]:
            assert rule["direction"] in _DIRECTIONS
            assert rule["ethertype"] in _ETHERTYPES
            remotes = [
                k
                for k in ("remote_ip_prefix", "remote_group_id", "remote_address_group_id")
                if k in rule
            ]
            assert len(remotes) <= 1
            if "remote_ip_prefix" in rule:
                net = ipaddress.ip_network(rule["remote_ip_prefix"])
                assert f"IPv{net.version}" == rule["ethertype"]
            if "remote_group_id" in rule:
                assert rule["remote_group_id"] in groups
                assert rule["remote_group_id"] in model["members"]
            if "remote_address_group_id" in rule:
                assert rule["remote_address_group_id"] in model["address_groups"]
            lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
            if rule.get("protocol") in ("tcp", "udp", "sctp") and lo is not None:
                assert 1 <= lo <= hi <= 65535
            if hi is not None:
                assert lo is not None
        assert sg_id.startswith("sg-")


def test_mix_of_features(model: dict) -> None:
    rules = [r for sg in model["security_groups"].values() for r in sg["rules"]]
    protocols = {str(r.get("protocol")) for r in rules}
    assert {"tcp", "udp", "icmp", "None"} <= protocols
    assert any(r["direction"] == "egress" for r in rules)
    assert any(r["ethertype"] == "IPv6" for r in rules)
    assert any(r.get("port_range_min") == r.get("port_range_max") is not None for r in rules)
    assert any(
        r.get("protocol") == "tcp" and r.get("port_range_min", 0) < r.get("port_range_max", 0)
        for r in rules
    )
    assert any(
        r.get("remote_group_id") == sg_id
        for sg_id, sg in model["security_groups"].items()
        for r in sg["rules"]
    ), "self-referencing groups"
    assert any("remote_address_group_id" in r for r in rules)
    assert {sg["stateful"] for sg in model["security_groups"].values()} == {True, False}
    assert any(p["allowed_address_pairs"] for p in model["ports"])


def test_neutron_rpc_shape(model: dict) -> None:
    rpc = workload.to_neutron_rpc(model)
    assert set(rpc) == {
        "devices",
        "security_groups",
        "sg_member_ips",
        "security_group_stateful",
        "bindings",
    }
    assert list(rpc["devices"]) == [p["id"] for p in model["ports"]]
    used = {sg for p in model["ports"] for sg in p["security_groups"]}
    assert set(rpc["security_groups"]) == used
    for port in model["ports"]:
        device = rpc["devices"][port["id"]]
        assert device["device"] == port["id"]
        assert all(isinstance(ip, str) for ip in device["fixed_ips"])
        assert all("mac_address" in pair for pair in device["allowed_address_pairs"])
        binding = rpc["bindings"][port["id"]]
        assert binding["ofport"] == port["ofport"]
        assert binding["local_vlan"] == model["networks"][port["network_id"]]["local_vlan"]
    for sg_id, rules in rpc["security_groups"].items():
        assert len(rules) == len(model["security_groups"][sg_id]["rules"])
        for rule, orig in zip(rules, model["security_groups"][sg_id]["rules"]):
            assert rule["stateful"] is model["security_groups"][sg_id]["stateful"]
            assert "remote_ip_prefix" not in rule
            if "remote_ip_prefix" in orig:
                key = "source_ip_prefix" if orig["direction"] == "ingress" else "dest_ip_prefix"
                assert rule[key] == orig["remote_ip_prefix"]
            if "protocol" in rule:
                assert isinstance(rule["protocol"], str)
    for remote_id, by_ethertype in rpc["sg_member_ips"].items():
        assert set(by_ethertype) <= _ETHERTYPES
        for ethertype, entries in by_ethertype.items():
            for ip, mac in entries:
                net = ipaddress.ip_network(ip, strict=False)
                assert f"IPv{net.version}" == ethertype
                if remote_id in model["address_groups"]:
                    assert mac is None
                else:
                    assert mac.startswith("fa:16:3e:")


def test_rpc_member_ips_match_model(model: dict) -> None:
    rpc = workload.to_neutron_rpc(model)
    for sg_id, members in model["members"].items():
        if sg_id in rpc["sg_member_ips"]:
            for ethertype, entries in rpc["sg_member_ips"][sg_id].items():
                assert entries == members[ethertype]


def test_mutations(model: dict) -> None:
    base = workload.summary(model)
    rule = workload.summary(workload.mutate(model, "rule", seed=1))
    assert rule["rules"] == base["rules"] + 1
    member = workload.summary(workload.mutate(model, "member", seed=1))
    assert member["member_addresses"] == base["member_addresses"] + 1
    port = workload.mutate(model, "port", seed=1)
    assert len(port["ports"]) == len(model["ports"]) + 1
    assert workload.summary(model) == base, "mutate leaves its input alone"
    with pytest.raises(ValueError):
        workload.mutate(model, "nothing")


def test_presets_and_bad_arguments() -> None:
    assert workload.PRESETS["p1000"]["ports"] == 1000
    small = workload.preset("p10")
    assert workload.summary(small)["ports"] == 10
    with pytest.raises(ValueError):
        workload.generate(ports=5, rules_per_group=2)
    with pytest.raises(ValueError):
        workload.generate(ports=5, groups_per_port=9)


def test_cli_writes_both_shapes(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent / "workload.py"
    out_model = tmp_path / "m.json"
    out_rpc = tmp_path / "r.json"
    args = [sys.executable, str(script), "--ports", "12", "--rules-per-group", "8"]
    subprocess.run([*args, "-o", str(out_model)], check=True)
    subprocess.run([*args, "--shape", "rpc", "-o", str(out_rpc)], check=True)
    model = json.loads(out_model.read_text())
    assert model == workload.generate(ports=12, rules_per_group=8)
    assert json.loads(out_rpc.read_text()) == json.loads(json.dumps(workload.to_neutron_rpc(model)))
