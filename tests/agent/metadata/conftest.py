"""Fixtures of the IPv6 metadata election tests (helpers live in ``mdhelpers``).

``--import-mode=importlib`` puts no test directory on ``sys.path``; this one is added so
test modules can ``from mdhelpers import ...`` (a name no other test directory uses).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mdhelpers import (
    _clean_leftovers,
    agents,
    privsep_in_process,
    pytest_terminal_summary,
    segment,
    segment_factory,
)

LOG = logging.getLogger(__name__)

__all__ = [
    "_clean_leftovers",
    "agents",
    "privsep_in_process",
    "pytest_terminal_summary",
    "segment",
    "segment_factory",
]
