"""The standalone election agent's command line (issue 22): every timer can be set and is
described, and its debug log is the election's own and ends cleanly."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable

import pytest
from mdhelpers import BOOTSTRAP, AgentProcess, Segment, wait_settled
from sgflows.agent.election import ElectionTimers

pytestmark = [pytest.mark.timeout(120)]


def run_election(*args: str) -> subprocess.CompletedProcess[str]:
    code = BOOTSTRAP + "from sgflows.agent import election; sys.exit(election.main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_help_describes_every_timer() -> None:
    res = run_election("--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    section = text.find("election timers (seconds):")
    assert section > 0, text
    for f in dataclasses.fields(ElectionTimers):
        option = "--" + f.name.replace("_", "-")
        at = text.find(option + " ", section)
        assert at >= 0, f"{option} is missing from --help"
        # Some words of help follow the option and its metavar.
        described = text[at:].split(" ", 2)[2]
        assert described[:1].isupper() and "(default" in described[:400], described[:200]
    assert "/run/netns" in text


def test_bad_values_are_one_line_errors() -> None:
    res = run_election("--network", "n,ns,eth0", "--lease", "2", "--lease-renew", "3")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "lease" in res.stderr, res.stderr


@pytest.mark.netns
def test_verbose_log_is_the_elections_own_and_ends_cleanly(
    segment_factory: Callable[..., Segment], agents: Callable[..., AgentProcess]
) -> None:
    seg = segment_factory(1)
    # Every test agent runs with -v; this one also gets the two timers the command line
    # used to lack.
    agent = agents(seg, 0, extra_args=["--failure-backoff", "1.5", "--dad-poll", "0.02"])
    assert wait_settled(seg, [agent]) == 0
    assert agent.terminate() == 0
    log = agent.log()
    assert "Traceback" not in log and "Broken pipe" not in log, log[-3000:]
    assert "DEBUG sgflows.agent.election" in log  # -v shows the election's debug records
    for noise in ("DEBUG pyroute2", "DEBUG oslo.privsep", "DEBUG oslo_privsep", "DEBUG asyncio"):
        assert noise not in log, f"{noise} in the -v log"
