"""`sgflows.Compiler` on random models and random sequences of its typed changes: after every
change (1) its flows equal a fresh `compile()` of the changed document, and (2) the returned
diff, applied to the previous flows as the switch applies its bundle, gives the new flows."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import sgflows
from hypothesis import given, settings
from hypothesis import strategies as st
from sessionhelpers import port as session_port

# Rules chosen so that changes move others between "subsumed" and "kept": any-protocol rules
# over protocol rules of the same direction and family, wider and narrower prefixes, ranges
# that merge, and remote groups whose members decide containment.
RULES: list[dict[str, Any]] = [
    {"direction": "ingress", "protocol": "tcp", "port_range_min": 22},
    {"direction": "ingress", "protocol": "tcp", "port_range_min": 23, "port_range_max": 30},
    {"direction": "ingress", "protocol": "tcp", "remote_ip_prefix": "10.9.0.0/24"},
    {"direction": "ingress", "remote_ip_prefix": "10.9.0.0/16"},
    {"direction": "ingress", "protocol": "udp", "remote_group_id": "a"},
    {"direction": "ingress", "protocol": "udp", "remote_ip_prefix": "10.9.0.0/28"},
    {"direction": "ingress", "remote_group_id": "b"},
    {"direction": "egress"},
    {"direction": "egress", "protocol": "tcp", "remote_ip_prefix": "10.1.0.0/16"},
    {"direction": "egress", "protocol": "tcp", "port_range_min": 443, "remote_group_id": "c"},
    {"direction": "ingress", "protocol": "icmp", "remote_address_group_id": "adm"},
    {"direction": "ingress", "ethertype": "IPv6", "protocol": "tcp", "port_range_min": 22},
]
GROUPS = ["a", "b", "c"]
MEMBERS = [f"10.9.0.{n}" for n in (1, 2, 3, 20, 200)]


def port(i: int, groups: list[str]) -> dict[str, Any]:
    """The ports of these models, in 10.0.1.0/24."""
    return session_port(i, groups, subnet=1)


GROUP = st.sampled_from(GROUPS)
RULE = st.integers(0, len(RULES) - 1)
GROUP_SETS = st.lists(GROUP, max_size=2, unique=True)


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    rules = {g: draw(st.lists(RULE, max_size=5, unique=True)) for g in GROUPS}
    members = {g: draw(st.lists(st.sampled_from(MEMBERS), max_size=3, unique=True)) for g in GROUPS}
    ports = draw(st.dictionaries(st.integers(0, 5), GROUP_SETS, min_size=1, max_size=4))
    return {
        "security_groups": {g: {"rules": [RULES[k] for k in rules[g]]} for g in GROUPS},
        "members": {g: {"IPv4": m} for g, m in members.items()},
        "address_groups": {"adm": ["192.0.2.0/24"]},
        "networks": {"net": {"local_vlan": 3}},
        "ports": [port(i, groups) for i, groups in sorted(ports.items())],
    }


STEP = st.one_of(
    st.tuples(st.sampled_from(["add_port", "update_port"]), st.integers(0, 5), GROUP_SETS),
    st.tuples(st.just("remove_port"), st.integers(0, 5)),
    st.tuples(st.sampled_from(["add_rules", "remove_rules"]), GROUP, RULE),
    st.tuples(st.just("set_rules"), GROUP, st.lists(RULE, max_size=4, unique=True)),
    st.tuples(st.sampled_from(["add_members", "remove_members"]), GROUP, st.sampled_from(MEMBERS)),
    st.tuples(st.just("set_stateful"), GROUP, st.booleans()),
)


def edit(doc: dict[str, Any], step: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]] | None:
    """Makes `step` on the input document; returns the compiler method and its arguments, or
    None when the step does not apply (a port that is already there, or not there)."""
    kind, group = step[0], step[1]
    ids = [p["id"] for p in doc["ports"]]
    if kind in ("add_port", "update_port"):
        p = port(step[1], step[2])
        if (p["id"] in ids) != (kind == "update_port"):
            return None
        doc["ports"] = [q for q in doc["ports"] if q["id"] != p["id"]] + [p]
        return kind, (p,)
    if kind == "remove_port":
        if f"p{step[1]}" not in ids:
            return None
        doc["ports"] = [q for q in doc["ports"] if q["id"] != f"p{step[1]}"]
        return kind, (f"p{step[1]}",)
    rules = doc["security_groups"][group]["rules"]
    if kind == "add_rules":
        if RULES[step[2]] not in rules:
            rules.append(RULES[step[2]])
        return kind, (group, [RULES[step[2]]])
    if kind == "remove_rules":
        doc["security_groups"][group]["rules"] = [r for r in rules if r != RULES[step[2]]]
        return kind, (group, [RULES[step[2]]])
    if kind == "set_rules":
        doc["security_groups"][group]["rules"] = [RULES[k] for k in step[2]]
        return kind, (group, [RULES[k] for k in step[2]])
    if kind == "set_stateful":
        doc["security_groups"][group]["stateful"] = step[2]
        return kind, (group, step[2])
    members = doc["members"][group]["IPv4"]
    if kind == "add_members" and step[2] not in members:
        members.append(step[2])
    if kind == "remove_members" and step[2] in members:
        members.remove(step[2])
    return kind, (group, {"IPv4": [step[2]]})


Flows = dict[tuple[int, int, str], str]
BUNDLE_LINE = re.compile(
    r"flow (add|modify_strict|delete_strict) cookie=[^,]+,table=(\d+),priority=(\d+)"
    r"(?:,(\S*))?(?: actions=(.*))?"
)


def flow_map(flows: list[tuple[int, int, str, str]]) -> Flows:
    return {(t, p, m): a for t, p, m, a in flows}


def apply_bundle(flows: Flows, bundle: str) -> Flows:
    """What a switch holding `flows` holds after the bundle: adds must be new, modifies and
    deletes must find their flow (a diff that is not the set difference fails here)."""
    out = dict(flows)
    for line in bundle.splitlines():
        found = BUNDLE_LINE.fullmatch(line)
        assert found, line
        op, table, priority, matches, actions = found.groups()
        key = (int(table), int(priority), matches or "")
        if op == "add":
            assert key not in out, f"add of a flow already there: {line}"
            out[key] = actions
        elif op == "modify_strict":
            assert out.get(key, actions) != actions, f"modify that changes nothing: {line}"
            out[key] = actions
        else:
            assert key in out, f"delete of a missing flow: {line}"
            del out[key]
    return out


@settings(max_examples=30, deadline=None)
@given(model=models(), steps=st.lists(STEP, min_size=1, max_size=8))
def test_typed_changes_equal_fresh_compiles_and_their_diffs_chain(
    model: dict[str, Any], steps: list[tuple[Any, ...]]
) -> None:
    compiler = sgflows.Compiler(model)
    doc = model
    flows = flow_map(compiler.flows())
    assert compiler.to_ofctl() == sgflows.compile(doc).to_ofctl()
    for step in steps:
        trial = copy.deepcopy(doc)
        call = edit(trial, step)
        if call is None:
            continue
        method, args = call
        try:
            fresh = sgflows.compile(trial)
        except sgflows.ModelError:
            # Refused as a document (e.g. stateful and stateless groups on one port): the
            # change is refused too, and the compiler stays as it was.
            with pytest.raises(sgflows.ModelError):
                getattr(compiler, method)(*args)
            assert flow_map(compiler.flows()) == flows
            continue
        diff = getattr(compiler, method)(*args)
        assert compiler.to_ofctl() == fresh.to_ofctl()
        after = flow_map(fresh.flows)
        assert apply_bundle(flows, diff.to_bundle()) == after
        assert diff.added + diff.modified + diff.removed == len(diff.to_bundle().splitlines())
        flows, doc = after, trial
