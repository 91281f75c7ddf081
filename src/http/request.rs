//! Client request heads: strict parsing (here) and the rewritten head sent to
//! a backend (`forward`).
//!
//! The parser decides framing once and the writer re-emits framing from that
//! decision (never the client's own Content-Length / Transfer-Encoding bytes),
//! so the backend can only ever see the message boundaries we saw.

use super::head::{self, is_named};
use super::{BodyFraming, HttpError, Limits, Parsed};

// Head rewriting for the backend hop lives in its own file; the API is here.
mod forward;
// HTTP/2 heads as the same view (`Request::from_parts`).
mod h2;
pub use super::head::same_field_name;
pub use forward::{forwarded_for, is_gateway_owned, write_backend_request_head, ForwardContext};
pub use h2::join_cookies;

/// A parsed request head; everything borrows from the caller's buffer.
pub struct Request<'h, 'b> {
    pub method: &'b str,
    /// Origin-form `/path?query`, or `*` for OPTIONS.
    pub target: &'b str,
    /// 0 or 1.
    pub minor_version: u8,
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head including leading empty lines and the final CRLFCRLF:
    /// the body (or the next pipelined request) starts here.
    pub head_len: usize,
    /// The Host value, trimmed; always present for 1.1.
    pub host: Option<&'b str>,
    /// `None` when there is no body; CL: 0 gives `ContentLength(0)`.
    pub framing: BodyFraming,
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a 1.1 request (RFC 9110 says ignore it on 1.0).
    pub expect_continue: bool,
}

impl Request<'_, '_> {
    /// The target up to (not including) `?`.
    pub fn path(&self) -> &str {
        match self.target.split_once('?') {
            Some((path, _)) => path,
            None => self.target,
        }
    }

    /// The target after `?`, if there is a `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// Parse one request head from the start of `buf`.
///
/// `headers` is caller storage; at most `min(headers.len(), limits.max_headers)`
/// fields are accepted, more is `TooManyHeaders`. `Partial` means read more and
/// call again with the grown buffer; once `buf` holds `max_header_bytes` without
/// a complete head the answer is `HeadTooLarge`.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &Limits,
) -> Result<Parsed<Request<'h, 'b>>, HttpError> {
    let window = head::window(buf, limits);
    let Some(skip) = head::skip_empty_lines(window)? else {
        return head::incomplete(buf, limits);
    };
    let cap = headers.len().min(limits.max_headers);
    let mut raw = httparse::Request::new(&mut headers[..cap]);
    let len = match raw.parse(&window[skip..]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return head::incomplete(buf, limits),
        Err(e) => return Err(head::map_parse_error(e, &window[skip..], 2)),
    };
    head::check_line_endings(&window[skip..skip + len])?;

    let bad_line = HttpError::Malformed("invalid request line");
    let method = raw.method.ok_or(bad_line.clone())?;
    let target = raw.path.ok_or(bad_line.clone())?;
    let minor_version = raw.version.ok_or(bad_line)?;
    let headers: &'h [httparse::Header<'b>] = raw.headers;
    check_target(method, target)?;

    let host = host_header(headers)?;
    if host.is_none() && minor_version == 1 {
        return Err(HttpError::MissingHost);
    }
    let framing = head::declared_framing(headers, minor_version)?;
    let expect_continue = minor_version == 1
        && headers
            .iter()
            .any(|h| is_named(h, "expect") && h.value.eq_ignore_ascii_case(b"100-continue"));

    Ok(Parsed::Complete(Request {
        method,
        target,
        minor_version,
        headers,
        head_len: skip + len,
        host,
        framing,
        keep_alive: head::keep_alive(headers, minor_version),
        expect_continue,
    }))
}

/// Only origin-form (and `*` for OPTIONS): routing is by Host, and an
/// absolute-form target would give a second, conflicting authority.
fn check_target(method: &str, target: &str) -> Result<(), HttpError> {
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(())
        } else {
            Err(HttpError::Malformed(
                "asterisk target is only allowed with OPTIONS",
            ))
        };
    }
    if !target.starts_with('/') {
        return Err(HttpError::Malformed("request target must be origin-form"));
    }
    // httparse lets UTF-8 through; URIs are ASCII, and a fragment is never sent.
    if !target.is_ascii() || target.contains('#') {
        return Err(HttpError::Malformed("invalid request target"));
    }
    Ok(())
}

/// The single Host value. Its characters are limited to those of an
/// authority (RFC 3986 reg-name / IP-literal / port) because it drives routing.
fn host_header<'b>(headers: &[httparse::Header<'b>]) -> Result<Option<&'b str>, HttpError> {
    let mut found: Option<&'b [u8]> = None;
    for h in headers.iter().filter(|h| is_named(h, "host")) {
        if found.is_some() {
            return Err(HttpError::MissingHost);
        }
        found = Some(h.value);
    }
    let Some(value) = found else { return Ok(None) };
    check_authority(head::trim_ows(value)).map(Some)
}

/// A Host value or an HTTP/2 `:authority`: only the characters of an
/// authority (RFC 3986 reg-name / IP-literal / port; no userinfo).
fn check_authority(value: &[u8]) -> Result<&str, HttpError> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(b);
    if !value.iter().all(allowed) {
        return Err(HttpError::Malformed("invalid Host header"));
    }
    std::str::from_utf8(value).map_err(|_| HttpError::Malformed("invalid Host header"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use httparse::{Header, EMPTY_HEADER};

    const LIMITS: Limits = Limits {
        max_header_bytes: 8192,
        max_headers: 32,
    };

    fn parse<'h, 'b>(
        buf: &'b [u8],
        hs: &'h mut [Header<'b>],
    ) -> Result<Request<'h, 'b>, HttpError> {
        match parse_request(buf, hs, &LIMITS)? {
            Parsed::Complete(r) => Ok(r),
            Parsed::Partial => Err(HttpError::Malformed("test: unexpected Partial")),
        }
    }

    fn err(buf: &[u8]) -> HttpError {
        let mut hs = [EMPTY_HEADER; 32];
        match parse(buf, &mut hs) {
            Err(e) => e,
            Ok(_) => panic!("accepted: {:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Framing of a 1.1 POST with the given extra header lines.
    fn post(extra: &str) -> Result<BodyFraming, HttpError> {
        let buf = format!("POST /u HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        let mut hs = [EMPTY_HEADER; 32];
        parse(buf.as_bytes(), &mut hs).map(|r| r.framing)
    }

    fn with_limits(buf: &[u8], bytes: usize, count: usize) -> Result<bool, HttpError> {
        let limits = Limits {
            max_header_bytes: bytes,
            max_headers: count,
        };
        let mut hs = [EMPTY_HEADER; 8];
        parse_request(buf, &mut hs, &limits).map(|p| matches!(p, Parsed::Complete(_)))
    }

    #[test]
    fn simple_get() {
        let buf = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com \r\nAccept: */*\r\n\r\n";
        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(buf, &mut hs).unwrap();
        assert_eq!(
            (r.method, r.target, r.minor_version),
            ("GET", "/a/b?x=1&y", 1)
        );
        assert_eq!((r.path(), r.query()), ("/a/b", Some("x=1&y")));
        assert_eq!(
            (r.host, r.head_len, r.headers.len()),
            (Some("example.com"), buf.len(), 2)
        );
        assert_eq!(r.framing, BodyFraming::None);
        assert!(r.keep_alive && !r.expect_continue);
    }

    #[test]
    fn pipelined_and_leading_crlf() {
        let first = b"\r\n\r\nPOST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\
            Expect: 100-Continue\r\n\r\n";
        let mut buf = first.to_vec();
        buf.extend_from_slice(b"abcGET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(&buf, &mut hs).unwrap();
        assert_eq!(
            (r.head_len, r.framing),
            (first.len(), BodyFraming::ContentLength(3))
        );
        assert!(r.expect_continue);
        assert_eq!(&buf[r.head_len..r.head_len + 3], b"abc");
        let many = b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(
            err(many),
            HttpError::Malformed("too many empty lines before start line")
        );
    }

    #[test]
    fn partial_at_every_split() {
        let buf = b"\r\nPUT /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        for i in 0..buf.len() {
            assert_eq!(with_limits(&buf[..i], 8192, 8), Ok(false), "split {i}");
        }
        let mut hs = [EMPTY_HEADER; 32];
        assert_eq!(parse(buf, &mut hs).unwrap().framing, BodyFraming::Chunked);
    }

    #[test]
    fn limits() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: aaaaaaaaaaaaaaaaa\r\n\r\n";
        assert_eq!(with_limits(&buf[..39], 40, 8), Ok(false));
        assert_eq!(with_limits(&buf[..40], 40, 8), Err(HttpError::HeadTooLarge));
        assert_eq!(with_limits(buf, 40, 8), Err(HttpError::HeadTooLarge));
        assert_eq!(with_limits(buf, buf.len(), 8), Ok(true)); // exactly at the limit
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(with_limits(buf, 8192, 2), Err(HttpError::TooManyHeaders));
        assert_eq!(with_limits(buf, 8192, 3), Ok(true));
        let mut two = [EMPTY_HEADER; 2]; // the caller's storage is a cap too
        assert_eq!(
            parse_request(buf, &mut two, &LIMITS).err(),
            Some(HttpError::TooManyHeaders)
        );
    }

    #[test]
    fn content_length_smuggling() {
        let ok = |n| Ok(BodyFraming::ContentLength(n));
        assert_eq!(post("Content-Length: 5\r\nContent-Length: 5\r\n"), ok(5));
        assert_eq!(post("Content-Length: 0\r\n"), ok(0));
        assert_eq!(post("Content-Length: 007\r\ncontent-length: 7\r\n"), ok(7));
        for ambiguous in [
            "Content-Length: 5\r\ncontent-length: 6\r\n",
            "Content-Length: 5, 6\r\n",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: x\r\n",
        ] {
            assert_eq!(
                post(ambiguous),
                Err(HttpError::AmbiguousFraming),
                "{ambiguous:?}"
            );
        }
        for bad in [
            "+5",
            "-1",
            "0x5",
            " 5 5",
            "5 5",
            "",
            "5;",
            "1e3",
            "99999999999999999999",
        ] {
            let got = post(&format!("Content-Length: {bad}\r\n"));
            assert_eq!(got, Err(HttpError::InvalidContentLength), "{bad:?}");
        }
        // Classic desync spellings: space before the colon, underscore for dash.
        for bad in [
            "Content-Length : 5\r\n",
            "Content_Length: 5\r\n",
            "Transfer_Encoding: chunked\r\n",
        ] {
            assert!(matches!(post(bad), Err(HttpError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn transfer_encoding() {
        let te = |v: &str| post(&format!("Transfer-Encoding: {v}\r\n"));
        assert_eq!(te("chunked"), Ok(BodyFraming::Chunked));
        assert_eq!(te("Chunked"), Ok(BodyFraming::Chunked));
        for bad in [
            "chunked, gzip",
            "gzip",
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "chunked,",
            "chunked;x=1",
        ] {
            assert_eq!(
                te(bad),
                Err(HttpError::UnsupportedTransferEncoding),
                "{bad:?}"
            );
        }
        assert!(matches!(te("\x0bchunked"), Err(HttpError::Malformed(_)))); // httparse: CTL in value
        let buf = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(err(buf), HttpError::Malformed(_)));
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), HttpError::MissingHost);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
            HttpError::MissingHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
            HttpError::MissingHost
        );
        assert!(matches!(
            err(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        assert!(matches!(
            err(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            HttpError::Malformed(_)
        ));
        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(b"GET / HTTP/1.0\r\n\r\n", &mut hs).unwrap();
        assert_eq!((r.host, r.minor_version, r.keep_alive), (None, 0, false));
        let mut hs = [EMPTY_HEADER; 32];
        let buf = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nExpect: 100-continue\r\n\r\n";
        let r = parse(buf, &mut hs).unwrap();
        assert!(r.keep_alive && !r.expect_continue);
        let mut hs = [EMPTY_HEADER; 32];
        let buf = b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\nConnection: close\r\n\r\n";
        let r = parse(buf, &mut hs).unwrap();
        assert_eq!((r.host, r.keep_alive), (Some("[::1]:8443"), false));
    }

    #[test]
    fn start_line_rules() {
        for bad in [
            &b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".as_bytes(),
            b"GET /#f HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /  HTTP/1.1\r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b" GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(err(bad), HttpError::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            err(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        assert_eq!(
            err(b"GET / HTTP/1.2\r\n\r\n"),
            HttpError::UnsupportedVersion
        );
        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &mut hs).unwrap();
        assert_eq!((r.path(), r.query()), ("*", None));
    }

    #[test]
    fn hostile_bytes() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"[..], // NUL
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",      // bare CR in value
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",   // obs-fold
            b"GET / HTTP/1.1\r\nHost: a\r\nX\0: a\r\n\r\n",       // NUL in name
            b"GET / HTTP/1.1\nHost: a\n\n",                       // bare LF lines
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",                   // bare LF end of head
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n",          // bare CR line
        ] {
            assert!(
                matches!(err(bad), HttpError::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
