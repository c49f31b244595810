"""The Neutron driver suite runs in its own virtual environment (``make deps-neutron``).

``inside/`` and ``functional/`` hold the tests that import Neutron; the main test run collects only
``test_neutron_suite.py``, which runs them in that environment. Run inside the Neutron venv
(``build/neutron29-venv/bin/python -m pytest tests/neutron/inside``), they are collected
directly.
"""

from __future__ import annotations

from importlib import metadata


def _neutron_installed() -> bool:
    # The installed distribution, not ``find_spec("neutron")``: a test module that puts
    # ``tests/`` on ``sys.path`` makes ``tests/neutron`` look like a package of that name.
    try:
        metadata.version("neutron")
    except metadata.PackageNotFoundError:
        return False
    return True


_IN_NEUTRON_VENV = _neutron_installed()
collect_ignore = ["test_neutron_suite.py"] if _IN_NEUTRON_VENV else ["inside", "functional"]
