"""Fixtures of the proof suite (evaluator vs. real Open vSwitch).

``tests/`` and this directory go on ``sys.path`` (pytest runs with ``--import-mode=importlib``)
so that ``support`` and ``proofkit`` import as top-level modules; the switch fixtures are the
functional suite's (``ovs`` per session, ``bridge`` and ``netns_factory`` per test).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from functional.conftest import bridge, netns_factory, ovs  # noqa: E402

__all__ = ["bridge", "netns_factory", "ovs"]

# CI: bounded and reproducible. Locally: SGFLOWS_PROOF_PROFILE=long (or =soak) for more.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=int(os.environ.get("SGFLOWS_PROOF_EXAMPLES", "200")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "long",
    deadline=None,
    max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "soak",
    deadline=None,
    max_examples=20000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = os.environ.get("SGFLOWS_PROOF_PROFILE", "ci")
