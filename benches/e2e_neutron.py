"""One measuring run of a firewall driver through Neutron's agent code (a child of ``e2e.py``).

Runs in the Neutron 29.0.0 venv (``make deps-neutron`` → ``build/neutron29-venv``, which has
this checkout's sgflows installed too). ``--driver openvswitch`` is Neutron's own
``OVSFirewallDriver``, ``--driver sgflows`` ours; both are loaded by their alias and driven the
same way, along the OVS agent's path:

    SecurityGroupAgentRpc(plugin_rpc, integration_bridge=int_br)   init_firewall: the alias
      .setup_port_filters(all ports, ∅)    cold: prepare_devices_filter → _apply_port_filter
                                           (rules, members, prepare_port_filter, under one
                                           defer_apply) → the driver's ovs-ofctl calls

on a real ``OVSIntegrationBridge`` (Neutron's native class, datapath ``netdev``) of a private
userspace Open vSwitch holding the workload's ports (``e2e_switch``) and the agent's own flows
around the firewall, with privsep in-process (we are root; oslo.privsep's client mode off), so
every ``ovs-ofctl`` and OVSDB call is the real one. Then each change of ``e2e_changes.plan``
through the agent's notification and refresh path: ``security_groups_rule_updated`` /
``security_groups_member_updated`` + ``setup_port_filters(∅, ∅)``; a new port:
``security_groups_member_updated`` for its remote groups + ``setup_port_filters({port}, ∅)``
after the VIF is plugged (not timed).

What is not the real agent: ``plugin_rpc`` answers ``security_group_info_for_devices`` from the
generated payload (in a real agent the ``SecurityGroupServerAPIShim`` over its resource cache),
and the os-ken half of the bridge is not started (the firewall drivers use ``ovs-ofctl`` and
OVSDB only; the agent's default flows are written with ``ovs-ofctl`` as ``setup_default_table``
writes them). Neutron's ``run_ofctl`` logs and swallows failures: they are counted
(``ofctl_errors``) and a run with any fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e_changes  # noqa: E402
import e2e_switch  # noqa: E402
import workload  # noqa: E402

#: The agent's flows around the firewall (br_int.setup_default_table, OC table numbers).
AGENT_FLOWS = (
    "table=0,priority=0,actions=resubmit(,58)",
    "table=58,priority=0,actions=resubmit(,59)",
    "table=59,priority=0,actions=resubmit(,60)",
    "table=60,priority=1,actions=NORMAL",
    "table=23,priority=0,actions=drop",  # the canary table
)


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ErrorCounter(logging.Handler):
    """Counts ERROR records: Neutron's ``run_ofctl`` logs a refused ``ovs-ofctl`` and goes on."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.first is None:
            self.first = record.getMessage()[:2000]


class PayloadSource:
    """The agent's ``plugin_rpc``: answers from the current generated payload."""

    def __init__(self, rpc: dict[str, Any]) -> None:
        self.set(rpc)
        self.calls = 0

    def set(self, rpc: dict[str, Any]) -> None:
        self.rpc = rpc
        # The agent's shim hands the driver sets of (ip, mac) tuples; JSON gave lists.
        self.members = {
            remote: {et: {tuple(a) for a in addrs} for et, addrs in by_et.items()}
            for remote, by_et in rpc["sg_member_ips"].items()
        }

    def security_group_info_for_devices(self, context: Any, devices: list[str]) -> dict[str, Any]:
        self.calls += 1
        out = {d: dict(self.rpc["devices"][d]) for d in devices}
        sgs: dict[str, Any] = {}
        remotes: dict[str, Any] = {}
        for device in out.values():
            for sg in device["security_groups"]:
                sgs[sg] = self.rpc["security_groups"][sg]
            for key in ("security_group_source_groups", "security_group_remote_address_groups"):
                for remote in device[key]:
                    remotes[remote] = self.members.get(remote, {})
        return {"devices": out, "security_groups": sgs, "sg_member_ips": remotes}


def configure_neutron(switch: e2e_switch.PrivateOVS, driver: str) -> None:
    """Neutron's config as the OVS agent loads it, pointed at the private switch."""
    for key in ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_PKGDATADIR"):
        os.environ[key] = switch.env[key]
    import neutron.privileged
    from neutron.conf.agent import ovsdb_api
    from neutron.conf.plugins.ml2.drivers import ovs_conf
    from neutron.plugins.ml2.drivers.openvswitch.agent.common import config  # noqa: F401
    from oslo_config import cfg

    ovs_conf.register_ovs_agent_opts(cfg.CONF)
    if "ovsdb_connection" not in cfg.CONF.OVS:
        cfg.CONF.register_opts(ovsdb_api.API_OPTS, "OVS")
    cfg.CONF([], project="neutron", default_config_files=[])
    cfg.CONF.set_override("ovsdb_connection", f"unix:{switch.env['OVS_RUNDIR']}/db.sock", "OVS")
    cfg.CONF.set_override("firewall_driver", driver, "SECURITYGROUP")
    for context in vars(neutron.privileged).values():
        if hasattr(context, "set_client_mode"):
            context.set_client_mode(False)  # privsep in-process: we are root


def make_bridge(switch: e2e_switch.PrivateOVS) -> Any:
    """A real ``OVSIntegrationBridge`` with the agent's default flows."""
    from neutron.plugins.ml2.drivers.openvswitch.agent.openflow.native import br_int

    name = e2e_switch.unique_name("bnn")
    bridge = br_int.OVSIntegrationBridge(name, datapath_type="netdev", os_ken_app=None)
    bridge.create()
    switch.vsctl(
        "set", "bridge", name, "fail-mode=secure",
        "protocols=OpenFlow10,OpenFlow13,OpenFlow14,OpenFlow15",
    )  # fmt: skip
    e2e_switch.ofctl(switch, "del-flows", name)
    e2e_switch.ofctl(switch, "add-flows", name, "-", input="\n".join(AGENT_FLOWS) + "\n")
    return bridge


def cold(agent: Any, source: PayloadSource, started: float) -> dict[str, Any]:
    """The first sync of every port; ``started`` is before the agent (and driver) were built."""
    t, c = time.perf_counter(), time.process_time()
    agent.setup_port_filters(set(source.rpc["devices"]), set())
    sync_s, cpu_s = time.perf_counter() - t, time.process_time() - c
    return {
        "cold_s": round(time.perf_counter() - started, 4),
        "init_s": round(t - started, 4),
        "sync_s": round(sync_s, 4),
        "sync_cpu_s": round(cpu_s, 4),
    }


def apply_change(
    agent: Any, source: PayloadSource, change: e2e_changes.Change,
    switch: e2e_switch.PrivateOVS, bridge: str, vlans: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    source.set(workload.to_neutron_rpc(change.after))  # the server's view after the change
    new: set[str] = set()
    if change.port is not None:  # Nova plugs the VIF first: not timed
        e2e_switch.plug_ports(switch, bridge, [change.port], vlans)
        new = {change.port["id"]}
    t, c = time.perf_counter(), time.process_time()
    if change.kind in ("+rule", "-rule"):
        agent.security_groups_rule_updated([change.group])
    elif change.kind == "+member":
        agent.security_groups_member_updated([change.group])
    elif change.members_added:
        agent.security_groups_member_updated(sorted(change.members_added))
    agent.setup_port_filters(new, set())
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    return {"s": round(elapsed, 4), "cpu_s": round(cpu, 4), "group": change.group}


def run(args: argparse.Namespace, errors: ErrorCounter) -> dict[str, Any]:
    t0 = time.perf_counter()
    import neutron  # noqa: F401
    from neutron.agent import securitygroups_rpc as sg_rpc

    model = workload.preset(args.preset, args.seed)
    vlans = {n: net["local_vlan"] for n, net in model["networks"].items()}
    source = PayloadSource(workload.to_neutron_rpc(model))
    result: dict[str, Any] = {"status": "ok", "import_s": round(time.perf_counter() - t0, 2)}
    result["neutron"] = _version("neutron")
    e2e_switch.cleanup_leftovers()
    with e2e_switch.PrivateOVS() as switch:
        configure_neutron(switch, args.driver)
        bridge = make_bridge(switch)
        result["plug_s"] = round(
            e2e_switch.plug_ports(switch, bridge.br_name, model["ports"], vlans), 2
        )
        result["vswitchd_before_kib"] = e2e_switch.vswitchd_rss_kib(switch)
        result["rss_before_kib"] = _rss_kib()
        cpu_before = e2e_switch.vswitchd_cpu_s(switch)
        started = time.perf_counter()
        agent = sg_rpc.SecurityGroupAgentRpc(
            context=None, plugin_rpc=source, defer_refresh_firewall=True, integration_bridge=bridge
        )
        if hasattr(agent.firewall, "ipconntrack"):  # Neutron's: no conntrack -D on this host
            agent.firewall.ipconntrack.execute = _no_conntrack
        if hasattr(agent.firewall, "_flows"):  # sgflows': its cold load's connections
            if args.connections is not None:
                agent.firewall._flows.cold_connections = args.connections
            result["connections"] = agent.firewall._flows.cold_connections
        result["driver"] = f"{type(agent.firewall).__module__}.{type(agent.firewall).__qualname__}"
        result.update(cold(agent, source, started))
        result["compiler_peak_kib"] = _maxrss_kib()
        result["flows"] = e2e_switch.flow_count(switch, bridge.br_name)
        result["vswitchd_kib"] = e2e_switch.vswitchd_rss_kib(switch)
        result["vswitchd_cpu_s"] = round(e2e_switch.vswitchd_cpu_s(switch) - cpu_before, 2)
        _fail_on_errors(errors, "cold start")
        _save_partial(args.partial, result)
        if args.changes:
            changes = {}
            for change in e2e_changes.plan(model, args.seed):
                figures = apply_change(agent, source, change, switch, bridge.br_name, vlans)
                figures["flows"] = e2e_switch.flow_count(switch, bridge.br_name)
                _fail_on_errors(errors, change.kind)
                changes[change.kind] = figures
                result["changes"] = changes
                _save_partial(args.partial, result)
            result["peak_kib_after_changes"] = _maxrss_kib()
        result["rpc_calls"] = source.calls
    return result


def _save_partial(path: str | None, result: dict[str, Any]) -> None:
    """What is measured so far, for the parent to keep if the run ends in its timeout."""
    if path:
        Path(path).write_text(json.dumps(result), encoding="utf-8")


def _no_conntrack(cmd: Any, *args: Any, **kwargs: Any) -> str:
    return ""


def _fail_on_errors(errors: ErrorCounter, phase: str) -> None:
    if errors.count:
        raise RuntimeError(f"{phase}: {errors.count} errors logged, first: {errors.first}")


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--driver", choices=["openvswitch", "sgflows"], required=True)
    parser.add_argument("--preset", required=True, choices=sorted(workload.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--changes", action="store_true", help="the changes after the cold start")
    parser.add_argument("--partial", help="write the figures so far here after each phase")
    parser.add_argument(
        "--connections", type=int, help="sgflows driver: its cold load's (default: its own)"
    )
    args = parser.parse_args(argv)
    # eventlet's deprecation notice, printed when futurist imports it: noise in the log
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    errors = ErrorCounter()
    logging.getLogger().addHandler(errors)
    try:
        result = run(args, errors)
    except Exception as e:  # one JSON line whatever happens: the parent records it
        logging.getLogger("e2e").exception("run failed")
        result = {"status": "error", "error": f"{type(e).__name__}: {e}"[:4000]}
    result["maxrss_kib"] = _maxrss_kib()
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    # Neutron's conntrack manager starts a non-daemon worker thread that never ends.
    os._exit(0 if result["status"] == "ok" else 1)


if __name__ == "__main__":
    sys.exit(main())
