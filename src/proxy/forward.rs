//! One request/response exchange with a backend: send the head and stream the
//! body, read the response head, stream the response body back.
//!
//! Every read and write here has a deadline, and a backend connection goes
//! back to the pool only when its response ended exactly where its framing
//! said (the pool checks again, at checkout, that nothing arrived since).

use std::io;
use std::time::Instant;

use tracing::debug;

use super::body_clock::BodyClock;
use super::{
    access_log, io_timeout, log_error, respond_error, send_timeout, ClientConn, RequestPlan,
    WorkerContext, MAX_HEADERS_CAP,
};
use crate::error::ProxyError;
use crate::http::chunked::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use crate::http::response::{parse_response, write_client_response_head};
use crate::http::{BodyFraming, Parsed};
use crate::io::Transport;
use crate::upstream::{connect, BackendConn, PoolKey};
use crate::upstream_tls::TlsFailure;

use super::splice::{return_pipe, splice_exact, take_pipe, Side, SpliceLimits};

const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How an exchange failed, which decides what the client still gets.
enum Failure {
    /// Nothing of a response was sent to the client: send an error response.
    BeforeResponse(ProxyError),
    /// The response head is out: the only honest signal left is an aborted
    /// connection (a reset, never a clean close that could read as complete).
    AfterResponse(ProxyError),
    /// The client went away or stalled; nobody to answer.
    ClientGone,
}

/// What becomes of the client connection after an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum After {
    KeepAlive,
    /// Close cleanly (close_notify, FIN): the response is complete.
    Close,
    /// Reset: the response was cut short, or the client stopped reading.
    Abort,
}

/// Runs the exchange; says what the client connection does next.
pub(super) async fn exchange<S: Transport>(
    c: &mut ClientConn<S>,
    plan: &RequestPlan,
    ctx: &WorkerContext,
) -> After {
    let generation = c.session.generation.clone();
    let tls = generation.upstream_configs[plan.upstream]
        .as_ref()
        .zip(generation.shared.upstreams[plan.upstream].tls.as_ref())
        .map(|(config, material)| (config.clone(), material.server_name.clone()));
    // Connections made under another generation's TLS settings (CA, client
    // certificate, server name) are never reused for this one.
    let key = PoolKey {
        addr: plan.backend,
        tls: tls.as_ref().map(|_| (generation.shared.id, plan.upstream)),
    };
    let mut body_started = false;
    let mut sent_continue = false;
    let mut retried = false;
    let mut clock = BodyClock::start(Instant::now(), plan.body_deadline);
    loop {
        let pooled = ctx.pool.borrow_mut().checkout(&key);
        let mut backend = match pooled {
            Some(b) => b,
            None => {
                {
                    let pool = ctx.pool.borrow();
                    pool.stats.connects.set(pool.stats.connects.get() + 1);
                }
                let timeout = generation.shared.settings.timeouts.backend_connect;
                match connect(plan.backend, tls.clone(), timeout).await {
                    Ok(b) => b,
                    Err(e) => {
                        return finish_with_error(c, ctx, plan, Failure::BeforeResponse(e)).await
                    }
                }
            }
        };
        let sent = send_request(
            c,
            &mut backend,
            plan,
            ctx,
            &mut body_started,
            &mut sent_continue,
            &mut clock,
        )
        .await;
        let result = match sent {
            Ok(()) => relay_response(c, &mut backend, plan, ctx).await,
            Err(e) => Err(e),
        };
        match result {
            Ok((keep_client, reusable)) => {
                if reusable {
                    ctx.pool.borrow_mut().checkin(key, backend);
                }
                return if keep_client && !ctx.drain.is_draining() {
                    After::KeepAlive
                } else {
                    After::Close
                };
            }
            Err(Attempt::Stale {
                error,
                request_sent,
            }) if backend.reused
                && !body_started
                && !retried
                && (!request_sent || plan.idempotent) =>
            {
                // A pooled connection the backend had already closed. Sending
                // again is safe when the backend provably never got the request
                // (writing its head failed), or when the method is idempotent:
                // a POST it may have acted on must not reach it twice.
                debug!(backend = %plan.backend, error = %error, request_sent, "pooled backend connection was closed; retrying on a fresh one");
                retried = true;
                c.out.truncate(plan.backend_head_len);
            }
            Err(Attempt::Stale { error: e, .. }) => {
                let error = match e.get_ref().and_then(|i| i.downcast_ref::<TlsFailure>()) {
                    // e.g. a TLS 1.3 backend refusing our certificate after the handshake.
                    Some(tls) => ProxyError::BackendTls(tls.0.clone()),
                    None => ProxyError::BackendReset(e),
                };
                return finish_with_error(c, ctx, plan, Failure::BeforeResponse(error)).await;
            }
            Err(Attempt::Failed(f)) => return finish_with_error(c, ctx, plan, f).await,
        }
    }
}

enum Attempt {
    /// The backend connection failed before any response byte arrived.
    /// `request_sent`: the request head had been written to it (the backend
    /// may have received the request); false when writing the head failed.
    Stale {
        error: io::Error,
        request_sent: bool,
    },
    Failed(Failure),
}

async fn finish_with_error<S: Transport>(
    c: &mut ClientConn<S>,
    ctx: &WorkerContext,
    plan: &RequestPlan,
    f: Failure,
) -> After {
    match f {
        Failure::BeforeResponse(e) => {
            log_error(c, &e, Some(plan.backend));
            access_log(c, ctx, plan, e.status(), e.code());
            match respond_error(c, &e, true).await {
                super::Written::Yes => After::Close,
                super::Written::No => After::Abort,
            }
        }
        Failure::AfterResponse(e) => {
            log_error(c, &e, Some(plan.backend));
            After::Abort
        }
        Failure::ClientGone => {
            debug!(peer = %c.peer, "client went away or stopped reading mid-request");
            After::Abort
        }
    }
}

async fn send_request<S: Transport>(
    c: &mut ClientConn<S>,
    b: &mut BackendConn,
    plan: &RequestPlan,
    ctx: &WorkerContext,
    body_started: &mut bool,
    sent_continue: &mut bool,
    clock: &mut BodyClock,
) -> Result<(), Attempt> {
    let send = send_timeout(c);
    let out = std::mem::take(&mut c.out);
    let (res, out) = backend_write(b, out, plan.backend_head_len, send, |error| {
        Attempt::Stale {
            error,
            request_sent: false,
        }
    })
    .await;
    c.out = out;
    res?;

    let has_body = !matches!(
        plan.framing,
        BodyFraming::None | BodyFraming::ContentLength(0)
    );
    if has_body && plan.expect_continue && c.rbuf.is_empty() && !*sent_continue {
        *sent_continue = true;
        // Not through `out`: it still holds the backend head, needed for a retry.
        let (res, _) = match monoio::time::timeout(
            send,
            c.io.write_range(CONTINUE_100.to_vec(), 0..CONTINUE_100.len()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => return Err(Attempt::Failed(Failure::ClientGone)),
        };
        res.map_err(|_| Attempt::Failed(Failure::ClientGone))?;
    }
    match plan.framing {
        BodyFraming::None | BodyFraming::ContentLength(0) | BodyFraming::UntilClose => Ok(()),
        BodyFraming::ContentLength(n) => {
            let mut remaining = n;
            while remaining > 0 {
                if c.rbuf.is_empty() {
                    let timeout = io_timeout(c);
                    let deadline = clock.deadline_for(remaining);
                    if let (Some(k), Some(backend_tcp)) =
                        (c.io.kernel_socket(), b.stream.plain_tcp())
                    {
                        // Straight from the kernel-TLS socket into the backend's.
                        if let Some(mut pipe) = take_pipe(ctx) {
                            let limits = SpliceLimits {
                                source: timeout,
                                destination: send,
                                deadline: Some(deadline),
                            };
                            match splice_exact(
                                k.socket(),
                                backend_tcp,
                                &mut pipe,
                                remaining,
                                &limits,
                            )
                            .await
                            {
                                Ok(()) => {
                                    return_pipe(ctx, pipe);
                                    *body_started = true;
                                    add(&ctx.body_bytes.spliced, remaining);
                                    return Ok(());
                                }
                                Err(f) => {
                                    add(&ctx.body_bytes.spliced, f.moved);
                                    remaining -= f.moved;
                                    *body_started |= f.moved > 0;
                                    clock.received(f.moved);
                                    if let Side::Destination = f.side {
                                        let e = if f.error.kind() == io::ErrorKind::TimedOut {
                                            ProxyError::BackendTimeout
                                        } else {
                                            ProxyError::BackendReset(f.error)
                                        };
                                        return Err(Attempt::Failed(Failure::BeforeResponse(e)));
                                    }
                                    if Instant::now() >= deadline {
                                        return Err(Attempt::Failed(Failure::BeforeResponse(
                                            ProxyError::BodyTimeout,
                                        )));
                                    }
                                    // The client side stopped the splice (a control
                                    // record, EOF, a stall): the copying read path
                                    // below handles each of those properly.
                                    debug!(error = %f.error, "request body splice stopped; continuing by copy");
                                    if remaining == 0 {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                    }
                    client_read(c, clock).await?;
                }
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(c.rbuf.len());
                *body_started = true;
                let buf = std::mem::take(&mut c.rbuf);
                let (res, buf) = backend_write(b, buf, take, send, |e| {
                    Attempt::Failed(Failure::BeforeResponse(ProxyError::BackendReset(e)))
                })
                .await;
                c.rbuf = buf;
                res?;
                c.rbuf.drain(..take);
                remaining -= take as u64;
            }
            Ok(())
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut total: u64 = 0;
            loop {
                c.out.clear();
                let mut pos = 0;
                while pos < c.rbuf.len() && !decoder.is_done() {
                    let d = decoder.decode(&c.rbuf[pos..]).map_err(|e| {
                        Attempt::Failed(Failure::BeforeResponse(ProxyError::BadRequest(e)))
                    })?;
                    let data = &c.rbuf[pos..][d.data.clone()];
                    if !data.is_empty() {
                        total += data.len() as u64;
                        if total > plan.max_body {
                            return Err(Attempt::Failed(Failure::BeforeResponse(
                                ProxyError::BodyTooLarge,
                            )));
                        }
                        write_chunk_header(data.len(), &mut c.out);
                        c.out.extend_from_slice(data);
                        c.out.extend_from_slice(b"\r\n");
                        add(&ctx.body_bytes.copied, data.len() as u64);
                    }
                    pos += d.consumed;
                    if d.consumed == 0 {
                        break;
                    }
                }
                c.rbuf.drain(..pos);
                if decoder.is_done() {
                    c.out.extend_from_slice(LAST_CHUNK);
                }
                if !c.out.is_empty() {
                    *body_started = true;
                    let out = std::mem::take(&mut c.out);
                    let len = out.len();
                    let (res, out) = backend_write(b, out, len, send, |e| {
                        Attempt::Failed(Failure::BeforeResponse(ProxyError::BackendReset(e)))
                    })
                    .await;
                    c.out = out;
                    res?;
                }
                if decoder.is_done() {
                    return Ok(());
                }
                client_read(c, clock).await?;
            }
        }
    }
}

/// Reads the response head and relays the response. Ok((keep client, backend reusable)).
async fn relay_response<S: Transport>(
    c: &mut ClientConn<S>,
    b: &mut BackendConn,
    plan: &RequestPlan,
    ctx: &WorkerContext,
) -> Result<(bool, bool), Attempt> {
    let generation = c.session.generation.clone();
    let settings = &generation.shared.settings;
    let limits = crate::http::Limits {
        max_header_bytes: settings.limits.max_header_bytes.max(64 * 1024),
        max_headers: MAX_HEADERS_CAP,
    };
    let deadline = Instant::now() + settings.timeouts.backend_response;
    let mut got_bytes = false;
    // Read and parse the head; 1xx interim responses are consumed here.
    let (status, framing, backend_keep) = loop {
        if !b.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
            match parse_response(&b.buf, &mut headers, &limits, plan.is_head) {
                Ok(Parsed::Complete(resp)) if (100..200).contains(&resp.status) => {
                    if resp.status == 101 {
                        let e = crate::http::HttpError::Malformed(
                            "backend switched protocols, which is not supported",
                        );
                        return Err(Attempt::Failed(Failure::BeforeResponse(
                            ProxyError::BackendInvalidResponse(e),
                        )));
                    }
                    let len = resp.head_len;
                    b.buf.drain(..len);
                    continue;
                }
                Ok(Parsed::Complete(resp)) => {
                    let client_framing = client_framing(resp.framing, plan.client_http10);
                    let client_keep = plan.keep_alive
                        && client_framing != BodyFraming::UntilClose
                        && !ctx.drain.is_draining();
                    c.out.clear();
                    write_client_response_head(&resp, client_framing, client_keep, &mut c.out);
                    let parsed = (resp.status, resp.framing, resp.keep_alive);
                    let len = resp.head_len;
                    b.buf.drain(..len);
                    break parsed;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => {
                    return Err(Attempt::Failed(Failure::BeforeResponse(
                        ProxyError::BackendInvalidResponse(e),
                    )))
                }
            }
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let buf = std::mem::take(&mut b.buf);
        match monoio::time::timeout(wait, b.stream.read_append(buf)).await {
            Ok((Ok(0), buf)) => {
                b.buf = buf;
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed the connection",
                );
                return Err(if got_bytes {
                    Attempt::Failed(Failure::BeforeResponse(ProxyError::BackendReset(e)))
                } else {
                    Attempt::Stale {
                        error: e,
                        request_sent: true,
                    }
                });
            }
            Ok((Ok(_), buf)) => {
                b.buf = buf;
                got_bytes = true;
            }
            Ok((Err(e), buf)) => {
                b.buf = buf;
                return Err(if got_bytes {
                    Attempt::Failed(Failure::BeforeResponse(ProxyError::BackendReset(e)))
                } else {
                    Attempt::Stale {
                        error: e,
                        request_sent: true,
                    }
                });
            }
            Err(_) => {
                return Err(Attempt::Failed(Failure::BeforeResponse(
                    ProxyError::BackendTimeout,
                )))
            }
        }
    };
    let dechunk = plan.client_http10 && framing == BodyFraming::Chunked;
    let client_keep = plan.keep_alive
        && client_framing(framing, plan.client_http10) != BodyFraming::UntilClose
        && !ctx.drain.is_draining();
    // A chunked body's head leaves with its first decoded chunks, so it is
    // logged there (below): a first read that is already broken is still a 502.
    if framing != BodyFraming::Chunked {
        access_log(c, ctx, plan, status, "-");
    }
    let after = |e| Attempt::Failed(Failure::AfterResponse(e));

    match framing {
        BodyFraming::None | BodyFraming::ContentLength(0) => {
            client_write_out(c).await?;
            Ok((client_keep, backend_keep && b.buf.is_empty()))
        }
        BodyFraming::ContentLength(n) => {
            // The head and the first body bytes go out in one write.
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(b.buf.len());
            c.out.extend_from_slice(&b.buf[..take]);
            b.buf.drain(..take);
            client_write_out(c).await?;
            add(&ctx.body_bytes.copied, take as u64);
            let mut remaining = n - take as u64;
            if remaining > 0 {
                if let (Some(k), Some(backend_tcp)) = (c.io.kernel_socket(), b.stream.plain_tcp()) {
                    if let Some(mut pipe) = take_pipe(ctx) {
                        let limits = SpliceLimits {
                            source: settings.timeouts.backend_response,
                            destination: settings.timeouts.send,
                            deadline: None,
                        };
                        let res =
                            splice_exact(backend_tcp, k.socket(), &mut pipe, remaining, &limits)
                                .await;
                        let moved = match &res {
                            Ok(()) => remaining,
                            Err(f) => f.moved,
                        };
                        k.account_sent(moved);
                        add(&ctx.body_bytes.spliced, moved);
                        match res {
                            Ok(()) => {
                                return_pipe(ctx, pipe);
                                return Ok((client_keep, backend_keep && b.buf.is_empty()));
                            }
                            Err(f) => {
                                return Err(match f.side {
                                    Side::Source if f.error.kind() == io::ErrorKind::TimedOut => {
                                        after(ProxyError::BackendTimeout)
                                    }
                                    Side::Source => after(ProxyError::BackendReset(f.error)),
                                    Side::Destination => Attempt::Failed(Failure::ClientGone),
                                })
                            }
                        }
                    }
                }
            }
            while remaining > 0 {
                backend_read(b, settings.timeouts.backend_response)
                    .await
                    .map_err(after)?;
                let take = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(b.buf.len());
                let buf = std::mem::take(&mut b.buf);
                let (res, buf) = client_write_range(c, buf, take).await;
                b.buf = buf;
                res?;
                b.buf.drain(..take);
                remaining -= take as u64;
                add(&ctx.body_bytes.copied, take as u64);
            }
            Ok((client_keep, backend_keep && b.buf.is_empty()))
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            // `c.out` holds the client's head until the first write.
            let mut head_sent = false;
            loop {
                if head_sent {
                    c.out.clear();
                }
                let mut pos = 0;
                while pos < b.buf.len() && !decoder.is_done() {
                    let d = decoder.decode(&b.buf[pos..]).map_err(|e| {
                        let e = ProxyError::BackendInvalidResponse(e);
                        if head_sent {
                            after(e)
                        } else {
                            // Nothing has reached the client: it can still
                            // get a 502 instead of a bare reset.
                            Attempt::Failed(Failure::BeforeResponse(e))
                        }
                    })?;
                    let data = &b.buf[pos..][d.data.clone()];
                    if !data.is_empty() {
                        // An HTTP/1.0 client cannot read chunked: it gets the
                        // bare data and the connection's end marks the body's.
                        if !dechunk {
                            write_chunk_header(data.len(), &mut c.out);
                        }
                        c.out.extend_from_slice(data);
                        if !dechunk {
                            c.out.extend_from_slice(b"\r\n");
                        }
                    }
                    pos += d.consumed;
                    if d.consumed == 0 {
                        break;
                    }
                }
                b.buf.drain(..pos);
                if decoder.is_done() && !dechunk {
                    c.out.extend_from_slice(LAST_CHUNK);
                }
                if !c.out.is_empty() {
                    if !head_sent {
                        access_log(c, ctx, plan, status, "-");
                    }
                    client_write_out(c).await?;
                    head_sent = true;
                }
                if decoder.is_done() {
                    return Ok((client_keep, backend_keep && b.buf.is_empty()));
                }
                backend_read(b, settings.timeouts.backend_response)
                    .await
                    .map_err(after)?;
            }
        }
        BodyFraming::UntilClose => {
            c.out.extend_from_slice(&b.buf);
            b.buf.clear();
            client_write_out(c).await?;
            loop {
                match backend_read(b, settings.timeouts.backend_response).await {
                    Ok(()) => {}
                    Err(ProxyError::BackendReset(e))
                        if e.kind() == io::ErrorKind::UnexpectedEof =>
                    {
                        if !b.stream.ended_cleanly() {
                            // A TLS backend that ends a close-delimited body
                            // without close_notify may have been cut off by
                            // anyone on the path: the client must see an
                            // aborted response, never a complete one.
                            return Err(after(ProxyError::BackendReset(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "TLS backend ended a close-delimited body without close_notify (truncated)",
                            ))));
                        }
                        return Ok((false, false));
                    }
                    Err(e) => return Err(after(e)),
                }
                let len = b.buf.len();
                let buf = std::mem::take(&mut b.buf);
                let (res, buf) = client_write_range(c, buf, len).await;
                b.buf = buf;
                res?;
                b.buf.clear();
            }
        }
    }
}

fn add(counter: &std::cell::Cell<u64>, n: u64) {
    counter.set(counter.get() + n);
}

/// Reads more of the response body into `b.buf`; EOF is an error here.
async fn backend_read(b: &mut BackendConn, timeout: std::time::Duration) -> Result<(), ProxyError> {
    let buf = std::mem::take(&mut b.buf);
    match monoio::time::timeout(timeout, b.stream.read_append(buf)).await {
        Ok((Ok(0), buf)) => {
            b.buf = buf;
            Err(ProxyError::BackendReset(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "backend closed mid-body",
            )))
        }
        Ok((Ok(_), buf)) => {
            b.buf = buf;
            Ok(())
        }
        Ok((Err(e), buf)) => {
            b.buf = buf;
            Err(ProxyError::BackendReset(e))
        }
        Err(_) => Err(ProxyError::BackendTimeout),
    }
}

/// Reads more request body from the client into `rbuf`, within the body's
/// deadline (408 when it runs out) and the per-read idle timeout.
async fn client_read<S: Transport>(
    c: &mut ClientConn<S>,
    clock: &mut BodyClock,
) -> Result<(), Attempt> {
    let now = Instant::now();
    if clock.expired(now) {
        return Err(Attempt::Failed(Failure::BeforeResponse(
            ProxyError::BodyTimeout,
        )));
    }
    let wait = io_timeout(c).min(clock.remaining(now));
    let buf = std::mem::take(&mut c.rbuf);
    let before = buf.len();
    match monoio::time::timeout(wait, c.io.read_append(buf)).await {
        Ok((Ok(n), buf)) if n > 0 => {
            clock.received((buf.len() - before) as u64);
            c.rbuf = buf;
            Ok(())
        }
        Ok((_, buf)) => {
            c.rbuf = buf;
            Err(Attempt::Failed(Failure::ClientGone))
        }
        Err(_) if clock.expired(Instant::now()) => Err(Attempt::Failed(Failure::BeforeResponse(
            ProxyError::BodyTimeout,
        ))),
        Err(_) => Err(Attempt::Failed(Failure::ClientGone)),
    }
}

/// Writes `buf[..len]` to the backend within `timeout` (a backend that stops
/// reading our request is as stuck as one that never answers: 504).
async fn backend_write(
    b: &mut BackendConn,
    buf: Vec<u8>,
    len: usize,
    timeout: std::time::Duration,
    on_error: impl FnOnce(io::Error) -> Attempt,
) -> (Result<(), Attempt>, Vec<u8>) {
    match monoio::time::timeout(timeout, b.stream.write_range(buf, 0..len)).await {
        Ok((Ok(()), buf)) => (Ok(()), buf),
        Ok((Err(e), buf)) => (Err(on_error(e)), buf),
        Err(_) => (
            Err(Attempt::Failed(Failure::BeforeResponse(
                ProxyError::BackendTimeout,
            ))),
            Vec::new(),
        ),
    }
}

/// How the body is sent to the client: as the backend framed it, except
/// that an HTTP/1.0 client never gets chunked (it cannot parse it).
fn client_framing(backend: BodyFraming, client_http10: bool) -> BodyFraming {
    match backend {
        BodyFraming::Chunked if client_http10 => BodyFraming::UntilClose,
        other => other,
    }
}

async fn client_write_out<S: Transport>(c: &mut ClientConn<S>) -> Result<(), Attempt> {
    let out = std::mem::take(&mut c.out);
    let len = out.len();
    let (res, out) = client_write_range(c, out, len).await;
    c.out = out;
    res
}

async fn client_write_range<S: Transport>(
    c: &mut ClientConn<S>,
    buf: Vec<u8>,
    len: usize,
) -> (Result<(), Attempt>, Vec<u8>) {
    match monoio::time::timeout(send_timeout(c), c.io.write_range(buf, 0..len)).await {
        Ok((Ok(()), buf)) => (Ok(()), buf),
        Ok((Err(_), buf)) => (Err(Attempt::Failed(Failure::ClientGone)), buf),
        Err(_) => (Err(Attempt::Failed(Failure::ClientGone)), Vec::new()),
    }
}
