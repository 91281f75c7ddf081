//! The deadline of one request body: a base time, extended as bytes arrive.
//!
//! A per-read idle timeout alone lets a client send a body at one byte a
//! second for as long as it likes, holding a backend connection and a task.
//! A total deadline alone cuts off honest slow uploads of large bodies. So
//! (like Apache's mod_reqtimeout) the body gets `base` to arrive, plus one
//! second for every `min_rate` bytes received: a steady upload at or above
//! the rate never runs out, a trickle does. Pure: time is passed in.

use std::time::{Duration, Instant};

use crate::config::BodyDeadline;

#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyClock {
    deadline: Instant,
    min_rate: u64,
}

impl BodyClock {
    pub fn start(now: Instant, d: BodyDeadline) -> BodyClock {
        BodyClock {
            deadline: now + d.base,
            min_rate: d.min_rate.max(1),
        }
    }

    /// `n` more body bytes arrived: each `min_rate` of them buys a second.
    pub fn received(&mut self, n: u64) {
        let nanos = u128::from(n) * 1_000_000_000 / u128::from(self.min_rate);
        let extra = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.deadline = self.deadline.checked_add(extra).unwrap_or(self.deadline);
    }

    /// The deadline if all of `n` remaining bytes arrived at the minimum
    /// rate: for a body moved in one go (spliced) that cannot report progress.
    pub fn deadline_for(&self, n: u64) -> Instant {
        let mut c = *self;
        c.received(n);
        c.deadline
    }

    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: BodyDeadline = BodyDeadline {
        base: Duration::from_secs(30),
        min_rate: 1000,
    };

    #[test]
    fn the_base_time_runs_out_without_bytes() {
        let t0 = Instant::now();
        let c = BodyClock::start(t0, D);
        assert_eq!(c.remaining(t0), Duration::from_secs(30));
        assert!(!c.expired(t0 + Duration::from_secs(29)));
        assert!(c.expired(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn each_min_rate_bytes_buy_a_second_even_in_small_pieces() {
        let t0 = Instant::now();
        let mut c = BodyClock::start(t0, D);
        for _ in 0..4 {
            c.received(250);
        }
        assert_eq!(c.remaining(t0), Duration::from_secs(31));
        c.received(10_000);
        assert_eq!(c.remaining(t0), Duration::from_secs(41));
    }

    #[test]
    fn a_trickle_runs_out_and_a_steady_upload_does_not() {
        let t0 = Instant::now();
        // One byte a second for a minute.
        let mut trickle = BodyClock::start(t0, D);
        let mut cut_at = None;
        for s in 1..=60u64 {
            let now = t0 + Duration::from_secs(s);
            if trickle.expired(now) {
                cut_at = Some(s);
                break;
            }
            trickle.received(1);
        }
        assert_eq!(cut_at, Some(31));
        // 2,000 bytes a second for ten minutes.
        let mut steady = BodyClock::start(t0, D);
        for s in 1..=600u64 {
            steady.received(2_000);
            assert!(!steady.expired(t0 + Duration::from_secs(s)));
        }
    }

    #[test]
    fn deadline_for_a_known_length_does_not_move_the_clock() {
        let t0 = Instant::now();
        let c = BodyClock::start(t0, D);
        assert_eq!(c.deadline_for(5_000), t0 + Duration::from_secs(35));
        assert_eq!(c.remaining(t0), Duration::from_secs(30));
        let huge = c.deadline_for(u64::MAX);
        assert!(huge > t0);
    }
}
