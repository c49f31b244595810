"""What a DPDK driver takes, found by creating rules: one trial ``flow create`` per rule
shape the single-port rendering can emit, each at its own priority (net_tap refuses a second
rule with one pattern at one priority), through ``dpdk-testpmd`` on a port. The result says
per shape whether the driver created it and whether the profile
(``src/backend/rte_flow/single/drivers.rs``) claims it: the profile is the default, the probe
confirms or narrows it (docs/rte_flow.md, "Single port").

Creating rules is the only trustworthy check: ``flow validate`` on net_tap skips the per-item
checks and accepts shapes that ``flow create`` refuses.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

_MAC = "fa:16:3e:00:00:01"

#: (shape, testpmd rule text after ``flow create PORT``, whether the net_tap profile claims it).
#: ``PRIO`` is replaced by each trial's own priority.
SHAPES: tuple[tuple[str, str, bool], ...] = (
    ("eth src exact", f"priority PRIO ingress pattern eth src is {_MAC} / end actions drop", True),
    ("eth type exact", "priority PRIO ingress pattern eth type is 0x8035 / end actions drop", True),
    (
        "eth dst group mask",
        "priority PRIO ingress pattern eth dst spec 01:00:00:00:00:00 dst mask "
        "01:00:00:00:00:00 / end actions drop",
        False,
    ),
    (
        "ipv4 prefix/exact/proto",
        "priority PRIO ingress pattern eth / ipv4 src spec 10.0.0.0 src mask 255.255.255.0 "
        "dst is 10.0.0.5 proto is 17 / end actions drop",
        True,
    ),
    (
        "ipv6 prefix/proto",
        "priority PRIO ingress pattern eth / ipv6 src spec 2001:db8:: src mask ffff:ffff:: "
        "proto is 58 / end actions drop",
        True,
    ),
    (
        "tcp exact",
        "priority PRIO ingress pattern eth / ipv4 / tcp dst is 80 / end actions drop",
        True,
    ),
    (
        "udp src+dst exact",
        "priority PRIO ingress pattern eth / ipv6 / udp src is 546 dst is 547 / end actions drop",
        True,
    ),
    (
        "tcp masked port",
        "priority PRIO ingress pattern eth / ipv4 / tcp dst spec 1024 dst mask 0xfc00 / end "
        "actions drop",
        False,
    ),
    (
        "udp port range (last)",
        "priority PRIO ingress pattern eth / ipv4 / udp dst spec 5000 dst last 5099 dst mask "
        "0xffff / end actions drop",
        False,
    ),
    ("sctp", "priority PRIO ingress pattern eth / ipv4 / sctp dst is 9 / end actions drop", False),
    ("icmp", "priority PRIO ingress pattern eth / ipv4 / icmp type is 8 / end actions drop", False),
    (
        "icmp6",
        "priority PRIO ingress pattern eth / ipv6 / icmp6 type is 135 / end actions drop",
        False,
    ),
    (
        "icmp6_nd_na",
        "priority PRIO ingress pattern eth / ipv6 / icmp6_nd_na target_addr is 2001:db8::1 / "
        "end actions drop",
        False,
    ),
    (
        "arp_eth_ipv4",
        f"priority PRIO ingress pattern eth / arp_eth_ipv4 sha is {_MAC} / end actions drop",
        False,
    ),
    ("queue action", "priority PRIO ingress pattern eth / end actions queue index 1", True),
    ("passthru action", "priority PRIO ingress pattern eth / end actions passthru", True),
    ("count action", "priority PRIO ingress pattern eth / end actions count / drop", False),
    ("jump action", "priority PRIO ingress pattern eth / end actions jump group 1", False),
    ("priority 4094", "priority 4094 ingress pattern eth / end actions drop", True),
    ("priority 4095", "priority 4095 ingress pattern eth / end actions drop", False),
    ("group 15", "group 15 priority PRIO ingress pattern eth / end actions drop", True),
    ("group 16", "group 16 priority PRIO ingress pattern eth / end actions drop", False),
    ("egress drop", "priority PRIO egress pattern eth / ipv4 / end actions drop", True),
    ("egress passthru", "priority PRIO egress pattern eth / ipv4 / end actions passthru", True),
)


@dataclass(frozen=True)
class Capability:
    """One probed shape."""

    shape: str
    created: bool
    profile: bool
    detail: str


def commands(port: int = 0) -> list[str]:
    """The trial rules as testpmd commands, each at its own priority, then a flush."""
    out = [
        f"flow create {port} {text.replace('PRIO', str(trial_priority(i)))} / end"
        for i, (_, text, _) in enumerate(SHAPES)
    ]
    return [*out, f"flow flush {port}"]


def table(outputs: Sequence[str]) -> list[Capability]:
    """The capabilities from testpmd's answer to each trial command (in order)."""
    caps = []
    for (shape, _, claimed), output in zip(SHAPES, outputs):
        created = "created" in output and "Caught PMD error" not in output
        detail = "" if created else output.strip().splitlines()[-1] if output.strip() else ""
        caps.append(Capability(shape, created, claimed, detail))
    return caps


def answers(commands_sent: Sequence[str], stdout: str) -> list[str]:
    """testpmd's output per command: it echoes each command after its prompt."""
    chunks = stdout.split("testpmd> ")[1:]
    out = []
    for command, chunk in zip(commands_sent, chunks):
        echoed, _, output = chunk.partition("\n")
        if echoed.strip() != command.strip():
            raise RuntimeError(f"testpmd read {echoed!r} for {command!r}")
        out.append(output)
    if len(out) != len(commands_sent):
        raise RuntimeError(f"testpmd answered {len(out)} of {len(commands_sent)} commands")
    return out


def run(vdev: str, *, testpmd: str = "dpdk-testpmd", timeout: float = 300) -> list[Capability]:
    """Probes the port of ``vdev`` (e.g. ``net_tap0,iface=sgfprobe0``) in a private testpmd."""
    binary = shutil.which(testpmd)
    if binary is None:
        raise FileNotFoundError(f"{testpmd} not found (Debian: apt-get install dpdk)")
    sent = commands(0)
    argv = [binary, "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
            "--file-prefix=sgfprobe", f"--vdev={vdev}",
            "--", "-i", "--total-num-mbufs=2048", "--rxq=2", "--txq=2"]  # fmt: skip
    # Line-buffered, errors on the same stream: each answer stays after its prompt.
    stdbuf = shutil.which("stdbuf")
    if stdbuf:
        argv = [stdbuf, "-oL", *argv]
    proc = subprocess.run(
        argv,
        input="".join(c + "\n" for c in sent) + "quit\n",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
    )
    return table(answers(sent, proc.stdout)[: len(SHAPES)])


def render(caps: Sequence[Capability]) -> str:
    """The table as text: shape, created or refused, and where the profile disagrees."""
    rows = [f"{'shape':26} {'this port':9}  (net_tap profile where it differs)"]
    for c in caps:
        note = "" if c.created == c.profile else f"  <- profile says {'yes' if c.profile else 'no'}"
        rows.append(f"{c.shape:26} {'created' if c.created else 'refused'}{note}")
    return "\n".join(rows) + "\n"


def to_json(caps: Sequence[Capability]) -> str:
    """The table as JSON (what ``--save`` writes)."""
    return json.dumps([asdict(c) for c in caps], indent=1) + "\n"


def from_json(text: str) -> list[Capability]:
    """A table saved by :func:`to_json` (``sgflows rte-flow probe --save``)."""
    rows = json.loads(text)
    if not isinstance(rows, list):
        raise ValueError("not a probe result: expected a JSON list of {shape, created, ...}")
    try:
        return [Capability(str(r["shape"]), bool(r["created"]), bool(r["profile"]),
                           str(r.get("detail", ""))) for r in rows]  # fmt: skip
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a probe result: {e}") from e


def trial_priority(i: int) -> int:
    """The priority trial ``i`` runs at when its shape names none."""
    return 10 + i


def refused(caps: Sequence[Capability]) -> list[str]:
    """The shapes the driver refused to create: what narrows the profile
    (``compile_rte_flow_port(refused=...)``)."""
    return [c.shape for c in caps if not c.created]


def max_priority(caps: Sequence[Capability]) -> int | None:
    """The highest priority the probe saw created when it refused ``priority 4094`` (the
    profile's bound otherwise: ``None``); the bound is never widened."""
    by_shape = {c.shape: c for c in caps}
    top = by_shape.get("priority 4094")
    if top is None or top.created:
        return None
    created = [trial_priority(i) for i, (shape, text, _) in enumerate(SHAPES)
               if "PRIO" in text and shape in by_shape and by_shape[shape].created]  # fmt: skip
    return max(created, default=0)


def narrowing(caps: Sequence[Capability]) -> dict[str, Any]:
    """The keyword arguments of ``compile_rte_flow_port`` a probe result gives."""
    return {"refused": refused(caps), "max_priority": max_priority(caps)}


def _item(
    kind: str,
    spec: dict[str, Any] | None = None,
    mask: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if spec is not None:
        out["spec"], out["mask"] = spec, mask
    if last is not None:
        out["last"] = last
    return out


def _rule(
    pattern: list[dict[str, Any]],
    actions: list[dict[str, Any]] | None = None,
    *,
    egress: bool = False,
    group: int = 0,
    priority: int | None = None,
) -> dict[str, Any]:
    return {
        "attr": {"group": group, "priority": priority, "ingress": not egress, "egress": egress},
        "pattern": pattern,
        "actions": actions or [{"type": "drop"}],
    }


_ETH = _item("eth")
_V4 = _item("ipv4")
_V6 = _item("ipv6")
_FF = "ff:ff:ff:ff:ff:ff"

#: The shapes of :data:`SHAPES` in the structured form the installer takes (same order and
#: names); a ``None`` priority becomes the trial's own.
JSON_SHAPES: tuple[dict[str, Any], ...] = (
    _rule([_item("eth", {"src": _MAC}, {"src": _FF})]),
    _rule([_item("eth", {"type": 0x8035}, {"type": 0xFFFF})]),
    _rule([_item("eth", {"dst": "01:00:00:00:00:00"}, {"dst": "01:00:00:00:00:00"})]),
    _rule(
        [
            _ETH,
            _item(
                "ipv4",
                {"src": "10.0.0.0", "dst": "10.0.0.5", "proto": 17},
                {"src": "255.255.255.0", "dst": "255.255.255.255", "proto": 255},
            ),
        ]
    ),
    _rule(
        [
            _ETH,
            _item("ipv6", {"src": "2001:db8::", "proto": 58}, {"src": "ffff:ffff::", "proto": 255}),
        ]
    ),
    _rule([_ETH, _V4, _item("tcp", {"dst": 80}, {"dst": 0xFFFF})]),
    _rule([_ETH, _V6, _item("udp", {"src": 546, "dst": 547}, {"src": 0xFFFF, "dst": 0xFFFF})]),
    _rule([_ETH, _V4, _item("tcp", {"dst": 1024}, {"dst": 0xFC00})]),
    _rule([_ETH, _V4, _item("udp", {"dst": 5000}, {"dst": 0xFFFF}, {"dst": 5099})]),
    _rule([_ETH, _V4, _item("sctp", {"dst": 9}, {"dst": 0xFFFF})]),
    _rule([_ETH, _V4, _item("icmp", {"type": 8}, {"type": 0xFF})]),
    _rule([_ETH, _V6, _item("icmp6", {"type": 135}, {"type": 0xFF})]),
    _rule(
        [
            _ETH,
            _V6,
            _item(
                "icmp6_nd_na",
                {"target_addr": "2001:db8::1"},
                {"target_addr": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
            ),
        ]
    ),
    _rule([_ETH, _item("arp_eth_ipv4", {"sha": _MAC}, {"sha": _FF})]),
    _rule([_ETH], [{"type": "queue", "conf": {"index": 1}}]),
    _rule([_ETH], [{"type": "passthru"}]),
    _rule([_ETH], [{"type": "count"}, {"type": "drop"}]),
    _rule([_ETH], [{"type": "jump", "conf": {"group": 1}}]),
    _rule([_ETH], priority=4094),
    _rule([_ETH], priority=4095),
    _rule([_ETH], group=15),
    _rule([_ETH], group=16),
    _rule([_ETH, _V4], egress=True),
    _rule([_ETH, _V4], [{"type": "passthru"}], egress=True),
)


def installer_shapes() -> list[dict[str, Any]]:
    """``[{name, rule}]`` for the installer's ``probe``, each trial at its own priority."""
    out = []
    for i, ((name, _, _), rule) in enumerate(zip(SHAPES, JSON_SHAPES, strict=True)):
        rule = copy.deepcopy(rule)
        if rule["attr"]["priority"] is None:
            rule["attr"]["priority"] = trial_priority(i)
        out.append({"name": name, "rule": rule})
    return out


def run_installer(vdev: str, *, binary: str | None = None) -> list[Capability]:
    """Probes the port of ``vdev`` through DPDK's API (the ``sgflows-rte-flow`` binary):
    validate and a trial create, destroyed at once, per shape."""
    from sgflows import rte_install

    with rte_install.Installer(
        rte_install.eal_args(vdev, prefix="sgfprobe"), binary=binary
    ) as inst:
        answer = inst.probe(installer_shapes())
    if not answer.get("ok"):
        raise RuntimeError(f"probe failed: {answer.get('error')}")
    caps = []
    for (shape, _, claimed), res in zip(SHAPES, answer["results"], strict=True):
        detail = "" if res["created"] else str(res.get("error", ""))
        if res["created"] and not res.get("validated", True):
            detail = f"created although validate refused: {res.get('validate_error')}"
        caps.append(Capability(shape, bool(res["created"]), claimed, detail))
    return caps
