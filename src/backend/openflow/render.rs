//! Rendering of flows and matches in `ovs-ofctl` syntax.

use ipnet::IpNet;

use super::Flow;
use crate::ir::{PortMask, RuleMatch};
use crate::model::{protocol, Direction, EtherType, Mac};

/// `ovs-ofctl add-flows` text: one flow per line, cookie first.
pub(super) fn ofctl(flows: &[Flow], cookie: u64) -> String {
    let mut out = String::with_capacity(flows.len() * 120);
    let mut lines = Lines::new(cookie);
    for f in flows {
        lines.push(&mut out, f);
    }
    out
}

/// Writes `add-flows` lines of flows sorted by table and priority: the head of a line
/// (`cookie=C,table=T,priority=P`) is the same for a whole run of flows, so it is rendered
/// once per run and copied, not rendered per flow.
pub(super) struct Lines {
    cookie: String,
    head: String,
    head_of: Option<(u8, u16)>,
}

impl Lines {
    pub(super) fn new(cookie: u64) -> Self {
        Lines {
            cookie: format!("{cookie:#x}"),
            head: String::new(),
            head_of: None,
        }
    }

    /// Appends `f`'s line, as [`flow_line`] writes it with no prefix and its actions.
    pub(super) fn push(&mut self, out: &mut String, f: &Flow) {
        if self.head_of != Some((f.table, f.priority)) {
            self.head.clear();
            self.head.push_str("cookie=");
            self.head.push_str(&self.cookie);
            self.head.push_str(",table=");
            f.table.put(&mut self.head);
            self.head.push_str(",priority=");
            f.priority.put(&mut self.head);
            self.head_of = Some((f.table, f.priority));
        }
        out.push_str(&self.head);
        if !f.matches.is_empty() {
            out.push(',');
            out.push_str(&f.matches);
        }
        out.push_str(" actions=");
        out.push_str(&f.actions);
        out.push('\n');
    }
}

/// Appends one flow line: `PREFIXcookie=C,table=T,priority=P[,MATCH][ actions=A]\n`.
pub(super) fn flow_line(out: &mut String, prefix: &str, cookie: &str, f: &Flow, actions: bool) {
    out.push_str(prefix);
    out.push_str("cookie=");
    out.push_str(cookie);
    out.push_str(",table=");
    f.table.put(out);
    out.push_str(",priority=");
    f.priority.put(out);
    if !f.matches.is_empty() {
        out.push(',');
        out.push_str(&f.matches);
    }
    if actions {
        out.push_str(" actions=");
        out.push_str(&f.actions);
    }
    out.push('\n');
}

/// A comma-separated match, built field by field in a fixed order so that equal matches
/// render to equal strings (the dedupe key).
#[derive(Debug, Default, Clone)]
pub(super) struct Match(pub(super) String);

impl Match {
    pub(super) fn new() -> Self {
        // Most matches are 30-80 characters: one allocation, no regrowth.
        Match(String::with_capacity(80))
    }

    /// A copy of this match with room to grow (a clone would be allocated to fit).
    pub(super) fn extended(&self) -> Self {
        let mut text = String::with_capacity(self.0.len() + 80);
        text.push_str(&self.0);
        Match(text)
    }

    /// A bare keyword such as `arp` or `tcp6`.
    pub(super) fn kw(mut self, keyword: &str) -> Self {
        self.sep();
        self.0.push_str(keyword);
        self
    }

    /// `field=value`.
    pub(super) fn f(mut self, field: &str, value: impl Value) -> Self {
        self.sep();
        self.0.push_str(field);
        self.0.push('=');
        value.put(&mut self.0);
        self
    }

    fn sep(&mut self) {
        if !self.0.is_empty() {
            self.0.push(',');
        }
    }

    pub(super) fn into_string(self) -> String {
        self.0
    }
}

/// A match value, appended as `ovs-ofctl` prints it. Flows are rendered by the tens of
/// thousands: numbers, MACs and IPv4 addresses are written directly rather than through
/// `fmt` (which dominated the compile's profile).
pub(super) trait Value {
    fn put(&self, out: &mut String);
}

impl Value for str {
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl<T: Value + ?Sized> Value for &T {
    fn put(&self, out: &mut String) {
        (**self).put(out);
    }
}

impl Value for String {
    fn put(&self, out: &mut String) {
        out.push_str(self);
    }
}

macro_rules! decimal_value {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn put(&self, out: &mut String) {
                decimal(out, u64::from(*self));
            }
        }
    )*};
}
decimal_value!(u8, u16, u32, u64);

/// Appends `n` in decimal. Most numbers are small (tables, priorities, ports, VLANs,
/// octets): a single digit is one push, and longer ones are pushed digit by digit from a
/// stack buffer (a checked `str` conversion and a `memcpy` per number were most of it).
pub(super) fn decimal(out: &mut String, mut n: u64) {
    if n < 10 {
        out.push(char::from(b'0' + n as u8));
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // ASCII digits: one copy, not a UTF-8 push per digit.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

impl Value for Mac {
    fn put(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

/// A prefix as a match value: see [`net`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Net<'a>(pub(super) &'a IpNet);

impl Value for Net<'_> {
    fn put(&self, out: &mut String) {
        let n = self.0;
        match n {
            IpNet::V4(v4) => {
                for (i, octet) in v4.addr().octets().iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    decimal(out, u64::from(*octet));
                }
            }
            IpNet::V6(v6) => ipv6(out, &v6.addr()),
        }
        if n.prefix_len() != n.max_prefix_len() {
            out.push('/');
            decimal(out, u64::from(n.prefix_len()));
        }
    }
}

/// Appends an IPv6 address as the standard library's `Display` writes it (RFC 5952: lower-case
/// hexadecimal without leading zeros, the first longest run of two or more zero groups as
/// `::`, an IPv4-mapped address as `::ffff:a.b.c.d`), without going through `fmt`.
fn ipv6(out: &mut String, addr: &std::net::Ipv6Addr) {
    if let Some(v4) = addr.to_ipv4_mapped() {
        out.push_str("::ffff:");
        for (i, octet) in v4.octets().iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            decimal(out, u64::from(*octet));
        }
        return;
    }
    let groups = addr.segments();
    // The first longest run of zero groups (start, length).
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, g) in groups.iter().enumerate() {
        if *g == 0 {
            if run.1 == 0 {
                run.0 = i;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let hex_groups = |out: &mut String, groups: &[u16]| {
        for (i, g) in groups.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            hex(out, *g);
        }
    };
    if best.1 > 1 {
        hex_groups(out, &groups[..best.0]);
        out.push_str("::");
        hex_groups(out, &groups[best.0 + best.1..]);
    } else {
        hex_groups(out, &groups);
    }
}

/// Appends `n` in lower-case hexadecimal without leading zeros.
fn hex(out: &mut String, n: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12u16, 8, 4, 0] {
        let digit = usize::from((n >> shift) & 0xf);
        if digit != 0 || started || shift == 0 {
            started = true;
            out.push(char::from(HEX[digit]));
        }
    }
}

/// A prefix as OVS prints it: a bare address for a host, `addr/len` otherwise.
#[cfg(test)]
fn net(n: &IpNet) -> String {
    let mut out = String::new();
    Net(n).put(&mut out);
    out
}

impl Value for PortMask {
    fn put(&self, out: &mut String) {
        if self.mask == 0xffff {
            decimal(out, u64::from(self.value));
        } else {
            out.push_str("0x");
            hex(out, self.value);
            out.push_str("/0x");
            hex(out, self.mask);
        }
    }
}

#[cfg(test)]
fn port_mask(m: &PortMask) -> String {
    let mut out = String::new();
    m.put(&mut out);
    out
}

/// The protocol part of a rule's match: `ip`, `tcp`, `icmp6`, `ipv6,nw_proto=47`...
fn protocol_keyword(eth: EtherType, proto: Option<u8>) -> (&'static str, Option<u8>) {
    let v6 = eth == EtherType::V6;
    let named = match proto {
        None => Some(if v6 { "ipv6" } else { "ip" }),
        Some(protocol::TCP) => Some(if v6 { "tcp6" } else { "tcp" }),
        Some(protocol::UDP) => Some(if v6 { "udp6" } else { "udp" }),
        Some(protocol::SCTP) => Some(if v6 { "sctp6" } else { "sctp" }),
        Some(protocol::ICMP) if !v6 => Some("icmp"),
        Some(protocol::ICMPV6) if v6 => Some("icmp6"),
        Some(_) => None,
    };
    match named {
        Some(k) => (k, None),
        None => (if v6 { "ipv6" } else { "ip" }, proto),
    }
}

/// Appends a lowered rule's fields to a match that already selects the port.
pub(super) fn rule_match(mut m: Match, r: &RuleMatch) -> Match {
    let (kw, nw_proto) = protocol_keyword(r.ethertype, r.protocol);
    m = m.kw(kw);
    if let Some(p) = nw_proto {
        m = m.f("nw_proto", p);
    }
    if let Some(remote) = &r.remote {
        let field = match (r.direction, r.ethertype) {
            (Direction::Ingress, EtherType::V4) => "nw_src",
            (Direction::Egress, EtherType::V4) => "nw_dst",
            (Direction::Ingress, EtherType::V6) => "ipv6_src",
            (Direction::Egress, EtherType::V6) => "ipv6_dst",
        };
        m = m.f(field, Net(remote));
    }
    // Protocol-specific names: `tp_src`/`tp_dst` are accepted by `ovs-ofctl add-flows` but
    // mean TCP to other parsers (`ofproto/trace`).
    let (src_field, dst_field) = match r.protocol {
        Some(protocol::UDP) => ("udp_src", "udp_dst"),
        Some(protocol::SCTP) => ("sctp_src", "sctp_dst"),
        _ => ("tcp_src", "tcp_dst"),
    };
    if let Some(src) = &r.src_port {
        m = m.f(src_field, *src);
    }
    if let Some(dst) = &r.dst_port {
        m = m.f(dst_field, *dst);
    }
    if let Some((t, code)) = r.icmp {
        // `icmp_type` under `icmp6` is accepted by add-flows but not by every OVS parser.
        let (type_field, code_field) = match r.ethertype {
            EtherType::V4 => ("icmp_type", "icmp_code"),
            EtherType::V6 => ("icmpv6_type", "icmpv6_code"),
        };
        m = m.f(type_field, t);
        if let Some(c) = code {
            m = m.f(code_field, c);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefix_prints_as_address() {
        assert_eq!(net(&"10.0.0.5/32".parse().unwrap()), "10.0.0.5");
        assert_eq!(net(&"10.0.0.0/8".parse().unwrap()), "10.0.0.0/8");
        assert_eq!(net(&"2001:db8::/64".parse().unwrap()), "2001:db8::/64");
    }

    #[test]
    fn values_render_as_fmt_does() {
        let mut out = String::new();
        for n in [
            0u64,
            7,
            9,
            10,
            99,
            100,
            1_000,
            65_535,
            4_294_967_296,
            u64::MAX,
        ] {
            out.clear();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mac: Mac = "fa:16:3e:0a:b0:ff".parse().unwrap();
        out.clear();
        mac.put(&mut out);
        assert_eq!(out, mac.to_string());
        for text in [
            "0.0.0.0/0",
            "10.255.0.1/32",
            "192.168.10.0/24",
            "::/0",
            "fe80::1/128",
        ] {
            let n: IpNet = text.parse().unwrap();
            let expected = if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            };
            assert_eq!(net(&n), expected);
        }
    }

    #[test]
    fn ipv6_renders_as_the_standard_library_does() {
        let mut out = String::new();
        let mut check = |addr: std::net::Ipv6Addr| {
            out.clear();
            ipv6(&mut out, &addr);
            assert_eq!(out, addr.to_string());
        };
        // Every pattern of zero and non-zero groups, with short and long group values.
        for pattern in 0u16..256 {
            for value in [1u16, 0xa, 0xab, 0xfff, 0xffff, 0x1000] {
                let mut groups = [0u16; 8];
                for (i, g) in groups.iter_mut().enumerate() {
                    if pattern & (1 << i) != 0 {
                        *g = value.wrapping_add(i as u16 * 0x1111);
                    }
                }
                check(groups.into());
            }
        }
        for text in [
            "::ffff:10.0.0.1",
            "::ffff:0.0.0.0",
            "::1.2.3.4",
            "64:ff9b::1.2.3.4",
        ] {
            check(text.parse().unwrap());
        }
    }

    #[test]
    fn protocol_keywords() {
        assert_eq!(protocol_keyword(EtherType::V4, None).0, "ip");
        assert_eq!(protocol_keyword(EtherType::V6, Some(6)).0, "tcp6");
        assert_eq!(protocol_keyword(EtherType::V6, Some(58)).0, "icmp6");
        assert_eq!(protocol_keyword(EtherType::V4, Some(47)), ("ip", Some(47)));
        // ICMPv6's number on an IPv4 rule is just a protocol number.
        assert_eq!(protocol_keyword(EtherType::V4, Some(58)), ("ip", Some(58)));
    }

    #[test]
    fn lines_render_as_flow_line_does() {
        let flow = |table: u8, priority: u16, matches: &str| Flow {
            table,
            priority,
            matches: matches.to_string(),
            actions: "drop".into(),
            port: None,
            rule: None,
        };
        let flows = [
            flow(0, 0, ""),
            flow(60, 100, "in_port=1"),
            flow(60, 100, "in_port=2"),
            flow(60, 90, "dl_vlan=1"),
            flow(71, 90, "dl_vlan=1"),
            flow(71, 90, ""),
        ];
        for cookie in [0, 0x5f67] {
            let mut expected = String::new();
            for f in &flows {
                flow_line(&mut expected, "", &format!("{cookie:#x}"), f, true);
            }
            assert_eq!(ofctl(&flows, cookie), expected);
        }
    }

    #[test]
    fn masked_ports() {
        assert_eq!(
            port_mask(&PortMask {
                value: 22,
                mask: 0xffff
            }),
            "22"
        );
        assert_eq!(
            port_mask(&PortMask {
                value: 1024,
                mask: 0xfc00
            }),
            "0x400/0xfc00"
        );
        for (value, mask) in [(0u16, 0xfffe), (0xabc0, 0xffc0), (0x8000, 0x8000)] {
            assert_eq!(
                port_mask(&PortMask { value, mask }),
                format!("{value:#x}/{mask:#x}")
            );
        }
    }
}
