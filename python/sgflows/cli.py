"""The ``sgflows`` command line.

Every failure ends in a one-paragraph message and a non-zero exit code, never a traceback:
2 for bad input or usage, 1 for I/O problems, 70 for a bug (run with ``SGFLOWS_DEBUG=1`` to
see its traceback).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, ClassVar, Literal, NoReturn, TextIO, cast

import click

import sgflows
from sgflows.switch.defaults import DEFAULT_CONNECTIONS

LOG = logging.getLogger(__name__)

EXIT_IO = 1
EXIT_INVALID = 2
EXIT_BUG = 70

InputFormatName = Literal["auto", "json", "msgpack"]

_EPILOG = """\b
Examples:
  sgflows compile examples/two-tier.json --summary -o flows.txt
  ovs-ofctl -O OpenFlow13 --bundle add-flows br-int flows.txt
  sgflows load br-int flows.txt          # the same into an empty bridge, faster
  neutron-payload | sgflows compile - --format json
  sgflows validate model.msgpack
  sgflows diff old.json new.json -o change.bundle
  ovs-ofctl -O OpenFlow13 bundle br-int change.bundle
  sgflows compile model.json --target rte_flow --profile mlx5 --report
  sgflows diff --target ovn old.json new.json
  sgflows ovn apply model.json --db unix:/run/ovn/ovnnb_db.sock
"""


def _read_model(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        _fail(f"cannot read {path}: {e.strerror or e}", EXIT_IO)


def _unknown_keys_option(f: Any) -> Any:
    """``--unknown-keys``: what a key the model's objects may not carry is."""
    return click.option(
        "--unknown-keys",
        type=click.Choice(["error", "warn", "ignore"]),
        default=None,
        help="What a misspelt or unknown key is: error (default for the documented model), "
        "warn (default for Neutron's RPC payload: accepted, warned on stderr) or ignore.",
    )(f)


def _strict(unknown_keys: str | None) -> sgflows.UnknownKeys | None:
    return cast("sgflows.UnknownKeys | None", unknown_keys)


def _print_warnings(warnings: Any) -> None:
    for path, message in warnings:
        click.echo(f"sgflows: warning: {path + ': ' if path else ''}{message}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"sgflows: {message}", err=True)
    sys.exit(code)


def _report_model_error(source: str, err: sgflows.ModelError) -> NoReturn:
    errors: list[tuple[str, str]] = getattr(err, "errors", [])
    if isinstance(err, sgflows.FlowLimitError) or not errors:
        _fail(f"{source}: {err}", EXIT_INVALID)
    click.echo(f"sgflows: {source}: {len(errors)} problem(s) in the model:", err=True)
    for path, message in errors:
        click.echo(f"  {path}: {message}" if path else f"  {message}", err=True)
    sys.exit(EXIT_INVALID)


def _table_names(tables: Mapping[str, int]) -> dict[int, str]:
    return {number: name for name, number in tables.items()}


def _summary(source: str, result: sgflows.CompileResult, tables: Mapping[str, int]) -> str:
    stats = result.stats
    names = _table_names(tables)
    lines = [
        f"model: {source}",
        f"ports: {stats['ports']} ({stats['filtered_ports']} filtered), "
        f"security groups: {stats['groups']}, rules: {stats['rules']}",
        f"flows: {stats['flows']} (cookie {result.cookie:#x}; "
        f"{stats['duplicates']} duplicate matches merged)",
        f"policies: {stats['policies']}, conjunctions: {stats['conjunctions']}",
        "flows per table:",
    ]
    for table, count in sorted(stats["per_table"].items()):
        lines.append(f"  {table:>3} {names.get(table, '?'):<26} {count:>9}")
    return "\n".join(lines)


def _explain(result: sgflows.CompileResult) -> str:
    stats = result.stats
    per_rule: dict[str, int] = stats["per_rule"]
    fates: dict[str, list[str]] = stats["rule_fates"]
    lines = [
        f"policies: {stats['policies']} (ports with the same groups share rule flows), "
        f"conjunctions: {stats['conjunctions']}",
        "flows per rule (summed over policies; a shared flow counts for its first rule):",
    ]
    for rule in sorted(set(per_rule) | set(fates)):
        why = "; ".join(fates.get(rule, []))
        lines.append(f"  {rule:<40} {per_rule.get(rule, 0):>7}" + (f"  ({why})" if why else ""))
    return "\n".join(lines)


def _json_output(result: sgflows.CompileResult) -> str:
    import json  # here: the ofctl compile, the common command, needs no JSON

    document: dict[str, Any] = {
        "cookie": result.cookie,
        "stats": result.stats,
        "warnings": [{"path": p, "message": m} for p, m in result.warnings],
        "flows": result.flow_records(),
    }
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


# Options that mean something for one target only: given for the other, they would be
# silently ignored, so they are refused.
_TARGET_OPTIONS = {
    "openflow": ("cookie", "max_flows", "no_entry_flow", "no_normal_flow", "no_optimise",
                 "no_conjunctions", "no_share_policies", "no_shared_stage", "explain",
                 "table_overrides", "filter_local_flood"),
    "rte_flow": ("profile", "report", "proxy_port", "uplink_port", "software_port", "forward",
                 "no_count", "max_rules", "single_port", "ethdev", "accept_queue",
                 "software_queue", "no_software_queue", "max_exact_ports", "probed"),
    "ovn": ("with_ports", "switch"),
}  # fmt: skip


# The transfer layout's options and the single-port rendering's exclude each other.
_TRANSFER_OPTIONS = ("proxy_port", "uplink_port", "software_port", "forward", "no_count")
_SINGLE_PORT_OPTIONS = ("ethdev", "accept_queue", "software_queue", "no_software_queue",
                        "max_exact_ports", "probed")  # fmt: skip


#: ``--probed``: a probe's saved table narrows the single-port profile.
_PROBED_OPTION = click.option(
    "--probed",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="rte_flow --port: a table saved by `sgflows rte-flow probe --save`; the shapes the "
    "driver refused narrow the profile (their traffic goes to software), never widen it.",
)


def _probe_narrowing(path: str | None) -> dict[str, Any]:
    """``compile_rte_flow_port``'s ``refused``/``max_priority`` from a saved probe table."""
    if path is None:
        return {}
    from sgflows import rte_probe

    try:
        with open(path, encoding="utf-8") as f:
            return rte_probe.narrowing(rte_probe.from_json(f.read()))
    except (OSError, ValueError) as e:
        _fail(f"{path}: {e}", EXIT_INVALID)


def _given(ctx: click.Context, names: tuple[str, ...]) -> list[str]:
    return [
        "--" + n.replace("_", "-")
        for n in names
        if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE
    ]


def _refuse_transfer_options(ctx: click.Context) -> None:
    given = _given(ctx, _TRANSFER_OPTIONS)
    if given:
        raise click.UsageError(f"{', '.join(given)}: not with --port (transfer layout only)")


def _refuse_single_port_options(ctx: click.Context) -> None:
    given = _given(ctx, _SINGLE_PORT_OPTIONS)
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with --port")


def _refuse_other_targets_options(ctx: click.Context, target: str) -> None:
    for other, names in _TARGET_OPTIONS.items():
        if other == target:
            continue
        for name in names:
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
                flag = "--" + name.replace("_", "-").replace("table-overrides", "table")
                raise click.UsageError(f"{flag} applies to --target {other} only")


def _parse_tables(values: tuple[str, ...]) -> dict[str, int]:
    tables = dict(sgflows.DEFAULT_TABLES)
    for item in values:
        name, sep, number = item.partition("=")
        if not sep or name not in tables or not number.isdigit():
            raise click.BadParameter(
                f"{item!r}: expected ROLE=NUMBER with ROLE one of {', '.join(tables)}",
                param_hint="--table",
            )
        tables[name] = int(number)
    return tables


class _LazyGroup(click.Group):
    """A group whose agent commands are imported only when used: compiling must not need the
    agent's dependencies (the ``agent`` extra)."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "agent": ("sgflows.agent.service", "agent_command"),
        "controller": ("sgflows.agent.service", "controller_command"),
        "credentials": ("sgflows.agent.credentials_cmd", "credentials_command"),
        "status": ("sgflows.agent.service", "status_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, attr = self.lazy[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            _fail(
                f"'sgflows {cmd_name}' needs the agent's dependencies ({e.name or e}): "
                "pip install 'sgflows[agent]'",
                EXIT_INVALID,
            )
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_EPILOG,
)
@click.version_option(sgflows.__version__, prog_name="sgflows")
@click.option("-v", "--verbose", count=True, help="More logging (repeat for debug).")
def cli(verbose: int) -> None:
    """Compile Neutron-style security groups into Open vSwitch flows or DPDK rte_flow rules."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@cli.command(epilog=_EPILOG)
@click.argument("model", metavar="MODEL|-")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the flows here instead of standard output.",
)
@click.option(
    "--target",
    type=click.Choice(["openflow", "rte_flow", "ovn"]),
    default="openflow",
    show_default=True,
    help="Open vSwitch flows, DPDK rte_flow rules for port representors, or OVN "
    "Northbound port groups, address sets and ACLs.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ofctl", "testpmd", "nbctl", "json"]),
    default=None,
    help="openflow: ovs-ofctl add-flows text (default) or JSON with origins and stats; "
    "rte_flow: testpmd 'flow create' lines (default) or the structured JSON form; "
    "ovn: a shell script running one ovn-nbctl transaction (default) or an OVSDB "
    "transact request (JSON, for ovsdb-client transact).",
)
@click.option(
    "--summary",
    is_flag=True,
    help="Print ports, rules and flows per table (to stderr when flows go to stdout).",
)
@click.option(
    "--input-format",
    type=click.Choice(["auto", "json", "msgpack"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--cookie",
    type=str,
    default=None,
    help="Cookie for every flow, decimal or 0x-hex (default 0x736766).",
)
@click.option(
    "--max-flows",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse models needing more flows than this (default 5,000,000).",
)
@click.option(
    "--widen-unmatchable-port-ranges",
    is_flag=True,
    help="Like Neutron: a port range on DCCP/UDP-Lite opens the whole protocol.",
)
@_unknown_keys_option
@click.option("--no-entry-flow", is_flag=True, help="Do not emit table 0 -> classifier.")
@click.option("--no-normal-flow", is_flag=True, help="Do not emit table 94 -> NORMAL.")
@click.option("--no-optimise", is_flag=True, help="Skip the rule algebra (subsumption, merging).")
@click.option("--no-conjunctions", is_flag=True, help="Expand remote groups per member and rule.")
@click.option("--no-share-policies", is_flag=True, help="Rule flows per port, not per group set.")
@click.option(
    "--no-shared-stage",
    is_flag=True,
    help="Protocol allowances per port binding, not once per bridge (tables 74-76, 83, 84).",
)
@click.option(
    "--filter-local-flood",
    is_flag=True,
    help="Run broadcast/multicast between local VMs through their ingress rules "
    "(VM ports must be configured no-flood).",
)
@click.option(
    "--explain",
    is_flag=True,
    help="Print what each rule costs in flows, and why a rule produced none of its own.",
)
@click.option(
    "--table",
    "table_overrides",
    multiple=True,
    metavar="ROLE=NUMBER",
    help="Override a table number, e.g. --table classify=60 (repeatable).",
)
@click.option(
    "--profile",
    type=click.Choice((*sgflows.RTE_FLOW_PROFILES, "net_tap")),
    default=None,
    help="rte_flow: the driver profile (docs/rte_flow.md); default generic, or net_tap with "
    "--port.",
)
@click.option(
    "--port",
    "single_port",
    metavar="PORT",
    default=None,
    help="rte_flow: render only this port as plain (non-transfer) rules on one ethdev port, "
    "for a single-port profile (net_tap, full).",
)
@click.option(
    "--ethdev",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="rte_flow --port: the ethdev port id the rules are created on.",
)
@click.option(
    "--accept-queue",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="rte_flow --port: the queue accepted traffic from the VM goes to.",
)
@click.option(
    "--software-queue",
    type=click.IntRange(0, 65535),
    default=1,
    show_default=True,
    help="rte_flow --port: the queue the software switch serves (traffic the driver cannot "
    "decide).",
)
@click.option(
    "--no-software-queue",
    is_flag=True,
    help="rte_flow --port: there is no software path; a port needing one is not offloadable.",
)
@click.option(
    "--max-exact-ports",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="rte_flow --port: a port block becomes at most this many exact-port rules on a "
    "driver without port masks (beyond: software).",
)
@_PROBED_OPTION
@click.option(
    "--report",
    is_flag=True,
    help="rte_flow: print the offload report (to stderr when rules go to stdout).",
)
@click.option(
    "--proxy-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="rte_flow: ethdev port id of the transfer proxy (default: the model's, else 0).",
)
@click.option(
    "--uplink-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="rte_flow: ethdev port id of the uplink (default: the model's, else 0).",
)
@click.option(
    "--software-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="rte_flow, port_id profiles (ntnic): where software-bound traffic goes.",
)
@click.option(
    "--forward",
    type=click.Choice(["software", "uplink"]),
    default="software",
    show_default=True,
    help="rte_flow: where accepted egress traffic goes.",
)
@click.option("--no-count", is_flag=True, help="rte_flow: no count action.")
@click.option(
    "--with-ports",
    is_flag=True,
    help="ovn: also create the logical switch and the model's ports (standalone use, tests).",
)
@click.option(
    "--switch",
    default="sgf_switch",
    show_default=True,
    help="ovn, with --with-ports: the logical switch's name.",
)
@click.option(
    "--max-rules",
    type=click.IntRange(min=1),
    default=None,
    help="rte_flow: refuse models needing more rules (default 1,000,000).",
)
def compile(
    model: str,
    output: str | None,
    target: str,
    fmt: str | None,
    summary: bool,
    input_format: str,
    cookie: str | None,
    max_flows: int | None,
    widen_unmatchable_port_ranges: bool,
    unknown_keys: str | None,
    no_entry_flow: bool,
    no_normal_flow: bool,
    no_optimise: bool,
    no_conjunctions: bool,
    no_share_policies: bool,
    no_shared_stage: bool,
    filter_local_flood: bool,
    explain: bool,
    table_overrides: tuple[str, ...],
    profile: str | None,
    single_port: str | None,
    ethdev: int,
    accept_queue: int,
    software_queue: int,
    no_software_queue: bool,
    max_exact_ports: int,
    probed: str | None,
    report: bool,
    proxy_port: int | None,
    uplink_port: int | None,
    software_port: int | None,
    forward: str,
    no_count: bool,
    max_rules: int | None,
    with_ports: bool,
    switch: str,
) -> None:
    """Compile MODEL (JSON or msgpack file, or - for stdin) to OpenFlow, rte_flow or OVN."""
    _refuse_other_targets_options(click.get_current_context(), target)
    if target == "ovn":
        if fmt in ("ofctl", "testpmd"):
            raise click.BadParameter("ovn renders as nbctl or json", param_hint="--format")
        _compile_ovn(
            model,
            output=output,
            fmt=fmt or "nbctl",
            summary=summary,
            input_format=input_format,
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            unknown_keys=unknown_keys,
            with_ports=with_ports,
            switch=switch,
        )
        return
    if fmt == "nbctl":
        raise click.BadParameter("nbctl is for --target ovn", param_hint="--format")
    if target == "rte_flow":
        if fmt == "ofctl":
            raise click.BadParameter("rte_flow renders as testpmd or json", param_hint="--format")
        if single_port is not None:
            _refuse_transfer_options(click.get_current_context())
            _compile_rte_flow_port(
                model,
                single_port,
                output=output,
                fmt=fmt or "testpmd",
                report=report or summary,
                input_format=input_format,
                widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
                unknown_keys=unknown_keys,
                profile=profile or "net_tap",
                ethdev=ethdev,
                accept_queue=accept_queue,
                software_queue=None if no_software_queue else software_queue,
                max_exact_ports=max_exact_ports,
                max_rules=max_rules,
                narrowing=_probe_narrowing(probed),
            )
            return
        _refuse_single_port_options(click.get_current_context())
        if profile == "net_tap":
            raise click.BadParameter(
                "net_tap is a single-port profile: give --port", param_hint="--profile"
            )
        profile = profile or "generic"
        _compile_rte_flow(
            model,
            output=output,
            fmt=fmt or "testpmd",
            report=report or summary,
            input_format=input_format,
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            unknown_keys=unknown_keys,
            profile=profile,
            proxy_port=proxy_port,
            uplink_port=uplink_port,
            software_port=software_port,
            forward=forward,
            count=not no_count,
            max_rules=max_rules,
        )
        return
    if fmt == "testpmd":
        raise click.BadParameter("testpmd is for --target rte_flow", param_hint="--format")
    tables = _parse_tables(table_overrides)
    cookie_value = _parse_cookie(cookie)
    source = "<stdin>" if model == "-" else model
    data = _read_model(model)
    try:
        result = sgflows.compile(
            data,
            input_format=cast(InputFormatName, input_format),
            cookie=cookie_value,
            max_flows=max_flows,
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            strict=_strict(unknown_keys),
            entry_flow=not no_entry_flow,
            normal_flow=not no_normal_flow,
            tables=tables,
            optimise_rules=not no_optimise,
            conjunctions=not no_conjunctions,
            share_policies=not no_share_policies,
            shared_stage=not no_shared_stage,
            filter_local_flood=filter_local_flood,
        )
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    _print_warnings(result.warnings)
    if fmt in (None, "ofctl"):
        # Streamed: at 10,000 ports the text alone is ~18 MB, twice over as one str.
        _write_output(result.write_ofctl, output)
    else:
        _write_output(_json_output(result), output)
    if summary:
        click.echo(
            _summary(source, result, tables) + (f"\nwritten to {output}" if output else ""),
            err=output is None,
        )
    if explain:
        click.echo(_explain(result), err=output is None)
    _leave_to_exit(result)


def _parse_cookie(cookie: str | None) -> int | None:
    """``--cookie``: decimal or 0x-hex, 64 bits."""
    if cookie is None:
        return None
    try:
        value = int(cookie, 0)
    except ValueError:
        raise click.BadParameter(f"{cookie!r} is not an integer", param_hint="--cookie") from None
    if not 0 <= value < 2**64:
        raise click.BadParameter("must fit in 64 bits", param_hint="--cookie")
    return value


def _write_output(text: str | Callable[[BinaryIO | TextIO], object], output: str | None) -> None:
    """Writes ``text`` to ``output`` or stdout, or lets ``text(file)`` write itself into a
    binary file (the ofctl text: 18 MB at 10,000 ports, written as bytes without a text
    layer's copy)."""
    if output:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            if isinstance(text, str):
                with open(output, "w", encoding="utf-8") as f:
                    f.write(text)
            else:
                with open(output, "wb") as b:
                    text(b)
        except OSError as e:
            _fail(f"cannot write {output}: {e.strerror or e}", EXIT_IO)
    elif isinstance(text, str):
        sys.stdout.write(text)
    else:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a stdout replaced by a text-only stream
            text(sys.stdout)
            return
        # What the text layer holds goes first; then the bytes into the same buffer.
        sys.stdout.flush()
        text(buffer)


def _compile_rte_flow(
    model: str,
    *,
    output: str | None,
    fmt: str,
    report: bool,
    input_format: str,
    widen_unmatchable_port_ranges: bool,
    unknown_keys: str | None,
    profile: str,
    proxy_port: int | None,
    uplink_port: int | None,
    software_port: int | None,
    forward: str,
    count: bool,
    max_rules: int | None,
) -> None:
    """``compile --target rte_flow``: testpmd lines or JSON, and the offload report."""
    source = "<stdin>" if model == "-" else model
    data = _read_model(model)
    try:
        result = sgflows.compile(
            data,
            target="rte_flow",
            input_format=cast(InputFormatName, input_format),
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            strict=_strict(unknown_keys),
            profile=profile,
            proxy_port=proxy_port,
            uplink_port=uplink_port,
            software_port=software_port,
            forward=cast(Literal["software", "uplink"], forward),
            count=count,
            max_rules=max_rules,
        )
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    _print_warnings(result.warnings)
    _write_output(result.to_testpmd() if fmt == "testpmd" else result.to_json(), output)
    if report:
        text = f"model: {source}\n" + result.report_text().rstrip("\n")
        click.echo(text + (f"\nwritten to {output}" if output else ""), err=output is None)


def _compile_rte_flow_port(
    model: str,
    port: str,
    *,
    output: str | None,
    fmt: str,
    report: bool,
    input_format: str,
    widen_unmatchable_port_ranges: bool,
    unknown_keys: str | None,
    profile: str,
    ethdev: int,
    accept_queue: int,
    software_queue: int | None,
    max_exact_ports: int,
    max_rules: int | None,
    narrowing: Mapping[str, Any],
) -> None:
    """``compile --target rte_flow --port P``: one port's plain rules, or a clear refusal
    when the port is not offloadable."""
    source = "<stdin>" if model == "-" else model
    if profile not in sgflows.RTE_FLOW_PORT_PROFILES:
        raise click.BadParameter(
            f"{profile} is a transfer profile; with --port use one of "
            f"{', '.join(sgflows.RTE_FLOW_PORT_PROFILES)}",
            param_hint="--profile",
        )
    data = _read_model(model)
    try:
        result = sgflows.compile_rte_flow_port(
            data,
            port,
            profile=profile,
            ethdev=ethdev,
            accept_queue=accept_queue,
            software_queue=software_queue,
            max_exact_ports=max_exact_ports,
            input_format=cast(InputFormatName, input_format),
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            strict=_strict(unknown_keys),
            max_rules=max_rules,
            **narrowing,
        )
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    _print_warnings(result.warnings)
    if report or not result.offloadable:
        text = f"model: {source}\n" + result.report_text().rstrip("\n")
        click.echo(text, err=output is None or not result.offloadable)
    if not result.offloadable:
        _fail(f"port {port} is not offloadable on {profile}: {result.problem}", EXIT_INVALID)
    _write_output(result.to_testpmd() if fmt == "testpmd" else result.to_json(), output)


def _compile_ovn(
    model: str,
    *,
    output: str | None,
    fmt: str,
    summary: bool,
    input_format: str,
    widen_unmatchable_port_ranges: bool,
    unknown_keys: str | None,
    with_ports: bool,
    switch: str,
) -> None:
    """``compile --target ovn``: an ovn-nbctl script or an OVSDB transact request."""
    source = "<stdin>" if model == "-" else model
    data = _read_model(model)
    try:
        result = sgflows.compile(
            data,
            target="ovn",
            input_format=cast(InputFormatName, input_format),
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            strict=_strict(unknown_keys),
            with_ports=with_ports,
            switch=switch,
        )
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    _print_warnings(result.warnings)
    _write_output(result.to_nbctl() if fmt == "nbctl" else result.to_json(), output)
    if summary:
        stats = result.stats
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(stats["per_kind"].items()))
        text = (
            f"model: {source}\nrules: {stats['rules']}\nACLs: {stats['acls']} ({kinds})\n"
            f"port groups: {stats['port_groups']}\naddress sets: {stats['address_sets']}"
        )
        click.echo(text + (f"\nwritten to {output}" if output else ""), err=output is None)


@cli.command(epilog=_EPILOG)
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW|-")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the bundle here.")
@click.option("--cookie", type=str, default=None, help="Cookie of both compiles.")
@click.option(
    "--widen-unmatchable-port-ranges",
    is_flag=True,
    help="Like Neutron: a port range on DCCP/UDP-Lite opens the whole protocol.",
)
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 1 when the flows differ, 0 when they do not (as `git diff --exit-code`).",
)
@click.option(
    "--target",
    type=click.Choice(["openflow", "ovn"]),
    default="openflow",
    show_default=True,
    help="openflow: an ovs-ofctl bundle; ovn: the Northbound rows that change.",
)
@_unknown_keys_option
def diff(
    old: str,
    new: str,
    output: str | None,
    cookie: str | None,
    widen_unmatchable_port_ranges: bool,
    exit_code: bool,
    target: str,
    unknown_keys: str | None,
) -> None:
    """Compile OLD and NEW and print what changes as `ovs-ofctl bundle` input.

    Apply it atomically with `ovs-ofctl -O OpenFlow13 bundle BRIDGE FILE`. Ids in the flows
    are derived from content, so only what the change reaches differs. With `--target ovn`,
    the Northbound rows (address sets, port groups and their ACLs) that differ, one a line.
    """
    if target == "ovn":
        _diff_ovn(old, new, output, widen_unmatchable_port_ranges, exit_code, unknown_keys)
        return
    cookie_value = _parse_cookie(cookie)
    results = []
    for path in (old, new):
        source = "<stdin>" if path == "-" else path
        try:
            results.append(
                sgflows.compile(
                    _read_model(path),
                    cookie=cookie_value,
                    widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
                    strict=_strict(unknown_keys),
                )
            )
        except sgflows.ModelError as e:
            _report_model_error(source, e)
        except ValueError as e:
            _fail(str(e), EXIT_INVALID)
    for result in results:
        _print_warnings(result.warnings)
    changes = results[1].diff_from(results[0])
    _write_output(changes.to_bundle(), output)
    click.echo(
        f"{changes.added} added, {changes.modified} modified, {changes.removed} removed "
        f"(of {results[1].flow_count} flows)",
        err=output is None,
    )
    if changes:
        click.echo(_diff_summary(changes), err=output is None)
    if exit_code and changes:
        sys.exit(1)


def _compile_ovn_rows(path: str, widen: bool, unknown_keys: str | None) -> sgflows.OvnResult:
    source = "<stdin>" if path == "-" else path
    try:
        return sgflows.compile(
            _read_model(path),
            target="ovn",
            widen_unmatchable_port_ranges=widen,
            strict=_strict(unknown_keys),
        )
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)


def _diff_ovn(
    old: str,
    new: str,
    output: str | None,
    widen: bool,
    exit_code: bool,
    unknown_keys: str | None,
) -> None:
    """``diff --target ovn``: the row-level changes between the two compiles."""
    from sgflows import ovn

    before, after = (_compile_ovn_rows(p, widen, unknown_keys) for p in (old, new))
    for result in (before, after):
        _print_warnings(result.warnings)
    changes = ovn.diff_rows(ovn.rows_of(before), ovn.rows_of(after))
    _write_output("".join(f"{c}\n" for c in changes), output)
    counts = {k: sum(c.kind == k for c in changes) for k in ("added", "modified", "removed")}
    click.echo(", ".join(f"{n} {k}" for k, n in counts.items()) + " rows", err=output is None)
    if exit_code and changes:
        sys.exit(1)


@cli.group()
def ovn() -> None:
    """The OVN target's live operations (Northbound database)."""


@ovn.command("apply", epilog=_EPILOG)
@click.argument("model", metavar="MODEL|-")
@click.option("--db", required=True, help="The Northbound database: unix:PATH or tcp:HOST:PORT.")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to connect.")
@click.option(
    "--widen-unmatchable-port-ranges",
    is_flag=True,
    help="Like Neutron: a port range on DCCP/UDP-Lite opens the whole protocol.",
)
@_unknown_keys_option
def ovn_apply(
    model: str,
    db: str,
    dry_run: bool,
    timeout: float,
    widen_unmatchable_port_ranges: bool,
    unknown_keys: str | None,
) -> None:
    """Sync the rows sgflows owns in a live Northbound database to MODEL's, in one transaction.

    Only rows with external_ids:owner=sgflows are changed or removed; the logical switch ports
    the port groups name must exist (the deployment creates them).
    """
    from sgflows import ovn as ovn_rows

    result = _compile_ovn_rows(model, widen_unmatchable_port_ranges, unknown_keys)
    _print_warnings(result.warnings)
    try:
        report = ovn_rows.apply(result, db, timeout=timeout, dry_run=dry_run)
    except ovn_rows.ApplyError as e:
        _fail(str(e), EXIT_IO)
    for change in report.changes:
        click.echo(str(change))
    click.echo(("would change: " if dry_run else "applied: ") + str(report), err=True)


def _diff_summary(changes: sgflows.FlowDiff) -> str:
    """Which ports' and groups' flows a diff touches (shared flows are neither)."""

    def names(items: list[str]) -> str:
        shown = ", ".join(items[:10])
        return shown + (f" and {len(items) - 10} more" if len(items) > 10 else "") or "none"

    return f"ports: {names(changes.ports)}; groups: {names(changes.groups)}"


@cli.command(epilog=_EPILOG)
@click.argument("bridge", metavar="BRIDGE")
@click.argument("flows", metavar="FLOWS|-")
@click.option(
    "--connections",
    type=click.IntRange(1, 64),
    default=DEFAULT_CONNECTIONS,
    show_default=True,
    help="ovs-ofctl connections loading at once.",
)
def load(bridge: str, flows: str, connections: int) -> None:
    """Load compiled FLOWS into BRIDGE, empty in the firewall's tables, over several connections.

    Faster than one `ovs-ofctl --bundle add-flows` on a bridge with many ports (the switch
    reads 50 messages per connection per turn of its loop). Each connection commits its own
    bundle and the entry flows go last, so no packet meets a partial load. Refuses a bridge
    that already has flows in those tables: use `ovs-ofctl --bundle add-flows` (or `diff`).
    """
    from sgflows.switch.coldload import ColdLoadError, cold_load

    try:
        if flows == "-":
            text = sys.stdin.read()
        else:
            with open(flows, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {flows}: {getattr(e, 'strerror', None) or e}", EXIT_IO)
    try:
        cold_load(bridge, text, connections=connections)
    except ColdLoadError as e:
        _fail(str(e), EXIT_IO)
    click.echo(f"{bridge}: loaded {flows}", err=True)


@cli.command(epilog=_EPILOG)
@click.argument("model", metavar="MODEL|-")
@click.option(
    "--input-format",
    type=click.Choice(["auto", "json", "msgpack"]),
    default="auto",
    show_default=True,
)
@click.option(
    "--widen-unmatchable-port-ranges",
    is_flag=True,
    help="Like Neutron: a port range on DCCP/UDP-Lite opens the whole protocol.",
)
@_unknown_keys_option
def validate(
    model: str, input_format: str, widen_unmatchable_port_ranges: bool, unknown_keys: str | None
) -> None:
    """Check MODEL and list every problem (exit 2 if there is any)."""
    source = "<stdin>" if model == "-" else model
    data = _read_model(model)
    try:
        warnings, summary = sgflows.validate(
            data,
            input_format=input_format,  # type: ignore[arg-type]
            widen_unmatchable_port_ranges=widen_unmatchable_port_ranges,
            strict=_strict(unknown_keys),
        )
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    _print_warnings(warnings)
    click.echo(
        f"{source}: valid: {summary['ports']} ports, {summary['groups']} security groups "
        f"({summary['stateless_groups']} stateless), {summary['rules']} rules"
    )


def _trace_block(source: str, d: sgflows.Evaluation, bridge: str, uplink: int | None) -> str:
    kind = "stateful" if d.stateful else "stateless"
    if not d.filtered:
        kind = "unfiltered"
    state = f", conntrack {d.ct}" if d.conntrack else ""
    lines = [
        f"model:   {source}",
        f"port:    {d.port} ({kind}"
        + (f", ofport {d.ofport}" if d.ofport is not None else "")
        + (f", local VLAN {d.local_vlan}" if d.local_vlan is not None else "")
        + ")",
        f"packet:  {d.direction} {d.packet}{state}",
        f"verdict: {d.verdict.upper()}",
        f"reason:  {d.reason}" + (f": {d.rule_text}" if d.rule_text else ""),
    ]
    others = [r for r in d.matching_rules if d.rule is None or r != f"{d.rule[0]}[{d.rule[1]}]"]
    if others:
        lines.append(f"also matching: {', '.join(others)}")
    if d.ofport is not None and d.local_vlan is not None:  # bound to a switch port
        ct_next = "".join(f" --ct-next {s}" for s in d.ct_next)
        flow = d.trace_flow(uplink if uplink is not None else "UPLINK")
        lines.append(f"replay:  ovs-appctl ofproto/trace {bridge} '{flow}'{ct_next}")
    return "\n".join(lines)


@cli.command(
    epilog="""\b
Examples:
  sgflows trace model.json --port vm1 --packet 'tcp,nw_src=10.0.0.5,tp_dst=22'
  sgflows trace model.json --port vm1 --direction egress --packet 'udp6,tp_src=546,tp_dst=547'
  sgflows trace model.json --port vm1 --packet 'tcp,tp_src=22' --ct est,rpl --json
"""
)
@click.argument("model", metavar="MODEL|-")
@click.option("--port", "port_id", required=True, help="The port's id in the model.")
@click.option(
    "--packet",
    required=True,
    help="ovs-ofctl flow syntax, e.g. 'tcp,nw_src=10.0.0.5,tp_dst=22'; missing fields "
    "come from the port (its MAC and first address at the VM's end).",
)
@click.option(
    "--direction",
    type=click.Choice(["ingress", "egress"]),
    default="ingress",
    show_default=True,
    help="To the VM (ingress) or from it (egress).",
)
@click.option(
    "--ct",
    "ct_state",
    default=None,
    metavar="STATE",
    help="Connection state on stateful ports: new (default), est, est,rpl, rel, rel,rpl, inv.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (verdict, reason, ...).")
@click.option(
    "--bridge",
    default="br-int",
    show_default=True,
    help="Bridge name in the printed ofproto/trace command.",
)
@click.option(
    "--uplink",
    type=int,
    default=None,
    help="OpenFlow port ingress traffic enters by, in the printed command.",
)
@click.option(
    "--input-format",
    type=click.Choice(["auto", "json", "msgpack"]),
    default="auto",
    show_default=True,
)
@_unknown_keys_option
def trace(
    model: str,
    port_id: str,
    packet: str,
    direction: str,
    ct_state: str | None,
    as_json: bool,
    bridge: str,
    uplink: int | None,
    input_format: str,
    unknown_keys: str | None,
) -> None:
    """Explain the verdict MODEL gives PACKET at a port, from the model alone."""
    source = "<stdin>" if model == "-" else model
    data = _read_model(model)
    try:
        d = sgflows.evaluate(
            data,
            packet,
            port=port_id,
            direction=direction,  # type: ignore[arg-type]
            ct=ct_state,
            input_format=input_format,  # type: ignore[arg-type]
            strict=_strict(unknown_keys),
        )
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    _print_warnings(d.warnings)
    if as_json:
        import json

        document = d.to_dict()
        document["ofproto_trace"] = {
            "flow": d.trace_flow(uplink if uplink is not None else "UPLINK"),
            "ct_next": d.ct_next,
        }
        click.echo(json.dumps(document, indent=1, sort_keys=True))
    else:
        click.echo(_trace_block(source, d, bridge, uplink))


#: Results a command is done with, left for the end of the process to reclaim: a list only
#: while `console_main` (the installed `sgflows` command, `python -m sgflows`) runs the
#: command, since the process ends right after it; `None` when the commands are run otherwise
#: (`main` called by a program, click's test runner), so nothing is kept then.
_LEFT_TO_EXIT: list[object] | None = None


def _leave_to_exit(result: object) -> None:
    """Keeps `result` alive until the process ends, so that `console_main` can skip freeing it.

    Freeing 134,000 compiled flows takes 30-70 ms at 10,000 ports — a tenth of the whole
    command — only for the process to exit right after.
    """
    if _LEFT_TO_EXIT is not None:
        _LEFT_TO_EXIT.append(result)


def _exit_skipping_teardown(code: int) -> None:
    """Ends the process now, without freeing what a command left (mypy's ``hard_exit`` does
    the same): flushes the standard streams and the log handlers first, and returns — the
    normal exit then follows — if a flush fails, so a broken pipe is reported as before."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    logging.shutdown()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI and returns its exit code, any surprise turned into a message, not a
    trace. For programs that call the CLI: it always returns, and frees what it made."""
    return _run(argv)


def console_main() -> int:
    """The process's entry point (the `sgflows` command, ``python -m sgflows``): `main`, but
    a command that left a large result ends the process without freeing it — unless a
    tracer or profiler is attached (coverage, cProfile), which must see the normal exit."""
    global _LEFT_TO_EXIT
    _LEFT_TO_EXIT = []
    try:
        code = _run(None)
        if _LEFT_TO_EXIT and sys.gettrace() is None and sys.getprofile() is None:
            _exit_skipping_teardown(code)
    finally:
        _LEFT_TO_EXIT = None
    return code


def _run(argv: list[str] | None) -> int:
    """The CLI's exit code, every failure turned into a message."""
    try:
        cli.main(args=argv, prog_name="sgflows", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_IO)
    except KeyboardInterrupt:
        click.echo("sgflows: interrupted", err=True)
        return 130
    except Exception as e:  # the last line of defence: no traceback for users
        if os.environ.get("SGFLOWS_DEBUG"):
            traceback.print_exc()
        click.echo(
            f"sgflows: internal error: {type(e).__name__}: {e} "
            "(please report it; SGFLOWS_DEBUG=1 shows the traceback)",
            err=True,
        )
        return EXIT_BUG
    return 0


@cli.group("rte-flow")
def rte_flow_group() -> None:
    """DPDK rte_flow ports: what a driver takes (docs/rte_flow.md, "Single port")."""


@rte_flow_group.command("probe")
@click.option(
    "--vdev",
    required=True,
    help="The DPDK port to probe, as testpmd's --vdev, e.g. net_tap0,iface=sgfprobe0.",
)
@click.option("--save", type=click.Path(dir_okay=False), help="Write the table as JSON here.")
@click.option("--testpmd", default="dpdk-testpmd", show_default=True, help="testpmd binary.")
@click.option(
    "--via",
    type=click.Choice(["auto", "installer", "testpmd"]),
    default="auto",
    show_default=True,
    help="DPDK's API through the sgflows-rte-flow installer (Cargo feature dpdk), or a "
    "private testpmd; auto: the installer when it is built.",
)
def rte_flow_probe(vdev: str, save: str | None, testpmd: str, via: str) -> None:
    """Create one trial rule per shape the single-port rendering can emit on a private
    DPDK port, and show what the driver created next to what the profile claims."""
    import subprocess

    from sgflows import rte_install, rte_probe

    if via == "auto":
        try:
            rte_install.find_binary()
            via = "installer"
        except rte_install.InstallerMissing:
            via = "testpmd"
    try:
        if via == "installer":
            caps = rte_probe.run_installer(vdev)
        else:
            caps = rte_probe.run(vdev, testpmd=testpmd)
    except FileNotFoundError as e:
        _fail(str(e), EXIT_IO)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        _fail(f"{via} on {vdev}: {e}", EXIT_IO)
    click.echo(rte_probe.render(caps), nl=False)
    if save:
        _write_output(rte_probe.to_json(caps), save)


@rte_flow_group.command("show")
@click.argument("table", type=click.Path(exists=True, dir_okay=False))
def rte_flow_show(table: str) -> None:
    """Print a probe table saved by `probe --save`, and what it narrows (the shapes whose
    traffic a rendering with `--probed TABLE` sends to software)."""
    from sgflows import rte_probe

    try:
        with open(table, encoding="utf-8") as f:
            caps = rte_probe.from_json(f.read())
    except (OSError, ValueError) as e:
        _fail(f"{table}: {e}", EXIT_INVALID)
    click.echo(rte_probe.render(caps), nl=False)
    narrowed = rte_probe.narrowing(caps)
    click.echo(f"narrows the profile by: {', '.join(narrowed['refused']) or 'nothing'}")
    if narrowed["max_priority"] is not None:
        click.echo(f"highest priority: {narrowed['max_priority']}")


def _port_rules(
    model: str,
    port: str,
    profile: str,
    software_queue: int | None,
    narrowing: Mapping[str, Any],
) -> list[Any]:
    """The structured rules of one port, or a clear refusal (not offloadable, bad model)."""
    source = "<stdin>" if model == "-" else model
    try:
        result = sgflows.compile_rte_flow_port(
            _read_model(model), port, profile=profile, software_queue=software_queue,
            **narrowing,
        )  # fmt: skip
    except sgflows.ModelError as e:
        _report_model_error(source, e)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    if not result.offloadable:
        _fail(f"{source}: port {port} is not offloadable on {profile}: {result.problem}; "
              "the install refuses", EXIT_INVALID)  # fmt: skip
    rules: list[Any] = result.document()["rules"]
    return rules


def _install_summary(what: str, answer: Mapping[str, Any]) -> str:
    ms = float(answer.get("seconds", 0.0)) * 1000
    if answer.get("ok"):
        keys = ("rx_queues", "tx_queues", "created", "kept", "destroyed")
        parts = [f"{k} {answer[k]}" for k in keys if k in answer]
        return f"{what}: {', '.join(parts)} in {ms:.1f} ms"
    if "failed_rule" in answer:
        return (f"{what} refused at rule {answer['failed_rule']}: {answer.get('error')}; "
                f"rolled back {answer.get('rolled_back', 0)} of {answer.get('created', 0)} "
                "created, the port keeps its previous rules")  # fmt: skip
    return f"{what} failed: {answer.get('error') or answer.get('destroy_errors')}"


@rte_flow_group.command("install")
@click.argument("model")
@click.option("--port", "port", required=True, help="The sgflows port whose rules to install.")
@click.option(
    "--vdev", required=True, help="The DPDK port, as EAL's --vdev, e.g. net_tap0,iface=tap0."
)
@click.option("--profile", default="net_tap", show_default=True, help="Single-port profile.")
@click.option(
    "--software-queue", type=int, default=1, show_default=True, help="The software queue."
)
@click.option("--update", "update_model", help="Then move the port to this model's rules.")
@click.option("--as-json", is_flag=True, help="Print the installer's answers as JSON lines.")
@_PROBED_OPTION
def rte_flow_install(
    model: str,
    port: str,
    vdev: str,
    profile: str,
    software_queue: int,
    update_model: str | None,
    as_json: bool,
    probed: str | None,
) -> None:
    """Install PORT's rules of MODEL on a DPDK port through DPDK's API, all-or-nothing
    (sgflows-rte-flow, Cargo feature dpdk), optionally update them to another model's, and
    report. The rules are removed when the command ends: DPDK's flows belong to the process."""
    from sgflows import rte_install

    narrowing = _probe_narrowing(probed)
    rules = _port_rules(model, port, profile, software_queue, narrowing)
    update = (
        _port_rules(update_model, port, profile, software_queue, narrowing)
        if update_model
        else None
    )
    answers: list[tuple[str, dict[str, Any]]] = []
    try:
        with rte_install.Installer(
            rte_install.eal_args(vdev), rx_queues=max(2, software_queue + 1)
        ) as inst:
            # The tx queues follow the rx queues (net_tap refuses fewer): say what DPDK gave.
            rxq, txq = inst.queues
            started = {"ok": True, "rx_queues": rxq, "tx_queues": txq, "seconds": inst.init_seconds}
            installed = inst.install(port, rules)
            answers += [
                (f"start {vdev}", started),
                (f"install {port} ({len(rules)} rules)", installed),
            ]
            if update is not None and installed.get("ok"):
                answers.append((f"update {port} ({len(update)} rules)", inst.update(port, update)))
            answers.append(("remove", inst.remove(port) if installed.get("ok") else {}))
    except rte_install.InstallerMissing as e:
        _fail(str(e), EXIT_IO)
    except rte_install.InstallerError as e:
        _fail(f"{vdev}: {e}", EXIT_IO)
    import json

    for what, answer in answers:
        if answer:
            click.echo(json.dumps(answer) if as_json else _install_summary(what, answer))
    if not all(a.get("ok") for w, a in answers if a or w != "remove"):
        sys.exit(EXIT_INVALID)


# Last, so that every command group above is defined when run as `python -m sgflows.cli`.
if __name__ == "__main__":
    sys.exit(console_main())
