//! The per-connection loop: read a request head, route it, forward it, relay
//! the response, repeat while keep-alive holds. Protocol decisions live in
//! `crate::http` (pure); this module is the I/O shell around them.

mod body_clock;
mod forward;
mod identity_headers;
mod splice;

use std::cell::{Cell, OnceCell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tracing::{debug, info, warn};

use crate::drain::Drain;
use crate::error::{Fault, ProxyError};
use crate::generation::{GatewaySettings, WorkerGeneration};
use crate::http::host::{normalize_authority, normalize_host};
use crate::http::path::{normalize_path, strip_params};
use crate::http::request::{
    forwarded_for, parse_request, write_backend_request_head, ForwardContext, Request,
};
use crate::http::response::{write_error_response, write_error_response_head};
use crate::http::{BodyFraming, HttpError, Parsed};
use crate::identity::ClientCert;
use crate::io::{give_buffer, take_buffer, write_all, Transport};
use crate::router::{rewrite_prefix, RouteMatch};
use crate::tls::PeerIdentity;
use crate::trusted_proxies::Hop;
use crate::upstream::Pool;

/// Per-connection buffer sizes (taken from the core's pool when bytes arrive).
const RBUF_CAPACITY: usize = 16 * 1024;
const OUT_CAPACITY: usize = 4 * 1024;

/// Hard cap on header slots parsed per head (the configurable limit is below it).
pub const MAX_HEADERS_CAP: usize = 512;

/// What a connection was accepted under: the config generation (kept for the
/// connection's life, across reloads), the listener and the TLS site.
pub struct Session {
    pub generation: Rc<WorkerGeneration>,
    pub listener: usize,
    /// None only when the site could not be determined (no handshake ran).
    pub site: Option<usize>,
}

impl Session {
    pub fn settings(&self) -> &GatewaySettings {
        &self.generation.shared.settings
    }
}

/// One worker's state. Lives on one core; nothing here is touched by another.
pub struct WorkerContext {
    pub index: usize,
    pub pool: RefCell<Pool>,
    pub drain: Rc<Drain>,
    /// Request latency in microseconds, head received to response relayed.
    pub latency: RefCell<Histogram<u64>>,
    pub requests: Cell<u64>,
    /// Connections by TLS mode after the handshake.
    pub modes: ModeCounters,
    /// Connections open and handshaking now, and those refused at a cap.
    pub conns: ConnCounts,
    /// Body bytes relayed by splice (never in user memory) versus copied.
    pub body_bytes: BodyByteCounters,
    /// Pipes for splicing, one per splice in flight, reused.
    pub pipes: RefCell<Vec<(monoio::net::Pipe, monoio::net::Pipe)>>,
    /// Requests by route and status, handshake failures by reason.
    pub metrics: crate::metrics::WorkerMetrics,
}

#[derive(Default)]
pub struct ModeCounters {
    pub ktls: Cell<u64>,
    pub userspace: Cell<u64>,
    pub handshake_failed: Cell<u64>,
}

#[derive(Default)]
pub struct ConnCounts {
    pub open: Cell<usize>,
    pub handshaking: Cell<usize>,
    pub refused_max_connections: Cell<u64>,
    pub refused_max_handshakes: Cell<u64>,
}

#[derive(Default)]
pub struct BodyByteCounters {
    pub spliced: Cell<u64>,
    pub copied: Cell<u64>,
}

impl WorkerContext {
    pub fn new(index: usize, pool: Pool, drain: Rc<Drain>) -> Self {
        WorkerContext {
            index,
            pool: RefCell::new(pool),
            drain,
            latency: RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(
                |_| Histogram::new(3).expect("hdrhistogram with 3 significant digits"),
            )),
            requests: Cell::new(0),
            modes: ModeCounters::default(),
            conns: ConnCounts::default(),
            body_bytes: BodyByteCounters::default(),
            pipes: RefCell::new(Vec::new()),
            metrics: crate::metrics::WorkerMetrics::new(),
        }
    }
}

/// The client side of one connection and the buffers it owns for its life.
pub(crate) struct ClientConn<S> {
    pub io: S,
    /// Bytes read from the client: the current head, body bytes, pipelined requests.
    pub rbuf: Vec<u8>,
    /// Heads we build (for the backend and for the client) and re-encoded chunks.
    pub out: Vec<u8>,
    pub peer: SocketAddr,
    pub identity: PeerIdentity,
    pub session: Session,
    /// The client certificate, parsed on first need (policy or identity headers).
    cert: OnceCell<Option<ClientCert>>,
    /// Who the current request came from (`trusted_proxies`): for the
    /// forwarding headers and every log line about the request.
    hop: Hop,
    /// The current request's host in normal form (reused per request).
    host: String,
    /// The current request's normalised path, then the target sent to the
    /// backend when no rewrite applies (reused per request).
    target: String,
    /// The request being answered is a HEAD: the gateway's own error
    /// responses to it carry no body either (one would be read as the next
    /// response on a kept-alive connection).
    head_request: bool,
}

/// A request that is ready to forward; everything borrowed from the head has
/// been copied out or written into `ClientConn::out` (the backend head).
pub(crate) struct RequestPlan {
    pub backend: SocketAddr,
    /// Index into the generation's upstreams (decides TLS and the pool key).
    pub upstream: usize,
    pub route_id: usize,
    pub metric_slot: usize,
    pub framing: BodyFraming,
    pub max_body: u64,
    pub body_deadline: crate::config::BodyDeadline,
    pub keep_alive: bool,
    /// RFC 9110 section 9.2.2: may be sent again after a backend connection
    /// failed with the request possibly delivered.
    pub idempotent: bool,
    /// The client speaks HTTP/1.0: it never gets a chunked response.
    pub client_http10: bool,
    pub expect_continue: bool,
    pub is_head: bool,
    pub backend_head_len: usize,
    pub started: Instant,
    pub log: Option<AccessLine>,
}

/// What the access log says about a request beyond its outcome.
pub(crate) struct AccessLine {
    method: String,
    /// The target forwarded to the backend (normalised, rewritten).
    target: String,
    /// The target as the client wrote it, when it differs.
    raw_target: Option<String>,
}

enum Next {
    Forward(RequestPlan),
    Reject {
        error: ProxyError,
        close: bool,
        allow: Option<String>,
    },
}

/// Serves one client connection until it closes, errs, or the worker drains.
pub async fn serve<S: Transport>(
    io: S,
    peer: SocketAddr,
    identity: PeerIdentity,
    session: Session,
    ctx: Rc<WorkerContext>,
) {
    let mut c = ClientConn {
        io,
        rbuf: Vec::new(),
        out: Vec::new(),
        peer,
        identity,
        session,
        cert: OnceCell::new(),
        hop: Hop::direct(peer.ip()),
        host: String::new(),
        target: String::new(),
        head_request: false,
    };
    let mut first = true;
    loop {
        let next = match read_request(&mut c, &ctx, first).await {
            Ok(Some(next)) => next,
            Ok(None) => break,
            Err(e) => {
                log_error(&c, &e, None);
                ctx.metrics.record_request(None, e.status());
                if respond_error(&mut c, &e, true).await == Written::No {
                    return abort(c);
                }
                break;
            }
        };
        first = false;
        match next {
            Next::Reject {
                error,
                close,
                allow,
            } => {
                log_error(&c, &error, None);
                let written = respond_error_with(&mut c, &error, close, allow.as_deref()).await;
                if written == Written::No {
                    return abort(c);
                }
                if close {
                    break;
                }
            }
            Next::Forward(plan) => {
                let _in_flight = ctx.drain.enter();
                ctx.requests.set(ctx.requests.get() + 1);
                let after = forward::exchange(&mut c, &plan, &ctx).await;
                let micros = u64::try_from(plan.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = ctx.latency.borrow_mut().record(micros.max(1));
                match after {
                    forward::After::KeepAlive => {}
                    forward::After::Close => break,
                    forward::After::Abort => return abort(c),
                }
            }
        }
    }
    c.io.close().await;
    give_buffer(std::mem::take(&mut c.rbuf));
    give_buffer(std::mem::take(&mut c.out));
}

/// Ends a connection with a reset: its response was cut short, or the client
/// stopped reading (a clean close would wait on it, or read as complete).
fn abort<S: Transport>(mut c: ClientConn<S>) {
    c.io.abort();
    give_buffer(std::mem::take(&mut c.rbuf));
    give_buffer(std::mem::take(&mut c.out));
}

/// Whether a response reached the client's socket within the send timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    No,
}

/// Reads until one whole request head is in `rbuf`, then plans it. Ok(None):
/// the client left, or stayed idle past the idle timeout (no response owed).
async fn read_request<S: Transport>(
    c: &mut ClientConn<S>,
    ctx: &WorkerContext,
    first: bool,
) -> Result<Option<Next>, ProxyError> {
    let timeouts = c.session.settings().timeouts;
    // The head clock starts at the first byte of a request (at once for the
    // first request: the client has just finished its handshake).
    let mut head_deadline =
        (first || !c.rbuf.is_empty()).then(|| Instant::now() + timeouts.request_head);
    loop {
        if !c.rbuf.is_empty() {
            if let Some(next) = plan_request(c, ctx)? {
                return Ok(Some(next));
            }
            head_deadline.get_or_insert_with(|| Instant::now() + timeouts.request_head);
        }
        let wait = match head_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => timeouts.idle,
        };
        if wait.is_zero() {
            return Err(ProxyError::HeadTimeout);
        }
        if c.rbuf.is_empty() {
            // Between requests: idle connections give their buffers back to the
            // core's pool and wait for readability holding none.
            give_buffer(std::mem::take(&mut c.rbuf));
            give_buffer(std::mem::take(&mut c.out));
            // One long path must not stay allocated on an idle connection.
            if c.target.capacity() > 1024 {
                c.target = String::new();
            }
            match monoio::time::timeout(wait, c.io.wait_readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(peer = %c.peer, error = %e, "client connection failed while idle");
                    return Ok(None);
                }
                Err(_) if head_deadline.is_some() => return Err(ProxyError::HeadTimeout),
                Err(_) => return Ok(None),
            }
            c.rbuf = take_buffer(RBUF_CAPACITY);
            c.out = take_buffer(OUT_CAPACITY);
        }
        let wait = match head_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => timeouts.idle,
        };
        let buf = std::mem::take(&mut c.rbuf);
        match monoio::time::timeout(wait, c.io.read_append(buf)).await {
            Ok((Ok(0), buf)) => {
                c.rbuf = buf;
                return Ok(None);
            }
            Ok((Ok(_), buf)) => c.rbuf = buf,
            Ok((Err(e), buf)) => {
                c.rbuf = buf;
                debug!(peer = %c.peer, error = %e, "client read failed");
                return Ok(None);
            }
            Err(_) if head_deadline.is_some() => return Err(ProxyError::HeadTimeout),
            Err(_) => return Ok(None), // idle keep-alive connection: close quietly
        }
    }
}

/// Parses the head in `rbuf` if complete, routes it and writes the backend
/// head into `out`. Consumes the head from `rbuf`.
fn plan_request<S>(c: &mut ClientConn<S>, ctx: &WorkerContext) -> Result<Option<Next>, ProxyError> {
    let generation = c.session.generation.clone();
    let settings = &generation.shared.settings;
    let limits = crate::http::Limits {
        max_header_bytes: settings.limits.max_header_bytes,
        max_headers: settings.limits.max_headers.min(MAX_HEADERS_CAP),
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    c.head_request = false;
    c.hop = Hop::direct(c.peer.ip());
    let req = match parse_request(&c.rbuf, &mut headers, &limits) {
        Ok(Parsed::Complete(req)) => req,
        Ok(Parsed::Partial) => return Ok(None),
        Err(e) => return Err(ProxyError::BadRequest(e)),
    };
    c.head_request = req.method == "HEAD";
    // Who the client is: the peer, unless the peer is a trusted proxy, whose
    // X-Forwarded-For then names it (its right-most untrusted entry).
    let trusted = &generation.shared.listeners[c.session.listener].trusted_proxies;
    c.hop = trusted.hop(c.peer.ip(), forwarded_for(&req));
    let head_len = req.head_len;
    let has_body = !matches!(
        req.framing,
        BodyFraming::None | BodyFraming::ContentLength(0)
    );
    let reject = |error: ProxyError| Next::Reject {
        close: has_body || !req.keep_alive || error.closes_connection(),
        error,
        allow: None,
    };
    let next = 'plan: {
        if ctx.drain.is_draining() {
            break 'plan Next::Reject {
                error: ProxyError::Draining,
                close: true,
                allow: None,
            };
        }
        // One normal form for the Host, the SNI and the config's names, so
        // site selection and route matching cannot read a host differently.
        c.host.clear();
        let host = match (req.host, c.identity.sni.as_deref()) {
            (Some(value), _) => {
                if normalize_authority(value, &mut c.host).is_err() {
                    return Err(ProxyError::BadRequest(HttpError::Malformed(
                        "invalid Host header",
                    )));
                }
                Some(c.host.as_str())
            }
            // HTTP/1.0 without Host: the TLS server name stands in.
            (None, Some(sni)) => normalize_host(sni, &mut c.host)
                .ok()
                .map(|()| c.host.as_str()),
            (None, None) => None,
        };
        // One certificate must not reach another site's routes: the Host must
        // select the same site the TLS server name did.
        if req.host.is_some()
            && generation.shared.site_for_name(c.session.listener, host) != c.session.site
        {
            break 'plan reject(ProxyError::MisdirectedRequest);
        }
        if req.method.eq_ignore_ascii_case("CONNECT") {
            // Never a tunnel, whatever the route (the config cannot list it).
            break 'plan reject(ProxyError::MethodRefused);
        }
        let asterisk = req.target == "*";
        let found = route_request(settings, c.session.site, host, &req, &mut c.target)?;
        let route = match found {
            RouteMatch::Found(r) => r,
            RouteMatch::MethodNotAllowed(r) => {
                let allow = r
                    .methods
                    .as_ref()
                    .map(|m| format!("Allow: {}", m.join(", ")));
                break 'plan Next::Reject {
                    error: ProxyError::MethodNotAllowed,
                    close: has_body || !req.keep_alive,
                    allow,
                };
            }
            RouteMatch::NotFound => break 'plan reject(ProxyError::NoRoute),
        };
        if route.refuses_echo_method(req.method) {
            break 'plan reject(ProxyError::MethodRefused);
        }
        if route.client_policy.needs_certificate() || !route.forward_identity.is_empty() {
            let chain = &c.identity.chain;
            c.cert.get_or_init(|| ClientCert::from_chain(chain));
        }
        let cert = c.cert.get().and_then(Option::as_ref);
        if route.client_policy.needs_certificate() {
            match cert {
                None => break 'plan reject(ProxyError::ClientCertRequired),
                Some(cert) if !route.client_policy.allow.permits(cert) => {
                    break 'plan reject(ProxyError::ClientCertNotAllowed)
                }
                Some(_) => {}
            }
        }
        if let BodyFraming::ContentLength(n) = req.framing {
            if n > route.max_body_bytes {
                break 'plan Next::Reject {
                    error: ProxyError::BodyTooLarge,
                    close: true,
                    allow: None,
                };
            }
        }
        let upstream = &generation.shared.upstreams[route.upstream];
        let rr = &generation.round_robin[route.id];
        let backend = upstream.addresses[rr.get() % upstream.addresses.len()];
        rr.set(rr.get().wrapping_add(1));
        c.out.clear();
        // The forwarded target: the normalised (maybe rewritten) path and the
        // query exactly as received.
        let mut rewritten = String::new();
        let target: &str = if asterisk {
            "*"
        } else {
            let out = match route.rewrite_prefix.as_deref() {
                Some(replacement) => {
                    rewrite_prefix(&route.path, replacement, &c.target, &mut rewritten);
                    &mut rewritten
                }
                None => &mut c.target,
            };
            if let Some(query) = req.query() {
                out.push('?');
                out.push_str(query);
            }
            out
        };
        let mut extra = Vec::new();
        if let Some(cert) = cert {
            identity_headers::write(&route.forward_identity, cert, &mut extra);
        }
        for (name, value) in route.headers.set.iter().chain(&route.headers.add) {
            crate::http::head::put_header(&mut extra, name.as_bytes(), value.as_bytes());
        }
        let fwd = ForwardContext {
            peer_ip: c.hop.peer,
            client_ip: c.hop.client,
            keep_forwarded_for: c.hop.peer_trusted,
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
        write_backend_request_head(&req, &fwd, &mut c.out);
        Next::Forward(RequestPlan {
            backend,
            upstream: route.upstream,
            route_id: route.id,
            metric_slot: route.metric_slot,
            framing: req.framing,
            max_body: route.max_body_bytes,
            body_deadline: route.body_deadline,
            keep_alive: req.keep_alive,
            idempotent: matches!(
                req.method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
            client_http10: req.minor_version == 0,
            expect_continue: req.expect_continue,
            is_head: req.method == "HEAD",
            backend_head_len: c.out.len(),
            started: Instant::now(),
            log: settings.access_log.then(|| AccessLine {
                method: req.method.to_owned(),
                target: target.to_owned(),
                raw_target: (target != req.target).then(|| req.target.to_owned()),
            }),
        })
    };
    c.rbuf.drain(..head_len);
    Ok(Some(next))
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
) -> Result<RouteMatch<'g>, ProxyError> {
    path.clear();
    if req.target == "*" {
        path.push('/');
    } else {
        normalize_path(req.path(), &settings.paths, path).map_err(ProxyError::BadRequest)?;
    }
    let found = settings.routes.find(site, host, path, req.method);
    if path.contains(';') {
        // A servlet container routes on the path without its `;` parameters:
        // both readings must pick the same route, or we cannot know which
        // policy the backend's resource is under.
        let mut plain = String::with_capacity(path.len());
        strip_params(path, &settings.paths, &mut plain).map_err(ProxyError::BadRequest)?;
        let other = settings.routes.find(site, host, &plain, req.method);
        if other.route_id() != found.route_id() {
            return Err(ProxyError::BadRequest(HttpError::AmbiguousPathParams));
        }
    }
    Ok(found)
}

/// Writes a gateway-generated error response (and nothing else).
pub(crate) async fn respond_error<S: Transport>(
    c: &mut ClientConn<S>,
    e: &ProxyError,
    close: bool,
) -> Written {
    respond_error_with(c, e, close, None).await
}

/// Writes a gateway-generated error response, with one optional extra header line.
async fn respond_error_with<S: Transport>(
    c: &mut ClientConn<S>,
    e: &ProxyError,
    close: bool,
    extra: Option<&str>,
) -> Written {
    c.out.clear();
    let extra: &[&str] = match &extra {
        Some(line) => std::slice::from_ref(line),
        None => &[],
    };
    let write = if c.head_request {
        write_error_response_head
    } else {
        write_error_response
    };
    write(
        e.status(),
        e.code(),
        e.message(),
        close || e.closes_connection(),
        extra,
        &mut c.out,
    );
    let out = std::mem::take(&mut c.out);
    // A client that does not read its error response loses it, and its connection.
    match monoio::time::timeout(send_timeout(c), write_all(&mut c.io, out)).await {
        Ok((res, out)) => {
            c.out = out;
            if res.is_ok() {
                Written::Yes
            } else {
                Written::No
            }
        }
        Err(_) => Written::No,
    }
}

pub(crate) fn log_error<S>(c: &ClientConn<S>, e: &ProxyError, backend: Option<SocketAddr>) {
    match e.fault() {
        Fault::Backend => match backend {
            Some(b) => {
                warn!(peer = %c.peer, client = %c.hop.client, backend = %b, code = %e.code(), "{e}")
            }
            None => warn!(peer = %c.peer, client = %c.hop.client, code = %e.code(), "{e}"),
        },
        Fault::Client => debug!(peer = %c.peer, client = %c.hop.client, code = %e.code(), "{e}"),
        Fault::Gateway => info!(peer = %c.peer, client = %c.hop.client, code = %e.code(), "{e}"),
    }
}

/// Counts the response in this core's metrics and writes the access-log line if enabled.
pub(crate) fn access_log<S>(
    c: &ClientConn<S>,
    ctx: &WorkerContext,
    plan: &RequestPlan,
    status: u16,
    code: &str,
) {
    ctx.metrics.record_request(Some(plan.metric_slot), status);
    if let Some(line) = &plan.log {
        let micros = plan.started.elapsed().as_micros();
        let raw_target = line.raw_target.as_deref().unwrap_or("-");
        // `client` is who trusted_proxies says sent it; `peer` the hop it came
        // from (the same unless a trusted proxy forwarded it).
        info!(target: "portcullis::access", client = %c.hop.client, peer = %c.peer.ip(), method = %line.method, target = %line.target, raw_target = %raw_target, route = plan.route_id, backend = %plan.backend, status, code, micros = micros as u64, "access");
    }
}

/// Client read deadline for body reads (per read).
pub(crate) fn io_timeout<S>(c: &ClientConn<S>) -> Duration {
    c.session.settings().timeouts.idle
}

/// Deadline of one write to the client or to a backend.
pub(crate) fn send_timeout<S>(c: &ClientConn<S>) -> Duration {
    c.session.settings().timeouts.send
}
