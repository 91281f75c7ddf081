//! An HTTP/2 request head (RFC 9113 section 8.3) as the same [`Request`]
//! view a parsed HTTP/1.1 head is, checked by the same rules: the method is
//! a token, the target is origin-form (or `*` for OPTIONS), the host comes
//! from `:authority` (or Host) with the characters of an authority only, and
//! framing is decided once, here. What HTTP/2 adds: connection-specific
//! fields are malformed (section 8.2.2), a Host that differs from
//! `:authority` is malformed (section 8.3.1), and a body of unknown length
//! (no content-length, no END_STREAM on the HEADERS) is sent to an HTTP/1.1
//! backend chunked.
//!
//! The HTTP/2 library has already decoded HPACK and checked the field
//! syntax; nothing here trusts that: the checks are the HTTP/1.1 parser's.

use super::{check_authority, check_target, host_header, Request};
use crate::http::head::{self, is_named};
use crate::http::{BodyFraming, HttpError};

impl<'h, 'b> Request<'h, 'b> {
    /// The view of an HTTP/2 request head. `target` is `:path`, `authority`
    /// `:authority`; `headers` are the regular fields, with the cookie
    /// fields already joined into one ([`join_cookies`]). `end_stream`: the
    /// HEADERS frame ended the stream, so there is no body.
    pub fn from_parts(
        method: &'b str,
        target: &'b str,
        authority: Option<&'b str>,
        headers: &'h [httparse::Header<'b>],
        end_stream: bool,
    ) -> Result<Request<'h, 'b>, HttpError> {
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(HttpError::Malformed("invalid request line"));
        }
        check_target(method, target)?;
        for h in headers {
            if h.name.is_empty() || !h.name.bytes().all(is_tchar) {
                return Err(HttpError::Malformed("invalid header name"));
            }
            if h.value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
                return Err(HttpError::Malformed("invalid header value"));
            }
            if is_connection_specific(h) {
                return Err(HttpError::Malformed(
                    "connection-specific header field in an HTTP/2 request",
                ));
            }
        }
        let host_field = host_header(headers)?;
        let host = match authority {
            Some(a) => {
                let a = check_authority(a.as_bytes())?;
                if host_field.is_some_and(|h| !h.eq_ignore_ascii_case(a)) {
                    return Err(HttpError::Malformed("Host differs from :authority"));
                }
                a
            }
            None => host_field.ok_or(HttpError::MissingHost)?,
        };
        // Transfer-Encoding was refused above; content-length is checked
        // exactly as HTTP/1.1's (lists, look-alike names, repeats).
        let framing = match head::declared_framing(headers, 1)? {
            BodyFraming::ContentLength(n) => BodyFraming::ContentLength(n),
            _ if end_stream => BodyFraming::None,
            _ => BodyFraming::Chunked,
        };
        Ok(Request {
            method,
            target,
            minor_version: 1,
            headers,
            head_len: 0,
            host: Some(host),
            framing,
            keep_alive: true,
            // Answered by the gateway with an interim 100 on the stream once
            // the backend has the head, as for HTTP/1.1 (a client may hold
            // its body back until then); Expect never reaches the backend.
            expect_continue: !end_stream
                && headers.iter().any(|h| {
                    is_named(h, "expect") && h.value.eq_ignore_ascii_case(b"100-continue")
                }),
        })
    }
}

/// RFC 9113 section 8.2.2: these are HTTP/1.1's connection fields; in an
/// HTTP/2 request they make it malformed (`te` only with `trailers`).
fn is_connection_specific(h: &httparse::Header<'_>) -> bool {
    const NAMES: [&str; 5] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ];
    NAMES.iter().any(|n| is_named(h, n))
        || (is_named(h, "te") && !h.value.eq_ignore_ascii_case(b"trailers"))
}

/// RFC 9110 section 5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9113 section 8.2.3: a client may split Cookie into one field per
/// cookie (for HPACK); an HTTP/1.1 backend gets them as one field, joined
/// with "; ". Appends to `out`; empty when there were none.
pub fn join_cookies<'a>(values: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::{write_backend_request_head, ForwardContext};
    use httparse::Header;

    fn h<'b>(name: &'b str, value: &'b str) -> Header<'b> {
        Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn err(
        method: &str,
        target: &str,
        authority: Option<&str>,
        headers: &[Header<'_>],
    ) -> HttpError {
        match Request::from_parts(method, target, authority, headers, true) {
            Err(e) => e,
            Ok(_) => panic!("accepted {method} {target} {authority:?}"),
        }
    }

    #[test]
    fn get_becomes_the_same_view() {
        let hs = [h("accept", "*/*"), h("x-a", "1")];
        let r = Request::from_parts("GET", "/a/b?x=1", Some("api.example.com:8443"), &hs, true)
            .unwrap();
        assert_eq!(
            (r.method, r.target, r.minor_version),
            ("GET", "/a/b?x=1", 1)
        );
        assert_eq!((r.path(), r.query()), ("/a/b", Some("x=1")));
        assert_eq!(r.host, Some("api.example.com:8443"));
        assert_eq!(
            (r.framing, r.keep_alive, r.expect_continue),
            (BodyFraming::None, true, false)
        );
        assert_eq!((r.head_len, r.headers.len()), (0, 2));
    }

    #[test]
    fn expect_100_continue_only_with_a_body_to_come() {
        let ex = [h("content-length", "5"), h("expect", "100-Continue")];
        let r = Request::from_parts("POST", "/u", Some("a"), &ex, false).unwrap();
        assert!(r.expect_continue);
        // The HEADERS ended the stream: no body will come, nothing to wait for.
        let r = Request::from_parts("POST", "/u", Some("a"), &ex, true).unwrap();
        assert!(!r.expect_continue);
        let other = [h("expect", "something-else")];
        let r = Request::from_parts("POST", "/u", Some("a"), &other, false).unwrap();
        assert!(!r.expect_continue);
        let none = [h("content-length", "5")];
        let r = Request::from_parts("POST", "/u", Some("a"), &none, false).unwrap();
        assert!(!r.expect_continue);
    }

    #[test]
    fn framing_from_content_length_or_end_stream() {
        let cl = [h("content-length", "5")];
        let f = |hs: &[Header<'_>], end| {
            Request::from_parts("POST", "/u", Some("a"), hs, end).map(|r| r.framing)
        };
        assert_eq!(f(&cl, false), Ok(BodyFraming::ContentLength(5)));
        assert_eq!(f(&cl, true), Ok(BodyFraming::ContentLength(5)));
        assert_eq!(f(&[], false), Ok(BodyFraming::Chunked));
        assert_eq!(f(&[], true), Ok(BodyFraming::None));
        let two = [h("content-length", "5"), h("content-length", "6")];
        assert_eq!(f(&two, false), Err(HttpError::AmbiguousFraming));
        assert_eq!(
            f(&[h("content-length", "+5")], false),
            Err(HttpError::InvalidContentLength)
        );
        assert!(matches!(
            f(&[h("content_length", "5")], false),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn connection_specific_fields_are_malformed() {
        for (n, v) in [
            ("connection", "close"),
            ("keep-alive", "1"),
            ("proxy-connection", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
        ] {
            let e = err("GET", "/", Some("a"), &[h(n, v)]);
            assert!(matches!(e, HttpError::Malformed(_)), "{n}");
        }
        assert!(Request::from_parts("GET", "/", Some("a"), &[h("te", "trailers")], true).is_ok());
    }

    #[test]
    fn authority_and_host() {
        assert_eq!(err("GET", "/", None, &[]), HttpError::MissingHost);
        let only_host = [h("host", "b.example")];
        let r = Request::from_parts("GET", "/", None, &only_host, true).unwrap();
        assert_eq!(r.host, Some("b.example"));
        let same = [h("host", "A.example")];
        assert!(Request::from_parts("GET", "/", Some("a.example"), &same, true).is_ok());
        let other = [h("host", "b.example")];
        assert!(matches!(
            err("GET", "/", Some("a.example"), &other),
            HttpError::Malformed(_)
        ));
        for bad in ["user@a.example", "a b", "a/b", "a\u{e9}"] {
            assert!(
                matches!(err("GET", "/", Some(bad), &[]), HttpError::Malformed(_)),
                "{bad}"
            );
        }
        let dup = [h("host", "a"), h("host", "a")];
        assert_eq!(err("GET", "/", Some("a"), &dup), HttpError::MissingHost);
    }

    #[test]
    fn method_and_target_rules() {
        for (m, t) in [
            ("GET", "http://evil/"),
            ("GET", "*"),
            ("GET", "/#f"),
            ("GET", "/\u{e9}"),
            ("GET", ""),
            ("G T", "/"),
            ("", "/"),
            ("GE\"T", "/"),
        ] {
            assert!(
                matches!(err(m, t, Some("a"), &[]), HttpError::Malformed(_)),
                "{m} {t}"
            );
        }
        let r = Request::from_parts("OPTIONS", "*", Some("a"), &[], true).unwrap();
        assert_eq!(r.path(), "*");
    }

    #[test]
    fn field_bytes_hpack_could_carry() {
        for v in ["a\0b", "a\rb", "a\nb"] {
            let e = err("GET", "/", Some("a"), &[h("x", v)]);
            assert!(matches!(e, HttpError::Malformed(_)), "{v:?}");
        }
        let e = err("GET", "/", Some("a"), &[h("x y", "1")]);
        assert!(matches!(e, HttpError::Malformed(_)));
    }

    #[test]
    fn cookies_joined_with_semicolon_space() {
        let mut out = Vec::new();
        join_cookies([&b"a=1"[..], b"b=2", b"c=3"], &mut out);
        assert_eq!(out, b"a=1; b=2; c=3");
        let mut one = Vec::new();
        join_cookies([&b"a=1"[..]], &mut one);
        assert_eq!(one, b"a=1");
        let mut none = Vec::new();
        join_cookies(std::iter::empty(), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn backend_head_byte_by_byte() {
        let hs = [
            h("accept", "*/*"),
            h("x-forwarded-for", "6.6.6.6"),
            h("x_client_subject", "forged"),
            h("cookie", "a=1; b=2"),
        ];
        let r = Request::from_parts("POST", "/p?q", Some("api.example"), &hs, false).unwrap();
        let strip = vec!["x-client-subject".to_string()];
        let ctx = ForwardContext {
            peer_ip: "192.0.2.1".parse().unwrap(),
            client_ip: "192.0.2.1".parse().unwrap(),
            keep_forwarded_for: false,
            proto: "https",
            set_host: None,
            framing: r.framing,
            target: None,
            strip: &[strip.as_slice()],
            strip_set: &[],
            extra_headers: b"",
        };
        let mut out = Vec::new();
        write_backend_request_head(&r, &ctx, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q HTTP/1.1\r\naccept: */*\r\ncookie: a=1; b=2\r\nHost: api.example\r\n\
             X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: api.example\r\nX-Real-IP: 192.0.2.1\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
    }
}
