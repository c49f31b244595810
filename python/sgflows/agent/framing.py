"""Cut a msgpack byte stream into messages, bounding what each may cost *before* decoding it.

msgpack's streaming ``Unpacker`` frees the bytes of finished sub-objects as it goes, so its
``max_buffer_size`` bounds only one unfinished element: a peer could send a 512 MiB array of
1 MiB bins and the decoded objects would all stay in memory. And bytes are not the whole cost:
one byte (``0x80``) decodes to an empty dict of ~64 bytes, plus its slot in the parent.

:class:`MessageFramer` reads only the msgpack *headers* (type byte and length fields; payloads are
skipped in O(1)) and keeps a stack of how many items each open container still expects. For each
message it counts the bytes on the wire and an estimate of the memory its decoded objects take,
and refuses the message as soon as either exceeds its limit — often from a header alone, since a
header announces its payload's length before the payload arrives. Only a complete message that
passed both checks is handed to ``msgpack.unpackb``; the caller then stops reading the peer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Estimated bytes of decoded objects (CPython 3.11, 64-bit, with the allocator's and the
# garbage collector's headers), a little above what they take; checked against tracemalloc
# in tests/agent/control/test_framing.py:
#: an int (28) or float (24) with its header, rounded up; None and booleans are counted alike;
SCALAR_COST = 40
#: a str or bytes object before its payload;
RAW_COST = 56
#: an empty list, plus one 8-byte slot per item;
ARRAY_COST = 64
ARRAY_ITEM_COST = 8
#: an empty dict, plus, per entry, its share of the hash table (with room to grow).
MAP_COST = 72
MAP_ENTRY_COST = 40
#: msgpack-RPC messages and our payloads are a few levels deep; deeper is hostile.
MAX_DEPTH = 100


class FrameError(ValueError):
    """The stream cannot be framed: bad bytes, or a message over a limit."""


class FrameTooLarge(FrameError):
    """A message exceeds the byte or decoded-cost limit (``what`` says which)."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"message {what} exceed {limit}")
        self.what = what
        self.limit = limit


class FrameMalformed(FrameError):
    """The bytes are not msgpack we accept (reserved byte, ext types, nesting too deep)."""


@dataclass(frozen=True)
class FrameLimits:
    """What one message may cost."""

    max_bytes: int
    max_cost: int


# Kinds of object: a fixed-size scalar, str/bin (a payload of the given length), containers.
SCALAR, RAW, ARRAY, MAP = range(4)

# Header layout per type byte, for the types whose byte alone does not say everything:
# (header length, length-field format or None, kind).
_HEADERS: dict[int, tuple[int, str | None, int]] = {
    0xC0: (1, None, SCALAR),  # nil
    0xC2: (1, None, SCALAR),  # false
    0xC3: (1, None, SCALAR),  # true
    0xC4: (2, ">B", RAW),  # bin 8
    0xC5: (3, ">H", RAW),  # bin 16
    0xC6: (5, ">I", RAW),  # bin 32
    0xCA: (5, None, SCALAR),  # float 32
    0xCB: (9, None, SCALAR),  # float 64
    0xCC: (2, None, SCALAR),  # uint 8
    0xCD: (3, None, SCALAR),
    0xCE: (5, None, SCALAR),
    0xCF: (9, None, SCALAR),  # uint 64
    0xD0: (2, None, SCALAR),  # int 8
    0xD1: (3, None, SCALAR),
    0xD2: (5, None, SCALAR),
    0xD3: (9, None, SCALAR),  # int 64
    0xD9: (2, ">B", RAW),  # str 8
    0xDA: (3, ">H", RAW),  # str 16
    0xDB: (5, ">I", RAW),  # str 32
    0xDC: (3, ">H", ARRAY),
    0xDD: (5, ">I", ARRAY),
    0xDE: (3, ">H", MAP),
    0xDF: (5, ">I", MAP),
}


class MessageFramer:
    """Incremental framer: :meth:`feed` bytes, then take messages with :meth:`next_message`.

    State survives between feeds, so every byte is scanned once. The buffer never holds more
    than the current message (bounded by ``max_bytes``) plus one unscanned read.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        #: Where the current message starts in ``_buf`` (earlier bytes were handed out).
        self._start = 0
        #: Scan position in ``_buf``; may run past its end while a str/bin payload arrives.
        self._pos = 0
        #: Items still expected by each open container, innermost last.
        self._stack: list[int] = []
        self._cost = 0
        #: The current message's top-level object is complete (its payload may still come).
        self._done = False
        #: The estimated decoded cost of the last message handed out.
        self.last_cost = 0
        #: The last next_message() stopped at its budget with bytes left to scan.
        self.interrupted = False

    @property
    def buffered(self) -> int:
        """Bytes held (the current message's and any read after it)."""
        return len(self._buf) - self._start

    def feed(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        if self._start:
            # Drop the messages already handed out (once per read, not once per message).
            del self._buf[: self._start]
            self._pos -= self._start
            self._start = 0
        self._buf += data

    def next_message(self, limits: FrameLimits, budget: int = 1 << 62) -> bytes | None:
        """The next complete message, or ``None`` until more bytes arrive — or, if
        :attr:`interrupted`, until called again: at most ``budget`` objects are scanned per
        call, so that a caller can let others run between slices of a big message.

        Raises :class:`FrameTooLarge` or :class:`FrameMalformed`; the stream is then unusable.
        """
        if not self._scan(limits, budget):
            return None
        with memoryview(self._buf) as view:  # one copy, not two (a slice copies too)
            message = bytes(view[self._start : self._pos])
        self._start = self._pos
        self.last_cost = self._cost
        self._cost = 0
        self._done = False
        return message

    # -- scanning ---------------------------------------------------------------------------

    def _scan(self, limits: FrameLimits, budget: int) -> bool:
        """Advance over whole objects; True once the top-level object is complete."""
        self.interrupted = False
        buf = self._buf
        size = len(buf)
        stack = self._stack
        max_end = self._start + limits.max_bytes
        max_cost = limits.max_cost
        # The hot loop works on locals (this runs once per object of every message).
        pos = self._pos
        cost = self._cost
        try:
            while True:
                if self._done:
                    return pos <= size  # complete once a trailing payload has arrived
                if pos >= size:
                    return False
                if not budget:
                    self.interrupted = True
                    return False
                budget -= 1
                header = _ONE_BYTE[buf[pos]] or _object_at(buf, pos, size)
                if header is None:
                    return False
                head_len, payload, items, kind = header
                pos += head_len + payload
                cost += _BASE_COST[kind] + payload
                if pos > max_end:
                    raise FrameTooLarge("bytes", limits.max_bytes)
                if items:
                    cost += items * (MAP_ENTRY_COST if kind == MAP else ARRAY_ITEM_COST)
                    if len(stack) >= MAX_DEPTH:
                        raise FrameMalformed(f"nested deeper than {MAX_DEPTH} levels")
                    # A map of n entries holds 2n objects (keys and values).
                    stack.append(items * 2 if kind == MAP else items)
                elif stack and stack[-1] > 1:
                    stack[-1] -= 1  # the common case, inline
                else:
                    self._complete_item()
                if cost > max_cost:
                    raise FrameTooLarge("decoded objects", limits.max_cost)
        finally:
            self._pos = pos
            self._cost = cost

    def _complete_item(self) -> None:
        """One object is complete: count it in its container, which may complete in turn."""
        stack = self._stack
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                return
            stack.pop()
        self._done = True  # the top-level object


def _object_at(buf: bytearray, pos: int, size: int) -> tuple[int, int, int, int] | None:
    """(header length, payload length, item count, container kind) of the object at pos,
    or None if its header is not complete yet."""
    byte = buf[pos]
    if byte <= 0x7F or byte >= 0xE0:
        return 1, 0, 0, SCALAR  # positive / negative fixint
    if byte <= 0x8F:
        return 1, 0, byte & 0x0F, MAP
    if byte <= 0x9F:
        return 1, 0, byte & 0x0F, ARRAY
    if byte <= 0xBF:
        return 1, byte & 0x1F, 0, RAW  # fixstr
    spec = _HEADERS.get(byte)
    if spec is None:
        raise FrameMalformed(f"type byte 0x{byte:02x} is reserved or an extension type")
    head_len, fmt, kind = spec
    if fmt is None:
        return head_len, 0, 0, SCALAR
    if pos + head_len > size:
        return None
    (length,) = struct.unpack_from(fmt, buf, pos + 1)
    if kind == RAW:
        return head_len, length, 0, RAW
    return head_len, 0, length, kind


def _one_byte_header(byte: int) -> tuple[int, int, int, int] | None:
    """The header of a type whose first byte says everything, else None."""
    if byte <= 0x7F or byte >= 0xE0 or byte in (0xC0, 0xC2, 0xC3):
        return 1, 0, 0, SCALAR
    if 0xA0 <= byte <= 0xBF:
        return 1, byte & 0x1F, 0, RAW
    if 0x80 <= byte <= 0x9F:
        return 1, 0, byte & 0x0F, MAP if byte <= 0x8F else ARRAY
    return None


#: What an object of each kind costs before its payload or items.
_BASE_COST = (SCALAR_COST, RAW_COST, ARRAY_COST, MAP_COST)  # indexed by kind

#: Headers of the one-byte types by first byte (a table lookup in the hot loop).
_ONE_BYTE = [_one_byte_header(b) for b in range(256)]
