//! One error type for the request path.
//!
//! Every failure records who is at fault and maps to exactly one response the
//! client sees, with a stable code that also goes into the log. Codes are
//! `PCS.` + the HTTP status + one digit, so a status can carry several causes.

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

#[non_exhaustive]
#[derive(Debug)]
pub enum ProxyError {
    /// The request head or body framing is invalid.
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
    /// The backend refused the TCP connection (or it could not be made).
    BackendConnect(io::Error),
    /// Connecting to the backend took longer than the connect timeout.
    BackendConnectTimeout,
    /// The backend closed or reset the connection before a complete response.
    BackendReset(io::Error),
    /// The backend's response head is not valid HTTP/1.x.
    BackendInvalidResponse(HttpError),
    /// The backend did not answer within the response timeout.
    BackendTimeout,
    /// The gateway is draining for shutdown.
    Draining,
    /// The Host header names a different site than the TLS server name.
    MisdirectedRequest,
    /// The route needs a client certificate and the connection has none.
    ClientCertRequired,
    /// The client certificate is not on the route's allowlist.
    ClientCertNotAllowed,
    /// The TLS handshake with the backend failed (its certificate, or ours).
    BackendTls(String),
}

impl ProxyError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(e) => e.status(),
            Self::NoRoute => 404,
            Self::MethodNotAllowed | Self::MethodRefused => 405,
            Self::BodyTooLarge => 413,
            Self::HeadTimeout | Self::BodyTimeout => 408,
            Self::BackendConnect(_) | Self::BackendReset(_) | Self::BackendInvalidResponse(_) => {
                502
            }
            Self::BackendConnectTimeout | Self::BackendTimeout => 504,
            Self::Draining => 503,
            Self::MisdirectedRequest => 421,
            Self::ClientCertRequired => 401,
            Self::ClientCertNotAllowed => 403,
            Self::BackendTls(_) => 502,
        }
    }

    /// The stable code in the JSON body and the log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(e) => e.code(),
            Self::NoRoute => "PCS.4040",
            Self::MethodNotAllowed => "PCS.4050",
            Self::MethodRefused => "PCS.4051",
            Self::BodyTooLarge => "PCS.4130",
            Self::HeadTimeout => "PCS.4080",
            Self::BodyTimeout => "PCS.4081",
            Self::BackendConnect(_) => "PCS.5020",
            Self::BackendReset(_) => "PCS.5021",
            Self::BackendInvalidResponse(_) => "PCS.5022",
            Self::BackendConnectTimeout => "PCS.5041",
            Self::BackendTimeout => "PCS.5040",
            Self::Draining => "PCS.5030",
            Self::MisdirectedRequest => "PCS.4210",
            Self::ClientCertRequired => "PCS.4010",
            Self::ClientCertNotAllowed => "PCS.4030",
            Self::BackendTls(_) => "PCS.5023",
        }
    }

    /// One line for the client: says what happened without leaking addresses.
    pub fn message(&self) -> &'static str {
        match self {
            Self::BadRequest(e) => e.message(),
            Self::NoRoute => "no route matches this host and path",
            Self::MethodNotAllowed => "the route does not allow this method",
            Self::MethodRefused => {
                "refused by the gateway: TRACE and TRACK need a route that lists them, CONNECT is never forwarded"
            }
            Self::BodyTooLarge => "request body is larger than this route allows",
            Self::HeadTimeout => "request head not received in time",
            Self::BodyTimeout => "request body not received in time",
            Self::BackendConnect(_) => "backend refused the connection",
            Self::BackendReset(_) => "backend closed the connection before responding",
            Self::BackendInvalidResponse(_) => "backend sent an invalid response",
            Self::BackendConnectTimeout => "backend did not accept the connection in time",
            Self::BackendTimeout => "backend did not respond in time",
            Self::Draining => "gateway is shutting down",
            Self::MisdirectedRequest => {
                "the Host header names a different site than the TLS server name"
            }
            Self::ClientCertRequired => "this route requires a client certificate",
            Self::ClientCertNotAllowed => "this client certificate is not allowed on this route",
            Self::BackendTls(_) => "TLS with the backend failed",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            Self::BadRequest(_)
            | Self::NoRoute
            | Self::MethodNotAllowed
            | Self::MethodRefused
            | Self::BodyTooLarge
            | Self::HeadTimeout
            | Self::BodyTimeout
            | Self::MisdirectedRequest
            | Self::ClientCertRequired
            | Self::ClientCertNotAllowed => Fault::Client,
            Self::BackendTls(_)
            | Self::BackendConnect(_)
            | Self::BackendConnectTimeout
            | Self::BackendReset(_)
            | Self::BackendInvalidResponse(_)
            | Self::BackendTimeout => Fault::Backend,
            Self::Draining => Fault::Gateway,
        }
    }

    /// Whether sending the same request again (to a fresh backend connection)
    /// cannot cause a side effect twice: only when the backend never got it.
    pub fn retry_safe(&self) -> bool {
        matches!(self, Self::BackendConnect(_) | Self::BackendConnectTimeout)
    }

    /// Client errors leave the connection in an unknown framing state, and a
    /// draining gateway wants the client gone: close after the response.
    pub fn closes_connection(&self) -> bool {
        !matches!(
            self,
            Self::NoRoute
                | Self::MethodNotAllowed
                | Self::MethodRefused
                | Self::MisdirectedRequest
                | Self::ClientCertRequired
                | Self::ClientCertNotAllowed
        )
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code(), self.status(), self.message())?;
        match self {
            Self::BackendConnect(e) | Self::BackendReset(e) => write!(f, " ({e})"),
            Self::BackendInvalidResponse(e) | Self::BadRequest(e) => write!(f, " ({e})"),
            Self::BackendTls(why) => write!(f, " ({why})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ProxyError {}
