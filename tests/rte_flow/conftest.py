"""Fixtures of the rte_flow backend tests (helpers live in ``rtehelpers`` and ``rteinterp``).

``--import-mode=importlib`` puts no test directory on ``sys.path``; this one is added so test
modules can ``from rtehelpers import ...`` (names no other test directory uses).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
