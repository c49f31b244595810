"""Fixtures for the OVN target.

- ``ovn_central`` (session): one ``support.ovn.OvnCentral`` (private NB and SB databases and
  ``ovn-northd``) for the run; ``reset()`` empties the Northbound database.

Logical verdicts come from ``ovn-trace`` on the Southbound database, which needs no
``ovn-controller``. A missing tool fails the test, it never skips it.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support.ovn import OvnCentral  # noqa: E402


@pytest.fixture(scope="session")
def ovn_central() -> Iterator[OvnCentral]:
    with tempfile.TemporaryDirectory(prefix="sgf-ovn-") as base:
        central = OvnCentral(Path(base))
        try:
            central.start()
            yield central
        finally:
            central.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "ovn_central" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ovn)
