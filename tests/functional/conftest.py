"""Fixtures for functional tests against a real userspace Open vSwitch and namespaces.

- ``ovs`` (session): one ``PrivateOVS`` for the whole run.
- ``bridge`` (function): a fresh bridge with a unique name, deleted afterwards.
- ``netns_factory`` (function): ``NetnsFactory``; its namespaces are deleted afterwards.

Tests using them carry ``pytest.mark.ovs`` / ``pytest.mark.netns`` (added automatically too,
so ``-m "not netns"`` deselects them). A missing tool fails the test, it never skips it.

The support package is ``tests/support``, imported as top-level ``support`` with ``tests/``
on ``sys.path`` (inserted below, since pytest runs with ``--import-mode=importlib``).
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from support import cleanup_leftovers  # noqa: E402
from support.netns import NetnsFactory  # noqa: E402
from support.ovs import Bridge, PrivateOVS  # noqa: E402

_FIXTURE_MARKS = {"ovs": "ovs", "bridge": "ovs", "netns_factory": "netns"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for fixture, mark in _FIXTURE_MARKS.items():
            if fixture in names and item.get_closest_marker(mark) is None:
                item.add_marker(getattr(pytest.mark, mark))


@pytest.fixture(scope="session")
def ovs() -> Iterator[PrivateOVS]:
    """One private ovsdb-server + ovs-vswitchd (userspace) for the test session."""
    cleanup_leftovers()  # what killed earlier runs left behind; live sessions are spared
    with PrivateOVS() as switch:
        yield switch


@pytest.fixture
def bridge(ovs: PrivateOVS) -> Iterator[Bridge]:
    """A new empty bridge (fail-mode secure, so it drops everything until given flows)."""
    if not ovs.running:  # a test crashed it: say so instead of failing obscurely after
        pytest.fail(f"ovs-vswitchd is not running; log tail:\n{ovs.log_tail()}")
    br = ovs.add_bridge()
    try:
        yield br
    finally:
        br.delete()


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    """Make namespaces with ``netns_factory(bridge, ofport, ipv4=..., ipv6=...)``."""
    cleanup_leftovers()
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure in a test that used the switch, append the ovs-vswitchd log tail."""
    rep = yield
    switch = getattr(item, "funcargs", {}).get("ovs")
    if rep.failed and rep.when == "call" and isinstance(switch, PrivateOVS):
        rep.sections.append(("ovs-vswitchd log (tail)", switch.log_tail()))
    return rep
