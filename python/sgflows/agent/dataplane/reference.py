"""Reference dataplanes for tests and dry runs: they program nothing.

:class:`NullDataplane` only counts; :class:`FileDataplane` writes the controller's reply it was
given to a JSON file, so that a test (or an operator trying the control plane) sees what the
agent would apply. Neither filters a packet: on a hypervisor use ``dataplane = ovs``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import auth, status
from .api import DataplaneBase, DataplaneError, counts_of


class NullDataplane(DataplaneBase):
    """For tests and dry runs: applies nothing; counts what it was given."""

    async def apply(self, info: dict[str, Any], *, full: bool) -> dict[str, int]:
        """Count only."""
        return counts_of(info)


class FileDataplane(DataplaneBase):
    """For tests and dry runs: writes what it is given to a JSON file (atomically)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.applied = 0

    async def apply(self, info: dict[str, Any], *, full: bool) -> dict[str, int]:
        """Write ``{"full", "applied_at", "count", "info"}`` to the file."""
        self.applied += 1
        data = {"full": full, "applied_at": time.time(), "count": self.applied, "info": info}
        try:
            status.make_dirs(self.path.parent)
            auth.write_private_file(self.path, json.dumps(data, sort_keys=True).encode())
        except OSError as exc:
            raise DataplaneError(f"cannot write {self.path}: {exc}") from exc
        return counts_of(info)
