"""sgflows' OVN rows beside Neutron's own, end to end through ovn-northd and ovn-controller.

For each workload (``benches/workload.py`` presets): one private OVN central and chassis
(``tests/support/ovn.py``: NB/SB ``ovsdb-server``s, ``ovn-northd``, userspace Open vSwitch with
``br-int``, ``ovn-controller``), one logical switch with every port of the model bound locally
(plus, unbound, the remote-group members on other hosts: see ``ovn_neutron_acls.py``). Then,
one after the other on that same switch:

- **neutron**: the port groups, address sets and ACLs Neutron 29.0.0's ``acl.py`` makes for the
  model (``benches/ovn_neutron_acls.py``, run with the pinned Neutron's interpreter);
- **sgflows**: ``sgflows.compile(model, target="ovn")``'s ``ovn-nbctl`` batch.

For each (a cold load): the ACL count, the time from the Northbound commit to all flows installed
(``ovn-nbctl --wait=hv``: the one transaction's command returns when ovn-controller reports
it has installed the flows), the OpenFlow flows on br-int beyond the switch's own, and the
resident memory of northd and ovn-controller afterwards. Then (``--changes``, the default)
the four changes of ``e2e_changes.py`` (+rule, -rule, +member, +port, the OpenFlow benchmark's)
one after another, each committed as only the rows that changed (``ovn_changes.py``: Neutron's
as one ``ovn-nbctl`` transaction, sgflows' by ``sgflows.ovn.apply``) and timed from the start
of its Northbound transaction until ``--wait=hv`` returns; ACLs and flows after each.

    python benches/ovn_e2e.py                          # p100 → benches/results/ovn_e2e.md
    python benches/ovn_e2e.py --presets p10 p100 p1000 --repeat 3
    python benches/ovn_e2e.py --presets p3000 --order sgflows neutron --timeout 1800 \
        -o benches/results/ovn_e2e_p3000.md
    python benches/ovn_e2e.py --report-only --also benches/results/ovn_e2e_p3000.jsonl  # redraw

Beside the Markdown table: the measures as JSON lines (the output's ``.jsonl``) and, with
matplotlib (the ``bench`` extra), charts of the time, the flows and ovn-controller's memory
against the ports (``<output>_time.png`` …), with the points of ``--also`` files (another
invocation's, e.g. p3000 once) drawn too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benches"))

import e2e_changes  # noqa: E402
import ovn_changes  # noqa: E402
import ovn_e2e_report  # noqa: E402
import sgflows  # noqa: E402
import sgflows.ovn  # noqa: E402
import workload  # noqa: E402
from ovn_e2e_report import Measure  # noqa: E402
from support.ovn import OvnCentral, OvnChassis  # noqa: E402

LOG = logging.getLogger("ovn_e2e")

SWITCH = "sgf_e2e"
NEUTRON_PYTHON = ROOT / "build" / "neutron29-venv" / "bin" / "python"
RULE_TABLES = ("ACL", "Port_Group", "Address_Set")
#: The workloads have DCCP/UDP-Lite rules with port ranges; Neutron's acl.py matches only the
#: protocol for them (``ip.proto == 33``), and so does sgflows with this option.
WIDEN = {"widen_unmatchable_port_ranges": True}


def neutron_rows(models: list[dict[str, Any]], python: Path) -> list[dict[str, Any]]:
    """Neutron's rows for each of ``models``, made by Neutron's code in its own interpreter."""
    done = subprocess.run(
        [str(python), str(ROOT / "benches" / "ovn_neutron_acls.py")],
        input=json.dumps(models), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"ovn_neutron_acls.py failed:\n{done.stderr[-2000:]}")
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def all_remote_ports(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The remote members' logical ports of every model (the later ones' first: they may have
    a port in more groups); the switch has them all from the start."""
    ports: dict[str, dict[str, Any]] = {}
    for r in reversed(rows):
        for name, port in r["remote_ports"].items():
            ports.setdefault(name, port)
    return ports


def _set(values: list[str]) -> str:
    return "[" + ",".join(json.dumps(v) for v in values) + "]"


def neutron_commands(rows: dict[str, Any]) -> list[str]:
    """``ovn-nbctl`` commands creating Neutron's rows (one transaction when joined)."""
    cmds: list[list[str]] = []
    for name, addresses in rows["address_sets"].items():
        cmds.append(["create", "Address_Set", f'name="{name}"', f"addresses={_set(addresses)}"])
    for name, ports in rows["port_groups"].items():
        cmds.append(["pg-add", name, *ports])
    for acl in rows["acls"]:
        # acl-add sets no external_ids (Neutron's name the rule); they change no flow
        cmds.append(["--type=port-group", "acl-add", acl["port_group"], acl["direction"],
                     str(acl["priority"]), acl["match"], acl["action"]])  # fmt: skip
    return [arg for cmd in cmds for arg in ("--", *cmd)]


def switch_commands(model: dict[str, Any], remote: dict[str, dict[str, Any]]) -> list[str]:
    """The logical switch with the model's ports (as ``--with-ports`` makes them) and the
    remote members' ports, without any security-group row."""
    script = sgflows.compile(
        model, target="ovn", with_ports=True, switch=SWITCH, **WIDEN
    ).transact()
    keep = [op for op in script[1:] if op["table"] in ("Logical_Switch", "Logical_Switch_Port")]
    cmds: list[list[str]] = []
    for op in keep:
        if op["table"] == "Logical_Switch":
            cmds.append(["ls-add", SWITCH])
    for op in keep:
        if op["table"] != "Logical_Switch_Port":
            continue
        row = op["row"]
        name = row["name"]
        cmds.append(["lsp-add", SWITCH, name])
        cmds.append(["lsp-set-addresses", name, *_strings(row.get("addresses"))])
        security = _strings(row.get("port_security"))
        if security:
            cmds.append(["lsp-set-port-security", name, *security])
    for name, port in remote.items():
        cmds.append(["lsp-add", SWITCH, name])
        cmds.append(["lsp-set-addresses", name, " ".join([port["mac"], *port["ips"]])])
    return [arg for cmd in cmds for arg in ("--", *cmd)]


def _strings(value: Any) -> list[str]:
    """An OVSDB string set from a transact row (``["set", [...]]`` or a plain string)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and value[0] == "set":
        return [str(v) for v in value[1]]
    return [str(value)]


def settled_flow_count(chassis: OvnChassis, quiet: float = 2.0, timeout: float = 300.0) -> int:
    """br-int's flow count once it stops changing for ``quiet`` seconds. Binding 1,000 ports
    at once can time out ovn-controller's OpenFlow bundle (``OFPBFC_TIMEOUT`` on a loaded
    machine); it then reconnects and reinstalls every flow, after ``--wait=hv`` returned."""
    deadline = time.monotonic() + timeout
    count = chassis.flow_count()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = chassis.flow_count()
        if now == count:
            return now
        count = now
    return count


#: What ovn-controller's ``rconn`` logs when its br-int connection goes (a dropped or closed
#: connection, or a peer that missed its inactivity probe).
DROP_WORDS = ("connection dropped", "connection closed", "disconnecting")


def br_int_drops(chassis: OvnChassis) -> int:
    """How often ovn-controller's log says it lost a ``br-int.mgmt`` connection so far."""
    try:
        text = (chassis.base / "ovn-controller.log").read_text(errors="replace")
    except OSError:
        return 0
    return sum(
        1
        for line in text.splitlines()
        if "br-int.mgmt" in line and any(w in line for w in DROP_WORDS)
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def clear_rules(central: OvnCentral, chassis: OvnChassis, timeout: int) -> None:
    """Remove every port group, address set and ACL (the switch and its ports stay)."""
    for table in RULE_TABLES:
        uuids = central.nbctl("--bare", "--columns=_uuid", "list", table).split()
        args = [a for u in uuids for a in ("--", "destroy", table, u)]
        if args:
            central.nbctl(*args[1:])
    chassis.wait(timeout)


def load(central: OvnCentral, argv: list[str], timeout: int) -> float:
    """Run one ``ovn-nbctl --wait=hv`` transaction (``argv`` takes the options next); the
    seconds until it returned."""
    began = time.monotonic()
    options = [f"--db={central.nb}", f"--timeout={timeout}", "--wait=hv"]
    subprocess.run([argv[0], *argv[1:2], *options, *argv[2:]] if argv[0] == "sh" else
                   [argv[0], *options, *argv[1:]], check=True, capture_output=True,
                   text=True)  # fmt: skip
    return time.monotonic() - began


def load_or_none(central: OvnCentral, argv: list[str], timeout: int) -> float | None:
    """``load``'s seconds, or ``None`` when ``ovn-nbctl --wait=hv`` gave up at ``timeout``
    (the rows are committed then; ovn-controller has not reported them installed)."""
    try:
        return load(central, argv, timeout)
    except subprocess.CalledProcessError as e:
        # ovs tools' --timeout is an alarm: killed by SIGALRM ("terminating with signal 14")
        if e.returncode not in (-signal.SIGALRM, 128 + signal.SIGALRM):
            raise
        return None


def measure(preset: str, python: Path, timeout: int, order: list[str],
            changes: bool) -> list[Measure]:  # fmt: skip
    model = workload.preset(preset)
    plan = e2e_changes.plan(model) if changes else []
    rows = neutron_rows([model, *(c.after for c in plan)], python)
    with tempfile.TemporaryDirectory(prefix="sgf-e2e-", dir="/tmp") as base:
        central = OvnCentral(Path(base) / "central")
        central.base.mkdir()
        central.start()
        chassis = OvnChassis(central, Path(base) / "hv")
        chassis.base.mkdir()
        try:
            chassis.start()
            return _variants(preset, model, plan, rows, central, chassis, timeout, order)
        finally:
            chassis.stop()
            central.stop()


def _variants(preset: str, model: dict[str, Any], plan: list[e2e_changes.Change],
              rows: list[dict[str, Any]], central: OvnCentral, chassis: OvnChassis,
              timeout: int, order: list[str]) -> list[Measure]:  # fmt: skip
    # With changes, the switch has the ports of the last model from the start: the +port
    # change's port is bound (as the OpenFlow benchmark's is on the bridge) and the +member
    # change's remote logical port exists, both in no port group until their change.
    final = plan[-1].after if plan else model
    load(central, ["ovn-nbctl", *switch_commands(final, all_remote_ports(rows))[1:]], timeout)
    chassis.bind_internal_many([p["id"] for p in final["ports"]])
    chassis.wait_bound(timeout=timeout)
    LOG.info("%s: %d ports bound", preset, len(final["ports"]))
    script = chassis.base / "sgflows-rows.sh"
    script.write_text(sgflows.compile(model, target="ovn", **WIDEN).to_nbctl())
    variants = {
        "neutron": ["ovn-nbctl", *neutron_commands(rows[0])[1:]],
        "sgflows": ["sh", str(script)],  # the script passes its arguments to ovn-nbctl
    }
    out = []
    for variant in order:
        argv = variants[variant]
        clear_rules(central, chassis, timeout)
        drops = br_int_drops(chassis)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        seconds = load_or_none(central, argv, timeout)
        acls = len(central.nbctl("--bare", "--columns=_uuid", "list", "ACL").split())
        # after a timeout ovn-controller is still at work: its count now, not a settled one
        flows = settled_flow_count(chassis) if seconds is not None else chassis.flow_count()
        northd, controller = central.pids[2], chassis.controller_pid
        out.append(Measure(preset, variant, acls, seconds, flows, 0, rss_mb(northd),
                           rss_mb(controller), os.getloadavg()[0],
                           br_int_drops(chassis) - drops, len(model["ports"]), timeout,
                           started=started))  # fmt: skip
        LOG.info("%s", out[-1])
        if seconds is None:
            LOG.warning("%s: %s did not finish in %d s; ovn-controller's log:\n%s", preset,
                        variant, timeout, chassis.log_tail(15))  # fmt: skip
            return out  # the next variant would wait behind this one: not measured
        done = _changes(preset, variant, plan, rows, central, chassis, timeout)
        out += done
        if any(m.seconds is None for m in done):
            return out
    # The switch's own flows, counted last: right after binding 1,000 ports ovn-controller may
    # still be reinstalling everything (an OpenFlow bundle timeout on a loaded machine makes
    # it reconnect after --wait=hv returned), and the count would be too low.
    clear_rules(central, chassis, timeout)
    base_flows = settled_flow_count(chassis, quiet=5.0)
    LOG.info("%s: %d flows without rules", preset, base_flows)
    for m in out:
        m.base_flows = base_flows
    return out


def _changes(preset: str, variant: str, plan: list[e2e_changes.Change],
             rows: list[dict[str, Any]], central: OvnCentral, chassis: OvnChassis,
             timeout: int) -> list[Measure]:  # fmt: skip
    """After ``variant``'s cold load: each change of ``plan`` in turn, timed from the start
    of its Northbound transaction until ``--wait=hv`` returns."""
    out: list[Measure] = []
    uuids = _lsp_uuids(central)
    for i, change in enumerate(plan):
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        connect = None
        if variant == "neutron":
            args, committed = ovn_changes.neutron_change(rows[i], rows[i + 1], uuids)
            seconds = load_or_none(central, ["ovn-nbctl", *args], timeout)
        else:
            seconds, connect, committed = _sgflows_change(central, change.after, timeout)
        acls = len(central.nbctl("--bare", "--columns=_uuid", "list", "ACL").split())
        flows = settled_flow_count(chassis) if seconds is not None else chassis.flow_count()
        out.append(Measure(preset, variant, acls, seconds, flows, 0, rss_mb(central.pids[2]),
                           rss_mb(chassis.controller_pid), os.getloadavg()[0], 0,
                           len(change.after["ports"]), timeout, started=started,
                           change=change.kind, committed=committed,
                           connect_seconds=connect))  # fmt: skip
        LOG.info("%s", out[-1])
        if seconds is None:
            break
    return out


def _sgflows_change(central: OvnCentral, model: dict[str, Any],
                    timeout: int) -> tuple[float | None, float, str]:  # fmt: skip
    """What an sgflows user does for a change on OVN: compile the new model and
    ``sgflows.ovn.apply`` it (one IDL transaction of the row diff), then ``--wait=hv``. The
    compile is before the clock, as Neutron's rows are. Also the part of the seconds spent
    before the diff: connecting ``apply``'s IDL and reading the owned rows."""
    result = sgflows.compile(model, target="ovn", **WIDEN)
    began = time.monotonic()
    report = sgflows.ovn.apply(result, central.nb, timeout=timeout)
    connect = time.monotonic() - began - report.seconds
    waited = load_or_none(central, ["ovn-nbctl", "sync"], timeout)
    seconds = None if waited is None else time.monotonic() - began
    return seconds, connect, ovn_changes.sgflows_summary(report.changes)


def _lsp_uuids(central: OvnCentral) -> dict[str, str]:
    text = central.nbctl("--data=bare", "--format=csv", "--no-headings", "--columns=_uuid,name",
                         "list", "Logical_Switch_Port")  # fmt: skip
    pairs = (line.split(",", 1) for line in text.splitlines() if line)
    return {name: uuid for uuid, name in pairs}


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["p100"], choices=sorted(workload.PRESETS))
    parser.add_argument("--neutron-python", type=Path, default=NEUTRON_PYTHON,
                        help="the pinned Neutron's interpreter (make deps-neutron)")  # fmt: skip
    parser.add_argument("--timeout", type=int, default=900, help="seconds per --wait=hv")
    parser.add_argument("--order", nargs=2, default=["neutron", "sgflows"],
                        choices=["neutron", "sgflows"], help="which rows load first")  # fmt: skip
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benches/results/ovn_e2e.md")
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload")
    parser.add_argument(
        "--changes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each cold load, the four changes of e2e_changes.py",
    )
    parser.add_argument("--once", nargs="*", default=["p3000"], help="workloads run only once")
    parser.add_argument("--also", nargs="*", type=Path, default=[],
                        help="other invocations' .jsonl drawn in the charts too")  # fmt: skip
    parser.add_argument("--report-only", action="store_true",
                        help="redraw the table and charts from the .jsonl")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    jsonl = args.output.with_suffix(".jsonl")
    if args.report_only:
        # the load average at the end of the run stays the one the table recorded
        old = args.output.read_text() if args.output.exists() else ""
        _write(ovn_e2e_report.read(jsonl), args, ovn_e2e_report.recorded_load(old))
        return 0
    if not args.neutron_python.exists():
        print(f"ovn_e2e: {args.neutron_python} missing: run make deps-neutron", file=sys.stderr)
        return 2
    if sorted(args.order) != ["neutron", "sgflows"]:
        parser.error("--order takes neutron and sgflows, once each")
    results: list[Measure] = []
    commit = _commit()
    command = " ".join(sys.argv[1:] if argv is None else argv)
    for preset in args.presets:
        for _ in range(1 if preset in args.once else args.repeat):
            got = measure(preset, args.neutron_python, args.timeout, args.order, args.changes)
            for m in got:
                m.commit, m.command = commit, command
            results += got
            # after every run: an interrupted invocation still leaves what it measured
            ovn_e2e_report.save(results, jsonl)
            _write(results, args, " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    print(args.output.read_text())
    return 0


def _write(results: list[Measure], args: argparse.Namespace, load_avg: str) -> None:
    """The table of this invocation's ``results``; the charts with the ``--also`` points."""
    args.output.write_text(ovn_e2e_report.render(results, load_avg))
    _charts(results, args)


def _charts(results: list[Measure], args: argparse.Namespace) -> None:
    also = [m for path in args.also for m in ovn_e2e_report.read(path)]
    ovn_e2e_report.charts([*results, *also], args.output.with_suffix(""))


if __name__ == "__main__":
    sys.exit(main())
