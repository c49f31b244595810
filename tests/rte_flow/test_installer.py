"""The rte_flow installer (``sgflows-rte-flow``, Cargo feature ``dpdk``) on this host's
``net_null`` port, which implements no rte_flow at all: every create is refused, so an install
must refuse as a whole and say which rule, a probe must record every shape as refused, and
nothing may be reported installed. The install/rollback/update logic with partial successes is
tested in Rust (``src/bin/rte_flow/installer.rs``) on a scripted device, and with rules that
really take effect in the QEMU guest (``test_single_port.py``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import sgflows
from rtehelpers import two_tier
from sgflows import rte_install, rte_probe

ROOT = Path(__file__).resolve().parents[2]


def _open(binary: str) -> rte_install.Installer:
    return rte_install.Installer(
        rte_install.eal_args("net_null0", prefix=f"sgfinst{os.getpid()}"), binary=binary
    )


def test_a_refused_create_refuses_the_whole_install(installer_binary: str) -> None:
    rules = sgflows.compile_rte_flow_port(two_tier(stateless=True), "web-1").document()["rules"]
    with _open(installer_binary) as inst:
        answer = inst.install("web-1", rules)
        assert answer["ok"] is False
        assert answer["failed_rule"] == 0 and answer["created"] == 0
        assert "Function not implemented" in answer["error"]
        # Nothing is recorded as installed: no counters, no remove, and the port can be tried
        # again (an install of an installed port would be refused).
        assert inst.counters("web-1")["ok"] is False
        assert inst.remove("web-1")["ok"] is False
        assert inst.install("web-1", rules)["failed_rule"] == 0
        # An update of a port with no rules is an install of the new set: refused alike.
        assert inst.update("web-1", rules)["ok"] is False
    assert inst.closed == {"ok": True, "closed": True, "seconds": inst.closed["seconds"]}


def test_rules_without_a_dpdk_mapping_are_refused_before_any_create(
    installer_binary: str,
) -> None:
    rules = [
        {"attr": {"ingress": True}, "pattern": [{"type": "eth"}], "actions": [{"type": "drop"}]},
        {"attr": {"ingress": True}, "pattern": [{"type": "eth"}, {"type": "arp_eth_ipv4"}],
         "actions": [{"type": "drop"}]},
    ]  # fmt: skip
    with _open(installer_binary) as inst:
        answer = inst.install("p", rules)
        bad = inst.install("p", [{"attr": {}, "pattern": "eth", "actions": []}])
        unknown = inst._ask({"op": "frobnicate"})
    assert answer["failed_rule"] == 1 and "arp_eth_ipv4" in answer["error"]
    assert bad["ok"] is False and "pattern" in bad["error"]
    assert unknown["ok"] is False and "frobnicate" in unknown["error"]


def test_probe_through_dpdk_api_on_net_null(installer_binary: str) -> None:
    caps = rte_probe.run_installer("net_null0", binary=installer_binary)
    assert [c.shape for c in caps] == [s for s, _, _ in rte_probe.SHAPES]
    assert not any(c.created for c in caps)
    unmapped = {c.shape for c in caps if "no mapping" in c.detail}
    assert unmapped == {"icmp6_nd_na", "arp_eth_ipv4"}
    assert all("Function not implemented" in c.detail for c in caps if c.shape not in unmapped)


def test_eal_failure_and_missing_binary_are_clear_errors(installer_binary: str) -> None:
    with pytest.raises(rte_install.InstallerError, match="DPDK did not start"):
        rte_install.Installer(["--no-such-eal-option"], binary=installer_binary)
    with pytest.raises(rte_install.InstallerError, match="no DPDK port 3"):
        rte_install.Installer(rte_install.eal_args("net_null0"), port=3, binary=installer_binary)
    os.environ["SGFLOWS_RTE_FLOW_BIN"] = "/nonexistent/sgflows-rte-flow"
    try:
        with pytest.raises(rte_install.InstallerMissing, match="not an executable"):
            rte_install.find_binary()
    finally:
        del os.environ["SGFLOWS_RTE_FLOW_BIN"]


def test_cli_install_reports_the_refusal(installer_binary: str) -> None:
    from test_api import _cli

    model = str(ROOT / "examples" / "two-tier.json")
    out = _cli("rte-flow", "install", model, "--port", "web-1", "--vdev", "net_null0")
    assert out.returncode == 2, out.stderr
    assert "install web-1 (18 rules) refused at rule 0" in out.stdout
    assert "rolled back 0 of 0 created" in out.stdout
    off = _cli(
        "rte-flow", "install", model, "--port", "edge-1", "--vdev", "net_null0",
        "--update", "/nonexistent",
    )  # fmt: skip
    assert off.returncode != 0 and "Traceback" not in off.stderr


def test_the_port_gets_as_many_tx_queues_as_rx_queues(installer_binary: str) -> None:
    """net_tap refuses a port with fewer tx than rx queues (seen in the guest); net_null takes
    any, so the queues DPDK reports after the start are what this checks."""
    for rx in (1, 4, 7):
        with rte_install.Installer(
            rte_install.eal_args("net_null0", prefix=f"sgfinstq{os.getpid()}"),
            rx_queues=rx,
            binary=installer_binary,
        ) as inst:
            assert inst.queues == (rx, rx)
    # An explicit tx count still wins (the protocol's own default is the rx count too).
    with rte_install.Installer(
        rte_install.eal_args("net_null0", prefix=f"sgfinstq{os.getpid()}"),
        rx_queues=3,
        tx_queues=1,
        binary=installer_binary,
    ) as inst:
        assert inst.queues == (3, 1)
    for rx in (1, 4):
        raw = subprocess.run(
            [installer_binary],
            input=json.dumps({"op": "init", "eal": rte_install.eal_args("net_null0",
                              prefix=f"sgfinstq{os.getpid()}"), "rx_queues": rx}) + "\n",
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        first = json.loads(raw.stdout.splitlines()[0])
        assert (first["rx_queues"], first["tx_queues"]) == (rx, rx), raw.stdout


def test_cli_install_starts_the_port_with_tx_queues_for_every_rx_queue(
    installer_binary: str,
) -> None:
    from test_api import _cli

    model = str(ROOT / "examples" / "two-tier.json")
    out = _cli(
        "rte-flow", "install", model, "--port", "web-1", "--vdev", "net_null0",
        "--software-queue", "3",
    )  # fmt: skip
    assert out.returncode == 2, out.stderr  # net_null refuses the rules themselves
    assert "start net_null0: rx_queues 4, tx_queues 4 in" in out.stdout, out.stdout


def test_receive_reports_frames_per_queue(installer_binary: str) -> None:
    """net_null's rx queues always have 64-byte frames: ``receive`` reads both queues."""
    with _open(installer_binary) as inst:
        got = inst._ask({"op": "receive", "seconds": 0.01})
    assert got["ok"] and len(got["queues"]) == 2
    assert all(q and set(q) == {64} for q in got["queues"])
