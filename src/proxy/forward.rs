//! The I/O shell of one exchange for an HTTP/1.1 client: it moves bytes
//! between the client, the backend and the [`Exchange`] machine, and keeps
//! every deadline. The decisions (framing, 100-continue, retry, keep-alive,
//! whether a backend connection is clean enough to pool) are the machine's.
//!
//! A body is spliced between sockets when the client side is kernel TLS and
//! the backend is plain TCP (Content-Length bodies); everything else is read
//! into the connection's buffers and written out.

use std::io;
use std::time::Instant;

use tracing::debug;

use super::body_clock::BodyClock;
use super::splice::{return_pipe, splice_exact, take_pipe, Side, SpliceLimits};
use super::{
    access_log, backend_error, io_timeout, log_error, respond_error, send_timeout, ClientConn,
    WorkerContext, Written,
};
use crate::error::{Cause, Error, Kind};
use crate::exchange::plan::RequestPlan;
use crate::exchange::{Exchange, HeadStep, MAX_RESPONSE_HEADERS};
use crate::http::response::write_client_response_head;
use crate::io::{give_buffer, take_buffer, Transport, MIN_READ};
use crate::upstream::{checkout_or_connect, BackendConn, PoolKey};

const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// How an exchange failed, which decides what the client still gets.
#[derive(Debug)]
enum Failure {
    /// Nothing of a response was sent to the client: send an error response.
    BeforeResponse(Error),
    /// The response head is out: the only honest signal left is an aborted
    /// connection (a reset, never a clean close that could read as complete).
    AfterResponse(Error),
    /// The client went away or stopped reading; nobody to answer.
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
    let tls = generation.upstream_configs[plan.upstream].clone();
    let key = PoolKey {
        addr: plan.backend,
        tls: tls.as_ref().map(|t| t.identity),
    };
    let mut x = Exchange::new(plan.facts.clone());
    let mut clock = BodyClock::start(Instant::now(), plan.body_deadline);
    let mut retried = false;
    loop {
        let timeout = generation.shared.settings.timeouts.backend_connect;
        let mut backend =
            match checkout_or_connect(&ctx.pool, plan.backend, tls.as_ref(), timeout).await {
                Ok(b) => b,
                Err(e) => return finish_with_error(c, ctx, plan, Failure::BeforeResponse(e)).await,
            };
        match attempt(c, &mut backend, plan, ctx, &mut x, &mut clock).await {
            Ok(()) => {
                if x.backend_reusable(!backend.buf.is_empty()) {
                    ctx.pool.borrow_mut().checkin(key, backend);
                }
                return if x.client_keep_alive() && !ctx.drain.is_draining() {
                    After::KeepAlive
                } else {
                    After::Close
                };
            }
            Err(Failure::BeforeResponse(e)) if !retried && e.retry_safe(backend.reused) => {
                // A pooled connection the backend had closed: the error says
                // whether the request may go again (see `Error::backend_gone`).
                debug!(backend = %plan.backend, error = %e, "pooled backend connection was closed; retrying on a fresh one");
                retried = true;
                x.restart();
            }
            Err(f) => return finish_with_error(c, ctx, plan, f).await,
        }
    }
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
                Written::Yes => After::Close,
                Written::No => After::Abort,
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

/// One attempt on one backend connection: the request, then the response.
async fn attempt<S: Transport>(
    c: &mut ClientConn<S>,
    b: &mut BackendConn,
    plan: &RequestPlan,
    ctx: &WorkerContext,
    x: &mut Exchange,
    clock: &mut BodyClock,
) -> Result<(), Failure> {
    let send = send_timeout(c);
    // The backend head stays in `c.out` until the response: a retry sends it again.
    let head = std::mem::take(&mut c.out);
    let (res, head) = b.write_within(head, 0..plan.backend_head_len, send).await;
    c.out = head;
    res.map_err(|e| Failure::BeforeResponse(backend_error(x, b, e)))?;
    x.head_written();

    if x.wants_continue(!c.rbuf.is_empty()) {
        // Not through `out`: it still holds the backend head.
        let (res, _) = write_client(c, CONTINUE_100.to_vec(), 0..CONTINUE_100.len()).await;
        res?;
    }
    send_body(c, b, ctx, x, clock).await?;
    relay_response(c, b, plan, ctx, x).await
}

/// The request body, client to backend.
async fn send_body<S: Transport>(
    c: &mut ClientConn<S>,
    b: &mut BackendConn,
    ctx: &WorkerContext,
    x: &mut Exchange,
    clock: &mut BodyClock,
) -> Result<(), Failure> {
    let send = send_timeout(c);
    let mut encoded = take_buffer(0);
    let result = async {
        while !x.request_done() {
            if c.rbuf.is_empty() {
                if let Some(done) = splice_request_body(c, b, ctx, x, clock).await? {
                    if done {
                        return Ok(());
                    }
                }
                if x.request_done() {
                    return Ok(());
                }
                client_read(c, clock).await?;
            }
            encoded.clear();
            let fed = x
                .request_body(&c.rbuf, &mut encoded)
                .map_err(Failure::BeforeResponse)?;
            if !fed.pass.is_empty() {
                let buf = std::mem::take(&mut c.rbuf);
                let (res, buf) = b.write_within(buf, fed.pass.clone(), send).await;
                c.rbuf = buf;
                res.map_err(|e| Failure::BeforeResponse(backend_error(x, b, e)))?;
                ctx.metrics.body_bytes_copied(fed.pass.len() as u64);
            }
            if !encoded.is_empty() {
                let buf = std::mem::take(&mut encoded);
                let len = buf.len();
                let (res, buf) = b.write_within(buf, 0..len, send).await;
                encoded = buf;
                res.map_err(|e| Failure::BeforeResponse(backend_error(x, b, e)))?;
                ctx.metrics.body_bytes_copied(len as u64);
            }
            c.rbuf.drain(..fed.consumed);
            if fed.consumed == 0 && !x.request_done() {
                client_read(c, clock).await?;
            }
        }
        Ok(())
    }
    .await;
    give_buffer(encoded);
    result
}

/// A Content-Length body straight from a kernel-TLS client socket into a
/// plain backend socket. Some(true): all of it went; Some(false) or None:
/// go on by copy (the client side stopped the splice: a control record, EOF,
/// a stall, which the copying path handles properly).
async fn splice_request_body<S: Transport>(
    c: &mut ClientConn<S>,
    b: &mut BackendConn,
    ctx: &WorkerContext,
    x: &mut Exchange,
    clock: &mut BodyClock,
) -> Result<Option<bool>, Failure> {
    let Some(remaining) = x.request_remaining().filter(|r| *r > 0) else {
        return Ok(None);
    };
    let limits = SpliceLimits {
        source: io_timeout(c),
        destination: send_timeout(c),
        deadline: Some(clock.deadline_for(remaining)),
    };
    let (Some(k), Some(backend_tcp)) = (c.io.kernel_socket(), b.stream.plain_tcp()) else {
        return Ok(None);
    };
    let Some(mut pipe) = take_pipe(ctx) else {
        return Ok(None);
    };
    let res = splice_exact(k.socket(), backend_tcp, &mut pipe, remaining, &limits).await;
    let moved = match &res {
        Ok(()) => remaining,
        Err(f) => f.moved,
    };
    x.request_body_spliced(moved);
    clock.received(moved);
    ctx.metrics.body_bytes_spliced(moved);
    match res {
        Ok(()) => {
            return_pipe(ctx, pipe);
            Ok(Some(true))
        }
        Err(f) => {
            if let Side::Destination = f.side {
                let kind = if f.error.kind() == io::ErrorKind::TimedOut {
                    Kind::BackendTimeout
                } else {
                    Kind::BackendReset
                };
                return Err(Failure::BeforeResponse(
                    x.backend_broke(kind, Cause::Io(f.error)),
                ));
            }
            if limits.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Failure::BeforeResponse(Error::new(Kind::BodyTimeout)));
            }
            debug!(error = %f.error, "request body splice stopped; continuing by copy");
            Ok(Some(false))
        }
    }
}

/// Reads the response head, then relays the response.
async fn relay_response<S: Transport>(
    c: &mut ClientConn<S>,
    b: &mut BackendConn,
    plan: &RequestPlan,
    ctx: &WorkerContext,
    x: &mut Exchange,
) -> Result<(), Failure> {
    let generation = c.session.generation.clone();
    let settings = &generation.shared.settings;
    let limits = crate::http::Limits {
        max_header_bytes: settings.limits.max_header_bytes.max(64 * 1024),
        max_headers: MAX_RESPONSE_HEADERS,
    };
    let backend_timeout = settings.timeouts.backend_response;
    let deadline = Instant::now() + backend_timeout;
    // Read and parse the head; 1xx interim responses are consumed here.
    let mut status = 0;
    loop {
        let draining = ctx.drain.is_draining();
        let out = &mut c.out;
        let step = x
            .response_head(&b.buf, &limits, draining, |resp, client| {
                status = resp.status;
                out.clear();
                write_client_response_head(resp, client.framing, client.keep_alive, out);
            })
            .map_err(Failure::BeforeResponse)?;
        match step {
            HeadStep::Interim(n) => {
                b.buf.drain(..n);
                continue;
            }
            HeadStep::Head(n) => {
                b.buf.drain(..n);
                break;
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
    // The client's head waits in `c.out` for the first piece of the body:
    // a body broken in its first piece is then still a 502, not a reset.
    let mut head_pending = true;
    let mut encoded = take_buffer(0);
    let result = async {
        loop {
            encoded.clear();
            let fed = match x.response_body(&b.buf, &mut encoded) {
                Ok(f) => f,
                Err(e) if head_pending => return Err(Failure::BeforeResponse(e)),
                Err(e) => return Err(Failure::AfterResponse(e)),
            };
            if head_pending {
                // Head, and whatever body came with it, in one write; the
                // whole first segment is checked before the head leaves.
                c.out.extend_from_slice(&b.buf[fed.pass.clone()]);
                c.out.extend_from_slice(&encoded);
                ctx.metrics.body_bytes_copied(fed.pass.len() as u64);
                b.buf.drain(..fed.consumed);
                if !fed.done && fed.consumed > 0 && !b.buf.is_empty() {
                    continue;
                }
                access_log(c, ctx, plan, status, "-");
                let out = std::mem::take(&mut c.out);
                let len = out.len();
                let (res, out) = write_client(c, out, 0..len).await;
                c.out = out;
                res?;
                head_pending = false;
            } else {
                if !fed.pass.is_empty() {
                    let buf = std::mem::take(&mut b.buf);
                    let (res, buf) = write_client(c, buf, fed.pass.clone()).await;
                    b.buf = buf;
                    res?;
                    ctx.metrics.body_bytes_copied(fed.pass.len() as u64);
                }
                if !encoded.is_empty() {
                    let buf = std::mem::take(&mut encoded);
                    let len = buf.len();
                    let (res, buf) = write_client(c, buf, 0..len).await;
                    encoded = buf;
                    res?;
                }
                b.buf.drain(..fed.consumed);
            }
            if fed.done {
                return Ok(());
            }
            if fed.consumed > 0 && !b.buf.is_empty() {
                continue; // more of the body is already here (another chunk)
            }
            if splice_response_body(c, b, ctx, x).await? {
                return Ok(());
            }
            if x.response_remaining().is_none_or(|r| r > MIN_READ as u64) {
                // More body than one ordinary read: read it in bulk-sized
                // pieces (fewer reads, and fewer, fuller writes to the client).
                grow_for_bulk(&mut b.buf);
            }
            match b.read_more(backend_timeout).await {
                Ok(true) => {}
                Ok(false) => {
                    encoded.clear();
                    let clean = b.stream.ended_cleanly();
                    x.backend_closed(clean, &mut encoded)
                        .map_err(Failure::AfterResponse)?;
                    if !encoded.is_empty() {
                        let buf = std::mem::take(&mut encoded);
                        let len = buf.len();
                        let (res, buf) = write_client(c, buf, 0..len).await;
                        encoded = buf;
                        res?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(Failure::AfterResponse(backend_error(x, b, e))),
            }
        }
    }
    .await;
    give_buffer(encoded);
    result
}

/// The rest of a Content-Length response straight from a plain backend
/// socket into a kernel-TLS client socket. Ok(true): all of it went.
async fn splice_response_body<S: Transport>(
    c: &mut ClientConn<S>,
    b: &mut BackendConn,
    ctx: &WorkerContext,
    x: &mut Exchange,
) -> Result<bool, Failure> {
    let Some(remaining) = x.response_remaining().filter(|r| *r > 0) else {
        return Ok(false);
    };
    if !b.buf.is_empty() {
        return Ok(false);
    }
    let settings = &c.session.settings().timeouts;
    let limits = SpliceLimits {
        source: settings.backend_response,
        destination: settings.send,
        deadline: None,
    };
    let (Some(k), Some(backend_tcp)) = (c.io.kernel_socket(), b.stream.plain_tcp()) else {
        return Ok(false);
    };
    let Some(mut pipe) = take_pipe(ctx) else {
        return Ok(false);
    };
    let res = splice_exact(backend_tcp, k.socket(), &mut pipe, remaining, &limits).await;
    let moved = match &res {
        Ok(()) => remaining,
        Err(f) => f.moved,
    };
    k.account_sent(moved);
    x.response_body_spliced(moved);
    ctx.metrics.body_bytes_spliced(moved);
    match res {
        Ok(()) => {
            return_pipe(ctx, pipe);
            Ok(true)
        }
        Err(f) => Err(match f.side {
            Side::Source if f.error.kind() == io::ErrorKind::TimedOut => {
                Failure::AfterResponse(Error::new(Kind::BackendTimeout))
            }
            Side::Source => {
                Failure::AfterResponse(Error::with_cause(Kind::BackendReset, Cause::Io(f.error)))
            }
            Side::Destination => Failure::ClientGone,
        }),
    }
}

/// How much of a large response body one backend read asks for. Each read
/// becomes one client write of 4 full TLS records: a quarter of the reads,
/// writes and io_uring submissions of ordinary 16 KiB reads per MiB. Kept at
/// the core's buffer-pool limit so the buffer is reused, not reallocated.
const BULK_READ: usize = 64 * 1024;

/// Gives the backend read buffer room for a bulk read, from the core's pool.
/// The pool takes it back when the connection goes idle (`upstream::Pool::checkin`).
fn grow_for_bulk(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() >= BULK_READ {
        return;
    }
    let mut big = take_buffer(buf.len() + BULK_READ);
    big.extend_from_slice(buf);
    give_buffer(std::mem::replace(buf, big));
}

/// Reads more request body from the client into `rbuf`, within the body's
/// deadline (408 when it runs out) and the per-read idle timeout.
async fn client_read<S: Transport>(
    c: &mut ClientConn<S>,
    clock: &mut BodyClock,
) -> Result<(), Failure> {
    let now = Instant::now();
    if clock.expired(now) {
        return Err(Failure::BeforeResponse(Error::new(Kind::BodyTimeout)));
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
            Err(Failure::ClientGone)
        }
        Err(_) if clock.expired(Instant::now()) => {
            Err(Failure::BeforeResponse(Error::new(Kind::BodyTimeout)))
        }
        Err(_) => Err(Failure::ClientGone),
    }
}

/// Writes `buf[range]` to the client within the send timeout.
async fn write_client<S: Transport>(
    c: &mut ClientConn<S>,
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
) -> (Result<(), Failure>, Vec<u8>) {
    match monoio::time::timeout(send_timeout(c), c.io.write_range(buf, range)).await {
        Ok((Ok(()), buf)) => (Ok(()), buf),
        Ok((Err(_), buf)) => (Err(Failure::ClientGone), buf),
        Err(_) => (Err(Failure::ClientGone), Vec::new()),
    }
}
