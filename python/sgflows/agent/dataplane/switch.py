"""The Open vSwitch commands the agent's dataplane runs (``ovs-ofctl``, ``ovs-vsctl``,
``ovs-appctl``), and the parsing of what they print.

:class:`Switch` is the dataplane's :class:`sgflows.switch.flowstate.Ofctl`: the bundles
themselves (one ``ovs-ofctl bundle``, all or nothing; a full sync by ``diff-flows``, or a cold
load onto an empty bridge) are built in :mod:`sgflows.switch`, shared with the Neutron driver.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
from collections.abc import Iterable

LOG = logging.getLogger(__name__)

#: ``ct()``, ``set_field`` and bundles need OpenFlow 1.3+; ``no-flood`` exists only in 1.0.
OPENFLOW = "OpenFlow13"


class SwitchError(RuntimeError):
    """A command failed: the switch is unreachable or refused what we sent."""


_AGG = re.compile(r"flow_count=(\d+)")


def neutron_agent_flows(dump: str) -> list[str]:
    """Flows that neutron-openvswitch-agent leaves on its integration bridge: its canary
    table 23, or table 0 sending to its QoS tables 58/59."""
    found = []
    for line in dump.splitlines():
        if "table=23," in line or (
            "table=0," in line and re.search(r"goto_table:5[89]\b|resubmit\(,5[89]\)", line)
        ):
            found.append(line.strip())
    return found


class Switch:
    """The commands, against one bridge and one OVSDB (``ovs-ofctl`` finds the bridge's
    management socket under ``OVS_RUNDIR``, as the tools do)."""

    def __init__(self, bridge: str, ovsdb: str, *, timeout: float = 30.0) -> None:
        self.bridge = bridge
        self.ovsdb = ovsdb
        self.timeout = timeout

    def _run(self, argv: list[str], input: str | None = None, ok: Iterable[int] = (0,)) -> str:
        try:
            proc = subprocess.run(
                argv, input=input, capture_output=True, text=True, timeout=self.timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SwitchError(f"{argv[0]}: {exc}") from exc
        if proc.returncode not in ok:
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise SwitchError(f"{' '.join(argv[:4])}: {err[-1] if err else proc.returncode}")
        return proc.stdout

    def ofctl(self, *args: str, input: str | None = None, ok: Iterable[int] = (0,)) -> str:
        return self._run(["ovs-ofctl", "-O", OPENFLOW, *args], input=input, ok=ok)

    def vsctl(self, *args: str) -> str:
        return self._run(
            ["ovs-vsctl", f"--db={self.ovsdb}", f"--timeout={int(self.timeout)}", *args]
        )

    def appctl(self, *args: str) -> str:
        return self._run(["ovs-appctl", f"--timeout={int(self.timeout)}", *args])

    def bundle(self, text: str) -> None:
        """Apply ``text`` as one transaction (nothing of it when refused)."""
        self.ofctl("bundle", self.bridge, "-", input=text)

    def add_flows(self, text: str) -> None:
        """``--bundle add-flows``: one connection, one bundle (a part of a cold load)."""
        self.ofctl("--bundle", "add-flows", self.bridge, "-", input=text)

    def diff_flows(self, flows: str) -> str:
        """``diff-flows`` of the bridge against ``flows`` (exit 2 just means a difference;
        it reads a file, not standard input)."""
        with tempfile.NamedTemporaryFile("w", prefix="sgflows-", suffix=".flows") as file:
            file.write(flows)
            file.flush()
            return self.ofctl("diff-flows", self.bridge, file.name, ok=(0, 2))

    def dump_flows(self) -> str:
        return self.ofctl("--no-stats", "dump-flows", self.bridge)

    def count_flows(self, cookie: int) -> int:
        """How many flows of ``cookie`` the bridge holds."""
        out = self.ofctl("dump-aggregate", self.bridge, f"cookie={cookie:#x}/-1")
        found = _AGG.search(out)
        if found is None:
            raise SwitchError(f"unexpected dump-aggregate output: {out.strip()!r}")
        return int(found.group(1))

    def set_no_flood(self, port: str) -> None:
        """``no-flood`` on an OpenFlow port: ``NORMAL`` floods only to the uplinks."""
        self._run(["ovs-ofctl", "-O", "OpenFlow10", "mod-port", self.bridge, port, "no-flood"])

    def set_tags(self, tags: dict[str, int]) -> None:
        """Set each port's ``tag``, all in one OVSDB transaction."""
        args: list[str] = []
        for port, tag in sorted(tags.items()):
            args += ["--", "set", "Port", port, f"tag={tag}"]
        if args:
            self.vsctl(*args)

    def set_fail_mode_secure(self) -> None:
        self.vsctl("set-fail-mode", self.bridge, "secure")

    def conntrack(self, *args: str) -> str:
        return self.appctl(*args)
