"""Fixtures of the real-deployment suite (run in the Neutron venv, in a private namespace).

- ``deployment`` (session): a private userspace Open vSwitch in this namespace (with the
  provider bridge ``br-phys``) and ``Deployment``: MariaDB, RabbitMQ, Neutron's API, RPC server
  and periodic workers. Reusable by benchmarks: import ``deployment.Deployment`` or use the
  fixture.
- ``RESULTS``: what each driver's scenario observed (and ``bus``: the sgflows agent on
  Neutron's bus, with every ``agent show`` it took); printed side by side at the end of the run
  (and written to ``$SGFLOWS_DEPLOY_REPORT`` if set).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
_TESTS = str(HERE.parents[1])
for _p in (_TESTS, str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from deployment import PROVIDER_BRIDGE, Deployment  # noqa: E402
from support import cleanup_leftovers  # noqa: E402
from support.ovs import PrivateOVS  # noqa: E402

VENV = Path(sys.prefix)
OVS_KEYS = ("OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_PKGDATADIR")

#: driver -> check -> {"expected": ..., "observed": ...}; plus "figures" per driver.
RESULTS: dict[str, dict[str, Any]] = {}
STARTUP: dict[str, Any] = {}


@pytest.fixture(scope="session")
def private_ovs() -> Iterator[PrivateOVS]:
    cleanup_leftovers()
    # ovs-vswitchd in this (private) namespace: it must reach the agent's OpenFlow controller
    # on 127.0.0.1, and the outer runner gave this session a namespace of its own.
    with PrivateOVS(netns=False) as switch:
        switch.vsctl("add-br", PROVIDER_BRIDGE, "--", "set", "bridge", PROVIDER_BRIDGE,
                     "datapath_type=netdev")  # fmt: skip
        yield switch


@pytest.fixture(scope="session")
def deployment(private_ovs: PrivateOVS) -> Iterator[Deployment]:
    began = time.monotonic()
    d = Deployment(VENV, {k: private_ovs.env[k] for k in OVS_KEYS})
    with d:
        STARTUP["total_seconds"] = round(time.monotonic() - began, 1)
        STARTUP["steps"] = dict(d.startup_seconds)
        yield d


def _agent_summary(row: dict[str, Any]) -> str:
    """The fields of an agent row (API or ``openstack network agent show``) that tell its
    state, on one line (the whole rows go to ``$SGFLOWS_DEPLOY_REPORT``)."""
    conf = row.get("configurations", row.get("configuration")) or {}
    keys = ("state", "phase", "state_since", "degraded_reasons", "restarted", "previous_stop",
            "syncs", "report_replies")  # fmt: skip
    picked = {k: conf.get(k) for k in keys if k in conf}
    picked["transitions"] = [t[1:3] for t in conf.get("transitions", [])]
    head = {k: row.get(k) for k in ("alive", "started_at", "last_heartbeat_at",
                                    "heartbeat_timestamp") if k in row}  # fmt: skip
    return json.dumps({**head, "configurations": picked}, sort_keys=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS and not STARTUP:
        return
    write = terminalreporter.write_line
    write("")
    write(f"deployment start-up: {json.dumps(STARTUP)}")
    drivers = sorted(RESULTS)
    checks: list[str] = []
    for driver in drivers:
        checks += [c for c in RESULTS[driver].get("checks", {}) if c not in checks]
    write("scenario (expected / observed per driver):")
    write("  " + f"{'check':58}" + "".join(f"{d:>22}" for d in drivers))
    for check in checks:
        cells = []
        for driver in drivers:
            r = RESULTS[driver].get("checks", {}).get(check)
            cells.append("-" if r is None else f"{r['expected']}/{r['observed']}")
        write("  " + f"{check:58}" + "".join(f"{c:>22}" for c in cells))
    for driver in drivers:
        write(f"figures {driver}: {json.dumps(RESULTS[driver].get('figures', {}))}")
    for driver in drivers:
        for line in RESULTS[driver].get("agent_errors", []):
            write(f"agent ERROR ({driver}): {line}")
    for driver in drivers:
        if "agent_show" in RESULTS[driver]:
            write(f"openstack network agent show ({driver}):")
            write(RESULTS[driver]["agent_show"])
    for driver in drivers:
        for shown in RESULTS[driver].get("agent_shows", []):
            write(
                f"{driver}: {shown['label']} ({shown['source']}): {_agent_summary(shown['show'])}"
            )
    report = os.environ.get("SGFLOWS_DEPLOY_REPORT")
    if report:
        Path(report).write_text(json.dumps({"startup": STARTUP, "results": RESULTS}, indent=2))
