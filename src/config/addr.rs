//! Socket addresses from config strings, with a precise reason when one is
//! wrong (std's `AddrParseError` only says "invalid socket address syntax").

use std::net::{IpAddr, SocketAddr};

/// An IP literal with a port: "127.0.0.1:8443" or "[::1]:8443".
/// Port 0 is allowed: it asks the kernel for a free port (tests use it).
pub(super) fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = split(s)?;
    match host {
        Host::Ip(ip) => Ok(SocketAddr::new(ip, port)),
        Host::Name(_) => Err(format!(
            "\"{s}\" is not a socket address (a listener needs an IP address, e.g. \"127.0.0.1:8443\" or \"[::]:8443\")"
        )),
    }
}

/// "ip:port" or "name:port". Names are resolved once, here, so a typo fails
/// at startup rather than on the first request.
///
/// A name is pinned to one address. IPv4 is preferred because "localhost"
/// commonly resolves to ::1 first while dev backends listen on 127.0.0.1.
pub(super) fn resolve_backend_addr(s: &str) -> Result<SocketAddr, String> {
    let (host, port) = split(s)?;
    if port == 0 {
        return Err(format!("\"{s}\" is not a socket address (port 0)"));
    }
    let name = match host {
        Host::Ip(ip) => return Ok(SocketAddr::new(ip, port)),
        Host::Name(name) => name,
    };
    let resolved = lookup(name, port).map_err(|e| format!("cannot resolve \"{s}\": {e}"))?;
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("cannot resolve \"{s}\": no addresses"))
}

#[cfg(not(fuzzing))]
fn lookup(name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    std::net::ToSocketAddrs::to_socket_addrs(&(name, port)).map(Iterator::collect)
}

/// A fuzzing build (`--cfg fuzzing`, set by fuzz/run.sh and cargo fuzz) feeds
/// the loader names the fuzzer made up: none of them may become a DNS query,
/// so every well-formed name stands for loopback there.
#[cfg(fuzzing)]
fn lookup(_name: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(vec![SocketAddr::new(
        std::net::Ipv4Addr::LOCALHOST.into(),
        port,
    )])
}

enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

fn split(s: &str) -> Result<(Host<'_>, u16), String> {
    let bad = |why: &str| format!("\"{s}\" is not a socket address ({why})");
    if s.is_empty() {
        return Err("empty socket address (expected e.g. \"127.0.0.1:8443\")".to_string());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| bad("missing \"]\""))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("missing port"))?;
        let ip: std::net::Ipv6Addr = inside.parse().map_err(|_| bad("bad IPv6 address"))?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 address needs brackets, e.g. \"[::1]:8443\""));
        }
        (parse_host(host).map_err(|why| bad(&why))?, port)
    };
    Ok((host, parse_port(port).map_err(bad)?))
}

fn parse_host(host: &str) -> Result<Host<'_>, String> {
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    // All-digit-and-dot hosts are meant as IPv4; don't send "1.2.3.999" to DNS.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse()
            .map(Host::Ip)
            .map_err(|_| "bad IPv4 address".to_string());
    }
    let valid_name = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid_name {
        Ok(Host::Name(host))
    } else {
        Err("bad host name".to_string())
    }
}

fn parse_port(port: &str) -> Result<u16, &'static str> {
    if port.is_empty() {
        return Err("missing port");
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not a number");
    }
    // All digits, so a parse failure can only be overflow.
    port.parse().map_err(|_| "port out of range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_literals() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:8443"),
            Ok("127.0.0.1:8443".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("[::1]:8443"),
            Ok("[::1]:8443".parse().unwrap())
        );
        assert_eq!(
            parse_listen_addr("0.0.0.0:0"),
            Ok("0.0.0.0:0".parse().unwrap())
        );
    }

    #[test]
    fn listen_errors_say_why() {
        let cases = [
            ("127.0.0.1:99999", "port out of range"),
            ("127.0.0.1", "missing port"),
            ("127.0.0.1:", "missing port"),
            ("127.0.0.1:https", "port is not a number"),
            ("::1:8443", "needs brackets"),
            ("[::1]8443", "missing port"),
            ("[::1:8443", "missing \"]\""),
            ("[zz]:1", "bad IPv6 address"),
            ("1.2.3.999:80", "bad IPv4 address"),
            ("localhost:8443", "needs an IP address"),
            (":8443", "missing host"),
            ("bad_-:1", "bad host name"),
        ];
        for (input, why) in cases {
            let err = parse_listen_addr(input).unwrap_err();
            assert!(err.contains(why), "{input}: {err}");
            assert!(err.contains(&format!("\"{input}\"")), "{input}: {err}");
        }
    }

    #[test]
    fn backends_resolve_names_preferring_ipv4() {
        assert_eq!(
            resolve_backend_addr("10.0.0.1:9000"),
            Ok("10.0.0.1:9000".parse().unwrap())
        );
        let local = resolve_backend_addr("localhost:9000").unwrap();
        assert!(local.ip().is_loopback(), "{local}");
        assert_eq!(local.port(), 9000);
        assert!(resolve_backend_addr("10.0.0.1:0")
            .unwrap_err()
            .contains("port 0"));
    }
}
