"""Installing a port's rte_flow rules through DPDK's API: a client of the
``sgflows-rte-flow`` binary (``src/bin/rte_flow/``, built with the Cargo feature ``dpdk`` by
``make rte-flow-installer``), which creates the rules of ``compile_rte_flow_port(...)
.document()["rules"]`` on a DPDK port, all-or-nothing, and answers one JSON line per request
(docs/rte_flow.md, "Installer").

The rules live as long as the installer process: DPDK's flows belong to the process that
created them, so :class:`Installer` is a context manager and closing it removes every rule.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

BINARY = "sgflows-rte-flow"
BUILD_HINT = (
    "the rte_flow installer is not built: run `make rte-flow-installer` (cargo build --release "
    "--features dpdk --bin sgflows-rte-flow; needs dpdk-dev 22.11), or set SGFLOWS_RTE_FLOW_BIN"
)


class InstallerMissing(FileNotFoundError):
    """The ``sgflows-rte-flow`` binary (Cargo feature ``dpdk``) is not built."""


class InstallerError(RuntimeError):
    """The installer process failed (could not start DPDK, died, or answered nonsense)."""


def find_binary() -> str:
    """``$SGFLOWS_RTE_FLOW_BIN``, else the checkout's release build, else ``PATH``."""
    env = os.environ.get("SGFLOWS_RTE_FLOW_BIN")
    if env:
        if not os.access(env, os.X_OK):
            raise InstallerMissing(f"SGFLOWS_RTE_FLOW_BIN={env} is not an executable")
        return env
    built = Path(__file__).resolve().parents[2] / "target" / "release" / BINARY
    if os.access(built, os.X_OK):
        return str(built)
    found = shutil.which(BINARY)
    if found is None:
        raise InstallerMissing(BUILD_HINT)
    return found


def eal_args(vdev: str, *, prefix: str = "sgfinstall") -> list[str]:
    """EAL arguments for one virtual port without hugepages or PCI (as the tests use)."""
    return [
        "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
        f"--file-prefix={prefix}", f"--vdev={vdev}", "--log-level=error",
    ]  # fmt: skip


class Installer:
    """A running installer on one DPDK port; every method returns the binary's answer."""

    def __init__(
        self,
        eal: Sequence[str],
        *,
        port: int = 0,
        rx_queues: int = 2,
        tx_queues: int | None = None,
        binary: str | None = None,
        timeout: float = 120,
    ) -> None:
        self.timeout = timeout
        self._proc = subprocess.Popen(
            [binary or find_binary()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.closed: dict[str, Any] | None = None
        # As many tx queues as rx unless told otherwise: net_tap refuses to configure a port
        # with fewer (EPERM). The binary defaults to the same; saying it keeps this explicit.
        answer = self._ask(
            {"op": "init", "eal": list(eal), "port": port, "rx_queues": rx_queues,
             "tx_queues": rx_queues if tx_queues is None else tx_queues}
        )  # fmt: skip
        if not answer.get("ok"):
            self._reap()
            raise InstallerError(f"DPDK did not start: {answer.get('error')}")
        self.init_seconds = float(answer.get("seconds", 0.0))
        #: The rx and tx queues the port got, as DPDK reports them (0 when it did not say).
        self.queues = (int(answer.get("rx_queues", 0)), int(answer.get("tx_queues", 0)))

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        if self._proc.stdin is None or self._proc.stdout is None:
            raise InstallerError("the installer has no pipes")
        return self._proc.stdin, self._proc.stdout

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        stdin, stdout = self._pipes()
        try:
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        except BrokenPipeError as e:
            raise InstallerError(f"the installer exited: {self._stderr()}") from e
        line = stdout.readline()
        if not line:
            raise InstallerError(f"the installer exited: {self._stderr()}")
        try:
            answer: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as e:
            raise InstallerError(f"the installer answered {line!r}") from e
        return answer

    def _stderr(self) -> str:
        self._proc.wait(timeout=self.timeout)
        err = self._proc.stderr.read() if self._proc.stderr else ""
        return err.strip()[-2000:] or f"exit status {self._proc.returncode}"

    def install(self, port: str, rules: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A port's whole rule set, all-or-nothing (``ok``, ``created`` or ``failed_rule``,
        ``error``, ``rolled_back``)."""
        return self._ask({"op": "install", "port": port, "rules": list(rules)})

    def update(self, port: str, rules: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Move the port to ``rules``: new ones created first, then the old ones destroyed."""
        return self._ask({"op": "update", "port": port, "rules": list(rules)})

    def remove(self, port: str) -> dict[str, Any]:
        return self._ask({"op": "remove", "port": port})

    def counters(self, port: str) -> dict[str, Any]:
        return self._ask({"op": "counters", "port": port})

    def probe(self, shapes: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Per shape ``{name, rule}``: validate, then a trial create destroyed at once."""
        return self._ask({"op": "probe", "shapes": list(shapes)})

    def close(self) -> dict[str, Any]:
        """Destroys every rule, closes the port and ends the process."""
        if self.closed is not None:
            return self.closed
        stdin, stdout = self._pipes()
        try:
            stdin.write('{"op": "quit"}\n')
            stdin.flush()
            line = stdout.readline()
        except BrokenPipeError:
            line = ""
        self._reap()
        self.closed = json.loads(line) if line else {"ok": False}
        return self.closed

    def _reap(self) -> None:
        try:
            self._proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for f in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> Installer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
