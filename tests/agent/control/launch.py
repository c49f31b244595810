"""Run ``python -m sgflows.agent`` from the source tree, even before the Rust core is built.

Tests start controllers and agents as real processes through this file; see
``conftest._import_agent_without_the_compiled_core`` for why the fallback exists.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parents[3] / "python"

if __name__ == "__main__":
    sys.path.insert(0, str(PYTHON_DIR))
    try:
        import sgflows  # noqa: F401
    except ImportError:
        for name in [m for m in sys.modules if m == "sgflows" or m.startswith("sgflows.")]:
            del sys.modules[name]
        package = types.ModuleType("sgflows")
        package.__path__ = [str(PYTHON_DIR / "sgflows")]
        sys.modules["sgflows"] = package
    from sgflows.agent.__main__ import cli

    cli(prog_name="sgflows")
