"""An agent reaching for other hosts' ports, groups and notifications (issue 16, item 9)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from attackhelpers import Controller, model, record
from sgflows.agent import rpc


def test_an_agent_reads_only_what_its_host_needs(controller_process: Controller) -> None:
    ctl = controller_process

    async def read_everything() -> str:
        client = await ctl.client("compute-1")
        try:
            info = await client.call(
                "security_group_info_for_devices", ["w1", "d2", "o3", "mig", "nope"]
            )
            # w1 is bound here, mig has an inactive binding here (a migration target).
            assert sorted(info["devices"]) == ["mig", "w1"]
            assert sorted(info["security_groups"]) == ["ops", "web"]
            assert sorted(info["sg_member_ips"]) == ["web"]  # not db's members
            with pytest.raises(rpc.Forbidden):
                await client.call("devices_for_host", "compute-2")
            with pytest.raises(rpc.Forbidden):
                await client.call("subscribe", "compute-2")
            # The agent table: its own host's row at most, never another host's.
            rows = await client.call("list_agents")
            assert {r["host"] for r in rows} <= {"compute-1"}, rows
        finally:
            await client.close()
        return "other hosts' devices and agents left out; 403 for their host"

    record(ctl, "scoping: compute-1 reads every device", read_everything)

    async def service_reads_all() -> str:
        nova = await ctl.client("nova")
        try:
            info = await nova.call("security_group_info_for_devices", ["w1", "d2", "o3"])
            assert sorted(info["devices"]) == ["d2", "o3", "w1"]
        finally:
            await nova.close()
        return "service principal reads all"

    record(ctl, "scoping: service reads every device", service_reads_all)


def test_notifications_reach_only_the_hosts_that_need_them(
    controller_process: Controller,
) -> None:
    ctl = controller_process
    heard: dict[str, list[tuple[str, dict[str, Any]]]] = {h: [] for h in ("compute-1", "compute-2")}

    async def main() -> None:
        clients = {}
        for host in heard:
            clients[host] = await ctl.client(
                host, lambda m, p, host=host: heard[host].append((m, p[0]))
            )
            sub = await clients[host].call("subscribe", host)
            assert sub["generation"] == 0
        try:
            changed = copy.deepcopy(model())
            changed["security_groups"]["db"]["rules"].append({"direction": "egress"})
            ctl.write_model(changed)
            await _until(lambda: heard["compute-2"])
            changed["security_groups"]["web"]["rules"].append({"direction": "egress"})
            ctl.write_model(changed)
            await _until(lambda: heard["compute-1"])
        finally:
            for client in clients.values():
                await client.close()

    asyncio.run(main())
    # compute-1 never heard of db; its first notification is numbered 1 (no gap to resync on).
    [(method, payload)] = heard["compute-1"]
    assert method == "security_groups_rule_updated"
    assert payload["security_groups"] == ["web"] and payload["generation"] == 1
    [(method, payload)] = heard["compute-2"]
    assert payload["security_groups"] == ["db"] and payload["generation"] == 1


async def _until(predicate: Any) -> None:
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting for a notification")
