"""The OVN target's Python API and CLI (no OVN daemons needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sgflows

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two-tier.json"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sgflows", *args], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_api_result_and_stats() -> None:
    result = sgflows.compile(EXAMPLE.read_bytes(), target="ovn")
    assert isinstance(result, sgflows.OvnResult)
    stats = result.stats
    assert stats["acls"] == len(result) == result.acl_count
    assert stats["per_kind"]["drop"] == 3
    assert sum(stats["per_group"].values()) + 3 == stats["acls"]
    assert set(stats["per_rule"]) >= {"web[0]", "edge[3]"}
    script = result.to_nbctl()
    assert script.startswith("#!/bin/sh") and "exec ovn-nbctl" in script
    assert "pg_" not in script.replace("sgf_", "") and "neutron_pg_drop" not in script


def test_transact_request_shape() -> None:
    ops = sgflows.compile(EXAMPLE.read_bytes(), target="ovn").transact()
    assert ops[0] == "OVN_Northbound"
    tables = {op["table"] for op in ops[1:]}
    assert tables == {"ACL", "Port_Group", "Address_Set"}
    pgs = [op["row"] for op in ops[1:] if op["table"] == "Port_Group"]
    web = next(row for row in pgs if row["name"] == "sgf_web")
    assert ["sgflows:ports", "web-1,web-2"] in web["external_ids"][1]


def test_options_of_other_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="only for target='ovn'"):
        sgflows.compile(EXAMPLE.read_bytes(), with_ports=True)
    with pytest.raises(ValueError, match="only for target='rte_flow'"):
        sgflows.compile(EXAMPLE.read_bytes(), target="ovn", profile="mlx5")


def test_cli_formats_and_errors(tmp_path: Path) -> None:
    out = cli("compile", str(EXAMPLE), "--target", "ovn", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0] == "OVN_Northbound"
    summary = cli("compile", str(EXAMPLE), "--target", "ovn", "-o", str(tmp_path / "r.sh"),
                  "--summary")  # fmt: skip
    assert summary.returncode == 0 and "ACLs: " in summary.stdout
    assert (tmp_path / "r.sh").read_text().startswith("#!/bin/sh")
    wrong = cli("compile", str(EXAMPLE), "--target", "ovn", "--format", "ofctl")
    assert wrong.returncode == 2 and "nbctl or json" in wrong.stderr
    other = cli("compile", str(EXAMPLE), "--with-ports")
    assert other.returncode == 2 and "--target ovn only" in other.stderr
    nbctl = cli("compile", str(EXAMPLE), "--format", "nbctl")
    assert nbctl.returncode == 2 and "--target ovn" in nbctl.stderr


def test_cli_model_error_is_clean(tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    model.write_text(json.dumps({"security_groups": {"a-b": {"rules": []}, "a_b": {"rules": []}},
                                 "ports": []}))  # fmt: skip
    out = cli("compile", str(model), "--target", "ovn")
    assert out.returncode != 0 and "sgf_a_b" in out.stderr
