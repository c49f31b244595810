"""Runs ``tests/deployment/inside`` (a one-host Neutron deployment with the real OVS agent) in
the Neutron virtual environment, inside a fresh network namespace, creating the venv first if
needed (``tests/neutron/setup-venv.sh``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TESTS = HERE.parent
VENV = Path(os.environ.get("SGFLOWS_NEUTRON_VENV", ROOT / "build" / "neutron29-venv"))

sys.path.insert(0, str(TESTS))
from support import cleanup_leftovers, record, run, unique_name  # noqa: E402

pytestmark = [pytest.mark.ovs, pytest.mark.netns]


@pytest.mark.timeout(2400)
def test_deployment_suite_in_neutron_venv() -> None:
    cleanup_leftovers()
    setup = subprocess.run(
        [str(ROOT / "tests" / "neutron" / "setup-venv.sh"), str(VENV)],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stdout + setup.stderr
    netns = unique_name("sgd")
    record("netns", netns)
    run("ip", "netns", "add", netns)
    try:
        run("ip", "-n", netns, "link", "set", "lo", "up")
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, str(VENV / "bin" / "python"), "-W", "ignore", "-m",
             "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "inside")],
            capture_output=True, text=True, cwd=HERE / "inside", check=False,
        )  # fmt: skip
    finally:
        run("ip", "netns", "del", netns, check=False)
    print(proc.stdout[-30000:])
    assert proc.returncode == 0, proc.stdout[-30000:] + proc.stderr[-5000:]
