//! One error type for the request path, HTTP/1.1 and HTTP/2 alike.
//!
//! An [`Error`] is a [`Kind`] (what went wrong, from which one table gives
//! the status, the stable code, the client's message, who is at fault and
//! whether the client connection can go on), an optional [`Cause`] (the
//! detail for the log, never for the client) and a [`Retry`] verdict (whether
//! the request may be sent again on a fresh backend connection). The retry
//! rule lives here, in [`Error::backend_gone`] and [`Error::retry_safe`], and
//! nowhere else. Codes are `PCS.` + the HTTP status + one digit, so a status
//! can carry several causes. A new kind is one variant and one row of
//! [`Kind::spec`].

use std::fmt;
use std::io;

use crate::http::HttpError;

/// Who caused a failure: decides the log level and whether an operator must act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong or went away.
    Client,
    /// A backend refused, reset, stalled or answered garbage.
    Backend,
    /// The gateway itself (shutting down, internal limit).
    Gateway,
}

/// What went wrong. Each kind is one row of [`Kind::spec`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The request head or body framing is invalid (the codec says how).
    BadRequest(HttpError),
    /// No route matches host and path.
    NoRoute,
    /// A route matches the path but not the method.
    MethodNotAllowed,
    /// TRACE or TRACK on a route that does not list it, or CONNECT: refused
    /// by the gateway itself (a backend that honours TRACE echoes the
    /// identity headers and any secret a route sets).
    MethodRefused,
    /// The body is larger than the route allows.
    BodyTooLarge,
    /// The request head did not arrive within the request-head timeout.
    HeadTimeout,
    /// The request body did not keep up with the route's body deadline.
    BodyTimeout,
    /// The Host header names a different site than the TLS server name.
    MisdirectedRequest,
    /// The route needs a client certificate and the connection has none.
    ClientCertRequired,
    /// The client certificate is not on the route's allowlist.
    ClientCertNotAllowed,
    /// The gateway is draining for shutdown.
    Draining,
    /// The backend refused the TCP connection (or it could not be made).
    BackendConnect,
    /// Connecting to the backend took longer than the connect timeout.
    BackendConnectTimeout,
    /// The backend closed or reset the connection before a complete response.
    BackendReset,
    /// The backend's response is not valid HTTP/1.x (the codec says how).
    BackendInvalidResponse(HttpError),
    /// The backend did not answer (or read our request) in time.
    BackendTimeout,
    /// TLS with the backend failed (its certificate, or ours).
    BackendTls,
}

/// The detail behind a kind, for the log line.
#[non_exhaustive]
#[derive(Debug)]
pub enum Cause {
    Io(io::Error),
    /// What the backend's TLS said, in plain words (`tls::client` words it).
    BackendTls(String),
    /// A fixed explanation.
    Text(&'static str),
}

/// Whether a request may be sent again on a fresh backend connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Never: the backend may have acted on it, or the failure is not the
    /// connection's (a fresh one would fail the same way).
    Never,
    /// Only when the connection that failed came from the pool (a backend
    /// that closed an idle connection is not an answer): the backend
    /// provably never got the request, or the method is idempotent and no
    /// byte of the body had been sent (RFC 9110 section 9.2.2).
    OnReusedConnection,
}

/// One row of the table: what a kind means to the client and the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub status: u16,
    pub code: &'static str,
    /// One line for the client: says what happened without leaking addresses.
    pub message: &'static str,
    pub fault: Fault,
    /// The client connection cannot go on after the response: its framing
    /// state is unknown, or a draining gateway wants it gone.
    pub closes: bool,
}

/// How far a request got to a backend when its connection failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The request head was written (the backend may have it).
    pub head_written: bool,
    /// A byte of the request body was sent (it cannot be sent again).
    pub body_started: bool,
    /// The method is idempotent (RFC 9110 section 9.2.2).
    pub idempotent: bool,
}

#[derive(Debug)]
pub struct Error {
    kind: Kind,
    cause: Option<Cause>,
    retry: Retry,
}

impl Kind {
    /// The one table from kind to status, code, message, fault and close.
    pub fn spec(&self) -> Spec {
        use Fault::{Backend, Client, Gateway};
        let row = |status, code, message, fault, closes| Spec {
            status,
            code,
            message,
            fault,
            closes,
        };
        match self {
            Kind::BadRequest(e) => row(e.status(), e.code(), e.message(), Client, true),
            Kind::NoRoute => row(404, "PCS.4040", "no route matches this host and path", Client, false),
            Kind::MethodNotAllowed => row(405, "PCS.4050", "the route does not allow this method", Client, false),
            Kind::MethodRefused => row(
                405,
                "PCS.4051",
                "refused by the gateway: TRACE and TRACK need a route that lists them, CONNECT is never forwarded",
                Client,
                false,
            ),
            Kind::BodyTooLarge => row(413, "PCS.4130", "request body is larger than this route allows", Client, true),
            Kind::HeadTimeout => row(408, "PCS.4080", "request head not received in time", Client, true),
            Kind::BodyTimeout => row(408, "PCS.4081", "request body not received in time", Client, true),
            Kind::MisdirectedRequest => row(
                421,
                "PCS.4210",
                "the Host header names a different site than the TLS server name",
                Client,
                false,
            ),
            Kind::ClientCertRequired => row(401, "PCS.4010", "this route requires a client certificate", Client, false),
            Kind::ClientCertNotAllowed => row(
                403,
                "PCS.4030",
                "this client certificate is not allowed on this route",
                Client,
                false,
            ),
            Kind::Draining => row(503, "PCS.5030", "gateway is shutting down", Gateway, true),
            Kind::BackendConnect => row(502, "PCS.5020", "backend refused the connection", Backend, true),
            Kind::BackendReset => row(
                502,
                "PCS.5021",
                "backend closed the connection before responding",
                Backend,
                true,
            ),
            Kind::BackendInvalidResponse(_) => row(502, "PCS.5022", "backend sent an invalid response", Backend, true),
            Kind::BackendTls => row(502, "PCS.5023", "TLS with the backend failed", Backend, true),
            Kind::BackendTimeout => row(504, "PCS.5040", "backend did not respond in time", Backend, true),
            Kind::BackendConnectTimeout => row(
                504,
                "PCS.5041",
                "backend did not accept the connection in time",
                Backend,
                true,
            ),
        }
    }
}

impl Error {
    pub fn new(kind: Kind) -> Error {
        Error {
            kind,
            cause: None,
            retry: Retry::Never,
        }
    }

    pub fn with_cause(kind: Kind, cause: Cause) -> Error {
        Error {
            kind,
            cause: Some(cause),
            retry: Retry::Never,
        }
    }

    /// A request the client framed wrongly.
    pub fn bad_request(e: HttpError) -> Error {
        Error::new(Kind::BadRequest(e))
    }

    /// A backend response the codec refused.
    pub fn invalid_response(e: HttpError) -> Error {
        Error::new(Kind::BackendInvalidResponse(e))
    }

    /// The backend connection broke before any byte of the response: the
    /// retry rule, decided from how far the request got.
    pub fn backend_gone(kind: Kind, cause: Cause, delivery: Delivery) -> Error {
        let never_received = !delivery.head_written;
        let replayable = delivery.idempotent && !delivery.body_started;
        Error {
            kind,
            cause: Some(cause),
            retry: if !delivery.body_started && (never_received || replayable) {
                Retry::OnReusedConnection
            } else {
                Retry::Never
            },
        }
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }

    pub fn cause(&self) -> Option<&Cause> {
        self.cause.as_ref()
    }

    pub fn spec(&self) -> Spec {
        self.kind.spec()
    }

    pub fn status(&self) -> u16 {
        self.spec().status
    }

    pub fn code(&self) -> &'static str {
        self.spec().code
    }

    pub fn message(&self) -> &'static str {
        self.spec().message
    }

    pub fn fault(&self) -> Fault {
        self.spec().fault
    }

    pub fn closes_connection(&self) -> bool {
        self.spec().closes
    }

    /// Whether the same request may go again on a fresh backend connection,
    /// given whether the connection that failed came from the pool.
    pub fn retry_safe(&self, connection_was_reused: bool) -> bool {
        match self.retry {
            Retry::Never => false,
            Retry::OnReusedConnection => connection_was_reused,
        }
    }
}

impl From<Kind> for Error {
    fn from(kind: Kind) -> Error {
        Error::new(kind)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Io(e) => write!(f, "{e}"),
            Cause::BackendTls(why) => f.write_str(why),
            Cause::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spec = self.spec();
        write!(f, "{} {}: {}", spec.code, spec.status, spec.message)?;
        match (&self.kind, &self.cause) {
            (_, Some(cause)) => write!(f, " ({cause})"),
            (Kind::BadRequest(e) | Kind::BackendInvalidResponse(e), None) => write!(f, " ({e})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<Kind> {
        vec![
            Kind::BadRequest(HttpError::Malformed("x")),
            Kind::NoRoute,
            Kind::MethodNotAllowed,
            Kind::MethodRefused,
            Kind::BodyTooLarge,
            Kind::HeadTimeout,
            Kind::BodyTimeout,
            Kind::MisdirectedRequest,
            Kind::ClientCertRequired,
            Kind::ClientCertNotAllowed,
            Kind::Draining,
            Kind::BackendConnect,
            Kind::BackendConnectTimeout,
            Kind::BackendReset,
            Kind::BackendInvalidResponse(HttpError::Malformed("y")),
            Kind::BackendTimeout,
            Kind::BackendTls,
        ]
    }

    #[test]
    fn every_code_starts_with_its_status_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for kind in every_kind() {
            let spec = kind.spec();
            assert_eq!(&spec.code[4..7], spec.status.to_string(), "{kind:?}");
            assert!(seen.insert(spec.code), "{kind:?} shares {}", spec.code);
            assert!(!spec.message.contains('\n'));
            let backend = matches!(
                kind,
                Kind::BackendConnect
                    | Kind::BackendConnectTimeout
                    | Kind::BackendReset
                    | Kind::BackendInvalidResponse(_)
                    | Kind::BackendTimeout
                    | Kind::BackendTls
            );
            assert_eq!(spec.fault == Fault::Backend, backend, "{kind:?}");
            assert_eq!(
                spec.status >= 500,
                backend || kind == Kind::Draining,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn the_retry_rule() {
        let gone = |head_written, body_started, idempotent| {
            Error::backend_gone(
                Kind::BackendReset,
                Cause::Text("closed"),
                Delivery {
                    head_written,
                    body_started,
                    idempotent,
                },
            )
        };
        // Never delivered: any method, on a reused connection only.
        assert!(gone(false, false, false).retry_safe(true));
        assert!(!gone(false, false, false).retry_safe(false));
        // Delivered: only idempotent methods without a body sent.
        assert!(
            !gone(true, false, false).retry_safe(true),
            "a POST is never sent twice"
        );
        assert!(gone(true, false, true).retry_safe(true));
        assert!(
            !gone(true, true, true).retry_safe(true),
            "a body cannot be replayed"
        );
        assert!(!gone(false, true, true).retry_safe(true));
        // Other errors never retry.
        assert!(!Error::new(Kind::BackendTimeout).retry_safe(true));
        assert!(!Error::new(Kind::BackendConnect).retry_safe(true));
    }

    #[test]
    fn display_carries_the_cause_but_the_message_never_does() {
        let e = Error::with_cause(
            Kind::BackendTls,
            Cause::BackendTls("backend certificate not trusted".into()),
        );
        assert_eq!(
            e.to_string(),
            "PCS.5023 502: TLS with the backend failed (backend certificate not trusted)"
        );
        assert!(!e.message().contains("trusted"));
        let e = Error::bad_request(HttpError::AmbiguousFraming);
        assert!(e.to_string().starts_with("PCS.4001 400"));
        let e = Error::invalid_response(HttpError::Malformed("bad status line"));
        assert_eq!(e.code(), "PCS.5022");
        assert!(e.to_string().contains("bad status line"));
    }
}
