"""Strict input through the API and the CLI: a misspelt key never opens a rule, security
groups and address groups keep their own ids, and no Python object crashes the interpreter."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sgflows
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
RPC_FIXTURE = ROOT / "tests" / "data" / "neutron-rpc-payload.json"


def _doc_key_table() -> dict[str, tuple[set[str], set[str], set[str]]]:
    """docs/model.md's key table: object -> (read, documented extras, RPC extras)."""
    text = (ROOT / "docs" / "model.md").read_text(encoding="utf-8")
    table = text[text.index("<!-- keys:begin") : text.index("<!-- keys:end -->")]
    rows: dict[str, tuple[set[str], set[str], set[str]]] = {}
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith("| object"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        keys = [set(re.findall(r"`([^`]+)`", c)) for c in cells[1:4]]
        rows[cells[0]] = (keys[0], keys[1], keys[2])
    return rows


KEYS = _doc_key_table()


def documented_base() -> dict[str, Any]:
    """One object of every kind the reader checks."""
    return {
        "security_groups": {
            "web": {
                "stateful": True,
                "rules": [
                    {
                        "direction": "ingress",
                        "ethertype": "IPv4",
                        "protocol": "tcp",
                        "port_range_min": 22,
                        "port_range_max": 22,
                        "remote_ip_prefix": "10.0.0.0/8",
                    },
                    {"direction": "egress", "ethertype": "IPv4", "remote_address_group_id": "ag"},
                ],
            }
        },
        "address_groups": {"ag": {"addresses": ["192.0.2.0/24"]}},
        "networks": {"n": {"local_vlan": 1}},
        "bindings": {"p1": {"ofport": 1}},
        "rte_flow": {"proxy_port": 0},
        "ports": [
            {
                "id": "p1",
                "mac_address": "fa:16:3e:00:00:01",
                "network_id": "n",
                "fixed_ips": ["10.0.0.1", {"ip_address": "10.0.0.2"}],
                "allowed_address_pairs": [{"ip_address": "10.0.0.9"}],
                "security_groups": ["web"],
            }
        ],
    }


#: (keys to reach the object, path in messages, object name in docs/model.md).
DOCUMENTED_OBJECTS: list[tuple[tuple[Any, ...], str, str]] = [
    ((), "", "top level"),
    (("security_groups", "web"), "security_groups.web", "security group"),
    (("security_groups", "web", "rules", 0), "security_groups.web.rules[0]", "rule"),
    (("ports", 0), "ports[0]", "port"),
    (("ports", 0, "fixed_ips", 1), "ports[0].fixed_ips[1]", "fixed IP"),
    (("ports", 0, "allowed_address_pairs", 0), "ports[0].allowed_address_pairs[0]", "address pair"),
    (("bindings", "p1"), "bindings.p1", "binding"),
    (("networks", "n"), "networks.n", "network"),
    (("address_groups", "ag"), "address_groups.ag", "address group"),
    (("rte_flow",), "rte_flow", "rte_flow"),
]

RPC_OBJECTS: list[tuple[tuple[Any, ...], str, str]] = [
    ((), "", "top level"),
    (("security_groups", "1c9b1e2a-0000-4000-8000-0000000000a1", 0), "", "rule"),
    (("devices", "5b3d1f4e-0000-4000-8000-000000000001"), "", "port"),
    (("bindings", "5b3d1f4e-0000-4000-8000-000000000001"), "", "binding"),
]


def _dig(model: Any, keys: tuple[Any, ...]) -> Any:
    for k in keys:
        model = model[k]
    return model


def _misspell(key: str, op: int, at: int, c: str) -> str:
    chars = list(key)
    i = at % (len(chars) + 1)
    if op == 0 and chars:
        del chars[min(i, len(chars) - 1)]
    elif op == 1:
        chars.insert(i, c)
    elif op == 2 and chars:
        chars[min(i, len(chars) - 1)] = c
    elif len(chars) >= 2:
        j = min(i, len(chars) - 2)
        chars[j], chars[j + 1] = chars[j + 1], chars[j]
    else:
        chars.append(c)
    return "".join(chars)


SLIPS = st.tuples(
    st.integers(0, 3),
    st.integers(0, 40),
    st.sampled_from("abcdefghijklmnopqrstuvwxyz_0123456789ABCXYZ"),
)


def _typo_for(name: str, rpc: bool, choice: int, slip: tuple[int, int, str]) -> tuple[str, str]:
    read, doc_extra, rpc_extra = KEYS[name]
    known = sorted(read | (rpc_extra if rpc else doc_extra))
    key = known[choice % len(known)]
    typo = _misspell(key, *slip)
    assume(typo and typo not in known)
    return key, typo


STRICT_SETTINGS = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@STRICT_SETTINGS
@given(where=st.sampled_from(DOCUMENTED_OBJECTS), choice=st.integers(0, 60), slip=SLIPS)
def test_every_misspelt_key_is_refused_in_the_documented_model(
    where: tuple[tuple[Any, ...], str, str], choice: int, slip: tuple[int, int, str]
) -> None:
    keys, path, name = where
    key, typo = _typo_for(name, False, choice, slip)
    model = documented_base()
    obj = _dig(model, keys)
    obj[typo] = obj.pop(key, "x")
    with pytest.raises(sgflows.ModelError) as caught:
        sgflows.compile(model)
    wanted = f"unknown key {json.dumps(typo)}"
    assert any(p == path and m.startswith(wanted) for p, m in caught.value.errors), (
        typo,
        caught.value.errors,
    )


@STRICT_SETTINGS
@given(where=st.sampled_from(RPC_OBJECTS), choice=st.integers(0, 60), slip=SLIPS)
def test_every_misspelt_key_is_a_warning_in_the_rpc_payload(
    where: tuple[tuple[Any, ...], str, str], choice: int, slip: tuple[int, int, str]
) -> None:
    keys, _, name = where
    key, typo = _typo_for(name, True, choice, slip)
    model = json.loads(RPC_FIXTURE.read_text())
    obj = _dig(model, keys)
    obj[typo] = copy.deepcopy(obj.get(key, "x"))
    result = sgflows.compile(model)
    assert any(json.dumps(typo) in m for _, m in result.warnings), (typo, result.warnings)


def test_the_fixture_compiles_without_warnings() -> None:
    assert sgflows.compile(RPC_FIXTURE.read_bytes()).warnings == []


def test_a_typo_in_a_prefix_never_opens_the_rule() -> None:
    model = documented_base()
    rule = model["security_groups"]["web"]["rules"][0]
    rule["remote_ip_prefx"] = rule.pop("remote_ip_prefix")
    with pytest.raises(sgflows.ModelError) as caught:
        sgflows.compile(model)
    assert (
        "security_groups.web.rules[0]",
        'unknown key "remote_ip_prefx" (did you mean "remote_ip_prefix"?)',
    ) in caught.value.errors
    # Asked to warn, it compiles and says loudly what it ignored.
    result = sgflows.compile(model, strict="warn")
    [(path, message)] = result.warnings
    assert path == "security_groups.web.rules[0]"
    assert message.startswith('UNKNOWN KEY "remote_ip_prefx" IGNORED')


def test_a_misspelt_protocol_and_remote_are_both_reported() -> None:
    model = documented_base()
    model["security_groups"]["web"]["rules"] = [
        {"direction": "ingress", "protocl": "icmp", "remote_group": "web"}
    ]
    with pytest.raises(sgflows.ModelError) as caught:
        sgflows.validate(model)
    messages = [m for _, m in caught.value.errors]
    assert 'unknown key "protocl" (did you mean "protocol"?)' in messages
    assert 'unknown key "remote_group" (did you mean "remote_group_id"?)' in messages


def test_the_option_is_checked() -> None:
    with pytest.raises(ValueError, match="strict must be error, warn, ignore"):
        sgflows.validate(documented_base(), strict="loose")  # type: ignore[arg-type]
    rpc = json.loads(RPC_FIXTURE.read_text())
    rpc["devices"]["5b3d1f4e-0000-4000-8000-000000000001"]["colour"] = "blue"
    assert len(sgflows.compile(rpc).warnings) == 1
    assert sgflows.compile(rpc, strict="ignore").warnings == []
    with pytest.raises(sgflows.ModelError):
        sgflows.compile(rpc, strict="error")
    for i, binding in enumerate(rpc["bindings"].values()):
        binding["representor"] = i + 1
    assert len(sgflows.compile(rpc, target="rte_flow").warnings) == 1


def shared_name() -> dict[str, Any]:
    """A security group and an address group both called ``web``."""
    return {
        "security_groups": {
            "web": {
                "rules": [
                    {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "web"},
                    {"direction": "egress", "ethertype": "IPv4", "remote_address_group_id": "web"},
                ]
            }
        },
        "address_groups": {"web": ["0.0.0.0/1"]},
        "ports": [
            {
                "id": f"p{i}",
                "mac_address": f"fa:16:3e:00:00:0{i}",
                "fixed_ips": [f"10.0.0.{i}"],
                "security_groups": ["web"],
                "ofport": i,
                "local_vlan": 1,
            }
            for i in (1, 2)
        ],
    }


def test_each_rule_takes_its_own_kind_of_group() -> None:
    flows = sgflows.compile(shared_name()).to_ofctl()
    assert "nw_src=10.0.0.2" in flows
    assert "nw_src=0.0.0.0/1" not in flows
    assert "nw_dst=0.0.0.0/1" in flows
    verdict = sgflows.evaluate(shared_name(), "tcp,nw_src=10.9.9.9,tp_dst=80", port="p1")
    assert verdict.verdict == "drop", verdict
    verdict = sgflows.evaluate(shared_name(), "tcp,nw_src=10.0.0.2,tp_dst=80", port="p1")
    assert verdict.verdict == "allow", verdict


def _nested(depth: int, leaf: Any, as_dict: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"rules": value} if as_dict else [value]
    return value


def test_a_model_nested_20000_deep_is_a_model_error() -> None:
    for as_dict in (False, True):
        with pytest.raises(sgflows.ModelError, match="nested deeper than 128 levels"):
            sgflows.compile(_nested(20_000, None, as_dict))
        with pytest.raises(sgflows.ModelError, match="nested deeper than 128 levels"):
            sgflows.validate({"security_groups": _nested(20_000, 1, as_dict)})


def test_a_list_that_contains_itself_is_a_model_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(sgflows.ModelError, match="contains itself"):
        sgflows.compile(loop)
    model = documented_base()
    model["ports"][0]["fixed_ips"].append(model["ports"])
    with pytest.raises(sgflows.ModelError, match=r"ports\[0\]\.fixed_ips\[2\]: .*contains itself"):
        sgflows.validate(model)


def test_an_object_used_twice_is_no_cycle() -> None:
    model = documented_base()
    rule = model["security_groups"]["web"]["rules"][0]
    model["security_groups"]["web"]["rules"].append(rule)
    assert sgflows.validate(model)[1]["rules"] == 3


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    depth=st.integers(1, 400),
    as_dict=st.booleans(),
    where=st.sampled_from(DOCUMENTED_OBJECTS),
)
def test_deep_objects_anywhere_give_a_result_or_a_model_error(
    depth: int, as_dict: bool, where: tuple[tuple[Any, ...], str, str]
) -> None:
    model = documented_base()
    obj = _dig(model, where[0])
    key = sorted(obj)[0]
    obj[key] = _nested(depth, obj[key], as_dict)
    try:
        sgflows.compile(model)
    except sgflows.ModelError as e:
        assert e.errors
        if depth + len(where[0]) + 1 > 128:
            assert "nested deeper than 128 levels" in str(e)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(where=st.sampled_from(DOCUMENTED_OBJECTS), up=st.integers(0, 5), as_list=st.booleans())
def test_cycles_anywhere_are_a_model_error(
    where: tuple[tuple[Any, ...], str, str], up: int, as_list: bool
) -> None:
    model = documented_base()
    keys = where[0]
    target = _dig(model, keys[: max(0, len(keys) - up)])
    obj = _dig(model, keys)
    obj["loop"] = [target] if as_list else target
    with pytest.raises(sgflows.ModelError, match="contains itself"):
        sgflows.compile(model)


def _cli(*args: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sgflows", *args],
        input=data,
        capture_output=True,
        timeout=120,
    )


def test_cli_refuses_a_typo_with_exit_2_path_and_hint() -> None:
    model = documented_base()
    rule = model["security_groups"]["web"]["rules"][0]
    rule["remote_ip_prefx"] = rule.pop("remote_ip_prefix")
    data = json.dumps(model).encode()
    for command in (["compile", "-"], ["validate", "-"], ["trace", "-", "--port", "p1"]):
        extra = ["--packet", "tcp,tp_dst=22"] if command[0] == "trace" else []
        proc = _cli(*command, *extra, data=data)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (command, err)
        assert "Traceback" not in err
        assert (
            'security_groups.web.rules[0]: unknown key "remote_ip_prefx" '
            '(did you mean "remote_ip_prefix"?)' in err
        ), err
    proc = _cli("compile", "-", "--unknown-keys", "warn", data=data)
    assert proc.returncode == 0, proc.stderr
    assert b'warning: security_groups.web.rules[0]: UNKNOWN KEY "remote_ip_prefx"' in proc.stderr


def test_cli_warns_about_unknown_rpc_keys_and_obeys_the_option() -> None:
    model = json.loads(RPC_FIXTURE.read_text())
    model["security_groups"]["1c9b1e2a-0000-4000-8000-0000000000a1"][0]["remote_ip_prefx"] = "x"
    data = json.dumps(model).encode()
    proc = _cli("compile", "-", data=data)
    assert proc.returncode == 0, proc.stderr
    assert b'UNKNOWN KEY "remote_ip_prefx" IGNORED' in proc.stderr
    assert _cli("compile", "-", "--unknown-keys", "ignore", data=data).stderr == b""
    proc = _cli("validate", "-", "--unknown-keys", "error", data=data)
    assert proc.returncode == 2
    assert b'unknown key "remote_ip_prefx" (did you mean "remote_ip_prefix"?)' in proc.stderr
    assert b"Traceback" not in proc.stderr


@settings(max_examples=12, derandomize=True, deadline=None)
@given(where=st.sampled_from(DOCUMENTED_OBJECTS), choice=st.integers(0, 60), slip=SLIPS)
def test_cli_refuses_every_misspelt_key(
    where: tuple[tuple[Any, ...], str, str], choice: int, slip: tuple[int, int, str]
) -> None:
    keys, path, name = where
    key, typo = _typo_for(name, False, choice, slip)
    model = documented_base()
    obj = _dig(model, keys)
    obj[typo] = obj.pop(key, "x")
    proc = _cli("compile", "-", data=json.dumps(model).encode())
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    wanted = f"unknown key {json.dumps(typo)}"
    line = f"  {path}: {wanted}" if path else f"  {wanted}"
    assert line in err, err
