"""Fixtures of the rte_flow backend tests (helpers live in ``rtehelpers`` and ``rteinterp``).

``--import-mode=importlib`` puts no test directory on ``sys.path``; this one is added so test
modules can ``from rtehelpers import ...`` (names no other test directory uses).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def installer_binary() -> str:
    """The release build of the installer (`make rte-flow-installer`; cargo is a no-op when it
    is up to date)."""
    from sgflows import rte_install

    subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--features", "dpdk", "--bin",
         rte_install.BINARY],
        cwd=ROOT, check=True,
    )  # fmt: skip
    return str(ROOT / "target" / "release" / rte_install.BINARY)
