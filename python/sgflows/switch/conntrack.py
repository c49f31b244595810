"""Flushing the conntrack entries of connections the firewall cut.

When a rule is removed, the pipeline marks the established connections it allowed
(``ct_mark=1``, at their next packet) and drops them from then on, both ways. Like Neutron's
driver, the driver then deletes those marked entries, so that they do not linger in the
port's zone: after a batch that removed flows, :func:`marked_entries` reads
``dpctl/dump-conntrack zone=Z`` (kernel and userspace datapaths alike) and each marked
entry is flushed by its original tuple (:func:`flush_cut_connections`, through the caller's
``ovs-appctl``: the agent's privileged helper in driver mode, a plain command standalone).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

LOG = logging.getLogger(__name__)

_ORIG = re.compile(r"orig=\(([^)]*)\)")
_MARK = re.compile(r"\bmark=(0x[0-9a-f]+|\d+)")
_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58, "udplite": 136, "dccp": 33}


def flush_cut_connections(appctl: Callable[..., str], zones: Iterable[int]) -> int:
    """Flush the entries the pipeline marked as cut (``ct_mark=1``) in ``zones`` and return
    how many. Best effort (the flows drop those connections anyway): a zone whose dump or
    flush fails (``appctl`` raises a ``RuntimeError``) is logged and skipped."""
    flushed = 0
    for zone in sorted(set(zones)):
        try:
            dump = appctl("dpctl/dump-conntrack", f"zone={zone}")
            for entry in marked_entries(dump):
                appctl("dpctl/flush-conntrack", f"zone={zone}", entry)
                flushed += 1
        except RuntimeError as exc:
            LOG.warning("conntrack cleanup of zone %d failed: %s", zone, exc)
    if flushed:
        LOG.info("flushed %d conntrack entries of cut connections", flushed)
    return flushed


def marked_entries(dump: str, mark: int = 1) -> list[str]:
    """The ``dpctl/flush-conntrack`` tuples of the entries in ``dump`` that carry ``mark``."""
    tuples = []
    for line in dump.splitlines():
        found = _MARK.search(line)
        if not found or int(found.group(1), 0) != mark:
            continue
        flush = _flush_tuple(line)
        if flush is None:
            LOG.debug("conntrack entry not flushable by tuple: %s", line)
        else:
            tuples.append(flush)
    return tuples


def _flush_tuple(line: str) -> str | None:
    proto_name = line.split(",", 1)[0].strip()
    orig = _ORIG.search(line)
    if proto_name not in _PROTOS or orig is None:
        return None
    fields = dict(f.split("=", 1) for f in orig.group(1).split(",") if "=" in f)
    src, dst = fields.get("src"), fields.get("dst")
    if src is None or dst is None:
        return None
    family = "ipv6" if ":" in src else "nw"
    out = [f"ct_{family}_src={src}", f"ct_{family}_dst={dst}", f"ct_nw_proto={_PROTOS[proto_name]}"]
    if "sport" in fields and "dport" in fields:
        out += [f"ct_tp_src={fields['sport']}", f"ct_tp_dst={fields['dport']}"]
    elif "id" in fields and "type" in fields and "code" in fields:
        out += [f"icmp_id={fields['id']}", f"icmp_type={fields['type']}"]
        out.append(f"icmp_code={fields['code']}")
    else:
        return None
    return ",".join(out)
