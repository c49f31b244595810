"""The pluggable metadata proxy started by the elected leader of a network.

A *proxy hook* is any callable ``hook(ctx: ProxyContext) -> ProxyHandle``; the election
calls it when it wins and calls ``handle.stop()`` when it steps down. ``ctx.listen_socket``
is a TCP socket already bound (by the privileged daemon) to ``[fe80::a9fe:a9fe%iface]:port``
inside the network's namespace, so the proxy needs no privilege and no namespace switch.

Two hooks ship here:

- :class:`HTTPMetadataProxy` serves HTTP in-process on that socket: it forwards to an
  upstream metadata service (adding ``X-Forwarded-For`` and ``X-Neutron-Network-ID``) or,
  without an upstream, answers with a small JSON identity document. The upstream URL is built
  from the *configured* scheme and host (and port) and the request's path only: a VM chooses
  the path, never where it goes. A request target that is not an absolute path (``/…``) is
  answered 400 and never forwarded: ``//host/…`` (which URL parsers read as a new host), an
  absolute URI (``http://…``), ``host:port/…``, and anything with control characters.
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
import urllib.parse
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


class UpstreamError(ValueError):
    """A configured metadata upstream URL is not ``http(s)://host[:port]``."""


@dataclass(frozen=True)
class Upstream:
    """The metadata service the proxy forwards to: a scheme and an authority, nothing else."""

    scheme: str
    netloc: str

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """``http://host[:port]`` or ``https://…`` (a trailing ``/`` is allowed; no path,
        query, fragment or user name: the request's path is the only path forwarded)."""
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise UpstreamError(f"metadata upstream {url!r}: {exc}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"metadata upstream {url!r}: expected http(s)://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            raise UpstreamError(
                f"metadata upstream {url!r}: only a scheme, host and port may be configured"
            )
        return cls(parts.scheme, parts.netloc)

    def url_for(self, target: str) -> str:
        """The URL for a request target; :class:`ValueError` unless it is an absolute path."""
        path = safe_request_path(target)
        url = urllib.parse.urlunsplit((self.scheme, self.netloc, *_path_and_query(path)))
        # Belt and braces: whatever the path holds, the URL still names the configured host.
        check = urllib.parse.urlsplit(url)
        if check.scheme != self.scheme or check.netloc != self.netloc:
            raise ValueError(f"request target {target!r} changes the upstream")
        return url


def _path_and_query(path: str) -> tuple[str, str, str]:
    base, _, query = path.partition("?")
    return base, query, ""


def safe_request_path(target: str) -> str:
    """``target`` if it is an absolute path (``/…``, not ``//…``), else :class:`ValueError`.

    Refused: an empty target, ``*``, absolute URIs (``http://h/``), authority forms
    (``h:port/x``), network-path references (``//h/x``, also ``/\\h``), fragments, and
    whitespace or control characters (request smuggling, header injection)."""
    if not target.startswith("/"):
        raise ValueError(f"request target {target[:64]!r} is not an absolute path")
    if target.startswith("//") or target.startswith("/\\"):
        raise ValueError(f"request target {target[:64]!r} names a host")
    if any(ch in "#\\" or ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in target):
        raise ValueError(f"request target {target[:64]!r} has forbidden characters")
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc:
        raise ValueError(f"request target {target[:64]!r} has a scheme or an authority")
    return target


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        srv = self.server
        if srv.upstream is not None:
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

    def _refuse(self, status: int, message: str) -> None:
        body = (message + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD":
            self.wfile.write(body)

    def _raw_target(self) -> str:
        """The request target as sent: ``self.path`` has ``//…`` collapsed to ``/…`` by
        http.server, which would hide (and forward) a target we refuse."""
        words = self.requestline.split(" ")
        return words[1] if len(words) == 3 else self.path

    def _forward(self, upstream: Upstream) -> None:
        srv = self.server
        try:
            url = upstream.url_for(self._raw_target())
        except ValueError as exc:
            LOG.warning(
                "metadata proxy %s: refused from %s: %s",
                srv.network_id,
                self.client_address[0],
                exc,
            )
            self._refuse(400, "bad request target: only an absolute path is accepted")
            return
        req = urllib.request.Request(url, method="GET")
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
            LOG.warning("metadata upstream %s failed: %s", upstream.netloc, exc)
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
    upstream: Upstream | None
    upstream_timeout: float


def _serve_on(
    sock: socket.socket, network_id: str, name: str, upstream: Upstream | None, timeout: float
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
        #: Checked now: a bad upstream is a configuration error, not a failure per request.
        self.upstream = Upstream.parse(upstream) if upstream else None
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
    try:
        upstream = Upstream.parse(args.upstream) if args.upstream else None
    except UpstreamError as exc:
        parser.error(str(exc))
    srv = _serve_on(sock, args.network_id or "", args.name, upstream, 10.0)

    def on_term(signum: int, frame: Any) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    LOG.info("metadata proxy serving on %s", sock.getsockname())
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
