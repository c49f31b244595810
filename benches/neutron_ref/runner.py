"""Drive Neutron's own OVS firewall driver on our workloads and record what it does.

Runs inside the benchmark venv made by ``setup.sh`` (a pinned ``neutron`` from the package
index); never part of the test suite (not named ``test_*``, not collected by pytest).

What runs is Neutron's installed code, unmodified, along the OVS agent's own path for a
batch of new ports:

    neutron.agent.securitygroups_rpc.SecurityGroupAgentRpc
      .init_firewall()                 loads OVSFirewallDriver by its alias "openvswitch"
      .prepare_devices_filter(ids)     -> _apply_port_filter: fetch the RPC payload in steps of
                                          rpc_resources_processing_step, then under
                                          firewall.defer_apply():
        OVSFirewallDriver.update_security_group_rules(sg, rules)    every group
        OVSFirewallDriver.update_security_group_members(remote, ips) every remote group/AG
        OVSFirewallDriver.prepare_port_filter(port)                  every port
          (base flows, rules.create_flows_from_rule_and_port, port-range masking,
           ConjIPFlowManager conj_id allocation and member flows per network)
        OVSFirewallDriver.filter_defer_apply_off()
          -> DeferredOVSBridge.apply_flows -> OVSBridge.do_action_flows (flow text built by
             ovs_lib._build_flow_expr_str, batched, --bundle) -> OVSBridge.run_ofctl

and, for one change after that (``--changes``), the agent's refresh path:
``security_groups_rule_updated`` / ``security_groups_member_updated`` then
``setup_port_filters(set(), set())`` -> ``refresh_firewall`` -> ``update_port_filter`` per
affected port (re-add under a fresh cookie, delete the old flows, re-add with the default
cookie), ``ConjIPFlowManager`` deleting and re-adding member flows.

Stubs, which cannot be avoided without a switch and a server, and nothing else:

- ``RecordingBridge``: an ``ovs_lib.OVSBridge`` (with the cookie mixin of the agent's
  integration bridge) whose transport is replaced: ``run_ofctl`` records the ``ovs-ofctl``
  input that Neutron would pipe into ``ovs-ofctl add-flows/del-flows --bundle`` into an
  in-memory flow table instead of running the command, and the handful of OVSDB reads the
  driver makes (port ``other_config`` tag, VIF lookups by ``iface-id``, bridge protocols)
  answer from the workload's bindings instead of an OVSDB connection.
- ``PayloadSource``: the agent's ``plugin_rpc`` (in a real agent the
  ``SecurityGroupServerAPIShim`` over its resource cache) answers
  ``security_group_info_for_devices`` from the generated payload.
- the conntrack manager's ``execute`` is a counter, so no ``conntrack -D`` runs on this host.

Not covered: installing the flows in Open vSwitch (ovs-ofctl processes, ovs-vswitchd), the
OVO resource cache that builds the payload, RPC, and the agent's polling loop.

The final flow table is keyed by (table, priority, match) as OVS keys flows: Neutron re-emits
identical flows, and an add of an existing key replaces it. Non-strict deletes remove every
flow of the table(s) whose match fields include the delete's fields (as text, which holds for
Neutron's own consistent spelling) and whose cookie matches when one is given.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import mmap
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import workload  # noqa: E402  (benches/workload.py: standard library only)

LOG = logging.getLogger("neutron_ref")

_IGNORED_FIELDS = {"hard_timeout", "idle_timeout", "cookie", "table", "priority"}


def _git_head() -> str | None:
    """The checkout's commit: which sgflows (and which harness) produced a record."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


class FlowTable:
    """What ovs-vswitchd would hold after the recorded ovs-ofctl commands."""

    def __init__(self) -> None:
        # (table, priority, match) -> (cookie, actions)
        self.flows: dict[tuple[int, int, frozenset[tuple[str, str | None]]], tuple[str, str]] = {}
        # (field, value) -> keys of the flows matching on it: non-strict deletes in O(hits)
        self.index: dict[tuple[str, str | None], set[Any]] = collections.defaultdict(set)
        self.by_table: dict[int, set[Any]] = collections.defaultdict(set)
        self.counts: collections.Counter[str] = collections.Counter()

    @staticmethod
    def _parse(line: str) -> tuple[dict[str, str | None], str | None]:
        actions = None
        if ",actions=" in line:
            line, actions = line.split(",actions=", 1)
        elif line.startswith("actions="):
            line, actions = "", line[len("actions=") :]
        fields: dict[str, str | None] = {}
        for token in filter(None, line.split(",")):
            key, sep, value = token.partition("=")
            fields[key] = value if sep else None
        return fields, actions

    @staticmethod
    def _match(fields: dict[str, str | None]) -> frozenset[tuple[str, str | None]]:
        return frozenset((k, v) for k, v in fields.items() if k not in _IGNORED_FIELDS)

    def replay(self, log: list[tuple[str, bool, str]]) -> None:
        """Apply recorded ovs-ofctl commands: (command, --strict, flow lines)."""
        for cmd, strict, text in log:
            lines = text.splitlines()
            if cmd == "add-flows":
                for line in lines:
                    self.add(line)
            elif cmd == "del-flows":
                if not lines:
                    self.flows.clear()
                    self.index.clear()
                    self.by_table.clear()
                for line in lines:
                    self.delete(line, strict)
            elif cmd == "mod-flows":
                self.counts["mod_flow_lines"] += len(lines)

    def add(self, line: str) -> None:
        fields, actions = self._parse(line)
        match = self._match(fields)
        table = int(fields.get("table") or 0)
        key = (table, int(fields.get("priority") or 32768), match)
        self.counts["add_flow_lines"] += 1
        if key in self.flows:
            self.counts["readds"] += 1
        else:
            self.by_table[table].add(key)
            for item in match:
                self.index[item].add(key)
        self.flows[key] = (fields.get("cookie") or "0", actions or "")

    def delete(self, line: str, strict: bool) -> None:
        fields, _ = self._parse(line)
        self.counts["del_flow_lines"] += 1
        cookie = fields.get("cookie")
        want_cookie = cookie[: -len("/-1")] if cookie and cookie.endswith("/-1") else None
        match = self._match(fields)
        if fields.get("table") is not None:
            candidates = self.by_table.get(int(fields["table"] or 0), set())
        else:
            candidates = set(self.flows)
        for item in sorted(match, key=lambda i: len(self.index.get(i, ()))):
            candidates = candidates & self.index.get(item, set())
            if not candidates:
                return
        doomed = []
        for key in candidates:
            if want_cookie is not None and self.flows[key][0] != want_cookie:
                continue
            if strict and (
                key[2] != match or ("priority" in fields and key[1] != int(fields["priority"] or 0))
            ):
                continue
            doomed.append(key)
        for key in doomed:
            del self.flows[key]
            self.by_table[key[0]].discard(key)
            for item in key[2]:
                self.index[item].discard(key)
        self.counts["flows_deleted"] += len(doomed)

    def per_table(self) -> dict[str, int]:
        return {str(t): n for t, n in sorted(collections.Counter(k[0] for k in self.flows).items())}

    def render(self) -> list[str]:
        """The table as sorted ovs-ofctl lines (cookies left out)."""
        lines = []
        for (table, priority, match), (_, actions) in self.flows.items():
            fields = ",".join(sorted(k if v is None else f"{k}={v}" for k, v in match))
            lines.append(f"table={table},priority={priority},{fields} actions={actions}")
        return sorted(lines)


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """Inside the measuring process: import Neutron, build the agent side, run the phases."""
    t0 = time.perf_counter()
    import neutron
    from neutron.agent import securitygroups_rpc as sg_rpc
    from neutron.agent.common import ovs_lib

    # the OVS agent's own option registration (as neutron-openvswitch-agent imports it)
    from neutron.plugins.ml2.drivers.openvswitch.agent.common import config  # noqa: F401
    from neutron.plugins.ml2.drivers.openvswitch.agent.openflow import br_cookie
    from neutron_lib import constants as lib_const  # noqa: F401  (import cost measured)
    from oslo_config import cfg

    cfg.CONF([], project="neutron", default_config_files=[])
    cfg.CONF.set_override("firewall_driver", "openvswitch", "SECURITYGROUP")
    import_s = time.perf_counter() - t0

    with open(args.payload, encoding="utf-8") as f:
        payload = json.load(f)
    bindings = payload["bindings"]
    # The agent's shim hands the driver sets of (ip, mac) tuples; JSON made them lists.
    member_ips = {
        remote: {et: {tuple(a) for a in addrs} for et, addrs in by_et.items()}
        for remote, by_et in payload["sg_member_ips"].items()
    }

    class RecordingBridge(br_cookie.OVSBridgeCookieMixin, ovs_lib.OVSBridge):
        """br-int whose switch is a recorder (see the module docstring): the only stub."""

        def __init__(self, br_name: str) -> None:
            # BaseOVS.__init__ would open an OVSDB connection: set what OVSBridge sets instead.
            self.br_name = br_name
            self.datapath_type = "system"
            self._default_cookie = ovs_lib.generate_random_cookie()
            self._highest_protocol_needed = "OpenFlow10"
            self._flows_per_port = cfg.CONF.OVS.openflow_processed_per_port
            self._hw_offload = None
            self._reserved_cookies = set()
            self.table = FlowTable()
            self.log: list[tuple[str, bool, str]] = []
            self.log_bytes = 0
            self.ofctl_calls: collections.Counter[str] = collections.Counter()
            self.ifaces = {
                port_id: (f"tap{port_id[:11]}", b["ofport"], b["local_vlan"])
                for port_id, b in bindings.items()
            }
            self.by_name = {name: vlan for name, _, vlan in self.ifaces.values()}

        # --- the OpenFlow transport: record instead of running ovs-ofctl -----------------
        def run_ofctl(self, cmd: str, args: list[str], process_input: str | None = None) -> str:
            # Only append here (O(1)): the table is rebuilt from the log after the timed phase,
            # so the timings are Neutron's. The log's size is reported (it inflates the RSS).
            self.ofctl_calls[cmd] += 1
            if cmd == "dump-flows":
                return "NXST_FLOW reply (xid=0x4):\n"
            text = process_input or "" if "-" in args else ""
            self.log.append((cmd, "--strict" in args, text))
            self.log_bytes += len(text)
            return ""

        def flush(self) -> None:
            self.table.replay(self.log)
            self.log = []

        # --- the OVSDB reads the driver makes, answered from the workload's bindings ------
        def db_get_val(self, table, record, column, check_error=False, log_errors=True):
            if table == "Bridge" and column == "protocols":
                return ["OpenFlow10", "OpenFlow11", "OpenFlow12", "OpenFlow13", "OpenFlow14"]
            if table == "Bridge" and column == "other_config":
                return {}
            if table == "Port" and column == "other_config":
                return {"tag": str(self.by_name[record]), "network_type": "vxlan"}
            raise KeyError((table, record, column))

        def get_vif_port_by_id(self, port_id):
            name, ofport, _ = self.ifaces[port_id]
            mac = payload["devices"][port_id]["mac_address"]
            return ovs_lib.VifPort(name, ofport, port_id, mac, self)

        def get_vifs_by_ids(self, port_ids):
            return {p: self.get_vif_port_by_id(p) if p in self.ifaces else None for p in port_ids}

        @property
        def config(self):  # the Open_vSwitch row: no hardware offload
            return {"other_config": {}}

        def get_port_name_list(self):
            return [name for name, _, _ in self.ifaces.values()]

    class PayloadSource:
        """The agent's plugin_rpc: answers from the generated payload (see docstring)."""

        def __init__(self) -> None:
            self.calls = 0

        def security_group_info_for_devices(self, context, devices):
            self.calls += 1
            out_devices = {d: dict(payload["devices"][d]) for d in devices}
            sgs: dict[str, Any] = {}
            remotes: dict[str, Any] = {}
            for device in out_devices.values():
                for sg in device["security_groups"]:
                    sgs[sg] = payload["security_groups"][sg]
                for key in ("security_group_source_groups", "security_group_remote_address_groups"):
                    for remote in device[key]:
                        remotes[remote] = member_ips.get(remote, {})
            return {"devices": out_devices, "security_groups": sgs, "sg_member_ips": remotes}

    conntrack_cmds = collections.Counter()

    def count_conntrack(cmd, *a, **kw):
        conntrack_cmds[cmd[0] if cmd else "?"] += 1
        return ""

    bridge = RecordingBridge("br-int")
    source = PayloadSource()
    t1 = time.perf_counter()
    agent = sg_rpc.SecurityGroupAgentRpc(
        context=None, plugin_rpc=source, defer_refresh_firewall=True, integration_bridge=bridge
    )
    agent.firewall.ipconntrack.execute = count_conntrack
    init_s = time.perf_counter() - t1
    bridge.flush()
    base_flows = len(bridge.table.flows)
    rss_before = _rss_kib()
    device_ids = list(payload["devices"])

    result: dict[str, Any] = {
        "neutron": getattr(neutron, "__version__", None) or _dist_version("neutron"),
        "driver": type(agent.firewall).__module__ + "." + type(agent.firewall).__qualname__,
        "import_s": round(import_s, 3),
        "init_s": round(init_s, 4),
        "base_flows": base_flows,
        "rss_before_kib": rss_before,
    }
    t2, c2 = time.perf_counter(), time.process_time()
    agent.setup_port_filters(set(device_ids), set())
    sync_s, sync_cpu_s = time.perf_counter() - t2, time.process_time() - c2
    maxrss = _maxrss_kib()
    rss_after = _rss_kib()
    log_kib = bridge.log_bytes // 1024
    bridge.flush()
    table = bridge.table
    result.update(
        {
            "status": "ok",
            "sync_s": round(sync_s, 4),
            # CPU time of the process: steadier than wall time on a shared machine
            "sync_cpu_s": round(sync_cpu_s, 4),
            "maxrss_kib": maxrss,
            "rss_after_kib": rss_after,
            # the recorder's log of ovs-ofctl input held until the phase ends (not Neutron's)
            "recorder_log_kib": log_kib,
            "add_flow_calls": table.counts["add_flow_lines"],
            "readds": table.counts["readds"],
            "del_flow_calls": table.counts["del_flow_lines"],
            "ofctl_commands": dict(bridge.ofctl_calls),
            "rpc_calls": source.calls,
            "flows": len(table.flows),
            "flows_per_table": table.per_table(),
            "conntrack_commands": sum(conntrack_cmds.values()),
        }
    )
    if args.dump_to:
        Path(args.dump_to).write_text("\n".join(table.render()) + "\n", encoding="utf-8")

    changes = {}
    for kind in args.changes:
        changes[kind] = _change(kind, payload, member_ips, agent, bridge, args.seed)
    if changes:
        result["changes"] = changes
        if args.dump_to:
            Path(args.dump_to + ".after-changes").write_text(
                "\n".join(bridge.table.render()) + "\n", encoding="utf-8"
            )
    return result


def _change(kind, payload, member_ips, agent, bridge, seed) -> dict[str, Any]:
    """Apply one change through the agent's notification + refresh path; measure it."""
    import random

    rng = random.Random(seed)
    before = dict(bridge.table.flows)
    counts_before = collections.Counter(bridge.table.counts)
    if kind == "rule":
        sg = rng.choice(sorted(payload["security_groups"]))
        rules = payload["security_groups"][sg]
        stateful = rules[0]["stateful"] if rules else True
        port = rng.randint(1, 65535)
        rules.append(
            {
                "direction": "ingress",
                "ethertype": "IPv4",
                "protocol": "tcp",
                "port_range_min": port,
                "port_range_max": port,
                "source_ip_prefix": "198.51.100.0/24",
                "stateful": stateful,
            }
        )
        t, c = time.perf_counter(), time.process_time()
        agent.security_groups_rule_updated([sg])
        agent.setup_port_filters(set(), set())
    elif kind == "member":
        remotes = sorted(r for r, m in member_ips.items() if "IPv4" in m and r.startswith("sg-"))
        sg = rng.choice(remotes)
        member_ips[sg]["IPv4"].add(("198.18.0.77", "fa:16:3e:ff:ff:77"))
        t, c = time.perf_counter(), time.process_time()
        agent.security_groups_member_updated([sg])
        agent.setup_port_filters(set(), set())
    else:
        raise ValueError(kind)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    bridge.flush()
    after = bridge.table.flows
    changed = sum(1 for k in before.keys() & after.keys() if before[k][1] != after[k][1])
    counts = bridge.table.counts - counts_before
    return {
        "group": sg,
        "s": round(elapsed, 4),
        "cpu_s": round(cpu, 4),
        "add_flow_calls": counts["add_flow_lines"],
        "del_flow_calls": counts["del_flow_lines"],
        "flows_added": len(after.keys() - before.keys()),
        "flows_removed": len(before.keys() - after.keys()),
        "flows_changed": changed,
        "flows": len(after),
    }


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def child_main(args: argparse.Namespace) -> None:
    import warnings

    # eventlet's deprecation notice, printed when futurist imports it: noise in the log
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # Address space given back on failure, so that the report can still be written: an
    # anonymous mapping counts against RLIMIT_AS but, never touched, not in the RSS.
    reserve = mmap.mmap(-1, 64 * 2**20)
    try:
        try:
            result = run_child(args)
        except BaseException as e:  # report every failure, never hang
            reserve.close()
            limit = resource.getrlimit(resource.RLIMIT_AS)[0]
            near_cap = limit > 0 and _maxrss_kib() * 1024 > 0.8 * limit
            if isinstance(e, MemoryError) or near_cap:
                # out of the address space the parent allowed: Python may report it as a
                # MemoryError or, from C code, as a SystemError
                result = {"status": "out of memory", "error": f"{type(e).__name__}: {e}"}
            else:
                LOG.exception("run failed")
                result = {"status": "error", "error": f"{type(e).__name__}: {e}"}
            result["maxrss_kib"] = _maxrss_kib()
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    finally:
        # Neutron's conntrack manager starts a non-daemon worker thread that never ends.
        os._exit(0)


def parent_main(args: argparse.Namespace) -> int:
    """Generate each workload, run it in a fresh child with a timeout, append JSON lines."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / args.output
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    for name in args.presets:
        params = dict(workload.PRESETS[name])
        model = workload.generate(**params, seed=args.seed)
        rpc = workload.to_neutron_rpc(model)
        payload_path = work / f"{name}-seed{args.seed}.rpc.json"
        payload_path.write_text(json.dumps(rpc), encoding="utf-8")
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--payload",
            str(payload_path),
            "--seed",
            str(args.seed),
        ]
        cmd += ["--changes", *args.changes]  # possibly none
        if args.dump_flows:
            cmd += ["--dump-to", str(work / f"{name}-seed{args.seed}.neutron.flows")]
        record: dict[str, Any] = {
            "system": "neutron",
            "workload": name,
            "params": params,
            "seed": args.seed,
            "sizes": workload.summary(model),
            "timeout_s": args.timeout,
            "host": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                # the machine is shared: the load says how much the timings can be trusted
                "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            },
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git_head": _git_head(),
        }
        print(f"[neutron_ref] {name}: running (timeout {args.timeout}s)", file=sys.stderr)
        t = time.perf_counter()
        env = dict(os.environ)
        env.setdefault("PYTHONHASHSEED", "0")  # Neutron iterates sets: repeatable call counts
        record["pythonhashseed"] = env["PYTHONHASHSEED"]
        limit = int(args.max_memory_gib * 2**30)
        record["max_memory_gib"] = args.max_memory_gib

        def cap_memory(
            limit: int = limit,
        ) -> None:  # the machine is shared: fail the run, not the machine
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=env,
            preexec_fn=cap_memory,
        )
        try:
            stdout, _ = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            record.update({"status": "did not finish", "wall_s": round(time.perf_counter() - t, 1)})
        else:
            record["wall_s"] = round(time.perf_counter() - t, 2)
            record["host"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
            try:
                record.update(json.loads(stdout.strip().splitlines()[-1]))
            except (IndexError, ValueError):
                record.update({"status": "error", "error": f"child exited {proc.returncode}"})
        with out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(f"[neutron_ref] {name}: {_brief(record)}", file=sys.stderr)
        if not args.keep_payloads:
            payload_path.unlink()
    return 0


def _brief(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return f"{r.get('status')} {r.get('error', '')}".strip()
    return (
        f"sync {r['sync_s']} s, maxrss {r['maxrss_kib'] / 1024:.0f} MiB, "
        f"{r['add_flow_calls']} add_flow calls, {r['flows']} distinct flows"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    parser.add_argument("--dump-to", help=argparse.SUPPRESS)
    parser.add_argument(
        "presets",
        nargs="*",
        default=["p10", "p100", "p1000"],
        help=f"workloads from benches/workload.py PRESETS ({', '.join(workload.PRESETS)})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument(
        "--changes",
        nargs="*",
        default=["rule", "member"],
        choices=["rule", "member"],
        help="one change each after the initial sync, through the agent's refresh path",
    )
    parser.add_argument(
        "--max-memory-gib",
        type=float,
        default=8.0,
        help="address-space limit of a run (RLIMIT_AS); a run over it ends as out of memory",
    )
    parser.add_argument("--out-dir", default=str(HERE.parent / "results"))
    parser.add_argument("--output", default="neutron.jsonl")
    parser.add_argument("--work-dir", default=str(HERE.parents[1] / "build" / "neutron-ref"))
    parser.add_argument("--dump-flows", action="store_true", help="write each final table")
    parser.add_argument("--keep-payloads", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
