"""Defaults of the switch code that the command line shows in ``--help``.

Kept apart from :mod:`.coldload` so that ``sgflows compile`` does not import what a load needs
(threads, subprocesses) just to declare ``sgflows load --connections``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CONNECTIONS"]

#: Connections of every cold load unless told: ``sgflows load --connections``, the Neutron
#: driver's and the agent's first install (``FlowState``). Measured in ``docs/economy.md``
#: ("Which count"; "One count for every cold load").
DEFAULT_CONNECTIONS = 4
