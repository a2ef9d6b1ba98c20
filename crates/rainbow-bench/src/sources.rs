//! Client source addresses.
//!
//! Every TCP connection from one source address to the gateway's single
//! address and port needs its own ephemeral port, and Linux hands out about
//! 28,000 of them (`ip_local_port_range`). Binding each client socket to one of
//! several loopback source addresses (all of 127.0.0.0/8 is local) multiplies
//! that. `--sources` takes `127.0.0.2-127.0.0.40`, a comma-separated list of
//! addresses and ranges, or `none` to let the kernel choose.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// The most addresses one `--sources` value may name.
pub const MAX_SOURCES: usize = 65_536;

/// A list of source addresses; empty means "let the kernel choose".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    spec: String,
    addrs: Vec<IpAddr>,
}

impl Sources {
    /// No explicit source: the kernel picks one (and the ephemeral port).
    pub fn none() -> Sources {
        Sources { spec: "none".to_string(), addrs: Vec::new() }
    }

    /// The source address for connection number `index` (round robin).
    pub fn pick(&self, index: usize) -> Option<IpAddr> {
        if self.addrs.is_empty() { None } else { Some(self.addrs[index % self.addrs.len()]) }
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the kernel chooses the source.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The addresses.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }
}

impl fmt::Display for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

fn parse_v4_range(first: &str, last: &str) -> Result<Vec<IpAddr>, String> {
    let a: Ipv4Addr = first.trim().parse().map_err(|_| format!("{first:?} is not an IPv4 address"))?;
    let b: Ipv4Addr = last.trim().parse().map_err(|_| format!("{last:?} is not an IPv4 address"))?;
    let (a, b) = (u32::from(a), u32::from(b));
    if b < a {
        return Err(format!("range {first}-{last} ends before it starts"));
    }
    if (b - a) as usize >= MAX_SOURCES {
        return Err(format!("range {first}-{last} has more than {MAX_SOURCES} addresses"));
    }
    Ok((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect())
}

impl FromStr for Sources {
    type Err = String;

    fn from_str(s: &str) -> Result<Sources, String> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(Sources::none());
        }
        let mut addrs = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('-') {
                Some((first, last)) => addrs.extend(parse_v4_range(first, last)?),
                None => addrs.push(item.parse().map_err(|_| format!("{item:?} is not an IP address or range"))?),
            }
            if addrs.len() > MAX_SOURCES {
                return Err(format!("more than {MAX_SOURCES} source addresses"));
            }
        }
        Ok(Sources { spec: s.to_string(), addrs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_none() {
        let s: Sources = "127.0.0.2-127.0.0.4".parse().expect("range");
        assert_eq!(s.len(), 3);
        assert_eq!(s.pick(0), Some("127.0.0.2".parse().expect("ip")));
        assert_eq!(s.pick(4), Some("127.0.0.3".parse().expect("ip")));
        let s: Sources = "127.0.0.9, 127.0.1.255-127.0.2.0".parse().expect("list");
        assert_eq!(s.len(), 3);
        assert_eq!(s.to_string(), "127.0.0.9, 127.0.1.255-127.0.2.0");
        let s: Sources = "none".parse().expect("none");
        assert!(s.is_empty());
        assert_eq!(s.pick(7), None);
    }

    #[test]
    fn bad_values_say_why() {
        assert!("127.0.0.5-127.0.0.2".parse::<Sources>().unwrap_err().contains("ends before"));
        assert!("localhost".parse::<Sources>().unwrap_err().contains("not an IP"));
        assert!("10.0.0.0-10.255.255.255".parse::<Sources>().unwrap_err().contains("more than"));
    }
}
