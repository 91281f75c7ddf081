//! When to fetch a site's OCSP response again, and whether a held staple
//! may still be served. Pure arithmetic on seconds, tested alone.

/// The shortest wait after a good fetch, unless `refresh` is shorter: a
/// responder that signs responses valid for seconds must not be polled in a
/// loop.
pub const MIN_REFRESH_SECS: u64 = 10;
/// The first retry after a failure; it doubles up to [`MAX_BACKOFF_SECS`].
pub const FIRST_BACKOFF_SECS: u64 = 5;
pub const MAX_BACKOFF_SECS: u64 = 300;

/// Seconds to wait after a verified response: half of what is left of its
/// validity (so a failed fetch has the other half to be retried in), at
/// most `refresh` (the configured `ocsp_refresh`, also the interval when the
/// response has no nextUpdate), at least [`MIN_REFRESH_SECS`].
pub fn after_success(now: u64, next_update: Option<u64>, refresh: u64) -> u64 {
    let refresh = refresh.max(1);
    let Some(next) = next_update else {
        return refresh;
    };
    let half = next.saturating_sub(now) / 2;
    half.clamp(MIN_REFRESH_SECS.min(refresh), refresh)
}

/// Seconds to wait after the `failures`-th failure in a row (1, 2, ...):
/// 5 s doubling to 5 minutes, never longer than `refresh`.
pub fn after_failure(failures: u32, refresh: u64) -> u64 {
    let shift = failures.saturating_sub(1).min(16);
    let backoff = FIRST_BACKOFF_SECS
        .saturating_mul(1u64 << shift)
        .min(MAX_BACKOFF_SECS);
    backoff.min(refresh.max(1))
}

/// A held response may be stapled until its nextUpdate; one without
/// nextUpdate until the leaf expires (a newer fetch replaces it sooner).
pub fn still_servable(now: u64, next_update: Option<u64>, leaf_not_after: u64) -> bool {
    now < next_update.unwrap_or(u64::MAX).min(leaf_not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_waits_half_the_remaining_validity_within_bounds() {
        // 7 days of validity left, refresh 1 h: the hour wins.
        assert_eq!(after_success(1000, Some(1000 + 7 * 86400), 3600), 3600);
        // 20 min left: 10 min.
        assert_eq!(after_success(1000, Some(1000 + 1200), 3600), 600);
        // 4 s left: the floor.
        assert_eq!(after_success(1000, Some(1004), 3600), MIN_REFRESH_SECS);
        // A refresh below the floor is honoured (tests, very short responses).
        assert_eq!(after_success(1000, Some(1004), 2), 2);
        // No nextUpdate: the configured interval.
        assert_eq!(after_success(1000, None, 3600), 3600);
        assert_eq!(after_success(1000, None, 0), 1);
        // Already past (cannot be verified so, but the arithmetic holds).
        assert_eq!(after_success(1000, Some(900), 3600), MIN_REFRESH_SECS);
    }

    #[test]
    fn failures_back_off_exponentially_and_stay_under_refresh() {
        let waits: Vec<u64> = (1..=9).map(|n| after_failure(n, 3600)).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(after_failure(1, 2), 2);
        assert_eq!(after_failure(u32::MAX, 3600), 300);
        assert_eq!(after_failure(0, 3600), 5);
    }

    #[test]
    fn a_staple_is_served_until_next_update_or_leaf_expiry() {
        assert!(still_servable(100, Some(101), 1000));
        assert!(!still_servable(101, Some(101), 1000));
        assert!(still_servable(100, None, 1000));
        assert!(!still_servable(1000, None, 1000));
        assert!(!still_servable(1000, Some(5000), 1000));
    }
}
