//! The one piece of I/O in OCSP stapling: POST a request to the responder
//! over plain HTTP/1.0 and read its answer, bounded in time and size
//! (`crate::http_fetch`, the CRL fetcher's client too). Runs on the
//! stapling thread only (blocking std sockets), never on a worker.

use std::time::Duration;

use super::url::HttpUrl;
use crate::http_fetch;

/// Bounds of one fetch.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connecting (per address) plus sending plus reading the whole answer.
    pub deadline: Duration,
    /// Head and body together.
    pub max_bytes: usize,
}

/// Responses are a few KiB (a signature, perhaps a responder certificate).
pub const DEFAULT_LIMITS: Limits = Limits {
    deadline: Duration::from_secs(10),
    max_bytes: 64 * 1024,
};

/// POSTs `request` (DER) to `url` and returns the response body.
pub fn post(url: &HttpUrl, request: &[u8], limits: Limits) -> Result<Vec<u8>, String> {
    let mut message = format!(
        "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/ocsp-request\r\nAccept: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority(),
        request.len()
    )
    .into_bytes();
    message.extend_from_slice(request);
    // Name resolution has no timeout of its own (getaddrinfo); it runs on
    // the stapling thread only, so a slow resolver delays stapling, not
    // handshakes.
    http_fetch::exchange(
        &url.host,
        url.port,
        &message,
        limits.deadline,
        limits.max_bytes,
        limits.max_bytes,
    )
}
