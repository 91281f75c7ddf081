//! The per-connection loop: read a request head, route it, forward it, relay
//! the response, repeat while keep-alive holds. Protocol decisions live in
//! `crate::http` (pure); this module is the I/O shell around them.

pub(crate) mod body_clock;
mod forward;
mod splice;

use std::cell::{OnceCell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::drain::Drain;
use crate::error::{Error, Fault, Kind};
use crate::exchange::plan::{self, Connection, Decision, Rejection, RequestPlan, Scratch};
use crate::exchange::{ClientProtocol, Exchange};
use crate::generation::{GatewaySettings, WorkerGeneration};
use crate::http::request::parse_request;
use crate::http::response::{write_error_response, write_error_response_head};
use crate::http::Parsed;
use crate::identity::ClientCert;
use crate::io::{give_buffer, take_buffer, write_all, Transport};
use crate::tls::PeerIdentity;
use crate::trusted_proxies::Hop;
use crate::upstream::{BackendConn, BackendIo, Pool};

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
    /// Pipes for splicing, one per splice in flight, reused.
    pub pipes: RefCell<Vec<(monoio::net::Pipe, monoio::net::Pipe)>>,
    /// Every counter of this worker (see `metrics::WorkerMetrics`).
    pub metrics: crate::metrics::WorkerMetrics,
}

impl WorkerContext {
    pub fn new(index: usize, pool: Pool, drain: Rc<Drain>) -> Self {
        WorkerContext {
            index,
            pool: RefCell::new(pool),
            drain,
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
    /// The plan step's reused buffers (host, target).
    scratch: Scratch,
    /// The request being answered is a HEAD: the gateway's own error
    /// responses to it carry no body either (one would be read as the next
    /// response on a kept-alive connection).
    head_request: bool,
}

/// What the next request on a connection comes to.
enum Next {
    Forward(RequestPlan),
    Reject(Rejection),
}

/// How long an idle kept-alive connection is watched for a request already
/// on its way when a handover starts, before it is closed.
const HANDOVER_LOOK: std::time::Duration = std::time::Duration::from_millis(5);

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
        scratch: Scratch::default(),
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
                // Error responses and the close are boxed, like the exchange
                // below: this future is held for the connection's whole
                // life, idle included, and should be sized for the idle
                // wait, not for the rarer states.
                if Box::pin(respond_error(&mut c, &e, true)).await == Written::No {
                    return abort(c);
                }
                break;
            }
        };
        first = false;
        match next {
            Next::Reject(Rejection {
                error,
                close,
                allow,
            }) => {
                log_error(&c, &error, None);
                let written =
                    Box::pin(respond_error_with(&mut c, &error, close, allow.as_deref())).await;
                if written == Written::No {
                    return abort(c);
                }
                if close {
                    break;
                }
            }
            Next::Forward(plan) => {
                let _in_flight = ctx.drain.enter();
                ctx.metrics.request_forwarded();
                // Boxed: an exchange's state is large and lives only while
                // a request is in flight; inline, every idle connection
                // would hold its size (one allocation per request instead).
                let after = Box::pin(forward::exchange(&mut c, &plan, &ctx)).await;
                let micros = u64::try_from(plan.started.elapsed().as_micros()).unwrap_or(u64::MAX);
                ctx.metrics.request_latency(micros);
                match after {
                    forward::After::KeepAlive => {}
                    forward::After::Close => break,
                    forward::After::Abort => return abort(c),
                }
            }
        }
    }
    Box::pin(c.io.close()).await;
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
) -> Result<Option<Next>, Error> {
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
            return Err(Error::new(Kind::HeadTimeout));
        }
        if c.rbuf.is_empty() {
            // Between requests: idle connections give their buffers back to the
            // core's pool and wait for readability holding none.
            give_buffer(std::mem::take(&mut c.rbuf));
            give_buffer(std::mem::take(&mut c.out));
            // One long path must not stay allocated on an idle connection.
            if c.scratch.target.capacity() > 1024 {
                c.scratch.target = String::new();
            }
            let readable = monoio::time::timeout(wait, c.io.wait_readable());
            let outcome = if first {
                readable.await
            } else {
                // Between requests of a kept-alive connection: a handover
                // closes it now, so its client's next request goes to the new
                // process (a request already on its way is served).
                monoio::select! {
                    r = readable => r,
                    _ = ctx.drain.handover_started() => {
                        // A request already in the socket is served: look
                        // once more, briefly (both futures may have been ready).
                        match monoio::time::timeout(HANDOVER_LOOK, c.io.wait_readable()).await {
                            Ok(Ok(())) => Ok(Ok(())),
                            _ => {
                                debug!(peer = %c.peer, "idle keep-alive connection closed: another process took over");
                                return Ok(None);
                            }
                        }
                    }
                }
            };
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!(peer = %c.peer, error = %e, "client connection failed while idle");
                    return Ok(None);
                }
                Err(_) if head_deadline.is_some() => return Err(Error::new(Kind::HeadTimeout)),
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
            Err(_) if head_deadline.is_some() => return Err(Error::new(Kind::HeadTimeout)),
            Err(_) => return Ok(None), // idle keep-alive connection: close quietly
        }
    }
}

/// Parses the head in `rbuf` if complete and plans it (`exchange::plan`):
/// the backend head goes into `out`. Consumes the head from `rbuf`.
fn plan_request<S: Transport>(
    c: &mut ClientConn<S>,
    ctx: &WorkerContext,
) -> Result<Option<Next>, Error> {
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
        Err(e) => return Err(Error::bad_request(e)),
    };
    c.head_request = req.method == "HEAD";
    let conn = Connection {
        generation: &generation,
        listener: c.session.listener,
        site: c.session.site,
        sni: c.identity.sni.as_deref(),
        peer: c.peer,
        chain: c.io.peer_certificates(),
        cert: &c.cert,
        draining: ctx.drain.refuses_requests(),
    };
    let protocol = if req.minor_version == 0 {
        ClientProtocol::Http10
    } else {
        ClientProtocol::Http11
    };
    let decision = plan::plan(
        &req,
        &conn,
        protocol,
        &mut c.scratch,
        &mut c.out,
        &mut c.hop,
        Instant::now(),
    )?;
    let head_len = req.head_len;
    c.rbuf.drain(..head_len);
    Ok(Some(match decision {
        Decision::Forward(plan) => Next::Forward(plan),
        Decision::Reject(r) => Next::Reject(r),
    }))
}

/// Writes a gateway-generated error response (and nothing else).
pub(crate) async fn respond_error<S: Transport>(
    c: &mut ClientConn<S>,
    e: &Error,
    close: bool,
) -> Written {
    respond_error_with(c, e, close, None).await
}

/// Writes a gateway-generated error response, with one optional extra header line.
async fn respond_error_with<S: Transport>(
    c: &mut ClientConn<S>,
    e: &Error,
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

pub(crate) fn log_error<S>(c: &ClientConn<S>, e: &Error, backend: Option<SocketAddr>) {
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
        // from (the same unless a trusted proxy forwarded it). `protocol` is
        // the connection's, named as ALPN names it (HTTP/2's line says "h2").
        info!(target: "portcullis::access", client = %c.hop.client, peer = %c.peer.ip(), protocol = "http/1.1", method = %line.method, target = %line.target, raw_target = %raw_target, route = plan.route_id, backend = %plan.backend, status, code, micros = micros as u64, "access");
    }
}

/// A failed read or write on a backend connection as an error: its kind
/// and retry verdict from the exchange machine (how far the request got),
/// its TLS reason from the stream. Both client protocols' shells use it
/// (`forward` here, `http2::stream`).
pub(crate) fn backend_error(x: &Exchange, b: &BackendConn, e: BackendIo) -> Error {
    e.into_error(b.stream.tls_failure(), |kind, cause| {
        x.backend_broke(kind, cause)
    })
}

/// Client read deadline for body reads (per read).
pub(crate) fn io_timeout<S>(c: &ClientConn<S>) -> Duration {
    c.session.settings().timeouts.idle
}

/// Deadline of one write to the client or to a backend.
pub(crate) fn send_timeout<S>(c: &ClientConn<S>) -> Duration {
    c.session.settings().timeouts.send
}
