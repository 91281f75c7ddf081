//! Assembles a running gateway from a validated config: TLS configs per core,
//! SO_REUSEPORT listeners per core, workers, graceful drain.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::config::{Config, KtlsMode, ListenerConfig, Workers};
use crate::drain::Drain;
use crate::generation::{Current, Generation, WorkerGeneration};
use crate::metrics::{self, Published, Snapshot};
use crate::proxy::{self, Session, WorkerContext};
use crate::proxy_protocol;
use crate::runtime::{self, Driver};
use crate::tls::ktls::{self, Handover, KtlsSupport};
use crate::tls::{client_verifier, reason, HandshakeFailure, TlsStream};
use crate::upstream::Pool;

/// A gateway whose sockets are bound and whose TLS material has loaded:
/// everything that can fail on bad input has failed (or not) by now.
pub struct Prepared {
    config: Config,
    driver: Driver,
    workers: usize,
    caps: ConnectionCaps,
    nofile: u64,
    current: Arc<Current>,
    published: Arc<Published>,
    /// listeners[worker] = that worker's socket for each configured listener.
    listeners: Vec<Vec<TcpListener>>,
    pub bound: Vec<SocketAddr>,
}

pub fn prepare(config: Config) -> Result<Prepared, String> {
    let workers = match config.server.workers {
        Workers::Auto => runtime::available_cores(),
        Workers::Count(n) => n,
    };
    let nofile = runtime::raise_nofile_limit()
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    let caps = ConnectionCaps {
        max_connections: config
            .server
            .max_connections
            .unwrap_or_else(|| runtime::default_max_connections(nofile, workers)),
        max_handshakes: config.server.max_handshakes,
    };
    let choice = runtime::driver_choice_from_env(config.server.driver)?;
    let driver = runtime::select_driver(choice)?;
    let published = Published::new(workers);
    let first = Generation::load(&config, 1, &published)?;
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
        caps,
        nofile,
        current: Current::new(first),
        published,
        listeners,
        bound,
    })
}

/// Runs until SIGTERM/SIGINT and the drain that follows. SIGHUP reloads.
pub fn run(prepared: Prepared) -> Result<(), String> {
    let Prepared {
        config,
        driver,
        workers,
        caps,
        nofile,
        current,
        published,
        listeners,
        bound,
    } = prepared;
    let reloader = Reloader {
        started_with: config.clone(),
        current: current.clone(),
        published: published.clone(),
        next_id: std::sync::atomic::AtomicU64::new(2),
    };
    runtime::install_signal_handlers(move || reloader.reload())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let pid_file = PidFile::write(config.server.pid_file.as_deref())?;
    for addr in &bound {
        info!(address = %addr, workers, driver = %driver.name(), "listening (mTLS, HTTP/1.1)");
    }
    info!(
        max_connections = caps.max_connections,
        max_handshakes = caps.max_handshakes,
        open_file_limit = nofile,
        "per-worker caps: past them new connections are closed at accept"
    );
    let admin_published = match config.admin {
        Some(addr) => {
            metrics::serve_admin(addr, published.clone())
                .map_err(|e| format!("cannot start the admin listener on {addr}: {e}"))?;
            Some(published)
        }
        None => None,
    };
    let shared = Arc::new(WorkerShared {
        listeners: Mutex::new(listeners.into_iter().map(Some).collect()),
        listener_configs: config.listeners.clone(),
        current,
        pool: (config.pool.max_idle_per_backend, config.pool.idle_timeout),
        drain_timeout: config.server.drain_timeout,
        driver,
        caps,
        published: admin_published,
    });
    let handles = runtime::spawn_workers("portcullis", driver, workers, move |index| {
        worker_main(index, shared.clone())
    })
    .map_err(|e| format!("cannot start worker threads: {e}"))?;
    for h in handles {
        let _ = h.join();
    }
    drop(pid_file);
    info!("stopped");
    Ok(())
}

/// Re-reads the config file on SIGHUP. Runs on the signal thread, never on a
/// worker: loading certificates and building TLS configs is slow next to a
/// request.
struct Reloader {
    started_with: Config,
    current: Arc<Current>,
    published: Arc<Published>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Reloader {
    fn reload(&self) {
        let path = &self.started_with.source;
        info!(config = %path.display(), "SIGHUP: reloading the config");
        let serving = self.current.version();
        let refused = |why: String| {
            tracing::error!(
                config = %path.display(),
                generation = serving,
                "reload refused: {why}; still serving the previous config"
            );
        };
        let next = match crate::config::load(path) {
            Ok(c) => c,
            Err(e) => return refused(e.to_string()),
        };
        if let Some(why) = restart_only_changes(&self.started_with, &next) {
            return refused(format!("{why} (that needs a restart)"));
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match Generation::load(&next, id, &self.published) {
            Ok(generation) => {
                let (sites, routes) = (generation.sites.len(), generation.settings.routes.len());
                self.current.replace(generation);
                info!(
                    config = %path.display(),
                    generation = id,
                    sites,
                    routes,
                    "config reloaded: new connections use it; open connections finish on the one they started with"
                );
            }
            Err(e) => refused(e),
        }
    }
}

/// What a reload cannot change in a running process: the sockets and threads.
fn restart_only_changes(old: &Config, new: &Config) -> Option<String> {
    let addrs = |c: &Config| -> Vec<(SocketAddr, KtlsMode)> {
        c.listeners.iter().map(|l| (l.address, l.ktls)).collect()
    };
    if addrs(old) != addrs(new) {
        return Some("the [[listener]] addresses or ktls modes changed".into());
    }
    if old.server.workers != new.server.workers || old.server.driver != new.server.driver {
        return Some("server.workers or server.driver changed".into());
    }
    if old.admin != new.admin {
        return Some("the admin address changed".into());
    }
    None
}

/// The process id in `server.pid_file` while running, for `portcullis reload`.
struct PidFile(Option<std::path::PathBuf>);

impl PidFile {
    fn write(path: Option<&std::path::Path>) -> Result<PidFile, String> {
        let Some(path) = path else {
            return Ok(PidFile(None));
        };
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("{}: cannot write the pid file: {e}", path.display()))?;
        Ok(PidFile(Some(path.to_path_buf())))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Per-worker caps on client connections (see `ServerSettings`).
#[derive(Clone, Copy, Debug)]
struct ConnectionCaps {
    max_connections: usize,
    max_handshakes: usize,
}

struct WorkerShared {
    caps: ConnectionCaps,
    /// Taken once by each worker at start-up.
    listeners: Mutex<Vec<Option<Vec<TcpListener>>>>,
    listener_configs: Vec<ListenerConfig>,
    current: Arc<Current>,
    pool: (usize, Duration),
    drain_timeout: Duration,
    driver: Driver,
    /// Where workers publish metrics snapshots; None without an admin listener.
    published: Option<Arc<Published>>,
}

/// This core's copy of the current generation, rebuilt when a reload bumps
/// the version.
struct WorkerGenerations {
    current: Arc<Current>,
    cached: RefCell<(u64, Rc<WorkerGeneration>)>,
    index: usize,
}

impl WorkerGenerations {
    fn get(&self) -> Rc<WorkerGeneration> {
        let version = self.current.version();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != version {
            match self.current.get().for_worker() {
                Ok(built) => {
                    debug!(
                        worker = self.index,
                        generation = version,
                        "worker switched to a reloaded config"
                    );
                    *cached = (version, Rc::new(built));
                }
                // Cannot happen for a generation that loaded (every config was
                // built once already); keep serving the old one if it does.
                Err(e) => {
                    warn!(worker = self.index, error = %e, "cannot build TLS configs for the reloaded config; keeping the previous one");
                    cached.0 = version;
                }
            }
        }
        cached.1.clone()
    }
}

async fn worker_main(index: usize, shared: Arc<WorkerShared>) {
    let sockets = match shared.listeners.lock() {
        Ok(mut all) => all
            .get_mut(index)
            .and_then(Option::take)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let first = match shared.current.get().for_worker() {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot load TLS material");
            return;
        }
    };
    let generations = Rc::new(WorkerGenerations {
        current: shared.current.clone(),
        cached: RefCell::new((first.shared.id, Rc::new(first))),
        index,
    });
    let drain = Rc::new(Drain::default());
    let ctx = Rc::new(WorkerContext::new(
        index,
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
    for (listener_index, (socket, listener_config)) in sockets
        .into_iter()
        .zip(&shared.listener_configs)
        .enumerate()
    {
        match runtime::adopt_listener(socket, shared.driver) {
            Ok(listener) => {
                monoio::spawn(accept_loop(
                    listener,
                    Accepting {
                        listener: listener_index,
                        caps: shared.caps,
                        mode: listener_config.ktls,
                        support: support.clone(),
                        generations: generations.clone(),
                    },
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
        snap.pool_discarded_dirty = pool.stats.discarded_dirty.get();
    }
    snap.open_connections = ctx.conns.open.get() as u64;
    snap.handshakes_in_progress = ctx.conns.handshaking.get() as u64;
    snap.refused_max_connections = ctx.conns.refused_max_connections.get();
    snap.refused_max_handshakes = ctx.conns.refused_max_handshakes.get();
    snap.body_bytes_spliced = ctx.body_bytes.spliced.get();
    snap.body_bytes_copied = ctx.body_bytes.copied.get();
    snap.latency_us = ctx.latency.borrow().clone();
    snap
}

/// What an accept loop hands each connection it accepts.
#[derive(Clone)]
struct Accepting {
    /// Index of the `[[listener]]`: which sites it serves.
    listener: usize,
    caps: ConnectionCaps,
    mode: KtlsMode,
    support: Rc<KtlsSupport>,
    generations: Rc<WorkerGenerations>,
}

async fn accept_loop(
    listener: monoio::net::TcpListener,
    accepting: Accepting,
    ctx: Rc<WorkerContext>,
    accepted: Rc<Cell<u64>>,
) {
    let mut stop = std::pin::pin!(ctx.drain.started());
    let mut refusals = RefusalLog::default();
    loop {
        monoio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((tcp, peer)) => {
                    accepted.set(accepted.get() + 1);
                    if let Some(cap) = over_cap(&ctx.conns, accepting.caps) {
                        // Closed at once (a reset: nothing of it is kept);
                        // connections already served go on undisturbed.
                        crate::sock::set_abortive_close(&tcp);
                        drop(tcp);
                        refusals.note(&ctx, cap);
                        continue;
                    }
                    let _ = tcp.set_nodelay(true);
                    // The generation is fixed here, at accept: a reload later
                    // does not change what this connection was promised.
                    let generation = accepting.generations.get();
                    // The kernel gives up on a peer that stops acknowledging
                    // (a zero window included) after the send timeout.
                    let _ = crate::sock::set_user_timeout(&tcp, generation.shared.settings.timeouts.send);
                    let open = Counted::enter(ctx.clone(), |c| &c.conns.open);
                    monoio::spawn(handle_connection(tcp, peer, generation, accepting.clone(), open));
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

/// Which cap a new connection would exceed, if any.
fn over_cap(counts: &proxy::ConnCounts, caps: ConnectionCaps) -> Option<Cap> {
    if counts.open.get() >= caps.max_connections {
        Some(Cap::Connections)
    } else if counts.handshaking.get() >= caps.max_handshakes {
        Some(Cap::Handshakes)
    } else {
        None
    }
}

#[derive(Clone, Copy, Debug)]
enum Cap {
    Connections,
    Handshakes,
}

/// Counts refusals and says so in the log at most every ten seconds (a flood
/// must not turn into a flood of log lines).
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    since_last: u64,
}

impl RefusalLog {
    fn note(&mut self, ctx: &WorkerContext, cap: Cap) {
        let counter = match cap {
            Cap::Connections => &ctx.conns.refused_max_connections,
            Cap::Handshakes => &ctx.conns.refused_max_handshakes,
        };
        counter.set(counter.get() + 1);
        self.since_last += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            warn!(
                worker = ctx.index,
                cap = ?cap,
                open = ctx.conns.open.get(),
                handshaking = ctx.conns.handshaking.get(),
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
struct Counted {
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

async fn handle_connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    generation: Rc<WorkerGeneration>,
    accepting: Accepting,
    open: Counted,
) {
    let ctx = open.ctx.clone();
    let handshaking = Counted::enter(ctx.clone(), |c| &c.conns.handshaking);
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
                Err(why) => return refuse_before_tls(&ctx, peer, &why),
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
    let (stream, identity) =
        match monoio::time::timeout(timeout, TlsStream::accept(tcp, select)).await {
            Ok(Ok(done)) => done,
            Ok(Err((failure, sni))) => {
                ctx.modes
                    .handshake_failed
                    .set(ctx.modes.handshake_failed.get() + 1);
                ctx.metrics
                    .record_handshake_failure(handshake_reason(&failure));
                let site_name = site
                    .get()
                    .and_then(|i| generation.shared.sites.get(i))
                    .map(|s| s.name.as_str());
                log_handshake_failure(peer, sni.as_deref(), site_name, &failure);
                return;
            }
            Err(_) => {
                ctx.modes
                    .handshake_failed
                    .set(ctx.modes.handshake_failed.get() + 1);
                ctx.metrics.record_handshake_failure(TIMEOUT_REASON);
                info!(peer = %peer, "TLS handshake timed out");
                return;
            }
        };
    drop(handshaking);
    debug!(peer = %peer, sni = ?identity.sni, version = ?identity.version, suite = ?identity.suite, resumed = identity.resumed, "TLS handshake complete");
    let session = Session {
        generation,
        listener: accepting.listener,
        site: site.get(),
    };
    if accepting.mode == KtlsMode::Off {
        ctx.modes.userspace.set(ctx.modes.userspace.get() + 1);
        return proxy::serve(stream, peer, identity, session, ctx).await;
    }
    match ktls::handover(stream, &accepting.support) {
        Handover::Kernel(kernel) => {
            ctx.modes.ktls.set(ctx.modes.ktls.get() + 1);
            proxy::serve(kernel, peer, identity, session, ctx).await;
        }
        Handover::Userspace(stream, why) => {
            debug!(peer = %peer, reason = why, "serving this connection over userspace TLS");
            ctx.modes.userspace.set(ctx.modes.userspace.get() + 1);
            proxy::serve(stream, peer, identity, session, ctx).await;
        }
        Handover::Failed(e) => {
            ctx.modes
                .handshake_failed
                .set(ctx.modes.handshake_failed.get() + 1);
            warn!(peer = %peer, error = %e, "kernel TLS handover failed after the point of no return; closing the connection");
        }
    }
}

/// A connection on a `proxy_protocol` listener closed before TLS: one log
/// line (the TCP peer and why) and one count. Dropping the socket closes it.
fn refuse_before_tls(ctx: &WorkerContext, peer: SocketAddr, why: &proxy_protocol::Refused) {
    ctx.modes
        .handshake_failed
        .set(ctx.modes.handshake_failed.get() + 1);
    let label = match why {
        proxy_protocol::Refused::UntrustedPeer => "proxy_untrusted",
        _ => "proxy_header",
    };
    // Looked up by name (off the request path), so a label added before
    // these cannot shift what they count.
    if let Some(reason) = metrics::HANDSHAKE_REASONS.iter().position(|r| *r == label) {
        ctx.metrics.record_handshake_failure(reason);
    }
    info!(peer = %peer, reason = %why, "connection refused before TLS (proxy_protocol listener)");
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

/// Index of "timeout" in `metrics::HANDSHAKE_REASONS`.
const TIMEOUT_REASON: usize = 7;

/// Index into `metrics::HANDSHAKE_REASONS`.
fn handshake_reason(failure: &HandshakeFailure) -> usize {
    use rustls::{CertificateError, Error};
    if let HandshakeFailure::Tls(e) = failure {
        if let Some(refusal) = client_verifier::refusal(e) {
            let label = refusal.metric_label();
            if let Some(i) = metrics::HANDSHAKE_REASONS.iter().position(|l| *l == label) {
                return i;
            }
        }
    }
    match failure {
        HandshakeFailure::Tls(Error::NoCertificatesPresented) => 0,
        HandshakeFailure::Tls(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => 1,
        HandshakeFailure::Tls(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => 2,
        HandshakeFailure::Tls(Error::InvalidCertificate(CertificateError::Revoked)) => 3,
        HandshakeFailure::UnknownServerName => 4,
        HandshakeFailure::Tls(Error::InvalidCertificate(_)) => 5,
        HandshakeFailure::ResumedCertificateExpired(_) => 2,
        // The certificate is fine; the client could not sign with its key.
        HandshakeFailure::CertificateVerify(_) => 6,
        HandshakeFailure::Tls(_) | HandshakeFailure::NotTls => 6,
        HandshakeFailure::Io(_) => 8,
        HandshakeFailure::BadClientHello(_) => 9,
    }
}

fn log_handshake_failure(
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
