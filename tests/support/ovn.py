"""A private OVN central (Northbound and Southbound ``ovsdb-server``s and ``ovn-northd``)
in a private directory, stopped by pid (``tests/ovn/conftest.py`` makes it a fixture)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG = logging.getLogger(__name__)

SCHEMAS = Path("/usr/share/ovn")


@dataclass
class OvnCentral:
    """Private NB and SB databases and ovn-northd under ``base``."""

    base: Path
    pids: list[int] = field(default_factory=list)
    startup_seconds: float = 0.0

    @property
    def nb(self) -> str:
        return f"unix:{self.base}/nb.sock"

    @property
    def sb(self) -> str:
        return f"unix:{self.base}/sb.sock"

    def nbctl(self, *args: str) -> str:
        return _run("ovn-nbctl", f"--db={self.nb}", *args)

    def start(self) -> None:
        began = time.monotonic()
        for name in ("nb", "sb"):
            db = self.base / f"{name}.db"
            _run("ovsdb-tool", "create", str(db), str(SCHEMAS / f"ovn-{name}.ovsschema"))
            self._daemon(
                name,
                "ovsdb-server",
                str(db),
                f"--remote=punix:{self.base}/{name}.sock",
            )
        self._daemon("northd", "ovn-northd", f"--ovnnb-db={self.nb}", f"--ovnsb-db={self.sb}")
        self.nbctl("--wait=sb", "sync")
        self.startup_seconds = time.monotonic() - began
        LOG.info("OVN central ready in %.2f s", self.startup_seconds)

    def _daemon(self, name: str, program: str, *args: str) -> None:
        pidfile = self.base / f"{name}.pid"
        _run(
            program,
            *args,
            f"--pidfile={pidfile}",
            f"--unixctl={self.base}/{name}.ctl",
            f"--log-file={self.base}/{name}.log",
            "--detach",
        )
        self.pids.append(int(pidfile.read_text().strip()))

    def reset(self) -> None:
        """Empties the Northbound database (every sgflows table) and waits for northd."""
        for table in ("ACL", "Port_Group", "Address_Set", "Logical_Switch"):
            for uuid in self.nbctl("--bare", "--columns=_uuid", "list", table).split():
                self.nbctl("--if-exists", "destroy", table, uuid)
        self.nbctl("--wait=sb", "sync")

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.pids.clear()


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout
