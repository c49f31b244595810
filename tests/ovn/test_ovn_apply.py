"""The apply path and the row-level diff against the private Northbound database:
``sgflows.ovn.apply`` (and ``sgflows ovn apply``) make the rows sgflows owns equal the
compiled ones in one transaction, leave other owners' rows alone, and a second apply of the
same model changes nothing; ``sgflows diff --target ovn`` names the changed rows."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sgflows
from sgflows import ovn
from support.ovn import OvnCentral

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "two-tier.json"
SWITCH = "sgf_apply"


def _model() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return model


def _deployment(central: OvnCentral, model: dict[str, Any]) -> None:
    """What Neutron would own: the switch and ports, and rows of its own next to ours."""
    central.reset()
    args = ["ls-add", SWITCH]
    for port in model["ports"]:
        args += ["--", "lsp-add", SWITCH, port["id"]]
    central.nbctl(*args)
    central.nbctl(
        "pg-add", "pg_foreign", model["ports"][0]["id"],
        "--", "--type=port-group", "acl-add", "pg_foreign", "to-lport", "1002",
        "outport == @pg_foreign && ip4 && tcp.dst == 7", "allow-related",
        "--", "create", "Address_Set", "name=foreign_as", 'addresses=["192.0.2.1"]',
    )  # fmt: skip


def _foreign(central: OvnCentral) -> str:
    return central.nbctl("--columns=name,ports,acls", "find", "Port_Group",
                         "name=pg_foreign") + central.nbctl("find", "Address_Set",
                                                            "name=foreign_as")  # fmt: skip


def _owned_acls(central: OvnCentral) -> int:
    out = central.nbctl("--bare", "--columns=_uuid", "find", "ACL", "external_ids:owner=sgflows")
    return len(out.split())


def test_apply_syncs_owned_rows_only(ovn_central: OvnCentral) -> None:
    model = _model()
    _deployment(ovn_central, model)
    foreign = _foreign(ovn_central)
    first = sgflows.compile(model, target="ovn")
    report = ovn.apply(first, ovn_central.nb)
    assert report.changes and all(c.kind == "added" for c in report.changes)
    assert _owned_acls(ovn_central) == first.acl_count
    assert ovn.apply(first, ovn_central.nb).changes == []  # idempotent

    changed = copy.deepcopy(model)
    changed["security_groups"]["web"]["rules"].pop(2)  # tcp 80 in
    changed["ports"] = [p for p in changed["ports"] if p["id"] != "web-2"]
    second = sgflows.compile(changed, target="ovn")
    report = ovn.apply(second, ovn_central.nb)
    kinds = {(c.table, c.name): c.kind for c in report.changes}
    assert kinds[("Port_Group", "sgf_web")] == "modified"
    detail = next(c.detail for c in report.changes if c.name == "sgf_web")
    assert "-port web-2" in detail and any("tcp.dst == 80" in d for d in detail)
    assert report.changes == ovn.diff_rows(ovn.rows_of(first), ovn.rows_of(second))
    assert _owned_acls(ovn_central) == second.acl_count
    assert ovn.apply(second, ovn_central.nb, dry_run=True).changes == []
    assert _foreign(ovn_central) == foreign

    ovn.apply(sgflows.compile({"security_groups": {}, "ports": []}, target="ovn"), ovn_central.nb)
    groups = ovn_central.nbctl("--bare", "--columns=name", "list", "Port_Group").split()
    assert sorted(groups) == ["pg_foreign", "sgf_drop"]
    assert _foreign(ovn_central) == foreign


def test_apply_refuses_missing_ports_and_foreign_names(ovn_central: OvnCentral) -> None:
    model = _model()
    ovn_central.reset()
    with pytest.raises(ovn.ApplyError, match="ports missing"):
        ovn.apply(sgflows.compile(model, target="ovn"), ovn_central.nb)
    _deployment(ovn_central, model)
    ovn_central.nbctl("pg-add", "sgf_web")  # someone else's row under our name
    with pytest.raises(ovn.ApplyError, match="another owner"):
        ovn.apply(sgflows.compile(model, target="ovn"), ovn_central.nb)
    with pytest.raises(ovn.ApplyError, match="with_ports"):
        ovn.apply(sgflows.compile(model, target="ovn", with_ports=True), ovn_central.nb)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "sgflows", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_apply_and_diff(ovn_central: OvnCentral, tmp_path: Path) -> None:
    model = _model()
    _deployment(ovn_central, model)
    changed = copy.deepcopy(model)
    changed["address_groups"]["admins"].append("203.0.113.0/24")
    new = tmp_path / "new.json"
    new.write_text(json.dumps(changed))
    done = _cli("ovn", "apply", str(EXAMPLE), "--db", ovn_central.nb)
    assert done.returncode == 0, done.stderr
    assert "applied:" in done.stderr and "+ Port_Group sgf_web" in done.stdout
    diff = _cli("diff", "--target", "ovn", str(EXAMPLE), str(new), "--exit-code")
    assert diff.returncode == 1, diff.stderr
    assert diff.stdout == "~ Address_Set sgfag_admins_ip4\n    +address 203.0.113.0/24\n"
    done = _cli("ovn", "apply", str(new), "--db", ovn_central.nb)
    assert done.returncode == 0 and done.stdout == diff.stdout, done.stderr
    bad = _cli("ovn", "apply", str(new), "--db", f"unix:{tmp_path}/none.sock", "--timeout", "1")
    assert bad.returncode == 1 and "cannot connect" in bad.stderr
