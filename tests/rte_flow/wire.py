"""Frames from the interpreter's packets (``rteinterp.Packet``), standard library only: what
the guest writes into the tap. Checksums are left zero (TC flower does not check them);
lengths are right, and every frame is padded to a given length so that testpmd's verbose
output (which prints the length) tells the packets apart."""

from __future__ import annotations

import struct

from rteinterp import ARP, ICMP, ICMPV6, IPV4, IPV6, Packet


def _l4(p: Packet) -> bytes:
    if p.proto in (6,):
        return struct.pack("!HHIIBBHHH", p.sport or 0, p.dport or 0, 0, 0, 0x50, 0x02, 1024, 0, 0)
    if p.proto in (17, 132):
        if p.proto == 132:
            return struct.pack("!HHII", p.sport or 0, p.dport or 0, 0, 0)
        return struct.pack("!HHHH", p.sport or 0, p.dport or 0, 8, 0)
    if p.proto in (ICMP, ICMPV6):
        head = struct.pack("!BBHI", p.icmp_type or 0, p.icmp_code or 0, 0, 0)
        if p.nd_target is not None:
            head += p.nd_target.to_bytes(16, "big")
        return head
    return b"\0" * 8


def frame(p: Packet, length: int) -> bytes:
    """The packet as an Ethernet frame of exactly ``length`` bytes (padding after L4)."""
    eth = p.eth_dst.to_bytes(6, "big") + p.eth_src.to_bytes(6, "big")
    eth += struct.pack("!H", p.ethertype)
    if p.ethertype == ARP:
        body = struct.pack("!HHBBH", 1, IPV4, 6, 4, 1)
        body += (p.arp_sha or 0).to_bytes(6, "big") + (p.arp_spa or 0).to_bytes(4, "big")
        body += b"\0" * 6 + (0).to_bytes(4, "big")
    elif p.ethertype == IPV4:
        l4 = _l4(p)
        pad = length - 14 - 20 - len(l4)
        total = 20 + len(l4) + max(pad, 0)
        body = struct.pack("!BBHHHBBH", 0x45, 0, total, 1, 0, 64, p.proto or 0, 0)
        body += (p.ip_src or 0).to_bytes(4, "big") + (p.ip_dst or 0).to_bytes(4, "big") + l4
    elif p.ethertype == IPV6:
        l4 = _l4(p)
        pad = length - 14 - 40 - len(l4)
        payload = len(l4) + max(pad, 0)
        body = struct.pack("!IHBB", 0x60000000, payload, p.proto or 0, 64)
        body += (p.ip_src or 0).to_bytes(16, "big") + (p.ip_dst or 0).to_bytes(16, "big") + l4
    else:
        body = b""
    out = eth + body
    assert len(out) <= length, (len(out), length)
    return out + b"\0" * (length - len(out))
