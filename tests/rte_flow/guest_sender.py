"""Runs inside the QEMU guest (standard library only): waits until testpmd forwards, brings
the tap up, writes every frame of ``frames.hex`` into it (the kernel transmits them, so
DPDK's net_tap port receives them through the TC rules), then leaves ``sent``."""

import socket
import subprocess
import sys
import time
from pathlib import Path

log, iface = Path(sys.argv[1]), sys.argv[2]
# testpmd says this when it forwards; the installer driver writes it into its own file.
marker = "packet forwarding - ports="
deadline = time.monotonic() + 900
while marker not in (log.read_text(errors="replace") if log.exists() else ""):
    if time.monotonic() > deadline:
        sys.exit("testpmd never started forwarding")
    time.sleep(0.5)
subprocess.run(["ip", "link", "set", iface, "up"], check=True)
time.sleep(1)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for line in Path("frames.hex").read_text().split():
    s.send(bytes.fromhex(line))
    time.sleep(0.02)
time.sleep(1)
Path("sent").write_text("done\n")
