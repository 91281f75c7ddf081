//! Backend response heads and the head relayed to the client; the gateway's
//! own JSON error responses are in `error_page`.
//!
//! A backend is trusted less than it seems: a response whose framing is
//! ambiguous would desynchronise the pooled backend connection, so the same
//! strict rules as for requests apply.

use super::head::{self, is_named};
use super::{BodyFraming, HttpError, Limits, Parsed};

// The gateway's own error responses live in their own file; the API is here.
mod error_page;
pub use error_page::{
    reason_phrase, write_error_body, write_error_response, write_error_response_head,
};

/// A parsed response head; everything borrows from the caller's buffer.
pub struct Response<'h, 'b> {
    pub status: u16,
    /// Empty when absent or when it held non-ASCII bytes (httparse's choice).
    pub reason: &'b str,
    pub minor_version: u8,
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head including the final CRLFCRLF.
    pub head_len: usize,
    /// `None` for 1xx, 204, 304 and responses to HEAD; otherwise Chunked,
    /// ContentLength, or UntilClose when neither header is present.
    pub framing: BodyFraming,
    /// The backend connection can be reused after this response.
    pub keep_alive: bool,
}

/// Parse one response head from the start of `buf`; same `Partial` and limit
/// rules as `parse_request`. `request_was_head` forces `BodyFraming::None`.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    limits: &Limits,
    request_was_head: bool,
) -> Result<Parsed<Response<'h, 'b>>, HttpError> {
    let window = head::window(buf, limits);
    let Some(skip) = head::skip_empty_lines(window)? else {
        return head::incomplete(buf, limits);
    };
    let cap = headers.len().min(limits.max_headers);
    let mut raw = httparse::Response::new(&mut headers[..cap]);
    let len = match raw.parse(&window[skip..]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return head::incomplete(buf, limits),
        Err(e) => return Err(head::map_parse_error(e, &window[skip..], 0)),
    };
    head::check_line_endings(&window[skip..skip + len])?;

    let bad_line = HttpError::Malformed("invalid status line");
    let status = raw.code.ok_or(bad_line.clone())?;
    let minor_version = raw.version.ok_or(bad_line.clone())?;
    let reason = raw.reason.unwrap_or("");
    let headers: &'h [httparse::Header<'b>] = raw.headers;
    if status < 100 {
        return Err(bad_line);
    }

    // Validate framing headers even when they will be ignored: a backend that
    // sends nonsense there is broken and should not be pooled.
    let declared = head::declared_framing(headers, minor_version)?;
    let bodiless = request_was_head || status < 200 || status == 204 || status == 304;
    let framing = match declared {
        _ if bodiless => BodyFraming::None,
        BodyFraming::None => BodyFraming::UntilClose,
        other => other,
    };
    let keep_alive = framing != BodyFraming::UntilClose && head::keep_alive(headers, minor_version);

    Ok(Parsed::Complete(Response {
        status,
        reason,
        minor_version,
        headers,
        head_len: skip + len,
        framing,
        keep_alive,
    }))
}

/// Append the head relayed to the client: always HTTP/1.1, the backend's
/// end-to-end headers minus Content-Length, then framing for how the proxy
/// will actually send the body, then `Connection: close` when it will close.
pub fn write_client_response_head(
    resp: &Response<'_, '_>,
    client_framing: BodyFraming,
    client_keep_alive: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    head::put_decimal(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in resp.headers {
        if is_named(h, "content-length") || !head::is_end_to_end(resp.headers, h.name) {
            continue;
        }
        head::put_header(out, h.name.as_bytes(), h.value);
    }
    head::put_framing(out, client_framing);
    if !client_keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The backend's fields an HTTP/2 client may get (RFC 9113 section
/// 8.2.2): the end-to-end ones, minus Content-Length when the client's
/// framing is not that same length (the stream's END_STREAM ends the body).
pub fn h2_response_fields<'r, 'b>(
    resp: &'r Response<'_, 'b>,
) -> impl Iterator<Item = &'r httparse::Header<'b>> + 'r {
    let keep_length = matches!(resp.framing, BodyFraming::ContentLength(_));
    resp.headers.iter().filter(move |h| {
        if is_named(h, "content-length") {
            return keep_length;
        }
        head::is_end_to_end(resp.headers, h.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use httparse::{Header, EMPTY_HEADER};

    const LIMITS: Limits = Limits {
        max_header_bytes: 4096,
        max_headers: 16,
    };

    fn parse<'h, 'b>(
        buf: &'b [u8],
        hs: &'h mut [Header<'b>],
        head: bool,
    ) -> Result<Response<'h, 'b>, HttpError> {
        match parse_response(buf, hs, &LIMITS, head)? {
            Parsed::Complete(r) => Ok(r),
            Parsed::Partial => Err(HttpError::Malformed("test: unexpected Partial")),
        }
    }

    fn framing(buf: &[u8], head: bool) -> Result<(BodyFraming, bool), HttpError> {
        let mut hs = [EMPTY_HEADER; 16];
        parse(buf, &mut hs, head).map(|r| (r.framing, r.keep_alive))
    }

    #[test]
    fn simple_and_pipelined() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nhiHTTP/1.1 204 No Content\r\n\r\n";
        let mut hs = [EMPTY_HEADER; 16];
        let r = parse(buf, &mut hs, false).unwrap();
        assert_eq!(
            (r.status, r.reason, r.minor_version, r.head_len),
            (200, "OK", 1, 44)
        );
        assert_eq!(
            (r.framing, r.keep_alive),
            (BodyFraming::ContentLength(2), true)
        );
        assert_eq!(&buf[r.head_len..r.head_len + 2], b"hi");
        for i in 0..r.head_len {
            let mut hs = [EMPTY_HEADER; 16];
            assert!(
                matches!(
                    parse_response(&buf[..i], &mut hs, &LIMITS, false),
                    Ok(Parsed::Partial)
                ),
                "{i}"
            );
        }
    }

    #[test]
    fn bodiless_framing() {
        let none = Ok((BodyFraming::None, true));
        assert_eq!(framing(b"HTTP/1.1 204 No Content\r\n\r\n", false), none);
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
                false
            ),
            none
        );
        assert_eq!(framing(b"HTTP/1.1 100 Continue\r\n\r\n", false), none);
        assert_eq!(framing(b"HTTP/1.1 101 Switching\r\n\r\n", false), none);
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true),
            none
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                true
            ),
            none
        );
    }

    #[test]
    fn body_framing_and_keep_alive() {
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Ok((BodyFraming::Chunked, true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((BodyFraming::UntilClose, false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            Ok((BodyFraming::ContentLength(1), false))
        );
        assert_eq!(
            framing(
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
                false
            ),
            Ok((BodyFraming::ContentLength(1), true))
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
                false
            ),
            Ok((BodyFraming::ContentLength(1), false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false),
            Ok((BodyFraming::ContentLength(0), true))
        );
    }

    #[test]
    fn hostile_responses() {
        let e = |b: &[u8]| framing(b, false).err();
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(HttpError::AmbiguousFraming)
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Some(HttpError::AmbiguousFraming)
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(HttpError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Some(HttpError::InvalidContentLength)
        );
        assert_eq!(
            e(b"HTTP/2.0 200 OK\r\n\r\n"),
            Some(HttpError::UnsupportedVersion)
        );
        for bad in [
            &b"HTTP/1.1 200 OK\nContent-Length: 1\n\n"[..],
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: \0\r\n\r\n",
        ] {
            assert!(
                matches!(e(bad), Some(HttpError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let small = Limits {
            max_header_bytes: 20,
            max_headers: 16,
        };
        let mut hs = [EMPTY_HEADER; 16];
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n",
            &mut hs,
            &small,
            false,
        );
        assert_eq!(r.err(), Some(HttpError::HeadTooLarge));
    }

    #[test]
    fn client_head() {
        let buf = b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\n\
            Content-Type: text/plain\r\nContent-Length: 5\r\nTrailer: X\r\nSet-Cookie: a=b\r\n\r\n";
        let mut hs = [EMPTY_HEADER; 16];
        let r = parse(buf, &mut hs, false).unwrap();
        let mut out = Vec::new();
        write_client_response_head(&r, BodyFraming::ContentLength(5), true, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=b\r\nContent-Length: 5\r\n\r\n"
        );
        let mut out = Vec::new();
        write_client_response_head(&r, BodyFraming::Chunked, false, &mut out);
        assert!(out.ends_with(
            b"Set-Cookie: a=b\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ));
        let mut out = Vec::new();
        write_client_response_head(&r, BodyFraming::UntilClose, false, &mut out);
        assert!(out.ends_with(b"Set-Cookie: a=b\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn h2_fields_drop_connection_fields() {
        let names = |buf: &[u8], head: bool| {
            let mut hs = [EMPTY_HEADER; 16];
            let r = parse(buf, &mut hs, head).unwrap();
            h2_response_fields(&r)
                .map(|h| h.name.to_string())
                .collect::<Vec<_>>()
        };
        let buf = b"HTTP/1.1 200 OK\r\nConnection: x-a, keep-alive\r\nX-A: 1\r\nKeep-Alive: 5\r\n\
            Content-Length: 2\r\nX-B: 2\r\nUpgrade: h2c\r\n\r\nhi";
        assert_eq!(names(buf, false), ["Content-Length", "X-B"]);
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-B: 2\r\n\r\n";
        assert_eq!(names(chunked, false), ["X-B"]);
        // A HEAD response keeps nothing it cannot send: its framing is None.
        assert_eq!(
            names(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
            Vec::<String>::new()
        );
    }
}
