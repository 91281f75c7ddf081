//! HTTP/2 heads to and from the forms the request core works on, as thin
//! glue over the pure codec: a stream's head (`http::request::Parts` from
//! `h2`) becomes the field list `Request::from_parts` checks, and a
//! backend's HTTP/1.1 response head becomes the client's HTTP/2 head
//! (`http::response::h2_response_fields` decides which fields pass).

use http::request::Parts;

use crate::http::request::join_cookies;
use crate::http::response::{h2_response_fields, Response};

/// The head's size as HTTP/2 measures it for SETTINGS_MAX_HEADER_LIST_SIZE
/// (RFC 9113 section 6.5.2, and h2's count): every field, pseudo-header
/// fields (with their colon) included, as name + value + 32 octets.
pub(super) fn decoded_size(parts: &Parts) -> usize {
    const OVERHEAD: usize = 32;
    let field = |name: usize, value: usize| name + value + OVERHEAD;
    let mut size = field(":method".len(), parts.method.as_str().len());
    if let Some(scheme) = parts.uri.scheme_str() {
        size += field(":scheme".len(), scheme.len());
    }
    if let Some(authority) = parts.uri.authority() {
        size += field(":authority".len(), authority.as_str().len());
    }
    if let Some(pq) = parts.uri.path_and_query() {
        size += field(":path".len(), pq.as_str().len());
    }
    for (name, value) in &parts.headers {
        size += field(name.as_str().len(), value.len());
    }
    size
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_size_counts_every_field_as_rfc_9113_does() {
        let req = http::Request::builder()
            .method("GET")
            .uri("https://example.com/a?b=1")
            .header("x-a", "12345")
            .header("cookie", "c=1")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let want = (7 + 3 + 32) // :method GET
            + (7 + 5 + 32) // :scheme https
            + (10 + 11 + 32) // :authority example.com
            + (5 + 6 + 32) // :path /a?b=1
            + (3 + 5 + 32) // x-a
            + (6 + 3 + 32); // cookie
        assert_eq!(decoded_size(&parts), want);
    }
}
