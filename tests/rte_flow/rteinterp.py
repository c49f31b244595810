"""An interpreter of rte_flow semantics over testpmd ``flow create`` lines, and an oracle of
the security-group semantics the rules must implement. Both are written from the
specifications (DPDK ``flow_offload.rst``/``testpmd_funcs.rst``; Neutron's allow-list rules
and the OpenFlow backend's implicit allowances), independently of the compiler.

The interpreter **fails** (raises) when a packet misses every rule of a group, or when two
rules at the best priority of a group both match: rte_flow leaves both undefined.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any, Optional

IPV4, ARP, IPV6, RARP = 0x0800, 0x0806, 0x86DD, 0x8035
TCP, UDP, SCTP, ICMP, ICMPV6 = 6, 17, 132, 1, 58
ND_SOURCE_CHECKED = (130, 131, 132, 133, 135, 143)
# RFC 4861 §6.3.7 (RS before an address is assigned), duplicate address detection (NS, MLDv2).
ND_FROM_UNSPECIFIED = (133, 135, 143)
# MLD: queries only; other hosts' reports are not for the VM.
ND_INGRESS = (130, 134, 135, 136)
# Redirects meet the rules (only a VM that routes can send one a host honours).
ROUTER_ONLY = (134,)

Verdict = tuple[str, Optional[int]]  # ("drop", None) | ("port", n) | ("software", n)


class GroupMiss(AssertionError):
    """A packet matched no rule of a group."""


class Ambiguous(AssertionError):
    """Two rules at one priority matched a packet."""


# --- packets ---------------------------------------------------------------------------


@dataclass
class Packet:
    in_port: int
    eth_src: int
    eth_dst: int
    ethertype: int
    ip_src: Optional[int] = None
    ip_dst: Optional[int] = None
    proto: Optional[int] = None
    sport: Optional[int] = None
    dport: Optional[int] = None
    icmp_type: Optional[int] = None
    icmp_code: Optional[int] = None
    arp_sha: Optional[int] = None
    arp_spa: Optional[int] = None
    nd_target: Optional[int] = None

    def describe(self) -> str:
        parts = [
            f"in_port={self.in_port}",
            f"src={mac_str(self.eth_src)}",
            f"dst={mac_str(self.eth_dst)}",
            f"type={self.ethertype:#06x}",
        ]
        for name in ("ip_src", "ip_dst", "nd_target", "arp_spa"):
            v = getattr(self, name)
            if v is not None:
                six = self.ethertype == IPV6 and name != "arp_spa"
                parts.append(
                    f"{name}={ipaddress.ip_address(v) if not six else ipaddress.IPv6Address(v)}"
                )
        for name in ("proto", "sport", "dport", "icmp_type", "icmp_code"):
            v = getattr(self, name)
            if v is not None:
                parts.append(f"{name}={v}")
        return " ".join(parts)


def mac_int(s: str) -> int:
    return int(s.replace(":", ""), 16)


def mac_str(v: int) -> str:
    return ":".join(f"{(v >> (8 * (5 - i))) & 0xFF:02x}" for i in range(6))


def ip_int(s: str) -> int:
    return int(ipaddress.ip_address(s))


def fixed_ips(port: dict[str, Any]) -> list[str]:
    """A port's fixed IPs, whether given as strings or as ``{"ip_address"}``."""
    return [ip if isinstance(ip, str) else ip["ip_address"] for ip in port.get("fixed_ips", [])]


# --- the interpreter ---------------------------------------------------------------------

FIELD_WIDTH = {
    ("eth", "src"): 48,
    ("eth", "dst"): 48,
    ("eth", "type"): 16,
    ("ipv4", "src"): 32,
    ("ipv4", "dst"): 32,
    ("ipv4", "proto"): 8,
    ("ipv6", "src"): 128,
    ("ipv6", "dst"): 128,
    ("ipv6", "proto"): 8,
    ("tcp", "src"): 16,
    ("tcp", "dst"): 16,
    ("udp", "src"): 16,
    ("udp", "dst"): 16,
    ("sctp", "src"): 16,
    ("sctp", "dst"): 16,
    ("icmp", "type"): 8,
    ("icmp", "code"): 8,
    ("icmp6", "type"): 8,
    ("icmp6", "code"): 8,
    ("arp_eth_ipv4", "sha"): 48,
    ("arp_eth_ipv4", "spa"): 32,
    ("icmp6_nd_na", "target_addr"): 128,
    ("represented_port", "ethdev_port_id"): 16,
    ("port_id", "id"): 32,
}


def _value(item: str, name: str, text: str) -> int:
    if ":" in text and FIELD_WIDTH[(item, name)] == 48:
        return mac_int(text)
    if FIELD_WIDTH[(item, name)] in (32, 128) and ("." in text or ":" in text):
        return ip_int(text)
    return int(text, 0)


@dataclass
class Field:
    spec: int = 0
    mask: int = 0
    last: Optional[int] = None

    def matches(self, v: Optional[int]) -> bool:
        if v is None:
            return False
        if self.last is None:
            return (v & self.mask) == (self.spec & self.mask)
        return (self.spec & self.mask) <= (v & self.mask) <= (self.last & self.mask)


@dataclass
class Item:
    name: str
    fields: dict[str, Field] = field(default_factory=dict)


@dataclass
class Rule:
    line: str
    group: int
    priority: int
    transfer: bool
    items: list[Item]
    actions: list[tuple[str, list[str]]]


def parse_line(line: str) -> Rule:
    head, sep, rest = line.partition(" pattern ")
    assert sep, line
    words = head.split()
    assert words[:2] in (["flow", "create"], ["flow", "validate"]), line
    group, priority, transfer = 0, 0, False
    i = 3
    while i < len(words):
        if words[i] == "group":
            group, i = int(words[i + 1]), i + 2
        elif words[i] == "priority":
            priority, i = int(words[i + 1]), i + 2
        elif words[i] == "transfer":
            transfer, i = True, i + 1
        else:
            raise AssertionError(f"unknown attribute {words[i]!r} in {line}")
    pattern, sep, actions_text = rest.partition(" actions ")
    assert sep, line
    parts = [p.strip() for p in pattern.split(" / ")]
    assert parts[-1] == "end", line
    items = []
    for part in parts[:-1]:
        w = part.split()
        item = Item(w[0])
        j = 1
        while j < len(w):
            name, op, text = w[j], w[j + 1], w[j + 2]
            j += 3
            width = FIELD_WIDTH[(item.name, name)]
            full = (1 << width) - 1
            f = item.fields.setdefault(name, Field())
            v = _value(item.name, name, text)
            if op == "is":
                f.spec, f.mask = v, full
            elif op == "spec":
                f.spec = v
                if f.mask == 0:
                    f.mask = full
            elif op == "mask":
                f.mask = v
            elif op == "last":
                f.last = v
            elif op == "prefix":
                f.mask = full ^ ((1 << (width - v)) - 1)
            else:
                raise AssertionError(f"unknown operator {op!r} in {line}")
        items.append(item)
    acts = [a.strip() for a in actions_text.split(" / ")]
    assert acts[-1] == "end", line
    actions = [(a.split()[0], a.split()[1:]) for a in acts[:-1]]
    return Rule(line, group, priority, transfer, items, actions)


def _item_matches(item: Item, p: Packet) -> bool:
    def all_fields(values: dict[str, Optional[int]]) -> bool:
        return all(f.matches(values.get(n)) for n, f in item.fields.items())

    n = item.name
    if n == "represented_port":
        return all_fields({"ethdev_port_id": p.in_port})
    if n == "port_id":
        return all_fields({"id": p.in_port})
    if n == "eth":
        return all_fields({"src": p.eth_src, "dst": p.eth_dst, "type": p.ethertype})
    if n == "arp_eth_ipv4":
        return p.ethertype == ARP and all_fields({"sha": p.arp_sha, "spa": p.arp_spa})
    if n in ("ipv4", "ipv6"):
        if p.ethertype != (IPV4 if n == "ipv4" else IPV6):
            return False
        return all_fields({"src": p.ip_src, "dst": p.ip_dst, "proto": p.proto})
    if n in ("tcp", "udp", "sctp"):
        if p.proto != {"tcp": TCP, "udp": UDP, "sctp": SCTP}[n]:
            return False
        return all_fields({"src": p.sport, "dst": p.dport})
    if n in ("icmp", "icmp6"):
        if p.proto != (ICMP if n == "icmp" else ICMPV6):
            return False
        return all_fields({"type": p.icmp_type, "code": p.icmp_code})
    if n == "icmp6_nd_na":
        if p.proto != ICMPV6 or p.icmp_type != 136:
            return False
        return all_fields({"target_addr": p.nd_target})
    raise AssertionError(f"interpreter does not know item {n}")


def rule_matches(rule: Rule, p: Packet) -> bool:
    # Items are layered: an L4 item needs the IP item before it (always emitted by the
    # compiler, checked here so that a malformed pattern cannot pass by accident).
    names = [i.name for i in rule.items]
    for l4 in ("tcp", "udp", "sctp", "icmp", "icmp6", "icmp6_nd_na"):
        if l4 in names:
            assert any(n in names for n in ("ipv4", "ipv6")), rule.line
    return all(_item_matches(i, p) for i in rule.items)


class Switch:
    """The rules of one proxy port, by group."""

    def __init__(self, lines: list[str], software_port: Optional[int] = None) -> None:
        self.groups: dict[int, list[Rule]] = {}
        self.software_port = software_port
        for line in lines:
            r = parse_line(line)
            assert r.transfer, line
            self.groups.setdefault(r.group, []).append(r)

    def run(self, p: Packet) -> Verdict:
        group = 0
        for _ in range(64):
            rules = self.groups.get(group)
            if not rules:
                raise GroupMiss(f"group {group} does not exist ({p.describe()})")
            matching = [r for r in rules if rule_matches(r, p)]
            if not matching:
                raise GroupMiss(f"no rule of group {group} matches {p.describe()}")
            best = min(r.priority for r in matching)
            top = [r for r in matching if r.priority == best]
            if len(top) > 1:
                raise Ambiguous(
                    f"{len(top)} rules at priority {best} of group {group} match "
                    f"{p.describe()}:\n" + "\n".join(r.line for r in top)
                )
            jumped = False
            for name, args in top[0].actions:
                if name == "count":
                    continue
                if name == "jump":
                    assert args[0] == "group"
                    group, jumped = int(args[1]), True
                    break
                if name == "drop":
                    return ("drop", None)
                if name == "represented_port":
                    return ("port", int(args[1]))
                if name == "port_representor":
                    return ("software", int(args[1]))
                if name == "port_id":
                    n = int(args[1])
                    return ("software", None) if n == self.software_port else ("port", n)
                raise AssertionError(f"unknown action {name}")
            assert jumped, f"rule without a fate: {top[0].line}"
        raise AssertionError("more than 64 jumps: a loop")


# --- the oracle ----------------------------------------------------------------------------


@dataclass
class ORule:
    egress: bool
    v4: bool
    proto: Optional[int]
    dst: Optional[tuple[int, int]]
    src: Optional[tuple[int, int]]
    icmp_type: Optional[int]
    icmp_code: Optional[int]
    remotes: Optional[list[Any]]  # None = any


@dataclass
class OPort:
    id: str
    rep: int
    macs: list[int]
    v4: list[tuple[int, Any]]  # (mac, IPv4Network)
    v6: list[tuple[int, Any]]  # (mac, IPv6Network), link-local included
    filtered: bool
    stateful: bool
    network: Optional[str]
    rules: list[ORule]


PROTOCOLS = {"tcp": TCP, "udp": UDP, "sctp": SCTP, "icmp": ICMP, "gre": 47, "icmpv6": ICMPV6}


def _link_local(mac: int) -> Any:
    b = mac.to_bytes(6, "big")
    eui = bytes([b[0] ^ 2, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return ipaddress.IPv6Network((int.from_bytes(b"\xfe\x80" + bytes(6) + eui, "big"), 128))


class Oracle:
    """Neutron's allow-list semantics plus the implicit allowances of the OpenFlow backend,
    for a model in the documented shape with representors in ``bindings``."""

    def __init__(self, model: dict[str, Any], profile: str, forward: str, uplink: int) -> None:
        self.arp_item = profile in ("generic", "full")
        self.nd_items = profile in ("generic", "full")
        self.sctp_item = profile != "mlx5"
        self.forward = forward
        self.uplink = uplink
        groups = model["security_groups"]
        # Security groups and address groups are separate id spaces.
        members: dict[str, list[Any]] = {}
        address_groups = {
            gid: [ipaddress.ip_network(a, strict=False) for a in addrs]
            for gid, addrs in model.get("address_groups", {}).items()
        }
        for p in model["ports"]:
            for gid in p.get("security_groups", []):
                for ip in fixed_ips(p):
                    members.setdefault(gid, []).append(ipaddress.ip_network(ip))
                for pair in p.get("allowed_address_pairs", []):
                    members.setdefault(gid, []).append(
                        ipaddress.ip_network(pair["ip_address"], strict=False)
                    )
        self.ports: list[OPort] = []
        for p in model["ports"]:
            mac = mac_int(p["mac_address"])
            pairs = [
                (
                    mac_int(a.get("mac_address", p["mac_address"])),
                    ipaddress.ip_network(a["ip_address"], strict=False),
                )
                for a in p.get("allowed_address_pairs", [])
            ]
            binds = [(mac, ipaddress.ip_network(ip)) for ip in fixed_ips(p)] + pairs
            macs = sorted({mac} | {m for m, _ in pairs})
            sgs = p.get("security_groups", [])
            rules = []
            for gid in sgs:
                for r in groups[gid]["rules"]:
                    rules.append(self._rule(r, members, address_groups))
            self.ports.append(
                OPort(
                    id=p["id"],
                    rep=model["bindings"][p["id"]]["representor"],
                    macs=macs,
                    v4=[(m, n) for m, n in binds if n.version == 4],
                    v6=[(m, n) for m, n in binds if n.version == 6] + [(mac, _link_local(mac))],
                    filtered=p.get("port_security_enabled", True)
                    and not p.get("device_owner", "").startswith("network:"),
                    stateful=all(groups[g].get("stateful", True) for g in sgs),
                    network=p.get("network_id"),
                    rules=rules,
                )
            )
        self.owners: dict[int, list[OPort]] = {}
        for port in self.ports:
            for m in port.macs:
                self.owners.setdefault(m, []).append(port)

    @staticmethod
    def _rule(
        r: dict[str, Any], members: dict[str, list[Any]], address_groups: dict[str, list[Any]]
    ) -> ORule:
        v4 = r["ethertype"] == "IPv4"
        proto_name = r.get("protocol")
        proto = None if proto_name is None else PROTOCOLS.get(proto_name, proto_name)
        if proto == ICMP and not v4:
            proto = ICMPV6
        remotes: Optional[list[Any]] = None
        if "remote_ip_prefix" in r:
            remotes = [ipaddress.ip_network(r["remote_ip_prefix"], strict=False)]
        elif "remote_group_id" in r:
            remotes = members.get(r["remote_group_id"], [])
        elif "remote_address_group_id" in r:
            remotes = address_groups.get(r["remote_address_group_id"], [])
        if remotes is not None:
            remotes = [n for n in remotes if n.version == (4 if v4 else 6)]
        dst = icmp_type = icmp_code = None
        if proto in (TCP, UDP, SCTP) and r.get("port_range_min") is not None:
            dst = (r["port_range_min"], r["port_range_max"])
        if proto in (ICMP, ICMPV6) and r.get("port_range_min") is not None:
            icmp_type, icmp_code = r["port_range_min"], r.get("port_range_max")
        return ORule(
            r["direction"] == "egress", v4, proto, dst, None, icmp_type, icmp_code, remotes
        )

    # -- helpers
    @staticmethod
    def _in(addr: Optional[int], net: Any) -> bool:
        return addr is not None and int(net.network_address) <= addr <= int(net.broadcast_address)

    def _rule_match(self, r: ORule, p: Packet, *, coarse: bool) -> bool:
        if p.ethertype != (IPV4 if r.v4 else IPV6):
            return False
        remote = p.ip_dst if r.egress else p.ip_src
        if r.remotes is not None and not any(self._in(remote, n) for n in r.remotes):
            return False
        if r.proto is None:
            return True
        if p.proto != r.proto:
            return False
        if coarse:
            return True
        if r.dst is not None and not (p.dport is not None and r.dst[0] <= p.dport <= r.dst[1]):
            return False
        if r.icmp_type is not None:
            if p.icmp_type != r.icmp_type:
                return False
            if r.icmp_code is not None and p.icmp_code != r.icmp_code:
                return False
        return True

    def _rules(self, port: OPort, p: Packet, egress: bool) -> str:
        """'accept', 'software' or 'drop'."""
        rules = [r for r in port.rules if r.egress == egress]
        exact = [r for r in rules if not (r.proto == SCTP and r.dst and not self.sctp_item)]
        fallback = [r for r in rules if r not in exact]
        if any(self._rule_match(r, p, coarse=False) for r in exact):
            return "accept"
        if any(self._rule_match(r, p, coarse=True) for r in fallback):
            return "software"
        return "drop"

    def _udp(self, p: Packet, v4: bool, sport: int, dport: int) -> bool:
        return (
            p.ethertype == (IPV4 if v4 else IPV6)
            and p.proto == UDP
            and p.sport == sport
            and p.dport == dport
        )

    def _icmp6(self, p: Packet, types: tuple[int, ...]) -> bool:
        return p.ethertype == IPV6 and p.proto == ICMPV6 and p.icmp_type in types

    # -- pipelines
    def run(self, p: Packet) -> Verdict:
        if p.in_port == self.uplink:
            owners = self.owners.get(p.eth_dst, [])
            if len(owners) != 1:
                return ("software", self.uplink)
            q = owners[0]
            return self.ingress(q, p) if q.filtered else ("port", q.rep)
        src = next(port for port in self.ports if port.rep == p.in_port)
        if not src.filtered:
            return self.accepted(src, p)
        return self.egress(src, p)

    def accepted(self, port: OPort, p: Packet) -> Verdict:
        if self.forward == "software":
            return ("software", port.rep)
        if p.eth_dst >> 40 & 1:
            return ("software", port.rep)
        local = [
            q
            for q in self.ports
            if q.id != port.id and q.network == port.network and p.eth_dst in q.macs
        ]
        if local:
            owners = self.owners[p.eth_dst]
            if len(owners) != 1:
                return ("software", port.rep)
            q = owners[0]
            return self.ingress(q, p) if q.filtered else ("port", q.rep)
        return ("port", self.uplink)

    def egress(self, port: OPort, p: Packet) -> Verdict:
        sw: Verdict = ("software", port.rep)
        if (
            self._udp(p, True, 67, 68)
            or self._udp(p, False, 547, 546)
            or self._icmp6(p, ROUTER_ONLY)
        ):
            return ("drop", None)
        if p.ethertype == ARP:
            if not self.arp_item:
                return sw
            ok = p.arp_sha == p.eth_src and any(
                m == p.eth_src and self._in(p.arp_spa, n) for m, n in port.v4
            )
            return self.accepted(port, p) if ok else ("drop", None)
        if p.ethertype == RARP:
            return self.accepted(port, p) if p.eth_src in port.macs else ("drop", None)
        dhcp4, dhcp6 = self._udp(p, True, 68, 67), self._udp(p, False, 546, 547)
        if dhcp4 or dhcp6:
            binds = port.v4 if dhcp4 else port.v6
            ok = (dhcp4 and p.ip_src == 0 and p.eth_src in port.macs) or any(
                m == p.eth_src and self._in(p.ip_src, n) for m, n in binds
            )
            return self.accepted(port, p) if ok else ("drop", None)
        if self._icmp6(p, ND_FROM_UNSPECIFIED) and p.ip_src == 0 and p.eth_src in port.macs:
            return self.accepted(port, p)
        if self._icmp6(p, ND_SOURCE_CHECKED) and any(
            m == p.eth_src and self._in(p.ip_src, n) for m, n in port.v6
        ):
            return self.accepted(port, p)
        if self._icmp6(p, (136,)):
            if not self.nd_items:
                return sw
            # Only code 0 is an advertisement (RFC 4861 §7.1.2; Open vSwitch parses no
            # target otherwise): the ``icmp6_nd_na`` item alone would match any code.
            if p.icmp_code == 0 and any(
                m == p.eth_src and self._in(p.nd_target, n) for m, n in port.v6
            ):
                return self.accepted(port, p)
            return ("drop", None)
        if self._icmp6(p, ND_SOURCE_CHECKED):
            return ("drop", None)
        if p.ethertype in (IPV4, IPV6):
            binds = port.v4 if p.ethertype == IPV4 else port.v6
            if any(m == p.eth_src and self._in(p.ip_src, n) for m, n in binds):
                if port.stateful:
                    return sw
                fate = self._rules(port, p, egress=True)
                if fate == "accept":
                    return self.accepted(port, p)
                return sw if fate == "software" else ("drop", None)
        return ("drop", None)

    def ingress(self, port: OPort, p: Packet) -> Verdict:
        to_vm: Verdict = ("port", port.rep)
        sw: Verdict = ("software", self.uplink)
        if p.ethertype == ARP:
            return to_vm
        if self._udp(p, True, 67, 68) or self._udp(p, False, 547, 546):
            return to_vm
        if self._icmp6(p, ND_INGRESS):
            return to_vm
        if p.ethertype in (IPV4, IPV6):
            if port.stateful:
                return sw
            fate = self._rules(port, p, egress=False)
            return {"accept": to_vm, "software": sw, "drop": ("drop", None)}[fate]
        return ("drop", None)


# --- random models and packets ------------------------------------------------------------


def _random_rule(rng: random.Random, group_ids: list[str]) -> dict[str, Any]:
    v4 = rng.random() < 0.7
    rule: dict[str, Any] = {
        "direction": rng.choice(["ingress", "egress"]),
        "ethertype": "IPv4" if v4 else "IPv6",
    }
    proto = rng.choice([None, "tcp", "tcp", "udp", "udp", "sctp", "icmp", "gre"])
    if proto is not None:
        rule["protocol"] = proto
    if proto in ("tcp", "udp", "sctp") and rng.random() < 0.8:
        lo = rng.choice([1, 22, 80, 443, 1000, 1024, 5000, 8080, 32768, 65535])
        hi = lo if rng.random() < 0.4 else min(65535, lo + rng.choice([1, 7, 99, 1000, 30000]))
        rule["port_range_min"], rule["port_range_max"] = lo, hi
    if proto == "icmp" and rng.random() < 0.7:
        rule["port_range_min"] = rng.choice([0, 3, 8, 128, 129] if v4 else [128, 129, 1, 3])
        if rng.random() < 0.5:
            rule["port_range_max"] = rng.choice([0, 1])
    r = rng.random()
    if r < 0.3:
        if v4:
            rule["remote_ip_prefix"] = rng.choice(
                ["10.0.0.0/8", "10.0.1.0/24", "10.0.1.12/32", "192.0.2.0/25", "10.0.0.0/23"]
            )
        else:
            rule["remote_ip_prefix"] = rng.choice(
                ["2001:db8::/32", "2001:db8:1::/64", "2001:db8:1::12/128"]
            )
    elif r < 0.45 and group_ids:
        rule["remote_group_id"] = rng.choice(group_ids)
    return rule


def random_model(rng: random.Random, n_ports: Optional[int] = None) -> dict[str, Any]:
    """A model in the documented shape with 1-5 ports on two networks, representors in
    ``bindings``; mostly stateless groups (the offloaded ones), some stateful."""
    gids = [f"g{i}" for i in range(rng.randint(1, 3))]
    groups = {}
    for gid in gids:
        groups[gid] = {
            "stateful": rng.random() < 0.25,
            "rules": [_random_rule(rng, gids) for _ in range(rng.randint(0, 6))],
        }
    ports = []
    n = n_ports or rng.randint(1, 5)
    for i in range(n):
        net = rng.choice([1, 1, 2])
        port: dict[str, Any] = {
            "id": f"p{i}",
            "mac_address": f"fa:16:3e:00:{net:02x}:{i + 16:02x}",
            "fixed_ips": [f"10.0.{net}.{i + 10}"]
            + ([f"2001:db8:{net}::{i + 10:x}"] if rng.random() < 0.6 else []),
            "network_id": f"net{net}",
            "device_owner": "compute:nova",
        }
        r = rng.random()
        if r < 0.3:
            pair: dict[str, Any] = {
                "ip_address": rng.choice(
                    [f"10.0.{net}.128/30", f"10.0.{net}.200", f"2001:db8:{net}::80/126"]
                )
            }
            if rng.random() < 0.5:
                pair["mac_address"] = f"fa:16:3e:99:{net:02x}:{i + 16:02x}"
            port["allowed_address_pairs"] = [pair]
        stateful = rng.random() < 0.3
        candidates = [g for g in gids if groups[g]["stateful"] == stateful]
        port["security_groups"] = rng.sample(candidates, k=rng.randint(0, len(candidates)))
        if rng.random() < 0.1:
            port["port_security_enabled"] = False
            port["security_groups"] = []
        ports.append(port)
    return {
        "security_groups": groups,
        "ports": ports,
        "bindings": {p["id"]: {"representor": i + 1} for i, p in enumerate(ports)},
    }


def random_packet(rng: random.Random, model: dict[str, Any], uplink: int) -> Packet:
    ports = model["ports"]
    reps = model["bindings"]
    all_macs = [mac_int(p["mac_address"]) for p in ports] + [
        mac_int(a["mac_address"])
        for p in ports
        for a in p.get("allowed_address_pairs", [])
        if "mac_address" in a
    ]
    from_vm = rng.random() < 0.7
    src_port = rng.choice(ports)
    own_macs = [mac_int(src_port["mac_address"])] + [
        mac_int(a["mac_address"])
        for a in src_port.get("allowed_address_pairs", [])
        if "mac_address" in a
    ]
    if from_vm:
        in_port = reps[src_port["id"]]["representor"]
        eth_src = (
            rng.choice(own_macs) if rng.random() < 0.85 else rng.choice([*all_macs, 0x020000000001])
        )
    else:
        in_port = uplink
        eth_src = 0x020000000099
    r = rng.random()
    eth_dst = (
        rng.choice(all_macs)
        if r < 0.6
        else 0xFFFFFFFFFFFF
        if r < 0.7
        else 0x333300000001
        if r < 0.75
        else 0x020000000077
    )
    kind = rng.choice(["ipv4", "ipv4", "ipv4", "ipv6", "ipv6", "arp", "rarp", "other"])
    types = {"ipv4": IPV4, "ipv6": IPV6, "arp": ARP, "rarp": RARP, "other": 0x88CC}
    p = Packet(in_port, eth_src, eth_dst, types[kind])

    def addr(v4: bool, own: bool) -> int:
        pool = []
        for q in ports if not own else [src_port]:
            pool.extend(fixed_ips(q))
            for a in q.get("allowed_address_pairs", []):
                net = ipaddress.ip_network(a["ip_address"], strict=False)
                pool.append(str(net.network_address + rng.randrange(net.num_addresses)))
        pool = [a for a in pool if (":" in a) != v4]
        extra = (
            ["10.0.1.12", "192.0.2.7", "198.51.100.1", "10.0.0.1", "0.0.0.0"]
            if v4
            else ["2001:db8:1::12", "2001:db8:2::1", "2001:db8:1::5", "fe80::1", "::"]
        )
        if own and not v4:
            extra.append(str(_link_local(eth_src).network_address))
        if pool and rng.random() < 0.75:
            return ip_int(rng.choice(pool))
        return ip_int(rng.choice(extra))

    if kind == "arp":
        p.arp_sha = eth_src if rng.random() < 0.85 else 0x020000000005
        p.arp_spa = addr(True, from_vm)
        return p
    if kind in ("other", "rarp"):
        return p
    v4 = kind == "ipv4"
    p.ip_src = addr(v4, from_vm)
    p.ip_dst = addr(v4, not from_vm)
    p.proto = rng.choice(
        [TCP, TCP, UDP, UDP, SCTP, 47, ICMP if v4 else ICMPV6, ICMP if v4 else ICMPV6]
    )
    if p.proto in (TCP, UDP, SCTP):
        interesting = [0, 1, 21, 22, 23, 67, 68, 79, 80, 81, 443, 546, 547, 999, 1000]
        interesting += [1007, 1024, 1025, 2024, 5000, 5099, 5100, 8080, 32767, 32768, 65535]
        for rules in (g["rules"] for g in model["security_groups"].values()):
            for rule in rules:
                if rule.get("port_range_min") is not None:
                    lo, hi = rule["port_range_min"], rule.get("port_range_max", 65535)
                    interesting += [max(lo - 1, 0), lo, hi, min(hi + 1, 65535)]
        p.sport = rng.choice([*interesting, rng.randrange(65536)])
        p.dport = rng.choice([*interesting, rng.randrange(65536)])
    elif p.proto in (ICMP, ICMPV6):
        p.icmp_type = rng.choice([0, 3, 8, 128, 129, 130, 131, 133, 134, 135, 136, 137, 143])
        p.icmp_code = rng.choice([0, 0, 1])
        if p.icmp_type == 136 and not v4:
            p.nd_target = addr(False, from_vm) if rng.random() < 0.7 else ip_int("2001:db8::dead")
    return p
