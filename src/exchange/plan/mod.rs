//! The plan step: one request head in, one decision out, no I/O.
//!
//! Everything the gateway decides about a request before any byte reaches a
//! backend happens here, in one place and one order: who the client is
//! (`trusted_proxies`), the host in its one normal form and the site it
//! selects (421 when it is not the connection's), the method rules, the path
//! in its one normal form and the route it selects, the route's client
//! policy, the body limit, the backend, and the head the backend gets (the
//! normalised and rewritten target, the client's headers minus every one the
//! backend trusts, the gateway's forwarding and identity headers, the
//! route's header rules). HTTP/1.1 and HTTP/2 shells both call [`plan`].

use std::cell::OnceCell;
use std::net::SocketAddr;
use std::time::Instant;

use rustls::pki_types::CertificateDer;

use super::{ClientProtocol, RequestFacts};
use crate::config::BodyDeadline;
use crate::error::{Error, Kind};
use crate::generation::{GatewaySettings, WorkerGeneration};
use crate::http::host::{normalize_authority, normalize_host};
use crate::http::path::{normalize_path, strip_params};
use crate::http::reframe::{Input, Output};
use crate::http::request::{forwarded_for, write_backend_request_head, ForwardContext, Request};
use crate::http::{BodyFraming, HttpError};
use crate::identity::ClientCert;
use crate::router::{rewrite_prefix, RouteMatch};
use crate::trusted_proxies::Hop;

/// What the connection established, which every request on it is judged by.
pub struct Connection<'a> {
    pub generation: &'a WorkerGeneration,
    pub listener: usize,
    /// None only when no handshake ran.
    pub site: Option<usize>,
    pub sni: Option<&'a str>,
    pub peer: SocketAddr,
    /// The verified client chain (empty without a certificate).
    pub chain: &'a [CertificateDer<'static>],
    /// The client certificate, parsed on first need and kept for the connection.
    pub cert: &'a OnceCell<Option<ClientCert>>,
    /// A shutdown drain: the request is refused with 503 (a handover drain
    /// serves it, and the response closes the connection).
    pub draining: bool,
}

/// Buffers reused from request to request on one connection.
#[derive(Default)]
pub struct Scratch {
    /// The request's host in normal form.
    pub host: String,
    /// The normalised path, then the forwarded target.
    pub target: String,
}

/// A request ready to forward: its backend head is in the caller's buffer.
#[derive(Debug)]
pub struct RequestPlan {
    pub backend: SocketAddr,
    /// Index into the generation's upstreams (decides TLS and the pool key).
    pub upstream: usize,
    pub route_id: usize,
    pub metric_slot: usize,
    pub facts: RequestFacts,
    pub body_deadline: BodyDeadline,
    /// Bytes of the backend head at the start of the caller's buffer.
    pub backend_head_len: usize,
    pub started: Instant,
    pub log: Option<AccessLine>,
}

/// What the access log says about a request beyond its outcome.
#[derive(Debug)]
pub struct AccessLine {
    pub method: String,
    /// The target forwarded to the backend (normalised, rewritten).
    pub target: String,
    /// The target as the client wrote it, when it differs.
    pub raw_target: Option<String>,
}

/// A request the gateway answers itself.
#[derive(Debug)]
pub struct Rejection {
    pub error: Error,
    /// The connection closes after the answer.
    pub close: bool,
    /// An `Allow: ...` header line for a 405.
    pub allow: Option<String>,
}

#[derive(Debug)]
pub enum Decision {
    Forward(RequestPlan),
    Reject(Rejection),
}

/// Plans one request. `Err` is a request that cannot be understood (400:
/// the connection closes); a `Reject` is one the gateway answers itself.
/// `hop` is who sent it (for the logs, even when it is refused).
pub fn plan(
    req: &Request<'_, '_>,
    conn: &Connection<'_>,
    protocol: ClientProtocol,
    scratch: &mut Scratch,
    backend_head: &mut Vec<u8>,
    hop: &mut Hop,
    now: Instant,
) -> Result<Decision, Error> {
    let generation = conn.generation;
    let settings = &generation.shared.settings;
    // Who the client is: the peer, unless the peer is a trusted proxy, whose
    // X-Forwarded-For then names it (its right-most untrusted entry).
    let trusted = &generation.shared.listeners[conn.listener].trusted_proxies;
    *hop = trusted.hop(conn.peer.ip(), forwarded_for(req));
    let has_body = !matches!(
        req.framing,
        BodyFraming::None | BodyFraming::ContentLength(0)
    );
    let reject = |error: Error| {
        Decision::Reject(Rejection {
            close: has_body || !req.keep_alive || error.closes_connection(),
            error,
            allow: None,
        })
    };
    if conn.draining {
        return Ok(Decision::Reject(Rejection {
            error: Error::new(Kind::Draining),
            close: true,
            allow: None,
        }));
    }
    // One normal form for the Host, the SNI and the config's names, so site
    // selection and route matching cannot read a host differently.
    scratch.host.clear();
    let host = match (req.host, conn.sni) {
        (Some(value), _) => {
            if normalize_authority(value, &mut scratch.host).is_err() {
                return Err(Error::bad_request(HttpError::Malformed(
                    "invalid Host header",
                )));
            }
            Some(scratch.host.as_str())
        }
        // HTTP/1.0 without Host: the TLS server name stands in.
        (None, Some(sni)) => normalize_host(sni, &mut scratch.host)
            .ok()
            .map(|()| scratch.host.as_str()),
        (None, None) => None,
    };
    // One certificate must not reach another site's routes: the Host must
    // select the same site the TLS server name did.
    if req.host.is_some() && generation.shared.site_for_name(conn.listener, host) != conn.site {
        return Ok(reject(Error::new(Kind::MisdirectedRequest)));
    }
    if req.method.eq_ignore_ascii_case("CONNECT") {
        // Never a tunnel, whatever the route (the config cannot list it).
        return Ok(reject(Error::new(Kind::MethodRefused)));
    }
    let asterisk = req.target == "*";
    let route = match route_request(settings, conn.site, host, req, &mut scratch.target)? {
        RouteMatch::Found(r) => r,
        RouteMatch::MethodNotAllowed(r) => {
            return Ok(Decision::Reject(Rejection {
                error: Error::new(Kind::MethodNotAllowed),
                close: has_body || !req.keep_alive,
                allow: r
                    .methods
                    .as_ref()
                    .map(|m| format!("Allow: {}", m.join(", "))),
            }))
        }
        RouteMatch::NotFound => return Ok(reject(Error::new(Kind::NoRoute))),
    };
    if route.refuses_echo_method(req.method) {
        return Ok(reject(Error::new(Kind::MethodRefused)));
    }
    if route.client_policy.needs_certificate() || !route.forward_identity.is_empty() {
        conn.cert.get_or_init(|| ClientCert::from_chain(conn.chain));
    }
    let cert = conn.cert.get().and_then(Option::as_ref);
    if route.client_policy.needs_certificate() {
        match cert {
            None => return Ok(reject(Error::new(Kind::ClientCertRequired))),
            Some(cert) if !route.client_policy.allow.permits(cert) => {
                return Ok(reject(Error::new(Kind::ClientCertNotAllowed)))
            }
            Some(_) => {}
        }
    }
    if let BodyFraming::ContentLength(n) = req.framing {
        if n > route.max_body_bytes {
            return Ok(Decision::Reject(Rejection {
                error: Error::new(Kind::BodyTooLarge),
                close: true,
                allow: None,
            }));
        }
    }
    let upstream = &generation.shared.upstreams[route.upstream];
    let rr = &generation.round_robin[route.id];
    let backend = upstream.addresses[rr.get() % upstream.addresses.len()];
    rr.set(rr.get().wrapping_add(1));

    // The forwarded target: the normalised (maybe rewritten) path and the
    // query exactly as received.
    let mut rewritten = String::new();
    let target: &str = if asterisk {
        "*"
    } else {
        let out = match route.rewrite_prefix.as_deref() {
            Some(replacement) => {
                rewrite_prefix(&route.path, replacement, &scratch.target, &mut rewritten);
                &mut rewritten
            }
            None => &mut scratch.target,
        };
        if let Some(query) = req.query() {
            out.push('?');
            out.push_str(query);
        }
        out
    };
    let mut extra = Vec::new();
    if let Some(cert) = cert {
        super::identity_headers::write(&route.forward_identity, cert, conn.chain, &mut extra);
    }
    for (name, value) in route.headers.set.iter().chain(&route.headers.add) {
        crate::http::head::put_header(&mut extra, name.as_bytes(), value.as_bytes());
    }
    let fwd = ForwardContext {
        peer_ip: hop.peer,
        client_ip: hop.client,
        keep_forwarded_for: hop.peer_trusted,
        proto: "https",
        set_host: route.set_host.as_deref(),
        framing: req.framing,
        target: Some(target),
        strip: &[
            settings.identity_headers.as_slice(),
            route.headers.remove.as_slice(),
        ],
        strip_set: &route.headers.set,
        extra_headers: &extra,
    };
    backend_head.clear();
    write_backend_request_head(req, &fwd, backend_head);
    let (body_in, body_out) = match (req.framing, protocol) {
        // An HTTP/2 body is DATA payload ended by END_STREAM, whatever its
        // content-length said (which it must then match).
        (BodyFraming::ContentLength(n), ClientProtocol::Http2) => {
            (Input::Frames(Some(n)), Output::Raw)
        }
        (BodyFraming::Chunked, ClientProtocol::Http2) => (Input::Frames(None), Output::Chunked),
        (BodyFraming::ContentLength(n), _) => (Input::Length(n), Output::Raw),
        (BodyFraming::Chunked, _) => (Input::Chunked, Output::Chunked),
        (BodyFraming::None | BodyFraming::UntilClose, _) => (Input::Length(0), Output::Raw),
    };
    Ok(Decision::Forward(RequestPlan {
        backend,
        upstream: route.upstream,
        route_id: route.id,
        metric_slot: route.metric_slot,
        facts: RequestFacts {
            protocol,
            body_in,
            body_out,
            max_body: route.max_body_bytes,
            idempotent: matches!(
                req.method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
            is_head: req.method == "HEAD",
            expect_continue: req.expect_continue,
            keep_alive: req.keep_alive,
        },
        body_deadline: route.body_deadline,
        backend_head_len: backend_head.len(),
        started: now,
        log: settings.access_log.then(|| AccessLine {
            method: req.method.to_owned(),
            target: target.to_owned(),
            raw_target: (target != req.target).then(|| req.target.to_owned()),
        }),
    }))
}

/// Puts the normal form of the request's path into `path` and finds its
/// route: routing, policy and the backend all see that one form (see
/// `http::path`). `OPTIONS *` names no resource: it is routed as the host's
/// `/` (and forwarded as `*`).
fn route_request<'g>(
    settings: &'g GatewaySettings,
    site: Option<usize>,
    host: Option<&str>,
    req: &Request<'_, '_>,
    path: &mut String,
) -> Result<RouteMatch<'g>, Error> {
    path.clear();
    if req.target == "*" {
        path.push('/');
    } else {
        normalize_path(req.path(), &settings.paths, path).map_err(Error::bad_request)?;
    }
    let found = settings.routes.find(site, host, path, req.method);
    if path.contains(';') {
        // A servlet container routes on the path without its `;` parameters:
        // both readings must pick the same route, or we cannot know which
        // policy the backend's resource is under.
        let mut plain = String::with_capacity(path.len());
        strip_params(path, &settings.paths, &mut plain).map_err(Error::bad_request)?;
        let other = settings.routes.find(site, host, &plain, req.method);
        if other.route_id() != found.route_id() {
            return Err(Error::bad_request(HttpError::AmbiguousPathParams));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
