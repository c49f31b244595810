"""`sgflows.Compiler`: each change returns the minimal diff, and the compiler's flows always
equal a fresh `compile()` of the model with the same change made to the input document."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
import sgflows
from hypothesis import given, settings
from hypothesis import strategies as st
from sessionhelpers import port

RULES: list[dict[str, Any]] = [
    {"direction": "ingress", "protocol": "tcp", "port_range_min": 22},
    {"direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 90},
    {"direction": "ingress", "protocol": "udp", "remote_group_id": "a"},
    {"direction": "ingress", "remote_group_id": "b"},
    {"direction": "egress"},
    {"direction": "egress", "protocol": "tcp", "remote_ip_prefix": "10.1.0.0/16"},
    {"direction": "ingress", "protocol": "icmp", "remote_address_group_id": "adm"},
]
GROUPS = ["a", "b", "c"]


def base() -> dict[str, Any]:
    """Members are explicit: a session does not re-derive them from its ports."""
    return {
        "security_groups": {g: {"rules": [RULES[k], RULES[k + 2]]} for k, g in enumerate(GROUPS)},
        "members": {"a": {"IPv4": ["10.0.0.1"]}, "b": {"IPv4": []}},
        "address_groups": {"adm": ["192.0.2.0/24"]},
        "networks": {"net": {"local_vlan": 3}},
        "ports": [port(0, ["a"]), port(1, ["b"]), port(2, ["a", "b"])],
    }


def test_one_rule_gives_a_small_diff(example: dict[str, Any]) -> None:
    compiler = sgflows.Compiler(example)
    before = compiler.result()
    rule = {"direction": "ingress", "protocol": "tcp", "port_range_min": 8080}
    diff = compiler.add_rules("web", [rule])
    assert diff.added >= 1 and diff.removed == 0
    assert diff.added + diff.modified < before.flow_count
    changed = copy.deepcopy(example)
    changed["security_groups"]["web"]["rules"].append(rule)
    assert compiler.to_ofctl() == sgflows.compile(changed).to_ofctl()
    back = compiler.remove_rules("web", [rule])
    assert (back.added, back.modified, back.removed) == (diff.removed, diff.modified, diff.added)
    assert compiler.to_ofctl() == before.to_ofctl()


def test_refused_change_raises_model_error_and_changes_nothing() -> None:
    compiler = sgflows.Compiler(base())
    before = compiler.to_ofctl()
    with pytest.raises(sgflows.ModelError):
        compiler.remove_port("nope")
    with pytest.raises(sgflows.ModelError):
        compiler.add_port(port(0, ["a"]))  # duplicate id
    with pytest.raises(sgflows.ModelError):
        compiler.add_rules("a", [{"direction": "sideways"}])
    assert compiler.to_ofctl() == before


def test_bundle_puts_adds_before_deletes_with_masked_cookies() -> None:
    compiler = sgflows.Compiler(base(), cookie=0x42)
    diff = compiler.apply([("remove_port", "p1"), ("add_port", port(5, ["c"]))])
    lines = diff.to_bundle().splitlines()
    kinds = [line.split()[1] for line in lines]
    assert "add" in kinds and "delete_strict" in kinds
    assert kinds.index("delete_strict") > max(i for i, k in enumerate(kinds) if k == "add")
    assert all("cookie=0x42," in line for line in lines if line.split()[1] == "add")
    assert all("cookie=0x42/-1," in line for line in lines if line.split()[1] != "add")
    assert "cookie=0x7/-1," in diff.to_bundle(cookie=7)


def test_threads_share_one_compiler() -> None:
    compiler = sgflows.Compiler(base())
    rules = [
        {"direction": "ingress", "protocol": "tcp", "port_range_min": 1000 + n} for n in range(8)
    ]

    def add(rule: dict[str, Any]) -> None:
        compiler.add_rules("c", [rule])

    threads = [threading.Thread(target=add, args=(r,)) for r in rules]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Thread order decides rule positions, not flows: compare with any order.
    fresh = base()
    fresh["security_groups"]["c"]["rules"].extend(rules)
    assert compiler.to_ofctl() == sgflows.compile(fresh).to_ofctl()


def edit(doc: dict[str, Any], step: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Makes `step` on the input document; returns the compiler call, or None to skip."""
    kind = step[0]
    groups = doc["security_groups"]
    ids = [p["id"] for p in doc["ports"]]
    if kind == "add_port":
        p = port(step[1], step[2])
        if p["id"] in ids:
            return None
        doc["ports"].append(p)
        return ("add_port", p)
    if kind == "update_port":
        p = port(step[1], step[2])
        if p["id"] not in ids:
            return None
        doc["ports"] = [p if q["id"] == p["id"] else q for q in doc["ports"]]
        return ("update_port", p)
    if kind == "remove_port":
        pid = f"p{step[1]}"
        if pid not in ids:
            return None
        doc["ports"] = [q for q in doc["ports"] if q["id"] != pid]
        return ("remove_port", pid)
    if kind == "add_rules":
        rules = groups[step[1]]["rules"]
        if RULES[step[2]] not in rules:
            rules.append(RULES[step[2]])
        return ("add_rules", step[1], [RULES[step[2]]])
    if kind == "remove_rules":
        groups[step[1]]["rules"] = [r for r in groups[step[1]]["rules"] if r != RULES[step[2]]]
        return ("remove_rules", step[1], [RULES[step[2]]])
    if kind == "set_stateful":
        groups[step[1]]["stateful"] = step[2]
        return ("set_stateful", step[1], step[2])
    members = doc["members"].setdefault(step[1], {"IPv4": []}).setdefault("IPv4", [])
    ip = f"10.9.0.{step[2]}"
    if kind == "add_members":
        if ip not in members:
            members.append(ip)
        return ("add_members", step[1], {"IPv4": [ip]})
    if ip in members:
        members.remove(ip)
    return ("remove_members", step[1], {"IPv4": [ip]})


GROUP = st.sampled_from(GROUPS)
STEP = st.one_of(
    st.tuples(
        st.sampled_from(["add_port", "update_port"]),
        st.integers(0, 5),
        st.lists(GROUP, max_size=2, unique=True),
    ),
    st.tuples(st.just("remove_port"), st.integers(0, 5)),
    st.tuples(st.sampled_from(["add_rules", "remove_rules"]), GROUP, st.integers(0, 6)),
    st.tuples(st.sampled_from(["add_members", "remove_members"]), GROUP, st.integers(1, 9)),
    st.tuples(st.just("set_stateful"), GROUP, st.booleans()),
)


def flow_set(result: sgflows.CompileResult) -> dict[tuple[int, int, str], str]:
    return {(t, p, m): a for t, p, m, a in result.flows}


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.lists(STEP, min_size=1, max_size=3), min_size=1, max_size=6))
def test_session_equals_fresh_compile_and_diff_is_the_set_difference(
    steps: list[list[tuple[Any, ...]]],
) -> None:
    doc = base()
    compiler = sgflows.Compiler(doc)
    for batch in steps:
        trial = copy.deepcopy(doc)
        calls = [c for c in (edit(trial, s) for s in batch) if c is not None]
        old = sgflows.compile(doc)
        try:
            new = sgflows.compile(trial)
        except sgflows.ModelError:
            # The document is refused (e.g. a port with a stateful and a stateless group):
            # so is the change, and the compiler stays as it was.
            with pytest.raises(sgflows.ModelError):
                compiler.apply(calls)
            assert compiler.to_ofctl() == old.to_ofctl()
            continue
        diff = compiler.apply(calls)
        assert compiler.to_ofctl() == new.to_ofctl()
        before, after = flow_set(old), flow_set(new)
        assert diff.added == len(after.keys() - before.keys())
        assert diff.removed == len(before.keys() - after.keys())
        assert diff.modified == sum(
            1 for k in before.keys() & after.keys() if before[k] != after[k]
        )
        doc = trial
