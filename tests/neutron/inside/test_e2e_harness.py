"""The end-to-end benchmark's agent child (``benches/e2e_neutron.py``) at ``p10``, for both
drivers: it loads each by its alias into ``SecurityGroupAgentRpc`` over a real
``OVSIntegrationBridge`` on its own private switch, syncs every port and applies the four
changes. Asserts that it ran and what the switch must show, never a speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHES = Path(__file__).resolve().parents[3] / "benches"


def _run(driver: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, str(BENCHES / "e2e_neutron.py"), "--driver", driver, "--preset", "p10",
         "--changes"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok", (result, run.stderr[-3000:])
    return result


@pytest.mark.parametrize(
    ("driver", "cls"),
    [("openvswitch", "OVSFirewallDriver"), ("sgflows", "SgflowsFirewallDriver")],
)
def test_agent_child_syncs_and_changes(driver: str, cls: str) -> None:
    result = _run(driver)
    assert result["driver"].endswith(cls)
    assert result["neutron"] == "29.0.0"
    assert result["flows"] > 1000  # the workload's filters, beyond the agent's 5 flows
    changes = result["changes"]
    assert list(changes) == ["+rule", "-rule", "+member", "+port"]
    # a new port gets its own flows; a removed rule takes flows away
    assert changes["+port"]["flows"] > changes["+member"]["flows"]
    assert changes["-rule"]["flows"] < changes["+rule"]["flows"]
