//! CRLs by URL (`crl_urls`): fetched once at start (before the first
//! generation loads, so a reachable URL is current from the first
//! handshake), then on their own thread on a schedule (`[tls] crl_refresh`,
//! sooner when a CRL's nextUpdate comes first; `lifecycle::next_fetch_in`).
//! Each fetch is bounded in time and size (`http_fetch`); a CRL
//! that does not parse, is not signed by one of the site's client CAs, or
//! is older than the kept copy is refused with a log line and the kept copy
//! stays (`lifecycle::crl_check`). A new CRL replaces the kept copy in
//! `[state] dir` atomically and triggers the same whole-generation reload
//! as SIGHUP. When a URL is down, the kept copy is what is served, at start
//! too; with no kept copy, the site cannot load (the gateway refuses to
//! start, a reload is refused): a client CA with a CRL is never served as if
//! it had none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::{Config, CrlUrl, SiteConfig};
use crate::expiry::{describe_crl, now_unix};
use crate::lifecycle::{crl_check, next_fetch_in, state};
use crate::metrics::ReloadTrigger;
use crate::tls::material;

use super::reload::Reloader;

/// Longest one fetch may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest CRL accepted (a CA revoking ~400k certificates).
const MAX_CRL_BYTES: usize = 16 * 1024 * 1024;

enum Outcome {
    /// The same bytes as the kept copy.
    Unchanged,
    /// A new CRL, now the kept copy.
    Replaced,
}

/// Fetches every `crl_urls` CRL once, before the first generation loads.
/// Failures are logged; the kept copy (if any) is then what loads.
pub(super) fn fetch_at_start(config: &Config) -> Result<(), String> {
    let Some(dir) = &config.state_dir else {
        return Ok(());
    };
    if config.sites.iter().all(|s| s.crl_urls.is_empty()) {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("[state] dir {}: cannot create: {e}", dir.display()))?;
    for site in &config.sites {
        for url in &site.crl_urls {
            match fetch(config, site, url) {
                Ok(_) => info!(site = %site.name, url = %url, "CRL fetched"),
                Err(why) => {
                    let copy = state::crl_copy_path(dir, url);
                    if copy.exists() {
                        warn!(site = %site.name, url = %url, copy = %copy.display(), reason = %why, "CRL fetch failed at start; using the copy kept on disk");
                    } else {
                        tracing::error!(site = %site.name, url = %url, reason = %why, "CRL fetch failed at start and no copy is kept on disk");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Starts the refresh thread.
pub(super) fn spawn(reloader: Arc<Reloader>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("crl-refresh".into())
        .spawn(move || refresh(&reloader))
        .map(|_| ())
}

fn refresh(reloader: &Reloader) {
    // When each (site, URL) is due next.
    let mut due: HashMap<(String, String), Instant> = HashMap::new();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let config = reloader.applied();
        let Some(dir) = &config.state_dir else {
            continue;
        };
        let mut replaced = Vec::new();
        for site in &config.sites {
            for url in &site.crl_urls {
                let key = (site.name.clone(), url.text.clone());
                let copy = state::crl_copy_path(dir, url);
                let now = Instant::now();
                let at = *due.entry(key.clone()).or_insert_with(|| {
                    // First sight (start, or a reload that added it): the
                    // kept copy is current as of the start-up fetch.
                    now + next_fetch_in(
                        config.tls.crl_refresh,
                        now_unix(),
                        kept_next_update(&copy),
                        false,
                    )
                });
                if now < at {
                    continue;
                }
                let failed = match fetch(&config, site, url) {
                    Ok(Outcome::Unchanged) => {
                        debug!(site = %site.name, url = %url, "CRL fetched: unchanged");
                        false
                    }
                    Ok(Outcome::Replaced) => {
                        info!(site = %site.name, url = %url, "CRL fetched: a new CRL, kept on disk; reloading");
                        replaced.push(url.text.clone());
                        false
                    }
                    Err(why) => {
                        warn!(site = %site.name, url = %url, reason = %why, "CRL fetch failed; keeping the last good copy");
                        true
                    }
                };
                let wait = next_fetch_in(
                    config.tls.crl_refresh,
                    now_unix(),
                    kept_next_update(&copy),
                    failed,
                );
                due.insert(key, Instant::now() + wait);
            }
        }
        if !replaced.is_empty() {
            replaced.dedup();
            reloader.reload(
                ReloadTrigger::CrlUrl,
                &format!("new CRL from {}", replaced.join(", ")),
            );
        }
    }
}

/// The earliest nextUpdate in the kept copy, if it has one.
fn kept_next_update(copy: &std::path::Path) -> Option<i64> {
    let crls = material::load_crls(&[copy.to_path_buf()]).ok()?;
    crls.iter()
        .filter_map(|c| describe_crl(c.as_ref()).ok())
        .filter_map(|(_, _, next)| next)
        .min()
}

/// One fetch: refused (the kept copy stays) or kept, atomically.
fn fetch(config: &Config, site: &SiteConfig, url: &CrlUrl) -> Result<Outcome, String> {
    let dir = config
        .state_dir
        .as_ref()
        .ok_or("crl_urls without [state] dir")?;
    let copy = state::crl_copy_path(dir, url);
    let body = crate::http_fetch::get(
        &url.host,
        url.port,
        &url.path,
        "application/pkix-crl, */*",
        FETCH_TIMEOUT,
        MAX_CRL_BYTES,
    )?;
    let kept = std::fs::read(&copy).ok();
    if kept.as_deref() == Some(&body[..]) {
        return Ok(Outcome::Unchanged);
    }
    let cas = material::load_ca_bundle(&site.client_ca).map_err(|e| e.to_string())?;
    crl_check::check_fetched(&body, &cas, kept.as_deref()).map_err(|e| format!("refused: {e}"))?;
    state::write_atomically(&copy, &body)
        .map_err(|e| format!("cannot keep it in {}: {e}", copy.display()))?;
    Ok(Outcome::Replaced)
}
