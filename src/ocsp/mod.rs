//! OCSP stapling for the gateway's own certificates (sites and listeners
//! with `ocsp_stapling = "on"`). One std thread per process, never a worker,
//! fetches each certificate's status from its responder (`request`, `fetch`),
//! checks it (`verify`), and publishes the response for the handshakes to
//! staple (`tls::staple` reads it). A handshake never waits for it: without
//! a response in hand it goes out without a staple.
//!
//! Registrations are keyed by site, certificate, issuer and URL, so a reload
//! that keeps a site's certificate keeps its entry and the response in hand;
//! the registry holds entries weakly and forgets those no generation uses.
//!
//! What is stapled: a verified response whose status is `good` or `revoked`
//! (a revoked certificate is stapled as such, and the good response held
//! before is dropped at once: the staple exists to tell clients the status,
//! and hiding a revocation would defeat it). `unknown`, an unverifiable
//! response or a failed fetch keep the response in hand until its
//! nextUpdate, and are logged and counted.

pub mod fetch;
pub mod request;
pub mod schedule;
pub mod url;
pub mod verify;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::SignatureVerificationAlgorithm;

use request::CertPair;
use url::HttpUrl;
use verify::{Status, Verified};

/// What a site asks of stapling (from its config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// `ocsp_url`: overrides the certificate's AIA responder.
    pub url: Option<HttpUrl>,
    /// `ocsp_refresh`: the longest wait between fetches.
    pub refresh: Duration,
}

/// One certificate being stapled: what the handshakes read, and what the
/// stapling thread keeps about it.
pub struct Staple {
    pub site: String,
    pub url: HttpUrl,
    key: [u8; 32],
    pair: CertPair,
    request: Vec<u8>,
    refresh: Duration,
    /// Bumped at every change of `response`; readers compare it first.
    version: AtomicU64,
    response: Mutex<Option<Arc<Vec<u8>>>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_attempt: Option<Instant>,
    failures_in_row: u32,
    fetched: u64,
    failed: u64,
    /// The response being stapled, as verified.
    held: Option<Verified>,
}

impl Staple {
    /// The change counter of [`Staple::response`]: a per-core reader keeps
    /// the response it built its key from until this moves.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The DER response to staple now, if any.
    pub fn response(&self) -> Option<Arc<Vec<u8>>> {
        lock(&self.response).clone()
    }

    fn publish(&self, response: Option<Arc<Vec<u8>>>) {
        *lock(&self.response) = response;
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The process's stapling registry and its thread.
pub struct Stapler {
    entries: Mutex<Vec<Weak<Staple>>>,
    started: AtomicBool,
    algs: &'static [&'static dyn SignatureVerificationAlgorithm],
    limits: fetch::Limits,
}

/// One site's stapling state, for `/metrics`.
#[derive(Clone, Debug)]
pub struct SiteStatus {
    pub site: String,
    pub url: String,
    /// "good", "revoked" or "none" (nothing stapled).
    pub stapled: &'static str,
    pub this_update: Option<u64>,
    pub next_update: Option<u64>,
    pub fetched: u64,
    pub failed: u64,
}

impl Default for Stapler {
    fn default() -> Self {
        Stapler {
            entries: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
            algs: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .all,
            limits: fetch::DEFAULT_LIMITS,
        }
    }
}

impl Stapler {
    /// Registers (or finds, when a reload kept it) the stapling of `chain`'s
    /// leaf for `site`. Fails when the chain lacks the issuer or no
    /// responder is known: the config asked for stapling, so that is an error
    /// at start and reload, not a silent no-op.
    pub fn register(
        &self,
        site: &str,
        chain: &[&[u8]],
        want: &Want,
    ) -> Result<Arc<Staple>, String> {
        let pair = request::cert_pair(chain)?;
        let url = match (&want.url, &pair.aia_ocsp_url) {
            (Some(u), _) => u.clone(),
            (None, Some(aia)) => url::parse(aia).map_err(|e| {
                format!("the certificate's OCSP responder (Authority Information Access) {e}; set ocsp_url")
            })?,
            (None, None) => {
                return Err("on, but the certificate names no OCSP responder (no Authority Information Access OCSP URL); set ocsp_url".into())
            }
        };
        let request = pair.request_der()?;
        let key = {
            let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            for part in [
                site.as_bytes(),
                &pair.leaf_der,
                &pair.issuer_der,
                url.text.as_bytes(),
            ] {
                h.update(&(part.len() as u64).to_be_bytes());
                h.update(part);
            }
            h.update(&want.refresh.as_millis().to_be_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(h.finish().as_ref());
            k
        };
        let mut entries = lock(&self.entries);
        entries.retain(|w| w.strong_count() > 0);
        // Latest registration last: `status` reports, per site, the entry
        // the newest generation uses.
        if let Some(i) = entries
            .iter()
            .position(|w| w.upgrade().is_some_and(|e| e.key == key))
        {
            let w = entries.remove(i);
            if let Some(existing) = w.upgrade() {
                entries.push(w);
                return Ok(existing);
            }
        }
        let staple = Arc::new(Staple {
            site: site.to_string(),
            url,
            key,
            pair,
            request,
            refresh: want.refresh,
            version: AtomicU64::new(0),
            response: Mutex::new(None),
            state: Mutex::new(State::default()),
        });
        entries.push(Arc::downgrade(&staple));
        Ok(staple)
    }

    /// Starts the stapling thread once some site is registered (once;
    /// later calls do nothing). `portcullis check` loads configs without
    /// calling it, so checking a config never contacts a responder.
    pub fn start_if_needed(self: &Arc<Self>) -> std::io::Result<()> {
        if self.live().is_empty() || self.started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let me = self.clone();
        std::thread::Builder::new()
            .name("portcullis-ocsp".into())
            .spawn(move || loop {
                let wait = me.tick();
                std::thread::sleep(wait);
            })
            .map(|_| ())
    }

    fn live(&self) -> Vec<Arc<Staple>> {
        let mut entries = lock(&self.entries);
        entries.retain(|w| w.strong_count() > 0);
        entries.iter().filter_map(Weak::upgrade).collect()
    }

    /// One pass: fetch what is due, drop what expired. Returns how long to
    /// sleep (at most a second, so a reload's new sites start promptly).
    pub fn tick(&self) -> Duration {
        let mut wait = Duration::from_secs(1);
        for staple in self.live() {
            let now = Instant::now();
            let due = lock(&staple.state).next_attempt.is_none_or(|t| t <= now);
            if due {
                self.refresh(&staple);
            }
            self.expire(&staple);
            if let Some(t) = lock(&staple.state).next_attempt {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
        }
        wait.max(Duration::from_millis(50))
    }

    /// Fetches, verifies and (when it should be stapled) publishes one response.
    fn refresh(&self, staple: &Staple) {
        let refresh = staple.refresh.as_secs().max(1);
        let result = fetch::post(&staple.url, &staple.request, self.limits).and_then(|body| {
            verify::verify(&body, &staple.pair, unix_now(), self.algs).map(|v| (body, v))
        });
        let now = unix_now();
        let mut state = lock(&staple.state);
        match result {
            Ok((body, verified)) if verified.status != Status::Unknown => {
                state.fetched += 1;
                state.failures_in_row = 0;
                let wait = schedule::after_success(now, verified.next_update, refresh);
                state.next_attempt = Some(Instant::now() + Duration::from_secs(wait));
                match verified.status {
                    Status::Revoked { at } => tracing::error!(
                        site = %staple.site,
                        responder = %staple.url,
                        revoked_at = at,
                        "OCSP: the responder says the site's certificate is REVOKED; stapling the revoked response (clients that check it will refuse the certificate): replace the certificate"
                    ),
                    _ => {
                        let changed =
                            state.held.as_ref().map(|h| &h.status) != Some(&verified.status);
                        let line = format!(
                            "OCSP response stapled: status {} (signed by {}), thisUpdate {}, nextUpdate {}; next fetch in {wait}s",
                            verified.status.label(),
                            verified.signer,
                            verified.this_update,
                            verified
                                .next_update
                                .map_or("none".to_string(), |n| n.to_string()),
                        );
                        if changed {
                            tracing::info!(site = %staple.site, responder = %staple.url, "{line}");
                        } else {
                            tracing::debug!(site = %staple.site, responder = %staple.url, "{line}");
                        }
                    }
                }
                state.held = Some(verified);
                drop(state);
                staple.publish(Some(Arc::new(body)));
            }
            other => {
                let why = match other {
                    Ok(_) => {
                        "the responder does not know this certificate (status unknown)".to_string()
                    }
                    Err(e) => e,
                };
                state.failed += 1;
                state.failures_in_row = state.failures_in_row.saturating_add(1);
                let wait = schedule::after_failure(state.failures_in_row, refresh);
                state.next_attempt = Some(Instant::now() + Duration::from_secs(wait));
                let keeping = match &state.held {
                    Some(h) => format!(
                        "keeping the {} response from thisUpdate {} until its nextUpdate",
                        h.status.label(),
                        h.this_update
                    ),
                    None => "handshakes go out without a staple".to_string(),
                };
                tracing::warn!(
                    site = %staple.site,
                    responder = %staple.url,
                    failures = state.failures_in_row,
                    "OCSP fetch failed: {why}; {keeping}; retrying in {wait}s"
                );
            }
        }
    }

    /// Stops stapling a response past its nextUpdate (or the leaf's expiry).
    fn expire(&self, staple: &Staple) {
        let mut state = lock(&staple.state);
        let Some(held) = &state.held else { return };
        if schedule::still_servable(unix_now(), held.next_update, staple.pair.leaf_not_after) {
            return;
        }
        tracing::warn!(site = %staple.site, responder = %staple.url, "OCSP response expired without a fresh one: stapling stopped until a fetch succeeds");
        state.held = None;
        drop(state);
        staple.publish(None);
    }

    /// Every site's stapling state (for `/metrics`): per site the entry
    /// registered last, i.e. the one the newest generation staples (an
    /// older generation's entry lives on while its connections do).
    pub fn status(&self) -> Vec<SiteStatus> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<SiteStatus> = self
            .live()
            .iter()
            .rev()
            .filter(|s| seen.insert(s.site.clone()))
            .map(|s| {
                let state = lock(&s.state);
                SiteStatus {
                    site: s.site.clone(),
                    url: s.url.text.clone(),
                    stapled: state.held.as_ref().map_or("none", |h| h.status.label()),
                    this_update: state.held.as_ref().map(|h| h.this_update),
                    next_update: state.held.as_ref().and_then(|h| h.next_update),
                    fetched: state.fetched,
                    failed: state.failed,
                }
            })
            .collect();
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
