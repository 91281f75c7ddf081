//! Assembles a running gateway from a validated config: TLS configs per core,
//! SO_REUSEPORT listeners per core, workers, graceful drain.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::server::ProducesTickets;
use rustls::ServerConfig;
use tracing::{debug, info, warn};

use crate::config::{Config, KtlsMode, ListenerConfig, Workers};
use crate::drain::Drain;
use crate::metrics::{self, Published, Snapshot};
use crate::proxy::{self, GatewaySettings, WorkerContext};
use crate::router::RouteTable;
use crate::runtime::{self, Driver};
use crate::tls::ktls::{self, Handover, KtlsSupport};
use crate::tls::{self, reason, HandshakeFailure, TlsStream};
use crate::upstream::Pool;

/// A gateway whose sockets are bound and whose TLS material has loaded:
/// everything that can fail on bad input has failed (or not) by now.
pub struct Prepared {
    config: Config,
    driver: Driver,
    workers: usize,
    ticketer: Arc<dyn ProducesTickets>,
    /// listeners[worker] = that worker's socket for each configured listener.
    listeners: Vec<Vec<TcpListener>>,
    pub bound: Vec<SocketAddr>,
}

pub fn prepare(config: Config) -> Result<Prepared, String> {
    let workers = match config.server.workers {
        Workers::Auto => runtime::available_cores(),
        Workers::Count(n) => n,
    };
    let choice = runtime::driver_choice_from_env(config.server.driver)?;
    let driver = runtime::select_driver(choice)?;
    let ticketer = tls::server_config::shared_ticketer()
        .map_err(|e| format!("cannot create the TLS ticket key: {e}"))?;
    for l in &config.listeners {
        tls::server_config::build(l, ticketer.clone()).map_err(|e| e.to_string())?;
    }
    if config.listeners.iter().any(|l| l.ktls == KtlsMode::On) {
        let support = ktls::probe();
        if let Err(why) = &support.available {
            return Err(format!("ktls = \"on\" but kernel TLS unavailable: {why}"));
        }
    }
    let mut listeners: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for l in &config.listeners {
        let sockets = runtime::bind_reuseport(l.address, workers)
            .map_err(|e| format!("cannot listen on {}: {e}", l.address))?;
        if let Some(first) = sockets.first() {
            bound.push(first.local_addr().map_err(|e| e.to_string())?);
        }
        for (w, s) in sockets.into_iter().enumerate() {
            listeners[w].push(s);
        }
    }
    Ok(Prepared {
        config,
        driver,
        workers,
        ticketer,
        listeners,
        bound,
    })
}

/// Runs until SIGTERM/SIGINT and the drain that follows.
pub fn run(prepared: Prepared) -> Result<(), String> {
    let Prepared {
        config,
        driver,
        workers,
        ticketer,
        listeners,
        bound,
    } = prepared;
    runtime::install_signal_handlers()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    for addr in &bound {
        info!(address = %addr, workers, driver = %driver.name(), "listening (mTLS, HTTP/1.1)");
    }
    let settings = Arc::new(GatewaySettings {
        routes: RouteTable::new(&config.routes),
        limits: config.limits.clone(),
        timeouts: config.timeouts.clone(),
        access_log: config.server.access_log,
    });
    let published = match config.admin {
        Some(addr) => {
            let labels = config
                .routes
                .iter()
                .map(|r| match &r.host {
                    Some(h) => format!("{h:?} {}", r.path),
                    None => r.path.clone(),
                })
                .collect();
            let published = Published::new(workers, labels);
            metrics::serve_admin(addr, published.clone())
                .map_err(|e| format!("cannot start the admin listener on {addr}: {e}"))?;
            Some(published)
        }
        None => None,
    };
    let shared = Arc::new(WorkerShared {
        listeners: Mutex::new(listeners.into_iter().map(Some).collect()),
        listener_configs: config.listeners.clone(),
        ticketer,
        settings,
        pool: (config.pool.max_idle_per_backend, config.pool.idle_timeout),
        drain_timeout: config.server.drain_timeout,
        driver,
        published,
    });
    let handles = runtime::spawn_workers("portcullis", driver, workers, move |index| {
        worker_main(index, shared.clone())
    })
    .map_err(|e| format!("cannot start worker threads: {e}"))?;
    for h in handles {
        let _ = h.join();
    }
    info!("stopped");
    Ok(())
}

struct WorkerShared {
    /// Taken once by each worker at start-up.
    listeners: Mutex<Vec<Option<Vec<TcpListener>>>>,
    listener_configs: Vec<ListenerConfig>,
    ticketer: Arc<dyn ProducesTickets>,
    settings: Arc<GatewaySettings>,
    pool: (usize, Duration),
    drain_timeout: Duration,
    driver: Driver,
    /// Where workers publish metrics snapshots; None without an admin listener.
    published: Option<Arc<Published>>,
}

async fn worker_main(index: usize, shared: Arc<WorkerShared>) {
    let sockets = match shared.listeners.lock() {
        Ok(mut all) => all
            .get_mut(index)
            .and_then(Option::take)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let drain = Rc::new(Drain::default());
    let ctx = Rc::new(WorkerContext::new(
        index,
        shared.settings.clone(),
        Pool::new(shared.pool.0, shared.pool.1),
        drain.clone(),
    ));
    let accepted = Rc::new(Cell::new(0u64));
    // Each core asks its kernel once; the answer is the same on every core,
    // so only the first to finish says it in the log.
    let wants_ktls = shared
        .listener_configs
        .iter()
        .any(|l| l.ktls != KtlsMode::Off);
    let support = Rc::new(if wants_ktls {
        ktls::probe()
    } else {
        KtlsSupport::none("disabled by configuration")
    });
    if wants_ktls {
        log_ktls_support_once(&support);
    }
    for (socket, listener_config) in sockets.into_iter().zip(&shared.listener_configs) {
        // One TLS config per core: its session cache stays core-local.
        let tls = match tls::server_config::build(listener_config, shared.ticketer.clone()) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "cannot load TLS material");
                continue;
            }
        };
        match runtime::adopt_listener(socket, shared.driver) {
            Ok(listener) => {
                let mode = listener_config.ktls;
                monoio::spawn(accept_loop(
                    listener,
                    tls,
                    mode,
                    support.clone(),
                    ctx.clone(),
                    accepted.clone(),
                ));
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt listener"),
        }
    }
    let evict_ctx = ctx.clone();
    monoio::spawn(async move {
        while !evict_ctx.drain.is_draining() {
            monoio::time::sleep(Duration::from_secs(1)).await;
            evict_ctx.pool.borrow_mut().evict_expired();
        }
    });
    if let Some(published) = shared.published.clone() {
        let ctx = ctx.clone();
        monoio::spawn(async move {
            loop {
                published.publish(ctx.index, snapshot(&ctx));
                if ctx.drain.is_draining() {
                    break;
                }
                monoio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    info!(worker = index, driver = %shared.driver.name(), "worker started");

    runtime::shutdown_requested().await;
    drain.start();
    let deadline = Instant::now() + shared.drain_timeout;
    while drain.in_flight() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if drain.in_flight() > 0 {
        warn!(
            worker = index,
            in_flight = drain.in_flight(),
            "drain timeout reached; closing remaining requests"
        );
    }
    let hist = ctx.latency.borrow();
    let modes = &ctx.modes;
    info!(
        worker = index,
        connections = accepted.get(),
        ktls = modes.ktls.get(),
        userspace = modes.userspace.get(),
        handshake_failed = modes.handshake_failed.get(),
        body_bytes_spliced = ctx.body_bytes.spliced.get(),
        body_bytes_copied = ctx.body_bytes.copied.get(),
        requests = ctx.requests.get(),
        p50_us = hist.value_at_quantile(0.5),
        p99_us = hist.value_at_quantile(0.99),
        "worker stopped"
    );
}

/// Copies this core's counters for the admin endpoint (once a second, off the request path).
fn snapshot(ctx: &WorkerContext) -> Snapshot {
    let mut snap = Snapshot::take(&ctx.metrics);
    snap.connections_ktls = ctx.modes.ktls.get();
    snap.connections_userspace = ctx.modes.userspace.get();
    snap.connections_handshake_failed = ctx.modes.handshake_failed.get();
    {
        let pool = ctx.pool.borrow();
        snap.pool_hits = pool.stats.hits.get();
        snap.pool_misses = pool.stats.misses.get();
        snap.pool_connects = pool.stats.connects.get();
    }
    snap.body_bytes_spliced = ctx.body_bytes.spliced.get();
    snap.body_bytes_copied = ctx.body_bytes.copied.get();
    snap.latency_us = ctx.latency.borrow().clone();
    snap
}

async fn accept_loop(
    listener: monoio::net::TcpListener,
    tls: Arc<ServerConfig>,
    mode: KtlsMode,
    support: Rc<KtlsSupport>,
    ctx: Rc<WorkerContext>,
    accepted: Rc<Cell<u64>>,
) {
    let mut stop = std::pin::pin!(ctx.drain.started());
    loop {
        monoio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((tcp, peer)) => {
                    accepted.set(accepted.get() + 1);
                    let _ = tcp.set_nodelay(true);
                    monoio::spawn(handle_connection(tcp, peer, tls.clone(), mode, support.clone(), ctx.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(worker = ctx.index, error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    drop(listener);
}

async fn handle_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Arc<ServerConfig>,
    mode: KtlsMode,
    support: Rc<KtlsSupport>,
    ctx: Rc<WorkerContext>,
) {
    let timeout = ctx.settings.timeouts.handshake;
    let (stream, identity) = match monoio::time::timeout(timeout, TlsStream::accept(tcp, tls)).await
    {
        Ok(Ok(done)) => done,
        Ok(Err((failure, sni))) => {
            ctx.modes
                .handshake_failed
                .set(ctx.modes.handshake_failed.get() + 1);
            ctx.metrics
                .record_handshake_failure(handshake_reason(&failure));
            log_handshake_failure(peer, sni.as_deref(), &failure);
            return;
        }
        Err(_) => {
            ctx.modes
                .handshake_failed
                .set(ctx.modes.handshake_failed.get() + 1);
            ctx.metrics.record_handshake_failure(5);
            info!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    debug!(peer = %peer, sni = ?identity.sni, version = ?identity.version, suite = ?identity.suite, "TLS handshake complete");
    if mode == KtlsMode::Off {
        ctx.modes.userspace.set(ctx.modes.userspace.get() + 1);
        return proxy::serve(stream, peer, identity, ctx).await;
    }
    match ktls::handover(stream, &support) {
        Handover::Kernel(kernel) => {
            ctx.modes.ktls.set(ctx.modes.ktls.get() + 1);
            proxy::serve(kernel, peer, identity, ctx).await;
        }
        Handover::Userspace(stream, why) => {
            debug!(peer = %peer, reason = why, "serving this connection over userspace TLS");
            ctx.modes.userspace.set(ctx.modes.userspace.get() + 1);
            proxy::serve(stream, peer, identity, ctx).await;
        }
        Handover::Failed(e) => {
            ctx.modes
                .handshake_failed
                .set(ctx.modes.handshake_failed.get() + 1);
            warn!(peer = %peer, error = %e, "kernel TLS handover failed after the point of no return; closing the connection");
        }
    }
}

fn log_ktls_support_once(support: &KtlsSupport) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| match &support.available {
        Err(why) => warn!("kernel TLS unavailable: {why}; serving over userspace rustls"),
        Ok(()) => {
            let taken: Vec<String> = support
                .suites
                .iter()
                .filter(|(_, r)| r.is_ok())
                .map(|(s, _)| format!("{s:?}"))
                .collect();
            let refused: Vec<String> = support
                .suites
                .iter()
                .filter_map(|(s, r)| r.as_ref().err().map(|e| format!("{s:?}: {e}")))
                .collect();
            info!(
                suites = %taken.join(","),
                refused = %refused.join("; "),
                rekey = support.rekey,
                "kernel TLS available: connections move to the kernel after the handshake"
            );
        }
    });
}

/// Index into `metrics::HANDSHAKE_REASONS`.
fn handshake_reason(failure: &HandshakeFailure) -> usize {
    use rustls::{CertificateError, Error};
    match failure {
        HandshakeFailure::Tls(Error::NoCertificatesPresented) => 0,
        HandshakeFailure::Tls(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => 1,
        HandshakeFailure::Tls(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => 2,
        HandshakeFailure::Tls(Error::InvalidCertificate(_)) => 3,
        HandshakeFailure::Tls(_) | HandshakeFailure::NotTls => 4,
        HandshakeFailure::Io(_) => 6,
    }
}

fn log_handshake_failure(peer: SocketAddr, sni: Option<&str>, failure: &HandshakeFailure) {
    let sni = sni.unwrap_or("-");
    match failure {
        HandshakeFailure::Tls(e) if reason::is_client_certificate_error(e) => {
            warn!(peer = %peer, sni, reason = %reason::describe(e), "client certificate refused")
        }
        HandshakeFailure::Tls(e) => {
            info!(peer = %peer, sni, reason = %reason::describe(e), "TLS handshake failed")
        }
        HandshakeFailure::NotTls => {
            info!(peer = %peer, "TLS handshake failed: client did not speak TLS (plain HTTP to the TLS port?)")
        }
        HandshakeFailure::Io(e) => debug!(peer = %peer, sni, error = %e, "TLS handshake aborted"),
    }
}
