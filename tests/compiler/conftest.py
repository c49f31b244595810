"""Shared fixtures for the compiler's API and CLI tests (builders live in ``sessionhelpers``).

``--import-mode=importlib`` puts no test directory on ``sys.path``; this one is appended so
test modules can ``from sessionhelpers import ...``. Appended, not put first: other test
directories import their own ``test_api`` by name, and this one has a ``test_api`` too.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.append(str(Path(__file__).resolve().parent))


@pytest.fixture
def example() -> dict[str, Any]:
    return json.loads(
        (Path(__file__).resolve().parents[2] / "examples" / "two-tier.json").read_text()
    )


@pytest.fixture
def small() -> dict[str, Any]:
    """One stateful group with one SSH rule, one port."""
    return copy.deepcopy(
        {
            "security_groups": {
                "web": {
                    "stateful": True,
                    "rules": [
                        {
                            "direction": "ingress",
                            "ethertype": "IPv4",
                            "protocol": "tcp",
                            "port_range_min": 22,
                            "port_range_max": 22,
                        }
                    ],
                }
            },
            "ports": [
                {
                    "id": "p1",
                    "mac_address": "fa:16:3e:00:00:01",
                    "fixed_ips": ["10.0.0.1"],
                    "security_groups": ["web"],
                    "network_id": "n",
                    "ofport": 1,
                    "local_vlan": 1,
                }
            ],
        }
    )
