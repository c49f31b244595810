"""The msgpack-RPC layer over real Unix and TLS sockets: auth, roles, limits, hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import stat
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from sgflows.agent import auth, rpc

SECRETS = {
    "agent1": b"a" * 32,
    "nova": b"n" * 32,
    "ops": b"o" * 32,
}


def make_credentials() -> auth.Credentials:
    return auth.Credentials(
        [
            auth.Principal("agent1", frozenset({"agent"}), secret=SECRETS["agent1"]),
            auth.Principal("nova", frozenset({"service"}), secret=SECRETS["nova"]),
            auth.Principal("ops", frozenset({"admin"}), secret=SECRETS["ops"]),
            auth.Principal("certy", frozenset({"agent"}), cert_cn="compute-cert"),
        ]
    )


async def make_server(limits: rpc.Limits | None = None, **kwargs: Any) -> rpc.RPCServer:
    server = rpc.RPCServer(make_credentials(), limits=limits, **kwargs)

    async def echo(conn: rpc.Connection, value: Any) -> Any:
        return value

    async def sleep(conn: rpc.Connection, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def activate(conn: rpc.Connection, port: str) -> str:
        return f"activated {port}"

    async def whoami(conn: rpc.Connection) -> str:
        assert conn.principal is not None
        return conn.principal.name

    async def broken(conn: rpc.Connection) -> None:
        raise RuntimeError("boom")

    server.register("echo", echo, roles={"agent"}, params=(object,))
    server.register("sleep", sleep, roles={"agent"}, params=((int, float),))
    server.register("activate", activate, roles={"service"}, params=(str,))
    server.register("whoami", whoami)
    server.register("broken", broken)
    return server


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


async def unix_client(path: Path, who: str | None = "agent1") -> rpc.RPCClient:
    client = await rpc.RPCClient.connect(f"unix:{path}", call_timeout=10)
    if who:
        await client.login(who, SECRETS[who])
    return client


async def raw_unix(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(path))


async def read_messages(reader: asyncio.StreamReader, until_eof: bool = True) -> list[Any]:
    """Everything the server sends until it closes (bounded by the test's deadline)."""
    unpacker = msgpack.Unpacker(raw=False)
    out: list[Any] = []
    while True:
        try:
            data = await reader.read(65536)
        except ConnectionResetError:
            return out
        if not data:
            return out
        unpacker.feed(data)
        out.extend(unpacker)
        if not until_eof and out:
            return out


async def login_raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Authenticate a raw connection as agent1 with hand-built messages."""
    unpacker = msgpack.Unpacker(raw=False)

    async def roundtrip(msg: list[Any]) -> Any:
        writer.write(msgpack.packb(msg, use_bin_type=True))
        await writer.drain()
        while True:
            unpacker.feed(await reader.read(65536))
            for obj in unpacker:
                return obj

    challenge = await roundtrip([0, 1, "auth.challenge", []])
    nonce = challenge[3]["nonce"]
    cnonce = os.urandom(32)
    proof = auth.client_proof(SECRETS["agent1"], "agent1", nonce, cnonce)
    reply = await roundtrip([0, 2, "auth.login", ["agent1", cnonce, proof]])
    assert reply[2] is None, reply


# ---------------------------------------------------------------------------------------------


def test_endpoint_parsing() -> None:
    assert rpc.Endpoint.parse("unix:/run/x.sock") == rpc.Endpoint("unix", path="/run/x.sock")
    assert rpc.Endpoint.parse("tls:127.0.0.1:6640") == rpc.Endpoint(
        "tls", host="127.0.0.1", port=6640
    )
    assert rpc.Endpoint.parse("tls:[::1]:6640").host == "::1"
    assert str(rpc.Endpoint.parse("tls:[::1]:6640")) == "tls:[::1]:6640"
    for bad in ("tcp:127.0.0.1:1", "http://x", "tls:host", "unix:", "tls::1"):
        with pytest.raises(ValueError):
            rpc.Endpoint.parse(bad)


def test_hmac_login_roles_and_typed_errors(short_tmp: Path) -> None:
    async def main() -> None:
        server = await make_server()
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600

        # Before login: a typed refusal, and the connection stays usable.
        client = await unix_client(sock, who=None)
        with pytest.raises(rpc.Unauthenticated):
            await client.call("echo", 1)
        roles = await client.login("agent1", SECRETS["agent1"])
        assert roles == {"agent"}
        assert await client.call("echo", {"a": [1, b"x"]}) == {"a": [1, b"x"]}
        assert await client.call("whoami") == "agent1"
        assert await client.call("rpc.ping") == "pong"
        with pytest.raises(rpc.Forbidden) as forbidden:
            await client.call("activate", "p1")
        assert forbidden.value.code == 403
        assert forbidden.value.details["required"] == ["service"]
        with pytest.raises(rpc.MethodNotFound):
            await client.call("no.such.method")
        with pytest.raises(rpc.InvalidParams):
            await client.call("echo")
        with pytest.raises(rpc.InvalidParams):
            await client.call("sleep", "soon")
        with pytest.raises(rpc.InvalidParams):
            await client.call("sleep", True)  # a bool is not a number on the wire
        with pytest.raises(rpc.InternalError):
            await client.call("broken")
        assert await client.call("echo", 2) == 2  # still connected after all the errors

        # Service role: allowed; admin-only: refused (sRBAC phase 2).
        nova = await unix_client(sock, "nova")
        assert await nova.call("activate", "p1") == "activated p1"
        ops = await unix_client(sock, "ops")
        with pytest.raises(rpc.Forbidden):
            await ops.call("activate", "p1")
        for c in (client, nova, ops):
            await c.close()
        await server.close()
        assert not sock.exists()

    run(main())


def test_wrong_secret_is_refused_then_disconnected(short_tmp: Path) -> None:
    async def main() -> None:
        server = await make_server(rpc.Limits(max_auth_failures=3))
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        client = await unix_client(sock, who=None)
        for _ in range(2):
            with pytest.raises(rpc.AuthenticationFailed):
                await client.login("agent1", b"wrong-secret-wrong-secret")
        assert not client.closed
        with pytest.raises(rpc.AuthenticationFailed):
            await client.login("nobody", b"wrong-secret-wrong-secret")
        await asyncio.wait_for(client.conn.wait_closed(), 10)  # third failure: closed
        # auth.login without a fresh challenge is a typed error (nonces are single-use).
        other = await unix_client(sock, who=None)
        with pytest.raises(rpc.InvalidRequest):
            await other.call("auth.login", "agent1", os.urandom(32), os.urandom(32))
        # A good agent is unaffected.
        good = await unix_client(sock)
        assert await good.call("echo", "ok") == "ok"
        await good.close()
        await other.close()
        await server.close()

    run(main())


def test_client_refuses_a_server_that_cannot_prove_the_secret(short_tmp: Path) -> None:
    async def main() -> None:
        # The server knows a different secret for agent1; login fails on the server side.
        creds = auth.Credentials([auth.Principal("agent1", frozenset({"agent"}), b"z" * 32)])
        server = rpc.RPCServer(creds)
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        client = await unix_client(sock, who=None)
        with pytest.raises(rpc.AuthenticationFailed):
            await client.login("agent1", SECRETS["agent1"])
        await client.close()
        await server.close()

    run(main())


def test_unix_peer_uid_checked(short_tmp: Path) -> None:
    async def main() -> None:
        server = await make_server(allowed_uids={os.getuid() + 12345})
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        client = await rpc.RPCClient.connect(f"unix:{sock}", call_timeout=10)
        with pytest.raises(rpc.ConnectionLost):
            await client.call("auth.challenge")
        await server.close()

        # A uid mapped to a principal is authenticated by the transport.
        creds = auth.Credentials([auth.Principal("ops", frozenset({"admin"}), uids={os.getuid()})])
        server = rpc.RPCServer(creds)
        await server.start_unix(str(sock))
        client = await rpc.RPCClient.connect(f"unix:{sock}", call_timeout=10)
        assert await client.login(None, None) == {"admin"}
        assert client.identity == "ops"
        await client.close()
        await server.close()

    run(main())


def test_tls_server_verification_and_client_certificates(pki: Any) -> None:
    async def main() -> None:
        server = await make_server(rpc.Limits(handshake_timeout=1.0))
        sctx = rpc.server_ssl_context(str(pki.server_cert), str(pki.server_key), str(pki.ca))
        ep = await server.start_tls("127.0.0.1", 0, sctx)
        assert ep.port != 0

        # Secret over TLS, server verified against the CA.
        ctx = rpc.client_ssl_context(str(pki.ca))
        client = await rpc.RPCClient.connect(ep, ssl_context=ctx, call_timeout=10)
        await client.login("agent1", SECRETS["agent1"])
        assert await client.call("whoami") == "agent1"

        # A client certificate names the principal: no secret needed.
        cctx = rpc.client_ssl_context(str(pki.ca), str(pki.client_cert), str(pki.client_key))
        certy = await rpc.RPCClient.connect(ep, ssl_context=cctx, call_timeout=10)
        assert await certy.login(None, None) == {"agent"}
        assert await certy.call("whoami") == "certy"

        # A certificate from another CA is rejected by the handshake.
        rctx = rpc.client_ssl_context(str(pki.ca), str(pki.rogue_cert), str(pki.rogue_key))
        with pytest.raises(rpc.ConnectionLost):
            rogue = await rpc.RPCClient.connect(ep, ssl_context=rctx, call_timeout=5)
            await rogue.call("auth.challenge")

        # The agent refuses a server whose certificate its CA did not sign.
        with pytest.raises(rpc.ConnectionLost):
            await rpc.RPCClient.connect(
                ep, ssl_context=rpc.client_ssl_context(str(pki.rogue_ca)), call_timeout=5
            )
        # ... and a wrong host name.
        with pytest.raises(rpc.ConnectionLost):
            await rpc.RPCClient.connect(
                ep, ssl_context=ctx, server_hostname="evil.example", call_timeout=5
            )
        # ... and plaintext.
        with pytest.raises(ValueError):
            await rpc.RPCClient.connect(ep, ssl_context=None)

        # A plaintext peer on the TLS port gets nowhere; others keep working.
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.port)
        writer.write(msgpack.packb([0, 1, "auth.challenge", []]))
        await writer.drain()
        data = await reader.read(65536)
        assert b"nonce" not in data
        writer.close()
        assert await client.call("echo", "still here") == "still here"
        for c in (client, certy):
            await c.close()
        await server.close()

    run(main())


def test_concurrent_calls_and_timeouts(short_tmp: Path) -> None:
    async def main() -> None:
        server = await make_server()
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        client = await unix_client(sock)
        delays = [0.3, 0.05, 0.2, 0.0, 0.1] * 4
        results = await asyncio.gather(*(client.call("sleep", d) for d in delays))
        assert results == delays  # each answer matched to its own request
        with pytest.raises(rpc.CallTimeout):
            await client.call("sleep", 5, timeout=0.2)
        assert await client.call("echo", 1) == 1  # a timed-out call does not break the line
        await client.close()
        await server.close()

    run(main())


def _expect_error_then_close(messages: list[Any], type_name: str) -> None:
    errors = [m for m in messages if m[:2] == [2, rpc.ERROR_NOTIFICATION]]
    assert errors, messages
    assert errors[0][2][0]["type"] == type_name


def test_oversized_garbage_and_malformed_peers_do_not_hurt_others(short_tmp: Path) -> None:
    async def main() -> None:
        limits = rpc.Limits(max_message_bytes=64 * 1024, max_str_len=16 * 1024)
        server = await make_server(limits)
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        good = await unix_client(sock)

        # 1. Oversized message (150 KiB against a 64 KiB limit).
        reader, writer = await raw_unix(sock)
        await login_raw(reader, writer)
        big = msgpack.packb([0, 9, "echo", [b"x" * (150 * 1024)]], use_bin_type=True)
        writer.write(big)
        with contextlib.suppress(ConnectionError):
            await writer.drain()  # the server may close before it has read everything
        messages = await read_messages(reader)
        _expect_error_then_close(messages, "MessageTooLarge")
        writer.close()

        # 2. A string over the per-type limit (fits the buffer, refused by the unpacker).
        reader, writer = await raw_unix(sock)
        writer.write(msgpack.packb([0, 1, "echo", ["y" * 20000]]))
        _expect_error_then_close(await read_messages(reader), "MalformedMessage")
        writer.close()

        # 3. Garbage bytes.
        reader, writer = await raw_unix(sock)
        writer.write(b"\xc1\xc1\xc1 definitely not msgpack")
        _expect_error_then_close(await read_messages(reader), "MalformedMessage")
        writer.close()

        # 4. Valid msgpack, not an RPC message.
        reader, writer = await raw_unix(sock)
        writer.write(msgpack.packb({"hello": "world"}))
        _expect_error_then_close(await read_messages(reader), "InvalidRequest")
        writer.close()

        # 5. A request with a wrong-typed method gets a typed response, not a disconnect.
        reader, writer = await raw_unix(sock)
        writer.write(msgpack.packb([0, 7, 42, "not-a-list"]))
        [reply] = await read_messages(reader, until_eof=False)
        assert reply[0] == 1 and reply[1] == 7 and reply[2]["type"] == "InvalidRequest"
        writer.write(msgpack.packb([0, 8, "auth.challenge", []]))
        [reply] = await read_messages(reader, until_eof=False)
        assert reply[1] == 8 and reply[2] is None
        writer.close()

        # 6. Deep nesting.
        reader, writer = await raw_unix(sock)
        writer.write(b"\x91" * 5000 + b"\x00")
        _expect_error_then_close(await read_messages(reader), "MalformedMessage")
        writer.close()

        assert await good.call("echo", "fine") == "fine"
        await good.close()
        await server.close()

    run(main())


def test_request_flood_is_back_pressured(short_tmp: Path) -> None:
    async def main() -> None:
        limits = rpc.Limits(max_outstanding=8)
        server = await make_server(limits)
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        good = await unix_client(sock)

        reader, writer = await raw_unix(sock)
        await login_raw(reader, writer)
        n = 2000
        writer.write(b"".join(msgpack.packb([0, 100 + i, "sleep", [0.001]]) for i in range(n)))
        await writer.drain()
        # While the flood is being worked off, another agent is served.
        assert await good.call("echo", "served") == "served"
        unpacker = msgpack.Unpacker(raw=False)
        seen: set[int] = set()
        while len(seen) < n:
            unpacker.feed(await reader.read(65536))
            for msg in unpacker:
                assert msg[2] is None
                seen.add(msg[1])
        [flood_conn] = [c for c in server.connections if c.stats.requests >= n]
        assert flood_conn.stats.max_concurrent <= limits.max_outstanding
        writer.close()
        await good.close()
        await server.close()

    run(main())


def test_peer_that_stops_reading_is_cut_off(short_tmp: Path) -> None:
    async def main() -> None:
        limits = rpc.Limits(write_timeout=0.5, max_outstanding=4, max_queued_notifications=4)
        server = await make_server(limits)
        sock_path = short_tmp / "s.sock"
        await server.start_unix(str(sock_path))
        good = await unix_client(sock_path)

        # Small receive buffer and we never read the echoes of 256 KiB blobs.
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(str(sock_path))
        before = set(server.connections)
        reader, writer = await asyncio.open_unix_connection(sock=raw)
        await login_raw(reader, writer)
        [slow] = server.connections - before
        # Notifications beyond the queue limit are dropped, not buffered.
        for i in range(50):
            slow.notify("tick", [i])
        blob = b"z" * (256 * 1024)
        for i in range(40):
            writer.write(msgpack.packb([0, 1000 + i, "echo", [blob]], use_bin_type=True))
        with_deadline = asyncio.wait_for(slow.wait_closed(), 20)
        await with_deadline
        assert slow.close_reason == "peer stopped reading"
        assert slow.stats.dropped_notifications > 0
        assert slow not in server.connections
        assert await good.call("echo", "unaffected") == "unaffected"
        writer.transport.abort()
        await good.close()
        await server.close()

    run(main())


def test_connection_limit(short_tmp: Path) -> None:
    async def main() -> None:
        server = await make_server(rpc.Limits(max_connections=1))
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        first = await unix_client(sock)
        reader, writer = await raw_unix(sock)
        _expect_error_then_close(await read_messages(reader), "TooManyConnections")
        writer.close()
        assert await first.call("echo", 1) == 1
        await first.close()
        await server.close()

    run(main())


def test_unauthenticated_connections_are_closed_after_the_handshake_timeout(
    short_tmp: Path,
) -> None:
    async def main() -> None:
        server = await make_server(rpc.Limits(handshake_timeout=0.3))
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        idle = await rpc.RPCClient.connect(f"unix:{sock}")
        await asyncio.wait_for(idle.conn.wait_closed(), 10)
        # The server aborts the connection at the deadline; its own cleanup may end a moment
        # after the client saw the close.
        for _ in range(200):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert server.connections == set()
        await server.close()

    run(main())


def test_backoff_grows_with_jitter_and_resets() -> None:
    b = rpc.Backoff(initial=0.5, maximum=4.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    for d, cap in zip(delays, caps):
        assert cap / 2 <= d <= cap
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule
    b.reset()
    assert b.next_delay() <= 0.5


def test_reconnecting_client_comes_back_after_server_restart(short_tmp: Path) -> None:
    async def main() -> None:
        sock = short_tmp / "s.sock"
        server = await make_server()
        await server.start_unix(str(sock))
        connected: list[int] = []
        lost: list[str] = []

        async def on_connected(client: rpc.RPCClient) -> None:
            connected.append(1)

        rc = rpc.ReconnectingClient(
            rpc.ClientSettings(
                endpoint=rpc.Endpoint("unix", path=str(sock)),
                identity="agent1",
                secret=SECRETS["agent1"],
                call_timeout=10,
                backoff_initial=0.05,
                backoff_max=0.2,
            ),
            on_connected=on_connected,
            on_disconnected=lost.append,
        )
        rc.start()
        assert await rc.call("echo", 1) == 1
        await server.close()
        server = await make_server()
        await server.start_unix(str(sock))
        assert await rc.call("echo", 2) == 2
        assert len(connected) == 2 and lost
        await rc.stop()
        await server.close()

    run(main())


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    secret = auth.write_secret(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.load_secret(path) == secret
    os.chmod(path, 0o640)
    with pytest.raises(auth.CredentialError, match="chmod 600"):
        auth.load_secret(path)
    short = tmp_path / "short"
    auth.write_private_file(short, b"tiny")
    with pytest.raises(auth.CredentialError, match="shorter"):
        auth.load_secret(short)
    creds = tmp_path / "creds.json"
    creds.write_text('{"principals": {"a": {"secret": "%s", "roles": ["agent"]}}}' % ("s" * 20))
    os.chmod(creds, 0o644)
    with pytest.raises(auth.CredentialError):
        auth.Credentials.load(creds)
    os.chmod(creds, 0o600)
    assert auth.Credentials.load(creds).by_name("a") is not None
    with pytest.raises(auth.CredentialError, match="unknown roles"):
        auth.Principal("x", frozenset({"root"}))


def test_proofs_bind_every_field() -> None:
    s, n1, n2 = b"k" * 32, b"1" * 32, b"2" * 32
    base = auth.client_proof(s, "agent1", n1, n2)
    assert base != auth.client_proof(s, "agent2", n1, n2)
    assert base != auth.client_proof(s, "agent1", n2, n1)
    assert base != auth.client_proof(b"j" * 32, "agent1", n1, n2)
    assert base != auth.server_proof(s, "agent1", n1, n2)


def test_oldest_unauthenticated_connection_makes_room_for_a_newcomer(short_tmp: Path) -> None:
    async def main() -> None:
        server = await make_server(rpc.Limits(max_unauthenticated=2, max_connections=3))
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        logged_in = await unix_client(sock)
        first = await raw_unix(sock)
        second = await raw_unix(sock)
        # At both limits: the newcomer drops the oldest connection that has not logged in
        # (never the logged-in one), and can log in itself.
        newcomer = await unix_client(sock)
        assert await asyncio.wait_for(first[0].read(), 5) == b""
        assert await newcomer.call("echo", "in") == "in"
        assert await logged_in.call("echo", "still") == "still"
        second[1].write(msgpack.packb([0, 1, "auth.challenge", []]))
        [reply] = await read_messages(second[0], until_eof=False)
        assert reply[2] is None
        for _reader, writer in (first, second):
            writer.close()
        await newcomer.close()
        await logged_in.close()
        await server.close()

    run(main())


def test_presented_login_wins_over_the_uid_principal(short_tmp: Path) -> None:
    async def main() -> None:
        creds = auth.Credentials(
            [
                auth.Principal("agent1", frozenset({"agent"}), secret=SECRETS["agent1"]),
                auth.Principal("root-ops", frozenset({"admin"}), uids=frozenset({os.getuid()})),
            ]
        )
        server = rpc.RPCServer(creds)

        async def whoami(conn: rpc.Connection) -> str:
            assert conn.principal is not None
            return conn.principal.name

        server.register("whoami", whoami)
        sock = short_tmp / "s.sock"
        await server.start_unix(str(sock))
        by_uid = await rpc.RPCClient.connect(f"unix:{sock}")
        assert await by_uid.login(None, None) == frozenset({"admin"})
        assert await by_uid.call("whoami") == "root-ops"
        own = await rpc.RPCClient.connect(f"unix:{sock}")
        assert await own.login("agent1", SECRETS["agent1"]) == frozenset({"agent"})
        assert await own.call("whoami") == "agent1"
        failed = await rpc.RPCClient.connect(f"unix:{sock}")
        with pytest.raises(rpc.AuthenticationFailed):
            await failed.login("agent1", b"wrong" * 8)
        with pytest.raises(rpc.Unauthenticated):
            await failed.call("whoami")
        for client in (by_uid, own, failed):
            await client.close()
        await server.close()

    run(main())


def test_start_unix_never_deletes_a_live_socket_or_a_file(short_tmp: Path) -> None:
    async def main() -> None:
        sock = short_tmp / "s.sock"
        running = await make_server()
        await running.start_unix(str(sock))
        second = await make_server()
        with pytest.raises(rpc.ListenError, match="another server is answering"):
            await second.start_unix(str(sock))
        client = await unix_client(sock)  # the running server still owns the path
        assert await client.call("echo", 1) == 1
        await client.close()
        plain = short_tmp / "plain"
        plain.write_text("keep me")
        with pytest.raises(rpc.ListenError, match="not a socket"):
            await second.start_unix(str(plain))
        assert plain.read_text() == "keep me"
        with pytest.raises(rpc.ListenError, match="does not exist"):
            await second.start_unix(str(short_tmp / "missing" / "s.sock"))
        await running.close()
        await second.close()

    run(main())
