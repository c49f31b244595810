"""How ``ovn_e2e.py --changes`` commits one change (``e2e_changes.py``) to the Northbound
database, on each side, as only the rows that changed.

- Neutron: the rows Neutron 29.0.0's ``acl.py`` makes for the model before and after the change
  (``ovn_neutron_acls.py``), compared here; what differs becomes one ``ovn-nbctl`` transaction
  of the calls Neutron's OVN driver makes for such a change: ``acl-add`` / ``acl-del`` on the
  port group (``pg_acl_add`` / ``pg_acl_del``), ports added to or removed from port groups
  (``pg_add_ports`` / ``pg_del_ports``: ``add``/``remove Port_Group … ports <uuid>``), and
  address-set addresses. A remote group's members are logical ports in its port group (ML2/OVN
  matches ``$pg_<id>_ip4``), so ``+member`` is one port added to a port group.
- sgflows: ``sgflows.ovn.apply`` of the model's new compile result (one IDL transaction of the
  row-level diff against the rows it owns); ``sgflows_summary`` counts what that diff held.

Standard library only (the tests import it without OVN daemons).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

AclKey = tuple[str, str, int, str, str]


def _acl_key(acl: Mapping[str, Any]) -> AclKey:
    return (acl["port_group"], acl["direction"], int(acl["priority"]), acl["match"], acl["action"])


def _quoted(value: str) -> str:
    """An OVSDB string atom for ``ovn-nbctl add``/``remove`` (JSON quoting is OVSDB's)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def neutron_change(old: Mapping[str, Any], new: Mapping[str, Any],
                   lsp_uuids: Mapping[str, str]) -> tuple[list[str], str]:  # fmt: skip
    """The ``ovn-nbctl`` arguments (``--``-separated commands, the first ``--`` dropped) that
    turn Neutron's rows ``old`` into ``new``, and a summary of what they commit.

    ``lsp_uuids`` maps logical switch port names to their UUIDs (a port group's ``ports`` are
    references). Raises ``ValueError`` for a change this cannot express exactly (an ACL
    removed while an identical one stays: ``acl-del`` would remove both)."""
    cmds: list[list[str]] = []
    counts: Counter[str] = Counter()
    _address_sets(old["address_sets"], new["address_sets"], cmds, counts)
    _port_groups(old["port_groups"], new["port_groups"], lsp_uuids, cmds, counts)
    _acls(old["acls"], new["acls"], cmds, counts)
    args = [arg for cmd in cmds for arg in ("--", *cmd)]
    return args[1:], summary(counts)


def _address_sets(old: Mapping[str, list[str]], new: Mapping[str, list[str]],
                  cmds: list[list[str]], counts: Counter[str]) -> None:  # fmt: skip
    for name in sorted(old.keys() | new.keys()):
        before, after = set(old.get(name, ())), set(new.get(name, ()))
        if name not in new:
            cmds.append(["destroy", "Address_Set", name])
            counts["-address set"] += 1
            continue
        if name not in old:
            cmds.append(["create", "Address_Set", f"name={_quoted(name)}"])
            counts["+address set"] += 1
        for address in sorted(after - before):
            cmds.append(["add", "Address_Set", name, "addresses", _quoted(address)])
            counts["+address-set address"] += 1
        for address in sorted(before - after):
            cmds.append(["remove", "Address_Set", name, "addresses", _quoted(address)])
            counts["-address-set address"] += 1


def _port_groups(old: Mapping[str, list[str]], new: Mapping[str, list[str]],
                 lsp_uuids: Mapping[str, str], cmds: list[list[str]],
                 counts: Counter[str]) -> None:  # fmt: skip
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            cmds.append(["pg-del", name])
            counts["-port group"] += 1
            continue
        before, after = set(old.get(name, ())), set(new[name])
        if name not in old:
            cmds.append(["pg-add", name])
            counts["+port group"] += 1
        for port in sorted(after - before):
            cmds.append(["add", "Port_Group", name, "ports", lsp_uuids[port]])
            counts["+port-group port"] += 1
        for port in sorted(before - after):
            cmds.append(["remove", "Port_Group", name, "ports", lsp_uuids[port]])
            counts["-port-group port"] += 1


def _acls(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]],
          cmds: list[list[str]], counts: Counter[str]) -> None:  # fmt: skip
    before, after = Counter(map(_acl_key, old)), Counter(map(_acl_key, new))
    for key in sorted(before - after):
        # acl-del matches port group, direction, priority and match: it removes every copy
        if after[key] or (before - after)[key] != before[key]:
            raise ValueError(f"cannot remove one of several identical ACLs: {key}")
        pg, direction, priority, match, _ = key
        cmds.append(["--type=port-group", "acl-del", pg, direction, str(priority), match])
        counts["-ACL"] += before[key]
    for key, n in sorted((after - before).items()):
        pg, direction, priority, match, action = key
        for _ in range(n):
            cmds.append(["--type=port-group", "acl-add", pg, direction, str(priority), match,
                         action])  # fmt: skip
        counts["+ACL"] += n


def summary(counts: Mapping[str, int]) -> str:
    """``+1 ACL, +2 port-group port``: the counts in a fixed order, zeros left out."""
    order = ["+ACL", "-ACL", "+address-set address", "-address-set address",
             "+port-group port", "-port-group port", "+address set", "-address set",
             "+port group", "-port group"]  # fmt: skip
    parts = [f"{k[0]}{counts[k]} {k[1:]}" for k in order if counts.get(k)]
    return ", ".join(parts) or "nothing"


def sgflows_summary(changes: Iterable[Any]) -> str:
    """The same summary for ``sgflows.ovn.apply``'s report (``Change`` rows and details)."""
    counts: Counter[str] = Counter()
    names = {"acl": "ACL", "address": "address-set address", "port": "port-group port"}
    tables = {"Address_Set": "address set", "Port_Group": "port group"}
    for change in changes:
        if change.kind in ("added", "removed"):
            counts[("+" if change.kind == "added" else "-") + tables[change.table]] += 1
        for detail in change.detail:
            sign = detail.partition(" ")[0]
            if sign[1:] in names:
                counts[sign[0] + names[sign[1:]]] += 1
    return summary(counts)
