"""``firewall_driver = sgflows``: the firewall driver neutron-openvswitch-agent loads.

The agent constructs :class:`SgflowsFirewallDriver` with its integration bridge and calls it
with Neutron's port dicts, rules and members. The driver keeps them (:mod:`.model`), compiles
them with an sgflows compiler session in driver mode (no table-0 flow and no table-60
default: the agent owns them; ports the driver is not told about keep the agent's ``NORMAL``),
and applies each batch as one atomic bundle through :class:`sgflows.switch.flowstate.FlowState`
(shared with the agent's Open vSwitch dataplane): a batch's changes (the ports, groups and member
sets it touched) are one ``Compiler.apply``, its diff one bundle. The first apply of a driver
instance, and the one after ovs-vswitchd restarted, is a full sync under the agent's cookie:
one bundle replacing whatever is in the firewall's places, or, onto empty firewall tables, a
cold load over several ``ovs-ofctl`` connections with table 60's entry flows last.

A model error is isolated: when the session refuses a batch, whole compiles find the ports it
concerns (as before sessions), those get a drop-everything filter, and the session takes the
whole model; while any port is closed or any group left out, every apply recomputes that way,
so a fixed port opens again at the next change.

This module imports Neutron; nothing else in ``sgflows`` imports it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from neutron.agent import firewall
from neutron.agent.common import ovs_lib
from neutron.agent.common import utils as agent_utils
from neutron_lib.callbacks import events, registry, resources

import sgflows
from sgflows.neutron.model import DriverModel, PortFacts, find_closed
from sgflows.switch.coldload import ColdLoadError
from sgflows.switch.conntrack import flush_cut_connections
from sgflows.switch.flowstate import Change, FlowState

LOG = logging.getLogger(__name__)

#: Compile options of driver mode (docs/neutron.md in the README's operator section).
DRIVER_OPTIONS: Mapping[str, Any] = {
    "entry_flow": False,  # the agent's table 0 → 58 → 59 → 60 stays (QoS meters)
    "foreign_ports": True,  # no table-60 default; unknown ports keep the agent's NORMAL
    "widen_unmatchable_port_ranges": True,  # DCCP/UDP-Lite ranges as Neutron: warn, widen
}

#: The OpenFlow version of our ``ovs-ofctl`` calls (bundles, ``ct()``, ``set_field``).
OPENFLOW = "OpenFlow13"


class FlowApplyError(RuntimeError):
    """The switch refused a bundle: nothing of it was applied, the agent must resync."""


class AgentOfctl:
    """``ovs-ofctl`` on the integration bridge through the agent's privileged helper; unlike
    ``OVSBridge.run_ofctl``, a failure raises."""

    def __init__(self, bridge_name: str) -> None:
        self.bridge_name = bridge_name

    def _run(self, args: list[str], process_input: str | None = None) -> str:
        cmd = ["ovs-ofctl", "-O", OPENFLOW, *args]
        try:
            out = agent_utils.execute(
                cmd, run_as_root=True, privsep_exec=True, process_input=process_input
            )
        except Exception as e:
            raise FlowApplyError(f"{' '.join(cmd)}: {e}") from e
        return str(out or "")

    def bundle(self, text: str) -> None:
        """Apply ``text`` (``ovs-ofctl bundle`` input) as one transaction."""
        self._run(["bundle", self.bridge_name, "-"], process_input=text)

    def add_flows(self, text: str) -> None:
        """``--bundle add-flows``: one connection, one bundle (a part of a cold load)."""
        self._run(["--bundle", "add-flows", self.bridge_name, "-"], process_input=text)

    def dump_flows(self) -> str:
        """The bridge's flows without statistics."""
        return self._run(["dump-flows", "--no-stats", self.bridge_name])

    def appctl(self, *args: str) -> str:
        cmd = ["ovs-appctl", *args]
        try:
            out = agent_utils.execute(cmd, run_as_root=True, privsep_exec=True)
        except Exception as e:
            raise FlowApplyError(f"{' '.join(cmd)}: {e}") from e
        return str(out or "")


class SgflowsFirewallDriver(firewall.FirewallDriver):  # type: ignore[misc]
    """Neutron's ``FirewallDriver`` on sgflows' pipeline (tables 60, 71-94, Neutron's numbers)."""

    provides_arp_spoofing_protection = True

    def __init__(self, integration_bridge: Any) -> None:
        self.int_br = integration_bridge
        # Same protocols as Neutron's own driver asks for (ct(), bundles, conjunctions).
        self.int_br.add_protocols("OpenFlow10", "OpenFlow13", "OpenFlow14")
        self.ofctl = AgentOfctl(self.int_br.br_name)
        self._lock = threading.RLock()
        self._model = DriverModel()
        self._flows = FlowState(DRIVER_OPTIONS)
        self._deferred = False
        self._dirty = False
        #: Ports (device → port dict) and trusted port ids a batch named, whose OVSDB facts
        #: are read in one pass when it ends (a read per port scans every Interface: O(n²)).
        self._pending_ports: dict[str, dict[str, Any]] = {}
        self._pending_trusted: set[str] = set()
        #: Recompute everything at the next apply: ports are closed by a model error, or an
        #: earlier apply failed half-way through the driver's bookkeeping.
        self._recompute = False
        registry.subscribe(self._ovs_restarted, resources.AGENT, events.OVS_RESTARTED)
        LOG.info(
            "sgflows %s firewall driver on bridge %s", sgflows.__version__, self.ofctl.bridge_name
        )

    # -- what the agent reads ---------------------------------------------------------------

    @property
    def ports(self) -> dict[str, dict[str, Any]]:
        """``{device: port dict}`` of the filtered ports (a copy: read from other threads)."""
        with self._lock:
            return {**self._model.ports, **self._pending_ports}

    # -- ports ------------------------------------------------------------------------------

    def prepare_port_filter(self, port: dict[str, Any]) -> None:
        """Filter a new port (or refresh a known one: a resync re-adds every port)."""
        self._set_port(port)

    def update_port_filter(self, port: dict[str, Any]) -> None:
        """Refresh a port's filter; an unknown port is prepared, a port whose OpenFlow port
        is gone loses its flows."""
        self._set_port(port)

    def remove_port_filter(self, port: dict[str, Any]) -> None:
        """Forget a port and remove its flows."""
        with self._lock:
            self._pending_ports.pop(port["device"], None)
            self._model.remove_port(port["device"])
            self._changed()

    def process_trusted_ports(self, port_ids: Iterable[str]) -> None:
        """Trusted ports (DHCP, routers): unfiltered, but known to the pipeline."""
        with self._lock:
            if self._deferred:
                self._pending_trusted.update(port_ids)
            else:
                facts = self._read_facts(list(port_ids))
                for port_id, port_facts in facts.items():
                    self._model.set_trusted(port_id, port_facts)
            self._changed()

    def remove_trusted_ports(self, port_ids: Iterable[str]) -> None:
        """Forget trusted ports (the agent also passes ids it never trusted)."""
        with self._lock:
            for port_id in port_ids:
                self._pending_trusted.discard(port_id)
                self._pending_ports.pop(port_id, None)
                self._model.set_trusted(port_id, None)
                # The agent sends here any id missing from ``ports``.
                self._model.remove_port(port_id)
            self._changed()

    # -- groups -----------------------------------------------------------------------------

    def update_security_group_rules(self, sg_id: str, rules: list[dict[str, Any]]) -> None:
        """A group's rules (all of them) in Neutron's shape."""
        with self._lock:
            self._model.set_rules(sg_id, rules)
            self._changed()

    def update_security_group_members(self, sg_id: str, members: Mapping[str, Any]) -> None:
        """A remote group's members: ``{ethertype: [(ip, mac|None), ...]}``."""
        with self._lock:
            self._model.set_members(sg_id, members)
            self._changed()

    def security_group_updated(
        self, action_type: str, sec_group_ids: Any, device_ids: Any = None
    ) -> None:
        """Nothing to do: rules and members arrive through the two methods above."""
        LOG.debug("security_group_updated(%s, %s) needs no action", action_type, sec_group_ids)

    # -- batches ----------------------------------------------------------------------------

    def filter_defer_apply_on(self) -> None:
        """Start a batch: changes are kept until :meth:`filter_defer_apply_off`."""
        with self._lock:
            self._deferred = True

    def filter_defer_apply_off(self) -> None:
        """End a batch: apply everything it changed as one bundle (raises if refused)."""
        with self._lock:
            self._deferred = False
            self._resolve_pending()
            if self._dirty:
                self._model.collect_garbage()
                self._apply()

    # -- internals --------------------------------------------------------------------------

    def _set_port(self, port: dict[str, Any]) -> None:
        with self._lock:
            device = port["device"]
            if self._deferred:
                self._pending_ports[device] = port
            else:
                # No facts: no OpenFlow port (yet, or any more), nothing to filter, and its
                # old flows (an ofport that may be reused) must go.
                self._model.set_port(device, port, self._read_facts([device])[device])
            self._changed()

    def _resolve_pending(self) -> None:
        """Read the OVSDB facts of the ports and trusted ports the batch named, in one pass."""
        if not self._pending_ports and not self._pending_trusted:
            return
        facts = self._read_facts([*self._pending_ports, *self._pending_trusted])
        for device, port in self._pending_ports.items():
            self._model.set_port(device, port, facts[device])
        for port_id in self._pending_trusted:
            self._model.set_trusted(port_id, facts[port_id])
        self._pending_ports.clear()
        self._pending_trusted.clear()

    def _read_facts(self, port_ids: Iterable[str]) -> dict[str, PortFacts | None]:
        """ofport and MAC from the Interfaces' external ids, local VLAN from the Ports'
        ``other_config:tag``, as Neutron's driver reads them: two OVSDB reads of the bridge's
        ports for all of ``port_ids`` (``get_vif_port_by_id`` per port searches every
        Interface, which made a first sync quadratic)."""
        wanted = set(port_ids)
        vifs = self._read_vifs(wanted)
        tags = self._read_other_configs([vif["name"] for vif in vifs.values()])
        return {port_id: _facts(port_id, vifs.get(port_id), tags) for port_id in wanted}

    def _read_vifs(self, wanted: set[str]) -> dict[str, Mapping[str, Any]]:
        """The bridge's Interface rows of the ``wanted`` port ids that have a MAC."""
        interfaces = self.int_br.get_ports_attributes(
            "Interface", columns=["name", "external_ids", "ofport"], if_exists=True
        )
        vifs: dict[str, Mapping[str, Any]] = {}
        for iface in interfaces:
            ids = iface["external_ids"]
            port_id = ids.get("iface-id")
            if port_id in wanted and ids.get("attached-mac") and port_id not in vifs:
                vifs[port_id] = iface
        return vifs

    def _read_other_configs(self, names: list[str]) -> dict[str, Any]:
        """Port name → the Port's ``other_config`` (where the agent keeps the local VLAN)."""
        if not names:
            return {}
        ports = self.int_br.get_ports_attributes(
            "Port", columns=["name", "other_config"], ports=names, if_exists=True
        )
        return {p["name"]: p["other_config"] for p in ports}

    def _changed(self) -> None:
        if self._deferred:
            self._dirty = True
        else:
            self._apply()

    def _apply(self) -> None:
        self._dirty = False
        cookie = int(self.int_br.default_cookie)
        change = self._update(cookie)
        try:
            self._flows.install(change, self.ofctl)
        except ColdLoadError as e:
            raise FlowApplyError(str(e)) from e
        self._log_change(change)
        if change.cuts:
            # Removed flows may have cut connections: their marked entries can go.
            zones = [f.local_vlan for f in self._model.facts.values()]
            flush_cut_connections(self.ofctl.appctl, zones)

    def _update(self, cookie: int) -> Change:
        """What changed, through the session; everything again when something is wrong."""
        if not self._recompute:
            self._recompute = True  # until this apply went through
            try:
                change = self._flows.update(self._model.take_update(), cookie, self.ofctl)
            except sgflows.FlowLimitError:
                raise
            except sgflows.ModelError as e:
                LOG.warning("the compiler refused a change, finding the ports it concerns: %s", e)
            else:
                self._recompute = False
                return change
        return self._recompute_all(cookie)

    def _recompute_all(self, cookie: int) -> Change:
        """Close the ports a model error concerns (whole compiles find them) and give the
        session the whole model."""
        closed, dropped = find_closed(self._model, {**DRIVER_OPTIONS, "cookie": cookie})
        if closed:
            LOG.error("ports closed (drop everything) until fixed: %s", sorted(closed))
        change = self._flows.update(self._model.full_update(closed, dropped), cookie, self.ofctl)
        # A group left out (even one no port uses yet) is checked again at every apply.
        self._recompute = bool(closed or dropped)
        return change

    def _log_change(self, change: Change) -> None:
        kind = "installed" if change.full else "changed"
        LOG.info(
            "%s %d flows for %d ports (+%d ~%d -%d, %s of %d lines)",
            kind,
            change.flow_count,
            change.port_count,
            change.added,
            change.modified,
            change.removed,
            f"cold load over {self._flows.cold_connections} connections"
            if change.cold
            else "bundle",
            change.lines,
        )

    def _ovs_restarted(self, resource: Any, event: Any, trigger: Any, payload: Any = None) -> None:
        """ovs-vswitchd lost every flow: install everything again, as Neutron's driver does."""
        LOG.info("ovs-vswitchd restarted: reinstalling every sgflows flow")
        with self._lock:
            self._flows.forget()
            self._apply()


def _facts(
    port_id: str, vif: Mapping[str, Any] | None, other_configs: Mapping[str, Any]
) -> PortFacts | None:
    """A port's facts from its Interface row and its Port's ``other_config``; ``None`` (and
    logged) when it has no OpenFlow port or no local VLAN yet."""
    ofport = vif["ofport"] if vif else None
    if vif is None or ofport in (ovs_lib.UNASSIGNED_OFPORT, ovs_lib.INVALID_OFPORT, [], None):
        LOG.info("port %s has no OpenFlow port in OVSDB: not filtered", port_id)
        return None
    try:
        tag = int((other_configs.get(vif["name"]) or {})["tag"])
    except (KeyError, TypeError, ValueError):
        LOG.info("port %s has no local VLAN tag in OVSDB: not filtered", port_id)
        return None
    mac = vif["external_ids"]["attached-mac"]
    return PortFacts(ofport=int(ofport), mac=str(mac), local_vlan=tag)
