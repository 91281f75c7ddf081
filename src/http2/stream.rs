//! One HTTP/2 stream: the request core (`exchange::plan`, an `Exchange`)
//! between `h2`'s stream handles and an HTTP/1.1 backend connection of its
//! own from the core's pool.
//!
//! Deadlines per stream, as the HTTP/1.1 shell keeps them per request: the
//! request body (the body clock, 408), the backend (connect, response: 502
//! and 504), and flow control: a client that grants no window for
//! `timeouts.send` has its stream reset and its backend connection dropped
//! (never pooled half-read). What the client gets for every outcome is the
//! HTTP/1.1 shell's: a JSON error before the response head, a reset
//! (RST_STREAM, the stream's abort) after it.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::request::Parts;
use tracing::{debug, info, warn};

use super::{request, Conn};
use crate::error::{Error, Fault, Kind};
use crate::exchange::plan::{self, Connection, Decision, RequestPlan, Scratch};
use crate::exchange::{ClientProtocol, Exchange, HeadStep, MAX_RESPONSE_HEADERS};
use crate::http::request::Request;
use crate::http::response::write_error_body;
use crate::http::HttpError;
use crate::proxy::backend_error;
use crate::proxy::body_clock::BodyClock;
use crate::trusted_proxies::Hop;
use crate::upstream::{checkout_or_connect, BackendConn, PoolKey};

/// How a stream failed, which decides what the client still gets.
enum Failure {
    /// Nothing of a response was sent: the client gets an error response.
    BeforeResponse(Error),
    /// The response head is out: the stream is reset.
    AfterResponse(Error),
    /// The client reset the stream or the connection is gone.
    ClientGone,
    /// The client granted no window for the send timeout: reset.
    Stalled,
}

/// Serves one stream to its end.
pub(super) async fn serve(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    conn: &Conn,
) {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let is_head = parts.method == http::Method::HEAD;
    let mut backend_head = Vec::new();
    let mut hop = Hop::direct(conn.peer.ip());
    let decision = plan_stream(
        conn,
        &parts,
        body.is_end_stream(),
        &mut backend_head,
        &mut hop,
        started,
    );
    let plan = match decision {
        Ok(Decision::Forward(p)) => p,
        Ok(Decision::Reject(r)) => {
            log_error(conn, &hop, &r.error, None);
            conn.ctx.metrics.record_request(None, r.error.status());
            return respond_error(&mut respond, &r.error, r.allow.as_deref(), is_head);
        }
        Err(e) => {
            log_error(conn, &hop, &e, None);
            conn.ctx.metrics.record_request(None, e.status());
            return respond_error(&mut respond, &e, None, is_head);
        }
    };
    let _in_flight = conn.ctx.drain.enter();
    conn.ctx.metrics.request_forwarded();
    forward(conn, &plan, &backend_head, body, respond, &hop).await;
    let micros = u64::try_from(plan.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    conn.ctx.metrics.request_latency(micros);
}

/// The stream's head as the core's `Request`, planned as HTTP/1.1's is.
fn plan_stream(
    conn: &Conn,
    parts: &Parts,
    end_stream: bool,
    backend_head: &mut Vec<u8>,
    hop: &mut Hop,
    now: Instant,
) -> Result<Decision, Error> {
    let generation = conn.session.generation.clone();
    let settings = &generation.shared.settings;
    // The size as h2 measures it (RFC 9113's decoded size), against the
    // limit HTTP/1.1 applies to its head: 431 PCS.4310 with its JSON body.
    // h2's own limit sits above ours (see `super::header_list_cap`) so that
    // this answer, not h2's bare 431, is what a list just past it gets.
    if request::decoded_size(parts) > settings.limits.max_header_bytes {
        return Err(Error::bad_request(HttpError::HeadTooLarge));
    }
    // The count is ours too, as for HTTP/1.1.
    if parts.headers.len() > settings.limits.max_headers {
        return Err(Error::bad_request(HttpError::TooManyHeaders));
    }
    let cookie = request::cookie(parts);
    let fields = request::fields(parts, &cookie);
    let authority = parts.uri.authority().map(|a| a.as_str());
    let req = Request::from_parts(
        parts.method.as_str(),
        request::target(parts),
        authority,
        &fields,
        end_stream,
    )
    .map_err(Error::bad_request)?;
    let c = Connection {
        generation: &generation,
        listener: conn.session.listener,
        site: conn.session.site,
        sni: conn.identity.sni.as_deref(),
        peer: conn.peer,
        chain: &conn.chain,
        cert: &conn.cert,
        draining: conn.ctx.drain.refuses_requests(),
    };
    let mut scratch = Scratch::default();
    plan::plan(
        &req,
        &c,
        ClientProtocol::Http2,
        &mut scratch,
        backend_head,
        hop,
        now,
    )
}

/// The gateway answers the stream itself: status, the JSON error body
/// (none for HEAD, whose head still says how long it would be).
fn respond_error(respond: &mut SendResponse<Bytes>, e: &Error, allow: Option<&str>, is_head: bool) {
    let mut body = Vec::new();
    write_error_body(e.status(), e.code(), e.message(), &mut body);
    let Ok(head) = request::error_head(e.status(), body.len(), allow) else {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    };
    match respond.send_response(head, is_head) {
        // Small enough for any window the client must grant at the start
        // (65535); h2 queues it and the connection task sends it.
        Ok(mut send) if !is_head => {
            let _ = send.send_data(Bytes::from(body), true);
        }
        Ok(_) => {}
        Err(err) => debug!(error = %err, "HTTP/2 stream gone before its error response"),
    }
}

async fn forward(
    conn: &Conn,
    plan: &RequestPlan,
    backend_head: &[u8],
    mut body: RecvStream,
    mut respond: SendResponse<Bytes>,
    hop: &Hop,
) {
    let ctx = &conn.ctx;
    let generation = conn.session.generation.clone();
    let timeouts = generation.shared.settings.timeouts;
    let tls = generation.upstream_configs[plan.upstream].clone();
    let key = PoolKey {
        addr: plan.backend,
        tls: tls.as_ref().map(|t| t.identity),
    };
    let mut x = Exchange::new(plan.facts.clone());
    let mut clock = BodyClock::start(Instant::now(), plan.body_deadline);
    let mut retried = false;
    loop {
        let connect = timeouts.backend_connect;
        let mut b = match checkout_or_connect(&ctx.pool, plan.backend, tls.as_ref(), connect).await
        {
            Ok(b) => b,
            Err(e) => {
                return fail(
                    conn,
                    plan,
                    hop,
                    &mut respond,
                    None,
                    Failure::BeforeResponse(e),
                )
            }
        };
        let tried = attempt(
            conn,
            &mut b,
            backend_head,
            &mut x,
            &mut clock,
            &mut body,
            &mut respond,
        );
        let head = match tried.await {
            Ok(head) => head,
            Err(Failure::BeforeResponse(e)) if !retried && e.retry_safe(b.reused) => {
                debug!(backend = %plan.backend, error = %e, "pooled backend connection was closed; retrying on a fresh one");
                retried = true;
                x.restart();
                continue;
            }
            Err(f) => return fail(conn, plan, hop, &mut respond, None, f),
        };
        let status = head.status().as_u16();
        access_log(conn, plan, hop, status, "-");
        let done = x.response_done();
        let mut send = match respond.send_response(head, done) {
            Ok(s) => s,
            Err(e) => {
                debug!(peer = %conn.peer, error = %e, "HTTP/2 stream gone before its response");
                return;
            }
        };
        let relayed = if done {
            Ok(())
        } else {
            relay_body(conn, &mut x, &mut b, &mut send).await
        };
        match relayed {
            Ok(()) => {
                if x.backend_reusable(!b.buf.is_empty()) {
                    ctx.pool.borrow_mut().checkin(key, b);
                }
            }
            Err(f) => fail(conn, plan, hop, &mut respond, Some(&mut send), f),
        }
        return;
    }
}

/// One attempt on one backend connection: the head, the body, the
/// response head (the backend's 1xx consumed), which it returns as the
/// client's.
async fn attempt(
    conn: &Conn,
    b: &mut BackendConn,
    backend_head: &[u8],
    x: &mut Exchange,
    clock: &mut BodyClock,
    body: &mut RecvStream,
    respond: &mut SendResponse<Bytes>,
) -> Result<http::Response<()>, Failure> {
    let settings = &conn.session.settings();
    let timeouts = settings.timeouts;
    let (res, _) = b
        .write_within(backend_head.to_vec(), 0..backend_head.len(), timeouts.send)
        .await;
    res.map_err(|e| Failure::BeforeResponse(backend_error(x, b, e)))?;
    x.head_written();
    if x.wants_continue(false) {
        // `Expect: 100-continue`, answered as HTTP/1.1's is: the route and
        // the backend took the head, so the body may come. An interim
        // HEADERS frame; h2 queues it and the connection task sends it.
        // Sent even if DATA already came (RFC 9110 lets a server omit it
        // then; a stream cannot tell cheaply, and it costs the client nothing).
        if let Ok(interim) = http::Response::builder().status(100).body(()) {
            if let Err(e) = respond.send_informational(interim) {
                debug!(peer = %conn.peer, error = %e, "HTTP/2 stream gone before its 100 Continue");
            }
        }
    }
    send_body(conn, b, x, clock, body).await?;
    let limits = crate::http::Limits {
        max_header_bytes: settings.limits.max_header_bytes.max(64 * 1024),
        max_headers: MAX_RESPONSE_HEADERS,
    };
    let deadline = Instant::now() + timeouts.backend_response;
    loop {
        let mut head = None;
        let draining = conn.ctx.drain.is_draining();
        let step = x
            .response_head(&b.buf, &limits, draining, |resp, _| {
                head = Some(request::response_head(resp));
            })
            .map_err(Failure::BeforeResponse)?;
        match step {
            HeadStep::Interim(n) => {
                b.buf.drain(..n);
                continue;
            }
            HeadStep::Head(n) => {
                b.buf.drain(..n);
                return match head {
                    Some(Ok(h)) => Ok(h),
                    _ => Err(Failure::BeforeResponse(Error::invalid_response(
                        HttpError::Malformed("a response field HTTP/2 cannot carry"),
                    ))),
                };
            }
            HeadStep::NeedMore => {}
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match b.read_more(wait).await {
            Ok(true) => {}
            Ok(false) => return Err(Failure::BeforeResponse(x.closed_before_head())),
            Err(e) => return Err(Failure::BeforeResponse(backend_error(x, b, e))),
        }
    }
}

/// DATA frames from the client to the backend, under the body clock; the
/// client's window is given back only as bytes reach the backend.
async fn send_body(
    conn: &Conn,
    b: &mut BackendConn,
    x: &mut Exchange,
    clock: &mut BodyClock,
    body: &mut RecvStream,
) -> Result<(), Failure> {
    let timeouts = conn.session.settings().timeouts;
    let mut encoded = Vec::new();
    while !x.request_done() {
        let now = Instant::now();
        if clock.expired(now) {
            return Err(Failure::BeforeResponse(Error::new(Kind::BodyTimeout)));
        }
        let wait = timeouts.idle.min(clock.remaining(now));
        let data = match monoio::time::timeout(wait, body.data()).await {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => {
                debug!(peer = %conn.peer, error = %e, "HTTP/2 request body ended by the client");
                return Err(Failure::ClientGone);
            }
            Ok(None) => {
                encoded.clear();
                x.request_body_end(&mut encoded)
                    .map_err(Failure::BeforeResponse)?;
                return write_backend(conn, b, x, &encoded, timeouts.send).await;
            }
            Err(_) if clock.expired(Instant::now()) => {
                return Err(Failure::BeforeResponse(Error::new(Kind::BodyTimeout)))
            }
            Err(_) => return Err(Failure::BeforeResponse(Error::new(Kind::BodyTimeout))),
        };
        clock.received(data.len() as u64);
        let mut input: &[u8] = &data;
        while !input.is_empty() {
            encoded.clear();
            let fed = x
                .request_body(input, &mut encoded)
                .map_err(Failure::BeforeResponse)?;
            write_backend(conn, b, x, &input[fed.pass.clone()], timeouts.send).await?;
            write_backend(conn, b, x, &encoded, timeouts.send).await?;
            input = &input[fed.consumed..];
            if fed.consumed == 0 {
                break;
            }
        }
        // The client may send this much more: what reached the backend.
        let _ = body.flow_control().release_capacity(data.len());
    }
    Ok(())
}

async fn write_backend(
    conn: &Conn,
    b: &mut BackendConn,
    x: &Exchange,
    bytes: &[u8],
    wait: Duration,
) -> Result<(), Failure> {
    if bytes.is_empty() {
        return Ok(());
    }
    let (res, _) = b.write_within(bytes.to_vec(), 0..bytes.len(), wait).await;
    res.map_err(|e| Failure::BeforeResponse(backend_error(x, b, e)))?;
    conn.ctx.metrics.body_bytes_copied(bytes.len() as u64);
    Ok(())
}

/// The response body, backend to DATA frames, as the client's window allows.
async fn relay_body(
    conn: &Conn,
    x: &mut Exchange,
    b: &mut BackendConn,
    send: &mut SendStream<Bytes>,
) -> Result<(), Failure> {
    let timeouts = conn.session.settings().timeouts;
    let mut encoded = Vec::new();
    loop {
        encoded.clear();
        let fed = x
            .response_body(&b.buf, &mut encoded)
            .map_err(Failure::AfterResponse)?;
        send_data(send, &b.buf[fed.pass.clone()], timeouts.send).await?;
        send_data(send, &encoded, timeouts.send).await?;
        conn.ctx.metrics.body_bytes_copied(fed.pass.len() as u64);
        b.buf.drain(..fed.consumed);
        if fed.done {
            return end_stream(send);
        }
        if fed.consumed > 0 && !b.buf.is_empty() {
            continue; // more of the body is already here (another chunk)
        }
        match b.read_more(timeouts.backend_response).await {
            Ok(true) => {}
            Ok(false) => {
                encoded.clear();
                let clean = b.stream.ended_cleanly();
                x.backend_closed(clean, &mut encoded)
                    .map_err(Failure::AfterResponse)?;
                send_data(send, &encoded, timeouts.send).await?;
                return end_stream(send);
            }
            Err(e) => return Err(Failure::AfterResponse(backend_error(x, b, e))),
        }
    }
}

fn end_stream(send: &mut SendStream<Bytes>) -> Result<(), Failure> {
    send.send_data(Bytes::new(), true)
        .map_err(|_| Failure::ClientGone)
}

/// Sends `data` as the client's window grants it. h2 buffers at most
/// `max_send_buffer` per stream, so a client that reads nothing holds that
/// much of our memory and no more, and only for `wait`.
async fn send_data(
    send: &mut SendStream<Bytes>,
    data: &[u8],
    wait: Duration,
) -> Result<(), Failure> {
    let mut rest = data;
    while !rest.is_empty() {
        send.reserve_capacity(rest.len());
        let mut granted = send.capacity();
        if granted == 0 {
            granted = match monoio::time::timeout(wait, poll_fn(|cx| send.poll_capacity(cx))).await
            {
                Ok(Some(Ok(n))) => n,
                Ok(Some(Err(_))) | Ok(None) => return Err(Failure::ClientGone),
                Err(_) => return Err(Failure::Stalled),
            };
        }
        if granted == 0 {
            continue;
        }
        let n = granted.min(rest.len());
        send.send_data(Bytes::copy_from_slice(&rest[..n]), false)
            .map_err(|_| Failure::ClientGone)?;
        rest = &rest[n..];
    }
    Ok(())
}

/// A failed exchange: an error response while nothing was sent, a reset after.
fn fail(
    conn: &Conn,
    plan: &RequestPlan,
    hop: &Hop,
    respond: &mut SendResponse<Bytes>,
    send: Option<&mut SendStream<Bytes>>,
    f: Failure,
) {
    match f {
        Failure::BeforeResponse(e) => {
            log_error(conn, hop, &e, Some(plan));
            access_log(conn, plan, hop, e.status(), e.code());
            respond_error(respond, &e, None, plan.facts.is_head);
        }
        Failure::AfterResponse(e) => {
            log_error(conn, hop, &e, Some(plan));
            if let Some(s) = send {
                s.send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
        Failure::ClientGone => {
            debug!(peer = %conn.peer, "HTTP/2 stream reset by the client or its connection gone mid-request");
        }
        Failure::Stalled => {
            info!(peer = %conn.peer, client = %hop.client, backend = %plan.backend, "HTTP/2 client granted no flow-control window within the send timeout; stream reset");
            match send {
                Some(s) => s.send_reset(h2::Reason::CANCEL),
                None => respond.send_reset(h2::Reason::CANCEL),
            }
        }
    }
}

fn log_error(conn: &Conn, hop: &Hop, e: &Error, plan: Option<&RequestPlan>) {
    match (e.fault(), plan) {
        (Fault::Backend, Some(p)) => {
            warn!(peer = %conn.peer, client = %hop.client, backend = %p.backend, protocol = "h2", code = %e.code(), "{e}")
        }
        (Fault::Backend, None) => {
            warn!(peer = %conn.peer, client = %hop.client, protocol = "h2", code = %e.code(), "{e}")
        }
        (Fault::Client, _) => {
            debug!(peer = %conn.peer, client = %hop.client, protocol = "h2", code = %e.code(), "{e}")
        }
        (Fault::Gateway, _) => {
            info!(peer = %conn.peer, client = %hop.client, protocol = "h2", code = %e.code(), "{e}")
        }
    }
}

/// Counts the response and writes the access-log line (as HTTP/1.1's, with
/// `protocol = "h2"`).
fn access_log(conn: &Conn, plan: &RequestPlan, hop: &Hop, status: u16, code: &str) {
    conn.ctx
        .metrics
        .record_request(Some(plan.metric_slot), status);
    if let Some(line) = &plan.log {
        let micros = u64::try_from(plan.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let raw_target = line.raw_target.as_deref().unwrap_or("-");
        info!(target: "portcullis::access", client = %hop.client, peer = %conn.peer.ip(), protocol = "h2", method = %line.method, target = %line.target, raw_target = %raw_target, route = plan.route_id, backend = %plan.backend, status, code, micros, "access");
    }
}
