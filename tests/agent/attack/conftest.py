"""Fixtures of the attack suite: real controller processes on Unix sockets and loopback.

``--import-mode=importlib`` puts no test directory on ``sys.path``; this one is added so the
test modules can ``from attackhelpers import ...`` (a name no other test directory uses).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attackhelpers import controller_process, pytest_terminal_summary

LOG = logging.getLogger(__name__)

__all__ = ["controller_process", "pytest_terminal_summary"]
