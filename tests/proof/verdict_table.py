"""The hand-written verdict table: model fragments, packets and the verdict each must get.

Written from the semantics (DESIGN.md sections 1-3, docs/proof.md), independently of the evaluator
and of the compiler; ``test_verdict_table.py`` runs every case against both. A case is
``(id, model, port, direction, packet, ct, expected)`` with ``expected`` as
``"verdict:kind"`` (the kind is the evaluator's category of reason; the switch only says
allow or drop). Packets are ``ovs-ofctl`` flows; fields left out are filled from the port
(its MAC and first address at the VM's end, the router MAC 00:00:5e:00:01:01 at the other).
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

VM_MAC = "fa:16:3e:00:00:01"
VM4 = "10.0.0.5"
VM6 = "2001:db8::5"
VM_LL = "fe80::f816:3eff:fe00:1"  # EUI-64 of VM_MAC
PEER_MAC = "fa:16:3e:00:00:02"
PEER4 = "10.0.0.6"
PEER6 = "2001:db8::6"
PAIR_MAC = "fa:16:3e:00:00:99"
PAIR_LL = "fe80::f816:3eff:fe00:99"
OTHER_MAC = "fa:16:3e:00:00:77"
METADATA = "169.254.169.254"
BCAST = "ff:ff:ff:ff:ff:ff"
V6NET = "2001:db8:100::/48"


def rule(direction: str, ethertype: str = "IPv4", **fields: Any) -> dict[str, Any]:
    return {"direction": direction, "ethertype": ethertype, **fields}


def fragment(rules: list[dict[str, Any]], *, stateful: bool = True, **vm: Any) -> dict[str, Any]:
    """Port ``vm`` (ofport 1) and ``peer`` (ofport 2) in group ``sg`` on one network."""
    ports = [
        {
            "id": "vm",
            "mac_address": VM_MAC,
            "fixed_ips": [VM4, VM6],
            "security_groups": ["sg"],
            "device_owner": "compute:nova",
            "network_id": "net",
            "ofport": 1,
        },
        {
            "id": "peer",
            "mac_address": PEER_MAC,
            "fixed_ips": [PEER4, PEER6],
            "security_groups": ["sg"],
            "device_owner": "compute:nova",
            "network_id": "net",
            "ofport": 2,
        },
    ]
    ports[0].update(vm)
    return {
        "security_groups": {"sg": {"stateful": stateful, "rules": rules}},
        "address_groups": {"ag": ["192.0.2.0/24", "2001:db8:a::/64"]},
        "networks": {"net": {"local_vlan": 7}},
        "ports": ports,
    }


ALL = [
    rule("ingress"),
    rule("ingress", "IPv6"),
    rule("egress"),
    rule("egress", "IPv6"),
]

MODELS: dict[str, dict[str, Any]] = {
    "protocols": fragment(
        [
            rule("ingress", protocol="tcp", port_range_min=22, port_range_max=22),
            rule("ingress", protocol="tcp", port_range_min=1000, port_range_max=2000),
            rule("ingress", protocol="udp", port_range_min=53, port_range_max=53),
            rule("ingress", protocol="udp", port_range_min=5000, port_range_max=5099),
            rule("ingress", protocol="sctp", port_range_min=3868, port_range_max=3868),
            rule("ingress", protocol="icmp", port_range_min=8),
            rule("ingress", protocol="icmp", port_range_min=3, port_range_max=4),
            rule("ingress", "IPv6", protocol="tcp", port_range_min=443, port_range_max=443),
            rule("ingress", "IPv6", protocol="icmp", port_range_min=128),
            rule("ingress", protocol="gre"),
            rule("ingress", protocol="dccp"),
            rule("ingress", "IPv6", protocol="udp", port_range_min=1, port_range_max=65535),
            rule("ingress", "IPv6", protocol=50),
            rule("egress", protocol="tcp", port_range_min=80, port_range_max=80),
        ]
    ),
    "remotes": fragment(
        [
            rule("ingress", protocol="tcp", port_range_min=22, remote_ip_prefix="10.1.0.0/16"),
            rule("ingress", "IPv6", protocol="tcp", port_range_min=22, remote_ip_prefix=V6NET),
            rule("ingress", protocol="tcp", port_range_min=5432, remote_group_id="sg"),
            rule("ingress", "IPv6", protocol="tcp", port_range_min=5432, remote_group_id="sg"),
            rule("ingress", protocol="tcp", port_range_min=3306, remote_address_group_id="ag"),
            rule(
                "ingress", "IPv6", protocol="tcp", port_range_min=3306, remote_address_group_id="ag"
            ),
            rule("egress", protocol="udp", port_range_min=53, remote_ip_prefix="192.0.2.53/32"),
            rule("egress", protocol="tcp", remote_ip_prefix="10.2.0.0/15"),
        ]
    ),
    "empty_stateless": fragment([], stateful=False),
    "empty_stateful": fragment([], stateful=True),
    "metadata_stateless": fragment(
        [
            rule("egress", protocol="tcp", port_range_min=80, remote_ip_prefix=f"{METADATA}/32"),
            rule("ingress", protocol="tcp", remote_ip_prefix=f"{METADATA}/32"),
        ],
        stateful=False,
    ),
    "metadata_stateful": fragment(
        [rule("egress", protocol="tcp", port_range_min=80, remote_ip_prefix=f"{METADATA}/32")]
    ),
    "open": fragment(copy.deepcopy(ALL)),
    "ssh_stateful": fragment([rule("ingress", protocol="tcp", port_range_min=22)]),
    "ssh_stateless": fragment([rule("ingress", protocol="tcp", port_range_min=22)], stateful=False),
    "ssh_stateless_both": fragment(
        [rule("ingress", protocol="tcp", port_range_min=22), rule("egress", protocol="tcp")],
        stateful=False,
    ),
    "pairs": fragment(
        copy.deepcopy(ALL),
        allowed_address_pairs=[
            {"ip_address": "10.0.0.100/30", "mac_address": PAIR_MAC},
            {"ip_address": "2001:db8::100"},
        ],
    ),
    "pair_link_local": fragment(
        copy.deepcopy(ALL),
        allowed_address_pairs=[{"ip_address": PAIR_LL, "mac_address": PAIR_MAC}],
    ),
    "no_port_security": fragment([], port_security_enabled=False, security_groups=[]),
    "trusted": fragment([], device_owner="network:dhcp", security_groups=[]),
}


class Case(NamedTuple):
    id: str
    model: str
    port: str
    direction: str
    packet: str
    ct: str | None
    expected: str  # "allow:rule", "drop:anti-spoofing", ...


def _cases() -> list[Case]:
    out: list[Case] = []

    def add(model: str, direction: str, items: list[tuple[str, str, str, str | None]]) -> None:
        for cid, packet, expected, ct in items:
            short = "in" if direction == "ingress" else "out"
            out.append(Case(f"{model}-{short}-{cid}", model, "vm", direction, packet, ct, expected))

    src = "nw_src=198.51.100.1"
    src6 = "ipv6_src=2001:db8:ffff::1"
    add("protocols", "ingress", [
        ("tcp-21", f"tcp,{src},tcp_dst=21", "drop:default-drop", None),
        ("tcp-22", f"tcp,{src},tcp_dst=22", "allow:rule", None),
        ("tcp-23", f"tcp,{src},tcp_dst=23", "drop:default-drop", None),
        ("tcp-999", f"tcp,{src},tcp_dst=999", "drop:default-drop", None),
        ("tcp-1000", f"tcp,{src},tcp_dst=1000", "allow:rule", None),
        ("tcp-2000", f"tcp,{src},tcp_dst=2000", "allow:rule", None),
        ("tcp-2001", f"tcp,{src},tcp_dst=2001", "drop:default-drop", None),
        ("udp-52", f"udp,{src},udp_dst=52", "drop:default-drop", None),
        ("udp-53", f"udp,{src},udp_dst=53", "allow:rule", None),
        ("udp-54", f"udp,{src},udp_dst=54", "drop:default-drop", None),
        ("udp-4999", f"udp,{src},udp_dst=4999", "drop:default-drop", None),
        ("udp-5000", f"udp,{src},udp_dst=5000", "allow:rule", None),
        ("udp-5099", f"udp,{src},udp_dst=5099", "allow:rule", None),
        ("udp-5100", f"udp,{src},udp_dst=5100", "drop:default-drop", None),
        ("udp-22-is-not-tcp", f"udp,{src},udp_dst=22", "drop:default-drop", None),
        ("sctp-3867", f"sctp,{src},sctp_dst=3867", "drop:default-drop", None),
        ("sctp-3868", f"sctp,{src},sctp_dst=3868", "allow:rule", None),
        ("sctp-3869", f"sctp,{src},sctp_dst=3869", "drop:default-drop", None),
        ("icmp-8-0", f"icmp,{src},icmp_type=8,icmp_code=0", "allow:rule", None),
        ("icmp-8-255", f"icmp,{src},icmp_type=8,icmp_code=255", "allow:rule", None),
        ("icmp-0-0", f"icmp,{src},icmp_type=0,icmp_code=0", "drop:default-drop", None),
        ("icmp-3-4", f"icmp,{src},icmp_type=3,icmp_code=4", "allow:rule", None),
        ("icmp-3-3", f"icmp,{src},icmp_type=3,icmp_code=3", "drop:default-drop", None),
        ("icmp-3-5", f"icmp,{src},icmp_type=3,icmp_code=5", "drop:default-drop", None),
        ("icmp-4-4", f"icmp,{src},icmp_type=4,icmp_code=4", "drop:default-drop", None),
        ("tcp6-442", f"tcp6,{src6},tcp_dst=442", "drop:default-drop", None),
        ("tcp6-443", f"tcp6,{src6},tcp_dst=443", "allow:rule", None),
        ("tcp6-444", f"tcp6,{src6},tcp_dst=444", "drop:default-drop", None),
        ("tcp4-443-is-v6-only", f"tcp,{src},tcp_dst=443", "drop:default-drop", None),
        ("tcp6-22-is-v4-only", f"tcp6,{src6},tcp_dst=22", "drop:default-drop", None),
        ("icmp6-128", f"icmp6,{src6},icmpv6_type=128,icmpv6_code=0", "allow:rule", None),
        ("icmp6-129", f"icmp6,{src6},icmpv6_type=129,icmpv6_code=0", "drop:default-drop", None),
        ("gre", f"ip,{src},nw_proto=47", "allow:rule", None),
        ("gre6-is-v4-only", f"ipv6,{src6},nw_proto=47", "drop:default-drop", None),
        ("dccp", f"ip,{src},nw_proto=33", "allow:rule", None),
        ("udplite-no-rule", f"ip,{src},nw_proto=136", "drop:default-drop", None),
        ("udp6-0", f"udp6,{src6},udp_dst=0", "drop:default-drop", None),
        ("udp6-1", f"udp6,{src6},udp_dst=1", "allow:rule", None),
        ("udp6-65535", f"udp6,{src6},udp_dst=65535", "allow:rule", None),
        ("esp6", f"ipv6,{src6},nw_proto=50", "allow:rule", None),
        ("esp4-is-v6-only", f"ip,{src},nw_proto=50", "drop:default-drop", None),
    ])  # fmt: skip
    add("protocols", "egress", [
        ("tcp-80", "tcp,nw_dst=203.0.113.1,tcp_dst=80", "allow:rule", None),
        ("tcp-81", "tcp,nw_dst=203.0.113.1,tcp_dst=81", "drop:default-drop", None),
        ("udp-80", "udp,nw_dst=203.0.113.1,udp_dst=80", "drop:default-drop", None),
        ("tcp6-80-is-v4-only", "tcp6,ipv6_dst=2001:db8:ffff::1,tcp_dst=80", "drop:default-drop",
         None),
    ])  # fmt: skip
    add("remotes", "ingress", [
        ("prefix-below", "tcp,nw_src=10.0.255.255,tcp_dst=22", "drop:default-drop", None),
        ("prefix-first", "tcp,nw_src=10.1.0.0,tcp_dst=22", "allow:rule", None),
        ("prefix-last", "tcp,nw_src=10.1.255.255,tcp_dst=22", "allow:rule", None),
        ("prefix-above", "tcp,nw_src=10.2.0.0,tcp_dst=22", "drop:default-drop", None),
        ("prefix6-below", "tcp6,ipv6_src=2001:db8:ff:ffff:ffff:ffff:ffff:ffff,tcp_dst=22",
         "drop:default-drop", None),
        ("prefix6-first", "tcp6,ipv6_src=2001:db8:100::,tcp_dst=22", "allow:rule", None),
        ("prefix6-last", "tcp6,ipv6_src=2001:db8:100:ffff:ffff:ffff:ffff:ffff,tcp_dst=22",
         "allow:rule", None),
        ("prefix6-above", "tcp6,ipv6_src=2001:db8:101::,tcp_dst=22", "drop:default-drop", None),
        ("group-member", f"tcp,nw_src={PEER4},tcp_dst=5432", "allow:rule", None),
        ("group-member-self", f"tcp,nw_src={VM4},tcp_dst=5432", "allow:rule", None),
        ("group-non-member", "tcp,nw_src=10.0.0.7,tcp_dst=5432", "drop:default-drop", None),
        ("group-member-other-port", f"tcp,nw_src={PEER4},tcp_dst=5433", "drop:default-drop", None),
        ("group6-member", f"tcp6,ipv6_src={PEER6},tcp_dst=5432", "allow:rule", None),
        ("group6-non-member", "tcp6,ipv6_src=2001:db8::7,tcp_dst=5432", "drop:default-drop", None),
        ("address-group-first", "tcp,nw_src=192.0.2.0,tcp_dst=3306", "allow:rule", None),
        ("address-group-last", "tcp,nw_src=192.0.2.255,tcp_dst=3306", "allow:rule", None),
        ("address-group-below", "tcp,nw_src=192.0.1.255,tcp_dst=3306", "drop:default-drop", None),
        ("address-group-above", "tcp,nw_src=192.0.3.0,tcp_dst=3306", "drop:default-drop", None),
        ("address-group6-in", "tcp6,ipv6_src=2001:db8:a::1,tcp_dst=3306", "allow:rule", None),
        ("address-group6-out", "tcp6,ipv6_src=2001:db8:b::1,tcp_dst=3306", "drop:default-drop",
         None),
    ])  # fmt: skip
    add("remotes", "egress", [
        ("dst-host", "udp,nw_dst=192.0.2.53,udp_dst=53", "allow:rule", None),
        ("dst-host-next", "udp,nw_dst=192.0.2.54,udp_dst=53", "drop:default-drop", None),
        ("dst-prefix-below", "tcp,nw_dst=10.1.255.255,tcp_dst=1", "drop:default-drop", None),
        ("dst-prefix-first", "tcp,nw_dst=10.2.0.0,tcp_dst=1", "allow:rule", None),
        ("dst-prefix-last", "tcp,nw_dst=10.3.255.255,tcp_dst=1", "allow:rule", None),
        ("dst-prefix-above", "tcp,nw_dst=10.4.0.0,tcp_dst=1", "drop:default-drop", None),
    ])  # fmt: skip
    dhcp_discover = (
        f"udp,dl_dst={BCAST},nw_src=0.0.0.0,nw_dst=255.255.255.255,udp_src=68,udp_dst=67"
    )
    dhcp6_solicit = (
        f"udp6,dl_dst=33:33:00:01:00:02,ipv6_src={VM_LL},ipv6_dst=ff02::1:2,udp_src=546,udp_dst=547"
    )
    add("empty_stateless", "egress", [
        ("dhcp-discover", dhcp_discover, "allow:implicit", None),
        ("dhcp-request", "udp,nw_dst=10.0.0.2,udp_src=68,udp_dst=67", "allow:implicit", None),
        ("dhcp-spoofed-mac", f"{dhcp_discover},dl_src={OTHER_MAC}", "drop:anti-spoofing", None),
        ("dhcp6-solicit", dhcp6_solicit, "allow:implicit", None),
        ("dhcp6-spoofed-mac", f"{dhcp6_solicit},dl_src={OTHER_MAC}", "drop:anti-spoofing", None),
        # DHCP client traffic is no way around IP anti-spoofing (Neutron's test_ip_spoofing).
        ("dhcp-spoofed-ip", "udp,nw_src=10.0.0.9,nw_dst=10.0.0.2,udp_src=68,udp_dst=67",
         "drop:anti-spoofing", None),
        ("dhcp-peer-ip", f"udp,nw_src={PEER4},nw_dst=10.0.0.2,udp_src=68,udp_dst=67",
         "drop:anti-spoofing", None),
        ("dhcp6-own-address", f"udp6,ipv6_src={VM6},ipv6_dst=ff02::1:2,udp_src=546,udp_dst=547",
         "allow:implicit", None),
        ("dhcp6-spoofed-ip", "udp6,ipv6_src=2001:db8::9,ipv6_dst=ff02::1:2,udp_src=546,"
         "udp_dst=547", "drop:anti-spoofing", None),
        ("dhcp6-from-unspecified", "udp6,ipv6_src=::,ipv6_dst=ff02::1:2,udp_src=546,udp_dst=547",
         "drop:anti-spoofing", None),
        ("rarp", f"rarp,dl_dst={BCAST}", "allow:implicit", None),
        ("rarp-foreign-mac", f"rarp,dl_src={OTHER_MAC},dl_dst={BCAST}", "drop:anti-spoofing",
         None),
        ("redirect-needs-rule", f"icmp6,ipv6_src={VM_LL},icmpv6_type=137", "drop:default-drop",
         None),
        ("rs-from-unspecified", "icmp6,ipv6_src=::,ipv6_dst=ff02::2,icmpv6_type=133",
         "allow:implicit", None),
        ("dns-needs-rule", "udp,nw_dst=10.0.0.2,udp_dst=53", "drop:default-drop", None),
        ("metadata-needs-rule", f"tcp,nw_dst={METADATA},tcp_dst=80", "drop:default-drop", None),
        ("arp", f"arp,arp_spa={VM4},arp_tpa=10.0.0.1", "allow:implicit", None),
        ("lldp", "dl_type=0x88cc,dl_dst=01:80:c2:00:00:0e", "drop:not-ip", None),
    ])  # fmt: skip
    add("empty_stateless", "ingress", [
        ("dhcp-offer", "udp,nw_src=10.0.0.2,udp_src=67,udp_dst=68", "allow:implicit", None),
        ("dhcp6-reply", "udp6,ipv6_src=fe80::1,ipv6_dst=fe80::f816:3eff:fe00:1,"
         "udp_src=547,udp_dst=546", "allow:implicit", None),
        ("tcp-22", "tcp,nw_src=10.0.0.6,tcp_dst=22", "drop:default-drop", None),
        ("reply-needs-rule", "tcp,nw_src=10.0.0.6,tcp_src=22,tcp_dst=40000",
         "drop:default-drop", "est,rpl"),
        ("arp", "arp,arp_spa=10.0.0.6", "allow:implicit", None),
        ("mld-query", "icmp6,ipv6_src=fe80::1,icmpv6_type=130", "allow:implicit", None),
        ("ra", "icmp6,ipv6_src=fe80::1,icmpv6_type=134", "allow:implicit", None),
        ("ns", f"icmp6,ipv6_src=fe80::1,icmpv6_type=135,nd_target={VM6}", "allow:implicit", None),
        ("na", "icmp6,ipv6_src=fe80::1,icmpv6_type=136,nd_target=fe80::1", "allow:implicit", None),
        # Only queries: other hosts' reports and done messages are not for the VM.
        ("mldv2-report", "icmp6,ipv6_src=fe80::1,icmpv6_type=143", "drop:default-drop", None),
        ("mld-report", "icmp6,ipv6_src=fe80::1,icmpv6_type=131", "drop:default-drop", None),
        ("mld-done", "icmp6,ipv6_src=fe80::1,icmpv6_type=132", "drop:default-drop", None),
        ("rarp", f"rarp,dl_dst={BCAST}", "drop:not-ip", None),
        ("rs-needs-rule", "icmp6,ipv6_src=fe80::1,icmpv6_type=133", "drop:default-drop", None),
        ("redirect-needs-rule", "icmp6,ipv6_src=fe80::1,icmpv6_type=137", "drop:default-drop",
         None),
        ("echo6-needs-rule", "icmp6,ipv6_src=fe80::1,icmpv6_type=128", "drop:default-drop", None),
        ("lldp", "dl_type=0x88cc", "drop:not-ip", None),
    ])  # fmt: skip
    add("empty_stateful", "egress", [
        ("dhcp-discover", dhcp_discover, "allow:implicit", None),
        ("dhcp6-solicit", dhcp6_solicit, "allow:implicit", None),
        ("metadata-needs-rule", f"tcp,nw_dst={METADATA},tcp_dst=80", "drop:default-drop", None),
    ])  # fmt: skip
    add("empty_stateful", "ingress", [
        ("dhcp-offer", "udp,nw_src=10.0.0.2,udp_src=67,udp_dst=68", "allow:implicit", None),
        ("tcp-22", "tcp,nw_src=10.0.0.6,tcp_dst=22", "drop:default-drop", None),
    ])  # fmt: skip
    add("metadata_stateless", "egress", [
        ("metadata", f"tcp,nw_dst={METADATA},tcp_dst=80", "allow:rule", None),
        ("metadata-81", f"tcp,nw_dst={METADATA},tcp_dst=81", "drop:default-drop", None),
        ("metadata-next-host", "tcp,nw_dst=169.254.169.253,tcp_dst=80", "drop:default-drop", None),
    ])  # fmt: skip
    add("metadata_stateless", "ingress", [
        ("metadata-reply", f"tcp,nw_src={METADATA},tcp_src=80,tcp_dst=40000", "allow:rule", None),
        ("other-reply", "tcp,nw_src=169.254.169.253,tcp_src=80,tcp_dst=40000",
         "drop:default-drop", None),
    ])  # fmt: skip
    add("metadata_stateful", "egress", [
        ("metadata", f"tcp,nw_dst={METADATA},tcp_dst=80", "allow:rule", None),
    ])  # fmt: skip
    add("metadata_stateful", "ingress", [
        ("metadata-reply", f"tcp,nw_src={METADATA},tcp_src=80,tcp_dst=40000",
         "allow:conntrack", "est,rpl"),
        ("metadata-new-from-server", f"tcp,nw_src={METADATA},tcp_src=80,tcp_dst=40000",
         "drop:default-drop", "new"),
    ])  # fmt: skip
    add("open", "egress", [
        ("own-ip", "tcp,nw_dst=203.0.113.1,tcp_dst=80", "allow:rule", None),
        ("spoofed-ip", "tcp,nw_src=10.0.0.9,nw_dst=203.0.113.1", "drop:anti-spoofing", None),
        ("peer-ip", f"tcp,nw_src={PEER4},nw_dst=203.0.113.1", "drop:anti-spoofing", None),
        ("spoofed-mac", f"tcp,dl_src={OTHER_MAC},nw_dst=203.0.113.1", "drop:anti-spoofing", None),
        ("own-ip6", "tcp6,ipv6_dst=2001:db8:ffff::1", "allow:rule", None),
        ("link-local", f"udp6,ipv6_src={VM_LL},ipv6_dst=fe80::1", "allow:rule", None),
        ("spoofed-ip6", "tcp6,ipv6_src=2001:db8::9,ipv6_dst=2001:db8:ffff::1",
         "drop:anti-spoofing", None),
        ("spoofed-link-local", "udp6,ipv6_src=fe80::1,ipv6_dst=fe80::2", "drop:anti-spoofing",
         None),
        ("arp", f"arp,arp_spa={VM4},arp_tpa=10.0.0.1", "allow:implicit", None),
        ("arp-reply", f"arp,arp_op=2,arp_spa={VM4},arp_tpa=10.0.0.6,dl_dst={PEER_MAC},"
         f"arp_tha={PEER_MAC}", "allow:implicit", None),
        ("arp-spoofed-spa", "arp,arp_spa=10.0.0.9", "drop:anti-spoofing", None),
        ("arp-peer-spa", f"arp,arp_spa={PEER4}", "drop:anti-spoofing", None),
        ("arp-spoofed-sha", f"arp,arp_spa={VM4},arp_sha={OTHER_MAC}", "drop:anti-spoofing",
         None),
        ("arp-spoofed-mac", f"arp,dl_src={OTHER_MAC},arp_spa={VM4}", "drop:anti-spoofing", None),
        ("arp-probe", "arp,arp_spa=0.0.0.0", "drop:anti-spoofing", None),
        ("ns", f"icmp6,ipv6_src={VM6},icmpv6_type=135,nd_target={PEER6}", "allow:implicit",
         None),
        ("ns-link-local", f"icmp6,ipv6_src={VM_LL},icmpv6_type=135,nd_target=fe80::1",
         "allow:implicit", None),
        ("ns-spoofed", f"icmp6,ipv6_src=2001:db8::9,icmpv6_type=135,nd_target={PEER6}",
         "drop:anti-spoofing", None),
        ("ns-wrong-mac", f"icmp6,dl_src={OTHER_MAC},ipv6_src={VM6},icmpv6_type=135,"
         f"nd_target={PEER6}", "drop:anti-spoofing", None),
        ("ns-dad", f"icmp6,ipv6_src=::,icmpv6_type=135,nd_target={VM6}", "allow:implicit", None),
        ("ns-dad-wrong-mac", f"icmp6,dl_src={OTHER_MAC},ipv6_src=::,icmpv6_type=135,"
         f"nd_target={VM6}", "drop:anti-spoofing", None),
        ("mldv2-dad", "icmp6,ipv6_src=::,ipv6_dst=ff02::16,icmpv6_type=143", "allow:implicit",
         None),
        ("rs-from-unspecified", "icmp6,ipv6_src=::,icmpv6_type=133", "allow:implicit", None),
        ("rs-from-unspecified-wrong-mac", f"icmp6,dl_src={OTHER_MAC},ipv6_src=::,"
         "icmpv6_type=133", "drop:anti-spoofing", None),
        ("rs", f"icmp6,ipv6_src={VM_LL},ipv6_dst=ff02::2,icmpv6_type=133", "allow:implicit",
         None),
        ("mld-report", f"icmp6,ipv6_src={VM_LL},icmpv6_type=131", "allow:implicit", None),
        ("na-own", f"icmp6,ipv6_src={VM6},icmpv6_type=136,nd_target={VM6}", "allow:implicit",
         None),
        ("na-link-local", f"icmp6,ipv6_src={VM_LL},icmpv6_type=136,nd_target={VM_LL}",
         "allow:implicit", None),
        ("na-peer-target", f"icmp6,ipv6_src={VM6},icmpv6_type=136,nd_target={PEER6}",
         "drop:anti-spoofing", None),
        ("na-wrong-mac", f"icmp6,dl_src={OTHER_MAC},ipv6_src={VM6},icmpv6_type=136,"
         f"nd_target={VM6}", "drop:anti-spoofing", None),
        ("ra", f"icmp6,ipv6_src={VM_LL},icmpv6_type=134", "drop:forbidden", None),
        ("redirect", f"icmp6,ipv6_src={VM_LL},icmpv6_type=137", "allow:rule", None),
        ("redirect-spoofed", "icmp6,ipv6_src=fe80::1,icmpv6_type=137", "drop:anti-spoofing",
         None),
        ("redirect-from-unspecified", "icmp6,ipv6_src=::,icmpv6_type=137", "drop:anti-spoofing",
         None),
        ("dhcp-server", "udp,nw_dst=10.0.0.6,udp_src=67,udp_dst=68", "drop:forbidden", None),
        ("dhcp6-server", f"udp6,ipv6_src={VM_LL},ipv6_dst=fe80::1,udp_src=547,udp_dst=546",
         "drop:forbidden", None),
        ("echo6", f"icmp6,ipv6_dst={PEER6},icmpv6_type=128", "allow:rule", None),
        ("lldp", "dl_type=0x88cc", "drop:not-ip", None),
    ])  # fmt: skip
    add("open", "ingress", [
        ("tcp", "tcp,nw_src=203.0.113.1,tcp_dst=80", "allow:rule", None),
        ("invalid", "tcp,nw_src=203.0.113.1,tcp_dst=80", "drop:conntrack", "inv"),
        ("established", "tcp,nw_src=203.0.113.1,tcp_dst=80", "allow:rule", "est"),
        ("reply", "tcp,nw_src=203.0.113.1,tcp_src=80", "allow:conntrack", "est,rpl"),
        ("related", "icmp,nw_src=203.0.113.1,icmp_type=3,icmp_code=4", "allow:conntrack", "rel"),
        ("invalid6", "tcp6,ipv6_src=2001:db8:ffff::1,tcp_dst=80", "drop:conntrack", "inv"),
        ("mld-query", "icmp6,ipv6_src=fe80::1,icmpv6_type=130", "allow:implicit", None),
        ("mldv2-report-by-rule", "icmp6,ipv6_src=fe80::1,icmpv6_type=143", "allow:rule", None),
    ])  # fmt: skip
    add("ssh_stateful", "ingress", [
        ("ssh", "tcp,nw_src=203.0.113.1,tcp_dst=22", "allow:rule", None),
        ("http", "tcp,nw_src=203.0.113.1,tcp_dst=80", "drop:default-drop", None),
        ("ssh-invalid", "tcp,nw_src=203.0.113.1,tcp_dst=22", "drop:conntrack", "inv"),
        ("ssh-established", "tcp,nw_src=203.0.113.1,tcp_dst=22", "allow:rule", "est"),
        ("http-established-no-rule", "tcp,nw_src=203.0.113.1,tcp_dst=80", "drop:conntrack",
         "est"),
        ("http-reply", "tcp,nw_src=203.0.113.1,tcp_src=80,tcp_dst=40000", "allow:conntrack",
         "est,rpl"),
        ("http-related", "icmp,nw_src=203.0.113.1,icmp_type=3,icmp_code=4", "allow:conntrack",
         "rel"),
        ("related-reply", "icmp,nw_src=203.0.113.1,icmp_type=11", "allow:conntrack", "rel,rpl"),
    ])  # fmt: skip
    add("ssh_stateful", "egress", [
        ("ssh-out-no-rule", "tcp,nw_dst=203.0.113.1,tcp_dst=22", "drop:default-drop", None),
        ("ssh-reply", "tcp,nw_dst=203.0.113.1,tcp_src=22,tcp_dst=40000", "allow:conntrack",
         "est,rpl"),
        ("spoofed-reply", "tcp,nw_src=10.0.0.9,nw_dst=203.0.113.1,tcp_src=22",
         "drop:anti-spoofing", "est,rpl"),
    ])  # fmt: skip
    add("ssh_stateless", "ingress", [
        ("ssh", "tcp,nw_src=203.0.113.1,tcp_dst=22", "allow:rule", None),
        ("ssh-state-ignored", "tcp,nw_src=203.0.113.1,tcp_dst=22", "allow:rule", "inv"),
    ])  # fmt: skip
    add("ssh_stateless", "egress", [
        ("ssh-reply-needs-rule", "tcp,nw_dst=203.0.113.1,tcp_src=22,tcp_dst=40000",
         "drop:default-drop", None),
        ("ssh-reply-needs-rule-ct", "tcp,nw_dst=203.0.113.1,tcp_src=22,tcp_dst=40000",
         "drop:default-drop", "est,rpl"),
    ])  # fmt: skip
    add("ssh_stateless_both", "egress", [
        ("ssh-reply", "tcp,nw_dst=203.0.113.1,tcp_src=22,tcp_dst=40000", "allow:rule", None),
    ])  # fmt: skip
    add("pairs", "egress", [
        ("pair-ip-pair-mac", f"tcp,dl_src={PAIR_MAC},nw_src=10.0.0.101", "allow:rule", None),
        ("pair-first", f"tcp,dl_src={PAIR_MAC},nw_src=10.0.0.100", "allow:rule", None),
        ("pair-last", f"tcp,dl_src={PAIR_MAC},nw_src=10.0.0.103", "allow:rule", None),
        ("pair-above", f"tcp,dl_src={PAIR_MAC},nw_src=10.0.0.104", "drop:anti-spoofing", None),
        ("pair-ip-port-mac", "tcp,nw_src=10.0.0.101", "drop:anti-spoofing", None),
        ("fixed-ip-pair-mac", f"tcp,dl_src={PAIR_MAC},nw_src={VM4}", "drop:anti-spoofing", None),
        ("fixed-ip", f"tcp,nw_src={VM4}", "allow:rule", None),
        ("pair6-port-mac", "tcp6,ipv6_src=2001:db8::100", "allow:rule", None),
        # A pair's MAC gets no implicit link-local address (as in Neutron's driver).
        ("pair-link-local", f"udp6,dl_src={PAIR_MAC},ipv6_src={PAIR_LL}", "drop:anti-spoofing",
         None),
        ("pair-arp", f"arp,dl_src={PAIR_MAC},arp_sha={PAIR_MAC},arp_spa=10.0.0.103",
         "allow:implicit", None),
        ("pair-arp-port-mac", "arp,arp_spa=10.0.0.103", "drop:anti-spoofing", None),
        ("pair-dhcp", f"udp,dl_src={PAIR_MAC},nw_src=0.0.0.0,udp_src=68,udp_dst=67",
         "allow:implicit", None),
        ("pair-dhcp-pair-ip", f"udp,dl_src={PAIR_MAC},nw_src=10.0.0.102,udp_src=68,udp_dst=67",
         "allow:implicit", None),
        ("pair-dhcp-pair-ip-port-mac", "udp,nw_src=10.0.0.102,udp_src=68,udp_dst=67",
         "drop:anti-spoofing", None),
        ("pair-rarp", f"rarp,dl_src={PAIR_MAC},dl_dst={BCAST}", "allow:implicit", None),
        ("pair-na", f"icmp6,dl_src={PAIR_MAC},ipv6_src={PAIR_LL},icmpv6_type=136,"
         f"nd_target={PAIR_LL}", "drop:anti-spoofing", None),
    ])  # fmt: skip
    add("pairs", "ingress", [
        ("to-pair-mac", f"tcp,dl_dst={PAIR_MAC},nw_src=203.0.113.1,nw_dst=10.0.0.102",
         "allow:rule", None),
    ])  # fmt: skip
    add("pair_link_local", "egress", [
        ("pair-link-local", f"udp6,dl_src={PAIR_MAC},ipv6_src={PAIR_LL}", "allow:rule", None),
        ("pair-na", f"icmp6,dl_src={PAIR_MAC},ipv6_src={PAIR_LL},icmpv6_type=136,"
         f"nd_target={PAIR_LL}", "allow:implicit", None),
        ("pair-dhcp6", f"udp6,dl_src={PAIR_MAC},ipv6_src={PAIR_LL},udp_src=546,udp_dst=547",
         "allow:implicit", None),
    ])  # fmt: skip
    add("no_port_security", "egress", [
        ("spoofed", f"tcp,dl_src={OTHER_MAC},nw_src=10.9.9.9", "allow:unfiltered", None),
        ("ra", "icmp6,icmpv6_type=134", "allow:unfiltered", None),
        ("dhcp-server", "udp,udp_src=67,udp_dst=68", "allow:unfiltered", None),
    ])  # fmt: skip
    add("no_port_security", "ingress", [
        ("tcp", "tcp,nw_src=203.0.113.1,tcp_dst=9", "allow:unfiltered", None),
        ("lldp", "dl_type=0x88cc", "allow:unfiltered", None),
    ])  # fmt: skip
    add("trusted", "egress", [
        ("dhcp-server", f"udp,dl_dst={VM_MAC.replace('01', '33')},nw_dst=10.0.0.33,"
         "udp_src=67,udp_dst=68", "allow:unfiltered", None),
        ("ra", f"icmp6,ipv6_src={VM_LL},icmpv6_type=134", "allow:unfiltered", None),
    ])  # fmt: skip
    add("trusted", "ingress", [
        ("dhcp-request", "udp,nw_src=10.0.0.6,udp_src=68,udp_dst=67", "allow:unfiltered", None),
        ("tcp", "tcp,nw_src=203.0.113.1,tcp_dst=9", "allow:unfiltered", None),
    ])  # fmt: skip
    return out


CASES: list[Case] = _cases()


# Between two ports of the host (east-west): the packet crosses the source's egress and the
# destination's ingress pipeline; both must allow it. ``vm`` is stateful (egress to anywhere),
# ``peer`` stateless (ingress TCP 22 only): replies and related packets of vm's connections
# still need a rule at peer (DESIGN.md §3).
MIXED: dict[str, Any] = {
    "security_groups": {
        "sf": {"stateful": True, "rules": [rule("egress"), rule("egress", "IPv6")]},
        "sl": {"stateful": False, "rules": [rule("ingress", protocol="tcp", port_range_min=22)]},
    },
    "networks": {"net": {"local_vlan": 7}},
    "ports": [
        {"id": "vm", "mac_address": VM_MAC, "fixed_ips": [VM4, VM6], "security_groups": ["sf"],
         "network_id": "net", "ofport": 1},
        {"id": "peer", "mac_address": PEER_MAC, "fixed_ips": [PEER4, PEER6],
         "security_groups": ["sl"], "network_id": "net", "ofport": 2},
    ],
}  # fmt: skip


class LocalCase(NamedTuple):
    id: str
    src: str
    dst: str
    packet: str
    ct: str | None
    expected: str  # "allow" or "drop"


_TO_PEER = f"dl_dst={PEER_MAC},nw_dst={PEER4}"
_TO_VM = f"dl_dst={VM_MAC},nw_dst={VM4}"
LOCAL_CASES = [
    LocalCase("ssh-new", "vm", "peer", f"tcp,{_TO_PEER},tcp_dst=22", "new", "allow"),
    LocalCase("ssh-reply-state", "vm", "peer", f"tcp,{_TO_PEER},tcp_dst=22", "est,rpl", "allow"),
    LocalCase("http-new", "vm", "peer", f"tcp,{_TO_PEER},tcp_dst=80", "new", "drop"),
    # Regression (found by the fuzzer): the sender's conntrack state leaked into the
    # stateless receiver's rule table, whose shared reply/related flows accepted these.
    LocalCase("http-reply-state", "vm", "peer", f"tcp,{_TO_PEER},tcp_dst=80", "est,rpl", "drop"),
    LocalCase("http-related", "vm", "peer", f"tcp,{_TO_PEER},tcp_dst=80", "rel", "drop"),
    LocalCase(
        "icmp-related", "vm", "peer", f"icmp,{_TO_PEER},icmp_type=3,icmp_code=4", "rel", "drop"
    ),
    LocalCase(
        "tcp6-reply-state",
        "vm",
        "peer",
        f"tcp6,dl_dst={PEER_MAC},ipv6_dst={PEER6},tcp_dst=80",
        "est,rpl",
        "drop",
    ),
    LocalCase("ssh-invalid", "vm", "peer", f"tcp,{_TO_PEER},tcp_dst=22", "inv", "drop"),
    LocalCase("back-no-egress-rule", "peer", "vm", f"tcp,{_TO_VM},tcp_src=22", "est,rpl", "drop"),
]
