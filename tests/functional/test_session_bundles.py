"""A `Compiler`'s diffs on a real userspace Open vSwitch: a bridge loaded with the first
flows and then every diff as a bundle holds exactly the final compile."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import sgflows
from support.ovs import Bridge

ROOT = Path(__file__).resolve().parents[2]


def test_every_diff_as_a_bundle_gives_the_final_flows(bridge: Bridge, tmp_path: Path) -> None:
    model: dict[str, Any] = json.loads((ROOT / "examples" / "two-tier.json").read_text())
    compiler = sgflows.Compiler(model)
    bridge.add_flows(compiler.to_ofctl())
    new_port = copy.deepcopy(next(p for p in model["ports"] if p["id"] == "web-2"))
    new_port.update(
        id="web-3",
        mac_address="fa:16:3e:00:00:13",
        ofport=13,
        fixed_ips=["10.0.0.13"],
        allowed_address_pairs=[],
    )
    ssh = model["security_groups"]["db"]["rules"][2]
    diffs = [
        compiler.add_rules(
            "web", [{"direction": "ingress", "protocol": "tcp", "port_range_min": 8080}]
        ),
        compiler.remove_rules("db", [ssh]),
        compiler.add_port(new_port),
        compiler.add_members("admins", {"IPv4": ["203.0.113.9"]}, address_group=True),
        compiler.remove_port("web-2"),
        compiler.set_stateful("edge", True),
    ]
    assert all(diffs)
    for n, diff in enumerate(diffs):
        bundle = tmp_path / f"step{n}.bundle"
        bundle.write_text(diff.to_bundle())
        bridge.ofctl("bundle", bridge.name, str(bundle))
    expected = tmp_path / "final.flows"
    expected.write_text(compiler.to_ofctl())
    # diff-flows exits 0 only when the bridge holds exactly these flows.
    bridge.ofctl("diff-flows", bridge.name, str(expected))
    assert bridge.flow_count() == len(compiler.flows())
