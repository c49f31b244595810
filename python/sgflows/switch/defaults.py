"""Defaults of the switch code that the command line shows in ``--help``.

Kept apart from :mod:`.coldload` so that ``sgflows compile`` does not import what a load needs
(threads, subprocesses) just to declare ``sgflows load --connections``.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CONNECTIONS"]

#: Connections of a cold load unless told (``sgflows load --connections``).
DEFAULT_CONNECTIONS = 8
