//! Certificate lifecycle around the config generations: what the gateway
//! holds and when it expires (`inventory`, read from the files a config
//! names into the pure `crate::expiry` types), and CRLs published by URL
//! (`crate::http_fetch` fetches one, bounded in time and size; `crl_check` decides,
//! without I/O, whether a fetched CRL may replace the kept one; `state`
//! keeps the last good copy on disk, written atomically). The threads that
//! use them (file watching, CRL refresh, daily warnings) live in
//! `crate::gateway`, beside the reload they trigger.

pub mod crl_check;
pub mod inventory;
pub mod state;

use std::time::Duration;

use crate::expiry::{Inventory, Standing};

/// Logs one warning per certificate expiring within `warn` (or expired) and
/// per CRL past or near its nextUpdate. Returns how many were logged.
pub fn log_concerns(inventory: &Inventory, warn: Duration) -> usize {
    let concerns = inventory.concerns(crate::expiry::now_unix(), warn);
    for c in &concerns {
        match c.standing {
            Standing::Expired => tracing::error!("certificate lifecycle: {}", c.message),
            _ => tracing::warn!(
                warn_expiry = %crate::expiry::duration_text(warn),
                "certificate lifecycle: {}",
                c.message
            ),
        }
    }
    concerns.len()
}

/// When to fetch a `crl_urls` CRL again: after `refresh`, or after a minute
/// (at most `refresh`) when the last fetch failed; sooner when the kept
/// copy's nextUpdate comes first (a second after it, so the new CRL is
/// out), but not sooner than 5 s; once a CRL is past its nextUpdate, every
/// minute (at most `refresh`) until its CA publishes the next one.
pub fn next_fetch_in(
    refresh: Duration,
    now: i64,
    next_update: Option<i64>,
    failed: bool,
) -> Duration {
    const RETRY: Duration = Duration::from_secs(60);
    const SOONEST: Duration = Duration::from_secs(5);
    let mut wait = if failed { refresh.min(RETRY) } else { refresh };
    match next_update {
        Some(next) if next >= now => {
            let until = Duration::from_secs(u64::try_from(next - now).unwrap_or(0) + 1);
            wait = wait.min(until.max(SOONEST));
        }
        Some(_) => wait = wait.min(RETRY),
        None => {}
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_schedule() {
        let h = Duration::from_secs(3600);
        let s = Duration::from_secs;
        assert_eq!(next_fetch_in(h, 1000, None, false), h);
        assert_eq!(next_fetch_in(h, 1000, None, true), s(60));
        assert_eq!(next_fetch_in(s(10), 1000, None, true), s(10));
        assert_eq!(next_fetch_in(h, 1000, Some(1000 + 600), false), s(601));
        assert_eq!(next_fetch_in(h, 1000, Some(1000 + 2), false), s(5));
        assert_eq!(next_fetch_in(h, 1000, Some(1000 + 7200), false), h);
        assert_eq!(
            next_fetch_in(h, 1000, Some(999), false),
            s(60),
            "stale: every minute"
        );
        assert_eq!(next_fetch_in(s(2), 1000, Some(999), false), s(2));
    }
}
