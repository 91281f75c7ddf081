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
use crate::http::request::{parse_request, write_backend_request_head, ForwardContext};
use crate::http::response::write_error_response;
use crate::http::{BodyFraming, Parsed};
use crate::identity::ClientCert;
use crate::io::{give_buffer, take_buffer, write_all, Transport};
use crate::router::RouteMatch;
use crate::tls::PeerIdentity;
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
    host: String,
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
    pub log: Option<(String, String)>,
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
        host: String::new(),
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
    let req = match parse_request(&c.rbuf, &mut headers, &limits) {
        Ok(Parsed::Complete(req)) => req,
        Ok(Parsed::Partial) => return Ok(None),
        Err(e) => return Err(ProxyError::BadRequest(e)),
    };
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
        c.host.clear();
        let raw_host = req.host.or(c.identity.sni.as_deref()).map(strip_port);
        if let Some(h) = raw_host {
            c.host.extend(h.chars().map(|ch| ch.to_ascii_lowercase()));
        }
        let host = raw_host.map(|_| c.host.as_str());
        // One certificate must not reach another site's routes: the Host must
        // select the same site the TLS server name did.
        if req.host.is_some()
            && generation.shared.site_for_name(c.session.listener, host) != c.session.site
        {
            break 'plan reject(ProxyError::MisdirectedRequest);
        }
        let route = match settings
            .routes
            .find(c.session.site, host, req.path(), req.method)
        {
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
        let rewritten = route
            .rewrite_prefix
            .as_deref()
            .and_then(|prefix| rewrite_target(req.target, &route.path, prefix));
        let mut extra = Vec::new();
        if let Some(cert) = cert {
            identity_headers::write(&route.forward_identity, cert, &mut extra);
        }
        for (name, value) in route.headers.set.iter().chain(&route.headers.add) {
            crate::http::head::put_header(&mut extra, name.as_bytes(), value.as_bytes());
        }
        let fwd = ForwardContext {
            client_ip: c.peer.ip(),
            proto: "https",
            set_host: route.set_host.as_deref(),
            framing: req.framing,
            target: rewritten.as_deref(),
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
            log: settings
                .access_log
                .then(|| (req.method.to_owned(), req.target.to_owned())),
        })
    };
    c.rbuf.drain(..head_len);
    Ok(Some(next))
}

/// The target with the route's matched prefix replaced; None when the target
/// is not in origin form under that prefix (it is then sent unchanged).
fn rewrite_target(target: &str, prefix: &str, replacement: &str) -> Option<String> {
    let rest = target.strip_prefix(prefix)?;
    let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
    out.push_str(replacement);
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    Some(out)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
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
    write_error_response(
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
            Some(b) => warn!(peer = %c.peer, backend = %b, code = %e.code(), "{e}"),
            None => warn!(peer = %c.peer, code = %e.code(), "{e}"),
        },
        Fault::Client => debug!(peer = %c.peer, code = %e.code(), "{e}"),
        Fault::Gateway => info!(peer = %c.peer, code = %e.code(), "{e}"),
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
    if let Some((method, target)) = &plan.log {
        let micros = plan.started.elapsed().as_micros();
        info!(target: "portcullis::access", client = %c.peer.ip(), method = %method, target = %target, route = plan.route_id, backend = %plan.backend, status, code, micros = micros as u64, "access");
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
