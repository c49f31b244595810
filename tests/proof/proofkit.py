"""Shared tools of the proof suite: load a model's flows into a real bridge and ask the switch
for a verdict, the way the evaluator is asked.

A ``Rig`` is a bridge with one internal port per OpenFlow number the models use, plus an
uplink (``UPLINK``) that stands for the rest of the network: ingress packets enter there
tagged with the network's local VLAN, as they would from a physical bridge; egress packets
enter at the VM's port and are allowed when the switch outputs them anywhere (the pipeline
ends in ``NORMAL``, which floods to the uplink).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sgflows
from support import unique_name
from support.ovs import Bridge, TraceResult, parse_trace

LOG = logging.getLogger(__name__)

#: OpenFlow port of the uplink.
UPLINK = 4000

#: --ct-next states given to every trace: at most one conntrack pass per pipeline crossed
#: (egress, then ingress of each port owning the destination MAC: three ports at most here).
MAX_CT_PASSES = 4

CT_NEXT = {
    "new": "trk,new",
    "est": "trk,est",
    "est,rpl": "trk,est,rpl",
    "rel": "trk,rel",
    "rel,rpl": "trk,rel,rpl",
    "inv": "trk,inv",
}


_DP_ACTIONS = re.compile(r"^Datapath actions: (.*)$", re.MULTILINE)


def reached_ports(bridge: Bridge, trace: TraceResult) -> set[int]:
    """OpenFlow ports any copy of the packet reaches, over every pass of the trace.

    ``TraceResult.ports`` is the last pass only; a frame for a MAC two ports share runs two
    ingress pipelines, each recirculating through conntrack on its own, so each pass's outputs
    count.
    """
    ports: set[int] = set()
    for line in _DP_ACTIONS.findall(trace.text):
        one = parse_trace(trace.flow, f"Datapath actions: {line}\n", bridge.datapath_ports())
        ports.update(one.ports)
    return ports


@dataclass(frozen=True)
class SwitchVerdict:
    """What the switch did with one packet."""

    allowed: bool
    trace: TraceResult
    flow: str
    ct_next: tuple[str, ...]

    def replay(self, bridge: str = "br-int") -> str:
        """The ``ovs-appctl`` command that shows the same trace."""
        ct = "".join(f" --ct-next {c}" for c in self.ct_next)
        return f"ovs-appctl ofproto/trace {bridge} '{self.flow}'{ct}"


def port_binding(model: Mapping[str, Any], port_id: str) -> tuple[int, int]:
    """(ofport, local_vlan) of a port of a documented-shape model, read from the model itself."""
    for port in model["ports"]:
        if port["id"] == port_id:
            vlan = port.get("local_vlan")
            if vlan is None:
                vlan = model["networks"][port["network_id"]]["local_vlan"]
            return int(port["ofport"]), int(vlan)
    raise KeyError(port_id)


class Rig:
    """A bridge that holds one model's flows at a time and traces packets through them."""

    def __init__(self, bridge: Bridge, ofports: Iterable[int]) -> None:
        self.bridge = bridge
        for ofport in sorted(set(ofports)):
            bridge.add_port(unique_name("sgp"), ofport, internal=True)
        bridge.add_port(unique_name("sgu"), UPLINK, internal=True)
        self.model: Mapping[str, Any] | None = None

    def load(self, model: Mapping[str, Any], **options: Any) -> sgflows.CompileResult:
        """Replace the bridge's flows with the model's (one bundle), compiled with ``options``."""
        result = sgflows.compile(model, **options)
        self.bridge.replace_flows(result.to_ofctl())
        self.model = model
        return result

    def verdict(
        self, port_id: str, direction: str, packet: str, ct: str | None = None
    ) -> SwitchVerdict:
        """Trace a complete packet (``ovs-ofctl`` syntax, no ``in_port``) at a port."""
        assert self.model is not None, "load a model first"
        ofport, vlan = port_binding(self.model, port_id)
        # One conntrack pass per pipeline crossed: one, or two on ingress when two ports of
        # the network share the destination MAC (an address pair copying another port's MAC
        # runs both ingress pipelines). Unused --ct-next are ignored: give enough.
        ct_next = (CT_NEXT[ct or "new"],) * MAX_CT_PASSES
        if direction == "egress":
            flow = f"in_port={ofport},{packet}"
        else:
            flow = f"in_port={UPLINK},dl_vlan={vlan},{packet}"
        trace = self.bridge.trace(flow, list(ct_next))
        if trace.recirculates:
            raise AssertionError(f"trace still recirculates, verdict not final:\n{trace.text}")
        reached = reached_ports(self.bridge, trace)
        if direction == "egress":
            allowed = bool(reached) and ofport not in reached
        else:
            allowed = ofport in reached
        return SwitchVerdict(allowed, trace, flow, ct_next)

    def verdict_local(
        self, src: str, dst: str, packet: str, ct: str | None = None
    ) -> SwitchVerdict:
        """Trace a packet from port ``src`` to port ``dst`` (same network, ``dl_dst`` one of
        the destination's MACs): allowed when it reaches the destination's port. Up to two
        conntrack passes (the source's egress, the destination's ingress, and another ingress
        when the destination MAC is shared), all in the same state."""
        assert self.model is not None, "load a model first"
        src_port, _ = port_binding(self.model, src)
        dst_port, _ = port_binding(self.model, dst)
        ct_next = (CT_NEXT[ct or "new"],) * MAX_CT_PASSES
        flow = f"in_port={src_port},{packet}"
        trace = self.bridge.trace(flow, list(ct_next))
        if trace.recirculates:
            raise AssertionError(f"trace still recirculates, verdict not final:\n{trace.text}")
        return SwitchVerdict(dst_port in reached_ports(self.bridge, trace), trace, flow, ct_next)


def save_model(model: Mapping[str, Any]) -> Path:
    """Write a counterexample's model where it survives the test run; return its path."""
    text = json.dumps(model, indent=1, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    directory = Path(os.environ.get("SGFLOWS_COUNTEREXAMPLES", tempfile.gettempdir()))
    path = directory / f"sgflows-counterexample-{digest}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def counterexample(
    model: Mapping[str, Any],
    port: str,
    direction: str,
    packet: str,
    ct: str | None,
    evaluation: sgflows.Evaluation,
    switch: SwitchVerdict,
) -> str:
    """A disagreement as a model file and the commands that replay it (the model is also
    written to a file, named in the text)."""
    path = save_model(model)
    ct_opt = f" --ct {ct}" if ct else ""
    return "\n".join(
        [
            "evaluator and switch disagree",
            f"  evaluator: {evaluation.verdict} ({evaluation.reason})",
            f"  switch:    {'allow' if switch.allowed else 'drop'} "
            f"(datapath actions: {switch.trace.datapath_actions})",
            f"model ({path}):",
            json.dumps(model, indent=1, sort_keys=True),
            "replay:",
            f"  sgflows trace {path} --port {port} --direction {direction}"
            f" --packet '{packet}'{ct_opt}",
            f"  sgflows compile {path} | ovs-ofctl -O OpenFlow15 add-flows br-int -",
            f"  {switch.replay()}   # uplink = OpenFlow port {UPLINK}",
            "switch trace:",
            switch.trace.text,
        ]
    )


def ofports_of(models: Sequence[Mapping[str, Any]]) -> set[int]:
    return {int(p["ofport"]) for m in models for p in m["ports"]}
