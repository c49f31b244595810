"""Load a whole compile into an empty bridge over several OpenFlow connections at once.

Why: ovs-vswitchd's main thread reads at most 50 OpenFlow messages from one connection per
turn of its loop (``ofconn_run``), and with the userspace datapath every turn also polls
every tap/internal port (``tun_chr_poll``/``tun_chr_read_iter`` lead ``perf``). One flow is
one message, so one ``ovs-ofctl --bundle add-flows`` of the p1000 compile (15,510 flows)
takes ~310 turns, each paying for 1,000 ports. Several connections get 50 messages each per
turn: K connections need K times fewer turns (``docs/economy.md``, "Loading into a bridge with
many ports").

Safety: each connection commits its own bundle, so the load as a whole is not one
transaction. It stays fail-closed because the flows that lead packets into the pipeline go
last, in one bundle of their own, after every other bundle has committed: before that commit
no packet reaches the new flows. The entry is table 0 when the compile has its entry flow
(standalone: one flow), else the per-port classify table 60 (driver mode, where table 0 is the
agent's and already leads to 60). That holds only while the other tables are empty (old flows
there would mix with new ones under the old entry), so :func:`cold_load` refuses a bridge
with flows in any table it loads besides the entry table (the agent's own flows there are
fine: the entry bundle adds to them atomically). For a bridge that already holds our flows
use one bundle. :class:`~sgflows.switch.flowstate.FlowState` (the driver and the agent) cold
loads its first install through :func:`load_parallel` when the dump it reads anyway shows those
tables empty, with its own ``ovs-ofctl`` runner (the agent's privileged helper in driver mode).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from sgflows.switch.defaults import DEFAULT_CONNECTIONS

__all__ = [
    "DEFAULT_CONNECTIONS",
    "ColdLoadError",
    "cold_load",
    "entry_table",
    "load_parallel",
    "split_for_cold_load",
    "tables_of",
]

#: The table that leads packets into the firewall when the compile has no table-0 flow.
CLASSIFY_TABLE = 60
#: The OpenFlow version of the loads (bundles need 1.4+ or the ONF extension).
OPENFLOW = "OpenFlow15"

_TABLE = re.compile(r"(?:^|,)\s*table=(\d+)")


class ColdLoadError(RuntimeError):
    """The bridge is not empty where we load, or ``ovs-ofctl`` refused a part."""


def _table_of(line: str) -> int:
    match = _TABLE.search(line.split(" actions=", 1)[0])
    return int(match.group(1)) if match else 0


def split_for_cold_load(text: str, connections: int) -> tuple[list[str], str]:
    """Split ``add-flows`` text into ``connections`` parts dealt round-robin and the entry part.

    Every flow line lands in exactly one part; the entry part holds the flows of
    :func:`entry_table` (comments and blank lines are dropped).
    """
    return _split(_flow_lines(text), connections)


def _split(lines: list[tuple[int, str]], connections: int) -> tuple[list[str], str]:
    if connections < 1:
        raise ValueError("connections must be at least 1")
    entry_at = _entry_of({table for table, _ in lines})
    body = [line for table, line in lines if table != entry_at]
    entry = [line for table, line in lines if table == entry_at]
    parts = [body[i::connections] for i in range(connections)]
    return ["".join(f"{line}\n" for line in part) for part in parts if part], "".join(
        f"{line}\n" for line in entry
    )


def _flow_lines(text: str) -> list[tuple[int, str]]:
    """``(table, stripped line)`` of every flow line: one pass over the text, because at p1000
    each pass costs ~15 ms of Python before the first ``ovs-ofctl`` can start."""
    lines: list[tuple[int, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append((_table_of(stripped), stripped))
    return lines


def _entry_of(tables: set[int]) -> int:
    return 0 if 0 in tables else CLASSIFY_TABLE


def entry_table(text: str) -> int:
    """Table 0 if ``text`` has flows there (the compile's entry flow), else table 60."""
    return _entry_of(tables_of(text))


def tables_of(text: str) -> set[int]:
    """The tables the flow lines of ``text`` are in."""
    return {table for table, _ in _flow_lines(text)}


def cold_load(
    bridge: str,
    text: str,
    *,
    connections: int = DEFAULT_CONNECTIONS,
    env: Mapping[str, str] | None = None,
    ofctl: Sequence[str] = ("ovs-ofctl",),
    timeout: float = 600.0,
) -> None:
    """Add every flow of ``text`` to ``bridge`` over ``connections`` parallel bundles, entry last.

    ``ofctl`` is the command that runs ``ovs-ofctl`` (a privileged helper's prefix may come
    first); ``env`` its environment (e.g. ``OVS_RUNDIR`` of a private switch). Raises
    :class:`ColdLoadError` when the bridge already has flows in a table of ``text`` other
    than its :func:`entry_table`, or when a part is refused; the entry part is then never sent,
    so no packet reaches a partial load.
    """
    base = [*ofctl, "-O", OPENFLOW]
    lines = _flow_lines(text)
    tables = {table for table, _ in lines}
    _require_empty(base, bridge, tables - {_entry_of(tables)}, env, timeout)

    def add_flows(part: str) -> None:
        _run([*base, "--bundle", "add-flows", bridge, "-"], part, env, timeout)

    _load_parts(add_flows, *_split(lines, connections))


def load_parallel(
    add_flows: Callable[[str], None], text: str, connections: int = DEFAULT_CONNECTIONS
) -> None:
    """Send ``text`` as ``connections`` parts at once through ``add_flows`` (one
    ``ovs-ofctl --bundle add-flows`` of its argument: one connection, one bundle), then the
    entry part alone once every other part has committed.

    The caller has checked that the bridge is empty where ``text`` loads (but for its
    :func:`entry_table`). A part that ``add_flows`` refuses (it raises) is a
    :class:`ColdLoadError` once every part has finished, and the entry part is then never sent.
    """
    _load_parts(add_flows, *split_for_cold_load(text, connections))


def _load_parts(add_flows: Callable[[str], None], parts: list[str], entry: str) -> None:
    """The parts at once, then (only if every part committed) the entry part."""
    if parts:
        # Threads, each with its whole part as input: all connections load together.
        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            futures = [pool.submit(add_flows, part) for part in parts]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            raise ColdLoadError(
                f"ovs-ofctl refused {len(errors)} of {len(parts)} parts: {str(errors[0])[:500]}"
            ) from errors[0]
    if entry:
        try:
            add_flows(entry)
        except ColdLoadError:
            raise
        except Exception as exc:
            raise ColdLoadError(f"ovs-ofctl refused the entry part: {str(exc)[:500]}") from exc


def _require_empty(
    base: list[str], bridge: str, tables: set[int], env: Mapping[str, str] | None, timeout: float
) -> None:
    # One dump, not one dump-aggregate per table: with many ports every ovs-ofctl connection
    # costs tens of milliseconds of the switch's main loop.
    if not tables:
        return
    out = _run([*base, "dump-flows", "--no-stats", "--no-names", bridge], None, env, timeout)
    busy = sorted(tables & tables_of(out))
    if busy:
        raise ColdLoadError(
            f"{bridge} already has flows in table(s) {', '.join(map(str, busy))}: a cold load "
            "needs them empty; use one bundle instead"
        )


def _run(argv: list[str], stdin: str | None, env: Mapping[str, str] | None, timeout: float) -> str:
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ColdLoadError(f"{argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise ColdLoadError(f"ovs-ofctl {_subcommand(argv)}: {proc.stderr.strip()[:500]}")
    return proc.stdout


def _subcommand(argv: list[str]) -> str:
    """``add-flows`` / ``dump-flows``: the first word after the options, for messages."""
    rest = argv[argv.index(OPENFLOW) + 1 :] if OPENFLOW in argv else argv[1:]
    return next((arg for arg in rest if not arg.startswith("-")), "")
