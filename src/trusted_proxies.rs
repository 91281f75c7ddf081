//! Who the client is when the gateway sits behind a balancer: the peers a
//! listener trusts (`trusted_proxies = ["10.0.0.0/8", ...]`) and the client
//! address picked out of their `X-Forwarded-For`.
//!
//! The rule is nginx's `set_real_ip_from` + `real_ip_recursive on`: only a
//! trusted peer's X-Forwarded-For means anything, and the client is the
//! right-most address in it that is not itself trusted (everything left of
//! that was written by parties we cannot vouch for). Pure: no I/O, so the
//! walk is tested entry by entry.

use std::fmt;
use std::net::IpAddr;

/// An IP network: an address with its prefix length, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128).
    /// Host bits set ("10.0.0.1/8") are refused rather than silently masked:
    /// that typo usually means the operator meant a narrower network.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| {
            format!("\"{s}\" is not an IP network (expected e.g. \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.7\")")
        })?;
        let max = max_prefix(network);
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let valid = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
                match p.parse::<u8>() {
                    Ok(n) if valid && n <= max => n,
                    _ => {
                        return Err(format!(
                            "\"{s}\": the prefix length must be a number from 0 to {max}"
                        ))
                    }
                }
            }
        };
        let masked = mask(network, prefix);
        if masked != network {
            return Err(format!(
                "\"{s}\" has host bits set after /{prefix}: write \"{masked}/{prefix}\" (or the address alone for one host)"
            ));
        }
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        same_family(ip, self.network) && mask(ip, self.prefix) == self.network
    }

    /// A /0: every address of the family.
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    matches!(
        (a, b),
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
    )
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// Who a request came from, as far as the gateway can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The address of this hop: the TCP peer, or a trusted PROXY header's source.
    pub peer: IpAddr,
    /// `peer` is in `trusted_proxies`: its X-Forwarded-For is kept.
    pub peer_trusted: bool,
    /// The client: `peer`, or the right-most untrusted X-Forwarded-For entry.
    pub client: IpAddr,
}

impl Hop {
    /// What is known before a request names anyone: the peer is the client.
    pub fn direct(peer: IpAddr) -> Hop {
        let peer = peer.to_canonical();
        Hop {
            peer,
            peer_trusted: false,
            client: peer,
        }
    }
}

/// The networks a listener trusts to tell it who the client is. Empty (the
/// default) trusts nobody: X-Forwarded-For is always replaced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<Cidr>,
}

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> Self {
        TrustedProxies { networks }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub fn networks(&self) -> &[Cidr] {
        &self.networks
    }

    /// IPv4-mapped IPv6 peers (a dual-stack socket) count as their IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The hop a request came over (addresses canonical: an IPv4-mapped
    /// IPv6 peer is its IPv4 address). See `client_address`.
    pub fn hop<'a, I>(&self, peer: IpAddr, forwarded_for: I) -> Hop
    where
        I: DoubleEndedIterator<Item = &'a [u8]>,
    {
        let peer = peer.to_canonical();
        Hop {
            peer,
            peer_trusted: self.contains(peer),
            client: self.client_address(peer, forwarded_for),
        }
    }

    /// The client behind `peer`. `forwarded_for` yields the peer's
    /// X-Forwarded-For field values in the order they arrived; it is read
    /// only when the peer is trusted. Walking right to left, each trusted
    /// address is skipped; the first untrusted one is the client. When every
    /// entry is trusted the left-most is the client; an entry that is not an
    /// address stops the walk at the last address read (nothing to its left
    /// can be trusted), as nginx does.
    pub fn client_address<'a, I>(&self, peer: IpAddr, forwarded_for: I) -> IpAddr
    where
        I: DoubleEndedIterator<Item = &'a [u8]>,
    {
        let mut client = peer.to_canonical();
        if !self.contains(client) {
            return client;
        }
        for value in forwarded_for.rev() {
            for entry in value.rsplit(|&b| b == b',') {
                let entry = trim(entry);
                if entry.is_empty() {
                    // "a, , b" or a trailing comma: no address, nothing claimed.
                    continue;
                }
                let Some(ip) = parse_entry(entry) else {
                    return client;
                };
                client = ip.to_canonical();
                if !self.contains(client) {
                    return client;
                }
            }
        }
        client
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// One X-Forwarded-For entry: a bare address, or the forms some balancers
/// write with a port: "192.0.2.1:4711", "[2001:db8::1]" and "[2001:db8::1]:4711".
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, port) = s.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| Cidr::parse(n).unwrap()).collect())
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            Cidr::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(Cidr::parse("::1").unwrap().to_string(), "::1/128");
        assert!(Cidr::parse("0.0.0.0/0").unwrap().is_everything());
        assert!(!Cidr::parse("0.0.0.0/1").unwrap().is_everything());
        for (bad, why) in [
            ("", "not an IP network"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("2001:db8::/129", "from 0 to 128"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0.0/08x", "prefix length"),
            ("10.0.0.0/0008", "prefix length"),
            ("10.0.0.0/8/8", "prefix length"),
            ("10.0.0.1/8", "write \"10.0.0.0/8\""),
            ("2001:db8::1/32", "write \"2001:db8::/32\""),
            ("10.0.0", "not an IP network"),
            ("010.0.0.0/8", "not an IP network"),
            ("fe80::1%eth0/64", "not an IP network"),
            ("example.com/8", "not an IP network"),
            (" 10.0.0.0/8", "not an IP network"),
        ] {
            let err = Cidr::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn cidr_membership() {
        let n = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(ip("10.1.0.0")));
        assert!(n.contains(ip("10.1.255.255")));
        assert!(!n.contains(ip("10.2.0.0")));
        assert!(!n.contains(ip("::ffff:10.2.0.1")));
        // A dual-stack socket reports IPv4 peers as mapped IPv6.
        assert!(n.contains(ip("::ffff:10.1.2.3")));
        assert!(
            !n.contains(ip("::a01:203")),
            "IPv4-compatible is not mapped"
        );
        let all4 = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all4.contains(ip("203.0.113.1")));
        assert!(
            !all4.contains(ip("2001:db8::1")),
            "a /0 covers only its family"
        );
        let v6 = Cidr::parse("2001:db8:ab00::/40").unwrap();
        assert!(v6.contains(ip("2001:db8:abff::1")));
        assert!(!v6.contains(ip("2001:db8:ac00::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = trusted(&["10.0.0.0/8"]);
        let xff: [&[u8]; 1] = [b"10.0.0.1"];
        assert_eq!(
            t.client_address(ip("203.0.113.9"), xff.into_iter()),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert!(none.is_empty());
        assert_eq!(
            none.client_address(ip("10.0.0.2"), xff.into_iter()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn hops() {
        let t = trusted(&["10.0.0.0/8"]);
        let xff: [&[u8]; 1] = [b"203.0.113.5"];
        assert_eq!(
            t.hop(ip("::ffff:10.0.0.1"), xff.into_iter()),
            Hop {
                peer: ip("10.0.0.1"),
                peer_trusted: true,
                client: ip("203.0.113.5")
            }
        );
        assert_eq!(
            t.hop(ip("192.0.2.1"), xff.into_iter()),
            Hop {
                peer: ip("192.0.2.1"),
                peer_trusted: false,
                client: ip("192.0.2.1")
            }
        );
    }

    #[test]
    fn right_most_untrusted_entry_wins() {
        let t = trusted(&["10.0.0.0/8", "2001:db8::/32"]);
        let peer = ip("10.0.0.1");
        let case = |values: &[&str]| {
            let v: Vec<&[u8]> = values.iter().map(|s| s.as_bytes()).collect();
            t.client_address(peer, v.into_iter()).to_string()
        };
        assert_eq!(case(&[]), "10.0.0.1", "no header: the peer");
        assert_eq!(
            case(&["198.51.100.1, 203.0.113.5, 10.2.3.4"]),
            "203.0.113.5"
        );
        // Several headers are one list, in order.
        assert_eq!(
            case(&["198.51.100.1", "203.0.113.5", "10.2.3.4 ,10.9.9.9"]),
            "203.0.113.5"
        );
        // Everything trusted: the left-most.
        assert_eq!(case(&["10.7.7.7, 2001:db8::5"]), "10.7.7.7");
        // Garbage stops the walk at the last address read.
        assert_eq!(case(&["203.0.113.5, unknown, 10.2.3.4"]), "10.2.3.4");
        assert_eq!(case(&["203.0.113.5, 10.2.3.4, bogus"]), "10.0.0.1");
        assert_eq!(case(&["1.2.3.4\x7f"]), "10.0.0.1");
        // Empty elements are no claim at all.
        assert_eq!(case(&["203.0.113.5,, 10.2.3.4,"]), "203.0.113.5");
        assert_eq!(case(&[""]), "10.0.0.1");
        // Ports and brackets, as some balancers write them.
        assert_eq!(case(&["203.0.113.5:4711, 10.2.3.4"]), "203.0.113.5");
        assert_eq!(case(&["[2001:db9::1]:443"]), "2001:db9::1");
        assert_eq!(case(&["[2001:db9::1]"]), "2001:db9::1");
        assert_eq!(case(&["[2001:db9::1]:99999"]), "10.0.0.1");
        assert_eq!(case(&["[2001:db9::1]x"]), "10.0.0.1");
        assert_eq!(case(&["203.0.113.5:"]), "10.0.0.1");
        assert_eq!(case(&["2001:db9::1"]), "2001:db9::1");
        // A mapped address counts as IPv4 (and is reported as such).
        assert_eq!(case(&["::ffff:10.1.1.1"]), "10.1.1.1");
        assert_eq!(case(&["203.0.113.5, ::ffff:10.1.1.1"]), "203.0.113.5");
        // A mapped trusted peer is trusted.
        let v: [&[u8]; 1] = [b"203.0.113.5"];
        assert_eq!(
            t.client_address(ip("::ffff:10.0.0.1"), v.into_iter()),
            ip("203.0.113.5")
        );
    }
}
