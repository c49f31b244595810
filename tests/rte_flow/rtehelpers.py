"""Helpers of the rte_flow tests: models with representors, and a batch runner for Debian's
``dpdk-testpmd`` (one process per batch, its verdict per command read from its output).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "two-tier.json"
TESTPMD = shutil.which("dpdk-testpmd")
# testpmd's command line buffer (RDLINE_BUF_SIZE) is 512 bytes, newline included.
TESTPMD_MAX_LINE = 510


def two_tier(first_representor: int = 1, *, stateless: bool = False) -> dict[str, Any]:
    """The bundled example, with representor ids given through ``bindings`` (and, with
    ``stateless``, every group made stateless so that every rule is offloaded)."""
    model: dict[str, Any] = json.loads(EXAMPLE.read_text())
    model = copy.deepcopy(model)
    if stateless:
        for group in model["security_groups"].values():
            group["stateful"] = False
    model["bindings"] = {
        p["id"]: {"representor": first_representor + i} for i, p in enumerate(model["ports"])
    }
    return model


@dataclass
class Verdict:
    """What testpmd said about one command."""

    command: str
    output: str

    @property
    def syntax_error(self) -> bool:
        return "Bad arguments" in self.output

    @property
    def refused(self) -> bool:
        return "port_flow_complain" in self.output

    @property
    def accepted(self) -> bool:
        return "Flow rule validated" in self.output or (
            "Flow rule #" in self.output and "created" in self.output
        )


def run_testpmd(commands: list[str], vdev: str = "net_null0") -> list[Verdict]:
    """Runs every command in one testpmd and returns one verdict per command, in order.

    testpmd echoes each command after its prompt, so the output splits at the prompts; the
    exit code is always 0 and means nothing.
    """
    assert TESTPMD, "dpdk-testpmd is not installed (make deps-system)"
    prefix = f"sgf-rte-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stdin = "".join(c.rstrip("\n") + "\n" for c in commands) + "quit\n"
    try:
        proc = subprocess.run(
            testpmd_command(vdev, prefix),
            input=stdin,
            # port_flow_complain() writes to stderr: one pipe keeps it next to its command.
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)
    return parse_testpmd(commands, proc.stdout)


def testpmd_command(vdev: str, prefix: str) -> list[str]:
    """testpmd reading commands from standard input (DESIGN.md §6), for the host or a guest."""
    return [
        "stdbuf",
        "-oL",
        "dpdk-testpmd",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        f"--file-prefix={prefix}",
        f"--vdev={vdev}",
        "--",
        "-i",
        "--total-num-mbufs=2048",
    ]


def parse_testpmd(commands: list[str], stdout: str) -> list[Verdict]:
    """One verdict per command from testpmd's output, which echoes each command after its
    prompt: the output splits at the prompts."""
    chunks = stdout.split("testpmd> ")[1:]
    verdicts = []
    for command, chunk in zip(commands, chunks):
        echoed, _, output = chunk.partition("\n")
        assert echoed.strip() == command.strip(), f"testpmd read {echoed!r} for {command!r}"
        verdicts.append(Verdict(command, output))
    assert len(verdicts) == len(commands), (
        f"testpmd answered {len(verdicts)} of {len(commands)} commands:\n{stdout[-2000:]}"
    )
    return verdicts


def run_testpmd_in_guest(
    commands: list[str], shared: Path, vdev: str
) -> tuple[list[Verdict], float]:
    """Runs every command in one testpmd inside the QEMU guest (``guest.py``), where net_tap
    can create rules; returns the verdicts and the guest's run time in seconds."""
    import shlex

    import guest

    (shared / "commands").write_text("".join(c.rstrip("\n") + "\n" for c in commands) + "quit\n")
    testpmd = shlex.join(testpmd_command(vdev, "sgf-guest"))
    run = guest.run(f"{testpmd} < commands 2>&1\n", shared)
    assert run.rc == 0, f"testpmd failed in the guest:\n{run.output[-3000:]}"
    return parse_testpmd(commands, run.output), run.seconds
