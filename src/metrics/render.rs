//! The admin endpoint's view: every worker's last snapshot merged and
//! rendered as Prometheus text, with OCSP stapling's state per site.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::{unreachable_histogram, HandshakeReason, ReloadTrigger, Snapshot, STATUS_SLOTS};
use crate::expiry::Inventory;
use crate::ocsp::Stapler;

/// One slot per worker; each written only by its worker, read by the admin thread.
pub struct Published {
    slots: Vec<Mutex<Option<Snapshot>>>,
    /// Route labels by metric slot; slot 0 is "none". Only grows: a route
    /// kept across a reload keeps its slot and its counts.
    route_labels: Mutex<Vec<String>>,
    /// The process's OCSP stapling registry: config loads register sites in
    /// it, its thread fetches, and the scrape reads its state. Here because
    /// this is the one object every config load and the admin thread share.
    ocsp: Arc<Stapler>,
    /// The serving generation's certificates and CRLs; the expiry gauges
    /// are computed from their stored dates at each scrape.
    inventory: Mutex<Arc<Inventory>>,
    /// Reloads by [`ReloadTrigger`], [refused, done].
    reloads: Mutex<[[u64; 2]; 3]>,
    /// Which config is served: written by the reloader or the cluster sync
    /// thread (never by a worker), read when scraped.
    pub config: ConfigStatus,
}

/// The served config's revision, when it was applied, and refused updates.
#[derive(Default)]
pub struct ConfigStatus {
    /// The etcd revision served; 0 for a config file.
    pub revision: AtomicU64,
    /// Unix seconds when the served config was applied.
    pub applied_unix: AtomicU64,
    /// Updates refused (invalid config, unreadable revision).
    pub update_failures: AtomicU64,
}

impl ConfigStatus {
    /// Records that `revision` (0 = a config file) is now served.
    pub fn applied(&self, revision: u64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.revision.store(revision, Ordering::Relaxed);
        self.applied_unix.store(now, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.update_failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Published {
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Published {
            slots: (0..workers).map(|_| Mutex::new(None)).collect(),
            route_labels: Mutex::new(vec!["none".to_string()]),
            ocsp: Arc::new(Stapler::default()),
            inventory: Mutex::new(Arc::new(Inventory::default())),
            reloads: Mutex::new([[0; 2]; 3]),
            config: ConfigStatus::default(),
        })
    }

    /// Publishes the certificates of the generation now serving.
    pub fn set_inventory(&self, inventory: Inventory) {
        let mut slot = match self.inventory.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(inventory);
    }

    /// The certificates of the generation now serving.
    pub fn inventory(&self) -> Arc<Inventory> {
        match self.inventory.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Counts one reload attempt (off the request path: reloads are rare).
    pub fn count_reload(&self, trigger: ReloadTrigger, done: bool) {
        let mut r = match self.reloads.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        r[trigger as usize][usize::from(done)] += 1;
    }

    /// OCSP stapling (see the field).
    pub fn ocsp(&self) -> &Arc<Stapler> {
        &self.ocsp
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
        let failures: Vec<(String, u64)> = HandshakeReason::ALL
            .iter()
            .enumerate()
            .map(|(i, reason)| {
                let n = snaps.iter().map(|s| s.handshake_failures[i]).sum();
                (format!("reason=\"{}\"", reason.label()), n)
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
            "portcullis_http2_connections_total",
            "Client connections that chose HTTP/2 by ALPN, by TLS mode.",
            &[
                (
                    "tls_mode=\"ktls\"".into(),
                    sum(|s| s.connections_http2_ktls),
                ),
                (
                    "tls_mode=\"userspace\"".into(),
                    sum(|s| s.connections_http2_userspace),
                ),
            ],
        );
        counter_family(
            &mut out,
            "portcullis_backend_pool_total",
            "Backend connection pool events.",
            &[
                ("event=\"hit\"".into(), sum(|s| s.pool.hits)),
                ("event=\"miss\"".into(), sum(|s| s.pool.misses)),
                ("event=\"connect\"".into(), sum(|s| s.pool.connects)),
                (
                    "event=\"discarded_dirty\"".into(),
                    sum(|s| s.pool.discarded_dirty),
                ),
            ],
        );
        counter_family(
            &mut out,
            "portcullis_verified_chain_cache_total",
            "Client certificate chains looked up in the per-core verified-chain cache (hit: path building skipped; miss: verified in full), and entries evicted to keep its bound.",
            &[
                ("event=\"hit\"".into(), sum(|s| s.chain_cache.hits)),
                ("event=\"miss\"".into(), sum(|s| s.chain_cache.misses)),
                (
                    "event=\"eviction\"".into(),
                    sum(|s| s.chain_cache.evictions),
                ),
            ],
        );
        gauge(
            &mut out,
            "portcullis_verified_chain_cache_entries",
            "Verified client chains cached now (all workers).",
            sum(|s| s.chain_cache.entries),
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

        let reloads = match self.reloads.lock() {
            Ok(g) => *g,
            Err(poisoned) => *poisoned.into_inner(),
        };
        let series: Vec<(String, u64)> = ReloadTrigger::ALL
            .iter()
            .flat_map(|t| {
                [("done", 1), ("refused", 0)].map(|(result, i)| {
                    (
                        format!("trigger=\"{}\",result=\"{result}\"", t.label()),
                        reloads[*t as usize][i],
                    )
                })
            })
            .collect();
        counter_family(
            &mut out,
            "portcullis_config_reloads_total",
            "Reloads of the config generation, by what asked for it (signal: SIGHUP; file_watch: a certificate, key or CRL file changed; crl_url: a CRL fetched by URL changed) and whether the new generation was swapped in (done) or refused (the previous one kept serving).",
            &series,
        );
        self.inventory()
            .render_metrics(crate::expiry::now_unix(), &mut out);

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
        render_ocsp(&mut out, &self.ocsp.status());
        gauge(
            &mut out,
            "portcullis_config_revision",
            "The etcd revision of the config served ([cluster]); 0 for a config file.",
            self.config.revision.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "portcullis_config_applied_timestamp_seconds",
            "Unix time when the config served was applied (start, reload, or cluster update).",
            self.config.applied_unix.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_config_update_failures_total Config updates refused (invalid, or unreadable); the previous config is still served.\n# TYPE portcullis_config_update_failures_total counter\nportcullis_config_update_failures_total {}",
            self.config.update_failures.load(Ordering::Relaxed)
        );
        out
    }
}

/// The OCSP stapling lines, per site: what is stapled, how old it is, when
/// it expires, how fetches went (read from the stapling thread's registry
/// at scrape time, not from the workers' snapshots).
fn render_ocsp(out: &mut String, sites: &[crate::ocsp::SiteStatus]) {
    if sites.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    out.push_str("# HELP portcullis_ocsp_staple_status The OCSP response stapled now, per site (1 for the current state: good, revoked or none).\n# TYPE portcullis_ocsp_staple_status gauge\n");
    for s in sites {
        for state in ["good", "revoked", "none"] {
            let _ = writeln!(
                out,
                "portcullis_ocsp_staple_status{{site=\"{}\",status=\"{state}\"}} {}",
                escape(&s.site),
                u8::from(s.stapled == state)
            );
        }
    }
    out.push_str("# HELP portcullis_ocsp_staple_age_seconds Seconds since the stapled response's thisUpdate.\n# TYPE portcullis_ocsp_staple_age_seconds gauge\n");
    for s in sites {
        if let Some(t) = s.this_update {
            let _ = writeln!(
                out,
                "portcullis_ocsp_staple_age_seconds{{site=\"{}\"}} {}",
                escape(&s.site),
                now as i64 - t as i64
            );
        }
    }
    out.push_str("# HELP portcullis_ocsp_staple_next_update_timestamp_seconds The stapled response's nextUpdate (Unix time).\n# TYPE portcullis_ocsp_staple_next_update_timestamp_seconds gauge\n");
    for s in sites {
        if let Some(t) = s.next_update {
            let _ = writeln!(
                out,
                "portcullis_ocsp_staple_next_update_timestamp_seconds{{site=\"{}\"}} {t}",
                escape(&s.site)
            );
        }
    }
    out.push_str("# HELP portcullis_ocsp_fetches_total OCSP fetches per site: ok (verified and stapled) or failed (no answer, not verified, or status unknown).\n# TYPE portcullis_ocsp_fetches_total counter\n");
    for s in sites {
        for (result, n) in [("ok", s.fetched), ("failed", s.failed)] {
            let _ = writeln!(
                out,
                "portcullis_ocsp_fetches_total{{site=\"{}\",responder=\"{}\",result=\"{result}\"}} {n}",
                escape(&s.site),
                escape(&s.url)
            );
        }
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
