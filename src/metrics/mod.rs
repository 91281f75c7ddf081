//! Metrics without cross-core traffic on the request path.
//!
//! Each worker counts into plain `Cell`s it alone owns, through the named
//! methods of [`WorkerMetrics`] (every counter of the request path lives
//! there). Once a second, off the request path, it copies them into its own
//! slot of [`Published`]; the admin endpoint (`admin`) merges the slots when
//! scraped and renders Prometheus text (`render`). A scrape is therefore at
//! most ~1 s stale, and recording a metric never takes a lock or writes a
//! cache line another core reads. A new metric: a field and a method here, a
//! field in [`Snapshot`], a line in `render`. OCSP stapling's gauges come
//! from its own thread's registry at scrape time (`render`).

mod admin;
mod render;

pub use admin::{serve_admin, serve_admin_on, ADMIN_DEADLINE, ADMIN_MAX_CONNECTIONS};
pub use render::{ConfigStatus, Published};

use std::cell::{Cell, RefCell};

use hdrhistogram::Histogram;

/// Why a connection failed before its first request: the TLS handshake, or
/// (on a `proxy_protocol` listener) the PROXY header before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeReason {
    NoCertificate,
    UnknownCa,
    Expired,
    Revoked,
    UnknownSite,
    BadCertificate,
    /// The client's TLS stack misbehaved (its certificate may be fine).
    Protocol,
    Timeout,
    Io,
    BadClientHello,
    /// A client certificate (or an intermediate CA) whose keyUsage forbids
    /// what it was used for; see tls::client_verifier.
    KeyUsage,
    /// A peer outside `trusted_proxies` on a `proxy_protocol` listener.
    ProxyUntrusted,
    /// A missing, malformed or late PROXY header.
    ProxyHeader,
}

impl HandshakeReason {
    pub const ALL: [HandshakeReason; 13] = [
        HandshakeReason::NoCertificate,
        HandshakeReason::UnknownCa,
        HandshakeReason::Expired,
        HandshakeReason::Revoked,
        HandshakeReason::UnknownSite,
        HandshakeReason::BadCertificate,
        HandshakeReason::Protocol,
        HandshakeReason::Timeout,
        HandshakeReason::Io,
        HandshakeReason::BadClientHello,
        HandshakeReason::KeyUsage,
        HandshakeReason::ProxyUntrusted,
        HandshakeReason::ProxyHeader,
    ];

    /// The `reason` label of `portcullis_handshake_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeReason::NoCertificate => "no_certificate",
            HandshakeReason::UnknownCa => "unknown_ca",
            HandshakeReason::Expired => "expired",
            HandshakeReason::Revoked => "revoked",
            HandshakeReason::UnknownSite => "unknown_site",
            HandshakeReason::BadCertificate => "bad_certificate",
            HandshakeReason::Protocol => "protocol",
            HandshakeReason::Timeout => "timeout",
            HandshakeReason::Io => "io",
            HandshakeReason::BadClientHello => "bad_client_hello",
            HandshakeReason::KeyUsage => "key_usage",
            HandshakeReason::ProxyUntrusted => "proxy_untrusted",
            HandshakeReason::ProxyHeader => "proxy_header",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What asked for a reload of the config generation (the `trigger` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP (`portcullis reload`): the config file is read again.
    Signal = 0,
    /// A file the config names changed (`[reload] watch_files`).
    FileWatch = 1,
    /// A CRL fetched from a `crl_urls` URL changed.
    CrlUrl = 2,
}

impl ReloadTrigger {
    pub const ALL: [ReloadTrigger; 3] = [
        ReloadTrigger::Signal,
        ReloadTrigger::FileWatch,
        ReloadTrigger::CrlUrl,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::FileWatch => "file_watch",
            ReloadTrigger::CrlUrl => "crl_url",
        }
    }
}

/// How a connection was served after its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// The kernel holds the keys (kTLS).
    Kernel,
    Userspace,
    /// The handshake (or the handover) failed.
    Failed,
}

/// A per-worker cap that refused a connection at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    Connections,
    Handshakes,
}

/// Status codes are counted in this many slots per route: the common ones
/// exactly, the rest by class.
const STATUS_SLOTS: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 405, 413, 500, 502, 503, 504,
];
const ROW: usize = STATUS_SLOTS.len() + 5;

/// A backend pool's events, as the pool counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    pub hits: u64,
    pub misses: u64,
    pub connects: u64,
    /// Idle connections found holding bytes (or closed) at checkout.
    pub discarded_dirty: u64,
}

/// The verified-chain cache's events on one worker (tls::client_verifier).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainCacheCounts {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped to keep the bound (not those dropped for a passed window).
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
}

thread_local! {
    /// Counted per thread rather than in [`WorkerMetrics`]: rustls calls the
    /// client verifier deep inside the handshake with no handle to the
    /// worker's metrics, but always on the worker's own thread, which is
    /// also where [`WorkerMetrics::snapshot`] runs. No lock, no shared line.
    static CHAIN_CACHE: Cell<ChainCacheCounts> = const {
        Cell::new(ChainCacheCounts {
            hits: 0,
            misses: 0,
            evictions: 0,
            entries: 0,
        })
    };
}

fn chain_cache_update(f: impl FnOnce(&mut ChainCacheCounts)) {
    CHAIN_CACHE.with(|cell| {
        let mut counts = cell.get();
        f(&mut counts);
        cell.set(counts);
    });
}

/// A client chain found in this core's verified-chain cache (path building skipped).
pub fn chain_cache_hit() {
    chain_cache_update(|c| c.hits = c.hits.wrapping_add(1));
}

/// A client chain verified in full with the cache on.
pub fn chain_cache_miss() {
    chain_cache_update(|c| c.misses = c.misses.wrapping_add(1));
}

/// Entries evicted to keep this core's cache within its bound.
pub fn chain_cache_evicted(n: u64) {
    chain_cache_update(|c| c.evictions = c.evictions.wrapping_add(n));
}

/// Entries this core's cache holds now.
pub fn chain_cache_entries(n: usize) {
    chain_cache_update(|c| c.entries = n as u64);
}

/// This thread's verified-chain cache counts.
pub fn chain_cache_counts() -> ChainCacheCounts {
    CHAIN_CACHE.with(Cell::get)
}

/// One worker's counters. Only its own thread touches them.
pub struct WorkerMetrics {
    /// [route metric slot][status slot + 5 class slots]; row 0 is "no route".
    /// Grows when a reload adds routes.
    requests: RefCell<Vec<[u64; ROW]>>,
    requests_total: Cell<u64>,
    /// Request latency in microseconds, head received to response relayed.
    latency: RefCell<Histogram<u64>>,
    handshake_failures: [Cell<u64>; HandshakeReason::ALL.len()],
    modes: [Cell<u64>; 3],
    open: Cell<usize>,
    handshaking: Cell<usize>,
    refused: [Cell<u64>; 2],
    body_spliced: Cell<u64>,
    body_copied: Cell<u64>,
    /// Client connections served over HTTP/2, by `TlsMode` (kernel, userspace).
    http2: [Cell<u64>; 2],
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        WorkerMetrics {
            requests: RefCell::new(Vec::new()),
            requests_total: Cell::new(0),
            latency: RefCell::new(new_histogram()),
            handshake_failures: Default::default(),
            modes: Default::default(),
            open: Cell::new(0),
            handshaking: Cell::new(0),
            refused: Default::default(),
            body_spliced: Cell::new(0),
            body_copied: Cell::new(0),
            http2: Default::default(),
        }
    }

    /// A request answered: `route_slot` None when it matched no route.
    pub fn record_request(&self, route_slot: Option<usize>, status: u16) {
        let mut rows = self.requests.borrow_mut();
        let index = route_slot.unwrap_or(0);
        if rows.len() <= index {
            rows.resize(index + 1, [0; ROW]);
        }
        let row = &mut rows[index];
        let slot = STATUS_SLOTS
            .iter()
            .position(|s| *s == status)
            .unwrap_or_else(|| STATUS_SLOTS.len() + usize::from((status / 100).clamp(1, 5)) - 1);
        row[slot] += 1;
    }

    /// A request was forwarded (counted when it starts).
    pub fn request_forwarded(&self) {
        bump(&self.requests_total, 1);
    }

    /// How long a forwarded request took, head received to response relayed.
    pub fn request_latency(&self, micros: u64) {
        let _ = self.latency.borrow_mut().record(micros.max(1));
    }

    pub fn handshake_failed(&self, reason: HandshakeReason) {
        bump(&self.handshake_failures[reason.index()], 1);
    }

    pub fn connection_served(&self, mode: TlsMode) {
        bump(&self.modes[mode as usize], 1);
    }

    pub fn connection_refused(&self, cap: Cap) {
        bump(&self.refused[cap as usize], 1);
    }

    /// Gauges: client connections open now, handshakes in progress now.
    pub fn open_connections(&self) -> &Cell<usize> {
        &self.open
    }

    pub fn handshakes_in_progress(&self) -> &Cell<usize> {
        &self.handshaking
    }

    pub fn body_bytes_spliced(&self, n: u64) {
        bump(&self.body_spliced, n);
    }

    pub fn body_bytes_copied(&self, n: u64) {
        bump(&self.body_copied, n);
    }

    /// A connection chose HTTP/2 by ALPN (also counted by its TLS mode).
    /// An HTTP/2 connection, served over kernel or userspace TLS.
    pub fn http2_connection(&self, mode: TlsMode) {
        if let Some(c) = self.http2.get(mode as usize) {
            bump(c, 1);
        }
    }

    /// What the worker logs when it stops.
    pub fn summary(&self) -> Summary {
        let hist = self.latency.borrow();
        Summary {
            kernel_tls: self.modes[TlsMode::Kernel as usize].get(),
            userspace: self.modes[TlsMode::Userspace as usize].get(),
            handshake_failed: self.modes[TlsMode::Failed as usize].get(),
            body_bytes_spliced: self.body_spliced.get(),
            body_bytes_copied: self.body_copied.get(),
            requests: self.requests_total.get(),
            p50_us: hist.value_at_quantile(0.5),
            p99_us: hist.value_at_quantile(0.99),
        }
    }

    /// A copy for the admin endpoint (once a second, off the request path).
    pub fn snapshot(&self, pool: PoolCounts) -> Snapshot {
        Snapshot {
            requests: self.requests.borrow().clone(),
            handshake_failures: std::array::from_fn(|i| self.handshake_failures[i].get()),
            connections_ktls: self.modes[TlsMode::Kernel as usize].get(),
            connections_userspace: self.modes[TlsMode::Userspace as usize].get(),
            connections_handshake_failed: self.modes[TlsMode::Failed as usize].get(),
            pool,
            body_bytes_spliced: self.body_spliced.get(),
            body_bytes_copied: self.body_copied.get(),
            connections_http2_ktls: self.http2[TlsMode::Kernel as usize].get(),
            connections_http2_userspace: self.http2[TlsMode::Userspace as usize].get(),
            open_connections: self.open.get() as u64,
            handshakes_in_progress: self.handshaking.get() as u64,
            refused_max_connections: self.refused[Cap::Connections as usize].get(),
            refused_max_handshakes: self.refused[Cap::Handshakes as usize].get(),
            chain_cache: chain_cache_counts(),
            latency_us: self.latency.borrow().clone(),
        }
    }
}

/// A worker's totals, for its last log line.
#[derive(Debug)]
pub struct Summary {
    pub kernel_tls: u64,
    pub userspace: u64,
    pub handshake_failed: u64,
    pub body_bytes_spliced: u64,
    pub body_bytes_copied: u64,
    pub requests: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// What a worker publishes each second.
#[derive(Clone)]
pub struct Snapshot {
    pub requests: Vec<[u64; ROW]>,
    pub handshake_failures: [u64; HandshakeReason::ALL.len()],
    pub connections_ktls: u64,
    pub connections_userspace: u64,
    pub connections_handshake_failed: u64,
    pub pool: PoolCounts,
    pub body_bytes_spliced: u64,
    pub body_bytes_copied: u64,
    /// Client connections served over HTTP/2, over kernel and userspace TLS.
    pub connections_http2_ktls: u64,
    pub connections_http2_userspace: u64,
    /// Client connections open now, and handshakes in progress now.
    pub open_connections: u64,
    pub handshakes_in_progress: u64,
    /// Connections closed at accept because a cap was reached.
    pub refused_max_connections: u64,
    pub refused_max_handshakes: u64,
    /// This worker's verified-chain cache (read on the worker's thread).
    pub chain_cache: ChainCacheCounts,
    pub latency_us: Histogram<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable_histogram())
}

fn unreachable_histogram() -> Histogram<u64> {
    // 3 significant digits is always valid; keep a total fallback anyway.
    Histogram::new(3)
        .unwrap_or_else(|_| Histogram::new_with_bounds(1, 2, 1).expect("trivial histogram bounds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handshake_reason_has_its_own_label_and_slot() {
        let mut labels = std::collections::HashSet::new();
        for (i, r) in HandshakeReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
            assert!(labels.insert(r.label()), "{r:?}");
        }
    }

    #[test]
    fn named_counters_reach_the_snapshot() {
        let m = WorkerMetrics::new();
        m.record_request(Some(2), 200);
        m.record_request(None, 404);
        m.record_request(Some(2), 418);
        m.handshake_failed(HandshakeReason::KeyUsage);
        m.connection_served(TlsMode::Userspace);
        m.connection_refused(Cap::Handshakes);
        m.body_bytes_copied(10);
        m.request_latency(0);
        m.open_connections().set(3);
        let s = m.snapshot(PoolCounts {
            hits: 1,
            ..PoolCounts::default()
        });
        assert_eq!(s.requests[2][0], 1);
        assert_eq!(
            s.requests[0][9], 1,
            "404 in its own slot of the no-route row"
        );
        assert_eq!(
            s.requests[2][STATUS_SLOTS.len() + 3],
            1,
            "418 counted as 4xx"
        );
        assert_eq!(s.handshake_failures[HandshakeReason::KeyUsage.index()], 1);
        assert_eq!(s.connections_userspace, 1);
        assert_eq!(s.refused_max_handshakes, 1);
        assert_eq!(s.body_bytes_copied, 10);
        assert_eq!(s.open_connections, 3);
        assert_eq!(s.pool.hits, 1);
        assert_eq!(s.latency_us.len(), 1);
        assert_eq!(s.chain_cache, ChainCacheCounts::default());
    }

    #[test]
    fn chain_cache_counts_are_this_threads() {
        chain_cache_hit();
        chain_cache_miss();
        chain_cache_miss();
        chain_cache_evicted(3);
        chain_cache_entries(5);
        let want = ChainCacheCounts {
            hits: 1,
            misses: 2,
            evictions: 3,
            entries: 5,
        };
        assert_eq!(
            WorkerMetrics::new()
                .snapshot(PoolCounts::default())
                .chain_cache,
            want
        );
        let other = std::thread::spawn(chain_cache_counts).join().unwrap();
        assert_eq!(other, ChainCacheCounts::default());
    }
}
