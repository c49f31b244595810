"""A private OVN central (Northbound and Southbound ``ovsdb-server``s and ``ovn-northd``)
in a private directory, stopped by pid, and a chassis (``OvnChassis``: userspace Open vSwitch
with ``br-int`` and ``ovn-controller``) attached to it (``tests/ovn/conftest.py`` makes both
session fixtures)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from . import wait_for
from .ovs import Bridge, PrivateOVS, _die_with_parent

LOG = logging.getLogger(__name__)

SCHEMAS = Path("/usr/share/ovn")

#: A private chassis on one (often loaded) machine: no keepalive between ovn-controller and
#: its br-int OpenFlow connection or the Southbound (all unix sockets: a dead peer is seen at
#: once), and OpenFlow bundles that do not expire while ovs-vswitchd is busy. With the
#: defaults, at p3000 ovn-controller lost br-int 11 times in 36 minutes and reinstalled every
#: flow after each loss (``benches/results/ovn_e2e.md``). OVN 23.03's names
#: (``ovn-controller(8)``, ``ovs-vswitchd.conf.db(5)``). What stays: ovs-vswitchd's 60 s probe
#: of ``br-int.mgmt`` connections (fixed in its ``bridge.c``), which drops ovn-controller when
#: one turn of its main loop takes longer (binding 3,000 ports at once: ~3 minutes), and a 5 s
#: probe on another of ovn-controller's br-int connections (no recompute follows that one).
QUIET_PROBES = (
    "external_ids:ovn-openflow-probe-interval=0",
    "external_ids:ovn-remote-probe-interval=0",
    "other_config:bundle-idle-timeout=3600",
)


@dataclass
class OvnCentral:
    """Private NB and SB databases and ovn-northd under ``base``."""

    base: Path
    pids: list[int] = field(default_factory=list)
    startup_seconds: float = 0.0

    @property
    def nb(self) -> str:
        return f"unix:{self.base}/nb.sock"

    @property
    def sb(self) -> str:
        return f"unix:{self.base}/sb.sock"

    def nbctl(self, *args: str) -> str:
        return _run("ovn-nbctl", f"--db={self.nb}", *args)

    def sbctl(self, *args: str) -> str:
        return _run("ovn-sbctl", f"--db={self.sb}", *args)

    def start(self) -> None:
        began = time.monotonic()
        for name in ("nb", "sb"):
            db = self.base / f"{name}.db"
            _run("ovsdb-tool", "create", str(db), str(SCHEMAS / f"ovn-{name}.ovsschema"))
            self._daemon(
                name,
                "ovsdb-server",
                str(db),
                f"--remote=punix:{self.base}/{name}.sock",
            )
        self._daemon("northd", "ovn-northd", f"--ovnnb-db={self.nb}", f"--ovnsb-db={self.sb}")
        self.nbctl("--wait=sb", "sync")
        self.startup_seconds = time.monotonic() - began
        LOG.info("OVN central ready in %.2f s", self.startup_seconds)

    def _daemon(self, name: str, program: str, *args: str) -> None:
        pidfile = self.base / f"{name}.pid"
        _run(
            program,
            *args,
            f"--pidfile={pidfile}",
            f"--unixctl={self.base}/{name}.ctl",
            f"--log-file={self.base}/{name}.log",
            "--detach",
        )
        self.pids.append(int(pidfile.read_text().strip()))

    def reset(self) -> None:
        """Empties the Northbound database (every sgflows table) and waits for northd."""
        for table in ("ACL", "Port_Group", "Address_Set", "Logical_Switch"):
            for uuid in self.nbctl("--bare", "--columns=_uuid", "list", table).split():
                self.nbctl("--if-exists", "destroy", table, uuid)
        self.nbctl("--wait=sb", "sync")

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.pids.clear()


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class OvnChassis:
    """One hypervisor: a private userspace Open vSwitch (``support.ovs.PrivateOVS``, in its own
    network namespace) with ``br-int`` (netdev) and ``ovn-controller`` talking to ``central``.

    ``ovn-controller`` runs as our child (not detached: stopping it reaps it, and it dies with
    the test process, as the OVS daemons do), with its control socket and log in ``base``.
    Logical ports are bound by ``bind`` (an internal port, or an existing device such as a veth
    host end, with ``external_ids:iface-id``); ``wait`` is ``ovn-nbctl --wait=hv sync``: it
    returns once this chassis has installed the flows for every Northbound change so far.
    """

    central: OvnCentral
    base: Path
    system_id: str = "sgf-chassis"
    encap_ip: str = "127.0.0.1"
    ovs: PrivateOVS | None = None
    bridge: Bridge | None = None
    startup_seconds: float = 0.0
    _controller: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    _next_ofport: int = 1
    _bound: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        began = time.monotonic()
        self.ovs = PrivateOVS().start()
        try:
            self.bridge = self.ovs.add_bridge("br-int")
            self.ovs.vsctl(
                "set", "open_vswitch", ".",
                f"external_ids:system-id={self.system_id}",
                f"external_ids:ovn-remote={self.central.sb}",
                "external_ids:ovn-encap-type=geneve",
                f"external_ids:ovn-encap-ip={self.encap_ip}",
                "external_ids:ovn-bridge-datapath-type=netdev",
                *QUIET_PROBES,
            )  # fmt: skip
            self._start_controller()
            wait_for(self._registered, 20.0, "ovn-controller to register its chassis")
            self.wait()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        LOG.info("OVN chassis ready in %.2f s", self.startup_seconds)

    def _start_controller(self) -> None:
        assert self.ovs is not None and self.ovs.dir is not None
        env = {**self.ovs.env, "OVN_RUNDIR": str(self.base), "OVN_LOGDIR": str(self.base)}
        self._log = (self.base / "ovn-controller.out").open("wb")
        self._controller = subprocess.Popen(
            ["ovn-controller", f"unix:{self.ovs.dir}/run/db.sock",
             f"--log-file={self.base}/ovn-controller.log", "-vconsole:off"],
            env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip

    def _registered(self) -> bool:
        if self._controller is None or self._controller.poll() is not None:
            raise RuntimeError(f"ovn-controller exited early; log:\n{self.log_tail()}")
        names = _run("ovn-sbctl", f"--db={self.central.sb}", "--bare", "--columns=name",
                     "list", "Chassis")  # fmt: skip
        return self.system_id in names.split()

    @property
    def controller_pid(self) -> int:
        assert self._controller is not None
        return self._controller.pid

    def wait(self, timeout: float = 300.0) -> float:
        """Wait until this chassis has caught up with the Northbound database; the seconds."""
        began = time.monotonic()
        _run("ovn-nbctl", f"--db={self.central.nb}", f"--timeout={int(timeout)}", "--wait=hv",
             "sync")  # fmt: skip
        return time.monotonic() - began

    def bind(self, port_id: str, device: str | None = None, **columns: str) -> int:
        """Bind logical port ``port_id`` here: ``device`` (an existing device in the switch's
        namespace) or a new internal port; return its OpenFlow port number."""
        assert self.bridge is not None
        ofport = self._next_ofport
        self._next_ofport += 1
        name = device or f"sgfi{ofport}"
        got = self.bridge.add_port(
            name, ofport, internal=device is None,
            **{"external_ids:iface-id": f'"{port_id}"', **columns},
        )  # fmt: skip
        self._bound[port_id] = name
        return got

    def wait_bound(self, timeout: float = 30.0) -> None:
        """Wait until ovn-controller has installed the flows of every bound port (it sets
        ``external_ids:ovn-installed`` on the interface then), and for the Northbound."""
        assert self.ovs is not None

        def installed() -> bool:
            assert self.ovs is not None
            done = self.ovs.vsctl("--bare", "--columns=name", "find", "interface",
                                  'external_ids:ovn-installed="true"').split()  # fmt: skip
            return set(self._bound.values()) <= set(done)

        wait_for(installed, timeout, "ovn-controller to install the bound ports", 0.05)
        self.wait()

    def bind_internal_many(self, port_ids: list[str]) -> None:
        """Bind many logical ports as internal ports in one ``ovs-vsctl`` transaction (one
        call per port costs a round trip to ovs-vswitchd each: minutes for 1,000 ports)."""
        assert self.bridge is not None
        args: list[str] = []
        for port_id in port_ids:
            name = f"sgfi{self._next_ofport}"
            self._next_ofport += 1
            args += ["--", "add-port", self.bridge.name, name, "--", "set", "interface", name,
                     "type=internal", f'external_ids:iface-id="{port_id}"']  # fmt: skip
            self._bound[port_id] = name
        if args:
            assert self.ovs is not None
            self.ovs.vsctl(*args[1:], timeout=600)

    def unbind_all(self) -> None:
        """Remove every port ``bind`` added (the devices of veth ports stay with their owner)."""
        assert self.bridge is not None and self.ovs is not None
        args: list[str] = []
        for name in self._bound.values():
            args += ["--", "--if-exists", "del-port", self.bridge.name, name]
            self.bridge.ports.pop(name, None)
        if args:
            self.ovs.vsctl(*args[1:], timeout=600)
        self.bridge._dp_to_of = None  # the datapath port map is stale now
        self._bound.clear()

    def flow_count(self) -> int:
        """OpenFlow flows on ``br-int`` (what ovn-controller installed)."""
        assert self.bridge is not None
        return self.bridge.flow_count()

    def log_tail(self, lines: int = 40) -> str:
        path = self.base / "ovn-controller.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self._controller is not None:
            if self._controller.poll() is None:
                self._controller.terminate()
            try:
                self._controller.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._controller.kill()
                self._controller.wait(timeout=5)
            self._controller = None
            if self._log is not None:
                self._log.close()
        if self.ovs is not None:
            self.ovs.stop()
            self.ovs = None
        self.bridge = None


#: ``--ct-next`` states for ``ofproto/trace`` on br-int: a packet between two local ports
#: passes at most one ``ct()`` in the logical switch's ingress pipeline and one in its egress
#: pipeline (one more is a margin; unused ones are ignored).
CT_NEW = ("trk,new",) * 3


def exact_flow(packet: str) -> str:
    """An evaluator packet (``udp,nw_src=…,tp_dst=53``) in the field names ``ofproto/trace``
    accepts for an exact flow: ``tp_dst`` only exists for TCP there (``udp_dst``,
    ``sctp_dst``), ICMPv6 types are ``icmpv6_type``; ``nw_ttl`` must follow the protocol."""
    fields = packet.split(",")
    proto = fields[0].rstrip("6")
    renames = (
        {"icmp_type": "icmpv6_type", "icmp_code": "icmpv6_code"} if fields[0] == "icmp6" else {}
    )
    if proto in ("tcp", "udp", "sctp"):
        renames = {"tp_dst": f"{proto}_dst", "tp_src": f"{proto}_src"}
    out = []
    for item in fields:
        key, eq, value = item.partition("=")
        out.append(f"{renames.get(key, key)}{eq}{value}")
    return ",".join([*out, "nw_ttl=64"])


def physical_verdict(chassis: OvnChassis, flow: str, receiver_ofport: int) -> str:
    """``allow`` when ``ofproto/trace`` of ``flow`` on br-int ends in output to the receiver."""
    assert chassis.bridge is not None
    result = chassis.bridge.trace(flow, CT_NEW)
    if result.recirculates:
        raise RuntimeError(f"trace still recirculates after {len(CT_NEW)} ct(): {result}")
    return "allow" if receiver_ofport in result.ports else "drop"
