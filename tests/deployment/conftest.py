"""The real-deployment suite runs in the Neutron virtual environment (``make deps-neutron``)
and in a network namespace of its own (its servers all listen on that namespace's 127.0.0.1).

``inside/`` holds the tests that need Neutron; the main test run collects only
``test_deployment_suite.py``, which starts them there.
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
collect_ignore = ["test_deployment_suite.py"] if _IN_NEUTRON_VENV else ["inside"]
