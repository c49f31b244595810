"""The rte_flow target through the Python API and the CLI: rule counts, the offload report,
the JSON form, profiles' constraints, and errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sgflows
from rtehelpers import ROOT, two_tier

# Independent of PYTHONPATH tricks: run the CLI with the interpreter and path of this test.
CLI = [sys.executable, "-m", "sgflows"]


def _rte(model: Any, **kw: Any) -> sgflows.RteFlowResult:
    return sgflows.compile(model, target="rte_flow", **kw)


def test_two_tier_rule_counts_and_report() -> None:
    result = _rte(two_tier())
    assert len(result) == result.rule_count == result.stats["rules"]
    lines = result.to_testpmd().splitlines()
    assert len(lines) == result.rule_count
    assert all(
        line.startswith("flow create 0 group ") and " transfer pattern " in line for line in lines
    )
    report = {p["port"]: p for p in result.report}
    assert set(report) == {"web-1", "web-2", "db-1", "dhcp-a", "edge-1", "nfv-1"}
    # Stateful ports: only the stateless-safe base is offloaded, every rule goes to software.
    for port in ("web-1", "web-2", "db-1"):
        assert report[port]["mode"] == "partial" and report[port]["stateful"]
        assert {r["status"] for r in report[port]["rules"]} == {"software"}
        assert {r["reason"] for r in report[port]["rules"]} == {"stateful"}
        assert "stateful" in {s["reason"] for s in report[port]["software"]}
    # The stateless port is fully offloaded; UDP 5000-5099 is 6 masks.
    edge = report["edge-1"]
    assert edge["mode"] == "offloaded" and not edge["stateful"]
    per_rule = {r["rule"]: r for r in edge["rules"]}
    assert per_rule["edge[0]"]["rte_rules"] == 6
    assert per_rule["edge[1]"]["rte_rules"] == 6  # 1024-65535: 6 masks
    assert all(r["status"] == "offloaded" for r in edge["rules"])
    assert report["dhcp-a"]["mode"] == report["nfv-1"]["mode"] == "unfiltered"
    assert sum(p["rte_rules"] for p in result.report) + 2 == result.rule_count
    text = result.report_text()
    assert "port edge-1 (representor 5): offloaded" in text
    assert "rule web[2] (ingress): software: stateful port needs conntrack" in text


def test_same_model_same_bytes() -> None:
    a = _rte(two_tier(), profile="ntnic")
    b = _rte(json.dumps(two_tier()), profile="ntnic")
    assert a.to_testpmd() == b.to_testpmd() and a.to_json() == b.to_json()


def test_json_form() -> None:
    result = _rte(two_tier(stateless=True), profile="full")
    doc = json.loads(result.to_json())
    assert doc == result.document()
    assert doc["profile"] == "full" and len(doc["rules"]) == result.rule_count
    first = doc["rules"][0]
    assert first["attr"] == {"group": 0, "priority": 0, "transfer": True}
    assert first["pattern"][0]["type"] == "represented_port"
    assert first["actions"][0] == {"type": "count"}
    ranged = [i for r in doc["rules"] for i in r["pattern"] if "last" in i]
    assert {(i["type"], i["spec"]["dst"], i["last"]["dst"]) for i in ranged} >= {
        ("udp", 5000, 5099),
        ("udp", 1024, 65535),
    }
    masked = [
        i
        for r in doc["rules"]
        for i in r["pattern"]
        if i["type"] == "ipv4" and "src" in i.get("mask", {})
    ]
    assert {"255.255.255.0", "255.255.255.255"} <= {i["mask"]["src"] for i in masked}
    kinds = {r["origin"]["kind"] for r in doc["rules"]}
    assert {"dispatch", "rule", "ip_source", "arp", "dhcp", "nd", "catch_all"} <= kinds


def test_profiles_obey_their_tables() -> None:
    model = two_tier(stateless=True)
    generic = _rte(model).to_testpmd()
    mlx5 = _rte(model, profile="mlx5").to_testpmd()
    ntnic = _rte(model, profile="ntnic").to_testpmd()
    full = _rte(model, profile="full").to_testpmd()
    assert " last " not in generic + mlx5 + ntnic and " last " in full
    assert "arp_eth_ipv4" in generic and "arp_eth_ipv4" not in mlx5 + ntnic
    assert "icmp6_nd_na" in generic and "icmp6_nd_na" not in mlx5 + ntnic
    assert "count" not in ntnic and "represented_port" not in ntnic and "port_id id" in ntnic
    root = [int(m) for m in re.findall(r"group 0 priority (\d+) ", mlx5)]
    assert max(root) <= 2
    report = {p["port"]: p for p in _rte(model, profile="mlx5").report}
    reasons = {(s["traffic"], s["reason"]) for s in report["edge-1"]["software"]}
    assert ("ARP from the VM", "item_unsupported") in reasons
    assert report["edge-1"]["mode"] == "partial"


def test_ntnic_mask_shapes_land_in_distinct_groups() -> None:
    """Many mask shapes: each group >= 1 holds rules of one mask only (the catch-all is the
    table's miss entry), chained in precedence order."""
    rules = [
        {
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "tcp",
            "port_range_min": lo,
            "port_range_max": hi,
            "remote_ip_prefix": f"10.{i}.0.0/{8 + i}",
        }
        for i, (lo, hi) in enumerate([(1, 65535), (1000, 1999), (22, 22), (5000, 5099)])
    ]
    model = two_tier()
    model["security_groups"]["edge"]["rules"] = rules
    doc = _rte(model, profile="ntnic").document()
    shapes: dict[int, set[str]] = {}
    for r in doc["rules"]:
        g = r["attr"]["group"]
        if g == 0 or r["origin"]["kind"] in ("catch_all", "chain"):
            continue
        shape = json.dumps([(i["type"], i.get("mask")) for i in r["pattern"]], sort_keys=True)
        shapes.setdefault(g, set()).add(shape)
        assert r["attr"]["priority"] == 0
    assert all(len(s) == 1 for s in shapes.values()), shapes
    edge_groups = [g for g in shapes if 5 * 256 + 256 <= g < 7 * 256]
    assert len(edge_groups) > 20
    chains = [r for r in doc["rules"] if r["origin"]["kind"] == "chain"]
    assert chains and all(r["attr"]["priority"] == 1 for r in chains)


def test_model_too_large_for_ntnic_fails_clearly() -> None:
    ports = [
        {
            "id": f"p{i}",
            "mac_address": f"fa:16:3e:{i >> 8 & 0xFF:02x}:{i & 0xFF:02x}:01",
            "fixed_ips": [f"10.{i >> 8}.{i & 0xFF}.1"],
            "security_groups": [],
            "representor": i + 1,
        }
        for i in range(4200)
    ]
    model = {"security_groups": {}, "ports": ports}
    with pytest.raises(sgflows.ModelError, match="profile ntnic allows 8192"):
        _rte(model, profile="ntnic")
    assert _rte(model, profile="generic").rule_count > 8192
    with pytest.raises(sgflows.FlowLimitError):
        _rte(model, profile="generic", max_rules=1000)


def test_missing_representor_and_bad_options() -> None:
    model = two_tier()
    del model["bindings"]["web-1"]
    with pytest.raises(sgflows.ModelError) as err:
        _rte(model)
    assert err.value.errors == [
        (
            "ports.web-1",
            "representor is required for the rte_flow target (on the port or in bindings)",
        )
    ]
    with pytest.raises(ValueError, match="unknown profile"):
        _rte(two_tier(), profile="bogus")
    with pytest.raises(ValueError, match="representor 1 is the uplink port"):
        _rte(two_tier(), uplink_port=1)
    with pytest.raises(ValueError, match="only for target='rte_flow'"):
        sgflows.compile(two_tier(), profile="mlx5")  # type: ignore[call-overload]


def test_sctp_rule_falls_back_on_mlx5() -> None:
    model = two_tier(stateless=True)
    model["security_groups"]["edge"]["rules"].append(
        {
            "direction": "ingress",
            "ethertype": "IPv4",
            "protocol": "sctp",
            "port_range_min": 9000,
            "port_range_max": 9000,
        }
    )
    result = _rte(model, profile="mlx5")
    edge = next(p for p in result.report if p["port"] == "edge-1")
    sctp = next(r for r in edge["rules"] if r["rule"] == "edge[4]")
    assert (sctp["status"], sctp["reason"]) == ("software", "item_unsupported")
    assert "ipv4 proto is 132 / end actions count / port_representor port_id 0" in (
        result.to_testpmd()
    )
    assert "sctp dst is 9000" in _rte(model, profile="generic").to_testpmd()


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env_path = str(Path(sgflows.__file__).resolve().parents[1])
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )


def test_cli_rte_flow(tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    model.write_text(json.dumps(two_tier()))
    out = _cli("compile", str(model), "--target", "rte_flow", "--profile", "mlx5", "--report")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == _rte(two_tier(), profile="mlx5").rule_count
    assert "profile mlx5" in out.stderr and "port edge-1 (representor 5)" in out.stderr
    out = _cli(
        "compile",
        "-",
        "--target",
        "rte_flow",
        "--format",
        "json",
        "--proxy-port",
        "3",
        "--uplink-port",
        "9",
        "--forward",
        "uplink",
        "--no-count",
        stdin=model.read_text(),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["proxy_port"] == 3 and doc["uplink_port"] == 9 and doc["forward"] == "uplink"
    assert all({"type": "count"} not in r["actions"] for r in doc["rules"])
    bad = _cli("compile", str(ROOT / "examples" / "two-tier.json"), "--target", "rte_flow")
    assert bad.returncode == 2
    assert "ports.web-1: representor is required" in bad.stderr
    wrong = _cli("compile", str(model), "--format", "testpmd")
    assert wrong.returncode == 2 and "--target rte_flow" in wrong.stderr


def test_ports_from_the_model_and_overrides() -> None:
    model = two_tier(first_representor=10)
    model["rte_flow"] = {"proxy_port": 3, "uplink_port": 1, "software_port": 2}
    doc = _rte(model).document()
    assert (doc["proxy_port"], doc["uplink_port"]) == (3, 1)
    assert doc["rules"][0]["port_id"] == 3
    ntnic = _rte(model, profile="ntnic").to_testpmd()
    assert "port_id id 2 / end" in ntnic and "port_id id is 1 / eth dst is" in ntnic
    doc = _rte(json.dumps(model).encode(), proxy_port=5, uplink_port=0).document()
    assert (doc["proxy_port"], doc["uplink_port"]) == (5, 0)
    model["rte_flow"] = {"proxy_port": 70000, "uplink": 1}
    with pytest.raises(sgflows.ModelError) as err:
        _rte(model)
    assert sorted(err.value.errors) == [
        ("rte_flow", 'unknown key "uplink" (did you mean "uplink_port"?)'),
        ("rte_flow.proxy_port", "must be an ethdev port id, an integer 0\u201365535"),
    ]
