//! The request head sent to a backend.
//!
//! Framing headers are re-emitted from the proxy's decision, never copied from
//! the client, so the backend can only see the message boundaries we saw.
//! Headers a backend trusts (who the client is, how it connected, which
//! certificate it showed) are the gateway's alone: every client copy is
//! dropped, in any case and any punctuation a backend might fold together
//! (`X_Forwarded_For` is `HTTP_X_FORWARDED_FOR` to CGI, WSGI and Rack), and
//! the gateway writes its own.

use super::Request;
use crate::http::head::{self, is_named, same_field_name};
use crate::http::BodyFraming;
use std::net::IpAddr;

/// What the proxy knows about the hop to the backend.
pub struct ForwardContext<'a> {
    /// The address this hop came from: the TCP peer, or the source a trusted
    /// PROXY header named. Appended to X-Forwarded-For.
    pub peer_ip: IpAddr,
    /// The client, as `trusted_proxies` decided it (the peer unless the peer
    /// is a trusted proxy): sent as X-Real-IP.
    pub client_ip: IpAddr,
    /// The peer is a trusted proxy: its X-Forwarded-For is kept and appended
    /// to. Otherwise the client's is dropped and ours names the peer alone.
    pub keep_forwarded_for: bool,
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
            .any(|n| same_field_name(name, n))
            || self.strip_set.iter().any(|(n, _)| same_field_name(name, n))
    }
}

/// Client headers that never pass: the ones the gateway re-emits itself
/// (Host, framing, X-Forwarded-For/-Proto/-Host, X-Real-IP), hop-by-hop ones,
/// Expect (the gateway answers 100-continue), and the other names backends
/// and frameworks read a client address or scheme from. `Forwarded` (RFC
/// 7239) is dropped and not written: the gateway speaks one dialect, so a
/// backend that reads `Forwarded` cannot be handed a forged one. `Proxy` is
/// httpoxy (CVE-2016-5385): CGI turns it into the `HTTP_PROXY` variable
/// that HTTP client libraries take as their outbound proxy.
pub const GATEWAY_OWNED: [&str; 19] = [
    "host",
    "expect",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "proxy",
];

/// ... and every name that starts with this.
pub const GATEWAY_OWNED_PREFIX: &str = "x-forwarded-";

/// Whether a client header of this name is dropped whatever the route says
/// (compared as a CGI backend would, see `same_field_name`). The whole
/// `X-Forwarded-*` family belongs to the gateway: For, Proto and Host are
/// written below, and Port, Prefix, Ssl, Scheme ... would let a client lie
/// to frameworks that read them (werkzeug's ProxyFix, Rack).
pub fn is_gateway_owned(name: &str) -> bool {
    GATEWAY_OWNED.iter().any(|n| same_field_name(name, n))
        || name
            .get(..GATEWAY_OWNED_PREFIX.len())
            .is_some_and(|prefix| same_field_name(prefix, GATEWAY_OWNED_PREFIX))
}

/// Append to `out` the head to send to the backend.
///
/// Client headers keep their order and case, minus hop-by-hop ones (and any
/// the client nominated in Connection), gateway-owned ones (above), and the
/// context's strip lists. Then Host, X-Forwarded-For, X-Forwarded-Proto,
/// X-Forwarded-Host (the client's Host, when it sent one), X-Real-IP, the
/// route's extra lines, and framing. No Connection header: HTTP/1.1 backends
/// keep the connection open by default.
pub fn write_backend_request_head(
    req: &Request<'_, '_>,
    ctx: &ForwardContext<'_>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(ctx.target.unwrap_or(req.target).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    for h in req.headers {
        if is_gateway_owned(h.name)
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
    if ctx.keep_forwarded_for && head::is_end_to_end(req.headers, "x-forwarded-for") {
        for prior in forwarded_for(req) {
            let prior = head::trim_ows(prior);
            if !prior.is_empty() {
                out.extend_from_slice(prior);
                out.extend_from_slice(b", ");
            }
        }
    }
    // Display gives IPv6 without brackets, as XFF wants.
    let _ = std::io::Write::write_fmt(out, format_args!("{}\r\n", ctx.peer_ip));
    head::put_header(out, b"X-Forwarded-Proto", ctx.proto.as_bytes());
    if let Some(original) = req.host {
        head::put_header(out, b"X-Forwarded-Host", original.as_bytes());
    }
    let _ = std::io::Write::write_fmt(out, format_args!("X-Real-IP: {}\r\n", ctx.client_ip));
    out.extend_from_slice(ctx.extra_headers);
    head::put_framing(out, ctx.framing);
    out.extend_from_slice(b"\r\n");
}

/// The values of the request's `X-Forwarded-For` fields, in order (exactly
/// that name: a look-alike spelling is never believed, only dropped).
pub fn forwarded_for<'r, 'b>(
    req: &'r Request<'_, 'b>,
) -> impl DoubleEndedIterator<Item = &'b [u8]> + 'r {
    req.headers
        .iter()
        .filter(|h| is_named(h, "x-forwarded-for"))
        .map(|h| h.value)
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

    fn context<'a>(peer: &str, client: &str, keep: bool) -> ForwardContext<'a> {
        ForwardContext {
            peer_ip: peer.parse().unwrap(),
            client_ip: client.parse().unwrap(),
            keep_forwarded_for: keep,
            proto: "https",
            set_host: None,
            framing: BodyFraming::ContentLength(0),
            target: None,
            strip: &[],
            strip_set: &[],
            extra_headers: b"",
        }
    }

    fn forward(buf: &[u8], ctx: &ForwardContext<'_>) -> String {
        let mut hs = [EMPTY_HEADER; 32];
        let r = parse(buf, &mut hs);
        let mut out = Vec::new();
        write_backend_request_head(&r, ctx, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn forward_head() {
        let buf = b"POST /api?q=1 HTTP/1.1\r\nHost: public.example\r\nX-Forwarded-For: 1.1.1.1\r\n\
            Connection: keep-alive, X-Drop\r\nX-Drop: secret\r\nTE: trailers\r\nUpgrade: h2c\r\n\
            Keep-Alive: 5\r\nX-Forwarded-Proto: http\r\nx-forwarded-for: 2.2.2.2\r\nAccept: */*\r\n\
            Expect: 100-continue\r\nContent-Length: 4\r\nProxy-Authorization: x\r\n\r\n";
        let ctx = ForwardContext {
            set_host: Some("backend.internal:8080"),
            framing: BodyFraming::Chunked,
            ..context("2001:db8::1", "2001:db8::1", false)
        };
        assert_eq!(
            forward(buf, &ctx),
            "POST /api?q=1 HTTP/1.1\r\nAccept: */*\r\nHost: backend.internal:8080\r\n\
             X-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: public.example\r\nX-Real-IP: 2001:db8::1\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );

        // HTTP/1.0 without Host: empty Host, no X-Forwarded-Host.
        assert_eq!(
            forward(
                b"GET / HTTP/1.0\r\nX-A: b\r\n\r\n",
                &context("10.0.0.7", "10.0.0.7", false)
            ),
            "GET / HTTP/1.1\r\nX-A: b\r\nHost: \r\nX-Forwarded-For: 10.0.0.7\r\n\
             X-Forwarded-Proto: https\r\nX-Real-IP: 10.0.0.7\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn a_trusted_peer_keeps_its_chain() {
        let buf = b"GET / HTTP/1.1\r\nHost: a.example:8443\r\nX-Forwarded-For: 203.0.113.5 \r\n\
            X-Real-IP: 6.6.6.6\r\nx-forwarded-for: 10.1.1.1,10.2.2.2\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n";
        assert_eq!(
            forward(buf, &context("10.0.0.1", "203.0.113.5", true)),
            "GET / HTTP/1.1\r\nHost: a.example:8443\r\n\
             X-Forwarded-For: 203.0.113.5, 10.1.1.1,10.2.2.2, 10.0.0.1\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: a.example:8443\r\n\
             X-Real-IP: 203.0.113.5\r\nContent-Length: 0\r\n\r\n"
        );
        // ... unless it nominated X-Forwarded-For as hop-by-hop.
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";
        assert!(forward(buf, &context("10.0.0.1", "10.0.0.1", true))
            .contains("\r\nX-Forwarded-For: 10.0.0.1\r\n"));
        // An untrusted peer's chain is replaced.
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";
        assert!(forward(buf, &context("192.0.2.1", "192.0.2.1", false))
            .contains("\r\nX-Forwarded-For: 192.0.2.1\r\n"));
    }

    #[test]
    fn forwarding_and_lookalike_headers_never_pass() {
        let forged = [
            "Forwarded: for=6.6.6.6;proto=http",
            "X-Real-IP: 6.6.6.6",
            "x-real_ip: 6.6.6.6",
            "X-Forwarded-Host: evil.example",
            "X_Forwarded_Host: evil.example",
            "X-Forwarded-Proto: http",
            "x.forwarded.proto: http",
            "X_Forwarded_For: 6.6.6.6",
            "X-Forwarded-Port: 80",
            "X-Forwarded-Prefix: /evil",
            "X_Forwarded_Ssl: off",
            "True-Client-IP: 6.6.6.6",
            "Client_IP: 6.6.6.6",
            "X-Client-IP: 6.6.6.6",
            "X-Cluster-Client-IP: 6.6.6.6",
            "Proxy: http://evil.example:3128",
            "Keep_Alive: 5",
            "Proxy_Authorization: Basic eA==",
        ];
        let mut buf = b"GET / HTTP/1.1\r\nHost: a.example\r\n".to_vec();
        for f in forged {
            buf.extend_from_slice(f.as_bytes());
            buf.extend_from_slice(b"\r\n");
        }
        buf.extend_from_slice(b"X-Forwardedfor: kept\r\nX-Proxy: kept\r\n\r\n");
        assert_eq!(
            forward(&buf, &context("127.0.0.1", "127.0.0.1", false)),
            "GET / HTTP/1.1\r\nX-Forwardedfor: kept\r\nX-Proxy: kept\r\nHost: a.example\r\n\
             X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: a.example\r\nX-Real-IP: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn gateway_owned_names() {
        for n in [
            "x-forwarded-for",
            "X-FORWARDED-ANYTHING",
            "x_forwarded_",
            "Forwarded",
            "proxy",
            "Host",
            "Transfer_Encoding",
            "x.real.ip",
        ] {
            assert!(is_gateway_owned(n), "{n}");
        }
        for n in [
            "x-forwarded",
            "xforwarded-for",
            "forwarded-for",
            "proxy-x",
            "x-real-ipv6",
            "",
        ] {
            assert!(!is_gateway_owned(n), "{n}");
        }
    }

    #[test]
    fn identity_headers_are_stripped_and_rules_applied() {
        let buf = b"GET /api/users?x=1 HTTP/1.1\r\nHost: a.example\r\nX-Forwarded-Client-Cert: Hash=forged\r\n\
            client-cert: :Zm9yZ2Vk:\r\nX-Debug: 1\r\nX-Env: dev\r\nAccept: */*\r\n\
            X_SSL_Client_Subject: CN=admin\r\nClient_Cert: :Zm9yZ2Vk:\r\nx-debug_: kept\r\n\
            X_Debug: 1\r\nx_env: dev\r\nX-SSL-Client.Subject: CN=admin\r\n\r\n";
        let identity = vec![
            "x-forwarded-client-cert".to_string(),
            "client-cert".to_string(),
            "x-ssl-client-subject".to_string(),
        ];
        let removed = vec!["x-debug".to_string()];
        let set = vec![("X-Env".to_string(), "prod".to_string())];
        let ctx = ForwardContext {
            set_host: Some("api-mtls.virtual.example"),
            target: Some("/v2/users?x=1"),
            strip: &[&identity, &removed],
            strip_set: &set,
            extra_headers: b"X-Env: prod\r\nX-Forwarded-Client-Cert: Hash=real\r\n",
            ..context("10.0.0.7", "10.0.0.7", false)
        };
        assert_eq!(
            forward(buf, &ctx),
            "GET /v2/users?x=1 HTTP/1.1\r\nAccept: */*\r\nx-debug_: kept\r\n\
             Host: api-mtls.virtual.example\r\n\
             X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: a.example\r\nX-Real-IP: 10.0.0.7\r\nX-Env: prod\r\n\
             X-Forwarded-Client-Cert: Hash=real\r\nContent-Length: 0\r\n\r\n"
        );
    }
}
