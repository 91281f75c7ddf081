//! Names inside config values: HTTP method lists and host patterns, parsed
//! into the forms requests are compared in. Shared by the `[[route]]` and
//! `[[site]]` tables.

use super::field::{Field, Problem};
use super::HostMatch;
use crate::http::host::{is_ip_literal, normalize_host, InvalidHost};

/// `["ANY"]` means any method, as does leaving the field out.
pub(super) fn methods(field: Field) -> Result<Option<Vec<String>>, Problem> {
    let items = field.non_empty_array("a list of HTTP methods, or leave it out for any")?;
    let count = items.len();
    let mut methods: Vec<String> = Vec::with_capacity(count);
    for item in items {
        let method = item.string()?;
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(item.problem(format!("\"{method}\" is not an HTTP method")));
        }
        let method = method.to_ascii_uppercase();
        if method == "ANY" {
            if count > 1 {
                return Err(
                    item.problem("\"ANY\" cannot be combined with other methods".to_string())
                );
            }
            return Ok(None);
        }
        if methods.contains(&method) {
            return Err(item.problem(format!("\"{method}\" is listed twice")));
        }
        if method == "CONNECT" {
            return Err(item.problem(
                "CONNECT cannot be routed: the gateway does not open tunnels".to_string(),
            ));
        }
        methods.push(method);
    }
    Ok(Some(methods))
}

/// RFC 9110 `tchar`.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `host` or `server_names` value: a host in the normal form every
/// request's SNI and Host are compared in, or `*.` and a name.
pub(super) fn parse_host_match(host: &str) -> Result<HostMatch, String> {
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let mut normal = String::with_capacity(name.len());
    normalize_host(name, &mut normal).map_err(|InvalidHost(why)| {
        format!(
            "\"{host}\" is not a host name: {why} (expected e.g. \"api.example.com\", \"*.example.com\" or \"[::1]\", without a port)"
        )
    })?;
    if !wildcard {
        return Ok(HostMatch::Exact(normal));
    }
    if is_ip_literal(&normal) {
        return Err(format!("\"{host}\": a wildcard cannot cover an IP address"));
    }
    Ok(HostMatch::WildcardSuffix(format!(".{normal}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            parse_host_match("API.Example.com"),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            parse_host_match("*.Example.com"),
            Ok(HostMatch::WildcardSuffix(".example.com".into()))
        );
        assert_eq!(
            parse_host_match("[::1]"),
            Ok(HostMatch::Exact("[::1]".into()))
        );
        assert_eq!(
            parse_host_match("10.0.0.1"),
            Ok(HostMatch::Exact("10.0.0.1".into()))
        );
        // The normal form requests are compared in: one trailing dot, case,
        // IPv6 spelling.
        assert_eq!(
            parse_host_match("LocalHost."),
            Ok(HostMatch::Exact("localhost".into()))
        );
        assert_eq!(
            parse_host_match("[0:0:0:0:0:0:0:1]"),
            Ok(HostMatch::Exact("[::1]".into()))
        );
        assert_eq!(
            parse_host_match("*.Example.com."),
            Ok(HostMatch::WildcardSuffix(".example.com".into()))
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "api.example.com:443",
            "a..b",
            "ex ample.com",
            "*.[::1]",
            "*.10.0.0.1",
            "010.0.0.1",
            "[::1]:443",
            "a.example..",
        ] {
            assert!(parse_host_match(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn method_tokens() {
        assert!(is_token_byte(b'G'));
        assert!(is_token_byte(b'-'));
        assert!(!is_token_byte(b' '));
        assert!(!is_token_byte(b'/'));
        assert!(!is_token_byte(b'('));
    }
}
