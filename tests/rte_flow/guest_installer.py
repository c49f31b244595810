"""Runs inside the QEMU guest (standard library only): drives the ``sgflows-rte-flow``
installer on a net_tap port through the rounds of ``plan.json`` and writes every answer to
``installer.json``. The plan: ``probe`` (shapes for a trial create each), then ``rounds``,
each a port's rule sets in turn (``phases``: the first installed, the next ones updates, each
followed by its frames written into the tap and the queue each arrived on read back), then
the port removed; then ``ports``, each installed and removed (for the times)."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from guest_sender import link_up, send

binary, iface = sys.argv[1], sys.argv[2]
eal = ["--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--file-prefix=sgfinst",
       f"--vdev=net_tap0,iface={iface}", "--log-level=error"]  # fmt: skip
proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert proc.stdin is not None and proc.stdout is not None


def ask(request: dict[str, Any]) -> dict[str, Any]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(request) + "\n")
    proc.stdin.flush()
    answer: dict[str, Any] = json.loads(proc.stdout.readline() or '{"ok": false}')
    return answer


def received(rounds: int) -> list[list[int]]:
    """The frame lengths per rx queue over ``rounds`` receive calls of a second."""
    queues: list[list[int]] = [[], []]
    for _ in range(rounds):
        got = ask({"op": "receive", "seconds": 1.0})
        for q, lengths in enumerate(got.get("queues", [])):
            queues[q].extend(lengths)
    return queues


def phase(port: str, op: str, step: dict[str, Any]) -> dict[str, Any]:
    out = {op: ask({"op": op, "port": port, "rules": step["rules"]})}
    received(1)  # anything left over from the previous phase
    send(iface, step["frames"])
    out["received"] = received(2)
    out["counters"] = ask({"op": "counters", "port": port})
    return out


plan = json.loads(Path("plan.json").read_text())
started = time.monotonic()
# No tx_queues: the installer's default (as many as rx) is what net_tap needs.
out: dict[str, Any] = {"init": ask({"op": "init", "eal": eal, "rx_queues": 2})}
link_up(iface)
out["probe"] = ask({"op": "probe", "shapes": plan["probe"]})
out["rounds"] = []
for rnd in plan["rounds"]:
    done = [phase(rnd["port"], "install" if i == 0 else "update", step)
            for i, step in enumerate(rnd["phases"])]  # fmt: skip
    out["rounds"].append({"phases": done, "remove": ask({"op": "remove", "port": rnd["port"]})})
# The other ports' rule sets, one at a time (their catch-alls are alike: TC refuses two
# equal filters at one priority), for the install/remove times.
out["ports"] = {}
for name, rules in plan["ports"].items():
    out["ports"][name] = {"install": ask({"op": "install", "port": name, "rules": rules}),
                          "remove": ask({"op": "remove", "port": name})}  # fmt: skip
out["seconds"] = time.monotonic() - started
proc.stdin.write('{"op": "quit"}\n')
proc.stdin.flush()
out["quit"] = json.loads(proc.stdout.readline() or '{"ok": false}')
proc.wait()
Path("installer.json").write_text(json.dumps(out))
