"""Fixtures for the OVN target.

- ``ovn_central`` (session): one ``support.ovn.OvnCentral`` (private NB and SB databases and
  ``ovn-northd``) for the run; ``reset()`` empties the Northbound database.
- ``ovn_chassis`` (session): one ``support.ovn.OvnChassis`` attached to it (userspace Open
  vSwitch with ``br-int`` in a private namespace, ``ovn-controller``); tests bind the ports
  they need and ``unbind_all()`` afterwards.

Logical verdicts come from ``ovn-trace`` on the Southbound database, which needs no
``ovn-controller``; physical ones from ``ofproto/trace`` on the chassis' ``br-int``. A missing
tool fails the test, it never skips it.
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

from support import cleanup_leftovers  # noqa: E402
from support.ovn import OvnCentral, OvnChassis  # noqa: E402


@pytest.fixture(scope="session")
def ovn_central() -> Iterator[OvnCentral]:
    with tempfile.TemporaryDirectory(prefix="sgf-ovn-") as base:
        central = OvnCentral(Path(base))
        try:
            central.start()
            yield central
        finally:
            central.stop()


@pytest.fixture(scope="session")
def ovn_chassis(ovn_central: OvnCentral) -> Iterator[OvnChassis]:
    cleanup_leftovers()  # what killed earlier runs left behind; live sessions are spared
    with tempfile.TemporaryDirectory(prefix="sgf-hv-", dir="/tmp") as base:
        chassis = OvnChassis(ovn_central, Path(base))
        try:
            chassis.start()
            yield chassis
        finally:
            chassis.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"ovn_central", "ovn_chassis"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ovn)
