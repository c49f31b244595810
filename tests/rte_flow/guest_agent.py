"""Runs inside the QEMU guest with the host's Python and sgflows (the host's root is mounted
read-only): the agent's rte_flow dataplane on a net_tap port through the real installer —
start (the port closed), apply ``info.json`` (the port's rendering created on the driver),
apply ``changed.json`` (an update), stop (removed) — and writes each status to ``agent.json``."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sgflows.agent.dataplane.rte_flow import RteFlowDataplane
from sgflows.agent.dataplane.settings import RteFlowSettings

binary, port, iface = sys.argv[1], sys.argv[2], sys.argv[3]


async def main() -> dict[str, Any]:
    settings = RteFlowSettings(ports={port: f"net_tap1,iface={iface}"}, binary=binary)
    dp = RteFlowDataplane(settings)
    out: dict[str, Any] = {}
    await dp.start()
    out["started"] = dp.status()
    for name in ("info", "changed"):
        try:
            await dp.apply(json.loads(Path(f"{name}.json").read_text()), full=name == "info")
            out[name] = dp.status()
        except Exception as exc:  # reported to the host, which fails the test with it
            out[name] = {"error": repr(exc), **dp.status()}
    await dp.stop()
    out["stopped"] = dp.status()
    return out


Path("agent.json").write_text(json.dumps(asyncio.run(main())))
