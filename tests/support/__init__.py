"""Shared helpers for tests that run a real Open vSwitch and network namespaces.

Import as the top-level package ``support`` with ``tests/`` on ``sys.path`` (the functional
conftest puts it there): ``from support.ovs import PrivateOVS`` and
``from support.netns import NetnsFactory``.

This module holds what both ``ovs`` and ``netns`` need: running commands with clear errors,
unique short names, and a per-process record of everything created outside the process (OVS
run directories, network devices, namespaces) so that a crashed or killed test run is cleaned
up by the next one (``cleanup_leftovers``) and by ``atexit`` in the normal case.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)

__all__ = [
    "REGISTRY_DIR",
    "CommandError",
    "MissingToolError",
    "cleanup_leftovers",
    "forget",
    "record",
    "require_tools",
    "run",
    "unique_name",
    "wait_for",
]

#: One file per test process lists what it created; see ``record``.
REGISTRY_DIR = Path(os.environ.get("SGFLOWS_TEST_REGISTRY", "/tmp/sgflows-tests"))

IFNAMSIZ = 15  # longest Linux interface name


class CommandError(RuntimeError):
    """A command exited non-zero; the message carries its stderr (the tool's own words)."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(f"{' '.join(self.argv)!s} exited {returncode}: {detail}")


class MissingToolError(RuntimeError):
    """A system tool the functional tests need is not installed (never a reason to skip)."""


def require_tools(*tools: str) -> None:
    """Fail loudly (``MissingToolError``) if any of ``tools`` is not on PATH (or /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    missing = [t for t in tools if shutil.which(t, path=path) is None]
    if missing:
        raise MissingToolError(
            f"missing tools {missing}: install openvswitch-switch, iproute2 and ethtool "
            "(`make deps-system`)"
        )


def run(
    *argv: str,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (text mode, output captured); raise ``CommandError`` on failure if ``check``."""
    proc = subprocess.run(
        list(argv),
        env=dict(env) if env is not None else None,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def unique_name(prefix: str, length: int = IFNAMSIZ) -> str:
    """``prefix`` plus random hex, at most ``length`` characters (default: an interface name).

    Random rather than counted so that concurrent test sessions on one machine (the LOCAL port
    of a userspace bridge is a tap in the host namespace) never collide.
    """
    room = length - len(prefix)
    if room < 6:
        raise ValueError(f"prefix {prefix!r} leaves fewer than 6 random characters")
    return prefix + secrets.token_hex(4)[: min(room, 8)]


# --- leftovers registry ----------------------------------------------------------------------
# Lines "KIND VALUE" with KIND in {ovsdir, link, netns}. Cleaning an entry that is already gone
# is a no-op, so entries are never removed one by one: the whole file goes when its process
# has cleaned up (atexit) or, if the process died, when another test process cleans after it.


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) may contain spaces, so split after ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _own_registry() -> Path:
    return REGISTRY_DIR / f"{os.getpid()}.{_start_time(os.getpid())}.txt"


_atexit_registered = False


def record(kind: str, value: str) -> None:
    """Note that this process created ``value`` (an ``ovsdir``, ``link`` or ``netns``)."""
    global _atexit_registered
    if kind not in ("ovsdir", "link", "netns"):
        raise ValueError(kind)
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    with _own_registry().open("a") as f:
        f.write(f"{kind} {value}\n")
    if not _atexit_registered:
        atexit.register(_cleanup_own)
        _atexit_registered = True


def forget() -> None:
    """Clean everything this process recorded (idempotent) and drop its registry file."""
    _cleanup_own()


def _cleanup_own() -> None:
    path = _own_registry()
    if path.exists():
        _clean_registry_file(path)


def _kill_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"ovs" not in cmdline:  # pid reused by something else
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _clean_entry(kind: str, value: str) -> None:
    if kind == "ovsdir":
        d = Path(value)
        if d.is_dir():
            for pidfile in (d / "run").glob("*.pid"):
                _kill_pidfile(pidfile)
            if not os.environ.get("SGFLOWS_KEEP_OVS"):  # keep logs for a post-mortem
                shutil.rmtree(d, ignore_errors=True)
    elif kind == "link":
        if Path(f"/sys/class/net/{value}").exists():
            run("ip", "link", "del", value, check=False)
    elif kind == "netns":
        if Path(f"/run/netns/{value}").exists():
            run("ip", "netns", "del", value, check=False)


def _clean_registry_file(path: Path) -> None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return
    # Daemons first (they hold devices), then devices, then namespaces.
    order = {"ovsdir": 0, "link": 1, "netns": 2}
    entries = [tuple(line.split(" ", 1)) for line in lines if " " in line]
    for kind, value in sorted(entries, key=lambda e: order.get(e[0], 9)):
        try:
            _clean_entry(kind, value)
        except Exception as exc:  # keep going: this is best-effort cleanup
            LOG.warning("cleaning %s %s failed: %s", kind, value, exc)
    path.unlink(missing_ok=True)


def cleanup_leftovers() -> int:
    """Clean what dead test processes left behind; return how many registries were cleaned.

    Live processes (other concurrent test sessions) are left alone: a registry belongs to a
    dead process when no process has its pid with the same start time.
    """
    if not REGISTRY_DIR.is_dir():
        return 0
    cleaned = 0
    for path in REGISTRY_DIR.glob("*.txt"):
        try:
            pid_s, start, _ = path.name.split(".", 2)
            pid = int(pid_s)
        except ValueError:
            continue
        if pid == os.getpid() or _start_time(pid) == start:
            continue
        LOG.info("cleaning leftovers of dead test process %s", pid)
        _clean_registry_file(path)
        cleaned += 1
    return cleaned


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01
) -> None:
    """Poll ``predicate()`` until true or raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
