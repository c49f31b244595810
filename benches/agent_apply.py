"""What the agent's Open vSwitch dataplane costs on a real switch (issue 15).

A private userspace Open vSwitch (``tests/support/ovs.py``, its own network namespace) with
``--ports`` VM ports plugged (internal ports with Nova's external ids, in one ``ovs-vsctl``
transaction per 100), and the agent's :class:`~sgflows.agent.dataplane.ovs.OvsDataplane`
in this process, fed the seeded workload of ``benches/workload.py`` as Neutron's RPC reply
(``--rules`` rules per group). Times, wall clock, each from the call to the flows being on
the switch (the bundle has been accepted when ``apply`` returns):

* ``start → filtered``: ``start()`` (OVSDB replica, bridge checks) and the first ``apply`` (a
  full sync on an empty bridge) — the agent's start-up with every port already plugged;
* ``rule change``: one rule added to a group (a session diff);
* ``port added``: one more port plugged, its OVSDB row seen, its ``apply``.

    python benches/agent_apply.py --ports 100 1000 [--rules 10] [--record]

prints a Markdown table and, with ``--record``, appends it to ``benches/results/agent.md``.
Needs root (network namespaces) and openvswitch-switch.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import workload  # noqa: E402
from sgflows.agent.dataplane.ovs import OvsDataplane  # noqa: E402
from sgflows.agent.dataplane.settings import OvsSettings  # noqa: E402
from support.ovs import PrivateOVS  # noqa: E402

COOKIE = 0x5347_0000_0000_0BE0
LOG = logging.getLogger("agent_apply")


def agent_info(ports: int, rules: int) -> tuple[dict[str, Any], dict[str, tuple[int, str]]]:
    """The workload as the controller's reply (local VLAN on each port) and its plugs."""
    rpc = workload.to_neutron_rpc(workload.generate(ports, rules_per_group=rules, seed=0))
    bindings = rpc.pop("bindings")
    for group, rules in rpc["security_groups"].items():
        # Open vSwitch cannot match DCCP/UDP-Lite ports: the agent refuses such a model
        # rather than widen the rule (the driver widens, as Neutron does).
        rpc["security_groups"][group] = [r for r in rules if not _unmatchable(r)]
    plugs = {}
    for port_id, device in rpc["devices"].items():
        device["local_vlan"] = bindings[port_id]["local_vlan"]
        plugs[port_id] = (int(bindings[port_id]["ofport"]), str(device["mac_address"]))
    return rpc, plugs


def _unmatchable(rule: dict[str, Any]) -> bool:
    return str(rule.get("protocol")) in {"33", "136", "dccp", "udplite"} and (
        "port_range_min" in rule or "source_port_range_min" in rule
    )


def plug_all(ovs: PrivateOVS, bridge: str, plugs: dict[str, tuple[int, str]]) -> None:
    items = sorted(plugs.items(), key=lambda kv: kv[1][0])
    for start in range(0, len(items), 100):
        args: list[str] = []
        for port_id, (ofport, mac) in items[start : start + 100]:
            name = f"bp{ofport}"
            ids = [f'external_ids:iface-id="{port_id}"', f'external_ids:attached-mac="{mac}"']
            args += ["--", "add-port", bridge, name, "--", "set", "Interface", name,
                     "type=internal", f"ofport_request={ofport}", *ids]  # fmt: skip
        ovs.vsctl(*args, timeout=120)


async def measure(ports: int, rules: int) -> dict[str, Any]:
    info, plugs = agent_info(ports + 1, rules)
    extra_id = max(plugs, key=lambda p: plugs[p][0])
    extra = plugs.pop(extra_id)
    extra_device = info["devices"].pop(extra_id)
    with PrivateOVS() as ovs:
        br = ovs.add_bridge()
        plug_all(ovs, br.name, plugs)
        dp = OvsDataplane(
            OvsSettings(bridge=br.name, ovsdb=ovs.db_remote, cookie=COOKIE, check_interval=60)
        )
        os.environ.update(ovs.env)  # ovs-ofctl/-appctl reach this switch
        t0 = time.perf_counter()
        await dp.start()
        await _until(lambda: len(dp.local_ports()) == ports)
        LOG.info("OVSDB replica complete after %.2fs", time.perf_counter() - t0)
        await dp.apply(info, full=True)
        start_s = time.perf_counter() - t0
        flows = dp.stats["flows"]
        assert br.flow_count() >= flows, "flows missing on the switch"

        changed = copy.deepcopy(info)
        # A project's default group: its rules admit only its own members, so this is new.
        group = next(g for g in sorted(changed["security_groups"]) if "default" in g)
        changed["security_groups"][group].append(
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
             "port_range_min": 4321, "port_range_max": 4321, "stateful": True,
             "source_ip_prefix": "198.51.100.7/32"}
        )  # fmt: skip
        await asyncio.sleep(1.0)  # let the reconciles after our own tag changes pass
        t0 = time.perf_counter()
        await dp.apply(changed, full=False)
        rule_s = time.perf_counter() - t0
        rule_lines = dp.stats["last_bundle_lines"]
        assert rule_lines > 0, "the rule change changed nothing"

        plug_all(ovs, br.name, {extra_id: extra})
        await _until(lambda: extra_id in dp.local_ports())
        changed = copy.deepcopy(changed)  # a new reply: the agent holds on to the old one
        changed["devices"][extra_id] = extra_device
        await asyncio.sleep(1.0)  # the new port is closed first: let that apply pass
        t0 = time.perf_counter()
        await dp.apply(changed, full=False)
        port_s = time.perf_counter() - t0
        port_lines = dp.stats["last_bundle_lines"]
        assert dp.stats["full_syncs"] == 1 and dp.stats["closed_ports"] == 0
        await dp.stop()
    return {
        "ports": ports, "rules": rules, "flows": flows, "start_s": start_s,
        "rule_s": rule_s, "rule_lines": rule_lines, "port_s": port_s, "port_lines": port_lines,
    }  # fmt: skip


async def _until(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the OVSDB replica did not catch up")
        await asyncio.sleep(0.02)


def table(rows: list[dict[str, Any]]) -> str:
    load = os.getloadavg()[0]
    head = (
        f"\n`python benches/agent_apply.py --ports {' '.join(str(r['ports']) for r in rows)}"
        f" --rules {rows[0]['rules']}` on {platform.node()} ({os.cpu_count()} cores, "
        f"load average {load:.1f} at the end), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        "\n\n| ports | flows | start → all filtered | rule change (bundle lines) "
        "| port added (bundle lines) |\n"
        "|---:|---:|---:|---:|---:|\n"
    )
    body = "".join(
        f"| {r['ports']} | {r['flows']} | {r['start_s']:.2f} s | {r['rule_s'] * 1000:.0f} ms "
        f"({r['rule_lines']}) | {r['port_s'] * 1000:.0f} ms ({r['port_lines']}) |\n"
        for r in rows
    )
    return head + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--rules", type=int, default=10, help="rules per group")
    parser.add_argument("--record", action="store_true", help="append to results/agent.md")
    parser.add_argument("--debug", action="store_true", help="log the dataplane's steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    rows = [asyncio.run(measure(n, args.rules)) for n in args.ports]
    text = table(rows)
    print(text)
    if args.record:
        with open(HERE / "results" / "agent.md", "a") as out:
            out.write(text)


if __name__ == "__main__":
    main()
