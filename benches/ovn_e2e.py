"""sgflows' OVN rows beside Neutron's own, end to end through ovn-northd and ovn-controller.

For each workload (``benches/workload.py`` presets): one private OVN central and chassis
(``tests/support/ovn.py``: NB/SB ``ovsdb-server``s, ``ovn-northd``, userspace Open vSwitch with
``br-int``, ``ovn-controller``), one logical switch with every port of the model bound locally
(plus, unbound, the remote-group members on other hosts: see ``ovn_neutron_acls.py``). Then,
one after the other on that same switch:

- **neutron**: the port groups, address sets and ACLs Neutron 29.0.0's ``acl.py`` makes for the
  model (``benches/ovn_neutron_acls.py``, run with the pinned Neutron's interpreter);
- **sgflows**: ``sgflows.compile(model, target="ovn")``'s ``ovn-nbctl`` batch.

For each: the ACL count, the time from the Northbound commit to all flows installed
(``ovn-nbctl --wait=hv``: the one transaction's command returns when ovn-controller reports
it has installed the flows), the OpenFlow flows on br-int beyond the switch's own, and the
resident memory of northd and ovn-controller afterwards.

    python benches/ovn_e2e.py                          # p100 → benches/results/ovn_e2e.md
    python benches/ovn_e2e.py --presets p100 p1000 -o benches/results/ovn_e2e.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benches"))

import sgflows  # noqa: E402
import workload  # noqa: E402
from support.ovn import OvnCentral, OvnChassis  # noqa: E402

LOG = logging.getLogger("ovn_e2e")

SWITCH = "sgf_e2e"
NEUTRON_PYTHON = ROOT / "build" / "neutron29-venv" / "bin" / "python"
RULE_TABLES = ("ACL", "Port_Group", "Address_Set")
#: The workloads have DCCP/UDP-Lite rules with port ranges; Neutron's acl.py matches only the
#: protocol for them (``ip.proto == 33``), and so does sgflows with this option.
WIDEN = {"widen_unmatchable_port_ranges": True}


@dataclass
class Measure:
    """One variant loaded on one workload."""

    preset: str
    variant: str
    acls: int
    seconds: float
    flows: int
    base_flows: int
    northd_mb: float
    controller_mb: float
    #: 1-minute load average right after the load: the machine is shared
    load1: float = 0.0


def neutron_rows(model: dict[str, Any], python: Path) -> dict[str, Any]:
    """Neutron's rows for ``model``, made by Neutron's code in its own interpreter."""
    done = subprocess.run(
        [str(python), str(ROOT / "benches" / "ovn_neutron_acls.py")],
        input=json.dumps(model), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"ovn_neutron_acls.py failed:\n{done.stderr[-2000:]}")
    rows: dict[str, Any] = json.loads(done.stdout)
    return rows


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


def measure(preset: str, python: Path, timeout: int, order: list[str]) -> list[Measure]:
    model = workload.preset(preset)
    rows = neutron_rows(model, python)
    with tempfile.TemporaryDirectory(prefix="sgf-e2e-", dir="/tmp") as base:
        central = OvnCentral(Path(base) / "central")
        central.base.mkdir()
        central.start()
        chassis = OvnChassis(central, Path(base) / "hv")
        chassis.base.mkdir()
        try:
            chassis.start()
            return _variants(preset, model, rows, central, chassis, timeout, order)
        finally:
            chassis.stop()
            central.stop()


def _variants(preset: str, model: dict[str, Any], rows: dict[str, Any], central: OvnCentral,
              chassis: OvnChassis, timeout: int, order: list[str]) -> list[Measure]:  # fmt: skip
    load(central, ["ovn-nbctl", *switch_commands(model, rows["remote_ports"])[1:]], timeout)
    chassis.bind_internal_many([p["id"] for p in model["ports"]])
    chassis.wait_bound(timeout=timeout)
    LOG.info("%s: %d ports bound", preset, len(model["ports"]))
    script = chassis.base / "sgflows-rows.sh"
    script.write_text(sgflows.compile(model, target="ovn", **WIDEN).to_nbctl())
    variants = {
        "neutron": ["ovn-nbctl", *neutron_commands(rows)[1:]],
        "sgflows": ["sh", str(script)],  # the script passes its arguments to ovn-nbctl
    }
    out = []
    for variant in order:
        argv = variants[variant]
        clear_rules(central, chassis, timeout)
        seconds = load(central, argv, timeout)
        acls = len(central.nbctl("--bare", "--columns=_uuid", "list", "ACL").split())
        flows = settled_flow_count(chassis)
        northd, controller = central.pids[2], chassis.controller_pid
        out.append(Measure(preset, variant, acls, seconds, flows, 0, rss_mb(northd),
                           rss_mb(controller), os.getloadavg()[0]))  # fmt: skip
        LOG.info("%s", out[-1])
    # The switch's own flows, counted last: right after binding 1,000 ports ovn-controller may
    # still be reinstalling everything (an OpenFlow bundle timeout on a loaded machine makes
    # it reconnect after --wait=hv returned), and the count would be too low.
    clear_rules(central, chassis, timeout)
    base_flows = settled_flow_count(chassis, quiet=5.0)
    LOG.info("%s: %d flows without rules", preset, base_flows)
    for m in out:
        m.base_flows = base_flows
    return out


def report(results: list[Measure], load_avg: str, commit: str) -> str:
    lines = [
        "# OVN end to end: sgflows' rows beside Neutron's (`benches/ovn_e2e.py`)",
        "",
        "One chassis, every port local; Neutron's rows from Neutron 29.0.0's `acl.py`. "
        f"Commit `{commit}`; a fresh OVN per run; cells with several runs are "
        "`median (min-max)`; the ratio is of medians.",
        f"Machine load average at the end: {load_avg}.",
        "",
        "| workload | rows | runs | ACLs | NB commit → flows installed (s) | Neutron / sgflows "
        "| flows on br-int (rules) | northd RSS (MB) | ovn-controller RSS (MB) "
        "| load average (1 min) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells = {}
    for m in results:
        cells.setdefault((m.preset, m.variant), []).append(m)
    for (preset, variant), runs in cells.items():
        first = runs[0]
        ratio = _ratio(cells.get((preset, "neutron")), cells.get((preset, "sgflows")))
        lines.append(
            f"| {preset} | {variant} | {len(runs)} | {first.acls:,} | "
            f"{_spread([m.seconds for m in runs], '{:.1f}')} | "
            f"{ratio if variant == 'neutron' else ''} | "
            f"{first.flows:,} ({first.flows - first.base_flows:,}) | "
            f"{statistics.median(m.northd_mb for m in runs):.0f} | "
            f"{statistics.median(m.controller_mb for m in runs):.0f} | "
            f"{_spread([m.load1 for m in runs], '{:.1f}')} |"
        )
    lines += [
        "",
        "Flows in parentheses: beyond the switch's own flows without any rule (first run).",
    ]
    return "\n".join(lines) + "\n"


def _spread(values: list[float], fmt: str) -> str:
    med = fmt.format(statistics.median(values))
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def _ratio(a: list[Measure] | None, b: list[Measure] | None) -> str:
    if not a or not b:
        return ""
    return (
        f"{statistics.median(m.seconds for m in a) / statistics.median(m.seconds for m in b):.1f}x"
    )


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
    parser.add_argument("--once", nargs="*", default=["p3000"], help="workloads run only once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if not args.neutron_python.exists():
        print(f"ovn_e2e: {args.neutron_python} missing: run make deps-neutron", file=sys.stderr)
        return 2
    if sorted(args.order) != ["neutron", "sgflows"]:
        parser.error("--order takes neutron and sgflows, once each")
    results: list[Measure] = []
    commit = _commit()
    for preset in args.presets:
        for _ in range(1 if preset in args.once else args.repeat):
            results += measure(preset, args.neutron_python, args.timeout, args.order)
            # after every run: an interrupted invocation still leaves what it measured
            load_avg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            args.output.write_text(report(results, load_avg, commit))
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
