"""The message framer: cuts any msgpack stream where msgpack does, and refuses by headers."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sgflows.agent import framing

UNLIMITED = framing.FrameLimits(max_bytes=1 << 40, max_cost=1 << 40)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=300)
    | st.binary(max_size=70000)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=10), inner, max_size=20)
    ),
    max_leaves=60,
)


def frames_of(data: bytes, chunk: int, limits: framing.FrameLimits = UNLIMITED) -> list[bytes]:
    framer = framing.MessageFramer()
    out: list[bytes] = []
    for i in range(0, len(data), chunk):
        framer.feed(data[i : i + chunk])
        while (frame := framer.next_message(limits)) is not None:
            out.append(frame)
    assert framer.buffered == 0
    return out


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(values, min_size=1, max_size=5), chunk=st.integers(1, 5000))
def test_frames_are_exactly_the_packed_messages(messages: list[Any], chunk: int) -> None:
    packed = [msgpack.packb(m, use_bin_type=True) for m in messages]
    assert frames_of(b"".join(packed), chunk) == packed


def test_a_header_announcing_too_much_is_refused_before_its_payload() -> None:
    framer = framing.MessageFramer()
    framer.feed(b"\x91\xc6" + struct.pack(">I", 1 << 30))  # [bin of 1 GiB], no payload yet
    with pytest.raises(framing.FrameTooLarge) as err:
        framer.next_message(framing.FrameLimits(max_bytes=1 << 20, max_cost=1 << 40))
    assert err.value.what == "bytes"


def test_decoded_cost_is_counted_from_container_headers() -> None:
    # 1 byte on the wire (an empty map) costs a dict once decoded; a header announcing a
    # million of them is refused at once.
    framer = framing.MessageFramer()
    framer.feed(b"\xdd" + struct.pack(">I", 1_000_000))
    with pytest.raises(framing.FrameTooLarge) as err:
        framer.next_message(framing.FrameLimits(max_bytes=1 << 30, max_cost=1 << 20))
    assert err.value.what == "decoded objects"
    # And small ones add up: 20000 empty maps of 1 byte each cost over 1 MiB.
    data = b"\xdc" + struct.pack(">H", 20000) + b"\x80" * 20000
    with pytest.raises(framing.FrameTooLarge):
        frames_of(data, 4096, framing.FrameLimits(max_bytes=1 << 30, max_cost=1 << 20))
    assert len(frames_of(data, 4096)) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",  # never used
        b"\xd4\x01\x00",  # fixext: we use no extension types
        b"\xc7\x01\x05x",  # ext 8
        b"\x91" * (framing.MAX_DEPTH + 1),  # single-item arrays nested too deep
    ],
)
def test_malformed_streams(data: bytes) -> None:
    with pytest.raises(framing.FrameMalformed):
        frames_of(data, 1)


def _estimate(obj: Any) -> int:
    data = msgpack.packb(obj, use_bin_type=True)
    framer = framing.MessageFramer()
    framer.feed(data)
    assert framer.next_message(UNLIMITED) == data
    return framer.last_cost


def _decoded_size(obj: Any) -> int:
    data = msgpack.packb(obj, use_bin_type=True)
    tracemalloc.start()
    try:
        decoded = msgpack.unpackb(data, raw=False)
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del decoded
    return size


@pytest.mark.parametrize(
    "shape",
    [
        "empty maps",
        "empty lists",
        "ints",
        "floats",
        "short strings",
        "bins",
        "security group info",
    ],
)
def test_the_cost_estimate_is_close_above_the_real_size(shape: str) -> None:
    n = 20000
    objects: dict[str, Any] = {
        "empty maps": [{} for _ in range(n)],
        "empty lists": [[] for _ in range(n)],
        "ints": list(range(1000, 1000 + n)),
        "floats": [i + 0.5 for i in range(n)],
        "short strings": [f"s{i}" for i in range(n)],
        "bins": [bytes([i % 256]) * 100 for i in range(n)],
        "security group info": {
            "devices": {
                f"port-{i}": {
                    "id": f"port-{i}",
                    "fixed_ips": [f"10.0.{i // 256}.{i % 256}"],
                    "security_groups": ["web", "db"],
                    "port_security_enabled": True,
                }
                for i in range(n // 10)
            },
            "security_groups": {
                "web": [
                    {"direction": "ingress", "protocol": "tcp", "port_range_min": p}
                    for p in range(n // 10)
                ]
            },
        },
    }
    real = _decoded_size(objects[shape])
    estimate = _estimate(objects[shape])
    # Over, so a limit holds; not much over, so legitimate messages are not refused early.
    assert real <= estimate <= 2 * real, (real, estimate)


def test_a_scan_budget_slices_a_big_message() -> None:
    data = msgpack.packb([list(range(10000)), "end"])
    framer = framing.MessageFramer()
    framer.feed(data)
    calls = 0
    while (frame := framer.next_message(UNLIMITED, budget=1000)) is None:
        assert framer.interrupted  # stopped by the budget, not for lack of bytes
        calls += 1
    assert frame == data and calls == 10 and not framer.interrupted
    assert framer.next_message(UNLIMITED, budget=1000) is None and not framer.interrupted
