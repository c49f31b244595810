"""The pluggable metadata proxy started by the elected leader of a network.

A *proxy hook* is any callable ``hook(ctx: ProxyContext) -> ProxyHandle``; the election
calls it when it wins and calls ``handle.stop()`` when it steps down. ``ctx.listen_socket``
is a TCP socket already bound (by the privileged daemon) to ``[fe80::a9fe:a9fe%iface]:port``
inside the network's namespace, so the proxy needs no privilege and no namespace switch.

Two hooks ship here:

- :class:`HTTPMetadataProxy` serves HTTP in-process on that socket: it forwards to an
  upstream metadata service (adding ``X-Forwarded-For`` and ``X-Neutron-Network-ID``) or,
  without an upstream, answers with a small JSON identity document.
- :class:`CommandProxy` runs a configured command, given as an argument list and never
  through a shell. Arguments may use ``{network_id}``, ``{namespace}``, ``{interface}``,
  ``{address}``, ``{port}`` and ``{listen_fd}``; the socket is inherited as ``listen_fd``
  and also named in ``SGFLOWS_METADATA_LISTEN_FD``. ``python -m sgflows.agent.metadata_proxy``
  is such a command.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Protocol

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxyContext:
    """What a proxy hook is told about the network it serves."""

    network_id: str
    namespace: str
    interface: str
    address: str
    port: int
    listen_socket: socket.socket | None


class ProxyHandle(Protocol):
    """A running proxy."""

    def stop(self) -> None: ...

    def alive(self) -> bool: ...


ProxyHook = Callable[[ProxyContext], ProxyHandle]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        srv = self.server
        if srv.upstream:
            self._forward(srv.upstream)
            return
        body = json.dumps(
            {
                "server": srv.server_name_id,
                "network_id": srv.network_id,
                "path": self.path,
                "client": self.client_address[0],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, upstream: str) -> None:
        srv = self.server
        req = urllib.request.Request(upstream.rstrip("/") + self.path, method="GET")
        req.add_header("X-Forwarded-For", str(self.client_address[0]).split("%")[0])
        req.add_header("X-Neutron-Network-ID", srv.network_id)
        try:
            with urllib.request.urlopen(req, timeout=srv.upstream_timeout) as resp:
                status, body = resp.status, resp.read()
                ctype = resp.headers.get("Content-Type", "application/octet-stream")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
            ctype = exc.headers.get("Content-Type", "text/plain")
        except (OSError, ValueError) as exc:
            LOG.warning("metadata upstream %s failed: %s", upstream, exc)
            status, body, ctype = 502, b"metadata upstream unavailable\n", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = _serve
    do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("metadata proxy %s: " + format, self.server.network_id, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    network_id: str
    server_name_id: str
    upstream: str | None
    upstream_timeout: float


def _serve_on(
    sock: socket.socket, network_id: str, name: str, upstream: str | None, timeout: float
) -> _Server:
    srv = _Server(sock.getsockname()[:2], _Handler, bind_and_activate=False)
    srv.socket.close()
    srv.socket = sock
    srv.address_family = sock.family
    srv.network_id = network_id
    srv.server_name_id = name
    srv.upstream = upstream
    srv.upstream_timeout = timeout
    return srv


class _InProcessHandle:
    def __init__(self, srv: _Server) -> None:
        self._srv = srv
        self._thread = threading.Thread(
            target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=5)

    def alive(self) -> bool:
        return self._thread.is_alive()


class HTTPMetadataProxy:
    """In-process HTTP metadata proxy (a proxy hook)."""

    def __init__(
        self, name: str, upstream: str | None = None, upstream_timeout: float = 10.0
    ) -> None:
        self.name = name
        self.upstream = upstream
        self.upstream_timeout = upstream_timeout

    def __call__(self, ctx: ProxyContext) -> ProxyHandle:
        if ctx.listen_socket is None:
            raise ValueError("HTTPMetadataProxy needs a listening socket")
        sock = ctx.listen_socket.dup()
        srv = _serve_on(sock, ctx.network_id, self.name, self.upstream, self.upstream_timeout)
        LOG.info("metadata proxy for %s serving on %s", ctx.network_id, sock.getsockname())
        return _InProcessHandle(srv)


class _ProcessHandle:
    def __init__(self, proc: subprocess.Popen[bytes], stop_timeout: float) -> None:
        self._proc = proc
        self._stop_timeout = stop_timeout

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                LOG.warning("metadata proxy pid %d ignored SIGTERM, killing", self._proc.pid)
                self._proc.kill()
                self._proc.wait()

    def alive(self) -> bool:
        return self._proc.poll() is None


class CommandProxy:
    """Run a command (argument list, no shell) as the proxy; a proxy hook."""

    def __init__(self, argv: Sequence[str], stop_timeout: float = 5.0) -> None:
        if isinstance(argv, str) or not argv or not all(isinstance(a, str) for a in argv):
            raise TypeError("the proxy command must be a non-empty list of strings")
        self.argv = list(argv)
        self.stop_timeout = stop_timeout

    def render(self, ctx: ProxyContext, listen_fd: int) -> list[str]:
        """The argument list for ``ctx``: placeholders filled in, one argument each."""
        fields = {
            "network_id": ctx.network_id,
            "namespace": ctx.namespace,
            "interface": ctx.interface,
            "address": ctx.address,
            "port": str(ctx.port),
            "listen_fd": str(listen_fd),
        }
        return [arg.format_map(fields) for arg in self.argv]

    def __call__(self, ctx: ProxyContext) -> ProxyHandle:
        fd = ctx.listen_socket.fileno() if ctx.listen_socket is not None else -1
        argv = self.render(ctx, fd)
        env = dict(os.environ)
        env.update(
            SGFLOWS_METADATA_NETWORK_ID=ctx.network_id,
            SGFLOWS_METADATA_NAMESPACE=ctx.namespace,
            SGFLOWS_METADATA_INTERFACE=ctx.interface,
            SGFLOWS_METADATA_LISTEN_FD=str(fd),
            SGFLOWS_METADATA_PARENT_PID=str(os.getpid()),
        )
        proc = subprocess.Popen(  # never a shell: argv is a list
            argv, env=env, pass_fds=(fd,) if fd >= 0 else (), stdin=subprocess.DEVNULL
        )
        LOG.info("metadata proxy for %s started: pid %d %s", ctx.network_id, proc.pid, argv)
        return _ProcessHandle(proc, self.stop_timeout)


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the agent dies (the proxy must not outlive it)."""
    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except OSError:
        LOG.warning("could not set the parent-death signal")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sgflows.agent.metadata_proxy``: serve on an inherited listening socket."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--listen-fd", type=int, default=None)
    parser.add_argument("--network-id", default=os.environ.get("SGFLOWS_METADATA_NETWORK_ID"))
    parser.add_argument("--name", default=socket.gethostname())
    parser.add_argument("--upstream", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    fd = args.listen_fd
    if fd is None:
        fd = int(os.environ.get("SGFLOWS_METADATA_LISTEN_FD", "-1"))
    if fd < 0:
        parser.error("no listening socket (--listen-fd or SGFLOWS_METADATA_LISTEN_FD)")
    parent = int(os.environ.get("SGFLOWS_METADATA_PARENT_PID", "0"))
    _die_with_parent()
    if parent and os.getppid() != parent:
        return 1  # the agent died before we asked to follow it
    sock = socket.socket(fileno=fd)
    srv = _serve_on(sock, args.network_id or "", args.name, args.upstream, 10.0)

    def on_term(signum: int, frame: Any) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    LOG.info("metadata proxy serving on %s", sock.getsockname())
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
