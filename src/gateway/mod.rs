//! Assembles a running gateway from a validated config: TLS configs per core,
//! SO_REUSEPORT listeners per core, workers, graceful drain. `reload` swaps
//! in a new config generation on SIGHUP, `worker` is one core's runtime, and
//! `accept` takes each connection from the listener to the request loop.

mod accept;
mod generations;
mod reload;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use tracing::info;

use crate::config::{Config, KtlsMode, Workers};
use crate::generation::{Current, Generation};
use crate::metrics::{self, Published};
use crate::runtime::{self, Driver};
use crate::tls::ktls::{self};

pub(crate) use reload::restart_only_changes;
use reload::{PidFile, Reloader};
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
    /// listeners[worker] = that worker's socket for each configured listener.
    listeners: Vec<Vec<TcpListener>>,
    pub bound: Vec<SocketAddr>,
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
        cluster: false,
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
        cluster,
    } = prepared;
    if !cluster {
        published.config.applied(0);
    }
    let reloader = Reloader {
        started_with: config.clone(),
        current: current.clone(),
        published: published.clone(),
        next_id: std::sync::atomic::AtomicU64::new(2),
    };
    runtime::install_signal_handlers(move || {
        if cluster {
            info!("SIGHUP ignored: this node follows its config from etcd (change it with portcullis config push)");
        } else {
            reloader.reload()
        }
    })
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let pid_file = PidFile::write(config.server.pid_file.as_deref())?;
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
            info!(address = %addr, sites = h2_sites, "HTTP/2 offered by ALPN (alpn); its connections are served over userspace TLS");
            if l.ktls != crate::config::KtlsMode::Off {
                info!(address = %addr, "kernel TLS serves this listener's HTTP/1.1 connections only: HTTP/2 connections stay on userspace TLS (counted in portcullis_http2_connections_total)");
            }
        }
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

/// Per-worker caps on client connections (see `ServerSettings`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnectionCaps {
    pub(crate) max_connections: usize,
    pub(crate) max_handshakes: usize,
}
