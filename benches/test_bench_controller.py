"""The controller-load benchmark (``controller_load.py``) as part of the suites.

In the normal test run (``--benchmark-disable``) it runs once on 20 agents so the code cannot
rot; it asserts what the run must show (every report answered, the table full), never a
speed. ``make bench`` (``--benchmark-enable``) runs the figure of issue 16: 1,000 agents
reporting every 30 s, and prints the row recorded in ``results/controller.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import controller_load

pytest.importorskip("msgpack")


def test_controller_report_load(request: pytest.FixtureRequest) -> None:
    full = not request.config.getoption("benchmark_disable", False)
    agents, total = (1000, 6000) if full else (20, 60)
    result = controller_load.run(agents, 30.0, total, connections=4)
    print("\n" + controller_load.HEADER + "\n" + controller_load.markdown_row(result))
    assert result["reports"] == total and result["agents"] == agents
    assert result["report_bytes"] > 500  # realistic reports, not empty ones
    assert result["db_kb"] > 0
