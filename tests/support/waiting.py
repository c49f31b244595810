"""One poll loop for the suites that wait on real processes (agent, controller, switch).

Standard library only: the Neutron driver suites import ``support`` from Neutron's own venv,
and the control-plane suites run before the Rust core is built.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_until"]


def wait_until(
    what: str, predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    An exception from ``predicate`` counts as "not yet" (a socket not listening yet, a file
    half written). The deadline is generous setup slack, not a measurement: on timeout an
    ``AssertionError`` names ``what`` and the last value seen.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = predicate()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")
