"""A real controller and real agents as processes on loopback (TLS, port 0, sub-second timers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from sgflows.agent import auth, rpc, service
from support.waiting import wait_until

LAUNCH = Path(__file__).with_name("launch.py")
HOSTS = ("compute-1", "compute-2", "compute-3")


def base_model() -> dict[str, Any]:
    return {
        "security_groups": {
            "web": {
                "stateful": True,
                "rules": [
                    {
                        "direction": "ingress",
                        "ethertype": "IPv4",
                        "protocol": "tcp",
                        "port_range_min": 80,
                        "port_range_max": 80,
                        "remote_ip_prefix": "0.0.0.0/0",
                    },
                    {"direction": "ingress", "ethertype": "IPv4", "remote_group_id": "web"},
                    {"direction": "egress", "ethertype": "IPv4"},
                ],
            },
            "db": {"stateful": False, "rules": [{"direction": "egress", "ethertype": "IPv6"}]},
        },
        "ports": [
            {
                "id": "p1",
                "mac_address": "fa:16:3e:00:00:01",
                "fixed_ips": ["10.0.0.1"],
                "security_groups": ["web"],
                "network_id": "net",
                "binding_host": "compute-1",
            },
            {
                "id": "p2",
                "mac_address": "fa:16:3e:00:00:02",
                "fixed_ips": [{"ip_address": "10.0.0.2"}, "fd00::2"],
                "allowed_address_pairs": [{"ip_address": "10.0.9.0/24"}],
                "security_groups": ["web"],
                "network_id": "net",
                "binding_host": "compute-2",
            },
            {
                "id": "p3",
                "mac_address": "fa:16:3e:00:00:03",
                "fixed_ips": ["10.0.0.3"],
                "security_groups": ["db"],
                "network_id": "net",
                "binding_host": "compute-1",
            },
            {
                "id": "p4",
                "mac_address": "fa:16:3e:00:00:04",
                "fixed_ips": ["10.0.0.4"],
                "security_groups": ["web"],
                "network_id": "net",
                "bindings": [
                    {"host": "compute-1", "status": "ACTIVE"},
                    {"host": "compute-2", "status": "INACTIVE"},
                ],
            },
            {
                "id": "p5",
                "mac_address": "fa:16:3e:00:00:05",
                "fixed_ips": ["10.0.0.5"],
                "security_groups": ["db"],
                "binding_host": "compute-3",
            },
        ],
    }


class Proxy:
    """A TCP relay we can cut, to disconnect one agent while the controller keeps running."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.cut = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result()
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers.difference_update({writer, up_writer})

    def disconnect(self) -> None:
        async def _cut() -> None:
            self.cut = True
            for w in list(self.writers):
                w.transport.abort()

        asyncio.run_coroutine_threadsafe(_cut(), self.loop).result(5)

    def reconnect(self) -> None:
        self.loop.call_soon_threadsafe(setattr, self, "cut", False)

    def close(self) -> None:
        self.disconnect()
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Plane:
    """Files, processes and clients of one controller with its agents."""

    def __init__(self, root: Path, pki: Any) -> None:
        self.root = root
        self.pki = pki
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.port = 0
        self.sock = root / "c.sock"
        self.model_path = root / "model.json"
        self.state_file = root / "controller.sqlite3"
        self.secrets: dict[str, Path] = {}
        principals: dict[str, Any] = {
            "nova": {"secret": "n" * 32, "roles": ["service"]},
            "ops": {"secret": "o" * 32, "roles": ["admin"], "uids": [os.getuid()]},
        }
        for host in HOSTS:
            path = root / f"{host}.secret"
            secret = auth.write_secret(path)
            self.secrets[host] = path
            principals[host] = {"secret": secret.decode(), "roles": ["agent"]}
        creds = root / "credentials.json"
        auth.write_private_file(creds, json.dumps({"principals": principals}).encode())
        self.write_model(base_model())

    def write_model(self, model: dict[str, Any]) -> None:
        tmp = self.model_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(model))
        os.replace(tmp, self.model_path)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, str(LAUNCH), *args], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.procs[name] = proc
        return proc

    def start_controller(self, agent_down_time: float = 30.0) -> None:
        ready = self.root / "ready.json"
        ready.unlink(missing_ok=True)
        ini = self.root / "controller.ini"
        ini.write_text(
            f"""[controller]
listen = unix:{self.sock},tls:127.0.0.1:{self.port}
cert_file = {self.pki.server_cert}
key_file = {self.pki.server_key}
client_ca_file = {self.pki.ca}
credentials_file = {self.root / "credentials.json"}
model = {self.model_path}
state_file = {self.state_file}
agent_down_time = {agent_down_time}
watch_interval = 0.05
ready_file = {ready}
[rpc]
max_message_bytes = 262144
write_timeout = 2
handshake_timeout = 2
"""
        )
        self._spawn("controller", ["controller", "--config-file", str(ini)])
        data = wait_until("controller ready", lambda: json.loads(ready.read_text()))
        [tls] = [e for e in data["endpoints"] if e.startswith("tls:")]
        self.port = rpc.Endpoint.parse(tls).port

    def start_agent(self, host: str, port: int | None = None) -> None:
        state = self.root / host
        ini = self.root / f"{host}.ini"
        ini.write_text(
            f"""[DEFAULT]
debug = true
[agent]
host = {host}
controller = tls:127.0.0.1:{port or self.port}
secret_file = {self.secrets[host]}
ca_file = {self.pki.ca}
report_interval = 0.2
report_jitter = 0.2
backoff_initial = 0.05
backoff_max = 0.3
state_dir = {state}
[rpc]
request_timeout = 5
"""
        )
        self._spawn(host, ["agent", "--config-file", str(ini)])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(15)

    def agents(self) -> dict[str, dict[str, Any]]:
        rows = asyncio.run(
            service.fetch_agents(
                f"unix:{self.sock}",
                identity=None,
                secret=None,
                ssl_context=None,
                server_hostname=None,
                timeout=5,
            )
        )
        return {row["host"]: row for row in rows}

    def applied(self, host: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / host / "applied.json").read_text())
        return data["info"]

    def all_active(self, hosts: tuple[str, ...] = HOSTS) -> bool:
        rows = self.agents()
        return all(h in rows and rows[h]["alive"] and rows[h]["state"] == "active" for h in hosts)

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(name, signal.SIGKILL)


@pytest.fixture
def plane(short_tmp: Path, pki: Any) -> Iterator[Plane]:
    p = Plane(short_tmp, pki)
    try:
        yield p
    finally:
        p.close()
        for log in sorted(short_tmp.glob("*.log")):
            text = log.read_text(errors="replace")
            if "Traceback" in text:
                print(f"--- {log.name} ---\n{text[-4000:]}")


def nova_client(plane: Plane) -> Any:
    async def connect() -> rpc.RPCClient:
        client = await rpc.RPCClient.connect(
            f"tls:127.0.0.1:{plane.port}",
            ssl_context=rpc.client_ssl_context(str(plane.pki.ca)),
            call_timeout=5,
        )
        await client.login("nova", b"n" * 32)
        return client

    return connect()


# ---------------------------------------------------------------------------------------------


def test_agents_sync_report_and_follow_the_model(plane: Plane) -> None:
    plane.start_controller()
    for host in HOSTS:
        plane.start_agent(host)
    wait_until("all agents active", plane.all_active)

    rows = plane.agents()
    row = rows["compute-1"]
    assert row["start_flag"] is False and row["last_restart"] is None
    assert row["last_sync"]["kind"] == "full"
    assert row["last_sync"]["counts"]["ports"] == 3
    assert row["configurations"]["devices"] == ["p1", "p3", "p4"]
    assert row["agent_type"] == "sgflows agent" and row["uuid"]

    # Neutron's reply shape, with statefulness and member IPs of remote groups.
    info = plane.applied("compute-1")
    assert sorted(info["devices"]) == ["p1", "p3", "p4"]
    assert info["devices"]["p1"]["fixed_ips"] == ["10.0.0.1"]
    web = info["security_groups"]["web"]
    assert {r["stateful"] for r in web} == {True}
    assert {r["stateful"] for r in info["security_groups"]["db"]} == {False}
    assert web[0]["source_ip_prefix"] == "0.0.0.0/0" and web[0]["port_range_min"] == 80
    members = info["sg_member_ips"]["web"]
    assert ["10.0.0.2", "fa:16:3e:00:00:02"] in members["IPv4"]
    assert ["10.0.9.0/24", "fa:16:3e:00:00:02"] in members["IPv4"]
    assert members["IPv6"] == [["fd00::2", "fa:16:3e:00:00:02"]]

    # A rule added to "db" reaches compute-1 (p3 is in db) through a notification.
    model = base_model()
    model["security_groups"]["db"]["rules"].append(
        {"direction": "ingress", "ethertype": "IPv4", "protocol": "udp", "port_range_min": 53}
    )
    plane.write_model(model)
    wait_until(
        "new db rule on compute-1",
        lambda: len(plane.applied("compute-1")["security_groups"]["db"]) == 2,
    )
    wait_until(
        "refresh counted",
        lambda: plane.agents()["compute-1"]["configurations"]["notifications"]["refreshes"] >= 1,
    )

    # Two concurrent activations of p4 on compute-2: one success, one 409.
    async def activate_twice() -> list[Any]:
        a, b = await nova_client(plane), await nova_client(plane)
        results = await asyncio.gather(
            a.call("activate_port_binding", "p4", "compute-2"),
            b.call("activate_port_binding", "p4", "compute-2"),
            return_exceptions=True,
        )
        await a.close()
        await b.close()
        return results

    results = asyncio.run(activate_twice())
    ok = [r for r in results if isinstance(r, dict)]
    conflicts = [r for r in results if isinstance(r, rpc.Conflict)]
    assert len(ok) == 1 and len(conflicts) == 1, results
    assert conflicts[0].code == 409 and conflicts[0].details["host"] == "compute-2"
    assert ok[0]["binding:host_id"] == "compute-2"
    # Acted on by the two hosts concerned only.
    wait_until("p4 on compute-2", lambda: "p4" in plane.applied("compute-2")["devices"])
    wait_until("p4 off compute-1", lambda: "p4" not in plane.applied("compute-1")["devices"])
    assert sorted(plane.applied("compute-3")["devices"]) == ["p5"]
    # The activation is persisted with the agent table (SQLite, one row per agent).
    with contextlib.closing(sqlite3.connect(plane.state_file)) as db:
        assert db.execute("SELECT port_id, host FROM active_bindings").fetchall() == [
            ("p4", "compute-2")
        ]
        assert {h for (h,) in db.execute("SELECT host FROM agents")} == set(HOSTS)


def test_status_command_prints_a_table_and_json(plane: Plane) -> None:
    plane.start_controller()
    plane.start_agent("compute-1")
    plane.start_agent("compute-2")
    wait_until("agents active", lambda: plane.all_active(("compute-1", "compute-2")))
    base = [sys.executable, str(LAUNCH), "status", "--controller", f"unix:{plane.sock}"]
    out = subprocess.run(base, capture_output=True, text=True, timeout=30, check=True).stdout
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["HOST", "STATE", "ALIVE"]
    assert [line.split()[:3] for line in lines[:2]] == [
        ["compute-1", "active", "yes"],
        ["compute-2", "active", "yes"],
    ]
    out = subprocess.run(
        [*base, "--json"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    rows = json.loads(out)
    assert [(r["host"], r["state"]) for r in rows] == [
        ("compute-1", "active"),
        ("compute-2", "active"),
    ]


def test_status_with_the_agent_config_shows_its_own_host(plane: Plane) -> None:
    """``sgflows status --config-file agent.ini`` logs in as the agent (its secret, here over
    the Unix socket): the controller answers the agent's own row, never another host's, and
    the command says so."""
    plane.start_controller()
    plane.start_agent("compute-1")
    plane.start_agent("compute-2")
    wait_until("agents active", lambda: plane.all_active(("compute-1", "compute-2")))
    ini = plane.root / "status-agent.ini"
    ini.write_text(
        f"[agent]\nhost = compute-1\ncontroller = unix:{plane.sock}\n"
        f"secret_file = {plane.secrets['compute-1']}\n"
    )
    status = [sys.executable, str(LAUNCH), "status", "--config-file", str(ini), "--json"]
    done = subprocess.run(status, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert [(r["host"], r["state"]) for r in json.loads(done.stdout)] == [("compute-1", "active")]
    assert "logged in as compute-1" in done.stderr and "its own host only" in done.stderr
    # The same principal over TLS, named explicitly: still its own row alone.
    tls = subprocess.run(
        [
            sys.executable,
            str(LAUNCH),
            "status",
            "--json",
            "--controller",
            f"tls:127.0.0.1:{plane.port}",
            "--identity",
            "compute-2",
            "--secret-file",
            str(plane.secrets["compute-2"]),
            "--ca-file",
            str(plane.pki.ca),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert tls.returncode == 0, tls.stderr
    assert [r["host"] for r in json.loads(tls.stdout)] == ["compute-2"]


def test_bad_peers_are_refused_while_agents_keep_working(plane: Plane) -> None:
    plane.start_controller()
    for host in HOSTS[:2]:
        plane.start_agent(host)
    wait_until("agents active", lambda: plane.all_active(HOSTS[:2]))
    tls = rpc.client_ssl_context(str(plane.pki.ca))
    ep = f"tls:127.0.0.1:{plane.port}"

    async def bad_peers() -> None:
        # Wrong secret: typed refusal.
        client = await rpc.RPCClient.connect(ep, ssl_context=tls, call_timeout=5)
        with pytest.raises(rpc.AuthenticationFailed):
            await client.login("compute-1", b"not-the-secret-at-all")
        await client.close()
        # Admin-only principal: no binding activation (sRBAC phase 2).
        client = await rpc.RPCClient.connect(ep, ssl_context=tls, call_timeout=5)
        await client.login("ops", b"o" * 32)
        with pytest.raises(rpc.Forbidden):
            await client.call("activate_port_binding", "p4", "compute-2")
        await client.close()
        # An agent may not speak for another host.
        client = await rpc.RPCClient.connect(ep, ssl_context=tls, call_timeout=5)
        await client.login("compute-3", plane.secrets["compute-3"].read_bytes().strip())
        with pytest.raises(rpc.Forbidden):
            await client.call("report_state", {"host": "compute-1"})
        await client.close()
        # No TLS.
        reader, writer = await asyncio.open_connection("127.0.0.1", plane.port)
        writer.write(msgpack.packb([0, 1, "auth.challenge", []]))
        assert b"nonce" not in await reader.read(65536)
        writer.close()
        # Oversized (controller limit 256 KiB) and garbage, over TLS.
        for payload in (
            msgpack.packb([0, 1, "auth.challenge", [b"x" * 400_000]]),
            b"\xc1" * 64,
        ):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", plane.port, ssl=tls, server_hostname="127.0.0.1"
            )
            writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            data = b""
            with contextlib.suppress(ConnectionError, OSError):
                while chunk := await reader.read(65536):
                    data += chunk
            assert b"rpc.error" in data
            writer.close()

    before = {h: r["last_report"] for h, r in plane.agents().items()}
    asyncio.run(bad_peers())
    # A peer that stops reading: log in as ops, ask for the agent table over and over, never
    # read the answers. The controller (write_timeout = 2 s) cuts it off.
    raw = socket.create_connection(("127.0.0.1", plane.port))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ssl_raw = tls.wrap_socket(raw, server_hostname="127.0.0.1")
    ssl_raw.settimeout(20)
    unpacker = msgpack.Unpacker(raw=False)

    def roundtrip(msg: list[Any]) -> Any:
        ssl_raw.sendall(msgpack.packb(msg, use_bin_type=True))
        while True:
            unpacker.feed(ssl_raw.recv(65536))
            for obj in unpacker:
                return obj

    nonce = roundtrip([0, 1, "auth.challenge", []])[3]["nonce"]
    cnonce = os.urandom(32)
    proof = auth.client_proof(b"o" * 32, "ops", nonce, cnonce)
    assert roundtrip([0, 2, "auth.login", ["ops", cnonce, proof]])[2] is None
    request = msgpack.packb([0, 3, "list_agents", []])
    with contextlib.suppress(OSError):  # the controller closing us ends the flood
        for _ in range(20000):
            ssl_raw.sendall(request)
    log_path = plane.root / "controller.log"
    wait_until("slow reader cut off", lambda: "stopped reading" in log_path.read_text())
    ssl_raw.close()
    # The agents kept reporting all along.
    wait_until(
        "fresh reports from both agents",
        lambda: all(plane.agents()[h]["last_report"] > before[h] for h in HOSTS[:2]),
    )
    assert plane.all_active(HOSTS[:2])
    log = (plane.root / "controller.log").read_text()
    assert "authentication failed" in log and "MessageTooLarge" in log


def test_controller_restart_alive_revived_new(plane: Plane) -> None:
    plane.start_controller()
    plane.start_agent("compute-1")
    wait_until("agent active", lambda: plane.all_active(("compute-1",)))

    def replies() -> dict[str, int]:
        return dict(plane.agents()["compute-1"]["configurations"]["report_replies"])

    def full_syncs() -> int:
        return int(plane.agents()["compute-1"]["syncs"]["full"]) + int(
            plane.agents()["compute-1"]["syncs"]["resync"]
        )

    assert replies().get("new") == 1

    # 1. Killed and restarted within agent_down_time: the persisted table says "alive".
    before = full_syncs()
    plane.stop("controller", signal.SIGKILL)
    plane.start_controller()
    wait_until("resync after reconnect", lambda: full_syncs() > before)
    wait_until("active again", lambda: plane.all_active(("compute-1",)))
    r = replies()
    assert r.get("new") == 1 and r.get("revived") is None and r["alive"] >= 1

    # 2. Down for longer than agent_down_time: "revived" (and a full resync).
    plane.stop("controller", signal.SIGKILL)
    time.sleep(1.5)
    plane.start_controller(agent_down_time=1.0)
    wait_until("revived", lambda: replies().get("revived", 0) >= 1)
    wait_until("active again", lambda: plane.all_active(("compute-1",)))

    # 3. The controller lost its table: "new" again, and the agent resyncs.
    before = full_syncs()
    plane.stop("controller")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{plane.state_file}{suffix}").unlink(missing_ok=True)
    plane.start_controller()
    wait_until("new after the table was lost", lambda: replies().get("new") == 2)
    wait_until("resynced", lambda: full_syncs() > before)
    wait_until("active again", lambda: plane.all_active(("compute-1",)))


def test_agent_restart_is_reported(plane: Plane) -> None:
    plane.start_controller()
    plane.start_agent("compute-3")
    wait_until("agent active", lambda: plane.all_active(("compute-3",)))
    assert plane.agents()["compute-3"]["last_restart"] is None

    assert plane.stop("compute-3") == 0  # SIGTERM: clean shutdown
    state = json.loads((plane.root / "compute-3" / "agent-state.json").read_text())
    assert state["clean_stop"] is True
    plane.start_agent("compute-3")
    row = wait_until(
        "restart reported", lambda: plane.agents()["compute-3"]["last_restart"] or None
    )
    assert row["previous_stop"] == "clean"
    wait_until("agent active", lambda: plane.all_active(("compute-3",)))

    plane.stop("compute-3", signal.SIGKILL)
    plane.start_agent("compute-3")
    wait_until(
        "unclean restart reported",
        lambda: (
            (plane.agents()["compute-3"]["last_restart"] or {}).get("previous_stop") == "unclean"
        ),
    )
    # Only the first report after the restart carries the marker.
    wait_until("marker cleared", lambda: plane.agents()["compute-3"]["restarted"] is False)


def test_notification_lost_while_disconnected_is_recovered(plane: Plane) -> None:
    plane.start_controller()
    proxy = Proxy(plane.port)
    try:
        plane.start_agent("compute-2", port=proxy.port)
        plane.start_agent("compute-1")
        wait_until("agents active", lambda: plane.all_active(("compute-1", "compute-2")))
        assert len(plane.applied("compute-2")["security_groups"]["web"]) == 3

        proxy.disconnect()
        model = base_model()
        model["security_groups"]["web"]["rules"].append(
            {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}
        )
        plane.write_model(model)
        # compute-1 gets the notification; compute-2 cannot.
        wait_until(
            "compute-1 updated",
            lambda: len(plane.applied("compute-1")["security_groups"]["web"]) == 4,
        )
        assert len(plane.applied("compute-2")["security_groups"]["web"]) == 3
        proxy.reconnect()
        wait_until(
            "compute-2 recovered the lost update",
            lambda: len(plane.applied("compute-2")["security_groups"]["web"]) == 4,
        )
        # The row until the agent's next report is the one from before the cut (active too).
        row = wait_until(
            "compute-2 reported its resync",
            lambda: (
                (r := plane.agents()["compute-2"])["syncs"]["resync"] >= 1
                and r["state"] == "active"
                and r
            ),
        )
        assert row["last_sync"]["kind"] == "resync"
    finally:
        proxy.close()
