"""Fixtures of the flow-economy suite: the functional suite's real Open vSwitch."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from functional.conftest import bridge, ovs  # noqa: E402

__all__ = ["bridge", "ovs"]
