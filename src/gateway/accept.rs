//! From accept to the request loop: the per-worker caps, an optional PROXY
//! header, the TLS handshake (and its one log line when it fails), the
//! kernel-TLS handover, then `proxy::serve` (HTTP/1.1) or, when ALPN chose
//! h2, `http2::serve`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::config::KtlsMode;
use crate::generation::WorkerGeneration;
use crate::http2;
use crate::metrics::{Cap, HandshakeReason, TlsMode, WorkerMetrics};
use crate::proxy::{self, Session, WorkerContext};
use crate::proxy_protocol;
use crate::tls::ktls::{self, Handover, KtlsSupport, PollKtls};
use crate::tls::poll::PollTls;
use crate::tls::{reason, HandshakeFailure, HandshakeReads, PeerIdentity, TlsStream};

use super::generations::WorkerGenerations;
use super::ConnectionCaps;

/// What an accept loop hands each connection it accepts.
#[derive(Clone)]
pub(super) struct Accepting {
    /// Index of the `[[listener]]`: which sites it serves.
    pub(super) listener: usize,
    pub(super) caps: ConnectionCaps,
    pub(super) mode: KtlsMode,
    pub(super) support: Rc<KtlsSupport>,
    pub(super) generations: Rc<WorkerGenerations>,
}

pub(super) async fn accept_loop(
    listener: monoio::net::TcpListener,
    accepting: Accepting,
    ctx: Rc<WorkerContext>,
    accepted: Rc<Cell<u64>>,
) {
    let mut stop = std::pin::pin!(ctx.drain.started());
    let mut refusals = RefusalLog::default();
    // The accept in flight is cancelled, never dropped: an io_uring accept
    // the kernel completed just before the drain began still holds a
    // connection, and dropping the operation would leak its descriptor (the
    // client, in the middle of its handshake, would be reset when this
    // process exits). Cancelled, it returns that connection, which is served.
    let mut canceller = monoio::io::Canceller::new();
    loop {
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let (res, stopping) = monoio::select! {
            _ = &mut stop => {
                canceller = std::mem::take(&mut canceller).cancel();
                (accept.await, true)
            }
            res = &mut accept => (res, false),
        };
        match res {
            Ok((tcp, peer)) => admit(tcp, peer, &accepting, &ctx, &accepted, &mut refusals),
            Err(_) if stopping => {}
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(worker = ctx.index, error = %e, "accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if stopping {
            break;
        }
    }
    drop(listener);
}

/// Starts serving one accepted connection, or closes it at once when it
/// would exceed a per-worker cap.
fn admit(
    tcp: TcpStream,
    peer: SocketAddr,
    accepting: &Accepting,
    ctx: &Rc<WorkerContext>,
    accepted: &Cell<u64>,
    refusals: &mut RefusalLog,
) {
    accepted.set(accepted.get() + 1);
    if let Some(cap) = over_cap(&ctx.metrics, accepting.caps) {
        // Closed at once (a reset: nothing of it is kept); connections
        // already served go on undisturbed.
        crate::sock::set_abortive_close(&tcp);
        drop(tcp);
        refusals.note(ctx, cap);
        return;
    }
    let _ = tcp.set_nodelay(true);
    // The generation is fixed here, at accept: a reload later does not
    // change what this connection was promised.
    let generation = accepting.generations.get();
    // The kernel gives up on a peer that stops acknowledging (a zero window
    // included) after the send timeout.
    let _ = crate::sock::set_user_timeout(&tcp, generation.shared.settings.timeouts.send);
    let open = Counted::enter(ctx.clone(), |c| c.metrics.open_connections());
    monoio::spawn(handle_connection(
        tcp,
        peer,
        generation,
        accepting.clone(),
        open,
    ));
}

/// Which cap a new connection would exceed, if any.
fn over_cap(m: &WorkerMetrics, caps: ConnectionCaps) -> Option<Cap> {
    if m.open_connections().get() >= caps.max_connections {
        Some(Cap::Connections)
    } else if m.handshakes_in_progress().get() >= caps.max_handshakes {
        Some(Cap::Handshakes)
    } else {
        None
    }
}

/// Counts refusals and says so in the log at most every ten seconds (a flood
/// must not turn into a flood of log lines).
#[derive(Default)]
pub(super) struct RefusalLog {
    last: Option<Instant>,
    since_last: u64,
}

impl RefusalLog {
    fn note(&mut self, ctx: &WorkerContext, cap: Cap) {
        ctx.metrics.connection_refused(cap);
        self.since_last += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            warn!(
                worker = ctx.index,
                cap = ?cap,
                open = ctx.metrics.open_connections().get(),
                handshaking = ctx.metrics.handshakes_in_progress().get(),
                refused = self.since_last,
                "connection cap reached: new connections are closed at accept"
            );
            self.last = Some(now);
            self.since_last = 0;
        }
    }
}

/// One unit of a per-worker gauge (open connections, handshakes in
/// progress), given back when dropped whatever way the task ends.
pub(super) struct Counted {
    ctx: Rc<WorkerContext>,
    gauge: fn(&WorkerContext) -> &Cell<usize>,
}

impl Counted {
    fn enter(ctx: Rc<WorkerContext>, gauge: fn(&WorkerContext) -> &Cell<usize>) -> Counted {
        let g = gauge(&ctx);
        g.set(g.get() + 1);
        Counted { ctx, gauge }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let g = (self.gauge)(&self.ctx);
        g.set(g.get().saturating_sub(1));
    }
}

pub(super) async fn handle_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    generation: Rc<WorkerGeneration>,
    accepting: Accepting,
    open: Counted,
) {
    let ctx = open.ctx.clone();
    // Boxed, and gone once the handshake is over: the PROXY header read and
    // the handshake's state are large, and this task's own future is held
    // for the connection's whole life (idle keep-alive connections
    // included). Only what serving needs stays in it.
    let Some((stream, peer, identity, session)) =
        Box::pin(establish(tcp, peer, generation, &accepting, &ctx)).await
    else {
        return;
    };
    if identity.h2 {
        // Boxed: an h2 connection's state is large, and inline it would size
        // every connection's task (HTTP/1.1 ones included) to fit it.
        return Box::pin(serve_http2(
            stream, peer, identity, session, &accepting, ctx,
        ))
        .await;
    }
    // `proxy::serve` is boxed below for the same reason: of its three
    // instances (userspace TLS twice, kernel TLS) a connection runs one, and
    // the task's future would otherwise hold the room for the largest.
    if accepting.mode == KtlsMode::Off {
        ctx.metrics.connection_served(TlsMode::Userspace);
        return Box::pin(proxy::serve(stream, peer, identity, session, ctx)).await;
    }
    match ktls::handover(stream, &accepting.support) {
        Handover::Kernel(kernel) => {
            ctx.metrics.connection_served(TlsMode::Kernel);
            Box::pin(proxy::serve(kernel, peer, identity, session, ctx)).await;
        }
        Handover::Userspace(stream, why) => {
            debug!(peer = %peer, reason = why, "serving this connection over userspace TLS");
            ctx.metrics.connection_served(TlsMode::Userspace);
            Box::pin(proxy::serve(stream, peer, identity, session, ctx)).await;
        }
        Handover::Failed(e) => {
            ctx.metrics.connection_served(TlsMode::Failed);
            warn!(peer = %peer, error = %e, "kernel TLS handover failed after the point of no return; closing the connection");
        }
    }
}

/// Everything before the first request: the PROXY header (if the listener
/// wants one) and the TLS handshake, under one deadline. None when the
/// connection ended there (logged and counted here).
async fn establish(
    mut tcp: TcpStream,
    peer: SocketAddr,
    generation: Rc<WorkerGeneration>,
    accepting: &Accepting,
    ctx: &Rc<WorkerContext>,
) -> Option<(TlsStream, SocketAddr, PeerIdentity, Session)> {
    let handshaking = Counted::enter(ctx.clone(), |c| c.metrics.handshakes_in_progress());
    // One deadline for everything before the first request: the PROXY
    // header (if the listener wants one) and the TLS handshake.
    let timeout = generation.shared.settings.timeouts.handshake;
    let deadline = Instant::now() + timeout;
    let peer = match generation.shared.listeners.get(accepting.listener) {
        Some(l) if l.proxy_protocol => {
            match proxy_protocol::read_header(&mut tcp, peer, &l.trusted_proxies, timeout).await {
                Ok((source, header)) => {
                    debug!(peer = %peer, client = %source, version = header.version, "PROXY header read");
                    source
                }
                Err(why) => {
                    refuse_before_tls(ctx, peer, &why);
                    return None;
                }
            }
        }
        _ => peer,
    };
    let timeout = deadline.saturating_duration_since(Instant::now());
    let site = Cell::new(None);
    let select = |sni: Option<&str>| {
        // The same normal form the Host header and `server_names` are in; a
        // name that has none selects what an unknown name would.
        let mut name = String::new();
        let sni = sni.filter(|s| crate::http::host::normalize_host(s, &mut name).is_ok());
        let name = sni.map(|_| name.as_str());
        let chosen = generation.shared.site_for_name(accepting.listener, name)?;
        site.set(Some(chosen));
        generation.server_configs.get(chosen).cloned()
    };
    // Record by record only where the kernel may take the connection over;
    // otherwise a client's whole second flight in one read.
    let reads = if accepting.mode != KtlsMode::Off && accepting.support.available.is_ok() {
        HandshakeReads::ExactRecords
    } else {
        HandshakeReads::Available
    };
    let (stream, identity) =
        match monoio::time::timeout(timeout, TlsStream::accept(tcp, select, reads)).await {
            Ok(Ok(done)) => done,
            Ok(Err((failure, sni))) => {
                ctx.metrics.connection_served(TlsMode::Failed);
                ctx.metrics
                    .handshake_failed(reason::metric_reason(&failure));
                let site_name = site
                    .get()
                    .and_then(|i| generation.shared.sites.get(i))
                    .map(|s| s.name.as_str());
                log_handshake_failure(peer, sni.as_deref(), site_name, &failure);
                return None;
            }
            Err(_) => {
                ctx.metrics.connection_served(TlsMode::Failed);
                ctx.metrics.handshake_failed(HandshakeReason::Timeout);
                info!(peer = %peer, "TLS handshake timed out");
                return None;
            }
        };
    drop(handshaking);
    debug!(peer = %peer, sni = ?identity.sni, version = ?identity.version, suite = ?identity.suite, resumed = identity.resumed, "TLS handshake complete");
    let session = Session {
        generation,
        listener: accepting.listener,
        site: site.get(),
    };
    Some((stream, peer, identity, session))
}

/// An HTTP/2 connection: over kernel TLS where the listener has it and the
/// handover succeeds (the same handover as HTTP/1.1's), else over userspace
/// TLS; either way `h2` gets a readiness-mode stream.
async fn serve_http2(
    stream: TlsStream,
    peer: SocketAddr,
    identity: PeerIdentity,
    session: Session,
    accepting: &Accepting,
    ctx: Rc<WorkerContext>,
) {
    let stream = if accepting.mode == KtlsMode::Off {
        stream
    } else {
        match ktls::handover(stream, &accepting.support) {
            Handover::Kernel(mut kernel) => {
                let chain = kernel.take_peer_certificates();
                return match PollKtls::new(kernel) {
                    Ok(io) => {
                        ctx.metrics.connection_served(TlsMode::Kernel);
                        ctx.metrics.http2_connection(TlsMode::Kernel);
                        http2::serve(io, peer, identity, chain, session, ctx).await
                    }
                    Err(e) => {
                        // Past the point of no return: nothing to fall back to.
                        ctx.metrics.connection_served(TlsMode::Failed);
                        warn!(peer = %peer, error = %e, "cannot serve HTTP/2 on this kernel TLS socket; closing it")
                    }
                };
            }
            Handover::Userspace(stream, why) => {
                debug!(peer = %peer, reason = why, "serving this connection over userspace TLS");
                stream
            }
            Handover::Failed(e) => {
                ctx.metrics.connection_served(TlsMode::Failed);
                warn!(peer = %peer, error = %e, "kernel TLS handover failed after the point of no return; closing the connection");
                return;
            }
        }
    };
    // A copy: rustls keeps its own inside the stream, which `h2` owns from
    // here on, out of the streams' reach.
    let chain = stream.peer_certificates().to_vec();
    match PollTls::new(stream) {
        Ok(io) => {
            ctx.metrics.connection_served(TlsMode::Userspace);
            ctx.metrics.http2_connection(TlsMode::Userspace);
            http2::serve(io, peer, identity, chain, session, ctx).await
        }
        Err(e) => {
            ctx.metrics.connection_served(TlsMode::Failed);
            warn!(peer = %peer, error = %e, "cannot serve HTTP/2 on this socket; closing it")
        }
    }
}

/// A connection on a `proxy_protocol` listener closed before TLS: one log
/// line (the TCP peer and why) and one count. Dropping the socket closes it.
pub(super) fn refuse_before_tls(
    ctx: &WorkerContext,
    peer: SocketAddr,
    why: &proxy_protocol::Refused,
) {
    ctx.metrics.connection_served(TlsMode::Failed);
    ctx.metrics.handshake_failed(match why {
        proxy_protocol::Refused::UntrustedPeer => HandshakeReason::ProxyUntrusted,
        _ => HandshakeReason::ProxyHeader,
    });
    info!(peer = %peer, reason = %why, "connection refused before TLS (proxy_protocol listener)");
}

pub(super) fn log_handshake_failure(
    peer: SocketAddr,
    sni: Option<&str>,
    site: Option<&str>,
    failure: &HandshakeFailure,
) {
    let sni = sni.unwrap_or("-");
    let site = site.unwrap_or("-");
    match failure {
        HandshakeFailure::Tls(e) if reason::is_client_certificate_error(e) => {
            warn!(peer = %peer, sni, site, reason = %reason::describe(e), "client certificate refused")
        }
        HandshakeFailure::Tls(e) => {
            info!(peer = %peer, sni, site, reason = %reason::describe(e), "TLS handshake failed")
        }
        HandshakeFailure::UnknownServerName => {
            info!(peer = %peer, sni, "TLS handshake refused: the server name matches no site and the listener has no default site (alert unrecognized_name)")
        }
        HandshakeFailure::NotTls => {
            info!(peer = %peer, "TLS handshake failed: client did not speak TLS (plain HTTP to the TLS port?)")
        }
        HandshakeFailure::BadClientHello(e) => {
            info!(peer = %peer, reason = %e, alert = e.alert(), "TLS handshake refused: the ClientHello could not be read, so no site was chosen")
        }
        HandshakeFailure::ResumedCertificateExpired(e) => {
            let reason = reason::describe(&rustls::Error::InvalidCertificate(e.clone()));
            warn!(peer = %peer, sni, site, reason = %format!("{reason} (a resumed session; the certificate was valid when it began)"), "client certificate refused")
        }
        HandshakeFailure::CertificateVerify(_) => {
            warn!(peer = %peer, sni, site, reason = %reason::CERTIFICATE_VERIFY_FAILED, "client certificate refused")
        }
        HandshakeFailure::Io(e) => debug!(peer = %peer, sni, error = %e, "TLS handshake aborted"),
    }
}

#[cfg(test)]
mod tests {
    //! What an idle connection's task holds inline, printed (run with
    //! `--nocapture`; a release build gives the figures that matter) and
    //! bounded loosely, so that a future growing back past a boxed state
    //! is noticed. The heap it holds is counted in `tests/idle_memory.rs`.

    use std::mem::size_of;

    use super::*;
    use crate::proxy::ClientConn;

    /// The size of the future (or value) `f` returns, without calling it.
    fn returned<F, A, B, C, D, E, R>(_: &F) -> usize
    where
        F: Fn(A, B, C, D, E) -> R,
    {
        size_of::<R>()
    }

    #[test]
    fn idle_connection_sizes() {
        let task = returned(&handle_connection);
        let serve = returned(&proxy::serve::<TlsStream>);
        let serve_h2 = {
            fn returned6<F, A, B, C, D, E, G, R>(_: &F) -> usize
            where
                F: Fn(A, B, C, D, E, G) -> R,
            {
                size_of::<R>()
            }
            returned6(&http2::serve::<PollTls>)
        };
        let rows = [
            ("handle_connection future (the task)", task),
            ("proxy::serve::<TlsStream> future (boxed)", serve),
            ("http2::serve::<PollTls> future (boxed)", serve_h2),
            ("ClientConn<TlsStream>", size_of::<ClientConn<TlsStream>>()),
            ("TlsStream", size_of::<TlsStream>()),
            (
                "rustls UnbufferedServerConnection",
                size_of::<rustls::server::UnbufferedServerConnection>(),
            ),
            ("PeerIdentity", size_of::<PeerIdentity>()),
            (
                "identity::ClientCert",
                size_of::<crate::identity::ClientCert>(),
            ),
        ];
        for (what, bytes) in rows {
            println!("{bytes:>6} bytes  {what}");
        }
        // Loose: debug builds lay futures out larger than release builds.
        assert!(task <= 8 * 1024, "the task future grew to {task} bytes");
    }
}
