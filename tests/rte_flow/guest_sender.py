"""Runs inside the QEMU guest (standard library only): waits until testpmd forwards, brings
the tap up, writes every frame of ``frames.hex`` into it (the kernel transmits them, so
DPDK's net_tap port receives them through the TC rules), then leaves ``sent``.
``guest_installer.py`` imports :func:`link_up` and :func:`send` for its own rounds."""

import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path


def link_up(iface: str) -> None:
    subprocess.run(["ip", "link", "set", iface, "up"], check=True)
    time.sleep(1)


def send(iface: str, frames: Iterable[str]) -> None:
    """Each hex frame written into the tap, paced so that no queue overflows."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for line in frames:
        s.send(bytes.fromhex(line))
        time.sleep(0.02)
    s.close()


def main(log: Path, iface: str) -> None:
    # testpmd says this when it forwards.
    marker = "packet forwarding - ports="
    deadline = time.monotonic() + 900
    while marker not in (log.read_text(errors="replace") if log.exists() else ""):
        if time.monotonic() > deadline:
            sys.exit("testpmd never started forwarding")
        time.sleep(0.5)
    link_up(iface)
    send(iface, Path("frames.hex").read_text().split())
    time.sleep(1)
    Path("sent").write_text("done\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
