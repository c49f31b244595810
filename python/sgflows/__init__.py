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
from typing import Any, Literal, Union, overload

from sgflows._sgflows import (
    Compiler,
    CompileResult,
    FlowDiff,
    FlowLimitError,
    ModelError,
    OvnResult,
    RteFlowPortResult,
    RteFlowResult,
    __version__,
)
from sgflows._sgflows import compile_openflow as _compile_openflow
from sgflows._sgflows import compile_ovn as _compile_ovn
from sgflows._sgflows import compile_rte_flow as _compile_rte_flow
from sgflows._sgflows import compile_rte_flow_port as _compile_rte_flow_port
from sgflows._sgflows import validate as _validate
from sgflows.evaluation import Evaluation, UnknownKeys, evaluate

__all__ = [
    "DEFAULT_TABLES",
    "RTE_FLOW_PORT_PROFILES",
    "RTE_FLOW_PROFILES",
    "CompileResult",
    "Compiler",
    "Evaluation",
    "FlowDiff",
    "FlowLimitError",
    "ModelError",
    "ModelInput",
    "OvnResult",
    "RteFlowPortResult",
    "RteFlowResult",
    "Target",
    "UnknownKeys",
    "__version__",
    "compile",
    "compile_rte_flow_port",
    "evaluate",
    "validate",
]

LOG = logging.getLogger(__name__)

#: What ``compile`` and ``validate`` accept: a decoded model (mapping), or its JSON or
#: msgpack encoding as bytes (JSON also as text).
ModelInput = Union[Mapping[str, Any], Sequence[Any], bytes, str]

#: Compile targets.
Target = Literal["openflow", "rte_flow", "ovn"]

#: Driver profiles of the rte_flow target (``docs/rte_flow.md``), default first.
RTE_FLOW_PROFILES = ("generic", "mlx5", "ntnic", "full")

#: Driver profiles of the single-port (non-transfer) rte_flow rendering, default first.
RTE_FLOW_PORT_PROFILES = ("net_tap", "full")

#: The pipeline's table numbers by role (Neutron's numbers); override any with ``tables=``.
DEFAULT_TABLES: Mapping[str, int] = {
    "entry": 0,
    "classify": 60,
    "egress_base": 71,
    "egress_rules": 72,
    "accept_or_ingress": 73,
    "ingress_base": 81,
    "ingress_rules": 82,
    "egress_protocol": 74,
    "egress_protocol_stateless": 75,
    "egress_unaddressed": 76,
    "ingress_protocol": 83,
    "ingress_protocol_stateless": 84,
    "accepted_egress": 91,
    "accepted_ingress": 92,
    "normal": 94,
}

_TARGETS = ("openflow", "rte_flow", "ovn")

#: Keyword options of the rte_flow target, with their defaults.
_RTE_FLOW_DEFAULTS: Mapping[str, Any] = {
    "profile": "generic",
    "proxy_port": None,
    "uplink_port": None,
    "software_port": None,
    "forward": "software",
    "count": True,
    "max_rules": None,
}


@overload
def compile(
    model: ModelInput,
    *,
    target: Literal["openflow"] = "openflow",
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    cookie: int | None = None,
    max_flows: int | None = None,
    widen_unmatchable_port_ranges: bool = False,
    strict: UnknownKeys | None = None,
    entry_flow: bool = True,
    normal_flow: bool = True,
    port_register: int = 5,
    zone_register: int = 6,
    policy_register: int = 7,
    tables: Mapping[str, int] | None = None,
    optimise_rules: bool = True,
    conjunctions: bool = True,
    share_policies: bool = True,
    shared_stage: bool = True,
    filter_local_flood: bool = False,
    foreign_ports: bool = False,
) -> CompileResult: ...


@overload
def compile(
    model: ModelInput,
    *,
    target: Literal["rte_flow"],
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: UnknownKeys | None = None,
    profile: str = "generic",
    proxy_port: int | None = None,
    uplink_port: int | None = None,
    software_port: int | None = None,
    forward: Literal["software", "uplink"] = "software",
    count: bool = True,
    max_rules: int | None = None,
) -> RteFlowResult: ...


@overload
def compile(
    model: ModelInput,
    *,
    target: Literal["ovn"],
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: UnknownKeys | None = None,
    with_ports: bool = False,
    switch: str = "sgf_switch",
) -> OvnResult: ...


def compile(
    model: ModelInput,
    *,
    target: Target = "openflow",
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    cookie: int | None = None,
    max_flows: int | None = None,
    widen_unmatchable_port_ranges: bool = False,
    strict: UnknownKeys | None = None,
    entry_flow: bool = True,
    normal_flow: bool = True,
    port_register: int = 5,
    zone_register: int = 6,
    policy_register: int = 7,
    tables: Mapping[str, int] | None = None,
    optimise_rules: bool = True,
    conjunctions: bool = True,
    share_policies: bool = True,
    shared_stage: bool = True,
    filter_local_flood: bool = False,
    foreign_ports: bool = False,
    profile: str = "generic",
    proxy_port: int | None = None,
    uplink_port: int | None = None,
    software_port: int | None = None,
    forward: Literal["software", "uplink"] = "software",
    count: bool = True,
    max_rules: int | None = None,
    with_ports: bool = False,
    switch: str = "sgf_switch",
) -> CompileResult | RteFlowResult | OvnResult:
    """Compile a security-group model.

    :param model: the model (see ``docs/model.md``): a mapping in either input shape, or its
        JSON/msgpack encoding.
    :param target: ``"openflow"`` (``ovs-ofctl`` flows), ``"rte_flow"`` (DPDK rte_flow
        ``transfer`` rules for port representors, see ``docs/rte_flow.md``; returns an
        :class:`RteFlowResult`) or ``"ovn"`` (OVN Northbound port groups, address sets and
        ACLs, see ``docs/ovn.md``; returns an :class:`OvnResult`).
    :param cookie: cookie put on every flow (default ``0x736766``, "sgf").
    :param max_flows: refuse models needing more flows (default 5,000,000).
    :param widen_unmatchable_port_ranges: reproduce Neutron: a port range on DCCP/UDP-Lite opens
        the whole protocol (with a warning) instead of being an error.
    :param strict: what a key the model's objects may not carry is: ``"error"``, ``"warn"``
        (accepted, listed in ``result.warnings``) or ``"ignore"``. Default: an error in the
        documented model, a warning in Neutron's RPC payload (a refused batch would leave
        new ports unfiltered); ``docs/model.md`` lists the keys of each object.
    :param entry_flow: emit ``table=0`` → classifier.
    :param normal_flow: emit ``table=94`` → ``NORMAL``.
    :param port_register: register for the OpenFlow port number (Neutron: 5).
    :param zone_register: register for the local VLAN / conntrack zone (Neutron: 6).
    :param policy_register: register for the port's policy id (ports with the same groups
        share their rule flows).
    :param optimise_rules: rule algebra: drop subsumed rules, merge ranges and prefixes.
    :param conjunctions: remote groups with several members as ``conjunction()`` flows.
    :param share_policies: one set of rule flows per distinct group set (off: per port).
    :param shared_stage: protocol allowances and drops once per bridge in shared tables
        (74-76, 83, 84), the per-port tables keeping only the port's bindings (off: a copy per
        binding).
    :param filter_local_flood: broadcast/multicast a VM sends run through the other local ports'
        ingress rules; needs VM ports configured ``no-flood`` (docs/pipeline.md).
    :param foreign_ports: ports outside the model share the bridge (the Neutron firewall
        driver): no classify-table default, and frames from outside for no model port's MAC
        are left to the agent's ``NORMAL`` (docs/pipeline.md).
    :param tables: table numbers by role, overriding :data:`DEFAULT_TABLES`.
    :param profile: rte_flow: the driver profile, one of :data:`RTE_FLOW_PROFILES`.
    :param proxy_port: rte_flow: ethdev port id of the transfer proxy (rules are created on it);
        default: the model's ``rte_flow.proxy_port``, else 0.
    :param uplink_port: rte_flow: ethdev port id of the uplink (the wire); default: the
        model's ``rte_flow.uplink_port``, else 0.
    :param software_port: rte_flow, profiles with ``port_id`` (ntnic): where software-bound
        traffic goes; default: the model's ``rte_flow.software_port``, else the proxy port.
    :param forward: rte_flow: where accepted egress traffic goes, ``"software"`` (the VM's
        representor) or ``"uplink"``.
    :param count: rte_flow: add ``count`` to every rule when the profile supports it.
    :param max_rules: rte_flow: refuse models needing more rules (default 1,000,000).
    :param with_ports: ovn: also create the logical switch ``switch`` and the model's ports
        (standalone use and tests; in a cloud the ports belong to the deployment).
    :param switch: ovn: the logical switch's name with ``with_ports``.
    :raises ModelError: the model is invalid; ``errors`` lists every problem.
    :raises FlowLimitError: the model needs more than ``max_flows`` flows.
    """
    if target not in _TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(_TARGETS)}")
    if (with_ports, switch) != (False, "sgf_switch") and target != "ovn":
        raise ValueError("with_ports, switch: only for target='ovn'")
    if target == "ovn":
        rte_given = {
            "profile": profile,
            "proxy_port": proxy_port,
            "uplink_port": uplink_port,
            "software_port": software_port,
            "forward": forward,
            "count": count,
            "max_rules": max_rules,
        }
        rte_changed = sorted(k for k, v in rte_given.items() if v != _RTE_FLOW_DEFAULTS[k])
        if rte_changed:
            raise ValueError(f"{', '.join(rte_changed)}: only for target='rte_flow'")
        return _compile_ovn_target(
            model,
            input_format=input_format,
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            strict=strict,
            with_ports=with_ports,
            switch=switch,
        )
    if target == "rte_flow":
        rte = _compile_rte_flow(
            model,
            input_format=input_format,
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            strict=strict,
            profile=profile,
            proxy_port=proxy_port,
            uplink_port=uplink_port,
            software_port=software_port,
            forward=forward,
            count=count,
            max_rules=max_rules,
        )
        for path, message in rte.warnings:
            LOG.warning("%s: %s", path, message)
        LOG.debug("compiled %d rte_flow rules (profile %s)", rte.rule_count, rte.profile)
        return rte
    given = {
        "profile": profile,
        "proxy_port": proxy_port,
        "uplink_port": uplink_port,
        "software_port": software_port,
        "forward": forward,
        "count": count,
        "max_rules": max_rules,
    }
    changed = sorted(k for k, v in given.items() if v != _RTE_FLOW_DEFAULTS[k])
    if changed:
        raise ValueError(f"{', '.join(changed)}: only for target='rte_flow'")
    result = _compile_openflow(
        model,
        input_format=input_format,
        cookie=cookie,
        max_flows=max_flows,
        widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
        strict=strict,
        entry_flow=entry_flow,
        normal_flow=normal_flow,
        port_register=port_register,
        zone_register=zone_register,
        policy_register=policy_register,
        tables=dict(tables) if tables is not None else None,
        optimise_rules=optimise_rules,
        conjunctions=conjunctions,
        share_policies=share_policies,
        shared_stage=shared_stage,
        filter_local_flood=filter_local_flood,
        foreign_ports=foreign_ports,
    )
    for path, message in result.warnings:
        LOG.warning("%s: %s", path, message)
    if LOG.isEnabledFor(logging.DEBUG):
        # `stats` builds every per-port and per-rule count (milliseconds at 1,000 ports):
        # only when the message is wanted.
        LOG.debug("compiled %d flows for %d ports", result.flow_count, result.stats["ports"])
    return result


def validate(
    model: ModelInput,
    *,
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: UnknownKeys | None = None,
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Read and validate a model without compiling it.

    ``strict`` is as for :func:`compile`.

    :returns: the warnings as ``(path, message)`` and a summary (ports, groups, rules,
        stateless_groups).
    :raises ModelError: the model is invalid; ``errors`` lists every problem.
    """
    return _validate(
        model,
        input_format=input_format,
        widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
        strict=strict,
    )


def _compile_ovn_target(
    model: ModelInput,
    *,
    input_format: Literal["auto", "json", "msgpack"],
    widen_unmatchable_port_ranges: bool,
    strict: UnknownKeys | None,
    with_ports: bool,
    switch: str,
) -> OvnResult:
    """``compile(target="ovn")``: the Northbound rows, warnings logged."""
    result = _compile_ovn(
        model,
        input_format=input_format,
        widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
        strict=strict,
        with_ports=with_ports,
        switch=switch,
    )
    for path, message in result.warnings:
        LOG.warning("%s: %s", path, message)
    LOG.debug("compiled %d OVN ACLs", result.acl_count)
    return result


def compile_rte_flow_port(
    model: ModelInput,
    port: str,
    *,
    profile: str = "net_tap",
    ethdev: int = 0,
    accept_queue: int = 0,
    software_queue: int | None = 1,
    max_exact_ports: int = 64,
    input_format: Literal["auto", "json", "msgpack"] = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: UnknownKeys | None = None,
    max_rules: int | None = None,
    refused: Sequence[str] | None = None,
    max_priority: int | None = None,
) -> RteFlowPortResult:
    """One port's policy as plain (non-``transfer``) rte_flow rules on the ethdev port facing
    the VM, fitted to a driver (``docs/rte_flow.md``, "Single port").

    Traffic from the VM (``ingress`` rules) is accepted to ``accept_queue``, dropped, or sent
    to ``software_queue`` where the driver cannot decide it; traffic to the VM (``egress``
    rules) is accepted (``passthru``) or dropped, and left to the software switch as a whole
    when any of it needs software. With ``software_queue=None`` a port needing software is
    not offloadable (``offloadable`` is false and ``to_testpmd()`` raises ValueError).

    :param port: the model's port id.
    :param profile: one of :data:`RTE_FLOW_PORT_PROFILES`.
    :param max_exact_ports: a port block becomes at most this many exact-port rules on a
        driver without port masks; beyond, its traffic goes to software.
    :param refused: shapes a probe of the port refused to create (``rte_probe.refused``):
        each narrows the profile, so the traffic needing it goes to software. The profile is
        the default; a probe never widens it.
    :param max_priority: the highest priority the probe created (narrows the profile's).
    """
    result = _compile_rte_flow_port(
        model,
        port,
        input_format=input_format,
        widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
        strict=strict,
        profile=profile,
        ethdev=ethdev,
        accept_queue=accept_queue,
        software_queue=software_queue,
        max_exact_ports=max_exact_ports,
        max_rules=max_rules,
        refused=None if refused is None else list(refused),
        max_priority=max_priority,
    )
    for path, message in result.warnings:
        LOG.warning("%s: %s", path, message)
    return result
