"""Fixtures of the agent's Open vSwitch dataplane tests (``support.hypervisor``)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[2])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support import cleanup_leftovers  # noqa: E402
from support.hypervisor import Hypervisor  # noqa: E402
from support.netns import NetnsFactory  # noqa: E402


@pytest.fixture
def hv() -> Iterator[Hypervisor]:
    cleanup_leftovers()
    root = Path(tempfile.mkdtemp(prefix="sgflows-aovs-", dir="/tmp"))
    h = Hypervisor(root)
    try:
        yield h
    finally:
        h.close()
        for name in ("agent", "controller"):
            log = root / f"{name}.log"
            if log.exists() and "Traceback" in log.read_text(errors="replace"):
                print(f"--- {name}.log ---\n{log.read_text(errors='replace')[-6000:]}")
        if not os.environ.get("SGFLOWS_KEEP_OVS"):
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()
