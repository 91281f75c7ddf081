//! One worker: its pinned core's runtime, its listeners, its copy of the
//! current config generation, its metrics publishing, and its drain.

use std::cell::{Cell, RefCell};
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{KtlsMode, ListenerConfig};
use crate::drain::Drain;
use crate::generation::Current;
use crate::metrics::{Published, Snapshot};
use crate::proxy::WorkerContext;
use crate::runtime::{self, Driver};
use crate::tls::ktls::{self, KtlsSupport};
use crate::upstream::Pool;

use super::accept::{accept_loop, Accepting};
use super::generations::WorkerGenerations;
use super::ConnectionCaps;

/// One worker's (listener index, socket) pairs.
pub(super) type WorkerSockets = Vec<(usize, TcpListener)>;

pub(super) struct WorkerShared {
    pub(super) caps: ConnectionCaps,
    /// Taken once by each worker at start-up: (listener index, socket)
    /// pairs; after a takeover by fewer workers, several of one listener.
    pub(super) listeners: Mutex<Vec<Option<WorkerSockets>>>,
    /// Workers whose accept loops are running (a takeover waits for all).
    pub(super) started: AtomicUsize,
    pub(super) listener_configs: Vec<ListenerConfig>,
    pub(super) current: Arc<Current>,
    pub(super) pool: (usize, Duration),
    pub(super) drain_timeout: Duration,
    pub(super) driver: Driver,
    /// Where workers publish metrics snapshots; None without an admin listener.
    pub(super) published: Option<Arc<Published>>,
}

pub(super) async fn worker_main(index: usize, shared: Arc<WorkerShared>) {
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
    for (listener_index, socket) in sockets {
        let Some(listener_config) = shared.listener_configs.get(listener_index) else {
            continue;
        };
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
    shared.started.fetch_add(1, Ordering::SeqCst);

    runtime::shutdown_requested().await;
    // A handover waits for every open connection, not only requests in
    // flight: a connection accepted here just before the new process took
    // over (in its handshake, or before its first request) must be served
    // here, since its client never learns of the upgrade.
    let handover = runtime::HANDOVER.load(Ordering::SeqCst);
    let busy = |drain: &Drain| {
        drain.in_flight() > 0 || (handover && ctx.metrics.open_connections().get() > 0)
    };
    if handover {
        drain.start_handover();
    } else {
        drain.start();
    }
    let deadline = Instant::now() + shared.drain_timeout;
    while busy(&drain) && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if busy(&drain) {
        warn!(
            worker = index,
            in_flight = drain.in_flight(),
            open_connections = ctx.metrics.open_connections().get(),
            "drain timeout reached; closing remaining requests"
        );
    }
    let summary = ctx.metrics.summary();
    info!(
        worker = index,
        connections = accepted.get(),
        ktls = summary.kernel_tls,
        userspace = summary.userspace,
        handshake_failed = summary.handshake_failed,
        body_bytes_spliced = summary.body_bytes_spliced,
        body_bytes_copied = summary.body_bytes_copied,
        requests = summary.requests,
        p50_us = summary.p50_us,
        p99_us = summary.p99_us,
        "worker stopped"
    );
}

/// Copies this core's counters for the admin endpoint (once a second, off the request path).
fn snapshot(ctx: &WorkerContext) -> Snapshot {
    ctx.metrics.snapshot(ctx.pool.borrow().counts())
}

pub(super) fn log_ktls_support_once(support: &KtlsSupport) {
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
