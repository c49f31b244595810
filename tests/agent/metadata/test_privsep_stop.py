"""Closing the channel to the metadata privsep daemon is bounded (the agent's SIGTERM path).

A real oslo.privsep client channel over a socket pair stands in for the daemon's: the far end
either exits on EOF like a healthy daemon, or never does, like one stuck in its shutdown.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from oslo_privsep import comm
from sgflows.agent import privileged


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    near, far = socket.socketpair()
    saved = privileged.metadata_ctx.channel
    privileged.metadata_ctx.channel = comm.ClientChannel(near)  # type: ignore[assignment]
    try:
        yield near, far
    finally:
        privileged.metadata_ctx.channel = saved
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


def test_stop_daemon_gives_up_on_a_daemon_that_does_not_exit(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    _near, far = pair
    reader = privileged.metadata_ctx.channel.reader_thread  # type: ignore[union-attr]
    assert privileged.stop_daemon(timeout=0.2) is False  # PrivContext.stop() blocks here
    assert privileged.metadata_ctx.channel is None and reader.is_alive()
    assert far.recv(4096) == b""  # the daemon was told (EOF), it just has not exited yet
