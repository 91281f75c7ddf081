//! The request head sent to a backend.
//!
//! Framing headers are re-emitted from the proxy's decision, never copied from
//! the client, so the backend can only see the message boundaries we saw.

use super::Request;
use crate::http::head::{self, is_named};
use crate::http::BodyFraming;
use std::net::IpAddr;

/// What the proxy knows about the hop to the backend.
pub struct ForwardContext<'a> {
    pub client_ip: IpAddr,
    /// Scheme the client used, e.g. "https".
    pub proto: &'a str,
    /// Route override of Host.
    pub set_host: Option<&'a str>,
    /// What the backend will be sent: `None`, `ContentLength(n)` or `Chunked`.
    pub framing: BodyFraming,
    /// The request target to send instead of the client's (a path rewrite).
    pub target: Option<&'a str>,
    /// Lowercased names of client headers to drop (identity headers, route removals).
    pub strip: &'a [&'a [String]],
    /// Headers the route sets: client copies of these names are dropped too.
    pub strip_set: &'a [(String, String)],
    /// Complete `Name: value\r\n` lines appended after the gateway's own.
    pub extra_headers: &'a [u8],
}

impl ForwardContext<'_> {
    fn strips(&self, name: &str) -> bool {
        self.strip
            .iter()
            .flat_map(|list| list.iter())
            .any(|n| name.eq_ignore_ascii_case(n))
            || self
                .strip_set
                .iter()
                .any(|(n, _)| name.eq_ignore_ascii_case(n))
    }
}

/// Append to `out` the head to send to the backend.
///
/// Client headers keep their order and case, minus hop-by-hop ones (and any
/// the client nominated in Connection), Expect (the gateway answers 100-continue
/// itself), Content-Length (re-emitted from `ctx.framing`), Host,
/// X-Forwarded-For and X-Forwarded-Proto (re-emitted below). No Connection
/// header: HTTP/1.1 backends keep the connection open by default.
pub fn write_backend_request_head(
    req: &Request<'_, '_>,
    ctx: &ForwardContext<'_>,
    out: &mut Vec<u8>,
) {
    const REWRITTEN: [&str; 5] = [
        "expect",
        "content-length",
        "host",
        "x-forwarded-proto",
        "x-forwarded-for",
    ];

    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(ctx.target.unwrap_or(req.target).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    for h in req.headers {
        if REWRITTEN.iter().any(|n| is_named(h, n))
            || !head::is_end_to_end(req.headers, h.name)
            || ctx.strips(h.name)
        {
            continue;
        }
        head::put_header(out, h.name.as_bytes(), h.value);
    }

    // A 1.0 client may omit Host; RFC 9112 §3.2 says send it empty then.
    let host = ctx.set_host.or(req.host).unwrap_or("");
    head::put_header(out, b"Host", host.as_bytes());

    out.extend_from_slice(b"X-Forwarded-For: ");
    if head::is_end_to_end(req.headers, "x-forwarded-for") {
        for h in req
            .headers
            .iter()
            .filter(|h| is_named(h, "x-forwarded-for"))
        {
            let prior = head::trim_ows(h.value);
            if !prior.is_empty() {
                out.extend_from_slice(prior);
                out.extend_from_slice(b", ");
            }
        }
    }
    // Display gives IPv6 without brackets, as XFF wants.
    let _ = std::io::Write::write_fmt(out, format_args!("{}\r\n", ctx.client_ip));

    head::put_header(out, b"X-Forwarded-Proto", ctx.proto.as_bytes());
    out.extend_from_slice(ctx.extra_headers);
    head::put_framing(out, ctx.framing);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_request;
    use crate::http::{Limits, Parsed};
    use httparse::EMPTY_HEADER;

    fn parse<'h, 'b>(buf: &'b [u8], hs: &'h mut [httparse::Header<'b>]) -> Request<'h, 'b> {
        let limits = Limits {
            max_header_bytes: 8192,
            max_headers: 32,
        };
        match parse_request(buf, hs, &limits) {
            Ok(Parsed::Complete(r)) => r,
            _ => panic!("test request did not parse"),
        }
    }

    #[test]
    fn forward_head() {
        let buf = b"POST /api?q=1 HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 1.1.1.1\r\n\
            Connection: keep-alive, X-Drop\r\nX-Drop: secret\r\nTE: trailers\r\nUpgrade: h2c\r\n\
            Keep-Alive: 5\r\nX-Forwarded-Proto: http\r\nx-forwarded-for: 2.2.2.2\r\nAccept: */*\r\n\
            Expect: 100-continue\r\nContent-Length: 4\r\nProxy-Authorization: x\r\n\r\n";
        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(buf, &mut hs);
        let ctx = ForwardContext {
            client_ip: "2001:db8::1".parse().unwrap(),
            proto: "https",
            set_host: Some("backend.internal:8080"),
            framing: BodyFraming::Chunked,
            target: None,
            strip: &[],
            strip_set: &[],
            extra_headers: b"",
        };
        let mut out = Vec::new();
        write_backend_request_head(&r, &ctx, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /api?q=1 HTTP/1.1\r\nAccept: */*\r\nHost: backend.internal:8080\r\n\
             X-Forwarded-For: 1.1.1.1, 2.2.2.2, 2001:db8::1\r\nX-Forwarded-Proto: https\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );

        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(b"GET / HTTP/1.0\r\nX-A: b\r\n\r\n", &mut hs);
        let ctx = ForwardContext {
            client_ip: "10.0.0.7".parse().unwrap(),
            proto: "https",
            set_host: None,
            framing: BodyFraming::ContentLength(0),
            target: None,
            strip: &[],
            strip_set: &[],
            extra_headers: b"",
        };
        let mut out = Vec::new();
        write_backend_request_head(&r, &ctx, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET / HTTP/1.1\r\nX-A: b\r\nHost: \r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn identity_headers_are_stripped_and_rules_applied() {
        let buf = b"GET /api/users?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\
            client-cert: :Zm9yZ2Vk:\r\nX-Debug: 1\r\nX-Env: dev\r\nAccept: */*\r\n\r\n";
        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(buf, &mut hs);
        let identity = vec![
            "x-forwarded-client-cert".to_string(),
            "client-cert".to_string(),
        ];
        let removed = vec!["x-debug".to_string()];
        let set = vec![("X-Env".to_string(), "prod".to_string())];
        let ctx = ForwardContext {
            client_ip: "10.0.0.7".parse().unwrap(),
            proto: "https",
            set_host: Some("api-mtls.virtual.example"),
            framing: BodyFraming::ContentLength(0),
            target: Some("/v2/users?x=1"),
            strip: &[&identity, &removed],
            strip_set: &set,
            extra_headers: b"X-Env: prod\r\nX-Forwarded-Client-Cert: Hash=real\r\n",
        };
        let mut out = Vec::new();
        write_backend_request_head(&r, &ctx, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /v2/users?x=1 HTTP/1.1\r\nAccept: */*\r\nHost: api-mtls.virtual.example\r\n\
             X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\nX-Env: prod\r\n\
             X-Forwarded-Client-Cert: Hash=real\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
