"""Type stubs of the Rust extension; the public API is re-exported by ``sgflows``."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, final

from _typeshed import SupportsWrite

__all__ = [
    "CompileResult",
    "Compiler",
    "FlowDiff",
    "FlowLimitError",
    "ModelError",
    "OvnResult",
    "RteFlowPortResult",
    "RteFlowResult",
    "__version__",
    "compile_openflow",
    "compile_ovn",
    "compile_rte_flow",
    "compile_rte_flow_port",
    "evaluate",
    "validate",
]

__version__: str

class ModelError(ValueError):
    """The model is invalid; ``errors`` lists every problem as ``(path, message)``."""

    errors: list[tuple[str, str]]

class FlowLimitError(ModelError):
    """Compiling the model would exceed ``max_flows``."""

@final
class FlowDiff:
    """The flows that differ between two compiles."""

    @property
    def added(self) -> int: ...
    @property
    def modified(self) -> int: ...
    @property
    def removed(self) -> int: ...
    @property
    def ports(self) -> list[str]: ...
    @property
    def groups(self) -> list[str]: ...
    def to_bundle(self, cookie: int | None = None) -> str: ...
    def __bool__(self) -> bool: ...

@final
class Compiler:
    """A compiled model kept between changes; each change returns the minimal ``FlowDiff``."""

    def __new__(
        cls,
        model: object,
        *,
        input_format: str = "auto",
        cookie: int | None = None,
        max_flows: int | None = None,
        widen_unmatchable_port_ranges: bool = False,
        strict: str | None = None,
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
    ) -> Compiler: ...
    def add_port(self, port: Mapping[str, Any]) -> FlowDiff: ...
    def update_port(self, port: Mapping[str, Any]) -> FlowDiff: ...
    def remove_port(self, port_id: str) -> FlowDiff: ...
    def set_rules(self, group_id: str, rules: Sequence[Mapping[str, Any]]) -> FlowDiff: ...
    def add_rules(self, group_id: str, rules: Sequence[Mapping[str, Any]]) -> FlowDiff: ...
    def remove_rules(self, group_id: str, rules: Sequence[Mapping[str, Any]]) -> FlowDiff: ...
    def add_members(
        self, group_id: str, members: Mapping[str, Sequence[Any]], *, address_group: bool = False
    ) -> FlowDiff: ...
    def remove_members(
        self, group_id: str, members: Mapping[str, Sequence[Any]], *, address_group: bool = False
    ) -> FlowDiff: ...
    def set_stateful(self, group_id: str, stateful: bool) -> FlowDiff: ...
    def apply(self, batch: Iterable[Sequence[Any]]) -> FlowDiff: ...
    def result(self) -> CompileResult: ...
    def flows(self) -> list[tuple[int, int, str, str]]: ...
    def to_ofctl(self) -> str: ...

@final
class CompileResult:
    """The result of ``compile()``: flows, statistics and warnings."""

    @property
    def flows(self) -> list[tuple[int, int, str, str]]: ...
    @property
    def flow_count(self) -> int: ...
    @property
    def cookie(self) -> int: ...
    @property
    def stats(self) -> dict[str, Any]: ...
    @property
    def warnings(self) -> list[tuple[str, str]]: ...
    def flow_records(self) -> list[dict[str, Any]]: ...
    def to_ofctl(self) -> str: ...
    def write_ofctl(self, file: SupportsWrite[str] | SupportsWrite[bytes]) -> int: ...
    def diff_from(self, old: CompileResult) -> FlowDiff: ...
    def __len__(self) -> int: ...

def compile_openflow(
    model: object,
    *,
    input_format: str = "auto",
    cookie: int | None = None,
    max_flows: int | None = None,
    widen_unmatchable_port_ranges: bool = False,
    strict: str | None = None,
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

@final
class RteFlowResult:
    """The result of ``compile(target="rte_flow")``: rules, statistics, offload report."""

    @property
    def rule_count(self) -> int: ...
    @property
    def profile(self) -> str: ...
    @property
    def report(self) -> list[dict[str, Any]]: ...
    @property
    def stats(self) -> dict[str, Any]: ...
    @property
    def warnings(self) -> list[tuple[str, str]]: ...
    def to_testpmd(self, command: str = "create") -> str: ...
    def plain_drop_lines(self, port: int = 0, command: str = "validate") -> list[str]: ...
    def to_json(self) -> str: ...
    def document(self) -> dict[str, Any]: ...
    def report_text(self) -> str: ...
    def __len__(self) -> int: ...

def compile_rte_flow(
    model: object,
    *,
    input_format: str = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: str | None = None,
    profile: str = "generic",
    proxy_port: int | None = None,
    uplink_port: int | None = None,
    software_port: int | None = None,
    forward: str = "software",
    count: bool = True,
    max_rules: int | None = None,
) -> RteFlowResult: ...

@final
class RteFlowPortResult:
    """The result of ``compile_rte_flow_port``: one port's plain rules for one driver."""

    @property
    def rule_count(self) -> int: ...
    @property
    def port(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def offloadable(self) -> bool: ...
    @property
    def problem(self) -> str | None: ...
    @property
    def report(self) -> dict[str, Any]: ...
    @property
    def warnings(self) -> list[tuple[str, str]]: ...
    def to_testpmd(self, command: str = "create") -> str: ...
    def document(self) -> dict[str, Any]: ...
    def to_json(self) -> str: ...
    def report_text(self) -> str: ...
    def __len__(self) -> int: ...

def compile_rte_flow_port(
    model: object,
    port: str,
    *,
    input_format: str = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: str | None = None,
    profile: str = "net_tap",
    ethdev: int = 0,
    accept_queue: int = 0,
    software_queue: int | None,
    max_exact_ports: int = 64,
    max_rules: int | None = None,
    refused: list[str] | None = None,
    max_priority: int | None = None,
) -> RteFlowPortResult: ...

@final
class OvnResult:
    """The result of ``compile(target="ovn")``: Northbound rows, statistics, warnings."""

    @property
    def acl_count(self) -> int: ...
    @property
    def stats(self) -> dict[str, Any]: ...
    @property
    def warnings(self) -> list[tuple[str, str]]: ...
    def to_nbctl(self) -> str: ...
    def nbctl_commands(self) -> list[list[str]]: ...
    def to_json(self) -> str: ...
    def transact(self) -> list[Any]: ...
    def __len__(self) -> int: ...

def compile_ovn(
    model: object,
    *,
    input_format: str = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: str | None = None,
    with_ports: bool = False,
    switch: str = "sgf_switch",
) -> OvnResult: ...
def validate(
    model: object,
    *,
    input_format: str = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: str | None = None,
) -> tuple[list[tuple[str, str]], dict[str, int]]: ...
def evaluate(
    model: object,
    packet: str,
    *,
    port: str,
    direction: str = "ingress",
    ct: str | None = None,
    input_format: str = "auto",
    widen_unmatchable_port_ranges: bool = False,
    strict: str | None = None,
) -> dict[str, Any]: ...
