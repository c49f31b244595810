"""The dataplane API the agent drives, apart from its backends (as ovsdbapp keeps ``api.py``
apart from ``impl_idl.py``).

The agent hands every dataplane Neutron's ``security_group_info_for_devices`` reply for the
devices it serves (:meth:`Dataplane.apply`). A backend that watches the switch itself (the
Open vSwitch one) also has a life of its own: :meth:`Dataplane.start` before the agent
connects, :meth:`Dataplane.stop` at shutdown, and it tells the agent about ports that appear
on the switch (a :data:`LocalPortsListener`) so that the agent asks the controller for their
security-group information. Backends without that life inherit the no-op defaults of
:class:`DataplaneBase`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

#: Called by a dataplane with the ids (``external_ids:iface-id``) of the ports now present
#: on the switch, whenever that set changes.
LocalPortsListener = Callable[[frozenset[str]], None]
#: Called by a dataplane with a reason while it cannot program the switch, with ``None`` once
#: it can again (the agent shows it as ``degraded(dataplane: …)``).
DegradedListener = Callable[[str | None], None]


class DataplaneError(Exception):
    """The dataplane could not apply an update (it is unreachable or refused it)."""


@runtime_checkable
class Dataplane(Protocol):
    """What the agent programs."""

    async def apply(self, info: dict[str, Any], *, full: bool) -> dict[str, int]:
        """Apply Neutron's ``security_group_info_for_devices`` reply; return counts.

        Raise :class:`DataplaneError` when it cannot: the previous state must then still be
        in force (the agent retries with backoff and reports ``degraded``)."""
        ...


class DataplaneBase:
    """Defaults for the optional life-cycle of a dataplane."""

    async def start(
        self,
        on_local_ports: LocalPortsListener | None = None,
        on_degraded: DegradedListener | None = None,
    ) -> None:
        """Start watching the switch (no-op by default); raise :class:`DataplaneError` to
        refuse (the agent then does not start)."""

    async def stop(self) -> None:
        """Stop watching (no-op by default); what was applied stays in force."""

    def local_ports(self) -> frozenset[str]:
        """Ids of the ports present on the switch (none known by default)."""
        return frozenset()

    def status(self) -> dict[str, Any]:
        """JSON-able status for the agent's report (empty by default)."""
        return {}


def counts_of(info: dict[str, Any], devices: Iterable[str] | None = None) -> dict[str, int]:
    """The counts a sync reports: ports, groups, rules and member IPs of a reply."""
    groups = info.get("security_groups", {})
    members = info.get("sg_member_ips", {})
    return {
        "ports": len(info.get("devices", {})) if devices is None else len(list(devices)),
        "security_groups": len(groups),
        "rules": sum(len(rules) for rules in groups.values()),
        "member_ips": sum(len(v) for m in members.values() for v in m.values()),
    }
