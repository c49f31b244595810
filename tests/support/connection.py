"""One TCP connection held open between two namespaces, line by line: the probe of the
"no blink" and "a removed rule cuts an established connection" tests (``tests/proof`` with
the compiled flows, ``tests/neutron/inside`` through the Neutron driver, in Neutron's venv:
standard library only).

    with held_connection(a, b, 8080) as say:
        assert say("one") == "one"        # echoed by the server
        ...                               # change the rules
        assert say("two") == "timeout"    # no reply within reply_timeout
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator

from .netns import Namespace

__all__ = ["held_connection"]

#: Echoes every line on every connection it accepts; prints ``ready`` once listening.
_LINE_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4); print("ready", flush=True)
while True:
    c, _ = s.accept()
    with c, c.makefile("rwb", buffering=0) as f:
        for line in f:
            f.write(line)
"""

#: Connects once, then for each line of stdin sends it and prints the reply, ``closed``,
#: ``timeout`` (nothing within argv[3] seconds) or ``error ...``.
_LINE_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.settimeout(float(sys.argv[3]))
print("connected", flush=True)
for line in sys.stdin:
    c.sendall(line.encode())
    try:
        print(c.recv(100).decode().strip() or "closed", flush=True)
    except OSError as exc:
        print("timeout" if isinstance(exc, TimeoutError) else f"error {exc}", flush=True)
"""


@contextlib.contextmanager
def held_connection(
    client: Namespace, server: Namespace, port: int, *, reply_timeout: float = 2.0
) -> Iterator[Callable[[str], str]]:
    """A connection from ``client`` to ``server``'s IPv4 address on ``port``, kept open:
    yields ``say(text)``, which sends a line and returns the echo (or ``timeout``)."""
    srv = server.popen(sys.executable, "-u", "-c", _LINE_SERVER, str(port))
    cli = None
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        argv = (sys.executable, "-u", "-c", _LINE_CLIENT, server.ip4, str(port))
        cli = subprocess.Popen(
            ["ip", "netns", "exec", client.name, *argv, str(reply_timeout)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert cli.stdout is not None and cli.stdout.readline().strip() == "connected"

        def say(text: str) -> str:
            assert cli is not None and cli.stdin is not None and cli.stdout is not None
            cli.stdin.write(text + "\n")
            cli.stdin.flush()
            return cli.stdout.readline().strip()

        yield say
    finally:
        for proc in (cli, srv):
            if proc is not None:
                proc.kill()
                proc.wait()
