use serde_json::json;

use super::*;
use crate::model::{parse_value, ParseOptions};

fn model(stateful: bool) -> Model {
    let v = json!({
        "security_groups": {
            "web": {"stateful": stateful, "rules": [
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
                 "port_range_min": 22, "port_range_max": 25, "remote_ip_prefix": "10.0.0.0/8"},
                {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
                 "port_range_min": 8},
                {"direction": "egress", "ethertype": "IPv6", "protocol": "udp",
                 "remote_group_id": "web"},
                {"direction": "ingress", "ethertype": "IPv4", "remote_address_group_id": "ag"}
            ]}
        },
        "address_groups": {"ag": ["192.0.2.0/24"]},
        "ports": [
            {"id": "vm", "mac_address": "fa:16:3e:00:00:01",
             "fixed_ips": ["10.0.0.5", "2001:db8::5"],
             "allowed_address_pairs": [{"ip_address": "10.1.0.0/30",
                                        "mac_address": "fa:16:3e:00:00:99"}],
             "security_groups": ["web"], "ofport": 1, "local_vlan": 1},
            {"id": "peer", "mac_address": "fa:16:3e:00:00:02", "fixed_ips": ["2001:db8::6"],
             "security_groups": ["web"], "ofport": 2, "local_vlan": 1},
            {"id": "dhcp", "mac_address": "fa:16:3e:00:00:03", "fixed_ips": ["10.0.0.2"],
             "device_owner": "network:dhcp", "ofport": 3, "local_vlan": 1},
            {"id": "open", "mac_address": "fa:16:3e:00:00:04", "fixed_ips": ["10.0.0.4"],
             "port_security_enabled": false, "ofport": 4, "local_vlan": 1}
        ]
    });
    parse_value(&v, &ParseOptions::default()).unwrap()
}

fn eval(m: &Model, port: &str, dir: Direction, packet: &str, ct: Option<&str>) -> Decision {
    let q = Query {
        port: port.into(),
        direction: dir,
        packet: PacketSpec::parse(packet).unwrap(),
        ct: ct.map(|c| CtState::parse(c).unwrap()),
    };
    evaluate(m, &q).unwrap()
}

use Direction::{Egress, Ingress};

#[test]
fn port_ranges_edges_and_remote_prefix() {
    let m = model(true);
    for (tp, ok) in [(21, false), (22, true), (25, true), (26, false)] {
        let d = eval(
            &m,
            "vm",
            Ingress,
            &format!("tcp,nw_src=10.9.9.9,tp_dst={tp}"),
            None,
        );
        assert_eq!(d.allowed(), ok, "tp_dst={tp}: {}", d.reason);
    }
    let d = eval(&m, "vm", Ingress, "tcp,nw_src=10.9.9.9,tp_dst=22", None);
    assert_eq!(
        d.reason,
        Reason::Rule(RuleRef {
            group: "web".into(),
            index: 0
        })
    );
    assert_eq!(
        d.rule_text.as_deref(),
        Some("ingress IPv4 tcp port 22-25 from 10.0.0.0/8")
    );
    assert!(!eval(&m, "vm", Ingress, "tcp,nw_src=11.0.0.1,tp_dst=22", None).allowed());
    // The address group admits anything from its prefix.
    let d = eval(&m, "vm", Ingress, "udp,nw_src=192.0.2.200,tp_dst=9", None);
    assert_eq!(d.reason.to_string(), "rule web[3]");
}

#[test]
fn icmp_type_and_code() {
    let m = model(false);
    assert!(eval(&m, "vm", Ingress, "icmp,icmp_type=8,icmp_code=3", None).allowed());
    assert!(!eval(&m, "vm", Ingress, "icmp,icmp_type=0", None).allowed());
}

#[test]
fn remote_group_members_include_the_port_itself() {
    let m = model(false);
    assert!(eval(
        &m,
        "vm",
        Egress,
        "udp6,ipv6_dst=2001:db8::6,tp_dst=53",
        None
    )
    .allowed());
    assert!(eval(
        &m,
        "vm",
        Egress,
        "udp6,ipv6_dst=2001:db8::5,tp_dst=53",
        None
    )
    .allowed());
    assert!(!eval(
        &m,
        "vm",
        Egress,
        "udp6,ipv6_dst=2001:db8::7,tp_dst=53",
        None
    )
    .allowed());
}

#[test]
fn anti_spoofing() {
    let m = model(false);
    let d = eval(
        &m,
        "vm",
        Egress,
        "udp6,dl_src=fa:16:3e:00:00:77,ipv6_dst=2001:db8::6",
        None,
    );
    assert_eq!(d.reason.kind(), "anti-spoofing");
    let d = eval(
        &m,
        "vm",
        Egress,
        "udp6,ipv6_src=2001:db8::9,ipv6_dst=2001:db8::6",
        None,
    );
    assert!(matches!(d.reason, Reason::Spoofed(Spoof::SourceIp(..))));
    // The pair's CIDR with the pair's MAC, not with the port's.
    let pair_mac = "dl_src=fa:16:3e:00:00:99";
    assert!(eval(
        &m,
        "vm",
        Egress,
        &format!("arp,{pair_mac},arp_spa=10.1.0.3"),
        None
    )
    .allowed());
    assert!(!eval(&m, "vm", Egress, "arp,arp_spa=10.1.0.3", None).allowed());
    assert!(!eval(&m, "vm", Egress, "arp,arp_spa=10.1.0.4", None).allowed());
    assert!(!eval(&m, "vm", Egress, "arp,arp_sha=fa:16:3e:00:00:99", None).allowed());
    // Link-local from the EUI-64 of the MAC.
    let ll = "fe80::f816:3eff:fe00:1";
    let d = eval(
        &m,
        "vm",
        Egress,
        &format!("icmp6,ipv6_src={ll},icmp_type=133"),
        None,
    );
    assert_eq!(d.reason, Reason::Implicit(Implicit::NdOut(133)));
    let d = eval(&m, "vm", Egress, "icmp6,ipv6_src=::,icmp_type=135", None);
    assert_eq!(d.reason, Reason::Implicit(Implicit::NdFromUnspecified(135)));
    // RFC 4861 §6.3.7: a host may solicit routers before it has an address.
    let d = eval(&m, "vm", Egress, "icmp6,ipv6_src=::,icmp_type=133", None);
    assert_eq!(d.reason, Reason::Implicit(Implicit::NdFromUnspecified(133)));
    let na = "icmp6,ipv6_src=2001:db8::5,icmp_type=136";
    assert!(eval(
        &m,
        "vm",
        Egress,
        &format!("{na},nd_target=2001:db8::5"),
        None
    )
    .allowed());
    assert!(!eval(
        &m,
        "vm",
        Egress,
        &format!("{na},nd_target=2001:db8::6"),
        None
    )
    .allowed());
    let d = eval(&m, "vm", Egress, "icmp6,icmp_type=134", None);
    assert_eq!(d.reason.kind(), "forbidden");
}

#[test]
fn redirects_meet_the_rules_and_mld_reports_are_not_delivered() {
    let m = model(true);
    // A redirect from the VM's own address is IP like any other: no rule allows it here.
    let d = eval(&m, "vm", Egress, "icmp6,icmp_type=137", None);
    assert_eq!(d.reason, Reason::DefaultDrop);
    let d = eval(
        &m,
        "vm",
        Egress,
        "icmp6,ipv6_src=2001:db8::9,icmp_type=137",
        None,
    );
    assert_eq!(d.reason.kind(), "anti-spoofing");
    let d = eval(
        &m,
        "vm",
        Ingress,
        "icmp6,ipv6_src=fe80::1,icmp_type=130",
        None,
    );
    assert_eq!(d.reason, Reason::Implicit(Implicit::NdIn(130)));
    for report in [131, 132, 143] {
        let d = eval(
            &m,
            "vm",
            Ingress,
            &format!("icmp6,ipv6_src=fe80::1,icmp_type={report}"),
            None,
        );
        assert_eq!(d.reason, Reason::DefaultDrop, "ICMPv6 {report}");
    }
}

#[test]
fn rarp_from_the_ports_macs_only() {
    let m = model(true);
    let d = eval(&m, "vm", Egress, "rarp", None);
    assert_eq!(d.reason, Reason::Implicit(Implicit::RarpOut));
    let d = eval(&m, "vm", Egress, "rarp,dl_src=fa:16:3e:00:00:99", None);
    assert_eq!(d.reason, Reason::Implicit(Implicit::RarpOut));
    let d = eval(&m, "vm", Egress, "rarp,dl_src=fa:16:3e:00:00:42", None);
    assert_eq!(d.reason.kind(), "anti-spoofing");
    // Not delivered to a VM (it is for the switches' MAC learning).
    let d = eval(&m, "vm", Ingress, "rarp,dl_dst=ff:ff:ff:ff:ff:ff", None);
    assert_eq!(d.reason, Reason::NotIp(ETH_RARP));
}

#[test]
fn pair_macs_get_no_implicit_link_local_address() {
    let m = model(true);
    let pair_ll = "fe80::f816:3eff:fe00:99";
    let d = eval(
        &m,
        "vm",
        Egress,
        &format!("icmp6,dl_src=fa:16:3e:00:00:99,ipv6_src={pair_ll},icmp_type=133"),
        None,
    );
    assert_eq!(d.reason.kind(), "anti-spoofing");
}

#[test]
fn dhcp_and_conntrack() {
    let m = model(true);
    let d = eval(
        &m,
        "vm",
        Egress,
        "udp,nw_src=0.0.0.0,tp_src=68,tp_dst=67",
        None,
    );
    assert_eq!(d.reason, Reason::Implicit(Implicit::DhcpClient));
    assert!(!d.conntrack);
    // From a permitted source (renewal) or a pair's, never from a forged one.
    let request = "udp,tp_src=68,tp_dst=67";
    assert!(eval(&m, "vm", Egress, request, None).allowed());
    let pair = "dl_src=fa:16:3e:00:00:99";
    for src in ["0.0.0.0", "10.1.0.2"] {
        let d = eval(
            &m,
            "vm",
            Egress,
            &format!("{request},{pair},nw_src={src}"),
            None,
        );
        assert_eq!(d.reason, Reason::Implicit(Implicit::DhcpClient), "{src}");
    }
    let d = eval(
        &m,
        "vm",
        Egress,
        &format!("{request},nw_src=10.0.0.9"),
        None,
    );
    assert_eq!(d.reason.kind(), "anti-spoofing");
    let d = eval(
        &m,
        "vm",
        Egress,
        &format!("{request},nw_src=10.1.0.2"),
        None,
    );
    assert_eq!(
        d.reason.kind(),
        "anti-spoofing",
        "a pair's address with the port's MAC"
    );
    let solicit = "udp6,tp_src=546,tp_dst=547";
    for src in ["fe80::f816:3eff:fe00:1", "2001:db8::5"] {
        let d = eval(&m, "vm", Egress, &format!("{solicit},ipv6_src={src}"), None);
        assert_eq!(d.reason, Reason::Implicit(Implicit::Dhcp6Client), "{src}");
    }
    for src in ["::", "2001:db8::6", "fe80::1"] {
        let d = eval(&m, "vm", Egress, &format!("{solicit},ipv6_src={src}"), None);
        assert_eq!(d.reason.kind(), "anti-spoofing", "{src}");
    }
    assert!(!eval(&m, "vm", Egress, "udp,tp_src=67,tp_dst=68", None).allowed());
    assert!(eval(&m, "vm", Ingress, "udp,tp_src=67,tp_dst=68", None).allowed());
    let ssh = "tcp,nw_src=10.9.9.9,tp_dst=22";
    assert!(!eval(&m, "vm", Ingress, ssh, Some("inv")).allowed());
    assert!(eval(&m, "vm", Ingress, ssh, Some("est")).allowed());
    let other = "tcp,nw_src=10.9.9.9,tp_dst=80";
    let d = eval(&m, "vm", Ingress, other, Some("est"));
    assert_eq!(d.reason, Reason::Conntrack(CtReason::NoRuleForEstablished));
    assert!(eval(&m, "vm", Ingress, other, Some("est,rpl")).allowed());
    assert!(eval(&m, "vm", Ingress, other, Some("rel")).allowed());
    // Stateless: the state does not matter, replies need a rule.
    let m = model(false);
    assert!(!eval(&m, "vm", Ingress, other, Some("est,rpl")).allowed());
}

#[test]
fn unfiltered_ports_and_other_traffic() {
    let m = model(true);
    let d = eval(&m, "dhcp", Egress, "udp,tp_src=67,tp_dst=68", None);
    assert_eq!(d.reason.kind(), "unfiltered");
    assert!(eval(&m, "open", Ingress, "tcp,tp_dst=1", None).allowed());
    assert_eq!(
        eval(&m, "vm", Ingress, "dl_type=0x88cc", None).reason,
        Reason::NotIp(0x88cc)
    );
    let d = eval(&m, "vm", Ingress, "arp,dl_dst=fa:16:3e:00:00:42", None);
    assert_eq!(d.reason.kind(), "not-for-port");
}

#[test]
fn ct_state_names() {
    assert_eq!(CtState::parse("+trk+est+rpl").unwrap(), CtState::Reply);
    assert_eq!(CtState::parse("reply").unwrap(), CtState::Reply);
    assert_eq!(CtState::parse("rel").unwrap(), CtState::Related);
    assert!(CtState::parse("new,rpl").is_err());
    assert!(CtState::parse("").is_err());
}
