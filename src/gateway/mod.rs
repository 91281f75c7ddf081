//! Assembles a running gateway from a validated config: TLS configs per core,
//! SO_REUSEPORT listeners per core, workers, graceful drain. `reload` swaps
//! in a new config generation on SIGHUP, `worker` is one core's runtime, and
//! `accept` takes each connection from the listener to the request loop;
//! `sockets` maps the sockets of a takeover (`crate::upgrade`) to workers.

mod accept;
mod crl_refresh;
mod generations;
mod reload;
mod sockets;
mod watch;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::info;

use crate::config::{Config, KtlsMode, Workers};
use crate::generation::{Current, Generation};
use crate::metrics::{self, Published, ReloadTrigger};
use crate::runtime::{self, Driver};
use crate::tls::ktls::{self};

use crate::upgrade;
pub(crate) use reload::restart_only_changes;
use reload::{PidFile, Reloader, Successor};
use worker::{worker_main, WorkerShared};

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
    /// listeners[worker] = that worker's (listener index, socket) pairs.
    listeners: Vec<Vec<(usize, TcpListener)>>,
    /// The admin socket passed by the process taken over, if any.
    admin: Option<TcpListener>,
    /// The takeover still to be confirmed once the workers accept.
    takeover: Option<upgrade::Pending>,
    pub bound: Vec<SocketAddr>,
    /// The watched files as the first generation loaded them.
    watch_baseline: watch::Baseline,
    /// The config comes from etcd (`cluster`): SIGHUP does not re-read a file.
    cluster: bool,
}

impl Prepared {
    /// The served generation and the metrics, for a thread that swaps
    /// generations in (the cluster sync thread).
    pub fn handles(&self) -> (Arc<Current>, Arc<Published>) {
        (self.current.clone(), self.published.clone())
    }

    /// Marks the config as coming from the cluster: SIGHUP is then logged
    /// and ignored (there is no file to re-read; etcd is followed live).
    pub fn cluster_mode(mut self) -> Prepared {
        self.cluster = true;
        self
    }
}

/// Loads the config's TLS material and binds its sockets, or, with
/// `takeover`, receives them from the running gateway serving that upgrade
/// socket (the config and its certificates are loaded first, so a broken
/// new config fails before the old process is asked for anything).
pub fn prepare(config: Config, takeover: Option<&Path>) -> Result<Prepared, String> {
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
    crl_refresh::fetch_at_start(&config)?;
    let watch_baseline = watch::Baseline::take(&config);
    let first = Generation::load(&config, 1, &published)?;
    published.set_inventory(first.inventory.clone());
    if config.listeners.iter().any(|l| l.ktls == KtlsMode::On) {
        let support = ktls::probe();
        if let Err(why) = &support.available {
            return Err(format!("ktls = \"on\" but kernel TLS unavailable: {why}"));
        }
    }
    let (listeners, admin, pending) = match takeover {
        None => (bind_all(&config, workers)?, None, None),
        Some(path) => {
            let (received, pending) = upgrade::take(path)?;
            let (listeners, admin) = sockets::adopt(&config, workers, driver, received)?;
            (listeners, admin, Some(pending))
        }
    };
    let mut bound = Vec::new();
    for l in 0..config.listeners.len() {
        let socket = listeners
            .iter()
            .flatten()
            .find(|(i, _)| *i == l)
            .map(|(_, s)| s);
        if let Some(socket) = socket {
            bound.push(socket.local_addr().map_err(|e| e.to_string())?);
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
        admin,
        takeover: pending,
        bound,
        watch_baseline,
        cluster: false,
    })
}

/// A fresh start: one SO_REUSEPORT socket per worker per listener.
fn bind_all(config: &Config, workers: usize) -> Result<Vec<Vec<(usize, TcpListener)>>, String> {
    let mut listeners: Vec<Vec<(usize, TcpListener)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, l) in config.listeners.iter().enumerate() {
        let sockets = runtime::bind_reuseport(l.address, workers)
            .map_err(|e| format!("cannot listen on {}: {e}", l.address))?;
        for (w, s) in sockets.into_iter().enumerate() {
            listeners[w].push((i, s));
        }
    }
    Ok(listeners)
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
        admin,
        takeover,
        bound,
        watch_baseline,
        cluster,
    } = prepared;
    if !cluster {
        published.config.applied(0);
    }
    let reloader = Arc::new(Reloader::new(&config, current.clone(), published.clone()));
    let on_sighup = reloader.clone();
    let successor = Successor::new(&config);
    runtime::install_signal_handlers(
        move || {
            if cluster {
                info!("SIGHUP ignored: this node follows its config from etcd (change it with portcullis config push)");
            } else {
                on_sighup.reload(ReloadTrigger::Signal, "SIGHUP");
            }
        },
        move || successor.start(),
    )
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    crate::lifecycle::log_concerns(&published.inventory(), config.tls.warn_expiry);
    if cluster {
        // The files come from etcd with each revision; the watcher and the
        // CRL fetcher rebuild from the config this process started with and
        // would undo a revision the cluster thread applied.
        info!(
            "file watching and crl_urls refresh are off on a cluster node: etcd carries the files"
        );
    } else {
        if config.reload.watch_files {
            info!(
                files = watch::watched_files(&config).len(),
                "watching the certificate, key and CRL files: a change reloads them ([reload] watch_files)"
            );
        }
        watch::spawn(reloader.clone(), watch_baseline)
            .map_err(|e| format!("cannot start the file watcher: {e}"))?;
        crl_refresh::spawn(reloader).map_err(|e| format!("cannot start the CRL thread: {e}"))?;
    }
    // After a takeover the pid file is written once this process serves:
    // until then `portcullis reload` must still reach the old one.
    let mut pid_file = match takeover {
        None => Some(PidFile::write(config.server.pid_file.as_deref())?),
        Some(_) => None,
    };
    // Duplicates of every listening socket, for a later takeover.
    let offer = match &config.server.upgrade_socket {
        Some(_) => Some(sockets::offer(&config, &listeners)?),
        None => None,
    };
    for addr in &bound {
        info!(address = %addr, workers, driver = %driver.name(), "listening (mTLS; HTTP/1.1, and HTTP/2 where ALPN offers it)");
    }
    for (l, addr) in config.listeners.iter().zip(&bound) {
        let h2_sites = l
            .sites
            .iter()
            .filter(|&&i| {
                config.sites[i]
                    .alpn
                    .contains(&crate::config::AppProtocol::Http2)
            })
            .count();
        if h2_sites > 0 {
            if l.ktls == crate::config::KtlsMode::Off {
                info!(address = %addr, sites = h2_sites, "HTTP/2 offered by ALPN (alpn)");
            } else {
                info!(address = %addr, sites = h2_sites, "HTTP/2 offered by ALPN (alpn); its connections go to kernel TLS as HTTP/1.1's do (counted by TLS mode in portcullis_http2_connections_total)");
            }
        }
    }
    info!(
        max_connections = caps.max_connections,
        max_handshakes = caps.max_handshakes,
        open_file_limit = nofile,
        "per-worker caps: past them new connections are closed at accept"
    );
    // OCSP stapling's thread, when a site asked for it (a reload that adds
    // the first such site starts it then).
    published
        .ocsp()
        .start_if_needed()
        .map_err(|e| format!("cannot start the OCSP stapling thread: {e}"))?;
    // The admin socket: the one passed by a takeover if it is at the
    // configured address, else bound now.
    let admin_socket = match config.admin {
        Some(addr) => Some(match admin.filter(|a| sockets::same_address(a, addr)) {
            Some(passed) => passed,
            None => TcpListener::bind(addr)
                .map_err(|e| format!("cannot start the admin listener on {addr}: {e}"))?,
        }),
        None => None,
    };
    let mut offer = offer;
    if let (Some(o), Some(a)) = (offer.as_mut(), &admin_socket) {
        o.admin = Some(
            a.try_clone()
                .map_err(|e| format!("cannot duplicate the admin socket: {e}"))?,
        );
    }
    let admin_published = match admin_socket {
        Some(socket) => {
            metrics::serve_admin_on(socket, published.clone())
                .map_err(|e| format!("cannot start the admin listener: {e}"))?;
            Some(published)
        }
        None => None,
    };
    let shared = Arc::new(WorkerShared {
        started: AtomicUsize::new(0),
        listeners: Mutex::new(listeners.into_iter().map(Some).collect()),
        listener_configs: config.listeners.clone(),
        current,
        pool: (config.pool.max_idle_per_backend, config.pool.idle_timeout),
        drain_timeout: config.server.drain_timeout,
        driver,
        caps,
        published: admin_published,
    });
    let spawned = shared.clone();
    let handles = runtime::spawn_workers("portcullis", driver, workers, move |index| {
        worker_main(index, spawned.clone())
    })
    .map_err(|e| format!("cannot start worker threads: {e}"))?;
    if let Some(pending) = takeover {
        // Every worker accepts before the old process stops: not one
        // moment without an acceptor on any socket.
        let all = wait_until(Duration::from_secs(10), || {
            shared.started.load(Ordering::SeqCst) >= workers
        });
        if !all {
            runtime::SHUTDOWN.store(true, Ordering::SeqCst);
            return Err("the workers did not start; the old process goes on serving".into());
        }
        let from = pending.from_pid;
        // Under systemd this process is the service's main one from here on:
        // said before the old process may exit, so systemd never sees the
        // service's main process gone.
        notify_systemd(&format!("MAINPID={}", std::process::id()));
        if let Err(e) = pending.confirm() {
            // The old process may or may not drain now; serve on regardless.
            tracing::error!("takeover: {e}");
        } else {
            info!(
                old_pid = from,
                "took over the listening sockets; the old process drains and exits"
            );
        }
        pid_file = Some(PidFile::write(config.server.pid_file.as_deref())?);
    }
    if let (Some(path), Some(offer)) = (&config.server.upgrade_socket, offer) {
        upgrade::serve(path.clone(), offer, |pid| {
            info!(new_pid = pid, "process {pid} accepts on the listening sockets: this one stops accepting and drains");
            runtime::request_handover_drain();
        })?;
    }
    // Under systemd (Type=notify): accepting, and ready for a takeover.
    notify_systemd(&format!("MAINPID={}\nREADY=1", std::process::id()));
    for h in handles {
        let _ = h.join();
    }
    drop(pid_file);
    info!("stopped");
    Ok(())
}

/// Per-worker caps on client connections (see `ServerSettings`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionCaps {
    pub(crate) max_connections: usize,
    pub(crate) max_handshakes: usize,
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn notify_systemd(state: &str) {
    if let Err(e) = upgrade::notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
