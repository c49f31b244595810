"""Runs ``tests/neutron/inside`` (the firewall driver in Neutron 29.0.0's agent code) in the
Neutron virtual environment, creating it first if needed (``tests/neutron/setup-venv.sh``, about
a minute the first time, a no-op after)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = Path(os.environ.get("SGFLOWS_NEUTRON_VENV", ROOT / "build" / "neutron29-venv"))

pytestmark = [pytest.mark.ovs, pytest.mark.netns]


@pytest.mark.timeout(1800)
def test_driver_suite_in_neutron_venv() -> None:
    setup = subprocess.run(
        [str(HERE / "setup-venv.sh"), str(VENV)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert setup.returncode == 0, setup.stdout + setup.stderr
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "-W", "ignore", "-m", "pytest", "-q", "-p",
         "no:cacheprovider", str(HERE / "inside")],
        capture_output=True,
        text=True,
        cwd=HERE / "inside",
        check=False,
    )  # fmt: skip
    print(run.stdout[-20000:])
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
