"""Builders shared by the session tests (``test_session.py``, ``test_session_models.py``).

``conftest.py`` puts this directory on ``sys.path`` (pytest runs with
``--import-mode=importlib``); the module's name is one no other test directory uses.
"""

from __future__ import annotations

from typing import Any


def port(i: int, groups: list[str], *, subnet: int = 0) -> dict[str, Any]:
    """Port ``p{i}`` of network ``net`` in ``groups``: MAC ``fa:16:3e:00:SUBNET:i+1``, address
    ``10.0.SUBNET.i+1``, OpenFlow port ``i+1``. A test module keeps to one subnet, so the same
    ``i`` is always the same port."""
    return {
        "id": f"p{i}",
        "mac_address": f"fa:16:3e:00:{subnet:02x}:{i + 1:02x}",
        "fixed_ips": [f"10.0.{subnet}.{i + 1}"],
        "security_groups": groups,
        "network_id": "net",
        "ofport": i + 1,
    }
