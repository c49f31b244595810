"""``sgflows trace`` and ``sgflows.evaluate``: the interface, not the semantics (the verdict
table covers those)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sgflows
from click.testing import CliRunner
from sgflows.cli import cli
from verdict_table import MODELS, VM_MAC


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(MODELS["ssh_stateful"]))
    return path


def test_trace_prints_verdict_reason_and_replay(model_file: Path) -> None:
    args = ["trace", str(model_file), "--port", "vm", "--packet", "tcp,nw_src=10.0.0.5,tp_dst=22"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "verdict: ALLOW" in result.output
    assert "reason:  rule sg[0]: ingress IPv4 tcp port 22-22 from anywhere" in result.output
    assert "--ct-next trk,new" in result.output
    assert f"dl_dst={VM_MAC}" in result.output  # the completed packet is shown


def test_trace_json(model_file: Path) -> None:
    base = ["trace", str(model_file), "--port", "vm", "--json", "--uplink", "9"]
    out = CliRunner().invoke(cli, [*base, "--packet", "tcp,tp_dst=80"])
    doc = json.loads(out.output)
    assert doc["verdict"] == "drop" and doc["reason"] == "default drop: no rule matches"
    assert doc["ofproto_trace"]["flow"].startswith("in_port=9,dl_vlan=7,tcp,")
    out = CliRunner().invoke(cli, [*base, "--packet", "tcp,tp_src=80", "--ct", "est,rpl"])
    doc = json.loads(out.output)
    assert (doc["verdict"], doc["kind"], doc["ct"]) == ("allow", "conntrack", "est,rpl")
    assert doc["ofproto_trace"]["ct_next"] == ["trk,est,rpl"]
    out = CliRunner().invoke(
        cli, [*base, "--direction", "egress", "--packet", "udp6,udp_src=546,udp_dst=547"]
    )
    doc = json.loads(out.output)
    assert doc["reason"] == "implicit: DHCPv6 client (UDP 546→547)"
    assert doc["rule"] is None and doc["conntrack"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--packet", "tcp,nw_src=10.0.0.0/8"], "not masks"),
        (["--packet", "tcp", "--ct", "new,rpl"], "connection state"),
        (["--packet", "bogus"], "unknown keyword"),
        (["--packet", "tcp", "--port", "nope"], "no port"),
    ],
)
def test_trace_errors_are_messages(model_file: Path, args: list[str], message: str) -> None:
    full = ["trace", str(model_file), "--port", "vm", *args]
    result = CliRunner().invoke(cli, full)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_evaluate_accepts_mappings_and_bytes() -> None:
    model = MODELS["ssh_stateful"]
    d = sgflows.evaluate(model, {"tcp": True, "tp_dst": 22}, port="vm")
    assert d.allowed and d.rule == ("sg", 0) and d.matching_rules == ("sg[0]",)
    again = sgflows.evaluate(json.dumps(model).encode(), d.packet, port="vm")
    assert again == d
    assert d.to_dict()["rule"] == {"group": "sg", "index": 0}
    with pytest.raises(ValueError, match="direction"):
        sgflows.evaluate(model, "tcp", port="vm", direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(sgflows.ModelError):
        sgflows.evaluate(model, "tcp", port="nope")


def test_trace_without_switch_bindings(tmp_path: Path) -> None:
    model = {
        "security_groups": {"sg": {"rules": [{"direction": "ingress", "protocol": "icmp"}]}},
        "ports": [{"id": "vm", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.5"],
                   "security_groups": ["sg"]}],
    }  # fmt: skip
    path = tmp_path / "unbound.json"
    path.write_text(json.dumps(model))
    result = CliRunner().invoke(cli, ["trace", str(path), "--port", "vm", "--packet", "icmp"])
    assert result.exit_code == 0, result.output
    assert "verdict: ALLOW" in result.output and "replay:" not in result.output
