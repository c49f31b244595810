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

    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let bad = || format!("malformed MAC address {s:?}");
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(Mac(out))
    }
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

    #[test]
    fn eui64_link_local() {
        let m: Mac = "fa:16:3e:12:34:56".parse().unwrap();
        assert_eq!(m.link_local().to_string(), "fe80::f816:3eff:fe12:3456");
    }
}
