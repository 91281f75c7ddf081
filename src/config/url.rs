//! `crl_urls` entries: plain `http://host[:port]/path` URLs, checked at load
//! so that the fetcher only ever sees a host, a port and a request target.
//!
//! Plain HTTP only, on purpose: a CRL is signed by its CA, so the transport
//! adds no integrity (the fetcher checks the signature), and CRL
//! distribution points are published over http:// (RFC 5280 §4.2.1.13)
//! because fetching them over TLS would need revocation checking of its own.
//! An https:// URL is refused with a message saying so, rather than fetched
//! without checking the server.

use std::fmt;

/// A validated `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlUrl {
    /// As written (the metric label and the log field).
    pub text: String,
    /// A DNS name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with '/'; the query, if any, included.
    pub path: String,
}

impl fmt::Display for CrlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl CrlUrl {
    pub fn parse(text: &str) -> Result<CrlUrl, String> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("https://") {
            return Err(format!(
                "\"{text}\": only http:// (a CRL is signed by its CA, so plain HTTP is how CAs publish it; the signature is checked after each fetch)"
            ));
        }
        if !lower.starts_with("http://") {
            return Err(format!("\"{text}\" is not an http:// URL"));
        }
        let rest = &text["http://".len()..];
        if rest.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
            return Err(format!(
                "\"{text}\": spaces, control characters and fragments are not allowed in a URL"
            ));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "\"{text}\": credentials in a URL are not supported"
            ));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("\"{text}\": no valid host[:port] after http://"))?;
        Ok(CrlUrl {
            text: text.to_string(),
            host,
            port,
            path,
        })
    }
}

/// "host", "host:port", "[v6]" or "[v6]:port"; default port 80.
fn split_host_port(authority: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (v6.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return None;
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        },
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (String, u16, String) {
        let u = CrlUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(u.text, text);
        (u.host, u.port, u.path)
    }

    #[test]
    fn hosts_ports_and_paths() {
        assert_eq!(
            ok("http://ca.example/x.crl"),
            ("ca.example".into(), 80, "/x.crl".into())
        );
        assert_eq!(
            ok("http://127.0.0.1:8080/a/b.crl"),
            ("127.0.0.1".into(), 8080, "/a/b.crl".into())
        );
        assert_eq!(ok("http://[::1]:81/c"), ("::1".into(), 81, "/c".into()));
        assert_eq!(ok("http://[::1]"), ("::1".into(), 80, "/".into()));
        assert_eq!(ok("HTTP://ca"), ("ca".into(), 80, "/".into()));
        assert_eq!(ok("http://ca?x=1"), ("ca".into(), 80, "/?x=1".into()));
    }

    #[test]
    fn refusals_say_why() {
        let e = CrlUrl::parse("https://ca.example/x.crl").unwrap_err();
        assert!(e.contains("only http://"), "{e}");
        for bad in [
            "ftp://x/y",
            "http://",
            "http://:80/x",
            "http://host:0/x",
            "http://host:99999/x",
            "http://user:pw@host/x",
            "http://host/a b",
            "http://host/a#frag",
            "http://[zz]/x",
            "http://ho\u{7f}st/",
            "http://host:/x",
        ] {
            assert!(CrlUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
