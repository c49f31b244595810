"""Runs the Neutron driver suites in the Neutron virtual environment, creating it first if
needed (``tests/neutron/setup-venv.sh``: about a minute the first time, a no-op after).

- ``inside/``: the driver in Neutron 29.0.0's agent code, on a real ``OVSIntegrationBridge``.
- ``functional/``: Neutron's own functional firewall tests against ``sgflows`` (and, with
  ``SGFLOWS_NEUTRON_NATIVE=1``, against Neutron's ``openvswitch`` driver the same way), in a
  network namespace of their own (``unshare -n``): real packets between namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = Path(os.environ.get("SGFLOWS_NEUTRON_VENV", ROOT / "build" / "neutron29-venv"))
PYTHON = str(VENV / "bin" / "python")

pytestmark = [pytest.mark.ovs, pytest.mark.netns]


@pytest.fixture(scope="module")
def neutron_venv() -> Path:
    setup = subprocess.run(
        [str(HERE / "setup-venv.sh"), str(VENV)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    return VENV


def _pytest(directory: Path, *args: str, netns: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [PYTHON, "-u", "-W", "ignore", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    if netns:
        # A network namespace of its own, with loopback up for the os-ken controller.
        script = 'ip link set lo up && exec "$@"'
        cmd = ["unshare", "-n", "sh", "-c", script, "sh", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=directory, check=False)


@pytest.mark.timeout(600)
def test_driver_in_neutron_agent_code(neutron_venv: Path) -> None:
    run = _pytest(HERE / "inside")
    print(run.stdout[-20000:])
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]


@pytest.mark.timeout(2400)
def test_neutron_functional_firewall_tests(neutron_venv: Path) -> None:
    select = "Sgflows or Native" if os.environ.get("SGFLOWS_NEUTRON_NATIVE") else "Sgflows"
    run = _pytest(HERE / "functional", "-k", select, netns=True)
    print(run.stdout[-20000:])
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
