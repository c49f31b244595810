"""sgflows: compile Neutron-style security groups into Open vSwitch flows.

Typical use from an agent::

    import sgflows

    result = sgflows.compile(model)          # a mapping, or JSON/msgpack bytes
    bridge_input = result.to_ofctl()         # for `ovs-ofctl --bundle add-flows`
    result.stats["per_table"]                # where the flows went

Errors in the model raise :class:`ModelError` (a :class:`ValueError`) whose ``errors``
attribute lists every problem as ``(path, message)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

from sgflows._sgflows import (
    CompileResult,
    FlowDiff,
    FlowLimitError,
    ModelError,
    __version__,
)
from sgflows._sgflows import compile_openflow as _compile_openflow
from sgflows._sgflows import validate as _validate
from sgflows.evaluation import Evaluation, evaluate

__all__ = [
    "DEFAULT_TABLES",
    "CompileResult",
    "Evaluation",
    "FlowDiff",
    "FlowLimitError",
    "ModelError",
    "ModelInput",
    "Target",
    "__version__",
    "compile",
    "evaluate",
    "validate",
]

LOG = logging.getLogger(__name__)

#: What ``compile`` and ``validate`` accept: a decoded model (mapping), or its JSON or
#: msgpack encoding as bytes (JSON also as text).
ModelInput = Union[Mapping[str, Any], Sequence[Any], bytes, str]

#: Compile targets.
Target = Literal["openflow"]

#: The pipeline's table numbers by role (Neutron's numbers); override any with ``tables=``.
DEFAULT_TABLES: Mapping[str, int] = {
    "entry": 0,
    "classify": 60,
    "egress_base": 71,
    "egress_rules": 72,
    "accept_or_ingress": 73,
    "ingress_base": 81,
    "ingress_rules": 82,
    "accepted_egress": 91,
    "accepted_ingress": 92,
    "normal": 94,
}

_TARGETS = ("openflow",)


def compile(
    model: ModelInput,
    *,
    target: Target = "openflow",
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    cookie: int | None = None,
    max_flows: int | None = None,
    widen_unmatchable_port_ranges: bool = False,
    entry_flow: bool = True,
    normal_flow: bool = True,
    port_register: int = 5,
    zone_register: int = 6,
    policy_register: int = 7,
    tables: Mapping[str, int] | None = None,
    optimise_rules: bool = True,
    conjunctions: bool = True,
    share_policies: bool = True,
) -> CompileResult:
    """Compile a security-group model.

    :param model: the model (see ``docs/model.md``): a mapping in either input shape, or its
        JSON/msgpack encoding.
    :param target: ``"openflow"`` (``ovs-ofctl`` flows).
    :param cookie: cookie put on every flow (default ``0x736766``, "sgf").
    :param max_flows: refuse models needing more flows (default 5,000,000).
    :param widen_unmatchable_port_ranges: reproduce Neutron: a port range on DCCP/UDP-Lite opens
        the whole protocol (with a warning) instead of being an error.
    :param entry_flow: emit ``table=0`` → classifier.
    :param normal_flow: emit ``table=94`` → ``NORMAL``.
    :param port_register: register for the OpenFlow port number (Neutron: 5).
    :param zone_register: register for the local VLAN / conntrack zone (Neutron: 6).
    :param policy_register: register for the port's policy id (ports with the same groups
        share their rule flows).
    :param optimise_rules: rule algebra: drop subsumed rules, merge ranges and prefixes.
    :param conjunctions: remote groups with several members as ``conjunction()`` flows.
    :param share_policies: one set of rule flows per distinct group set (off: per port).
    :param tables: table numbers by role, overriding :data:`DEFAULT_TABLES`.
    :raises ModelError: the model is invalid; ``errors`` lists every problem.
    :raises FlowLimitError: the model needs more than ``max_flows`` flows.
    """
    if target not in _TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(_TARGETS)}")
    result = _compile_openflow(
        model,
        input_format=input_format,
        cookie=cookie,
        max_flows=max_flows,
        widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
        entry_flow=entry_flow,
        normal_flow=normal_flow,
        port_register=port_register,
        zone_register=zone_register,
        policy_register=policy_register,
        tables=dict(tables) if tables is not None else None,
        optimise_rules=optimise_rules,
        conjunctions=conjunctions,
        share_policies=share_policies,
    )
    for path, message in result.warnings:
        LOG.info("%s: %s", path, message)
    LOG.debug("compiled %d flows for %d ports", result.flow_count, result.stats["ports"])
    return result


def validate(
    model: ModelInput,
    *,
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    widen_unmatchable_port_ranges: bool = False,
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Read and validate a model without compiling it.

    :returns: the warnings as ``(path, message)`` and a summary (ports, groups, rules,
        stateless_groups).
    :raises ModelError: the model is invalid; ``errors`` lists every problem.
    """
    return _validate(
        model,
        input_format=input_format,
        widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
    )
