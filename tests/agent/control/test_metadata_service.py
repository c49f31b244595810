"""``sgflows agent`` running the IPv6 metadata election: configuration, and real runs.

Each real run starts the reference controller and an agent as processes (TLS on loopback), the
agent configured with one metadata network in a real namespace (``tests/agent/metadata``'s
``Segment``: a bridge namespace, one agent namespace, a client namespace). The agent starts its
privsep daemon (by fork, or through privsep-helper with ``helper_command`` from the agent's own
INI file) and drops every capability, so the netlink work really goes through privsep.
The network's port is bound to this host by the controller (``[metadata] ports``): unbound
first (ineligible), then bound (leader, seen through ``sgflows status --json``), unbound and
bound again, then SIGTERM: the agent steps down and the address is gone. Generous deadlines,
no timed assertions; namespaces and processes are always cleaned up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sgflows.agent import auth, config
from support.waiting import wait_until

LAUNCH = Path(__file__).with_name("launch.py")
METADATA_TESTS = Path(__file__).resolve().parents[1] / "metadata"
HOST = "compute-md"
PORT_ID = "p-dhcp"


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- configuration ----------------------------------------------------------------------------


def test_metadata_options_parse_and_default(tmp_path: Path) -> None:
    base = "[agent]\ncontroller = unix:/run/c.sock\n"
    cfg = config.load_agent_config([write(tmp_path / "off.ini", base)])
    assert cfg.metadata.enabled is False and cfg.metadata.networks == []
    assert cfg.metadata.proxy == "http" and cfg.metadata.privsep == "helper"
    assert cfg.metadata.timers == config.election.ElectionTimers()  # defaults from one place

    ini = write(
        tmp_path / "on.ini",
        base
        + """[metadata]
enabled = true
network = net1,qdhcp-net1,tap1
network = net2,qdhcp-net2,tap2,unbound
ports = net1:p1
proxy = command
proxy_argv = ["/usr/bin/proxy", "--fd", "{listen_fd}", "--net", "{network_id}"]
proxy_port = 8080
privsep = fork
drop_capabilities = true
probe_interval = 0.5
lease = 2
lease_renew = 0.5
""",
    )
    md = config.load_agent_config([ini]).metadata
    assert md.enabled and md.privsep == "fork" and md.drop_capabilities
    assert [(n.network_id, n.namespace, n.interface) for n in md.networks] == [
        ("net1", "qdhcp-net1", "tap1"),
        ("net2", "qdhcp-net2", "tap2"),
    ]
    # net1 follows its port (unbound until the controller binds it here); net2 is unbound.
    assert [n.bound for n in md.networks] == [False, False]
    assert {n.port for n in md.networks} == {8080}
    assert md.ports == {"net1": "p1"}
    assert md.proxy_argv == ["/usr/bin/proxy", "--fd", "{listen_fd}", "--net", "{network_id}"]
    assert md.timers.probe_interval == 0.5 and md.timers.lease == 2
    assert md.config_files == [ini]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("enabled = true\n", "at least one network"),
        ("network = a,b\n", "NETWORK_ID,NAMESPACE,INTERFACE"),
        ("network = a,b,c\nnetwork = a,d,e\n", "given twice"),
        ("network = a,b,c\nports = z:p\n", "no network line for z"),
        ("enabled = true\nnetwork = a,b,c\nproxy = command\n", "needs proxy_argv"),
        ("proxy_argv = [1]\n", "list of strings"),
        ("lease = 2\nlease_renew = 3\n", "lease"),
        ("privsep = sudo\n", "privsep"),
    ],
)
def test_metadata_option_errors(tmp_path: Path, text: str, message: str) -> None:
    ini = write(tmp_path / "a.ini", "[agent]\ncontroller = unix:/x\n[metadata]\n" + text)
    with pytest.raises(config.ConfigError, match=message):
        config.load_agent_config([ini])


# -- one real run -----------------------------------------------------------------------------


def _can_use_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "curl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


def _md() -> Any:
    """``tests/agent/metadata/mdhelpers``, imported the way those tests do."""
    if str(METADATA_TESTS) not in sys.path:
        sys.path.insert(0, str(METADATA_TESTS))
    import mdhelpers

    return mdhelpers


def cap_eff(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapEff")


class Run:
    """Controller and agent processes, their files, and the namespaces."""

    def __init__(self, root: Path, pki: Any, seg: Any) -> None:
        self.root, self.pki, self.seg = root, pki, seg
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sock = root / "c.sock"
        self.model_path = root / "model.json"
        self.secret = root / "agent.secret"
        secret = auth.write_secret(self.secret)
        principals = {
            HOST: {"secret": secret.decode(), "roles": ["agent"]},
            "ops": {"uids": [os.getuid()], "roles": ["admin"]},
        }
        auth.write_private_file(
            root / "credentials.json", json.dumps({"principals": principals}).encode()
        )

    def write_model(self, binding_host: str) -> None:
        model = {
            "security_groups": {"dhcp": {"rules": [{"direction": "egress", "ethertype": "IPv6"}]}},
            "ports": [
                {
                    "id": PORT_ID,
                    "mac_address": "fa:16:3e:00:00:0d",
                    "fixed_ips": ["10.0.0.2"],
                    "security_groups": ["dhcp"],
                    "network_id": self.seg.network_id,
                    "binding_host": binding_host,
                }
            ],
        }
        tmp = self.model_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(model))
        os.replace(tmp, self.model_path)

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(LAUNCH), *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs[name] = proc
        return proc

    def start_controller(self) -> int:
        ready = self.root / "ready.json"
        ini = self.root / "controller.ini"
        ini.write_text(
            f"""[controller]
listen = unix:{self.sock},tls:127.0.0.1:0
cert_file = {self.pki.server_cert}
key_file = {self.pki.server_key}
credentials_file = {self.root / "credentials.json"}
model = {self.model_path}
state_file = {self.root / "controller.sqlite3"}
agent_down_time = 30
watch_interval = 0.05
ready_file = {ready}
"""
        )
        self.spawn("controller", ["controller", "--config-file", str(ini)])
        data = wait_until("controller ready", lambda: json.loads(ready.read_text()), timeout=30)
        [tls] = [e for e in data["endpoints"] if e.startswith("tls:")]
        return int(tls.rsplit(":", 1)[1])

    def start_agent(
        self, port: int, timers: dict[str, float], privsep: str
    ) -> subprocess.Popen[bytes]:
        seg = self.seg
        ini = self.root / "agent.ini"
        timer_lines = "".join(f"{k} = {v}\n" for k, v in timers.items())
        helper = ""
        if privsep == "helper":
            # privsep-helper from the source tree; the agent reads this section from its own
            # configuration file (oslo.privsep appends --privsep_context etc.).
            script = self.root / "privsep_helper.py"
            script.write_text(
                _md().BOOTSTRAP + "from oslo_privsep.daemon import helper_main\nhelper_main()\n"
            )
            helper = f"[sgflows_metadata_privsep]\nhelper_command = {sys.executable} {script}\n"
        ini.write_text(
            f"""[DEFAULT]
debug = true
[agent]
host = {HOST}
controller = tls:127.0.0.1:{port}
secret_file = {self.secret}
ca_file = {self.pki.ca}
report_interval = 0.2
backoff_initial = 0.05
backoff_max = 0.3
state_dir = {self.root / "state"}
[metadata]
enabled = true
network = {seg.network_id},{seg.agents[0]},eth0
ports = {seg.network_id}:{PORT_ID}
proxy = http
privsep = {privsep}
drop_capabilities = true
{timer_lines}{helper}"""
        )
        return self.spawn("agent", ["agent", "--config-file", str(ini)])

    def status_rows(self) -> dict[str, dict[str, Any]]:
        """``sgflows status --json`` over the controller's Unix socket."""
        out = subprocess.run(
            [sys.executable, str(LAUNCH), "status", "--json", "--controller", f"unix:{self.sock}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return {row["host"]: row for row in json.loads(out)}

    def election(self) -> dict[str, Any] | None:
        """The agent's ``metadata-election/<network>`` custom status, as the controller has it."""
        row = self.status_rows().get(HOST)
        if row is None:
            return None
        entry = (row.get("custom") or {}).get(f"metadata-election/{self.seg.network_id}")
        if not entry or not entry.get("ok"):
            return None
        value: dict[str, Any] = entry["value"]
        return value

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


@pytest.fixture
def run(short_tmp: Path, pki: Any) -> Iterator[Run]:
    reason = _can_use_namespaces()
    if reason:
        pytest.fail(f"cannot run: {reason} (make test installs what it needs; run as root)")
    md = _md()
    seg = md.Segment(1)
    try:
        seg.build()
        r = Run(short_tmp, pki, seg)
        try:
            yield r
        finally:
            # SIGTERM first so that the agent still steps down if a check failed midway.
            agent = r.procs.get("agent")
            if agent is not None and agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    agent.wait(20)
            r.close()
            for log in sorted(short_tmp.glob("*.log")):
                text = log.read_text(errors="replace")
                if "Traceback" in text:
                    print(f"--- {log.name} ---\n{text[-6000:]}")
    finally:
        seg.destroy()


@pytest.mark.netns
@pytest.mark.timeout(240)
@pytest.mark.parametrize("privsep", ["fork", "helper"])
def test_agent_runs_the_metadata_election_and_steps_down(run: Run, privsep: str) -> None:
    md = _md()
    seg = run.seg
    run.write_model(binding_host="elsewhere")
    port = run.start_controller()
    agent = run.start_agent(port, md.TEST_TIMERS, privsep)

    # The port is bound to another host: the election runs but may not claim.
    st = wait_until(
        "the election reported as ineligible",
        lambda: (e := run.election()) and e["role"] == "ineligible" and e,
        timeout=60,
    )
    assert st["ineligible_reason"] == "port not bound" and st["bound"] is False
    assert st["namespace"] == seg.agents[0] and st["interface"] == "eth0"
    assert seg.flags(0) is None

    # The controller binds the port here: binding_activate, refresh, bound, DAD, leader.
    run.write_model(binding_host=HOST)
    st = wait_until(
        "the agent leading, in sgflows status --json",
        lambda: (e := run.election()) and e["role"] == "leader" and e,
        timeout=60,
    )
    assert st["bound"] is True and st["wins"] >= 1 and st["proxy_running"] is True
    assert st["holder_mac"] == st["mac"] == seg.mac(0)
    for key in ("since", "probes", "last_failure", "conflicts"):
        assert key in st
    row = run.status_rows()[HOST]
    assert row["configurations"]["metadata_networks"] == [seg.network_id]
    assert row["configurations"]["devices"] == [PORT_ID]
    assert seg.holders() == [0]
    # The built-in proxy answers on [fe80::a9fe:a9fe%eth0]:80 from the client namespace.
    doc = wait_until("the proxy answering", seg.curl, timeout=30)
    assert doc["server"] == HOST and doc["network_id"] == seg.network_id
    # The agent holds no capability: the netlink work went through its privsep daemon.
    assert cap_eff(agent.pid) == 0

    # The binding moves away: the leader steps down and the address goes.
    run.write_model(binding_host="elsewhere")
    st = wait_until(
        "the agent ineligible again",
        lambda: (e := run.election()) and e["role"] == "ineligible" and e,
        timeout=60,
    )
    assert st["last_step_down"] is not None
    wait_until("the address removed", lambda: seg.flags(0) is None, timeout=30)

    # Bound again, leader again; then SIGTERM: clean step-down before exit.
    run.write_model(binding_host=HOST)
    wait_until(
        "the agent leading again",
        lambda: (e := run.election()) and e["role"] == "leader" and seg.holders() == [0],
        timeout=60,
    )
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(60) == 0
    assert seg.flags(0) is None, "the metadata address outlived the agent"
    log = (run.root / "agent.log").read_text(errors="replace")
    assert f"metadata privsep daemon started ({privsep})" in log
    if privsep == "helper":
        assert "Running privsep helper" in log
    assert "stepping down (shutdown)" in log
    assert "metadata elections stopped" in log
    assert log.index("metadata elections stopped") < log.index(f"agent {HOST} stopped")
