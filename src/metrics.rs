//! Metrics without cross-core traffic on the request path.
//!
//! Each worker counts into plain `Cell`s it alone owns. Once a second, off the
//! request path, it copies them into its own slot of [`Published`]; the admin
//! endpoint merges the slots when scraped and renders Prometheus text. A
//! scrape is therefore at most ~1 s stale, and recording a metric never takes
//! a lock or writes a cache line another core reads.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tracing::info;

/// Why handshakes failed, as metric labels. New labels go at the end: the
/// gateway counts by index. `proxy_untrusted` and `proxy_header` are
/// connections closed before TLS on a `proxy_protocol` listener: a peer
/// outside `trusted_proxies`, and a missing, malformed or late PROXY header.
pub const HANDSHAKE_REASONS: [&str; 13] = [
    "no_certificate",
    "unknown_ca",
    "expired",
    "revoked",
    "unknown_site",
    "bad_certificate",
    "protocol",
    "timeout",
    "io",
    "bad_client_hello",
    // A client certificate (or an intermediate CA) whose keyUsage forbids
    // what it was used for; see tls::client_verifier.
    "key_usage",
    "proxy_untrusted",
    "proxy_header",
];

/// Status codes are counted in this many slots per route: the common ones
/// exactly, the rest by class.
const STATUS_SLOTS: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 405, 413, 500, 502, 503, 504,
];

/// One worker's counters. Only its own thread touches them.
#[derive(Default)]
pub struct WorkerMetrics {
    /// [route metric slot][status slot + 5 class slots]; row 0 is "no route".
    /// Grows when a reload adds routes.
    requests: RefCell<Vec<[u64; STATUS_SLOTS.len() + 5]>>,
    pub handshake_failures: [Cell<u64>; HANDSHAKE_REASONS.len()],
}

impl WorkerMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// `route_slot` None: the request matched no route.
    pub fn record_request(&self, route_slot: Option<usize>, status: u16) {
        let mut rows = self.requests.borrow_mut();
        let index = route_slot.unwrap_or(0);
        if rows.len() <= index {
            rows.resize(index + 1, [0; STATUS_SLOTS.len() + 5]);
        }
        let row = &mut rows[index];
        let slot = STATUS_SLOTS
            .iter()
            .position(|s| *s == status)
            .unwrap_or_else(|| STATUS_SLOTS.len() + usize::from((status / 100).clamp(1, 5)) - 1);
        row[slot] += 1;
    }

    pub fn record_handshake_failure(&self, reason: usize) {
        if let Some(c) = self.handshake_failures.get(reason) {
            c.set(c.get() + 1);
        }
    }
}

/// What a worker publishes each second.
#[derive(Clone)]
pub struct Snapshot {
    pub requests: Vec<[u64; STATUS_SLOTS.len() + 5]>,
    pub handshake_failures: [u64; HANDSHAKE_REASONS.len()],
    pub connections_ktls: u64,
    pub connections_userspace: u64,
    pub connections_handshake_failed: u64,
    pub pool_hits: u64,
    pub pool_misses: u64,
    pub pool_connects: u64,
    pub pool_discarded_dirty: u64,
    pub body_bytes_spliced: u64,
    /// Client connections open now, and handshakes in progress now.
    pub open_connections: u64,
    pub handshakes_in_progress: u64,
    /// Connections closed at accept because a cap was reached.
    pub refused_max_connections: u64,
    pub refused_max_handshakes: u64,
    pub body_bytes_copied: u64,
    pub latency_us: Histogram<u64>,
}

impl Snapshot {
    pub fn take(m: &WorkerMetrics) -> Self {
        let mut hf = [0; HANDSHAKE_REASONS.len()];
        for (o, c) in hf.iter_mut().zip(&m.handshake_failures) {
            *o = c.get();
        }
        Snapshot {
            requests: m.requests.borrow().clone(),
            handshake_failures: hf,
            connections_ktls: 0,
            connections_userspace: 0,
            connections_handshake_failed: 0,
            pool_hits: 0,
            pool_misses: 0,
            pool_connects: 0,
            pool_discarded_dirty: 0,
            body_bytes_spliced: 0,
            open_connections: 0,
            handshakes_in_progress: 0,
            refused_max_connections: 0,
            refused_max_handshakes: 0,
            body_bytes_copied: 0,
            latency_us: Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()),
        }
    }
}

fn unreachable_histogram() -> Histogram<u64> {
    // 3 significant digits is always valid; keep a total fallback anyway.
    Histogram::new_with_bounds(1, 2, 1).expect("trivial histogram bounds")
}

/// One slot per worker; each written only by its worker, read by the admin thread.
pub struct Published {
    slots: Vec<Mutex<Option<Snapshot>>>,
    /// Route labels by metric slot; slot 0 is "none". Only grows: a route
    /// kept across a reload keeps its slot and its counts.
    route_labels: Mutex<Vec<String>>,
}

impl Published {
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Published {
            slots: (0..workers).map(|_| Mutex::new(None)).collect(),
            route_labels: Mutex::new(vec!["none".to_string()]),
        })
    }

    /// The metric slot of a route label (allocated on first sight, at config load).
    pub fn route_slot(&self, label: &str) -> usize {
        let mut labels = match self.route_labels.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(i) = labels.iter().position(|l| l == label) {
            return i;
        }
        labels.push(label.to_string());
        labels.len() - 1
    }

    pub fn publish(&self, worker: usize, snap: Snapshot) {
        if let Some(slot) = self.slots.get(worker) {
            if let Ok(mut s) = slot.lock() {
                *s = Some(snap);
            }
        }
    }

    /// Prometheus text exposition of all workers merged.
    pub fn render(&self) -> String {
        let snaps: Vec<Snapshot> = self
            .slots
            .iter()
            .filter_map(|s| s.lock().ok().and_then(|g| g.clone()))
            .collect();
        let mut out = String::with_capacity(8192);
        let sum = |f: fn(&Snapshot) -> u64| snaps.iter().map(f).sum::<u64>();

        out.push_str("# HELP portcullis_requests_total Requests answered, by route and status.\n# TYPE portcullis_requests_total counter\n");
        let labels = match self.route_labels.lock() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for (r, label) in labels.iter().enumerate() {
            for slot in 0..STATUS_SLOTS.len() + 5 {
                let n: u64 = snaps
                    .iter()
                    .filter_map(|s| s.requests.get(r))
                    .map(|row| row[slot])
                    .sum();
                if n == 0 {
                    continue;
                }
                let status = match STATUS_SLOTS.get(slot) {
                    Some(s) => s.to_string(),
                    None => format!("{}xx", slot - STATUS_SLOTS.len() + 1),
                };
                let _ = writeln!(
                    out,
                    "portcullis_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(label)
                );
            }
        }
        let failures: Vec<(String, u64)> = HANDSHAKE_REASONS
            .iter()
            .enumerate()
            .map(|(i, reason)| {
                let n = snaps.iter().map(|s| s.handshake_failures[i]).sum();
                (format!("reason=\"{reason}\""), n)
            })
            .collect();
        counter_family(
            &mut out,
            "portcullis_handshake_failures_total",
            "TLS handshakes that failed, by reason.",
            &failures,
        );
        counter_family(
            &mut out,
            "portcullis_connections_total",
            "Client connections after the handshake, by TLS mode.",
            &[
                ("tls_mode=\"ktls\"".into(), sum(|s| s.connections_ktls)),
                (
                    "tls_mode=\"userspace\"".into(),
                    sum(|s| s.connections_userspace),
                ),
                (
                    "tls_mode=\"handshake_failed\"".into(),
                    sum(|s| s.connections_handshake_failed),
                ),
            ],
        );
        counter_family(
            &mut out,
            "portcullis_backend_pool_total",
            "Backend connection pool events.",
            &[
                ("event=\"hit\"".into(), sum(|s| s.pool_hits)),
                ("event=\"miss\"".into(), sum(|s| s.pool_misses)),
                ("event=\"connect\"".into(), sum(|s| s.pool_connects)),
                (
                    "event=\"discarded_dirty\"".into(),
                    sum(|s| s.pool_discarded_dirty),
                ),
            ],
        );
        counter_family(
            &mut out,
            "portcullis_connections_refused_total",
            "Client connections closed at accept because a per-worker cap was reached.",
            &[
                (
                    "cap=\"max_connections\"".into(),
                    sum(|s| s.refused_max_connections),
                ),
                (
                    "cap=\"max_handshakes\"".into(),
                    sum(|s| s.refused_max_handshakes),
                ),
            ],
        );
        gauge(
            &mut out,
            "portcullis_open_connections",
            "Client connections open now (all workers).",
            sum(|s| s.open_connections),
        );
        gauge(
            &mut out,
            "portcullis_handshakes_in_progress",
            "TLS handshakes in progress now (all workers).",
            sum(|s| s.handshakes_in_progress),
        );
        counter_family(
            &mut out,
            "portcullis_body_bytes_total",
            "Body bytes relayed, by path (splice never enters user memory).",
            &[
                ("path=\"splice\"".into(), sum(|s| s.body_bytes_spliced)),
                ("path=\"copy\"".into(), sum(|s| s.body_bytes_copied)),
            ],
        );

        let mut merged = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable_histogram());
        for s in &snaps {
            let _ = merged.add(&s.latency_us);
        }
        out.push_str("# HELP portcullis_request_duration_seconds Request latency, head received to response relayed (hdrhistogram per core, merged).\n# TYPE portcullis_request_duration_seconds summary\n");
        for q in [0.5, 0.9, 0.99, 0.999] {
            let v = merged.value_at_quantile(q) as f64 / 1e6;
            let _ = writeln!(
                out,
                "portcullis_request_duration_seconds{{quantile=\"{q}\"}} {v}"
            );
        }
        let total: f64 = merged
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum::<f64>()
            / 1e6;
        let _ = writeln!(out, "portcullis_request_duration_seconds_sum {total}");
        let _ = writeln!(
            out,
            "portcullis_request_duration_seconds_count {}",
            merged.len()
        );
        out
    }
}

/// Writes one counter family: HELP and TYPE lines, then `name{labels} value` per series.
fn counter_family(out: &mut String, name: &str, help: &str, series: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, value) in series {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` and `/healthz` on a plain-HTTP admin listener, off the
/// worker cores (blocking I/O: a scrape is rare and must never compete with a
/// worker core). Each connection gets its own short-lived thread, so one slow
/// client cannot hold up `/metrics`; at most [`ADMIN_MAX_CONNECTIONS`] are
/// served at once (more are closed at once) and each has
/// [`ADMIN_DEADLINE`] in all to send its request and take the answer.
pub fn serve_admin(addr: SocketAddr, published: Arc<Published>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    // EMFILE and friends: do not spin.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                use std::sync::atomic::Ordering;
                if active.fetch_add(1, Ordering::AcqRel) >= ADMIN_MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    continue; // dropped: closed at once
                }
                let (published, done) = (published.clone(), active.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("admin-conn".into())
                        .spawn(move || {
                            serve_admin_connection(stream, &published);
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    info!(address = %bound, "admin listener: /metrics, /healthz");
    Ok(bound)
}

/// Admin connections served at once; more are closed at accept.
pub const ADMIN_MAX_CONNECTIONS: usize = 16;
/// The whole of one admin exchange: request in, answer out.
pub const ADMIN_DEADLINE: Duration = Duration::from_secs(5);

fn serve_admin_connection(mut stream: std::net::TcpStream, published: &Published) {
    let deadline = std::time::Instant::now() + ADMIN_DEADLINE;
    let left = || deadline.saturating_duration_since(std::time::Instant::now());
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let wait = left();
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", published.render()),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics or /healthz\n".to_string(),
        ),
    };
    let wait = left();
    if wait.is_zero() || stream.set_write_timeout(Some(wait)).is_err() {
        return;
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
