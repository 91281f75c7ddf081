//! The responder address of OCSP stapling: an `http://host[:port][/path]`
//! URL, parsed without I/O. OCSP is fetched over plain HTTP (RFC 6960
//! appendix A.1): the response is signed, so TLS adds nothing to its
//! integrity, and an `https` responder would need its own trust roots and
//! could itself depend on OCSP. Anything else is refused with a reason.

use std::fmt;

/// A parsed `http://` URL: enough to connect and write the request line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    /// As written in the certificate or the config (for logs and metrics).
    pub text: String,
    /// Host name or address literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`; `/` when the URL has no path.
    pub path: String,
}

impl HttpUrl {
    /// `host:port` for the `Host` header and for connecting (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses an `http://` URL. Userinfo, fragments and non-ASCII are refused:
/// a responder URL never needs them, and each is a way to make the gateway
/// talk to a host other than the one an operator reads in the URL.
pub fn parse(text: &str) -> Result<HttpUrl, String> {
    let rest = match text.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("http://") => &text[7..],
        _ => {
            return Err(format!(
                "\"{text}\" is not an http:// URL (OCSP responders are reached over plain HTTP)"
            ))
        }
    };
    if !text.is_ascii() || text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!("\"{text}\": only printable ASCII without spaces"));
    }
    if text.contains('#') {
        return Err(format!("\"{text}\": a fragment (#) has no meaning here"));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(format!("\"{text}\": user information (@) is not allowed"));
    }
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let Some(end) = after.find(']') else {
            return Err(format!("\"{text}\": unclosed '[' in the host"));
        };
        let host = &after[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("\"{text}\": \"{host}\" is not an IPv6 address"));
        }
        (host, &after[end + 1..])
    } else {
        match authority.find(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    let port = match port {
        "" => 80,
        p => match p.strip_prefix(':').and_then(|n| n.parse::<u16>().ok()) {
            Some(n) if n != 0 => n,
            _ => return Err(format!("\"{text}\": bad port \"{p}\"")),
        },
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(format!("\"{text}\": bad host \"{host}\""));
    }
    Ok(HttpUrl {
        text: text.to_string(),
        host: host.to_ascii_lowercase(),
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_and_path() {
        let u = parse("http://ocsp.example.com:8080/a/b?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("ocsp.example.com", 8080, "/a/b?x=1")
        );
        assert_eq!(u.authority(), "ocsp.example.com:8080");
        let u = parse("HTTP://Ocsp.Example.com").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("ocsp.example.com", 80, "/")
        );
        let u = parse("http://127.0.0.1:9/?q").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 9, "/?q")
        );
        let u = parse("http://[::1]:2560").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 2560));
        assert_eq!(u.authority(), "[::1]:2560");
        assert_eq!(parse("http://h?x").unwrap().path, "/?x");
    }

    #[test]
    fn refuses_what_could_mislead() {
        for bad in [
            "https://ocsp.example.com/",
            "ftp://x/",
            "http://",
            "http://user@evil.example/",
            "http://a.example:0/",
            "http://a.example:70000/",
            "http://a.example:x/",
            "http://a b/",
            "http://a.example/#frag",
            "http://[::1/",
            "http://[not-v6]/",
            "http://a\u{e9}.example/",
            "ocsp.example.com",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
