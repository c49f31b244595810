"""Closing the channel to the metadata privsep daemon is bounded (the agent's SIGTERM path),
and a daemon that does not exit is ended: SIGTERM, then SIGKILL, by its pid.

A real oslo.privsep client channel over a socket pair stands in for the daemon's: the far end
either exits on EOF like a healthy daemon, or never does, like one stuck in its shutdown —
a thread where no pid is known, a process of its own where the kill is tested. The last test
starts the real daemon (forked, as the standalone agent does) and checks its pid is the one
tracked.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from oslo_privsep import comm
from sgflows.agent import privileged

#: A stand-in daemon: holds its end of the channel (fd 3), never reads it, never exits on
#: EOF; with "ignore" it also ignores SIGTERM, as the forked daemon does (it inherits the
#: agent's ignored SIGTERM).
STUCK = """
import signal, sys, time
if sys.argv[1] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(60)
"""


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    near, far = socket.socketpair()
    saved = privileged.metadata_ctx.channel, privileged._daemon
    privileged.metadata_ctx.channel = comm.ClientChannel(near)  # type: ignore[assignment]
    privileged._daemon = None
    try:
        yield near, far
    finally:
        privileged.metadata_ctx.channel, privileged._daemon = saved
        near.close()
        far.close()


def test_stop_daemon_returns_when_the_daemon_exits_on_eof(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    _near, far = pair

    def daemon() -> None:
        while far.recv(4096):  # the request loop, until the agent's half close
            pass
        far.close()

    threading.Thread(target=daemon, daemon=True).start()
    assert privileged.stop_daemon(timeout=30) is True
    assert privileged.metadata_ctx.channel is None


def test_stop_daemon_leaves_a_daemon_whose_pid_is_unknown(
    pair: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    _near, far = pair
    reader = privileged.metadata_ctx.channel.reader_thread  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger=privileged.__name__):
        assert privileged.stop_daemon(timeout=0.2) is False  # PrivContext.stop() blocks here
    assert privileged.metadata_ctx.channel is None and reader.is_alive()
    assert far.recv(4096) == b""  # the daemon was told (EOF), it just has not exited yet
    assert "pid is unknown; leaving it" in caplog.text


def _stuck_daemon(far: socket.socket, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK, mode],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(far.fileno(),),
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    far.close()  # only the stand-in holds the far end now
    privileged._track_daemon(proc.pid)
    return proc


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("mode", "ends_on"), [("obey", "SIGTERM"), ("ignore", "SIGKILL")])
def test_stop_daemon_kills_a_daemon_that_does_not_exit(
    pair: tuple[socket.socket, socket.socket],
    caplog: pytest.LogCaptureFixture,
    mode: str,
    ends_on: str,
) -> None:
    _near, far = pair
    proc = _stuck_daemon(far, mode)
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=privileged.__name__):
            assert privileged.stop_daemon(timeout=0.2, kill_grace=1.0) is True
        took = time.monotonic() - start
        # Reaped by stop_daemon (the stand-in is this process's child, as a forked daemon is).
        assert _gone(proc.pid)
        assert f"(pid {proc.pid}) did not exit within 0.2 s; ending it" in caplog.text
        assert f"(pid {proc.pid}) ended on {ends_on}" in caplog.text
        assert ("outlived SIGTERM" in caplog.text) == (ends_on == "SIGKILL")
        assert took < 0.2 + 2 * 1.0 + 5  # bounded: the join, then a grace per signal
        assert privileged.metadata_ctx.channel is None and privileged._daemon is None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="the privsep daemon keeps capabilities: root only")
def test_a_forked_daemon_is_tracked_by_its_pid_and_stops_on_eof() -> None:
    from oslo_config import cfg
    from oslo_privsep import priv_context

    saved = privileged.metadata_ctx.channel, privileged._daemon
    privileged.metadata_ctx.channel = None  # another test's shared daemon stays untouched
    privileged._daemon = None
    try:
        cfg.CONF([])
        privileged.start_daemon(priv_context.Method.FORK)
        tracked = privileged._daemon
        assert tracked is not None and tracked.channel is privileged.metadata_ctx.channel
        pid = tracked.pid
        assert pid != os.getpid() and privileged.daemon_pid() == pid
        with open(f"/proc/{pid}/status") as f:
            assert f"PPid:\t{os.getpid()}\n" in f.read()
        assert privileged.stop_daemon(timeout=30) is True
        # It exits on EOF by itself; reap it (it is our child) to see that it did.
        deadline = time.monotonic() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            assert time.monotonic() < deadline, "the daemon did not exit on EOF"
            time.sleep(0.05)
    finally:
        if privileged.metadata_ctx.channel is not None:
            privileged.metadata_ctx.stop()
        privileged.metadata_ctx.channel, privileged._daemon = saved


def test_no_signal_reaches_a_pid_that_is_no_longer_the_daemon() -> None:
    """The pidfd names the process, not the number: once it has exited, signalling it fails
    (ProcessLookupError) instead of reaching whatever reuses the pid."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    daemon = privileged._Daemon(None, proc.pid)
    try:
        proc.wait()
        if daemon.pidfd is None:
            pytest.skip("no pidfd on this kernel")
        with pytest.raises(ProcessLookupError):
            daemon.signal(signal.SIGKILL)
    finally:
        daemon.close()
