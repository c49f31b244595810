"""The reference evaluator from Python: which verdict the model gives a packet, and why.

    >>> d = sgflows.evaluate(model, "tcp,nw_src=10.0.0.5,tp_dst=22", port="vm1")
    >>> d.verdict, d.reason
    ('allow', 'rule web[0]')

The decision comes from the model alone, never from compiled flows: it is what the flows
must do, and ``tests/proof`` checks the flows against it on a real Open vSwitch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from sgflows._sgflows import evaluate as _evaluate

__all__ = [
    "CtState",
    "Direction",
    "Evaluation",
    "PacketInput",
    "UnknownKeys",
    "evaluate",
    "packet_text",
]

LOG = logging.getLogger(__name__)

#: A packet in ``ovs-ofctl`` flow syntax (``"tcp,nw_src=10.0.0.5,tp_dst=22"``) or as a
#: mapping of the same fields (``{"tcp": True, "nw_src": "10.0.0.5", "tp_dst": 22}``).
PacketInput = Union[str, Mapping[str, Any]]

Direction = Literal["ingress", "egress"]

#: What an unknown key in the model is: ``"error"`` (the documented model's default),
#: ``"warn"`` (the default for Neutron's RPC payload) or ``"ignore"``; see ``docs/model.md``.
UnknownKeys = Literal["error", "warn", "ignore"]

#: Connection states: ``new``, ``est``, ``est,rpl`` (``reply``), ``rel``, ``rel,rpl``, ``inv``.
CtState = str

_CT_NEXT = {
    "new": "trk,new",
    "est": "trk,est",
    "est,rpl": "trk,est,rpl",
    "rel": "trk,rel",
    "rel,rpl": "trk,rel,rpl",
    "inv": "trk,inv",
}


@dataclass(frozen=True)
class Evaluation:
    """The evaluator's decision for one packet at one port."""

    #: ``"allow"`` or ``"drop"``.
    verdict: Literal["allow", "drop"]
    #: What decided, in words (``"rule web[2]"``, ``"implicit: DHCPv6 client (UDP 546→547)"``).
    reason: str
    #: The reason's category: ``rule``, ``implicit``, ``forbidden``, ``anti-spoofing``,
    #: ``conntrack``, ``unfiltered``, ``not-for-port``, ``not-ip`` or ``default-drop``.
    kind: str
    #: The deciding rule as ``(group id, rule index)``, when a rule decided.
    rule: tuple[str, int] | None
    #: That rule in words.
    rule_text: str | None
    #: Every rule matching the packet (``group[index]``), even if something else decided.
    matching_rules: tuple[str, ...]
    #: The complete packet evaluated, in ``ovs-ofctl`` syntax without ``in_port``.
    packet: str
    port: str
    direction: Direction
    #: Whether the port's groups are stateful.
    stateful: bool
    #: Whether the port is filtered at all (port security on and not a ``network:*`` port).
    filtered: bool
    #: The connection state used, when the packet went through conntrack.
    ct: str | None
    #: Whether the packet goes through conntrack on its way.
    conntrack: bool
    #: The port's OpenFlow number and local VLAN tag, when the model binds it.
    ofport: int | None = None
    local_vlan: int | None = None
    #: Remarks from reading the model, as ``(path, message)`` (e.g. unknown keys ignored).
    warnings: tuple[tuple[str, str], ...] = ()

    @property
    def allowed(self) -> bool:
        return self.verdict == "allow"

    @property
    def ct_next(self) -> list[str]:
        """``ofproto/trace --ct-next`` states for this port's conntrack pass (if any)."""
        return [_CT_NEXT[self.ct]] if self.conntrack and self.ct is not None else []

    def trace_flow(self, uplink: int | str = "UPLINK") -> str:
        """The flow for ``ofproto/trace`` on the integration bridge: from the port itself
        (egress), or tagged with the network's VLAN from ``uplink`` (ingress)."""
        if self.direction == "egress":
            return f"in_port={self.ofport},{self.packet}"
        return f"in_port={uplink},dl_vlan={self.local_vlan},{self.packet}"

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["rule"] = (
            {"group": self.rule[0], "index": self.rule[1]} if self.rule is not None else None
        )
        out["matching_rules"] = list(self.matching_rules)
        out["warnings"] = [{"path": p, "message": m} for p, m in self.warnings]
        return out


def packet_text(packet: PacketInput) -> str:
    """A packet mapping as ``ovs-ofctl`` flow text: ``True``/``None`` values are keywords."""
    if isinstance(packet, str):
        return packet
    parts = []
    for key, value in packet.items():
        if value is True or value is None:
            parts.append(str(key))
        elif value is False:
            continue
        else:
            parts.append(f"{key}={value}")
    return ",".join(parts)


def evaluate(
    model: Any,
    packet: PacketInput,
    *,
    port: str,
    direction: Direction = "ingress",
    ct: CtState | None = None,
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: UnknownKeys | None = None,
) -> Evaluation:
    """Decide ``packet`` at ``port`` in ``direction`` from the model alone.

    :param model: the model, as for ``sgflows.compile``.
    :param packet: ``ovs-ofctl`` flow text or a mapping; fields left out are filled from the
        port (its MAC and first address of the family at the VM's end), see
        ``docs/proof.md``. ``Evaluation.packet`` shows the complete packet.
    :param port: the port's id in the model.
    :param direction: ``"ingress"`` (to the VM) or ``"egress"`` (from the VM).
    :param ct: the connection state on stateful ports (default ``new``; ignored on stateless
        ones): ``new``, ``est``, ``est,rpl``, ``rel``, ``rel,rpl``, ``inv``.
    :param strict: unknown keys, as for ``sgflows.compile``.
    :raises ModelError: the model is invalid or has no such port.
    :raises ValueError: the packet, direction or state cannot be read.
    """
    raw = _evaluate(
        model,
        packet_text(packet),
        port=port,
        direction=direction,
        ct=ct,
        input_format=input_format,
        widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
        strict=strict,
    )
    for path, message in raw["warnings"]:
        LOG.warning("%s: %s", path, message)
    LOG.debug("%s %s %s: %s (%s)", port, direction, raw["packet"], raw["verdict"], raw["reason"])
    return Evaluation(
        verdict=raw["verdict"],
        reason=raw["reason"],
        kind=raw["kind"],
        rule=tuple(raw["rule"]) if raw["rule"] is not None else None,
        rule_text=raw["rule_text"],
        matching_rules=tuple(raw["matching_rules"]),
        packet=raw["packet"],
        port=raw["port"],
        direction=raw["direction"],
        stateful=raw["stateful"],
        filtered=raw["filtered"],
        ct=raw["ct"],
        conntrack=raw["conntrack"],
        ofport=raw["ofport"],
        local_vlan=raw["local_vlan"],
        warnings=tuple((path, message) for path, message in raw["warnings"]),
    )
