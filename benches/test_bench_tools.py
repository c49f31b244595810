"""The benchmark tooling that needs no Neutron and no timing: the recorded flow table of the
Neutron reference, its report, and the comparison table. Cheap; part of the test suite."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "neutron_ref"))
import compare  # noqa: E402  (benches/ is not a package)
import report  # noqa: E402
import runner  # noqa: E402


def _add(table: runner.FlowTable, text: str) -> None:
    table.replay([("add-flows", False, text)])


def test_flow_table_keys_like_ovs() -> None:
    t = runner.FlowTable()
    _add(
        t,
        "hard_timeout=0,idle_timeout=0,priority=70,table=82,cookie=1,reg5=5,ip,nw_src=10.0.0.1"
        ",actions=resubmit(,92)\n"
        # the same flow again, other field order, other cookie and action: replaces it
        "hard_timeout=0,idle_timeout=0,priority=70,table=82,cookie=2,ip,nw_src=10.0.0.1,reg5=5"
        ",actions=drop\n"
        "hard_timeout=0,idle_timeout=0,priority=71,table=82,cookie=1,reg5=5,ip,nw_src=10.0.0.1"
        ",actions=drop\n"
        "hard_timeout=0,idle_timeout=0,priority=0,table=82,cookie=1,actions=drop",
    )
    assert len(t.flows) == 3
    assert t.counts["add_flow_lines"] == 4
    assert t.counts["readds"] == 1
    assert t.per_table() == {"82": 3}
    assert "table=82,priority=70,ip,nw_src=10.0.0.1,reg5=5 actions=drop" in t.render()


def test_flow_table_non_strict_delete_with_cookie() -> None:
    t = runner.FlowTable()
    _add(
        t,
        "priority=70,table=82,cookie=1,reg5=5,ip,actions=drop\n"
        "priority=71,table=82,cookie=2,reg5=5,ip,actions=drop\n"
        "priority=70,table=82,cookie=1,reg5=6,ip,actions=drop\n"
        "priority=70,table=72,cookie=1,reg5=5,ip,actions=drop",
    )
    # non-strict: every flow of table 82 matching at least reg5=5, with cookie 1 only
    t.replay([("del-flows", False, "table=82,reg5=5,cookie=1/-1")])
    assert sorted((k[0], k[1], dict(k[2])["reg5"]) for k in t.flows) == [
        (72, 70, "5"),
        (82, 70, "6"),
        (82, 71, "5"),
    ]
    # no cookie: any cookie; no table: every table
    t.replay([("del-flows", False, "reg5=5")])
    assert [dict(k[2])["reg5"] for k in t.flows] == ["6"]
    t.replay([("del-flows", False, "")])
    assert not t.flows


def _record(system: str, workload: str, ports: int, sync_s: float, flows: int) -> dict:
    return {
        "system": system,
        "workload": workload,
        "seed": 0,
        "params": {"ports": ports, "rules_per_group": 50},
        "sizes": {"ports": ports, "rules_per_port": ports * 100, "member_addresses": 3 * ports},
        "status": "ok",
        "neutron": "28.0.2",
        "sync_s": sync_s,
        "maxrss_kib": 150_000,
        "rss_before_kib": 140_000,
        "recorder_log_kib": 1_000,
        "add_flow_calls": flows * 2,
        "flows": flows,
        "changes": {"rule": {"s": 0.1, "add_flow_calls": 10}},
    }


def test_neutron_report() -> None:
    text = report.render(
        [
            _record("neutron", "p10", 10, 0.5, 8000),
            _record("neutron", "p10", 10, 0.25, 8000),  # the later record of a workload wins
            {**_record("neutron", "p3000", 3000, 0, 0), "status": "did not finish"},
        ]
    )
    lines = text.splitlines()
    assert "Neutron 28.0.2" in lines[0]
    assert sum(line.startswith("| p10 ") for line in lines) == 1
    assert "| 0.25 |" in text
    assert "did not finish" in text


def test_compare_table_and_chart(tmp_path: Path) -> None:
    rows = [
        (
            "p10",
            _record("sgflows", "p10", 10, 0.01, 6000),
            _record("neutron", "p10", 10, 0.1, 8000),
        ),
        ("p100", None, _record("neutron", "p100", 100, 3.0, 80000)),
    ]
    text = compare.render_markdown(rows)
    assert "| p10 | 10 |" in text
    assert "10.0x" in text  # Neutron / sgflows time
    assert "| p100 | 100 |" in text and "| — |" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    compare.render_chart(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
