//! HTTP/2 to clients: the connection shell around the `h2` crate, a second
//! protocol shell beside `proxy` (HTTP/1.1) over the same request core.
//!
//! `h2` does the framing, HPACK, flow control and the protocol's own abuse
//! limits (rapid reset, CONTINUATION floods, the header list size, reset
//! caps; SETTINGS and PING floods are answered and bounded by its send
//! queue). This shell adds what it has no notion of: deadlines (the
//! preface and SETTINGS within the handshake timeout, idle connections,
//! drain), and, per stream, the same request core as HTTP/1.1
//! (`exchange::plan`, `exchange::Exchange`) in `stream.rs`. Backends stay
//! HTTP/1.1 over the per-core pools; each stream takes its own backend
//! connection, so the streams of one client run at once.
//!
//! The socket is in monoio's readiness mode here: `h2` reads and writes
//! from one task, which the ownership-passing HTTP/1.1 streams cannot do;
//! `tls::poll` adapts userspace TLS to it. `h2` owns the stream it is
//! given, so it gets a shared handle (`shared.rs`): when the connection
//! ends the task takes the stream back for a lingering close, as HTTP/1.1
//! closes, so that a GOAWAY is not destroyed by a reset.

mod request;
mod shared;
mod stream;

use std::cell::{Cell, OnceCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::poll_io::{AsyncRead, AsyncWrite};
use rustls::pki_types::CertificateDer;
use tracing::debug;

use crate::config::Http2Settings;
use crate::drain::InFlight;
use crate::identity::ClientCert;
use crate::io::PollClose;
use crate::proxy::{Session, WorkerContext};
use crate::tls::PeerIdentity;

/// What every stream of one connection shares.
struct Conn {
    session: Session,
    peer: SocketAddr,
    identity: PeerIdentity,
    /// The client's certificate chain (leaf first; empty without one).
    chain: Vec<CertificateDer<'static>>,
    /// The client certificate, parsed on the first stream that needs it.
    cert: OnceCell<Option<ClientCert>>,
    ctx: Rc<WorkerContext>,
    /// Streams being served now, and when the last one ended (the idle clock).
    active: Cell<usize>,
    last_active: Cell<Instant>,
}

/// Ends a stream's share of the connection however its task ends.
struct Active(Rc<Conn>);

impl Active {
    fn enter(conn: Rc<Conn>) -> Active {
        conn.active.set(conn.active.get() + 1);
        Active(conn)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
        self.0.last_active.set(Instant::now());
    }
}

/// Serves one HTTP/2 connection until the client closes it, it idles out,
/// or the worker drains (GOAWAY: the streams in flight finish, no new ones);
/// then closes it with a lingering close, so that the GOAWAY reaches a
/// client that was still sending. `chain` is the client's certificate
/// chain: `io` is `h2`'s from here on, so the streams cannot ask the
/// transport for it.
pub async fn serve<T>(
    io: T,
    peer: SocketAddr,
    identity: PeerIdentity,
    chain: Vec<CertificateDer<'static>>,
    session: Session,
    ctx: Rc<WorkerContext>,
) where
    T: AsyncRead + AsyncWrite + PollClose + Unpin + 'static,
{
    let (io, owner) = shared::share(io);
    // The drain guard keeps the worker's drain waiting for this
    // connection's GOAWAY, its streams and its lingering close (without
    // which the GOAWAY may never reach the client).
    let drain_guard = run(io, peer, identity, chain, session, ctx).await;
    owner.linger_close().await;
    drop(drain_guard);
}

/// The connection under `h2`, to its end; `h2`'s end of the stream is
/// dropped on return. The drain guard, if a drain started meanwhile.
async fn run<T>(
    io: T,
    peer: SocketAddr,
    identity: PeerIdentity,
    chain: Vec<CertificateDer<'static>>,
    session: Session,
    ctx: Rc<WorkerContext>,
) -> Option<InFlight>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let settings = session.settings();
    let timeouts = settings.timeouts;
    let handshake =
        builder(&settings.http2, settings.limits.max_header_bytes).handshake::<T, Bytes>(io);
    // The client's preface and SETTINGS within the handshake deadline.
    let mut conn = match monoio::time::timeout(timeouts.handshake, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            debug!(peer = %peer, error = %e, "HTTP/2 connection preface refused");
            return None;
        }
        Err(_) => {
            debug!(peer = %peer, "HTTP/2 connection preface not received in time");
            return None;
        }
    };
    let shared = Rc::new(Conn {
        session,
        peer,
        identity,
        chain,
        cert: OnceCell::new(),
        ctx: ctx.clone(),
        active: Cell::new(0),
        last_active: Cell::new(Instant::now()),
    });
    let mut stop = std::pin::pin!(ctx.drain.started());
    // Set once GOAWAY went out: after it, this long for the streams to end.
    let mut closing: Option<Instant> = None;
    let mut drain_guard = None;
    loop {
        let now = Instant::now();
        let wake = match closing {
            Some(deadline) => deadline,
            None if shared.active.get() == 0 => shared.last_active.get() + timeouts.idle,
            // Busy: look again in a while (a stream's end restarts the clock).
            None => now + timeouts.idle,
        };
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        monoio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    let active = Active::enter(shared.clone());
                    monoio::spawn(async move {
                        stream::serve(req, respond, &active.0).await;
                        drop(active);
                    });
                }
                Some(Err(e)) => {
                    debug!(peer = %peer, error = %e, "HTTP/2 connection ended with an error");
                    break;
                }
                None => break,
            },
            _ = &mut stop, if closing.is_none() => {
                conn.graceful_shutdown();
                // The worker's drain_timeout bounds it: past that the worker
                // stops and the connection with it.
                closing = Some(Instant::now() + Duration::from_secs(24 * 3600));
                drain_guard = Some(ctx.drain.enter());
            },
            _ = monoio::time::sleep(wait) => {
                let now = Instant::now();
                match closing {
                    Some(deadline) if now >= deadline => {
                        debug!(peer = %peer, "HTTP/2 connection still open past its GOAWAY; closing it");
                        break;
                    }
                    None if shared.active.get() == 0
                        && now >= shared.last_active.get() + timeouts.idle =>
                    {
                        debug!(peer = %peer, "HTTP/2 connection idle; GOAWAY");
                        conn.graceful_shutdown();
                        closing = Some(now + timeouts.send);
                    }
                    _ => {}
                }
            }
        }
    }
    drain_guard
}

/// h2's own header-list limit: twice `limits.max_header_bytes`. Past its
/// limit h2 answers the stream itself, 431 with no body, before the stream
/// is ours (it has no hook for a body). `stream::plan_stream` applies
/// `max_header_bytes` itself, on the same measure, with HTTP/1.1's JSON 431
/// PCS.4310; h2's limit above it still bounds what a stream's head may hold
/// in memory (HPACK bombs, CONTINUATION floods), at twice the configured size.
fn header_list_cap(max_header_bytes: usize) -> u32 {
    u32::try_from(max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX)
}

/// The `h2` server with our limits where its defaults are loose.
fn builder(s: &Http2Settings, max_header_bytes: usize) -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.max_concurrent_streams(s.max_concurrent_streams)
        // The head limit, on the HPACK-decoded size (an HPACK bomb is
        // judged by what it expands to), with room above ours.
        .max_header_list_size(header_list_cap(max_header_bytes))
        .initial_window_size(s.stream_window)
        .initial_connection_window_size(s.connection_window)
        .max_send_buffer_size(s.max_send_buffer)
        // Rapid reset (CVE-2023-44487): streams reset before we accepted
        // them, and streams we reset for the client's errors, are capped;
        // past the cap the connection gets GOAWAY ENHANCE_YOUR_CALM.
        .max_pending_accept_reset_streams(s.max_pending_reset_streams)
        .max_local_error_reset_streams(Some(s.max_local_error_resets))
        .max_concurrent_reset_streams(s.max_pending_reset_streams.max(10))
        .reset_stream_duration(Duration::from_secs(1));
    b
}
