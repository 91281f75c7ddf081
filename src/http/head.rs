//! Rules shared by request and response heads: limits, line endings, body
//! framing headers, Connection tokens, and the small writers both sides use.
//!
//! Framing is decided here once so the two directions can never disagree
//! about what an ambiguous message means.

use super::{is_hop_by_hop, BodyFraming, HttpError, Limits, Parsed};
use httparse::Header;
use std::io::Write;

/// RFC 9112 §2.2 asks servers to ignore "at least one" empty line before a
/// start line (clients that send CRLF after a POST body). More than a few is
/// not a sloppy client, it is noise we should not spin on.
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// The part of `buf` the parser may look at: a head longer than the limit is
/// rejected without scanning the rest of the buffer.
pub(crate) fn window<'b>(buf: &'b [u8], limits: &Limits) -> &'b [u8] {
    &buf[..buf.len().min(limits.max_header_bytes)]
}

/// What an incomplete head means: wait for more bytes, or give up because
/// the limit is already reached and the head still has not ended.
pub(crate) fn incomplete<T>(buf: &[u8], limits: &Limits) -> Result<Parsed<T>, HttpError> {
    if buf.len() >= limits.max_header_bytes {
        Err(HttpError::HeadTooLarge)
    } else {
        Ok(Parsed::Partial)
    }
}

/// Number of leading CRLF bytes to skip, or `None` if only (part of) empty
/// lines has arrived so far. Bare LF / bare CR are rejected, not skipped.
pub(crate) fn skip_empty_lines(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    let mut pos = 0;
    let mut lines = 0;
    loop {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'\r') => match buf.get(pos + 1) {
                None => return Ok(None),
                Some(b'\n') => {
                    lines += 1;
                    if lines > MAX_LEADING_EMPTY_LINES {
                        return Err(HttpError::Malformed(
                            "too many empty lines before start line",
                        ));
                    }
                    pos += 2;
                }
                Some(_) => return Err(HttpError::Malformed("bare CR in head")),
            },
            Some(b'\n') => return Err(HttpError::Malformed("bare LF in head")),
            Some(_) => return Ok(Some(pos)),
        }
    }
}

/// httparse accepts a bare LF as a line end; a backend that does not would
/// see a different head (and body start) than we did, so we insist on CRLF.
/// httparse already rejects a CR that is not followed by LF.
pub(crate) fn check_line_endings(head: &[u8]) -> Result<(), HttpError> {
    let mut prev = 0u8;
    for &b in head {
        if b == b'\n' && prev != b'\r' {
            return Err(HttpError::Malformed("bare LF in head"));
        }
        prev = b;
    }
    Ok(())
}

/// Translate an httparse error. `version_field` is the index of the version
/// among the space-separated start-line fields (2 for requests, 0 for
/// responses): only a well-formed `HTTP/<digit>...` that is not 1.0/1.1 is a
/// 505, any other garbage there is a plain 400.
pub(crate) fn map_parse_error(e: httparse::Error, head: &[u8], version_field: usize) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Status => HttpError::Malformed("invalid status line"),
        httparse::Error::Token => HttpError::Malformed("invalid request line"),
        httparse::Error::Version => {
            let end = head
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(head.len());
            let token = head[..end]
                .split(|&b| b == b' ')
                .nth(version_field)
                .unwrap_or(b"");
            if token.starts_with(b"HTTP/") && token.get(5).is_some_and(u8::is_ascii_digit) {
                HttpError::UnsupportedVersion
            } else {
                HttpError::Malformed("invalid HTTP version")
            }
        }
    }
}

/// Body framing as declared by the headers alone (the caller applies the
/// status/method rules): `None` when neither Content-Length nor
/// Transfer-Encoding is present.
pub(crate) fn declared_framing(
    headers: &[Header<'_>],
    minor_version: u8,
) -> Result<BodyFraming, HttpError> {
    if headers.iter().any(|h| is_framing_lookalike(h.name)) {
        // Some backends fold '_' into '-': "Transfer_Encoding" would frame
        // the body for them while we forward it as an unknown header.
        return Err(HttpError::Malformed(
            "header name imitates a framing header",
        ));
    }
    let has_cl = headers.iter().any(|h| is_named(h, "content-length"));
    let has_te = headers.iter().any(|h| is_named(h, "transfer-encoding"));
    if has_cl && has_te {
        // RFC 9112 §6.3 lets TE win, but an intermediary that forwards the CL
        // is exactly how smuggling happens; refusing is the safe answer.
        return Err(HttpError::AmbiguousFraming);
    }
    if has_te {
        if minor_version == 0 {
            // RFC 9112 §6.1: TE in a 1.0 message means the framing is faulty.
            return Err(HttpError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 message",
            ));
        }
        let mut codings = 0usize;
        let mut all_chunked = true;
        for h in headers.iter().filter(|h| is_named(h, "transfer-encoding")) {
            for coding in list_elements(h.value) {
                codings += 1;
                all_chunked &= coding.eq_ignore_ascii_case(b"chunked");
            }
        }
        // Only a lone "chunked": we do not decode gzip etc., and "chunked,
        // chunked" or a trailing coding after chunked has no safe meaning.
        return if codings == 1 && all_chunked {
            Ok(BodyFraming::Chunked)
        } else {
            Err(HttpError::UnsupportedTransferEncoding)
        };
    }
    if has_cl {
        let mut len: Option<u64> = None;
        for h in headers.iter().filter(|h| is_named(h, "content-length")) {
            for item in list_elements(h.value) {
                let n = parse_content_length(item)?;
                match len {
                    Some(prev) if prev != n => return Err(HttpError::AmbiguousFraming),
                    _ => len = Some(n),
                }
            }
        }
        return len
            .map(BodyFraming::ContentLength)
            .ok_or(HttpError::InvalidContentLength);
    }
    Ok(BodyFraming::None)
}

fn is_framing_lookalike(name: &str) -> bool {
    ["content-length", "transfer-encoding"]
        .iter()
        .any(|real| same_field_name(name, real) && !name.eq_ignore_ascii_case(real))
}

/// Whether two field names are the same to a backend that maps header names
/// onto variables: CGI, WSGI and Rack turn `-` into `_` (so `X_Forwarded_For`
/// and `X-Forwarded-For` both become `HTTP_X_FORWARDED_FOR`), and some
/// servers (lighttpd's FastCGI, say) turn every character that is not a
/// letter or digit into `_`. So: case ignored, and every non-alphanumeric
/// byte counts as the same byte.
pub fn same_field_name(a: &str, b: &str) -> bool {
    fn fold(c: u8) -> u8 {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            b'-'
        }
    }
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// 1..=19 ASCII digits (19 always fits in u64): no sign, no hex, no inner space.
fn parse_content_length(item: &[u8]) -> Result<u64, HttpError> {
    if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    Ok(item
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')))
}

/// Connection semantics: `close` always wins; 1.1 is persistent by default,
/// 1.0 only when it asks for keep-alive.
pub(crate) fn keep_alive(headers: &[Header<'_>], minor_version: u8) -> bool {
    if connection_has(headers, "close") {
        false
    } else {
        minor_version >= 1 || connection_has(headers, "keep-alive")
    }
}

/// Whether any Connection header lists `token` (case-insensitive).
pub(crate) fn connection_has(headers: &[Header<'_>], token: &str) -> bool {
    headers
        .iter()
        .filter(|h| is_named(h, "connection"))
        .flat_map(|h| list_elements(h.value))
        .any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// A header survives a hop unless it is hop-by-hop by definition or the
/// sender nominated it in Connection.
pub(crate) fn is_end_to_end(headers: &[Header<'_>], name: &str) -> bool {
    !is_hop_by_hop(name) && !connection_has(headers, name)
}

pub(crate) fn is_named(h: &Header<'_>, name: &str) -> bool {
    h.name.eq_ignore_ascii_case(name)
}

/// Elements of a comma-separated field value, optional whitespace trimmed.
/// Empty elements are kept so strict callers can reject them.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The framing header matching what will actually be sent; `None` and
/// `UntilClose` need none.
pub(crate) fn put_framing(out: &mut Vec<u8>, framing: BodyFraming) {
    match framing {
        BodyFraming::ContentLength(n) => {
            out.extend_from_slice(b"Content-Length: ");
            put_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => put_header(out, b"Transfer-Encoding", b"chunked"),
        BodyFraming::None | BodyFraming::UntilClose => {}
    }
}

pub(crate) fn put_decimal(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a [u8]) -> Header<'a> {
        Header { name, value }
    }

    #[test]
    fn empty_lines() {
        assert_eq!(skip_empty_lines(b"GET"), Ok(Some(0)));
        assert_eq!(skip_empty_lines(b"\r\n\r\nGET"), Ok(Some(4)));
        assert_eq!(skip_empty_lines(b""), Ok(None));
        assert_eq!(skip_empty_lines(b"\r"), Ok(None));
        assert_eq!(skip_empty_lines(b"\r\n"), Ok(None));
        assert!(skip_empty_lines(b"\nGET").is_err());
        assert!(skip_empty_lines(b"\rGET").is_err());
        assert!(skip_empty_lines(b"\r\n\r\n\r\n\r\n\r\nGET").is_err());
    }

    #[test]
    fn line_endings() {
        assert!(check_line_endings(b"a\r\nb\r\n\r\n").is_ok());
        assert!(check_line_endings(b"a\nb\r\n\r\n").is_err());
        assert!(check_line_endings(b"a\r\nb\r\n\n").is_err());
    }

    #[test]
    fn content_length_items() {
        assert_eq!(parse_content_length(b"0"), Ok(0));
        assert_eq!(
            parse_content_length(b"9999999999999999999"),
            Ok(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"+5",
            b"-5",
            b"0x5",
            b"5 5",
            b"99999999999999999999",
            b"5\x0b",
        ] {
            assert_eq!(
                parse_content_length(bad),
                Err(HttpError::InvalidContentLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn framing_rules() {
        let f = |hs: &[Header<'_>]| declared_framing(hs, 1);
        assert_eq!(f(&[]), Ok(BodyFraming::None));
        assert_eq!(
            f(&[h("content-length", b"5"), h("Content-Length", b"5")]),
            Ok(BodyFraming::ContentLength(5))
        );
        assert_eq!(
            f(&[h("Content-Length", b"5, 5")]),
            Ok(BodyFraming::ContentLength(5))
        );
        assert_eq!(
            f(&[h("Content-Length", b"5,,5")]),
            Err(HttpError::InvalidContentLength)
        );
        assert_eq!(
            f(&[h("Transfer-Encoding", b"chunked")]),
            Ok(BodyFraming::Chunked)
        );
        assert_eq!(
            f(&[h("Transfer-Encoding", b"")]),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            f(&[
                h("Transfer-Encoding", b"chunked"),
                h("Transfer-Encoding", b"chunked")
            ]),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            f(&[h("Transfer-Encoding", b"chunked;q=1")]),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        assert!(matches!(
            declared_framing(&[h("Transfer-Encoding", b"chunked")], 0),
            Err(HttpError::Malformed(_))
        ));
        for name in ["Transfer_Encoding", "content_length", "CONTENT_LENGTH"] {
            assert!(
                matches!(f(&[h(name, b"5")]), Err(HttpError::Malformed(_))),
                "{name}"
            );
        }
        assert_eq!(f(&[h("X_Content_Length", b"5")]), Ok(BodyFraming::None));
        // Every punctuation spelling folds the same way for lighttpd-style servers.
        for name in ["Content.Length", "transfer~encoding", "Transfer_encoding"] {
            assert!(
                matches!(f(&[h(name, b"5")]), Err(HttpError::Malformed(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn field_names_fold_like_cgi() {
        for (a, b) in [
            ("X_Forwarded_For", "x-forwarded-for"),
            ("x.forwarded.for", "X-Forwarded-For"),
            ("X-SSL-CLIENT-SUBJECT", "x_ssl_client_subject"),
            ("a~b", "A-B"),
            ("", ""),
        ] {
            assert!(same_field_name(a, b), "{a} vs {b}");
        }
        for (a, b) in [
            ("X-Forwarded-For", "X-Forwarded-Fo"),
            ("XForwardedFor", "X-Forwarded-For"),
            ("X-Forwarded-For2", "X-Forwarded-For-"),
            ("X-Forwarded-F0r", "X-Forwarded-For"),
        ] {
            assert!(!same_field_name(a, b), "{a} vs {b}");
        }
    }

    #[test]
    fn connection_tokens() {
        let hs = [
            h("Connection", b"Keep-Alive, X-Secret"),
            h("connection", b" close "),
        ];
        assert!(connection_has(&hs, "close"));
        assert!(connection_has(&hs, "x-secret"));
        assert!(!is_end_to_end(&hs, "X-Secret"));
        assert!(is_end_to_end(&hs, "X-Other"));
        assert!(!keep_alive(&hs, 1));
        assert!(keep_alive(&[], 1));
        assert!(!keep_alive(&[], 0));
        assert!(keep_alive(&[h("Connection", b"keep-alive")], 0));
    }

    #[test]
    fn version_errors() {
        let e = |line: &[u8], field| map_parse_error(httparse::Error::Version, line, field);
        assert_eq!(e(b"GET / HTTP/2.0\r\n", 2), HttpError::UnsupportedVersion);
        assert_eq!(e(b"GET / HTTP/0.9\r\n", 2), HttpError::UnsupportedVersion);
        assert!(matches!(
            e(b"GET /  HTTP/1.1\r\n", 2),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            e(b"GET / FOO/1.1\r\n", 2),
            HttpError::Malformed(_)
        ));
        assert_eq!(e(b"HTTP/3.0 200 OK\r\n", 0), HttpError::UnsupportedVersion);
    }
}
