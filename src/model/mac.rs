//! Ethernet MAC addresses.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The modified EUI-64 link-local address (fe80::/64) derived from this MAC, which a VM
    /// configures on its own and must be allowed to use for neighbour discovery.
    pub fn link_local(&self) -> Ipv6Addr {
        let m = self.0;
        Ipv6Addr::new(
            0xfe80,
            0,
            0,
            0,
            u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
            u16::from_be_bytes([m[2], 0xff]),
            u16::from_be_bytes([0xfe, m[3]]),
            u16::from_be_bytes([m[4], m[5]]),
        )
    }

    /// Whether this is a group (multicast or broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case: six two-character
    /// groups, each read as `u8::from_str_radix(group, 16)` reads it (which also takes `+f`).
    /// Read byte by byte: a model lists a MAC for every port and member address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("malformed MAC address {s:?}");
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (i, slot) in out.iter_mut().enumerate() {
            let at = 3 * i;
            if i > 0 && !matches!(b[at - 1], b':' | b'-') {
                return Err(bad());
            }
            *slot = hex_pair(b[at], b[at + 1]).ok_or_else(bad)?;
        }
        Ok(Mac(out))
    }
}

/// A two-character hex group, or `+` and one hex digit.
fn hex_pair(high: u8, low: u8) -> Option<u8> {
    let low = hex_digit(low)?;
    if high == b'+' {
        return Some(low);
    }
    Some(hex_digit(high)? << 4 | low)
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: Mac = "FA:16:3E:00:00:01".parse().unwrap();
        assert_eq!(m.to_string(), "fa:16:3e:00:00:01");
        assert!("fa:16:3e:00:00".parse::<Mac>().is_err());
        assert!("fa:16:3e:00:00:0g".parse::<Mac>().is_err());
        assert!("fa:16:3e:00:00:001".parse::<Mac>().is_err());
    }

    /// The reading this one replaced: split on the separators, parse each group.
    fn by_split(s: &str) -> Option<Mac> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return None;
            }
            *slot = u8::from_str_radix(part, 16).ok()?;
        }
        Some(Mac(out))
    }

    #[test]
    fn reads_as_splitting_did() {
        let cases = [
            "fa:16:3e:00:00:01",
            "FA-16-3E-00-00-01",
            "fa:16-3e:00-00:01",
            "+a:16:3e:00:00:01",
            "fa:+6:3e:00:00:+f",
            "a+:16:3e:00:00:01",
            "++:16:3e:00:00:01",
            "-a:16:3e:00:00:01",
            "fa::16:3e:00:00:0",
            "fa:16:3e:00:00:01:",
            "fa:16:3e:00:00:0\u{e9}",
            "fa:16:3e:00:00:é",
            "fa 16 3e 00 00 01",
            "fa:16:3e:00:00:0g",
            "",
            ":::::",
            "fa:16:3e:00:00:01x",
        ];
        for case in cases {
            assert_eq!(case.parse::<Mac>().ok(), by_split(case), "{case:?}");
        }
        for b in 0u8..=255 {
            let c = b as char;
            let case = format!("{c}a:16:3e:00:00:0{c}");
            assert_eq!(case.parse::<Mac>().ok(), by_split(&case), "{case:?}");
        }
    }

    #[test]
    fn eui64_link_local() {
        let m: Mac = "fa:16:3e:12:34:56".parse().unwrap();
        assert_eq!(m.link_local().to_string(), "fe80::f816:3eff:fe12:3456");
    }
}
