"""The changes the end-to-end benchmarks apply after the cold start, one after another.

Each change is defined on the model (``docs/model.md``), so that both sides apply the same one:
sgflows as ``Compiler`` calls (``session_batch``), Neutron's agent as the payload of the model
after the change plus the notification its server would send (``e2e_neutron.py``). Standard
library, ``workload`` and ``sgflows`` (both venvs have them).

- ``+rule``: one TCP rule added to a group a port uses (``workload.mutate(.., "rule")``);
- ``-rule``: one generated rule removed from a tier group a port uses, one that costs flows;
- ``+member``: one address added to a remote group (``workload.mutate(.., "member")``);
- ``+port``: one port added on the host, a copy of an existing port's groups and network, its
  address added to those of its groups that are remote groups (``workload.mutate(.., "port")``).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import workload

KINDS = ("+rule", "-rule", "+member", "+port")


@dataclass
class Change:
    """One change: what it is on the model, and the model after it."""

    kind: str
    after: dict[str, Any]
    group: str | None = None
    rule: dict[str, Any] | None = None
    member: list[Any] | None = None
    port: dict[str, Any] | None = None
    #: for ``+port``: remote group → the new port's member addresses added to it
    members_added: dict[str, list[list[Any]]] = field(default_factory=dict)

    def session_batch(self) -> list[tuple[Any, ...]]:
        """The change as a ``sgflows.Compiler.apply`` batch."""
        if self.kind == "+rule":
            return [("add_rules", self.group, [self.rule])]
        if self.kind == "-rule":
            return [("remove_rules", self.group, [self.rule])]
        if self.kind == "+member":
            return [("add_members", self.group, {"IPv4": [self.member]})]
        if self.kind == "+port":
            batch: list[tuple[Any, ...]] = [("add_port", self.port)]
            for group, addrs in self.members_added.items():
                batch.append(("add_members", group, {"IPv4": addrs}))
            return batch
        raise ValueError(self.kind)


def plan(model: dict[str, Any], seed: int = 0) -> list[Change]:
    """The four changes of ``KINDS``, each applied to the model the previous one left."""
    changes = []
    current = model
    for kind in KINDS:
        change = _make(kind, current, seed)
        changes.append(change)
        current = change.after
    return changes


def _make(kind: str, model: dict[str, Any], seed: int) -> Change:
    if kind == "+rule":
        after = workload.mutate(model, "rule", seed)
        group = _grown_group(model, after)
        return Change(kind, after, group=group, rule=after["security_groups"][group]["rules"][-1])
    if kind == "-rule":
        return _remove_rule(model, seed)
    if kind == "+member":
        after = workload.mutate(model, "member", seed)
        group = next(
            g for g, m in after["members"].items() if m["IPv4"] != model["members"][g]["IPv4"]
        )
        return Change(kind, after, group=group, member=after["members"][group]["IPv4"][-1])
    if kind == "+port":
        after = workload.mutate(model, "port", seed)
        port = after["ports"][-1]
        added = {
            g: [m["IPv4"][-1]]
            for g, m in after["members"].items()
            if m["IPv4"] != model["members"].get(g, {}).get("IPv4")
        }
        return Change(kind, after, port=port, members_added=added)
    raise ValueError(f"unknown change {kind!r}: one of {', '.join(KINDS)}")


def _grown_group(before: dict[str, Any], after: dict[str, Any]) -> str:
    return next(
        g
        for g, sg in after["security_groups"].items()
        if len(sg["rules"]) != len(before["security_groups"][g]["rules"])
    )


def _remove_rule(model: dict[str, Any], seed: int) -> Change:
    """Remove a generated rule that costs flows of its own (per sgflows' accounting: a rule
    another one covers changes nothing on either side) and names no remote group."""
    import sgflows  # installed in both venvs

    costs = sgflows.compile(model, widen_unmatchable_port_ranges=True).stats["per_rule"]
    rng = random.Random(seed + 1)
    used = sorted({g for p in model["ports"] for g in p["security_groups"] if "tier" in g})
    group = rng.choice(used)
    rules = model["security_groups"][group]["rules"]
    candidates = [
        i
        for i, r in enumerate(rules)
        if not r.get("remote_group_id") and costs.get(f"{group}[{i}]", 0) > 0
    ]
    index = rng.choice(candidates)
    after = copy.deepcopy(model)
    rule = after["security_groups"][group]["rules"].pop(index)
    return Change("-rule", after, group=group, rule=rule)
