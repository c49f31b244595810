"""The real-deployment suite runs in the Neutron virtual environment (``make deps-neutron``)
and in a network namespace of its own (its servers all listen on that namespace's 127.0.0.1).

``inside/`` holds the tests that need Neutron; the main test run collects only
``test_deployment_suite.py``, which starts them there.
"""

from __future__ import annotations

import importlib.util

_IN_NEUTRON_VENV = importlib.util.find_spec("neutron") is not None
collect_ignore = ["test_deployment_suite.py"] if _IN_NEUTRON_VENV else ["inside"]
