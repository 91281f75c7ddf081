//! The one normal form of a host name, shared by everything that compares
//! hosts: site selection (SNI and the Host header), route matching, and the
//! `host` / `server_names` values in the config.
//!
//! Before this, each place cleaned names its own way (one stripped a trailing
//! dot, another did not; one kept IPv6 brackets, another removed them), so
//! `LOCALHOST.` or `[::1]:8443` could select one site and miss its routes.
//! The normal form: ASCII lower case, no port, at most one trailing dot
//! removed, IPv4 in dotted-decimal, IPv6 in brackets in RFC 5952 form
//! (`[::1]`). Anything else (empty labels, characters outside a DNS name,
//! numeric names that are not IPv4 addresses, IPv6 zone IDs, bad ports) is
//! refused rather than guessed at.
//!
//! Pure functions over strings: no I/O, tested below.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a host is refused: a short lowercase phrase for logs and config errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHost(pub &'static str);

/// DNS limit on a name's text form (without the trailing dot).
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// Appends the normal form of a Host header value (`host[:port]`) to `out`.
/// The port is checked (digits, at most 65535; empty is allowed, as RFC 3986
/// allows it) and dropped: routing never depends on it.
pub fn normalize_authority(value: &str, out: &mut String) -> Result<(), InvalidHost> {
    let (host, port) = if value.starts_with('[') {
        match value.find(']') {
            Some(end) => {
                let (host, rest) = value.split_at(end + 1);
                match rest.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None if rest.is_empty() => (host, None),
                    None => return Err(InvalidHost("text after the IPv6 literal")),
                }
            }
            None => return Err(InvalidHost("unterminated IPv6 literal")),
        }
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        let digits = port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !digits || (!port.is_empty() && port.parse::<u16>().is_err()) {
            return Err(InvalidHost("invalid port"));
        }
    }
    normalize_host(host, out)
}

/// Appends the normal form of a host without a port (an SNI value, a name in
/// the config, or the host part of a Host header) to `out`.
pub fn normalize_host(host: &str, out: &mut String) -> Result<(), InvalidHost> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(InvalidHost("unterminated IPv6 literal"))?;
        // Zone IDs (`%25eth0`) and IPvFuture fail to parse: neither names a
        // host the gateway serves.
        let addr: Ipv6Addr = inner
            .parse()
            .map_err(|_| InvalidHost("invalid IPv6 address"))?;
        let _ = write!(out, "[{addr}]");
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(InvalidHost("empty host"));
    }
    if name.len() > MAX_NAME {
        return Err(InvalidHost("host name too long"));
    }
    let mut last_label = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(InvalidHost("empty label in host name"));
        }
        if label.len() > MAX_LABEL {
            return Err(InvalidHost("host name label too long"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidHost("invalid character in host name"));
        }
        last_label = label;
    }
    // No top-level domain is numeric (RFC 3696 §2), so a name ending in one
    // is an IPv4 address or garbage (`010.1`, `0x7f.1`, `1.2.3.999`) that
    // resolvers read in different ways.
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        let addr: Ipv4Addr = name
            .parse()
            .map_err(|_| InvalidHost("numeric host name that is not an IPv4 address"))?;
        let _ = write!(out, "{addr}");
        return Ok(());
    }
    out.extend(name.chars().map(|c| c.to_ascii_lowercase()));
    Ok(())
}

/// Whether a normal-form host is an IP literal (no wildcard can cover it).
pub fn is_ip_literal(normal: &str) -> bool {
    normal.starts_with('[') || normal.parse::<Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> Result<String, InvalidHost> {
        let mut out = String::new();
        normalize_host(h, &mut out).map(|()| out)
    }

    fn authority(h: &str) -> Result<String, InvalidHost> {
        let mut out = String::new();
        normalize_authority(h, &mut out).map(|()| out)
    }

    #[test]
    fn names() {
        for (raw, want) in [
            ("localhost", "localhost"),
            ("LOCALHOST", "localhost"),
            ("LocalHost.", "localhost"),
            ("Api.Example.COM", "api.example.com"),
            ("a-b_c.example", "a-b_c.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("1a.example", "1a.example"),
            ("example.c0m", "example.c0m"),
            ("a", "a"),
        ] {
            assert_eq!(host(raw).as_deref(), Ok(want), "{raw:?}");
            assert_eq!(host(want).as_deref(), Ok(want), "{want:?} again");
        }
        let long_label = "a".repeat(63);
        assert!(host(&long_label).is_ok());
        assert!(host(&"a".repeat(64)).is_err());
        let long_name = vec!["abcdefghi"; 25].join(".") + ".abc"; // 253
        assert_eq!(long_name.len(), 253);
        assert!(host(&long_name).is_ok());
        assert!(host(&format!("{long_name}.")).is_ok());
        assert!(host(&format!("{long_name}a")).is_err());
    }

    #[test]
    fn ip_literals() {
        for (raw, want) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("[::1]", "[::1]"),
            ("[0:0:0:0:0:0:0:1]", "[::1]"),
            ("[2001:DB8::0:1]", "[2001:db8::1]"),
            ("[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]"),
        ] {
            assert_eq!(host(raw).as_deref(), Ok(want), "{raw:?}");
        }
        assert!(is_ip_literal("[::1]") && is_ip_literal("10.0.0.1"));
        assert!(!is_ip_literal("localhost") && !is_ip_literal("1a.example"));
    }

    #[test]
    fn garbage_is_refused() {
        for raw in [
            "",
            ".",
            "..",
            ".localhost",
            "local..host",
            "localhost..",
            "exa$mple.com",
            "exa mple.com",
            "a/b",
            "a%2eb",
            "caf\u{e9}.example",
            "a\0b",
            "*.example.com",
            "::1",
            "[::1",
            "::1]",
            "[::1]x",
            "[fe80::1%25eth0]",
            "[v1.abc]",
            "[127.0.0.1]",
            "1.2.3.999",
            "010.0.0.1",
            "1.2.3",
            "0x7f.1",
            "127.1",
            "4294967295",
        ] {
            assert!(host(raw).is_err(), "{raw:?} accepted as {:?}", host(raw));
        }
    }

    #[test]
    fn authorities() {
        for (raw, want) in [
            ("localhost", "localhost"),
            ("localhost:8443", "localhost"),
            ("LocalHost.:443", "localhost"),
            ("localhost:", "localhost"),
            ("localhost:0", "localhost"),
            ("localhost:65535", "localhost"),
            ("[::1]:8443", "[::1]"),
            ("[::1]", "[::1]"),
            ("[::1]:", "[::1]"),
            ("[0:0:0:0:0:0:0:1]:8443", "[::1]"),
            ("10.0.0.1:80", "10.0.0.1"),
        ] {
            assert_eq!(authority(raw).as_deref(), Ok(want), "{raw:?}");
        }
        for raw in [
            "",
            ":8443",
            "localhost:65536",
            "localhost:99999",
            "localhost:8x",
            "localhost:+1",
            "localhost:-1",
            "localhost: 1",
            "localhost:000080",
            "localhost:1:2",
            "::1",
            "::1:8443",
            "[::1]8443",
            "[::1]:x",
            "[::1",
            "user@localhost",
        ] {
            assert!(
                authority(raw).is_err(),
                "{raw:?} accepted as {:?}",
                authority(raw)
            );
        }
    }
}
