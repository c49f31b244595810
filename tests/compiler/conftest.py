"""Shared fixtures for the compiler's API and CLI tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest


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
