"""A one-host Neutron deployment for tests: MariaDB, RabbitMQ, Neutron's servers, the OVS agent.

Everything runs in the network namespace of the test process (the outer runner,
``tests/deployment/test_deployment_suite.py``, starts pytest inside a fresh one), so that
``127.0.0.1`` and its ports belong to this deployment alone, and ovs-vswitchd — in the same
namespace — reaches the agent's embedded OpenFlow controller on ``127.0.0.1``.

The configuration is a **test** configuration: ``auth_strategy = noauth`` (every request is
admin), plain-text passwords, no TLS. It is written into a temporary directory per session and
never shipped as a file of the project.

    with Deployment(venv) as d:        # MariaDB, RabbitMQ, schema, API, RPC, periodic workers
        agent = d.start_agent("sgflows")
        d.openstack("network", "agent", "list")

Every daemon is a child process started with its own session, stopped by pid (SIGTERM, then
SIGKILL) and its directory removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

LOG = logging.getLogger(__name__)

DB_PASSWORD = "sgflows-test"
MQ_PASSWORD = "sgflows-test"
PHYSNET = "physnet1"
PROVIDER_BRIDGE = "br-phys"
HOST = "sgflows-deploy-host"
#: Liveness timers, shortened so that a dead agent shows within seconds.
REPORT_INTERVAL = 2
AGENT_DOWN_TIME = 8
RABBITMQ_LIB = Path("/usr/lib/rabbitmq/bin")


class DeploymentError(RuntimeError):
    """A part of the deployment did not start; the message carries its log's tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the namespace is private, so nobody races us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None) -> None:
    """Poll ``check`` until it is true; ``DeploymentError`` with ``log``'s tail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise DeploymentError(f"{what} not ready after {timeout:.0f} s{_tail(log)}")


def _tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; {log}:\n" + "\n".join(text)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Daemon:
    """A child process in its own session, output to ``log``; stopped by pid."""

    name: str
    argv: Sequence[str]
    log: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = None

    def start(self) -> Daemon:
        self._out = self.log.open("ab")
        self.proc = subprocess.Popen(
            list(self.argv),
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        LOG.info("started %s (pid %d)", self.name, self.proc.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> bool:
        """True while running; ``DeploymentError`` with the log if it has exited."""
        if not self.alive():
            raise DeploymentError(f"{self.name} exited{_tail(self.log)}")
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL after ``timeout``; reap it."""
        if self.proc is not None and self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._out is not None:
            self._out.close()
            self._out = None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 120.0,
        input: str | None = None) -> str:  # fmt: skip
    """Run ``argv``; ``DeploymentError`` with its output if it fails; return stdout."""
    proc = subprocess.run(
        list(argv), env=env, input=input, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        output = proc.stdout[-3000:] + proc.stderr[-3000:]
        raise DeploymentError(f"{' '.join(argv)} exited {proc.returncode}:\n{output}")
    return proc.stdout


# --- MariaDB ---------------------------------------------------------------------------------


class MariaDB:
    """``mariadbd`` on a private data directory, bound to 127.0.0.1 on a free port."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "mariadb"
        self.port = free_port()
        self.socket = self.dir / "mysqld.sock"
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"mysql+pymysql://neutron:{DB_PASSWORD}@127.0.0.1:{self.port}/neutron"

    def start(self) -> None:
        data = self.dir / "data"
        data.mkdir(parents=True)
        run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--auth-root-authentication-method=socket", "--skip-test-db"])  # fmt: skip
        self.daemon = Daemon(
            "mariadbd",
            ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
             f"--socket={self.socket}", f"--pid-file={self.dir / 'mysqld.pid'}",
             "--bind-address=127.0.0.1", f"--port={self.port}", "--skip-name-resolve",
             "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=0",
             "--skip-log-bin", "--max-connections=500"],
            self.dir / "mariadbd.log",
        ).start()  # fmt: skip
        wait_until(
            lambda: self.daemon is not None and self.daemon.check_alive() and self._answers(),
            60, "MariaDB", self.daemon.log,
        )  # fmt: skip
        self.sql(
            "CREATE DATABASE neutron CHARACTER SET utf8mb4;"
            f"CREATE USER 'neutron'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
            "GRANT ALL PRIVILEGES ON neutron.* TO 'neutron'@'127.0.0.1';"
        )

    def _answers(self) -> bool:
        try:
            self.sql("SELECT 1;")
        except DeploymentError:
            return False
        return True

    def sql(self, statements: str) -> str:
        return run(["mariadb", f"--socket={self.socket}", "-uroot", "-N", "-e", statements])

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


# --- RabbitMQ --------------------------------------------------------------------------------


class RabbitMQ:
    """A RabbitMQ node ``rabbit@localhost`` with its own epmd, both on free 127.0.0.1 ports."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "rabbitmq"
        self.port = free_port()
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.node = "rabbit@localhost"
        self.epmd: Daemon | None = None
        self.server: Daemon | None = None

    @property
    def url(self) -> str:
        return f"rabbit://neutron:{MQ_PASSWORD}@127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_BASE": str(self.dir),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            f"default_user = neutron\ndefault_pass = {MQ_PASSWORD}\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        env = self.env()
        # Our own epmd in the foreground, so that we hold its pid (Erlang would daemonize one).
        self.epmd = Daemon(
            "epmd", ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            self.dir / "epmd.log", env,
        ).start()  # fmt: skip
        wait_until(lambda: _port_open(self.epmd_port), 20, "epmd", self.epmd.log)
        self.start_server()

    def start_server(self) -> None:
        """The broker alone (epmd keeps running): also how a test restarts it."""
        self.server = Daemon(
            "rabbitmq-server", [str(RABBITMQ_LIB / "rabbitmq-server")], self.dir / "server.log",
            self.env(),
        ).start()  # fmt: skip
        wait_until(
            lambda: self.server is not None and self.server.check_alive()
            and _port_open(self.port),
            120, "RabbitMQ", self.server.log,
        )  # fmt: skip

    def stop_server(self) -> None:
        """Stop the broker (an outage for every client of the bus); ``start_server`` again."""
        if self.server is not None:
            self.server.stop(timeout=30)
            self.server = None

    def stop(self) -> None:
        self.stop_server()
        if self.epmd is not None:
            self.epmd.stop()


# --- Neutron ---------------------------------------------------------------------------------


def _ini(sections: dict[str, dict[str, object]]) -> str:
    out = []
    for name, options in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{key} = {value}" for key, value in options.items())
        out.append("")
    return "\n".join(out)


#: oslo.privsep contexts of Neutron (neutron/privileged/__init__.py) that the agent may start.
PRIVSEP_SECTIONS = (
    "privsep", "privsep_ovs_vsctl", "privsep_link", "privsep_namespace", "privsep_conntrack",
    "privsep_dhcp_release",
)  # fmt: skip


def server_config(db_url: str, mq_url: str, state: Path, venv: Path) -> str:
    """neutron.conf for the API, RPC server and periodic workers (test settings only)."""
    return _ini({
        "DEFAULT": {
            "core_plugin": "ml2",
            "service_plugins": "",
            "auth_strategy": "noauth",
            "transport_url": mq_url,
            "agent_down_time": AGENT_DOWN_TIME,
            "rpc_workers": 1,
            "rpc_state_report_workers": 1,
            "api_workers": 1,
            "notify_nova_on_port_status_changes": False,
            "notify_nova_on_port_data_changes": False,
            "dhcp_agent_notification": False,
            "allow_overlapping_ips": True,
            "state_path": state,
            "api_paste_config": venv / "etc" / "neutron" / "api-paste.ini",  # from the wheel
            "debug": False,
        },
        "database": {"connection": db_url, "max_pool_size": 5},
        "oslo_concurrency": {"lock_path": state / "lock"},
        "ml2": {
            "type_drivers": "flat",
            "tenant_network_types": "",
            "mechanism_drivers": "openvswitch",
            "extension_drivers": "port_security",
        },
        "ml2_type_flat": {"flat_networks": PHYSNET},
        "securitygroup": {"enable_security_group": True},
    })  # fmt: skip


def agent_config(mq_url: str, ovsdb: str, firewall_driver: str, state: Path, venv: Path,
                 of_port: int) -> str:  # fmt: skip
    """openvswitch_agent.ini: the agent on the private switch, privsep as root (no sudo)."""
    conf = state / "openvswitch_agent.ini"
    helper = f"{venv / 'bin' / 'privsep-helper'} --config-file {conf}"
    sections: dict[str, dict[str, object]] = {
        "DEFAULT": {
            "transport_url": mq_url,
            "host": HOST,
            "state_path": state,
            "debug": True,
        },
        "agent": {
            "report_interval": REPORT_INTERVAL,
            "polling_interval": 1,
            "root_helper": "env",  # we are root: run commands directly
            "root_helper_daemon": "",
            "minimize_polling": True,
        },
        "ovs": {
            "integration_bridge": "br-int",
            "datapath_type": "netdev",
            "ovsdb_connection": ovsdb,
            "of_listen_address": "127.0.0.1",
            "of_listen_port": of_port,
            "bridge_mappings": f"{PHYSNET}:{PROVIDER_BRIDGE}",
        },
        "securitygroup": {"firewall_driver": firewall_driver, "enable_security_group": True},
        "oslo_concurrency": {"lock_path": state / "lock"},
    }
    for section in PRIVSEP_SECTIONS:
        sections[section] = {"helper_command": helper}
    return _ini(sections)


class Deployment:
    """MariaDB + RabbitMQ + Neutron (API under gunicorn, RPC server, periodic workers)."""

    def __init__(self, venv: Path, ovs_env: dict[str, str], base: Path | None = None) -> None:
        self.venv = venv
        self.ovs_env = ovs_env  # OVS_RUNDIR & co. of the private switch
        self.dir = Path(tempfile.mkdtemp(prefix="sgflows-deploy-", dir=base))
        self.state = self.dir / "neutron"
        self.state.mkdir()
        (self.state / "lock").mkdir()
        self.db = MariaDB(self.dir)
        self.mq = RabbitMQ(self.dir)
        self.api_port = free_port()
        self.servers: list[Daemon] = []
        self.agent: Daemon | None = None
        self._started_before: object = None
        self.startup_seconds: dict[str, float] = {}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def neutron_env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.ovs_env,
            "OS_NEUTRON_CONFIG_DIR": str(self.state),
            "OS_NEUTRON_CONFIG_FILES": "neutron.conf",
            "PATH": f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}",
        }

    # lifecycle

    def start(self) -> Deployment:
        try:
            self._timed("mariadb", self.db.start)
            self._timed("rabbitmq", self.mq.start)
            conf = self.state / "neutron.conf"
            conf.write_text(server_config(self.db.url, self.mq.url, self.state, self.venv))
            self._timed("db-manage upgrade heads", lambda: run(
                [self.bin("neutron-db-manage"), "--config-file", str(conf), "upgrade", "heads"],
                env=self.neutron_env(), timeout=600,
            ))  # fmt: skip
            self._timed("neutron servers", self._start_servers)
        except BaseException:
            self.stop()
            raise
        return self

    def _timed(self, what: str, step: Callable[[], object]) -> None:
        began = time.monotonic()
        step()
        self.startup_seconds[what] = round(time.monotonic() - began, 1)
        LOG.info("%s ready in %.1f s", what, self.startup_seconds[what])

    def _start_servers(self) -> None:
        conf = str(self.state / "neutron.conf")
        env = self.neutron_env()
        # Neutron's WSGI entry parses sys.argv as its own command line: gunicorn reads its
        # settings from ./gunicorn.conf.py, so that argv holds nothing but the program.
        api_dir = self.dir / "api"
        api_dir.mkdir()
        (api_dir / "gunicorn.conf.py").write_text(
            f"bind = '127.0.0.1:{self.api_port}'\nworkers = 1\nthreads = 4\ntimeout = 300\n"
            "wsgi_app = 'neutron.wsgi.api:application'\n"
        )
        logs = self.dir / "log"
        logs.mkdir()
        self.servers = [
            Daemon("neutron-api", [self.bin("gunicorn")], logs / "neutron-api.log", env,
                   cwd=api_dir),
            Daemon("neutron-rpc-server", [self.bin("neutron-rpc-server"), "--config-file", conf],
                   logs / "neutron-rpc-server.log", env),
            Daemon("neutron-periodic-workers",
                   [self.bin("neutron-periodic-workers"), "--config-file", conf],
                   logs / "neutron-periodic-workers.log", env),
        ]  # fmt: skip
        for daemon in self.servers:
            daemon.start()
        wait_until(self._api_answers, 180, "Neutron API", self.servers[0].log)
        wait_until(self._rpc_consumes, 180, "neutron-rpc-server", self.servers[1].log)

    def _api_answers(self) -> bool:
        for daemon in self.servers:
            daemon.check_alive()
        try:
            with urllib.request.urlopen(f"{self.api_url}/v2.0/networks", timeout=5) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _rpc_consumes(self) -> bool:
        """The RPC server listens once its queues for the agents' topic exist."""
        self.servers[1].check_alive()
        queues = run([str(RABBITMQ_LIB / "rabbitmqctl"), "-n", self.mq.node, "list_queues",
                      "-q", "name"], env=self.mq.env())  # fmt: skip
        return "q-reports-plugin" in queues and "q-plugin" in queues

    def stop(self) -> None:
        self.stop_agent()
        for daemon in reversed(self.servers):
            daemon.stop()
        self.mq.stop()
        self.db.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Deployment:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    # the agent

    def start_agent(self, firewall_driver: str) -> Daemon:
        """neutron-openvswitch-agent with ``firewall_driver`` (see ``wait_agent_alive``)."""
        self.stop_agent()
        self._started_before = self.agent_record().get("started_at")
        conf = self.state / "openvswitch_agent.ini"
        ovsdb = f"unix:{self.ovs_env['OVS_RUNDIR']}/db.sock"
        conf.write_text(agent_config(self.mq.url, ovsdb, firewall_driver, self.state,
                                     self.venv, free_port()))  # fmt: skip
        log = self.dir / "log" / f"ovs-agent-{firewall_driver}.log"
        self.agent = Daemon(
            "neutron-openvswitch-agent",
            [self.bin("neutron-openvswitch-agent"), "--config-file", str(conf)],
            log, self.neutron_env(),
        ).start()  # fmt: skip
        return self.agent

    def agent_record(self) -> dict[str, Any]:
        """This host's OVS agent as the API shows it ({} before its first report)."""
        agents = self.api("GET", f"agents?host={HOST}&binary=neutron-openvswitch-agent")
        return dict(agents["agents"][0]) if agents["agents"] else {}

    def agent_alive_or_raise(self) -> None:
        if self.agent is None:
            raise DeploymentError("no agent running")
        self.agent.check_alive()

    def wait_agent_alive(self, timeout: float = 120.0) -> dict[str, Any]:
        """Until the agent started last has reported (new ``started_at``) and is alive."""

        def reported() -> bool:
            self.agent_alive_or_raise()
            record = self.agent_record()
            return bool(record.get("alive")) and record.get("started_at") != self._started_before

        wait_until(reported, timeout, "OVS agent", self.agent.log if self.agent else None)
        return self.agent_record()

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    # the API

    def openstack(self, *args: str, timeout: float = 120.0) -> Any:
        """Run the OpenStack client (noauth endpoint); parsed JSON if ``-f json`` is given."""
        env = {
            **os.environ,
            "OS_AUTH_TYPE": "none",
            "OS_ENDPOINT": self.api_url,
            "OS_NETWORK_API_VERSION": "2",
        }
        out = run([self.bin("openstack"), "--os-auth-type", "none", "--os-endpoint",
                   self.api_url, *args], env=env, timeout=timeout)  # fmt: skip
        return json.loads(out) if "json" in args else out

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request to the Neutron API (noauth: every request is admin); parsed JSON."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.api_url}/v2.0/{path}", data=data, method=method,
            headers={"Content-Type": "application/json", "X-Project-Id": PROJECT},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                text = reply.read()
        except urllib.error.HTTPError as exc:
            raise DeploymentError(f"{method} {path}: {exc.code} {exc.read()[:2000]!r}") from exc
        return json.loads(text) if text else None


#: The project the scenario's resources belong to (noauth takes it from X-Project-Id).
PROJECT = "5f0c1e2d3b4a49f8a7e6d5c4b3a29180"
