"""The Neutron driver suite runs in its own virtual environment (``make deps-neutron``).

``inside/`` and ``functional/`` hold the tests that import Neutron; the main test run collects only
``test_neutron_suite.py``, which runs them in that environment. Run inside the Neutron venv
(``build/neutron29-venv/bin/python -m pytest tests/neutron/inside``), they are collected
directly.
"""

from __future__ import annotations

import importlib.util

_IN_NEUTRON_VENV = importlib.util.find_spec("neutron") is not None
collect_ignore = ["test_neutron_suite.py"] if _IN_NEUTRON_VENV else ["inside", "functional"]
