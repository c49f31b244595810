"""The end-to-end harness (``e2e.py``) in the normal test run: sgflows' two paths at ``p10``
on a private userspace Open vSwitch (a few seconds), and the report on their records. The
children verify the bridge's flow count after the cold start and after every change; these
tests assert that they ran and what they must show, never a speed. The Neutron-venv child is
run by ``tests/neutron/inside/test_e2e_harness.py``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sgflows.switch.coldload import DEFAULT_CONNECTIONS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import e2e  # noqa: E402  (benches/ is not a package)
import e2e_changes  # noqa: E402
import e2e_report  # noqa: E402
import workload  # noqa: E402

pytestmark = [pytest.mark.ovs, pytest.mark.netns]


def _child(*args: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, str(HERE / "e2e_sgflows.py"), "--preset", "p10", *args],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok", result
    return result


def test_changes_reach_the_model_as_described() -> None:
    model = workload.preset("p10")
    changes = e2e_changes.plan(model)
    assert [c.kind for c in changes] == list(e2e_changes.KINDS)
    plus, minus, member, port = changes
    assert plus.rule in plus.after["security_groups"][plus.group]["rules"]
    assert minus.rule not in minus.after["security_groups"][minus.group]["rules"]
    assert member.member in member.after["members"][member.group]["IPv4"]
    assert port.port is not None and port.port in port.after["ports"]
    assert port.members_added, "the new port joins its remote groups"
    assert port.session_batch()[0] == ("add_port", port.port)


def test_sgflows_paths_on_a_real_switch(tmp_path: Path) -> None:
    cli = _child("--system", "cli", "--connections", "2")  # sgflows load over 2 bundles
    session = _child("--system", "session", "--changes")
    assert cli["flows"] == session["flows"] > 1000  # the same model, the same flows
    assert (cli["connections"], session["connections"]) == (2, DEFAULT_CONNECTIONS)
    changes = session["changes"]
    assert list(changes) == list(e2e_changes.KINDS)
    # the children checked the bridge against the session after each change; at p10 the
    # added rule may be covered by another, the removed one is chosen to cost flows
    assert changes["-rule"]["removed"] + changes["-rule"]["modified"] > 0
    assert changes["+port"]["flows"] > changes["+member"]["flows"]
    jsonl = tmp_path / "e2e.jsonl"
    records = []
    for system, result in (("sgflows-cli", cli), ("sgflows-session", session)):
        records.append({
            **result, "system": system, "workload": "p10", "repeat": 0, "seed": 0,
            "run_id": "t", "git_head": "x", "sizes": {"ports": 10}, "cpus": 2,
            "loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [2.0, 1.0, 1.0],
        })  # fmt: skip
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert e2e_report.write(jsonl, tmp_path, None) == 0
    text = (tmp_path / "e2e.md").read_text()
    assert f"| p10 | 10 | {e2e_report._fmt_s(cli['cold_s'])} |" in text
    assert "| p10 | +port |" in text


def test_the_command_refuses_unknown_names() -> None:
    with pytest.raises(SystemExit):
        e2e.main(["p7", "--systems", "sgflows-cli"])


def test_a_run_past_its_timeout_keeps_the_phases_it_finished(tmp_path: Path) -> None:
    partial = tmp_path / "partial.json"
    child = (
        f"import json, time; open({str(partial)!r}, 'w').write(json.dumps("
        "{'status': 'ok', 'cold_s': 1.5})); time.sleep(120)"
    )
    args = argparse.Namespace(partial=partial, timeout=8, max_memory_gib=2.0)
    record = e2e.run_child([sys.executable, "-c", child], args)
    assert record["status"] == "did not finish"
    assert record["cold_s"] == 1.5


def test_the_ovn_table_has_medians_spreads_and_ratios(tmp_path: Path) -> None:
    from ovn_e2e_report import Measure, read, render, save

    def run(variant: str, seconds: float | None, load: float, drops: int = 0) -> Measure:
        return Measure("p100", variant, 9, seconds, 120, 20, 18.0, 50.0, load, drops, 100, 60,
                       "abc", "2026-12-03 05:00:00", "--presets p100")  # fmt: skip

    runs = [run("neutron", s, 4.0) for s in (4.0, 6.0, 5.0)]
    runs += [run("sgflows", s, 5.0, 1) for s in (2.0, 2.5, 3.0)]
    save(runs, tmp_path / "t.jsonl")
    assert read(tmp_path / "t.jsonl") == runs
    text = render(runs, "1 2 3")
    assert "| p100 | neutron | 3 | 9 | 5.0 (4.0-6.0) | 2.0x | 120 (100) |" in text
    assert "| p100 | sgflows | 3 | 9 | 2.5 (2.0-3.0) |  | 120 (100) | 18 | 50 | 3 | 5.0 |" in text
    assert "| 4.0 |" in text and "Commit `abc`" in text and "ovn_e2e.py --presets p100`" in text
    # A load that did not finish: said so, and no ratio against it
    late = render([run("sgflows", 30.0, 5.0), run("neutron", None, 6.0)], "1 2 3")
    assert "| p100 | neutron | 1 | 9 | 1 did not finish in 60 s |  |" in late


def test_the_ovn_change_table_shows_both_sides_and_what_each_committed() -> None:
    from ovn_e2e_report import Measure, render

    def run(variant: str, change: str, seconds: float, committed: str) -> Measure:
        return Measure("p100", variant, 9, seconds, 120, 20, 18.0, 50.0, 2.0, 0, 100, 60,
                       "abc", "2026-12-03 05:00:00", "--presets p100", change=change,
                       committed=committed,
                       connect_seconds=0.1 if variant == "sgflows" else None)  # fmt: skip

    cold = Measure("p100", "neutron", 9, 1.0, 120, 20, 18.0, 50.0, 2.0, 0, 100, 60)
    runs = [cold, *(run("neutron", "+rule", s, "+1 ACL") for s in (0.2, 0.3, 0.4))]
    runs += [run("sgflows", "+rule", s, "nothing") for s in (0.1, 0.2, 0.3)]
    text = render(runs, "1 2 3")
    assert "## One change to enforced" in text
    assert ("| p100 | +rule | 3 | 0.30 (0.20-0.40) | 0.20 (0.10-0.30) | 1.5x | 9 / 9 | "
            "120 / 120 | +1 ACL | nothing | 0.10 |") in text  # fmt: skip
    # the changes stay out of the cold table
    assert text.count("| p100 | neutron |") == 1
    # slower than sgflows: two decimals, not a rounded 0.1x
    slow = render([*runs[4:], *(run("neutron", "+rule", 0.01, "+1 ACL") for _ in range(3))], "")
    assert "| 0.05x |" in slow
    # --report-only keeps the load average the table recorded
    from ovn_e2e_report import recorded_load

    assert recorded_load(text) == "1 2 3" and recorded_load("") == "unknown"


def test_neutron_commits_only_the_rows_that_changed() -> None:
    import ovn_changes

    def acl(pg: str, match: str) -> dict[str, object]:
        return {"port_group": pg, "direction": "to-lport", "priority": 1002, "match": match,
                "action": "allow-related"}  # fmt: skip

    old = {
        "acls": [acl("pg_a", "ip4 && tcp"), acl("pg_a", "ip4 && udp")],
        "port_groups": {"pg_a": ["p1"], "pg_gone": ["p1"]},
        "address_sets": {"as_a": ["10.0.0.0/24"]},
    }
    new = {
        "acls": [acl("pg_a", "ip4 && tcp"), acl("pg_b", 'outport == @pg_b && ip4.src == "x"')],
        "port_groups": {"pg_a": ["p1", "p2"], "pg_b": ["p2"]},
        "address_sets": {"as_a": ["10.0.0.0/24", "10.0.1.0/24"]},
    }
    args, committed = ovn_changes.neutron_change(old, new, {"p1": "u-1", "p2": "u-2"})
    cmds = " ".join(args).split(" -- ")
    assert cmds == [
        'add Address_Set as_a addresses "10.0.1.0/24"',
        "add Port_Group pg_a ports u-2",
        "pg-add pg_b",
        "add Port_Group pg_b ports u-2",
        "pg-del pg_gone",
        "--type=port-group acl-del pg_a to-lport 1002 ip4 && udp",
        '--type=port-group acl-add pg_b to-lport 1002 outport == @pg_b && ip4.src == "x" '
        "allow-related",
    ]
    assert committed == (
        "+1 ACL, -1 ACL, +1 address-set address, +2 port-group port, +1 port group, -1 port group"
    )
    # nothing changed: nothing committed
    assert ovn_changes.neutron_change(old, old, {}) == ([], "nothing")
    # acl-del would remove both copies of a duplicated ACL: refused, not approximated
    twice = {**old, "acls": [acl("pg_a", "ip4 && tcp")] * 2}
    with pytest.raises(ValueError, match="identical"):
        ovn_changes.neutron_change(twice, {**twice, "acls": twice["acls"][:1]}, {})


def test_the_sgflows_summary_counts_the_apply_diff() -> None:
    import ovn_changes
    from sgflows.ovn import Change

    changes = [
        Change("Address_Set", "sgf_a", "modified", ("+address 10.0.0.9", "-address 10.0.0.1")),
        Change("Port_Group", "sgf_pg", "modified", ("+port p9", "+acl x", "-acl y", "-acl z")),
        Change("Port_Group", "sgf_new", "added", ()),
    ]
    assert ovn_changes.sgflows_summary(changes) == (
        "+1 ACL, -2 ACL, +1 address-set address, -1 address-set address, +1 port-group port, "
        "+1 port group"
    )
