//! HTTP/2 heads to and from the forms the request core works on, as thin
//! glue over the pure codec: a stream's head (`http::request::Parts` from
//! `h2`) becomes the field list `Request::from_parts` checks, and a
//! backend's HTTP/1.1 response head becomes the client's HTTP/2 head
//! (`http::response::h2_response_fields` decides which fields pass).

use http::request::Parts;

use crate::http::request::join_cookies;
use crate::http::response::{h2_response_fields, Response};

/// The stream's regular fields in order, cookies left out: they come once,
/// joined into `cookie` (RFC 9113 section 8.2.3), at the end.
pub(super) fn fields<'p>(parts: &'p Parts, cookie: &'p [u8]) -> Vec<httparse::Header<'p>> {
    let mut out = Vec::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        if name == http::header::COOKIE {
            continue;
        }
        out.push(httparse::Header {
            name: name.as_str(),
            value: value.as_bytes(),
        });
    }
    if !cookie.is_empty() {
        out.push(httparse::Header {
            name: "cookie",
            value: cookie,
        });
    }
    out
}

/// The stream's cookie fields joined with "; ".
pub(super) fn cookie(parts: &Parts) -> Vec<u8> {
    let mut out = Vec::new();
    join_cookies(
        parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes()),
        &mut out,
    );
    out
}

/// `:path` (with the query) as the client sent it; "" when there is none
/// (a CONNECT), which the target check refuses.
pub(super) fn target(parts: &Parts) -> &str {
    parts.uri.path_and_query().map_or("", |pq| pq.as_str())
}

/// The client's HTTP/2 response head for a backend's HTTP/1.1 one. A field
/// HTTP/2 cannot carry (a name or value `http` refuses) fails the head: the
/// caller answers 502 as for any response it cannot relay.
pub(super) fn response_head(resp: &Response<'_, '_>) -> Result<http::Response<()>, http::Error> {
    let mut builder = http::Response::builder().status(resp.status);
    for h in h2_response_fields(resp) {
        builder = builder.header(h.name, h.value);
    }
    builder.body(())
}

/// The gateway's own answer on a stream (the JSON error body follows as DATA).
pub(super) fn error_head(
    status: u16,
    body_len: usize,
    allow: Option<&str>,
) -> Result<http::Response<()>, http::Error> {
    let mut builder = http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body_len);
    if let Some(methods) = allow.and_then(|a| a.strip_prefix("Allow: ")) {
        builder = builder.header("allow", methods);
    }
    builder.body(())
}
