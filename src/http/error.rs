//! Errors from parsing HTTP/1.x heads and chunked bodies.
//!
//! Every variant maps to exactly one status and one stable `PCS.*` code so
//! the gateway's error responses and logs can be grepped and alerted on.

use std::fmt;

/// Why a message was rejected. The proxy answers a client with `status()`;
/// for a backend's response it maps any of these to its own 502.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The head was not complete within `Limits::max_header_bytes`.
    HeadTooLarge,
    /// More header fields than `Limits::max_headers` (or the caller's storage).
    TooManyHeaders,
    /// Syntax error; the string says what, in one short lowercase phrase.
    Malformed(&'static str),
    /// Content-Length and Transfer-Encoding together, or differing Content-Lengths.
    AmbiguousFraming,
    /// Content-Length that is not a plain decimal number.
    InvalidContentLength,
    /// Broken chunked framing; the string says what.
    InvalidChunk(&'static str),
    /// A Transfer-Encoding other than exactly `chunked`.
    UnsupportedTransferEncoding,
    /// Anything other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// HTTP/1.1 request without Host, or any request with more than one.
    MissingHost,
    /// A `..` segment would climb above the root of the path.
    PathAboveRoot,
    /// `%2F` in the path while `escaped_slashes = "reject"`.
    EncodedSlash,
    /// A backslash in the path, raw or as `%5C`.
    PathBackslash,
    /// `%00` in the path.
    EncodedNul,
    /// `;` parameters decide the route (or sit on a dot segment): a servlet
    /// container drops them before routing, a plain server does not.
    AmbiguousPathParams,
}

impl HttpError {
    /// HTTP status the gateway answers a client with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::Malformed(_)
            | HttpError::AmbiguousFraming
            | HttpError::InvalidContentLength
            | HttpError::InvalidChunk(_)
            | HttpError::MissingHost
            | HttpError::PathAboveRoot
            | HttpError::EncodedSlash
            | HttpError::PathBackslash
            | HttpError::EncodedNul
            | HttpError::AmbiguousPathParams => 400,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::UnsupportedVersion => 505,
        }
    }

    /// Stable machine-readable code: clients and dashboards key on it.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::HeadTooLarge => "PCS.4310",
            HttpError::TooManyHeaders => "PCS.4311",
            HttpError::Malformed(_) => "PCS.4000",
            HttpError::AmbiguousFraming => "PCS.4001",
            HttpError::InvalidContentLength => "PCS.4002",
            HttpError::InvalidChunk(_) => "PCS.4003",
            HttpError::MissingHost => "PCS.4004",
            HttpError::PathAboveRoot => "PCS.4005",
            HttpError::EncodedSlash => "PCS.4006",
            HttpError::PathBackslash => "PCS.4007",
            HttpError::EncodedNul => "PCS.4008",
            HttpError::AmbiguousPathParams => "PCS.4009",
            HttpError::UnsupportedTransferEncoding => "PCS.5010",
            HttpError::UnsupportedVersion => "PCS.5050",
        }
    }

    /// One plain line, safe to show to a client (it never echoes input bytes).
    pub fn message(&self) -> &'static str {
        match self {
            HttpError::HeadTooLarge => "request header section too large",
            HttpError::TooManyHeaders => "too many request header fields",
            HttpError::Malformed(what) => what,
            HttpError::AmbiguousFraming => {
                "ambiguous message framing (conflicting Content-Length or Transfer-Encoding)"
            }
            HttpError::InvalidContentLength => "invalid Content-Length",
            HttpError::InvalidChunk(what) => what,
            HttpError::UnsupportedTransferEncoding => {
                "Transfer-Encoding other than chunked is not supported"
            }
            HttpError::UnsupportedVersion => "HTTP version not supported",
            HttpError::MissingHost => "exactly one Host header is required",
            HttpError::PathAboveRoot => "the request path climbs above the root",
            HttpError::EncodedSlash => "encoded slash (%2F) in the request path",
            HttpError::PathBackslash => "backslash (\\ or %5C) in the request path",
            HttpError::EncodedNul => "encoded NUL (%00) in the request path",
            HttpError::AmbiguousPathParams => {
                "path parameters (;) make the route of this path ambiguous"
            }
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code(), self.status(), self.message())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_code_agree() {
        let all = [
            HttpError::HeadTooLarge,
            HttpError::TooManyHeaders,
            HttpError::Malformed("x"),
            HttpError::AmbiguousFraming,
            HttpError::InvalidContentLength,
            HttpError::InvalidChunk("y"),
            HttpError::UnsupportedTransferEncoding,
            HttpError::UnsupportedVersion,
            HttpError::MissingHost,
            HttpError::PathAboveRoot,
            HttpError::EncodedSlash,
            HttpError::PathBackslash,
            HttpError::EncodedNul,
            HttpError::AmbiguousPathParams,
        ];
        for e in &all {
            // The code's first three digits are the status: keeps the table honest.
            let digits = &e.code()[4..7];
            assert_eq!(digits, e.status().to_string(), "{e:?}");
            assert!(!e.message().contains('\n'));
            assert!(e.to_string().starts_with(e.code()));
        }
        // Each cause keeps its own code: dashboards key on them.
        let mut codes: Vec<&str> = all.iter().map(HttpError::code).collect();
        codes.sort_unstable();
        let n = codes.len();
        codes.dedup();
        assert_eq!(codes.len(), n, "two causes share a code");
        assert_eq!(
            HttpError::Malformed("invalid header name").message(),
            "invalid header name"
        );
    }
}
