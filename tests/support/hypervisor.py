"""A hypervisor for the agent's Open vSwitch dataplane: a private userspace Open vSwitch (in a
network namespace of its own, so several can run at once), the reference controller and
``sgflows agent`` as real processes, wired on Unix sockets in a private directory
(``tests/agent/ovs``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import sgflows
from sgflows.agent import auth, controller, service
from sgflows.agent.dataplane.ovsdb import LocalPort
from sgflows.agent.dataplane.session import STANDALONE_OPTIONS, build_model
from sgflows.switch.bundles import parse_diff_flows

from . import unique_name
from .ovs import Bridge, PrivateOVS
from .waiting import wait_until

LAUNCH = Path(__file__).resolve().parents[1] / "agent" / "control" / "launch.py"
HOST = "hv1"
COOKIE = 0x5347_0000_0000_00AB
#: A flow of another owner on the bridge: it must survive everything the agent does.
FOREIGN = "cookie=0x99,table=5,priority=7,ip,nw_dst=192.0.2.99,actions=drop"


def vm_port(port_id: str, mac: str, ip: str, groups: list[str], vlan: int = 5) -> dict[str, Any]:
    return {
        "id": port_id,
        "mac_address": mac,
        "fixed_ips": [ip],
        "security_groups": groups,
        "binding_host": HOST,
        "local_vlan": vlan,
    }


class Hypervisor:
    """One switch, one controller, one agent; the model is a file the controller watches."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ovs = PrivateOVS().start()
        self.bridge: Bridge = self.ovs.add_bridge()
        self.bridge.add_flows(FOREIGN)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sock = root / "c.sock"
        self.model_path = root / "model.json"
        self.model: dict[str, Any] = {"security_groups": {}, "ports": []}
        secret = auth.write_secret(root / "agent.secret")
        principals = {
            HOST: {"secret": secret.decode(), "roles": ["agent"]},
            "ops": {"uids": [os.getuid()], "roles": ["admin"]},
        }
        auth.write_private_file(
            root / "credentials.json", json.dumps({"principals": principals}).encode()
        )
        self.plugged: dict[str, tuple[str, int, str]] = {}  # port id -> (name, ofport, mac)

    # -- processes --------------------------------------------------------------------------

    def write_model(self, model: dict[str, Any]) -> None:
        self.model = model
        tmp = self.model_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(model))
        os.replace(tmp, self.model_path)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(LAUNCH), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.ovs.env,
            )
        self.procs[name] = proc
        return proc

    def start_controller(self) -> None:
        if not self.model_path.exists():
            self.write_model(self.model)
        ini = self.root / "controller.ini"
        ini.write_text(
            f"""[controller]
listen = unix:{self.sock}
credentials_file = {self.root / "credentials.json"}
model = {self.model_path}
state_file = {self.root / "controller.sqlite3"}
watch_interval = 0.05
"""
        )
        self._spawn("controller", ["controller", "--config-file", str(ini)])
        wait_until("controller socket", self.sock.exists)

    def agent_ini(self, **ovs: str) -> Path:
        options = {
            "bridge": self.bridge.name,
            "ovsdb": self.ovs.db_remote,
            "cookie": f"{COOKIE:#x}",
            "check_interval": "0.2",
            **ovs,
        }
        ini = self.root / "agent.ini"
        ini.write_text(
            f"""[DEFAULT]
debug = true
[agent]
host = {HOST}
controller = unix:{self.sock}
secret_file = {self.root / "agent.secret"}
report_interval = 0.2
report_min_interval = 0.05
backoff_initial = 0.05
backoff_max = 0.3
state_dir = {self.root / "state"}
dataplane = ovs
[rpc]
request_timeout = 5
[ovs]
"""
            + "".join(f"{k} = {v}\n" for k, v in options.items())
        )
        return ini

    def start_agent(self, **ovs: str) -> subprocess.Popen[bytes]:
        return self._spawn("agent", ["agent", "--config-file", str(self.agent_ini(**ovs))])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(15)

    def close(self) -> None:
        for name in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(name, signal.SIGKILL)
        self.ovs.stop()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    # -- the switch -------------------------------------------------------------------------

    def plug(self, port_id: str, ofport: int, mac: str, name: str | None = None) -> str:
        """An internal port with Nova's external ids (``iface-id``, ``attached-mac``)."""
        name = name or unique_name("sgp")
        ids = {"external_ids:iface-id": port_id, "external_ids:attached-mac": mac}
        self.bridge.add_port(name, ofport, internal=True, **{k: f'"{v}"' for k, v in ids.items()})
        self.plugged[port_id] = (name, ofport, mac)
        return name

    def adopt(self, port_id: str, name: str, ofport: int, mac: str) -> None:
        """Give an existing port (a namespace's veth) Nova's external ids."""
        self.ovs.vsctl(
            "set", "Interface", name,
            f'external_ids:iface-id="{port_id}"', f'external_ids:attached-mac="{mac}"',
        )  # fmt: skip
        self.plugged[port_id] = (name, ofport, mac)

    def unplug(self, port_id: str) -> None:
        name, _, _ = self.plugged.pop(port_id)
        self.bridge.del_port(name)

    def our_flows(self) -> list[str]:
        return self.bridge.dump_flows(f"cookie={COOKIE:#x}/-1")

    def flows_of_port(self, ofport: int) -> list[str]:
        mine = re.compile(rf"\bin_port={ofport}\b|\breg5={ofport:#x}\b|\breg5={ofport}\b")
        return [f for f in self.our_flows() if mine.search(f)]

    def foreign_flow_present(self) -> bool:
        return any("cookie=0x99" in f for f in self.bridge.dump_flows())

    def tag_of(self, port_id: str) -> str:
        return self.ovs.vsctl("get", "Port", self.plugged[port_id][0], "tag").strip()

    def expected_ofctl(self) -> str:
        """A fresh compile of what the bridge should hold now (the controller's reply for
        the plugged ports, joined with their OVSDB facts as the agent joins them)."""
        backend = controller.ReferenceBackend(self.model_path, self.root / "expect.sqlite3")
        info = asyncio.run(backend.security_group_info_for_devices(sorted(self.plugged), HOST))
        local = {
            pid: LocalPort(pid, name, mac, ofport, None)
            for pid, (name, ofport, mac) in self.plugged.items()
        }
        built = build_model(info, local, 4094)
        return sgflows.Compiler(built.model, cookie=COOKIE, **STANDALONE_OPTIONS).to_ofctl()

    def differences(self) -> list[str]:
        """Our flows that differ from a fresh compile (empty: the bridge equals it)."""
        expected = self.root / "expected.flows"
        expected.write_text(self.expected_ofctl())
        proc = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "diff-flows", self.bridge.name, str(expected)],
            env=self.ovs.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode in (0, 2), proc.stderr
        text = proc.stdout
        switch_only, file_only = parse_diff_flows(text)
        return [f"-{f}" for f in switch_only if f.cookie == COOKIE] + [f"+{f}" for f in file_only]

    # -- the agent's status, as the controller has it -----------------------------------------

    def row(self) -> dict[str, Any]:
        rows = asyncio.run(
            service.fetch_agents(
                f"unix:{self.sock}",
                identity=None,
                secret=None,
                ssl_context=None,
                server_hostname=None,
                timeout=5,
            )
        )
        return next(r for r in rows if r["host"] == HOST)

    def dataplane_status(self) -> dict[str, Any]:
        value: dict[str, Any] = self.row()["custom"]["dataplane"]["value"]
        return value

    def state(self) -> str:
        return str(self.row()["state"])
