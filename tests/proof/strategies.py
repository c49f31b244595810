"""hypothesis strategies for the differential fuzzing: valid models and packets near their
edges.

Models are small (1-3 ports, 1-3 groups, up to 5 rules each) over a small address universe so
that rules, bindings and packets collide often. Packets are biased: at least half of those
sent by a VM come from one of its bindings (they pass anti-spoofing and reach the rules), and
ports and addresses are drawn from the edges of the rules' ranges and prefixes (min-1, min,
max, max+1; network address, last address, one outside on each side).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import strategies as st

V4_HOSTS = [f"10.0.0.{i}" for i in range(1, 9)] + ["10.0.1.1", "192.0.2.10"]
V6_HOSTS = [f"2001:db8::{i}" for i in range(1, 9)] + ["2001:db8:1::1"]
FAR_V4 = ["203.0.113.7", "198.51.100.0", "10.255.255.255", "169.254.169.254", "0.0.0.0"]
FAR_V6 = ["2001:db8:ffff::1", "fe80::1", "ff02::1", "::"]
V4_LENGTHS = [0, 8, 16, 24, 25, 28, 30, 31, 32]
V6_LENGTHS = [0, 32, 64, 120, 126, 127, 128]
EDGE_PORTS = [0, 1, 21, 22, 23, 53, 67, 68, 80, 443, 546, 547, 1023, 1024, 32768, 65534, 65535]
PROTOCOLS: list[Any] = [
    None, "tcp", "tcp", "udp", "udp", "sctp", "icmp", "icmp", 47, 50, 58, 33, 136, 0, 112,
]  # fmt: skip
OTHER_MAC = "fa:16:3e:ee:ee:ee"
ROUTER_MAC = "00:00:5e:00:01:01"
BCAST = "ff:ff:ff:ff:ff:ff"


def link_local(mac: str) -> str:
    b = [int(x, 16) for x in mac.split(":")]
    b[0] ^= 2
    eui = bytes([b[0], b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]])
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + eui))


@st.composite
def prefixes(draw: st.DrawFn, v6: bool) -> str:
    base = draw(st.sampled_from((V6_HOSTS + FAR_V6[:1]) if v6 else (V4_HOSTS + FAR_V4[:3])))
    length = draw(st.sampled_from(V6_LENGTHS if v6 else V4_LENGTHS))
    return str(ipaddress.ip_network(f"{base}/{length}", strict=False))


@st.composite
def port_range(draw: st.DrawFn) -> tuple[int, int]:
    a = draw(st.sampled_from(EDGE_PORTS) | st.integers(0, 65535))
    b = draw(st.sampled_from([a, a, a + 1, a + 100, 65535]) | st.integers(0, 65535))
    b = min(b, 65535)
    return (a, b) if a <= b else (b, a)


@st.composite
def rules(draw: st.DrawFn, group_ids: list[str]) -> dict[str, Any]:
    ethertype = draw(st.sampled_from(["IPv4", "IPv6"]))
    v6 = ethertype == "IPv6"
    r: dict[str, Any] = {
        "direction": draw(st.sampled_from(["ingress", "egress"])),
        "ethertype": ethertype,
    }
    proto = draw(st.sampled_from(PROTOCOLS))
    if proto is not None:
        r["protocol"] = proto
    if proto in ("tcp", "udp", "sctp") and draw(st.integers(0, 3)) > 0:
        lo, hi = draw(port_range())
        r["port_range_min"], r["port_range_max"] = lo, hi
    if proto == "icmp" and draw(st.booleans()):
        r["port_range_min"] = draw(st.sampled_from([0, 3, 8, 128, 129, 133, 255]))
        if draw(st.booleans()):
            r["port_range_max"] = draw(st.sampled_from([0, 1, 4, 255]))
    remote = draw(st.sampled_from(["none", "none", "prefix", "prefix", "group", "address"]))
    if remote == "prefix":
        r["remote_ip_prefix"] = draw(prefixes(v6))
    elif remote == "group":
        r["remote_group_id"] = draw(st.sampled_from(group_ids))
    elif remote == "address":
        r["remote_address_group_id"] = "ag"
    return r


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    group_ids = [f"g{i}" for i in range(draw(st.sampled_from([1, 2, 2, 3, 3])))]
    stateful = {g: draw(st.booleans()) for g in group_ids}
    if len(group_ids) > 1 and draw(st.booleans()):
        stateful[group_ids[0]], stateful[group_ids[1]] = True, False  # ports of both kinds
    groups = {
        g: {
            "stateful": stateful[g],
            "rules": draw(st.lists(rules(group_ids), min_size=1, max_size=5)),
        }
        for g in group_ids
    }
    n_networks = draw(st.integers(1, 2))
    ports = []
    for i in range(draw(st.integers(1, 3))):
        mac = f"fa:16:3e:00:{i:02x}:01"
        fixed = draw(st.lists(st.sampled_from(V4_HOSTS), max_size=2, unique=True))
        fixed += draw(st.lists(st.sampled_from(V6_HOSTS), max_size=2, unique=True))
        pairs = []
        for j in range(draw(st.integers(0, 2))):
            v6 = draw(st.booleans())
            host = draw(st.sampled_from(V6_HOSTS if v6 else V4_HOSTS))
            length = draw(st.sampled_from([120, 127, 128] if v6 else [28, 30, 31, 32]))
            pair: dict[str, Any] = {
                "ip_address": str(ipaddress.ip_network(f"{host}/{length}", strict=False))
            }
            if draw(st.booleans()):
                # Its own MAC, or now and then the MAC of another port (both ports' ingress
                # pipelines then see frames for it).
                others = [f"fa:16:3e:00:{k:02x}:01" for k in range(i)]
                own = f"fa:16:3e:00:{i:02x}:{j + 2:02x}"
                pair["mac_address"] = draw(st.sampled_from([own, own, own, *others]))
            pairs.append(pair)
        want = draw(st.sampled_from(sorted(set(stateful.values()))))
        mine = [g for g in group_ids if stateful[g] == want]
        no_groups = draw(st.integers(0, 7)) == 0
        port: dict[str, Any] = {
            "id": f"p{i}",
            "mac_address": mac,
            "fixed_ips": fixed,
            "allowed_address_pairs": pairs,
            "security_groups": []
            if no_groups
            else draw(st.lists(st.sampled_from(mine), min_size=1, unique=True)),
            "device_owner": "network:dhcp" if draw(st.integers(0, 11)) == 0 else "compute:nova",
            "network_id": f"n{draw(st.integers(1, n_networks))}",
            "ofport": i + 1,
        }
        if draw(st.integers(0, 11)) == 0:
            port["port_security_enabled"] = False
        ports.append(port)
    address_group = draw(
        st.lists(st.one_of(prefixes(False), prefixes(True)), min_size=1, max_size=3, unique=True)
    )
    return {
        "security_groups": groups,
        "address_groups": {"ag": address_group},
        "networks": {f"n{k}": {"local_vlan": 10 + k} for k in range(1, n_networks + 1)},
        "ports": ports,
    }


def _edges(net: str) -> list[str]:
    n = ipaddress.ip_network(net)
    out = [n.network_address, n.broadcast_address]
    if int(n.network_address) > 0:
        out.append(n.network_address - 1)
    if int(n.broadcast_address) < (2**n.max_prefixlen - 1):
        out.append(n.broadcast_address + 1)
    return [str(a) for a in out]


def candidate_addresses(model: dict[str, Any], v6: bool) -> list[str]:
    """Addresses worth trying: every address and prefix edge the model mentions."""
    out: set[str] = set(FAR_V6 if v6 else FAR_V4)
    for p in model["ports"]:
        for ip in p["fixed_ips"]:
            out.add(ip)
        for pair in p["allowed_address_pairs"]:
            out.update(_edges(pair["ip_address"]))
        out.add(link_local(p["mac_address"]))
        for pair in p["allowed_address_pairs"]:
            if "mac_address" in pair:
                out.add(link_local(pair["mac_address"]))
    for g in model["security_groups"].values():
        for r in g["rules"]:
            if "remote_ip_prefix" in r:
                out.update(_edges(r["remote_ip_prefix"]))
    for net in model["address_groups"]["ag"]:
        out.update(_edges(net))
    return sorted(a for a in out if (":" in a) == v6)


def _bindings(port: dict[str, Any], v6: bool) -> list[tuple[str, str]]:
    """(MAC, address) pairs the port may send from, as the model states them."""
    mac = port["mac_address"]
    out = [(mac, ip) for ip in port["fixed_ips"] if (":" in ip) == v6]
    for pair in port["allowed_address_pairs"]:
        net = ipaddress.ip_network(pair["ip_address"])
        if (net.version == 6) == v6:
            pmac = pair.get("mac_address", mac)
            out += [(pmac, str(a)) for a in {net.network_address, net.broadcast_address}]
    if v6:
        # Only the port's own MAC has an implicit link-local address (a pair's MAC needs an
        # explicit pair); candidate_addresses() still offers the pairs' ones, to be dropped.
        out.append((mac, link_local(mac)))
    return out


def _remote_ends(model: dict[str, Any], rule: dict[str, Any], v6: bool, inside: bool) -> list[str]:
    """Addresses at a rule's remote: its prefix edges, its group's members, its address
    group's edges (only those inside with ``inside``)."""
    nets: list[str] = []
    if "remote_ip_prefix" in rule:
        nets = [rule["remote_ip_prefix"]]
    elif "remote_address_group_id" in rule:
        nets = [n for n in model["address_groups"]["ag"] if (":" in n) == v6]
    elif "remote_group_id" in rule:
        for p in model["ports"]:
            if rule["remote_group_id"] in p["security_groups"]:
                nets += [ip for ip in p["fixed_ips"] if (":" in ip) == v6]
                nets += [
                    a["ip_address"]
                    for a in p["allowed_address_pairs"]
                    if (":" in a["ip_address"]) == v6
                ]
    out: list[str] = []
    for net in nets:
        n = ipaddress.ip_network(net)
        if inside:
            out += [str(n.network_address), str(n.broadcast_address)]
        else:
            out += _edges(net)
    return sorted(set(out))


def _macs(port: dict[str, Any]) -> list[str]:
    mac = port["mac_address"]
    return sorted({mac} | {p.get("mac_address", mac) for p in port["allowed_address_pairs"]})


@st.composite
def packets(
    draw: st.DrawFn,
    model: dict[str, Any],
    port: dict[str, Any] | None = None,
    direction: str | None = None,
) -> tuple[str, str, str, str]:
    """(port id, direction, packet, ct state); the port and direction are drawn if not given."""
    if port is None:
        port = draw(st.sampled_from(model["ports"]))
    if direction is None:
        direction = draw(st.sampled_from(["ingress", "egress"]))
    egress = direction == "egress"
    ct = draw(st.sampled_from(["new"] * 5 + ["est", "est", "est,rpl", "rel", "rel,rpl", "inv"]))
    kind = draw(st.sampled_from(["rule"] * 5 + ["ip", "arp", "nd", "nd", "dhcp", "other"]))
    my_rules = [
        r
        for g in port["security_groups"]
        for r in model["security_groups"][g]["rules"]
        if r["direction"] == direction
    ]
    rule = draw(st.sampled_from(my_rules)) if kind == "rule" and my_rules else None
    if kind == "other":
        # RARP (0x8035) passes from the port's MACs (a migrated guest announcing itself).
        dl_type = draw(st.sampled_from(["0x88cc", "0x0842", "0x88b5", "0x8035", "0x8035"]))
        mac = draw(st.sampled_from([*_macs(port), *([OTHER_MAC] if egress else [])]))
        ends = f"dl_src={mac}" if egress else f"dl_dst={mac}"
        return port["id"], direction, f"dl_type={dl_type},{ends}", ct
    v6 = (
        rule["ethertype"] == "IPv6"
        if rule is not None
        else (kind == "nd" or (kind != "arp" and draw(st.booleans())))
    )
    # The VM's end: mostly a binding (passes anti-spoofing), sometimes anything.
    bindings = _bindings(port, v6)
    if egress and bindings and draw(st.integers(0, 3)) > 0:
        mac, local = draw(st.sampled_from(bindings))
    else:
        # Ingress frames go to one of the port's MACs: flooded frames (broadcast, unknown
        # unicast) are a known gap of the pipeline, pinned by the verdict-table tests.
        mac = draw(st.sampled_from([*_macs(port), *([OTHER_MAC] if egress else [])]))
        local = draw(st.sampled_from(candidate_addresses(model, v6)))
    remote = draw(st.sampled_from(candidate_addresses(model, v6)))
    if kind == "arp":
        sha = mac if draw(st.integers(0, 3)) > 0 else OTHER_MAC
        spa, tpa = (local, remote) if egress else (remote, local)
        macs = f"dl_src={mac},dl_dst={BCAST}" if egress else f"dl_dst={mac}"
        op = draw(st.sampled_from([1, 2]))
        return (
            port["id"],
            direction,
            f"arp,{macs},arp_op={op},arp_sha={sha},arp_spa={spa},arp_tpa={tpa}",
            ct,
        )
    src, dst = (local, remote) if egress else (remote, local)
    fam = ("ipv6_src", "ipv6_dst") if v6 else ("nw_src", "nw_dst")
    if egress:
        dl_dst = draw(st.sampled_from([ROUTER_MAC, ROUTER_MAC, BCAST, "33:33:00:00:00:01"]))
        head = f"dl_src={mac},dl_dst={dl_dst}"
    else:
        head = f"dl_dst={mac}"
    head += f",{fam[0]}={src},{fam[1]}={dst}"
    if kind == "dhcp":
        sport, dport = draw(
            st.sampled_from([(546, 547), (547, 546)] if v6 else [(68, 67), (67, 68)])
        )
        return (
            port["id"],
            direction,
            f"udp{'6' if v6 else ''},{head},udp_src={sport},udp_dst={dport}",
            ct,
        )
    if kind == "nd":
        t = draw(st.sampled_from([128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 143, 1]))
        code = draw(st.sampled_from([0, 0, 0, 1]))
        pkt = f"icmp6,{head},icmpv6_type={t},icmpv6_code={code}"
        if t in (135, 136) and code == 0:
            pkt += f",nd_target={draw(st.sampled_from(candidate_addresses(model, True)))}"
        return port["id"], direction, pkt, ct
    # "rule" and "ip": a protocol and transport fields, near the rule when there is one.
    proto = rule.get("protocol") if rule is not None else draw(st.sampled_from(PROTOCOLS))
    if rule is not None and draw(st.integers(0, 5)) == 0:
        proto = draw(st.sampled_from(PROTOCOLS))  # the same ends, another protocol
    # Half the packets aimed at a rule are inside it (remote, ports, type and code); the
    # others sit on or just outside its edges.
    inside = rule is not None and draw(st.booleans())
    if rule is not None and draw(st.integers(0, 5)) > 0:
        ends = _remote_ends(model, rule, v6, inside)
        if ends:
            remote = draw(st.sampled_from(ends))
            src, dst = (local, remote) if egress else (remote, local)
            head = head.rsplit(f",{fam[0]}=", 1)[0] + f",{fam[0]}={src},{fam[1]}={dst}"
    number = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 58 if v6 else 1}.get(proto, proto)  # type: ignore[arg-type]
    if number is None:
        number = draw(st.sampled_from([6, 17, 1 if not v6 else 58, 47]))
    if number in (6, 17, 132):
        name = {6: "tcp", 17: "udp", 132: "sctp"}[number]
        port_rule = rule is not None and rule.get("protocol") == name
        lo = rule.get("port_range_min", 0) if port_rule else 0  # type: ignore[union-attr]
        hi = rule.get("port_range_max", lo) if port_rule else 65535  # type: ignore[union-attr]
        near = [lo - 1, lo, hi, hi + 1, (lo + hi) // 2]
        if inside:
            dport = draw(st.sampled_from([lo, hi]) | st.integers(lo, hi))
        else:
            dport = draw(
                st.sampled_from([p for p in near if 0 <= p <= 65535]) | st.integers(0, 65535)
            )
        sport = draw(st.sampled_from([0, 22, 80, 40000, 65535]))
        kw = name + ("6" if v6 else "")
        return port["id"], direction, f"{kw},{head},{name}_src={sport},{name}_dst={dport}", ct
    if (number == 1 and not v6) or (number == 58 and v6):
        icmp_rule = rule is not None and rule.get("protocol") == "icmp"
        t0 = min(rule.get("port_range_min", 8), 255) if icmp_rule else 8  # type: ignore[union-attr]
        c0 = min(rule.get("port_range_max", 0), 255) if icmp_rule else 0  # type: ignore[union-attr]
        if inside:
            t = t0 if icmp_rule and "port_range_min" in rule else draw(st.integers(0, 255))  # type: ignore[operator]
            c = c0 if icmp_rule and "port_range_max" in rule else draw(st.integers(0, 3))  # type: ignore[operator]
        else:
            t = draw(st.sampled_from([t0, t0, max(t0 - 1, 0), min(t0 + 1, 255)]))
            c = draw(st.sampled_from([c0, c0, max(c0 - 1, 0), min(c0 + 1, 255)]))
        kw, p = ("icmp6", "icmpv6") if v6 else ("icmp", "icmp")
        pkt = f"{kw},{head},{p}_type={t},{p}_code={c}"
        if v6 and t in (135, 136) and c == 0:
            pkt += f",nd_target={draw(st.sampled_from(candidate_addresses(model, True)))}"
        return port["id"], direction, pkt, ct
    return port["id"], direction, f"{'ipv6' if v6 else 'ip'},{head},nw_proto={number}", ct


@st.composite
def east_west(draw: st.DrawFn, model: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """(source port, destination port, packet, ct state) between two ports of one network:
    the packet crosses the source's egress and the destination's ingress pipeline."""
    pairs = [
        (a, b)
        for a in model["ports"]
        for b in model["ports"]
        if a is not b and a["network_id"] == b["network_id"]
    ]
    if not pairs:
        return None

    def stateful(port: dict[str, Any]) -> bool:
        return all(model["security_groups"][g]["stateful"] for g in port["security_groups"])

    # Pairs of a stateful and a stateless port count thrice: the receiver must decide with
    # its own state (none) and rules, not with the sender's conntrack pass.
    pairs += [(a, b) for a, b in pairs if stateful(a) != stateful(b)] * 2
    src, dst = draw(st.sampled_from(pairs))
    _, _, packet, _ = draw(packets(model, src, "egress"))
    ct = draw(st.sampled_from(["new", "new", "est", "est,rpl", "est,rpl", "rel", "rel,rpl", "inv"]))
    dst_mac = draw(st.sampled_from(_macs(dst)))
    fields = [f for f in packet.split(",") if not f.startswith("dl_dst=")]
    return src["id"], dst["id"], ",".join([*fields, f"dl_dst={dst_mac}"]), ct
