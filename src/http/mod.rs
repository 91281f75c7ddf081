//! HTTP/1.x wire handling for the gateway: head parsing (on top of `httparse`),
//! framing decisions, head rewriting for both directions, chunked bodies, and
//! the normal forms of request paths and host names that routing relies on.
//!
//! Everything here is pure: callers own the sockets and the buffers, so the
//! same code serves the client side and the backend side and is testable byte
//! by byte. The parsers are deliberately stricter than RFC 9112 requires
//! wherever leniency would let the gateway and a backend disagree about where
//! a message ends (request smuggling).

pub mod chunked;
pub mod host;
pub mod path;
pub mod reframe;
pub mod request;
pub mod response;

mod error;
pub(crate) mod head;

pub use error::HttpError;

/// Caps applied while parsing a head; they bound memory and CPU per connection.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    None,
    /// Exactly this many bytes follow the head.
    ContentLength(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Body runs until the sender closes the connection (responses only).
    UntilClose,
}

/// Outcome of parsing a head out of a buffer that may not yet hold all of it.
pub enum Parsed<T> {
    Complete(T),
    /// More bytes are needed; read more and parse the whole buffer again.
    Partial,
}

/// Hop-by-hop header names removed when forwarding in either direction:
/// connection, keep-alive, proxy-connection, te, trailer, transfer-encoding,
/// upgrade, proxy-authenticate, proxy-authorization (compared
/// case-insensitively). Headers *named in* a Connection header are hop-by-hop
/// too; that depends on the message, so the head writers check it themselves.
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ];
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names() {
        for n in [
            "connection",
            "Connection",
            "KEEP-ALIVE",
            "proxy-connection",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
            "proxy-authenticate",
            "Proxy-Authorization",
        ] {
            assert!(is_hop_by_hop(n), "{n}");
        }
        for n in [
            "host",
            "content-length",
            "trailers",
            "x-te",
            "authorization",
            "",
        ] {
            assert!(!is_hop_by_hop(n), "{n}");
        }
    }
}
