"""msgpack-RPC over Unix sockets and TLS, with authentication, roles and hard limits.

Wire format (https://github.com/msgpack-rpc/msgpack-rpc/blob/master/spec.md):

* request ``[0, msgid, method, params]``, response ``[1, msgid, error, result]``,
  notification ``[2, method, params]``; ``params`` is an array.
* ``error`` is ``None`` or a map ``{"code": int, "type": str, "message": str, "details": map}``;
  the client raises the matching :class:`RPCError` subclass (``Conflict`` has code 409, …).
* a protocol violation the server cannot answer (garbage, oversized message) gets one
  ``[2, "rpc.error", [error]]`` notification and then the connection is closed.

Limits bound what a peer can make us hold (see :class:`Limits`): each message's bytes on the
wire and the estimated memory of its decoded objects, checked from the msgpack headers before
decoding (:mod:`.framing`; much tighter before login), the decoder's per-type lengths, the
number of requests being handled per connection (beyond that we stop reading: TCP
back-pressure, not a growing queue), the number of queued notifications (beyond that they are
dropped and the peer sees a generation gap), and how long a peer may stop reading before it
is cut off.

A server counts connections from accept, TLS handshakes included: one deadline runs from
accept to login, at most ``max_unauthenticated`` connections may be without a login (the oldest
is dropped for a newcomer), ``max_connections`` is lowered to what the open-file limit allows,
a logged-in peer idle for ``idle_timeout`` is closed, and no close waits more than
``close_timeout`` for a TLS close_notify.

Transports: ``unix:/path`` (socket mode 0600, peer uid checked with ``SO_PEERCRED``) and
``tls:host:port``. There is no plaintext TCP: a TLS endpoint without an SSL context is an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hmac
import logging
import os
import random
import resource
import socket
import ssl
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from . import auth, framing

LOG = logging.getLogger(__name__)

REQUEST = 0
RESPONSE = 1
NOTIFICATION = 2

#: Method name of the notification a server sends before closing on a protocol violation.
ERROR_NOTIFICATION = "rpc.error"

_MSGID_LIMIT = 2**32


# --------------------------------------------------------------------------------------------
# Typed errors


class RPCError(Exception):
    """An error a peer returned, or one raised locally by the client; typed by ``type_name``."""

    code: ClassVar[int] = 500
    type_name: ClassVar[str] = "RPCError"

    def __init__(self, message: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.type_name)
        self.message = message or self.type_name
        self.details: dict[str, Any] = dict(details or {})

    def to_wire(self) -> dict[str, Any]:
        """The map sent in a response's error slot."""
        return {
            "code": self.code,
            "type": self.type_name,
            "message": self.message,
            "details": self.details,
        }

    @staticmethod
    def from_wire(obj: Any) -> RPCError:
        """Turn a response's error slot into the matching exception."""
        if isinstance(obj, dict):
            cls = _ERROR_TYPES.get(str(obj.get("type")), RPCError)
            details = obj.get("details")
            err = cls(str(obj.get("message", "")), details if isinstance(details, dict) else None)
            if cls is RPCError and isinstance(obj.get("code"), int):
                err.code = obj["code"]  # type: ignore[misc]
            return err
        return RPCError(f"peer returned a non-standard error: {obj!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidRequest(RPCError):
    """The message is msgpack but not a well-formed request (or comes out of order)."""

    code = 400
    type_name = "InvalidRequest"


class InvalidParams(RPCError):
    """Wrong number or types of parameters."""

    code = 400
    type_name = "InvalidParams"


class MalformedMessage(RPCError):
    """The bytes are not valid msgpack, or exceed a per-type length limit."""

    code = 400
    type_name = "MalformedMessage"


class Unauthenticated(RPCError):
    """The method needs an authenticated peer."""

    code = 401
    type_name = "Unauthenticated"


class AuthenticationFailed(RPCError):
    """The proof (or the server's counter-proof) was wrong."""

    code = 401
    type_name = "AuthenticationFailed"


class Forbidden(RPCError):
    """Authenticated, but none of the peer's roles allows the method."""

    code = 403
    type_name = "Forbidden"


class NotFound(RPCError):
    """The object named by the request does not exist."""

    code = 404
    type_name = "NotFound"


class MethodNotFound(RPCError):
    """No such method."""

    code = 404
    type_name = "MethodNotFound"


class Conflict(RPCError):
    """The request conflicts with the current state (e.g. binding already active)."""

    code = 409
    type_name = "Conflict"


class MessageTooLarge(RPCError):
    """A message exceeded ``Limits.max_message_bytes``."""

    code = 413
    type_name = "MessageTooLarge"


class TooManyConnections(RPCError):
    """The server is at ``Limits.max_connections``."""

    code = 429
    type_name = "TooManyConnections"


class InternalError(RPCError):
    """The handler failed; details are in the server's log."""

    code = 500
    type_name = "InternalError"


class ConnectionLost(RPCError):
    """Local: the connection closed before the answer came (or there is no connection)."""

    code = 503
    type_name = "ConnectionLost"


class CallTimeout(RPCError):
    """Local: no answer within the call's timeout."""

    code = 504
    type_name = "CallTimeout"


_ERROR_TYPES: dict[str, type[RPCError]] = {
    cls.type_name: cls
    for cls in (
        InvalidRequest,
        InvalidParams,
        MalformedMessage,
        Unauthenticated,
        AuthenticationFailed,
        Forbidden,
        NotFound,
        MethodNotFound,
        Conflict,
        MessageTooLarge,
        TooManyConnections,
        InternalError,
        ConnectionLost,
        CallTimeout,
    )
}


# --------------------------------------------------------------------------------------------
# Limits, endpoints, TLS contexts


class ListenError(Exception):
    """A server cannot listen: bind error, missing socket directory, a live server at the
    socket path, unusable certificate files. The message says what and where."""


@dataclass(frozen=True)
class Limits:
    """What one peer may make us hold or wait for. Defaults suit a controller with ~1000 agents."""

    #: Largest message in bytes on the wire; the framer refuses a longer one (413) as soon as
    #: a header announces it, and the peer is not read any further.
    max_message_bytes: int = 16 * 1024 * 1024
    #: Largest estimated memory one message may take once decoded (from its headers, before
    #: decoding; see :mod:`.framing`). A 5 MB message of 100,000 ports is estimated ~110 MB.
    max_decoded_bytes: int = 256 * 1024 * 1024
    #: The same two limits for a server's peer that has not logged in yet: it may only call
    #: ``auth.challenge`` and ``auth.login``, whose messages take a few hundred bytes.
    unauthenticated_message_bytes: int = 64 * 1024
    unauthenticated_decoded_bytes: int = 1024 * 1024
    max_str_len: int = 1024 * 1024
    max_bin_len: int = 1024 * 1024
    max_array_len: int = 1_000_000
    max_map_len: int = 1_000_000
    read_chunk: int = 64 * 1024
    #: Requests handled concurrently per connection; more are left unread in the socket.
    max_outstanding: int = 32
    #: Notifications waiting to be written per connection; more are dropped (a generation gap).
    max_queued_notifications: int = 1024
    #: A peer that accepts no data for this long is disconnected.
    write_timeout: float = 30.0
    #: One deadline from accept to login: TLS handshake plus authentication, in seconds.
    handshake_timeout: float = 10.0
    #: A logged-in peer that sends nothing (and waits for no answer) this long is closed;
    #: 0 disables. Agents report every 30 s; a reconnecting client simply reconnects.
    idle_timeout: float = 300.0
    #: Seconds a closing connection may take to flush and exchange TLS close_notify; then it
    #: is aborted (asyncio would otherwise wait 30 s for a peer that never answers).
    close_timeout: float = 1.0
    #: Wrong proofs allowed on one connection before it is closed.
    max_auth_failures: int = 3
    #: Connections a server holds at once, counted from accept (TLS handshakes included);
    #: lowered at start to what the open-file limit allows (see ``RPCServer``).
    max_connections: int = 4096
    #: Of those, connections that have not logged in yet (in the TLS handshake or before
    #: auth.login). Each TLS one holds ~300 KB (asyncio's 256 KiB read buffer, OpenSSL's),
    #: so this bounds what unauthenticated peers can make us hold; beyond it the oldest of
    #: them is dropped.
    max_unauthenticated: int = 64


#: What :meth:`Connection._next_message` returns while a message is incomplete.
_NO_MESSAGE = object()


def unpack(frame: bytes, limits: Limits) -> Any:
    """Decode one framed message (see :mod:`.framing`) with every per-type limit set."""
    return msgpack.unpackb(
        frame,
        raw=False,
        use_list=True,
        strict_map_key=True,
        max_str_len=limits.max_str_len,
        max_bin_len=limits.max_bin_len,
        max_array_len=limits.max_array_len,
        max_map_len=limits.max_map_len,
        max_ext_len=0,
    )


def pack(obj: Any) -> bytes:
    """Serialise one message."""
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens or a client connects: ``unix:/path`` or ``tls:host:port``."""

    scheme: str
    path: str = ""
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``unix:/path``, ``tls:host:port`` or ``tls:[v6addr]:port``."""
        scheme, sep, rest = text.partition(":")
        if not sep or not rest:
            raise ValueError(f"endpoint {text!r}: expected unix:/path or tls:host:port")
        if scheme == "unix":
            return cls("unix", path=rest)
        if scheme == "tls":
            host, sep, port_text = rest.rpartition(":")
            if not sep or not port_text.isdigit():
                raise ValueError(f"endpoint {text!r}: expected tls:host:port")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            port = int(port_text)
            if not host or not 0 <= port < 65536:
                raise ValueError(f"endpoint {text!r}: bad host or port")
            return cls("tls", host=host, port=port)
        if scheme == "tcp":
            raise ValueError(f"endpoint {text!r}: plaintext TCP is not supported; use tls:")
        raise ValueError(f"endpoint {text!r}: unknown scheme {scheme!r} (unix or tls)")

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tls:{host}:{self.port}"


def server_ssl_context(
    cert_file: str,
    key_file: str,
    client_ca_file: str | None = None,
    crl_file: str | None = None,
) -> ssl.SSLContext:
    """TLS for a server; with ``client_ca_file``, client certificates are verified if sent,
    and with ``crl_file`` (PEM CRLs of that CA) revoked ones are refused.

    Raises :class:`ListenError` naming the file that cannot be used.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(f"certificate {cert_file} with key {key_file}", ctx.load_cert_chain, cert_file, key_file)
    if client_ca_file:
        _load(f"client CA file {client_ca_file}", ctx.load_verify_locations, cafile=client_ca_file)
        # Optional: agents may prove themselves with a secret instead of a certificate.
        ctx.verify_mode = ssl.CERT_OPTIONAL
    if crl_file:
        if not client_ca_file:
            raise ListenError(f"CRL file {crl_file}: needs client_ca_file (it revokes its certs)")
        _load(f"CRL file {crl_file}", ctx.load_verify_locations, cafile=crl_file)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def _load(what: str, loader: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    try:
        loader(*args, **kwargs)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ListenError(f"cannot use the TLS {what}: {reason}") from exc


def client_ssl_context(
    ca_file: str | None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """TLS for a client: the server's certificate and host name are always verified."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


# --------------------------------------------------------------------------------------------
# One connection, either side


RequestHandler = Callable[["Connection", str, list[Any]], Awaitable[Any]]
NotificationHandler = Callable[["Connection", str, list[Any]], None]


@dataclass
class _Outgoing:
    data: bytes
    notification: bool = False
    done: Callable[[], None] | None = None


@dataclass
class ConnectionStats:
    """Counters a test or an operator can read."""

    requests: int = 0
    max_concurrent: int = 0
    dropped_notifications: int = 0
    protocol_errors: int = 0


class Connection:
    """A msgpack-RPC stream: reads, dispatches, writes, and enforces the limits."""

    #: After a protocol error, how long we keep discarding the peer's input before closing.
    LINGER_SECONDS = 1.0
    #: ... and at most this many bytes.
    LINGER_BYTES = 1024 * 1024
    #: Objects framed per turn of the event loop (a few milliseconds of work at most).
    SCAN_BUDGET = 4096

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        limits: Limits,
        label: str,
        on_request: RequestHandler | None = None,
        on_notification: NotificationHandler | None = None,
        server_side: bool = False,
    ) -> None:
        self.limits = limits
        #: A server's end: tight message limits before login, idle timeout after.
        self.server_side = server_side
        self.label = label
        self._reader = reader
        self._writer = writer
        self._on_request = on_request
        self._on_notification = on_notification
        self._slots = asyncio.Semaphore(limits.max_outstanding)
        self._outq: asyncio.Queue[_Outgoing | None] = asyncio.Queue()
        self._queued_notifications = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False
        self._failed = False
        self._error_sent = asyncio.Event()
        self._closed = asyncio.Event()
        self._close_reason: str | None = None
        self._warned: set[str] = set()
        self._read_task: asyncio.Task[None] | None = None
        self._write_task: asyncio.Task[None] | None = None
        self._close_callbacks: list[Callable[[Connection], None]] = []
        self.stats = ConnectionStats()
        #: Set by the server once the peer has proved an identity.
        self.principal: auth.Principal | None = None
        self.peer_uid: int | None = None
        self.peer_cert_cn: str | None = None
        #: Free slots for the layer above (the server's auth state, a service's subscriptions).
        self.data: dict[str, Any] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start reading and writing."""
        self._write_task = asyncio.ensure_future(self._write_loop())
        self._read_task = asyncio.ensure_future(self._read_loop())

    @property
    def roles(self) -> frozenset[str]:
        """The authenticated peer's roles (empty before authentication)."""
        return self.principal.roles if self.principal else frozenset()

    @property
    def closing(self) -> bool:
        """True once a close has started."""
        return self._closing

    @property
    def close_reason(self) -> str | None:
        """Why the connection closed, when known (e.g. the server's ``rpc.error``)."""
        return self._close_reason

    def add_close_callback(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(conn)`` once the connection is closed."""
        if self._closed.is_set():
            callback(self)
        else:
            self._close_callbacks.append(callback)

    def close(self, reason: str | None = None) -> None:
        """Flush what is queued, then close (bounded by ``write_timeout``)."""
        if reason and not self._close_reason:
            self._close_reason = reason
        if not self._closing:
            self._closing = True
            self._outq.put_nowait(None)

    def abort(self, reason: str | None = None) -> None:
        """Close now, dropping anything unsent."""
        if reason and not self._close_reason:
            self._close_reason = reason
        if not self._closing:
            self._closing = True
            self._outq.put_nowait(None)  # lets the write loop end
        self._writer.transport.abort()
        if self._read_task and not self._read_task.done():
            self._read_task.cancel()

    async def wait_closed(self) -> None:
        """Return once the connection is fully closed."""
        await self._closed.wait()

    @property
    def is_closed(self) -> bool:
        """True once the connection is fully closed."""
        return self._closed.is_set()

    def warn_once(self, key: str, msg: str, *args: Any) -> None:
        """Log a warning about this peer, once per ``key`` per connection."""
        if key not in self._warned:
            self._warned.add(key)
            LOG.warning("%s: " + msg, self.label, *args)

    # -- sending ----------------------------------------------------------------------------

    async def call(self, method: str, params: Sequence[Any], timeout: float | None) -> Any:
        """Send a request and wait for its response."""
        if self._closing:
            raise ConnectionLost(f"connection to {self.label} is closed")
        msgid = self._next_id
        self._next_id = (self._next_id + 1) % _MSGID_LIMIT
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msgid] = fut
        try:
            self._enqueue(_Outgoing(pack([REQUEST, msgid, method, list(params)])))
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise CallTimeout(
                    f"{method}: no answer from {self.label} within {timeout}s"
                ) from None
        finally:
            self._pending.pop(msgid, None)

    def notify(self, method: str, params: Sequence[Any]) -> bool:
        """Queue a notification; False if the connection is closing or its queue is full."""
        if self._closing:
            return False
        if self._queued_notifications >= self.limits.max_queued_notifications:
            self.stats.dropped_notifications += 1
            self.warn_once(
                "notify-overflow",
                "peer is not keeping up; dropping notifications (queue of %d full)",
                self.limits.max_queued_notifications,
            )
            return False
        self._queued_notifications += 1
        self._enqueue(_Outgoing(pack([NOTIFICATION, method, list(params)]), notification=True))
        return True

    def _enqueue(self, item: _Outgoing) -> None:
        self._outq.put_nowait(item)

    def _protocol_error(self, err: RPCError, *, from_reader: bool = True) -> None:
        """Tell the peer what was wrong (one notification), log once, and close.

        From the read loop, the close lingers: we half-close and discard what the peer is still
        sending for a moment, because closing a socket with unread input resets it and the
        peer would lose our error notification.
        """
        self.stats.protocol_errors += 1
        self.warn_once("protocol", "closing: %s: %s", err.type_name, err.message)
        if not self._close_reason:
            self._close_reason = f"{err.type_name}: {err.message}"
        if self._closing or self._failed:
            return
        data = pack([NOTIFICATION, ERROR_NOTIFICATION, [err.to_wire()]])
        self._enqueue(_Outgoing(data, True, done=self._error_sent.set))
        self._queued_notifications += 1
        if from_reader:
            self._failed = True
        else:
            self.close()

    async def _linger(self) -> None:
        try:
            await asyncio.wait_for(self._error_sent.wait(), self.limits.write_timeout)
            if self._writer.can_write_eof():  # TLS cannot half-close; it still discards
                self._writer.write_eof()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.LINGER_SECONDS
            # Discard at most LINGER_BYTES: enough for the peer to see our error, not a way
            # to keep us reading a flood.
            budget = self.LINGER_BYTES
            while budget > 0 and loop.time() < deadline:
                data = await asyncio.wait_for(
                    self._reader.read(self.limits.read_chunk), deadline - loop.time()
                )
                if not data:
                    return
                budget -= len(data)
        except (asyncio.TimeoutError, ConnectionError, OSError, ssl.SSLError):
            return

    async def _write_loop(self) -> None:
        writer = self._writer
        try:
            while True:
                item = await self._outq.get()
                if item is None:
                    break
                if item.notification:
                    self._queued_notifications -= 1
                writer.write(item.data)
                if item.done:
                    item.done()
                try:
                    await asyncio.wait_for(writer.drain(), self.limits.write_timeout)
                except asyncio.TimeoutError:
                    self.warn_once(
                        "slow",
                        "peer stopped reading for %.1fs; disconnecting",
                        self.limits.write_timeout,
                    )
                    self.abort("peer stopped reading")
                    return
            await self._close_transport()
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            LOG.debug("%s: write failed: %s", self.label, exc)
            self.abort(f"write failed: {exc}")
        except asyncio.CancelledError:
            raise
        finally:
            # Release any request slots whose responses will never be written.
            while not self._outq.empty():
                pending = self._outq.get_nowait()
                if pending is not None and pending.done:
                    pending.done()

    async def _close_transport(self) -> None:
        """Close the stream, giving the TLS close_notify exchange ``close_timeout`` seconds."""
        try:
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), self.limits.close_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:  # timeout, or the peer reset: either way we are done with it
            self._writer.transport.abort()

    # -- receiving --------------------------------------------------------------------------

    def _frame_limits(self) -> framing.FrameLimits:
        """What the peer's next message may cost: little until a server's peer has logged in
        (only the auth methods are open to it), the full limits after."""
        lim = self.limits
        if self.server_side and self.principal is None:
            return framing.FrameLimits(
                min(lim.unauthenticated_message_bytes, lim.max_message_bytes),
                min(lim.unauthenticated_decoded_bytes, lim.max_decoded_bytes),
            )
        return framing.FrameLimits(lim.max_message_bytes, lim.max_decoded_bytes)

    async def _read(self) -> bytes:
        """The next bytes from the peer; on a server, a logged-in peer that sends nothing and
        waits for nothing for ``idle_timeout`` seconds is closed."""
        idle = self.limits.idle_timeout
        if not (self.server_side and idle > 0 and self.principal is not None):
            return await self._reader.read(self.limits.read_chunk)
        while True:
            try:
                return await asyncio.wait_for(self._reader.read(self.limits.read_chunk), idle)
            except asyncio.TimeoutError:
                if self._handlers:
                    continue  # the peer is waiting for us, not idle
                self.warn_once("idle", "closing: idle for %.0fs", idle)
                self.close(f"idle for {idle:.0f}s")
                return b""

    def _next_message(self, framer: framing.MessageFramer) -> Any:
        """The next decoded message, ``_NO_MESSAGE`` until more bytes come; raises RPCError."""
        limits = self._frame_limits()
        try:
            frame = framer.next_message(limits, self.SCAN_BUDGET)
        except framing.FrameTooLarge as exc:
            raise MessageTooLarge(
                f"message {exc.what} over {exc.limit} bytes",
                {"limit": exc.limit, "what": exc.what, "authenticated": self.principal is not None},
            ) from None
        except framing.FrameMalformed as exc:
            raise MalformedMessage(f"undecodable msgpack: {exc}") from None
        if frame is None:
            return _NO_MESSAGE
        try:
            return unpack(frame, self.limits)
        except Exception as exc:  # hostile bytes: any decoder error
            raise MalformedMessage(f"undecodable msgpack: {exc}") from None

    async def _read_loop(self) -> None:
        framer = framing.MessageFramer()
        try:
            while not self._closing and not self._failed:
                data = await self._read()
                if not data:
                    break
                framer.feed(data)
                while not self._closing and not self._failed:
                    try:
                        obj = self._next_message(framer)
                    except RPCError as err:
                        # Stop reading this peer: nothing more it sends is framed or decoded.
                        self._protocol_error(err)
                        break
                    if obj is _NO_MESSAGE:
                        if not framer.interrupted:
                            break
                    else:
                        await self._dispatch(obj)
                    # Framing takes ~0.5 µs per object and read() does not yield while the
                    # socket has data: let the other peers have the loop between slices.
                    await asyncio.sleep(0)
            if self._failed:
                await self._linger()
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            LOG.debug("%s: read failed: %s", self.label, exc)
        except Exception:
            LOG.exception("%s: unexpected error while reading", self.label)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        self.close()
        if self._write_task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._write_task), self.limits.write_timeout + 1
                )
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._writer.transport.abort()
                self._write_task.cancel()
            except Exception:
                LOG.debug("%s: writer ended with an error", self.label, exc_info=True)
        lost = ConnectionLost(
            f"connection to {self.label} closed"
            + (f": {self._close_reason}" if self._close_reason else "")
        )
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(lost)
        self._pending.clear()
        self._closed.set()
        for callback in self._close_callbacks:
            try:
                callback(self)
            except Exception:
                LOG.exception("%s: close callback failed", self.label)
        self._close_callbacks.clear()

    async def _dispatch(self, obj: Any) -> None:
        if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
            self._protocol_error(InvalidRequest("not a msgpack-RPC message (expected an array)"))
            return
        kind = obj[0]
        if kind == REQUEST:
            if len(obj) != 4 or type(obj[1]) is not int or not 0 <= obj[1] < _MSGID_LIMIT:
                self._protocol_error(InvalidRequest("request must be [0, msgid, method, params]"))
                return
            msgid, method, params = obj[1], obj[2], obj[3]
            if not isinstance(method, str) or not isinstance(params, list):
                self._respond_now(
                    msgid, InvalidRequest("method must be a string and params an array")
                )
                return
            if self._on_request is None:
                self._respond_now(msgid, MethodNotFound(f"{self.label} serves no methods"))
                return
            # Back-pressure: at max_outstanding we stop reading until a response is written.
            await self._slots.acquire()
            self.stats.requests += 1
            busy = self.limits.max_outstanding - self._slots._value
            self.stats.max_concurrent = max(self.stats.max_concurrent, busy)
            task = asyncio.ensure_future(self._run_request(msgid, method, params))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        elif kind == RESPONSE:
            if len(obj) != 4 or type(obj[1]) is not int:
                self._protocol_error(InvalidRequest("response must be [1, msgid, error, result]"))
                return
            fut = self._pending.get(obj[1])
            if fut is None or fut.done():
                LOG.debug("%s: response to unknown or expired msgid %s", self.label, obj[1])
                return
            if obj[2] is not None:
                fut.set_exception(RPCError.from_wire(obj[2]))
            else:
                fut.set_result(obj[3])
        elif kind == NOTIFICATION:
            if len(obj) != 3 or not isinstance(obj[1], str) or not isinstance(obj[2], list):
                self._protocol_error(InvalidRequest("notification must be [2, method, params]"))
                return
            if obj[1] == ERROR_NOTIFICATION:
                err = RPCError.from_wire(obj[2][0] if obj[2] else None)
                LOG.warning("%s: peer reports %s: %s", self.label, err.type_name, err.message)
                self._close_reason = f"{err.type_name}: {err.message}"
                return
            if self._on_notification is not None:
                try:
                    self._on_notification(self, obj[1], obj[2])
                except Exception:
                    LOG.exception("%s: notification handler for %s failed", self.label, obj[1])
        else:
            self._protocol_error(InvalidRequest(f"unknown message type {kind}"))

    def _respond_now(self, msgid: int, err: RPCError) -> None:
        self._enqueue(_Outgoing(pack([RESPONSE, msgid, err.to_wire(), None])))

    async def _run_request(self, msgid: int, method: str, params: list[Any]) -> None:
        assert self._on_request is not None
        try:
            try:
                result = await self._on_request(self, method, params)
                data = pack([RESPONSE, msgid, None, result])
            except RPCError as err:
                data = pack([RESPONSE, msgid, err.to_wire(), None])
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception:
                LOG.exception("%s: handler for %s failed", self.label, method)
                internal = InternalError(f"{method} failed; see the server log")
                data = pack([RESPONSE, msgid, internal.to_wire(), None])
        except asyncio.CancelledError:
            raise
        except Exception:  # the result could not be packed
            LOG.exception("%s: cannot encode the result of %s", self.label, method)
            data = pack([RESPONSE, msgid, InternalError("unencodable result").to_wire(), None])
        if self._closing:
            self._slots.release()
            return
        # The slot is freed only once the response is handed to the transport, so a peer that
        # does not read its responses cannot make us queue more than max_outstanding of them.
        self._enqueue(_Outgoing(data, done=self._slots.release))


# --------------------------------------------------------------------------------------------
# Server


ParamType = type | tuple[type, ...]
Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class MethodSpec:
    """A served method: who may call it and what parameters it takes."""

    handler: Handler
    #: Any of these roles allows the call; empty means any authenticated peer.
    roles: frozenset[str]
    params: tuple[ParamType, ...]
    #: Callable before authentication (the auth methods themselves).
    public: bool = False


def _check_params(method: str, spec: tuple[ParamType, ...], params: list[Any]) -> None:
    if len(params) != len(spec):
        raise InvalidParams(f"{method} takes {len(spec)} parameters, got {len(params)}")
    for i, (value, expected) in enumerate(zip(params, spec)):
        types = expected if isinstance(expected, tuple) else (expected,)
        # bool is an int in Python but not on the wire.
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = "|".join(t.__name__ for t in types)
            raise InvalidParams(
                f"{method}: parameter {i} must be {names}, not {type(value).__name__}"
            )


def _cert_common_name(cert: Any) -> str | None:
    if not isinstance(cert, dict):
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


#: File descriptors kept free for everything but connections (logs, state, model files).
FD_RESERVE = 64

#: Pending connections the kernel queues for accept (capped by net.core.somaxconn). asyncio's
#: default of 100 lets a burst of connections fill the queue; the kernel then drops a
#: legitimate client's SYN, which it retries only after a second.
LISTEN_BACKLOG = 1024

#: Errors of accept() that mean "out of descriptors or memory": make room, then go on.
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Listener:
    """One listening socket and the task accepting on it.

    Our own accept loop, not ``asyncio.start_server``: asyncio accepts up to its backlog of
    connections per wake-up before any is seen by us, so a burst overshoots the connection
    limit and hits the open-file limit, whereupon asyncio stops accepting for a second. We
    accept one connection at a time, admit it (possibly evicting another) before the next, and
    on EMFILE make room instead of pausing.
    """

    def __init__(self, sock: socket.socket, task: asyncio.Task[None]) -> None:
        self.sock = sock
        self.task = task

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        self.sock.close()


#: Python 3.11+ can start TLS on an accepted stream, so connections are counted before it.
_STREAMS_START_TLS = hasattr(asyncio.StreamWriter, "start_tls")


def _remove_stale_socket(path: str) -> None:
    """Unlink ``path`` if it is a socket nobody accepts on; refuse anything else."""
    where = f"unix:{path}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"cannot listen on {where}: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        LOG.info("removing stale socket %s", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError as exc:  # e.g. a full backlog: someone is there, leave it alone
        raise ListenError(f"cannot listen on {where}: {path} is in use ({exc})") from exc
    finally:
        probe.close()
    raise ListenError(
        f"cannot listen on {where}: another server is answering there (a second controller "
        "with the same configuration?)"
    )


def _abort_stream(writer: asyncio.StreamWriter) -> None:
    # After a failed start_tls, asyncio may have left the writer without a transport.
    if writer.transport is not None:
        writer.transport.abort()


@dataclass(eq=False)
class _Admission:
    """One counted connection; ``abort`` drops it (its transport, or its Connection)."""

    seq: int
    abort: Callable[[], None]
    conn: Connection | None = None


class LogRateLimit:
    """At most ``burst`` log records per ``interval`` seconds; the rest are counted, and the
    count is logged with the next record let through."""

    def __init__(self, burst: int = 5, interval: float = 60.0) -> None:
        self.burst = burst
        self.interval = interval
        self._window_start = -float("inf")
        self._in_window = 0
        self.suppressed = 0

    def warning(self, logger: logging.Logger, msg: str, *args: Any) -> bool:
        """Log a WARNING unless over the rate; True if it was logged."""
        now = time.monotonic()
        if now - self._window_start >= self.interval:
            self._window_start = now
            self._in_window = 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return False
        self._in_window += 1
        if self.suppressed:
            msg += " (%d similar messages suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        logger.warning(msg, *args)
        return True


class RPCServer:
    """Serves registered methods to authenticated peers over Unix sockets and TLS."""

    def __init__(
        self,
        credentials: auth.Credentials,
        *,
        limits: Limits | None = None,
        name: str = "sgflows",
        allowed_uids: Iterable[int] | None = None,
    ) -> None:
        self.credentials = credentials
        self.limits = limits or Limits()
        self.name = name
        self.allowed_uids = (
            frozenset(allowed_uids) if allowed_uids is not None else frozenset({0, os.getuid()})
        )
        self.methods: dict[str, MethodSpec] = {}
        self.connections: set[Connection] = set()
        self.endpoints: list[Endpoint] = []
        self._listeners: list[_Listener] = []
        self._connecting: set[asyncio.Task[None]] = set()
        self._unix_paths: list[str] = []
        self._disconnect_callbacks: list[Callable[[Connection], None]] = []
        self._seq = 0
        #: Every counted connection, in accept order, and those not logged in yet.
        self._admitted: dict[int, _Admission] = {}
        self._preauth: dict[int, _Admission] = {}
        self._warned_fd_limit = False
        # What unauthenticated peers can trigger is logged at a bounded rate.
        self._login_failures = LogRateLimit()
        self._handshake_failures = LogRateLimit()
        self._evictions = LogRateLimit()
        self._refusals = LogRateLimit()
        self.register("auth.challenge", self._auth_challenge, public=True)
        self.register("auth.login", self._auth_login, params=(str, bytes, bytes), public=True)
        self.register("rpc.ping", self._ping)

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        roles: Iterable[str] = (),
        params: tuple[ParamType, ...] = (),
        public: bool = False,
    ) -> None:
        """Serve ``handler(conn, *params)`` as ``name`` to peers holding any of ``roles``."""
        role_set = frozenset(roles)
        unknown = role_set - auth.ROLES
        if unknown:
            raise ValueError(f"{name}: unknown roles {sorted(unknown)}")
        self.methods[name] = MethodSpec(handler, role_set, params, public)

    def on_disconnect(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(conn)`` whenever a connection closes."""
        self._disconnect_callbacks.append(callback)

    # -- listening --------------------------------------------------------------------------

    async def start(
        self, endpoint: Endpoint, ssl_context: ssl.SSLContext | None = None
    ) -> Endpoint:
        """Listen on ``endpoint``; returns it with the bound port filled in.

        Raises :class:`ListenError` (what and where) when it cannot listen.
        """
        if endpoint.scheme == "unix":
            return await self.start_unix(endpoint.path)
        if ssl_context is None:
            raise ValueError(f"{endpoint}: a TLS endpoint needs a certificate and key")
        return await self.start_tls(endpoint.host, endpoint.port, ssl_context)

    async def start_unix(self, path: str) -> Endpoint:
        """Listen on a Unix socket created with mode 0600.

        A live server answering at ``path`` is left alone (:class:`ListenError`); a stale
        socket (nobody accepts on it) is replaced; anything that is not a socket is never
        deleted.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind_unix(sock, path)
            os.chmod(path, 0o600)
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        self._serve(sock, None)
        self._unix_paths.append(path)
        endpoint = Endpoint("unix", path=path)
        self.endpoints.append(endpoint)
        LOG.info("listening on %s", endpoint)
        return endpoint

    @staticmethod
    def _bind_unix(sock: socket.socket, path: str) -> None:
        where = f"unix:{path}"
        for attempt in range(2):
            # umask around bind(): the socket file never exists with looser permissions.
            old = os.umask(0o177)
            try:
                sock.bind(path)
                return
            except FileNotFoundError:
                raise ListenError(
                    f"cannot listen on {where}: directory {os.path.dirname(path) or '.'} "
                    "does not exist"
                ) from None
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or attempt:
                    raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
            finally:
                os.umask(old)
            _remove_stale_socket(path)

    async def start_tls(self, host: str, port: int, ssl_context: ssl.SSLContext) -> Endpoint:
        """Listen on TCP with TLS (port 0 picks a free port)."""
        where = Endpoint("tls", host=host, port=port)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _name, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
        except OSError as exc:
            sock.close()
            raise ListenError(f"cannot listen on {where}: {os.strerror(exc.errno or 0)}") from exc
        self._serve(sock, ssl_context)
        endpoint = Endpoint("tls", host=host, port=int(sock.getsockname()[1]))
        self.endpoints.append(endpoint)
        LOG.info("listening on %s", endpoint)
        return endpoint

    def _serve(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        sock.setblocking(False)
        task = asyncio.ensure_future(self._accept_loop(sock, ssl_context))
        self._listeners.append(_Listener(sock, task))

    async def _accept_loop(self, lsock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        loop = asyncio.get_running_loop()
        if ssl_context is None or _STREAMS_START_TLS:
            # _accept counts the connection, then (TLS) runs the handshake under the one
            # accept-to-login deadline.
            callback = functools.partial(self._accept, ssl_context=ssl_context)
            extra: dict[str, Any] = {}
        else:  # Python < 3.11: asyncio runs the handshake before we see the connection
            callback = functools.partial(self._accept, ssl_context=None)
            extra = {"ssl": ssl_context, "ssl_handshake_timeout": self.limits.handshake_timeout}
        while True:
            try:
                sock, _address = await loop.sock_accept(lsock)
            except OSError as exc:
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    LOG.warning("accept failed: %s", exc)
                    await asyncio.sleep(0.1)
                    continue
                await self._make_room(exc)
                continue
            task = asyncio.ensure_future(self._connect_accepted(sock, callback, extra))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)
            # sock_accept does not yield while connections are pending: let this one be
            # admitted (and evict, if need be) before accepting the next.
            await asyncio.sleep(0)

    async def _make_room(self, exc: OSError) -> None:
        """accept() ran out of descriptors: drop the oldest connection not logged in, if any,
        and let its descriptor close; with none to drop, wait a little."""
        if self._preauth:
            self._evict_oldest_preauth(f"accept: {exc.strerror}")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        else:
            self._refusals.warning(LOG, "accept: %s; waiting for connections to close", exc)
            await asyncio.sleep(0.05)

    async def _connect_accepted(
        self,
        sock: socket.socket,
        callback: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        extra: dict[str, Any],
    ) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=self.limits.read_chunk)
            return asyncio.StreamReaderProtocol(reader, callback)

        try:
            await loop.connect_accepted_socket(protocol, sock, **extra)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            self._handshake_failures.warning(LOG, "accepted connection failed: %s", exc)
            sock.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        for listener in self._listeners:
            await listener.close()
        for admission in list(self._admitted.values()):
            if admission.conn is None:
                admission.abort()  # still in its TLS handshake
        for conn in list(self.connections):
            conn.close("server shutting down")
        for conn in list(self.connections):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), self.limits.write_timeout + 2)
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._listeners.clear()
        self._unix_paths.clear()

    # -- admission --------------------------------------------------------------------------

    @property
    def max_connections(self) -> int:
        """``Limits.max_connections``, lowered to what the open-file limit leaves room for."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.limits.max_connections
        room = max(1, int(soft) - FD_RESERVE)
        if room < self.limits.max_connections and not self._warned_fd_limit:
            self._warned_fd_limit = True
            LOG.warning(
                "max_connections %d lowered to %d: the open-file limit is %d (raise it with "
                "LimitNOFILE= or ulimit -n)",
                self.limits.max_connections,
                room,
                soft,
            )
        return min(room, self.limits.max_connections)

    def _admit(self, abort: Callable[[], None]) -> _Admission | None:
        """Count a new connection, or None when the server is full of logged-in peers.

        At the limit the oldest connection that has not logged in is dropped to make room:
        a legitimate peer logs in within milliseconds, so a flood of idle or handshaking
        connections only ever evicts itself.
        """
        if len(self._preauth) >= self.limits.max_unauthenticated:
            self._evict_oldest_preauth(
                f"{len(self._preauth)} connections not logged in (max_unauthenticated)"
            )
        if len(self._admitted) >= self.max_connections:
            if not self._preauth:
                return None
            self._evict_oldest_preauth(f"at the connection limit ({self.max_connections})")
        self._seq += 1
        admission = _Admission(self._seq, abort)
        self._admitted[admission.seq] = admission
        self._preauth[admission.seq] = admission
        return admission

    def _evict_oldest_preauth(self, why: str) -> None:
        oldest = next(iter(self._preauth.values()))
        self._release(oldest)
        oldest.abort()
        self._evictions.warning(LOG, "%s: dropped the oldest unauthenticated connection", why)

    def _release(self, admission: _Admission) -> None:
        self._admitted.pop(admission.seq, None)
        self._preauth.pop(admission.seq, None)

    def _logged_in(self, conn: Connection) -> None:
        """The peer proved an identity: it no longer counts as evictable."""
        admission = conn.data.get("admission")
        if isinstance(admission, _Admission):
            self._preauth.pop(admission.seq, None)

    def _not_logged_in(self, conn: Connection) -> None:
        """A transport-identified peer failed a login: it is evictable again, and past the
        accept-to-login deadline it is closed after answering."""
        admission = conn.data.get("admission")
        if isinstance(admission, _Admission) and admission.seq in self._admitted:
            self._preauth.setdefault(admission.seq, admission)
        if conn.data.get("deadline_passed"):
            asyncio.get_running_loop().call_soon(conn.close, "failed login after the deadline")

    # -- accepting --------------------------------------------------------------------------

    async def _accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.handshake_timeout
        peername = writer.get_extra_info("peername")
        label = f"peer#{self._seq + 1}({peername or 'unix'})"
        admission = self._admit(functools.partial(_abort_stream, writer))
        if admission is None:
            self._refuse_full(reader, writer, label, tls_pending=ssl_context is not None)
            return
        try:
            if ssl_context is not None and not await self._secure(
                writer, ssl_context, admission, deadline, label
            ):
                self._release(admission)
                return
            conn = self._connection(reader, writer, label, admission)
        except BaseException:
            self._release(admission)
            _abort_stream(writer)
            raise
        if conn is None:
            self._release(admission)
            return
        admission.conn = conn
        if conn.principal is not None:
            LOG.info("%s: authenticated as %s by transport", conn.label, conn.principal.name)
            self._logged_in(conn)
        self.connections.add(conn)
        conn.add_close_callback(self._closed)
        conn.start()
        loop.call_at(deadline, self._check_authenticated, conn)

    async def _secure(
        self,
        writer: asyncio.StreamWriter,
        ctx: ssl.SSLContext,
        admission: _Admission,
        deadline: float,
        label: str,
    ) -> bool:
        """Start TLS on an admitted connection within its deadline; False if it is gone."""
        # A TLS connection holds ~300 KB once its handshake starts. Let the rest of an accept
        # burst be admitted first: the newcomers it evicts never allocate that. Reading is
        # paused meanwhile, so that the ClientHello is not read as plaintext.
        raw_transport: Any = writer.transport
        raw_transport.pause_reading()
        await asyncio.sleep(0)
        if admission.seq not in self._admitted:
            return False  # evicted (and aborted) already
        timeout = deadline - asyncio.get_running_loop().time()
        return await self._handshake(writer, ctx, timeout, label)

    async def _handshake(
        self, writer: asyncio.StreamWriter, ctx: ssl.SSLContext, timeout: float, label: str
    ) -> bool:
        """Run the TLS handshake within ``timeout`` seconds; False if it failed."""
        raw = writer.transport
        try:
            await writer.start_tls(ctx, ssl_handshake_timeout=max(0.001, timeout))
        except asyncio.CancelledError:
            raise
        except (OSError, ssl.SSLError, asyncio.TimeoutError, AttributeError) as exc:
            # AttributeError: asyncio's own start_tls (3.11) trips over the missing transport
            # of a peer that went away mid-handshake.
            failure = str(exc) or type(exc).__name__
        else:
            if writer.transport is not None and not writer.transport.is_closing():
                return True
            failure = "the peer went away"
        if writer.transport is None:
            # Give the writer its (closed) raw transport back, or its __del__ fails on None.
            setattr(writer, "_transport", raw)  # noqa: B010
        self._handshake_failures.warning(LOG, "%s: TLS handshake failed: %s", label, failure)
        _abort_stream(writer)
        return False

    def _connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        label: str,
        admission: _Admission,
    ) -> Connection | None:
        """A Connection with the transport's identity (uid or certificate) as its default
        principal; None if the Unix peer's uid is not allowed."""
        conn = Connection(
            reader,
            writer,
            limits=self.limits,
            label=label,
            on_request=self._handle_request,
            server_side=True,
        )
        conn.data["admission"] = admission
        admission.abort = conn.abort
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", creds)
            conn.peer_uid = uid
            conn.label = f"peer#{admission.seq}(unix pid={pid} uid={uid})"
            if uid not in self.allowed_uids:
                LOG.warning("%s: refused: uid %d is not allowed", conn.label, uid)
                writer.transport.abort()
                return None
            conn.principal = self.credentials.by_uid(uid)
        cn = _cert_common_name(writer.get_extra_info("peercert"))
        if cn is not None:
            conn.peer_cert_cn = cn
            principal = self.credentials.by_cert_cn(cn)
            if principal is None:
                LOG.warning("%s: certificate CN %r names no principal", conn.label, cn)
            else:
                conn.principal = principal
        return conn

    def _refuse_full(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        label: str,
        *,
        tls_pending: bool,
    ) -> None:
        self._refusals.warning(
            LOG, "%s: refused: %d connections already", label, len(self._admitted)
        )
        if tls_pending:
            # No handshake for a peer we cannot serve: that would cost the very resources
            # the limit protects.
            writer.transport.abort()
            return
        conn = Connection(reader, writer, limits=self.limits, label=label, server_side=True)
        conn.start()
        conn._protocol_error(
            TooManyConnections("server is at its connection limit"), from_reader=False
        )

    def _check_authenticated(self, conn: Connection) -> None:
        conn.data["deadline_passed"] = True
        if conn.principal is None and not conn.closing:
            conn.warn_once("auth-timeout", "closing: not authenticated in time")
            conn.abort("not authenticated in time")

    def _closed(self, conn: Connection) -> None:
        admission = conn.data.get("admission")
        if isinstance(admission, _Admission):
            self._release(admission)
        self.connections.discard(conn)
        LOG.debug("%s: closed (%s)", conn.label, conn.close_reason or "peer closed")
        for callback in self._disconnect_callbacks:
            try:
                callback(conn)
            except Exception:
                LOG.exception("disconnect callback failed")

    async def _handle_request(self, conn: Connection, method: str, params: list[Any]) -> Any:
        spec = self.methods.get(method)
        if spec is None:
            raise MethodNotFound(f"no method {method!r}")
        if not spec.public:
            if conn.principal is None:
                raise Unauthenticated(f"{method} needs an authenticated peer; call auth.login")
            if spec.roles and not spec.roles & conn.principal.roles:
                LOG.info(
                    "%s: %s refused to %s (roles %s, needs one of %s)",
                    conn.label,
                    method,
                    conn.principal.name,
                    sorted(conn.principal.roles),
                    sorted(spec.roles),
                )
                raise Forbidden(
                    f"{method} needs one of the roles {sorted(spec.roles)}",
                    {"required": sorted(spec.roles), "granted": sorted(conn.principal.roles)},
                )
        _check_params(method, spec.params, params)
        return await spec.handler(conn, *params)

    # -- built-in methods -------------------------------------------------------------------

    async def _auth_challenge(self, conn: Connection) -> dict[str, Any]:
        nonce = auth.new_nonce()
        conn.data["auth_nonce"] = nonce
        return {
            "nonce": nonce,
            "server": self.name,
            "identity": conn.principal.name if conn.principal else None,
            "roles": sorted(conn.roles),
        }

    async def _auth_login(
        self, conn: Connection, identity: str, client_nonce: bytes, proof: bytes
    ) -> dict[str, Any]:
        nonce = conn.data.pop("auth_nonce", None)
        if nonce is None:
            raise InvalidRequest("call auth.challenge before auth.login (nonces are single-use)")
        if len(client_nonce) < 16:
            raise InvalidParams("client nonce must have at least 16 bytes")
        principal = self.credentials.verify(identity, nonce, client_nonce, proof)
        if principal is None:
            failures = int(conn.data.get("auth_failures", 0)) + 1
            conn.data["auth_failures"] = failures
            # A presented login that fails is refused outright: the peer keeps no identity,
            # not even the one its uid or certificate gave it.
            conn.principal = None
            self._not_logged_in(conn)
            self._login_failures.warning(
                LOG, "%s: authentication failed for %r (%d)", conn.label, identity, failures
            )
            if failures >= self.limits.max_auth_failures:
                # Answer first, then close: the peer still gets the typed error.
                asyncio.get_running_loop().call_soon(conn.close, "too many failed logins")
            raise AuthenticationFailed(f"wrong proof for {identity!r}")
        assert principal.secret is not None
        # The presented identity wins over the transport's (uid or certificate) default.
        conn.principal = principal
        self._logged_in(conn)
        LOG.info("%s: authenticated as %s", conn.label, principal.name)
        return {
            "identity": principal.name,
            "roles": sorted(principal.roles),
            "server_proof": auth.server_proof(principal.secret, identity, nonce, client_nonce),
        }

    async def _ping(self, conn: Connection) -> str:
        return "pong"


# --------------------------------------------------------------------------------------------
# Client


ClientNotificationHandler = Callable[[str, list[Any]], None]


class RPCClient:
    """One client connection. Calls may be concurrent; each has a timeout."""

    def __init__(self, conn: Connection, call_timeout: float) -> None:
        self.conn = conn
        self.call_timeout = call_timeout
        self.identity: str | None = None
        self.roles: frozenset[str] = frozenset()

    @classmethod
    async def connect(
        cls,
        endpoint: Endpoint | str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        limits: Limits | None = None,
        call_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        on_notification: ClientNotificationHandler | None = None,
    ) -> RPCClient:
        """Open a connection (TLS endpoints need ``ssl_context``)."""
        ep = Endpoint.parse(endpoint) if isinstance(endpoint, str) else endpoint
        lim = limits or Limits()
        if ep.scheme == "unix":
            opening = asyncio.open_unix_connection(ep.path, limit=lim.read_chunk)
        else:
            if ssl_context is None:
                raise ValueError(f"{ep}: refusing to connect without TLS (no SSL context)")
            opening = asyncio.open_connection(
                ep.host,
                ep.port,
                ssl=ssl_context,
                server_hostname=server_hostname or ep.host,
                limit=lim.read_chunk,
            )
        try:
            reader, writer = await asyncio.wait_for(opening, connect_timeout)
        except asyncio.TimeoutError:
            raise ConnectionLost(f"{ep}: connect timed out after {connect_timeout}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionLost(f"{ep}: {exc}") from exc

        def _notified(conn: Connection, method: str, params: list[Any]) -> None:
            if on_notification is not None:
                on_notification(method, params)

        conn = Connection(reader, writer, limits=lim, label=str(ep), on_notification=_notified)
        conn.start()
        return cls(conn, call_timeout)

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call ``method``; raises the typed :class:`RPCError` the server returned."""
        return await self.conn.call(method, params, timeout or self.call_timeout)

    async def login(self, identity: str | None, secret: bytes | None) -> frozenset[str]:
        """Authenticate and check the server's proof.

        With an identity and a secret we always log in, even where the transport (uid,
        certificate) already names a principal: our own login wins. Without them we take
        the transport's identity, if it gave one.
        """
        challenge = await self.call("auth.challenge")
        if (identity is None or secret is None) and challenge.get("identity"):
            self.identity = str(challenge["identity"])
            self.roles = frozenset(challenge.get("roles", ()))
            return self.roles
        if identity is None or secret is None:
            raise AuthenticationFailed("the transport did not identify us and we have no secret")
        client_nonce = auth.new_nonce()
        proof = auth.client_proof(secret, identity, challenge["nonce"], client_nonce)
        reply = await self.call("auth.login", identity, client_nonce, proof)
        expected = auth.server_proof(secret, identity, challenge["nonce"], client_nonce)
        got = reply.get("server_proof")
        if not isinstance(got, bytes) or not hmac.compare_digest(expected, got):
            await self.close()
            raise AuthenticationFailed("the server failed to prove it knows our secret")
        self.identity = str(reply["identity"])
        self.roles = frozenset(reply.get("roles", ()))
        return self.roles

    async def close(self) -> None:
        """Close and wait until closed."""
        self.conn.close()
        await self.conn.wait_closed()

    @property
    def closed(self) -> bool:
        """True once the connection has closed."""
        return self.conn.is_closed


class Backoff:
    """Exponential backoff with jitter: delay n is uniform in [cap/2, cap], cap = initial·2ⁿ."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        multiplier: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or multiplier < 1:
            raise ValueError("need 0 < initial <= maximum and multiplier >= 1")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        cap = min(self.maximum, self.initial * self.multiplier**self.attempt)
        self.attempt += 1
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempt = 0


@dataclass
class ClientSettings:
    """How a :class:`ReconnectingClient` reaches and proves itself to its server."""

    endpoint: Endpoint
    identity: str | None = None
    secret: bytes | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    limits: Limits = field(default_factory=Limits)
    call_timeout: float = 30.0
    connect_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class ReconnectingClient:
    """Keeps one authenticated connection up, reconnecting with backoff and jitter.

    ``on_connected(client)`` runs after every (re)connection and login, before calls made
    through :meth:`call` are let through; ``on_disconnected(reason)`` after every loss.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        on_connected: Callable[[RPCClient], Awaitable[None]] | None = None,
        on_disconnected: Callable[[str], None] | None = None,
        on_notification: ClientNotificationHandler | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_notification = on_notification
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max, rng=rng)
        self._client: RPCClient | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.connections = 0
        self._last_failure: str | None = None

    def start(self) -> None:
        """Start connecting in the background."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Close the connection and stop reconnecting."""
        self._stopping = True
        if self._client is not None:
            await self._client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def connected(self) -> bool:
        """True while an authenticated connection is up."""
        return self._ready.is_set()

    async def call(self, method: str, *params: Any, timeout: float | None = None) -> Any:
        """Call on the current connection, waiting for one up to the call's timeout."""
        limit = timeout or self.settings.call_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), max(0.001, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise ConnectionLost(
                    f"not connected to {self.settings.endpoint}"
                    + (f" ({self._last_failure})" if self._last_failure else "")
                ) from None
            client = self._client
            if client is not None and not client.conn.closing:
                return await client.call(
                    method, *params, timeout=max(0.001, deadline - loop.time())
                )
            # The connection went away between ready and now: wait for the next one.
            await asyncio.sleep(0.01)

    async def _run(self) -> None:
        s = self.settings
        while not self._stopping:
            client: RPCClient | None = None
            try:
                client = await RPCClient.connect(
                    s.endpoint,
                    ssl_context=s.ssl_context,
                    server_hostname=s.server_hostname,
                    limits=s.limits,
                    call_timeout=s.call_timeout,
                    connect_timeout=s.connect_timeout,
                    on_notification=self._on_notification,
                )
                await client.login(s.identity, s.secret)
                self._client = client
                self.connections += 1
                if self._on_connected is not None:
                    await self._on_connected(client)
                if self._last_failure is not None:
                    LOG.info("connected to %s again", s.endpoint)
                else:
                    LOG.info("connected to %s as %s", s.endpoint, client.identity)
                self._last_failure = None
                self.backoff.reset()
                self._ready.set()
                await client.conn.wait_closed()
                reason = client.conn.close_reason or "connection closed"
            except asyncio.CancelledError:
                raise
            except RPCError as exc:
                reason = f"{exc.type_name}: {exc.message}"
            except Exception as exc:
                LOG.exception("unexpected error talking to %s", s.endpoint)
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self._ready.clear()
                self._client = None
            if client is not None and not client.closed:
                client.conn.abort()
            if self._stopping:
                break
            if reason != self._last_failure:
                LOG.warning("lost or could not reach %s: %s", s.endpoint, reason)
            self._last_failure = reason
            if self._on_disconnected is not None:
                try:
                    self._on_disconnected(reason)
                except Exception:
                    LOG.exception("disconnect callback failed")
            await asyncio.sleep(self.backoff.next_delay())


__all__ = [
    "ERROR_NOTIFICATION",
    "AuthenticationFailed",
    "Backoff",
    "CallTimeout",
    "ClientSettings",
    "Conflict",
    "Connection",
    "ConnectionLost",
    "Endpoint",
    "Forbidden",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "Limits",
    "ListenError",
    "LogRateLimit",
    "MalformedMessage",
    "MessageTooLarge",
    "MethodNotFound",
    "NotFound",
    "RPCClient",
    "RPCError",
    "RPCServer",
    "ReconnectingClient",
    "TooManyConnections",
    "Unauthenticated",
    "client_ssl_context",
    "server_ssl_context",
]
