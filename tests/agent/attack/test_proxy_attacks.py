"""The metadata proxy as a real process, attacked with request targets that try to pick the
upstream host or port (issue 16, item 8).

An upstream metadata service and an "internal" service listen on loopback; the proxy forwards to
the upstream. A request target that is not an absolute path is answered 400 and reaches neither;
a legitimate request still reaches the upstream with the trusted headers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from attackhelpers import ROWS, RSS_BUDGET_KB, rss_kb
from sgflows.agent import config
from sgflows.agent.metadata_proxy import Upstream, UpstreamError, safe_request_path


@dataclass
class Recorder:
    """An HTTP server on loopback that records every request it gets."""

    name: str
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append((self.path, dict(self.headers.items())))
                body = f"{recorder.name}:{self.path}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class ProxyProcess:
    proc: subprocess.Popen[bytes]
    port: int

    def request(self, target: str) -> tuple[int, bytes]:
        """Send one raw request line (no client-side URL parsing); status and body."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=20) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n".encode("latin-1"))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
                head, sep, body = data.partition(b"\r\n\r\n")
                if sep and b"content-length:" in head.lower():
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    if len(body) >= length:
                        break
        status = int(data.split(b" ", 2)[1])
        return status, data.partition(b"\r\n\r\n")[2]


@pytest.fixture
def services() -> Iterator[tuple[Recorder, Recorder, ProxyProcess]]:
    upstream, internal = Recorder("upstream"), Recorder("internal")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    fd = listener.fileno()
    env = dict(os.environ, SGFLOWS_METADATA_NETWORK_ID="net-1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sgflows.agent.metadata_proxy",
            "--listen-fd",
            str(fd),
            "--upstream",
            f"http://127.0.0.1:{upstream.port}",
        ],
        pass_fds=(fd,),
        env=env,
    )
    proxy = ProxyProcess(proc, int(listener.getsockname()[1]))
    listener.close()
    try:
        deadline = time.monotonic() + 30
        while True:  # ready when it answers
            with contextlib.suppress(OSError, ValueError, IndexError):
                if proxy.request("/ready")[0] == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.05)
        yield upstream, internal, proxy
    finally:
        proc.terminate()
        proc.wait(10)
        upstream.close()
        internal.close()


def _attacks(internal_port: int) -> list[str]:
    p = internal_port
    return [
        f":{p}/internal",  # the reported case: upstream + ":PORT/internal"
        f"//127.0.0.1:{p}/internal",  # network-path reference: a new host
        f"http://127.0.0.1:{p}/internal",  # absolute URI
        f"https://127.0.0.1:{p}/internal",
        f"127.0.0.1:{p}/internal",  # authority form
        f"@127.0.0.1:{p}/internal",  # userinfo trick
        f"/\\127.0.0.1:{p}/internal",  # backslash read as a slash by some parsers
        "*",
        f"/x#@127.0.0.1:{p}",
    ]


def test_request_targets_cannot_choose_the_upstream(
    services: tuple[Recorder, Recorder, ProxyProcess],
) -> None:
    upstream, internal, proxy = services
    upstream.seen.clear()
    for target in _attacks(internal.port):
        before = rss_kb(proxy.proc.pid)
        status, body = proxy.request(target)
        start = time.perf_counter()
        ok_status, ok_body = proxy.request("/latest/meta-data/instance-id")
        latency = time.perf_counter() - start
        after = rss_kb(proxy.proc.pid)
        assert status == 400, (target, status, body)
        assert ok_status == 200 and ok_body == b"upstream:/latest/meta-data/instance-id"
        assert after - before <= RSS_BUDGET_KB
        ROWS.append(
            {
                "attack": f"proxy: GET {target.replace(str(internal.port), 'PORT')}",
                "outcome": "400, nothing forwarded",
                "rss_before_mb": round(before / 1024, 1),
                "rss_after_mb": round(after / 1024, 1),
                "legit_latency_ms": round(latency * 1000, 1),
            }
        )
    assert internal.seen == [], internal.seen
    assert [path for path, _ in upstream.seen] == ["/latest/meta-data/instance-id"] * len(
        _attacks(internal.port)
    )
    headers = {k.lower(): v for k, v in upstream.seen[0][1].items()}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-neutron-network-id"] == "net-1"


@pytest.mark.parametrize(
    "target",
    ["/", "/latest/meta-data", "/openstack/latest/meta_data.json?x=1", "/@x", "/a//b", "/%2f%2fx"],
)
def test_absolute_paths_stay_on_the_configured_upstream(target: str) -> None:
    up = Upstream.parse("http://169.254.169.254:8775/")
    assert up.url_for(target) == f"http://169.254.169.254:8775{target}"
    assert safe_request_path(target) == target


@pytest.mark.parametrize(
    "target", ["", "x", ":1/x", "//h/x", "http://h/x", "/\\h", "/a b", "/a\tb", "/x#y", "/\x7f"]
)
def test_other_targets_are_refused(target: str) -> None:
    with pytest.raises(ValueError):
        Upstream.parse("http://h").url_for(target)


@pytest.mark.parametrize(
    "url", ["ftp://h", "http://", "http://h/base", "http://u:p@h", "http://h?x", "http://h:99999"]
)
def test_an_upstream_with_more_than_scheme_host_and_port_is_a_config_error(
    url: str, tmp_path: Any
) -> None:
    with pytest.raises(UpstreamError):
        Upstream.parse(url)
    ini = tmp_path / "agent.ini"
    ini.write_text(f"[agent]\ncontroller = unix:/x\n[metadata]\nupstream = {url}\n")
    with pytest.raises(config.ConfigError, match="upstream"):
        config.load_agent_config([str(ini)])
