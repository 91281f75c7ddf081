//! The HTTP/2 side of a run that is decided once, with no I/O: the request
//! every stream sends (built from the same options as HTTP/1.1's), which
//! header names HTTP/2 forbids, and how an `h2` error is counted in the
//! report.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};

use super::io::REFUSED_BEFORE_DATA;
use crate::args::Args;
use crate::conn::first_words;

/// Connection-specific fields (RFC 9113 8.2.2): an HTTP/2 request carrying
/// one is malformed, so `-H` may not add them in --http2 mode.
pub fn connection_specific(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// The request of the run, parsed once; `build` makes each stream's copy.
pub struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// The request body (`--body-size` bytes), shared by every stream.
    pub body: Bytes,
    pub head_request: bool,
}

impl Template {
    /// The same request as HTTP/1.1's `build_request`: the URL's authority
    /// (or `-H Host`, which becomes `:authority`), the default User-Agent
    /// and Accept unless given, the extra headers, content-length with a body.
    pub fn from_args(args: &Args) -> Result<Template, String> {
        let method = Method::from_bytes(args.method.as_bytes())
            .map_err(|_| format!("-m {}: not a method", args.method))?;
        let mut authority = args.target.authority.clone();
        let mut headers = HeaderMap::new();
        let has = |name: &str| {
            args.headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name))
        };
        if !has("user-agent") {
            headers.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static(concat!("pcl-load/", env!("CARGO_PKG_VERSION"))),
            );
        }
        if !has("accept") {
            headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
        }
        for (k, v) in &args.headers {
            if k.eq_ignore_ascii_case("host") {
                authority = v.clone();
                continue;
            }
            if connection_specific(k) {
                return Err(format!("-H {k}: not allowed in HTTP/2"));
            }
            let name = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|e| format!("-H {k}: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("-H {k}: {e}"))?;
            headers.append(name, value);
        }
        let wants_length =
            args.body_size > 0 || matches!(args.method.as_str(), "POST" | "PUT" | "PATCH");
        if wants_length && !has("content-length") {
            headers.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(args.body_size),
            );
        }
        let uri = Uri::builder()
            .scheme("https")
            .authority(authority.as_str())
            .path_and_query(args.target.path.as_str())
            .build()
            .map_err(|e| format!("request URI https://{authority}{}: {e}", args.target.path))?;
        Ok(Template {
            head_request: method == Method::HEAD,
            method,
            uri,
            headers,
            body: Bytes::from(vec![b'x'; args.body_size]),
        })
    }

    /// One stream's request head (the body goes separately).
    pub fn build(&self) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// Whether an `h2` error ends the whole connection (the slot reconnects)
/// or only its stream (the slot goes on on the same connection).
#[derive(Debug, PartialEq, Eq)]
pub enum Scope {
    Stream,
    Connection,
}

/// How one failed stream is counted: the report's kind, a short detail,
/// and what it ended.
pub fn classify(e: &h2::Error) -> (&'static str, String, Scope) {
    if let Some(io) = e.get_io() {
        return classify_io(io);
    }
    let reason = e
        .reason()
        .map(|r| format!("{r:?}"))
        .unwrap_or_else(|| first_words(&e.to_string()));
    if e.is_go_away() {
        let who = if e.is_remote() {
            "GOAWAY from the server"
        } else {
            "GOAWAY sent"
        };
        ("http2", format!("{who}: {reason}"), Scope::Connection)
    } else if e.is_reset() && e.is_remote() {
        (
            "http2",
            format!("stream reset by the server: {reason}"),
            Scope::Stream,
        )
    } else if e.is_reset() {
        ("http2", format!("stream reset: {reason}"), Scope::Stream)
    } else {
        // A protocol error h2 found in what the server sent, or the
        // connection is gone: nothing more will work on it.
        ("http2", reason, Scope::Connection)
    }
}

/// An I/O failure under h2 (it keeps only the kind and the text): a TLS
/// refusal before any data (see `io::REFUSED_BEFORE_DATA`), else a read error.
fn classify_io(io: &std::io::Error) -> (&'static str, String, Scope) {
    let text = io.to_string();
    if let Some(refused) = text.strip_prefix(REFUSED_BEFORE_DATA) {
        return ("tls_handshake", refused.to_string(), Scope::Connection);
    }
    ("read", first_words(&text), Scope::Connection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn args(rest: &[&str]) -> Args {
        let argv: Vec<String> = std::iter::once("pcl-load")
            .chain(rest.iter().copied())
            .map(String::from)
            .collect();
        match crate::args::parse(&argv) {
            Ok(crate::args::Parsed::Run(a)) => *a,
            _ => panic!("parse {rest:?}"),
        }
    }

    #[test]
    fn the_template_is_the_http1_request_in_http2_form() {
        let a = args(&[
            "--insecure",
            "--http2",
            "-H",
            "X-Echo-Bytes: 10",
            "https://127.0.0.1:8443/a?b=1",
        ]);
        let t = Template::from_args(&a).unwrap();
        let r = t.build();
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.uri().to_string(), "https://127.0.0.1:8443/a?b=1");
        assert_eq!(r.headers()["x-echo-bytes"], "10");
        assert_eq!(r.headers()["accept"], "*/*");
        assert!(r.headers()["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("pcl-load/"));
        assert!(
            r.headers().get("host").is_none(),
            "no Host: :authority carries it"
        );
        assert!(r.headers().get("content-length").is_none());
        assert!(t.body.is_empty() && !t.head_request);
    }

    #[test]
    fn host_becomes_the_authority_and_a_body_gets_its_length() {
        let a = args(&[
            "--insecure",
            "--http2",
            "-H",
            "Host: api.example",
            "-m",
            "POST",
            "--body-size",
            "5",
            "https://127.0.0.1:8443/up",
        ]);
        let t = Template::from_args(&a).unwrap();
        let r = t.build();
        assert_eq!(r.uri().authority().unwrap().as_str(), "api.example");
        assert_eq!(r.headers()["content-length"], "5");
        assert_eq!(&t.body[..], b"xxxxx");
        let a = args(&[
            "--insecure",
            "--http2",
            "-m",
            "HEAD",
            "https://127.0.0.1:8443/",
        ]);
        assert!(Template::from_args(&a).unwrap().head_request);
    }

    #[test]
    fn connection_specific_names() {
        for n in [
            "Connection",
            "keep-alive",
            "Transfer-Encoding",
            "upgrade",
            "Proxy-Connection",
        ] {
            assert!(connection_specific(n), "{n}");
        }
        for n in ["te", "host", "x-connection"] {
            assert!(!connection_specific(n), "{n}");
        }
    }

    #[test]
    fn errors_are_counted_by_what_they_end() {
        let (kind, detail, scope) = classify(&h2::Error::from(h2::Reason::REFUSED_STREAM));
        assert_eq!(
            (kind, scope),
            ("http2", Scope::Connection),
            "a local reason, not a reset"
        );
        assert!(detail.contains("REFUSED_STREAM"), "{detail}");
        let io_err = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        let (kind, _, scope) = classify_io(&io_err);
        assert_eq!((kind, scope), ("read", Scope::Connection));
        let refused = io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{REFUSED_BEFORE_DATA}received fatal alert: CertificateRequired"),
        );
        let (kind, detail, scope) = classify_io(&refused);
        assert_eq!((kind, scope), ("tls_handshake", Scope::Connection));
        assert_eq!(detail, "received fatal alert: CertificateRequired");
    }
}
