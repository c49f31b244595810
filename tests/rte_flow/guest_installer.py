"""Runs inside the QEMU guest (standard library only): drives the ``sgflows-rte-flow``
installer on a net_tap port — probe, install ``rules.json``, receive the frames the sender
writes into the tap (per rx queue), update to ``update.json``, remove, then each port of
``ports.json`` installed and removed, quit — and writes every answer to ``installer.json``."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


out: dict[str, Any] = {"init": ask({"op": "init", "eal": eal, "rx_queues": 2, "tx_queues": 2})}
out["probe"] = ask({"op": "probe", "shapes": json.loads(Path("shapes.json").read_text())})
out["install"] = ask(
    {"op": "install", "port": "p", "rules": json.loads(Path("rules.json").read_text())}
)
Path("ready.log").write_text("packet forwarding - ports=\n")
queues: list[list[int]] = [[], []]
while not Path("sent").exists():
    got = ask({"op": "receive", "seconds": 1.0})
    for q, lengths in enumerate(got.get("queues", [])):
        queues[q].extend(lengths)
got = ask({"op": "receive", "seconds": 1.0})
for q, lengths in enumerate(got.get("queues", [])):
    queues[q].extend(lengths)
out["received"] = queues
out["counters"] = ask({"op": "counters", "port": "p"})
out["update"] = ask(
    {"op": "update", "port": "p", "rules": json.loads(Path("update.json").read_text())}
)
out["remove"] = ask({"op": "remove", "port": "p"})
# The other ports' rule sets, one at a time (their catch-alls are alike: TC refuses two
# equal filters at one priority), for the install/remove times.
out["ports"] = {}
for name, rules in json.loads(Path("ports.json").read_text()).items():
    out["ports"][name] = {"install": ask({"op": "install", "port": name, "rules": rules}),
                          "remove": ask({"op": "remove", "port": name})}  # fmt: skip
proc.stdin.write('{"op": "quit"}\n')
proc.stdin.flush()
out["quit"] = json.loads(proc.stdout.readline() or '{"ok": false}')
proc.wait()
Path("installer.json").write_text(json.dumps(out))
