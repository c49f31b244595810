"""The public Python API: compile, validate, results, errors."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
import sgflows

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "two-tier.json"
RPC_PAYLOAD = ROOT / "tests" / "data" / "neutron-rpc-payload.json"


def test_compile_example_gives_loadable_text(example: dict[str, Any]) -> None:
    result = sgflows.compile(example)
    text = result.to_ofctl()
    assert text.count("\n") == result.flow_count == len(result) == result.stats["flows"]
    assert all(line.startswith("cookie=0x736766,table=") for line in text.splitlines())
    assert sum(result.stats["per_table"].values()) == result.flow_count


def test_bytes_text_msgpack_and_mapping_agree(example: dict[str, Any]) -> None:
    expected = sgflows.compile(example).to_ofctl()
    raw = EXAMPLE.read_bytes()
    assert sgflows.compile(raw).to_ofctl() == expected
    assert sgflows.compile(raw.decode()).to_ofctl() == expected
    packed = msgpack.packb(example)
    assert sgflows.compile(packed).to_ofctl() == expected
    assert sgflows.compile(packed, input_format="msgpack").to_ofctl() == expected


def test_rpc_payload_compiles(example: dict[str, Any]) -> None:
    result = sgflows.compile(RPC_PAYLOAD.read_bytes())
    assert result.stats["ports"] == 2
    assert result.flow_count > 0


def test_shuffled_model_gives_identical_output(example: dict[str, Any]) -> None:
    expected = sgflows.compile(example).to_ofctl()
    rng = random.Random(7)
    for _ in range(5):
        shuffled = json.loads(json.dumps(example))
        rng.shuffle(shuffled["ports"])
        for group in shuffled["security_groups"].values():
            rng.shuffle(group["rules"])
        items = list(shuffled["security_groups"].items())
        rng.shuffle(items)
        shuffled["security_groups"] = dict(items)
        assert sgflows.compile(shuffled).to_ofctl() == expected


def test_cookie_and_tables_are_configurable(small: dict[str, Any]) -> None:
    result = sgflows.compile(small, cookie=0x1234, tables={"classify": 50})
    text = result.to_ofctl()
    assert all(line.startswith("cookie=0x1234,") for line in text.splitlines())
    assert "table=50," in text and "table=60," not in text
    assert "resubmit(,50)" in text


def test_flow_records_name_port_and_rule(small: dict[str, Any]) -> None:
    records = sgflows.compile(small).flow_records()
    rule_flows = [r for r in records if r["rule"] is not None]
    assert rule_flows and all(r["rule"] == "web[0]" and r["port"] == "p1" for r in rule_flows)
    assert all(r["table"] == 82 for r in rule_flows)
    assert {"table", "priority", "match", "actions", "port", "rule"} <= set(records[0])


def test_views_are_built_once_and_handed_out_as_new_lists(example: dict[str, Any]) -> None:
    result = sgflows.compile(example)
    first, second = result.flows, result.flows
    assert first == second and first is not second
    assert all(a is b for a, b in zip(first, second))
    first.clear()
    assert len(result.flows) == result.flow_count
    records = result.flow_records()
    assert all(a is b for a, b in zip(records, result.flow_records()))
    assert [(r["table"], r["priority"], r["match"], r["actions"]) for r in records] == second
    stats = result.stats
    stats["per_port"].clear()
    stats["flows"] = -1
    assert result.stats["flows"] == result.flow_count and result.stats["per_port"]


def test_write_ofctl_streams_the_same_text(example: dict[str, Any]) -> None:
    result = sgflows.compile(example)
    chunks: list[str] = []

    class Sink:
        def write(self, text: str) -> int:
            chunks.append(text)
            return len(text)

    written = result.write_ofctl(Sink())
    assert "".join(chunks) == result.to_ofctl() and written == len(result.to_ofctl())
    assert all(chunk.endswith("\n") for chunk in chunks)


def test_write_ofctl_writes_bytes_to_a_binary_file(example: dict[str, Any], tmp_path: Path) -> None:
    result = sgflows.compile(example)
    buffer = io.BytesIO()
    assert result.write_ofctl(buffer) == len(result.to_ofctl())
    assert buffer.getvalue() == result.to_ofctl().encode()
    path = tmp_path / "flows"
    with open(path, "wb") as f:
        result.write_ofctl(f)
    assert path.read_bytes() == result.to_ofctl().encode()
    path.unlink()
    with open(path, "w", encoding="utf-8") as text:
        result.write_ofctl(text)
    assert path.read_text(encoding="utf-8") == result.to_ofctl()
    with open(path, "wb", buffering=0) as raw:  # what sys.stdout.buffer is under python -u
        assert isinstance(raw, io.RawIOBase)
        result.write_ofctl(raw)
    assert path.read_bytes() == result.to_ofctl().encode()

    class Trickle(io.RawIOBase):
        """A raw file taking at most 1,000 bytes per write."""

        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            taken = bytes(b[:1000])
            self.data += taken
            return len(taken)

    trickle = Trickle()
    result.write_ofctl(trickle)
    assert bytes(trickle.data) == result.to_ofctl().encode()


def test_compiler_result_is_one_object_until_a_change(example: dict[str, Any]) -> None:
    compiler = sgflows.Compiler(example)
    before = compiler.result()
    assert compiler.result() is before and compiler.flows() == before.flows
    rule = {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "tcp",
        "port_range_min": 61000,
        "port_range_max": 61000,
        "remote_ip_prefix": "203.0.113.7/32",
    }
    diff = compiler.add_rules("web", [rule])
    assert diff.added > 0
    after = compiler.result()
    assert after is not before and compiler.result() is after
    assert len(after.flows) == len(before.flows) + diff.added - diff.removed
    assert compiler.flows() == after.flows


def test_stateless_group_has_no_conntrack(small: dict[str, Any]) -> None:
    small["security_groups"]["web"]["stateful"] = False
    text = sgflows.compile(small).to_ofctl()
    assert "ct(" not in text and "ct_state" not in text
    stateful_text = sgflows.compile(
        {**small, "security_groups": {"web": {**small["security_groups"]["web"], "stateful": True}}}
    ).to_ofctl()
    assert "ct(table=82" in stateful_text


def test_model_error_lists_every_problem_with_paths(small: dict[str, Any]) -> None:
    small["security_groups"]["web"]["rules"] = [
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 22},
        {"direction": "inwards"},
    ]
    small["ports"][0]["mac_address"] = "nope"
    with pytest.raises(sgflows.ModelError) as info:
        sgflows.compile(small)
    err = info.value
    assert isinstance(err, ValueError)
    assert ("security_groups.web.rules[0]", "port_range_min 80 > port_range_max 22") in err.errors
    paths = [p for p, _ in err.errors]
    assert "security_groups.web.rules[1].direction" in paths
    assert "ports[0].mac_address" in paths
    assert len(err.errors) == 3


def test_flow_cap(example: dict[str, Any]) -> None:
    with pytest.raises(sgflows.FlowLimitError, match="more than 10 flows"):
        sgflows.compile(example, max_flows=10)
    assert issubclass(sgflows.FlowLimitError, sgflows.ModelError)


def test_dccp_widening_is_opt_in(small: dict[str, Any]) -> None:
    small["security_groups"]["web"]["rules"] = [
        {"direction": "ingress", "protocol": "dccp", "port_range_min": 5, "port_range_max": 6}
    ]
    with pytest.raises(sgflows.ModelError, match="DCCP"):
        sgflows.compile(small)
    result = sgflows.compile(small, widen_unmatchable_port_ranges=True)
    assert result.warnings and "widened" in result.warnings[0][1]
    assert "nw_proto=33" in result.to_ofctl()


def test_validate_summarises(example: dict[str, Any]) -> None:
    warnings, summary = sgflows.validate(example)
    assert warnings == []
    assert summary == {"ports": 6, "groups": 3, "rules": 15, "stateless_groups": 1}


def test_missing_binding_facts_are_model_errors(small: dict[str, Any]) -> None:
    del small["ports"][0]["ofport"]
    with pytest.raises(sgflows.ModelError) as info:
        sgflows.compile(small)
    assert info.value.errors == [
        ("ports.p1", "ofport is required for the openflow target (on the port or in bindings)")
    ]


@pytest.mark.parametrize(
    "bad",
    [b"", b"{", b"\xc1\xc1", "[]", b"null", b"42", '{"ports": 5}'],
)
def test_garbage_is_a_model_error(bad: bytes | str) -> None:
    with pytest.raises(sgflows.ModelError):
        sgflows.compile(bad)


def test_wrong_types_are_type_errors() -> None:
    with pytest.raises(TypeError):
        sgflows.compile(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown target"):
        sgflows.compile({}, target="p4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="register"):
        sgflows.compile({}, port_register=16)
    with pytest.raises(ValueError, match="both table"):
        sgflows.compile({}, tables={"classify": 71})


def test_shared_stage_tables_are_configurable() -> None:
    model = {
        "security_groups": {"sg": {"rules": []}},
        "networks": {"net": {"local_vlan": 7}},
        "ports": [
            {"id": "vm", "mac_address": "fa:16:3e:00:00:01", "fixed_ips": ["10.0.0.5"],
             "security_groups": ["sg"], "network_id": "net", "ofport": 1},
        ],
    }  # fmt: skip
    moved = sgflows.compile(model, tables={"egress_protocol": 110, "ingress_protocol": 111})
    records = moved.flow_records()
    tables = {r["table"] for r in records}
    assert {110, 111, 76} <= tables and not {74, 83} & tables
    assert any("resubmit(,110)" in r["actions"] for r in records)
    # Stateless stages only when a stateless port needs them.
    assert not {75, 84} & tables
    # Their numbers must be free only when the shared stage is on.
    with pytest.raises(ValueError, match="both table 74"):
        sgflows.compile(model, tables={"normal": 74})
    inline = sgflows.compile(model, tables={"normal": 74}, shared_stage=False)
    assert {r["table"] for r in inline.flow_records()} & {75, 76, 83, 84} == set()


def test_empty_model_has_only_the_shared_pipeline() -> None:
    result = sgflows.compile({})
    assert result.stats["ports"] == 0
    assert result.flow_count == len(result.flows) > 0
