//! A bounded per-core cache of client chains already verified, so that a
//! returning client skips webpki path building (ECDSA verification of every
//! certificate on its path, the largest part of a full handshake's cost).
//!
//! What it remembers, and why that is enough:
//! - **Key**: SHA-256 over the verifier's unique id and the chain exactly as
//!   the client sent it (end entity, then the intermediates in order, each
//!   prefixed by its length, the count first), so two chains never share a
//!   key by concatenation and a chain verified by one site, one config
//!   generation, or one set of CAs and CRLs is never found by another: each
//!   verifier is built per site per core per generation, and a reload (new
//!   CAs, new CRLs) builds new ones with new ids. An id is a counter, never
//!   an address that a later verifier could reuse.
//! - **Value**: the window in which every certificate on the verified path is
//!   within its validity (end entity, the intermediates used, and the trust
//!   anchor when its certificate is readable). A hit needs `now` inside it;
//!   otherwise the entry is dropped and the chain verified in full.
//! - Only successes are stored: a refusal always goes through the full check
//!   (its alert and its log line come from there), and a flood of bad chains
//!   cannot displace good ones. Everything else a success proved (the path to
//!   a CA, signatures, EKU clientAuth, both keyUsage rules, CRL status under
//!   this verifier's CRLs) depends only on the key, so a hit implies it.
//! - The CertificateVerify signature is not the verifier's chain check and
//!   never comes here: it is verified on every handshake.
//!
//! Per core, not shared: each worker thread has its own (`thread_local`),
//! taking no lock and touching no other core's memory; a client returning
//! to another core misses once there. Eviction is CLOCK (second chance): a
//! hit sets a bit, the hand clears bits until it finds an entry without one.
//! An entry starts without the bit, so a stream of one-time clients evicts
//! its own kind first and leaves returning clients in place.
//!
//! Memory: an entry is 56 bytes in the slot table (allocated as entries
//! come, never past the bound) plus at most ~40 in the index (17 bytes a
//! bucket, buckets at least 7/16 full), so under 100 bytes: 4,096 entries
//! (the default) take ~370 KB per core when full (229 KB of slots, 139 KB
//! of index). It grows only as that many distinct chains verify.

use std::cell::RefCell;
use std::collections::HashMap;

use rustls::pki_types::{CertificateDer, UnixTime};

use super::validity::Window;
use crate::metrics;

/// What a chain is cached under (see the module comment).
pub type ChainKey = [u8; 32];

/// The key of the chain `end_entity` + `intermediates` under verifier `id`.
pub fn chain_key(id: u64, end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> ChainKey {
    let mut h = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    h.update(&id.to_be_bytes());
    h.update(&(1 + intermediates.len() as u64).to_be_bytes());
    for cert in std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref())) {
        h.update(&(cert.len() as u64).to_be_bytes());
        h.update(cert);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(h.finish().as_ref());
    key
}

/// The bounded map itself, without the thread or the metrics: pure.
#[derive(Debug, Default)]
pub struct ChainCache {
    capacity: usize,
    /// The first 8 bytes of a key -> its slot. Two keys sharing them
    /// (2^-64 for any pair) share one slot: the later replaces the earlier,
    /// which costs a miss, never a wrong hit, since the slot holds the whole key.
    index: HashMap<u64, u32>,
    slots: Vec<Slot>,
    /// The CLOCK hand: the next slot considered for eviction.
    hand: usize,
}

#[derive(Debug)]
struct Slot {
    key: ChainKey,
    window: Window,
    /// Hit since the hand last passed.
    referenced: bool,
}

fn tag(key: &ChainKey) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key[..8]);
    u64::from_ne_bytes(first)
}

impl ChainCache {
    pub fn new(capacity: usize) -> Self {
        ChainCache {
            capacity,
            ..ChainCache::default()
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the bound (a reload may); returns how many entries were
    /// evicted to meet a smaller one. 0 empties the cache and frees its memory.
    pub fn set_capacity(&mut self, capacity: usize) -> usize {
        self.capacity = capacity;
        if capacity == 0 {
            let evicted = self.slots.len();
            *self = ChainCache::default();
            return evicted;
        }
        let mut evicted = 0;
        while self.slots.len() > capacity {
            let victim = self.victim();
            self.remove(victim);
            evicted += 1;
        }
        evicted
    }

    /// Whether `key` was verified and its window holds `now`. An entry whose
    /// window has passed (or not begun: a clock stepped back) is dropped.
    pub fn get(&mut self, key: &ChainKey, now: UnixTime) -> bool {
        let Some(&slot) = self.index.get(&tag(key)) else {
            return false;
        };
        let i = slot as usize;
        match self.slots.get_mut(i) {
            Some(s) if s.key == *key && s.window.contains(now) => {
                s.referenced = true;
                true
            }
            Some(s) if s.key == *key => {
                self.remove(i);
                false
            }
            _ => false,
        }
    }

    /// Remembers a verified chain; returns how many entries it evicted (0 or 1).
    pub fn insert(&mut self, key: ChainKey, window: Window) -> usize {
        if self.capacity == 0 {
            return 0;
        }
        let fresh = Slot {
            key,
            window,
            referenced: false,
        };
        if let Some(&slot) = self.index.get(&tag(&key)) {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                *s = fresh;
                return 0;
            }
        }
        let mut evicted = 0;
        if self.slots.len() >= self.capacity {
            let victim = self.victim();
            self.remove(victim);
            evicted = 1;
        }
        if self.slots.len() == self.slots.capacity() {
            // Grow by doubling, but never past the bound.
            let more = self
                .slots
                .len()
                .max(16)
                .min(self.capacity - self.slots.len());
            self.slots.reserve_exact(more);
        }
        let Ok(position) = u32::try_from(self.slots.len()) else {
            return evicted;
        };
        self.index.insert(tag(&key), position);
        self.slots.push(fresh);
        evicted
    }

    /// CLOCK: the first slot from the hand on that was not hit since the
    /// hand last passed it (clearing the bits it passes). Needs len > 0.
    fn victim(&mut self) -> usize {
        let len = self.slots.len();
        // Two turns at most: the first clears every bit.
        for _ in 0..2 * len {
            let i = self.hand % len;
            self.hand = (i + 1) % len;
            let slot = &mut self.slots[i];
            if !slot.referenced {
                return i;
            }
            slot.referenced = false;
        }
        self.hand % len
    }

    /// Drops slot `i`; the last slot moves into its place.
    fn remove(&mut self, i: usize) {
        let removed = self.slots.swap_remove(i);
        self.index.remove(&tag(&removed.key));
        if let Some(moved) = self.slots.get(i) {
            if let Ok(position) = u32::try_from(i) {
                self.index.insert(tag(&moved.key), position);
            }
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }
}

thread_local! {
    /// This worker's cache: rustls runs the verifier on the worker thread
    /// that drives the handshake, and nowhere else.
    static CACHE: RefCell<ChainCache> = RefCell::new(ChainCache::new(0));
}

/// On this thread, with `capacity` (the verifier's, from config): whether
/// `key` is a verified chain valid at `now`. Counts a hit or a miss.
pub fn lookup(capacity: usize, key: &ChainKey, now: UnixTime) -> bool {
    let hit = CACHE.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return false;
        };
        resize(&mut cache, capacity);
        let hit = cache.get(key, now);
        metrics::chain_cache_entries(cache.len());
        hit
    });
    if hit {
        metrics::chain_cache_hit();
    } else {
        metrics::chain_cache_miss();
    }
    hit
}

/// On this thread: remembers a chain that just verified, valid in `window`.
pub fn remember(capacity: usize, key: ChainKey, window: Window) {
    CACHE.with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return;
        };
        resize(&mut cache, capacity);
        let evicted = cache.insert(key, window);
        metrics::chain_cache_evicted(evicted as u64);
        metrics::chain_cache_entries(cache.len());
    });
}

/// The bound follows the newest verifier's config: a reload that changes
/// it applies on this core at its next handshake.
fn resize(cache: &mut ChainCache, capacity: usize) {
    if cache.capacity() != capacity {
        let evicted = cache.set_capacity(capacity);
        metrics::chain_cache_evicted(evicted as u64);
    }
}

/// A verifier with the cache off: empties this core's cache (its memory
/// goes back once a reload turned the cache off). Counts nothing else.
pub fn disable() {
    CACHE.with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            if cache.capacity() != 0 {
                resize(&mut cache, 0);
                metrics::chain_cache_entries(0);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(n: u32) -> ChainKey {
        chain_key(7, &n.to_be_bytes(), &[])
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    const ALWAYS: Window = Window {
        not_before: 0,
        not_after: u64::MAX,
    };

    #[test]
    fn keys_separate_verifiers_and_chain_boundaries() {
        let a = CertificateDer::from(vec![1u8, 2]);
        let b = CertificateDer::from(vec![3u8]);
        let base = chain_key(1, &[0], &[a.clone(), b.clone()]);
        assert_eq!(base, chain_key(1, &[0], &[a.clone(), b.clone()]));
        assert_ne!(
            base,
            chain_key(2, &[0], &[a.clone(), b.clone()]),
            "verifier"
        );
        // The same bytes cut differently: [0][1,2][3] vs [0,1][2][3] vs [0][1,2,3].
        assert_ne!(
            base,
            chain_key(1, &[0, 1], &[CertificateDer::from(vec![2u8]), b.clone()])
        );
        assert_ne!(
            base,
            chain_key(1, &[0], &[CertificateDer::from(vec![1u8, 2, 3])])
        );
        assert_ne!(base, chain_key(1, &[0], &[b, a]), "order");
    }

    #[test]
    fn a_hit_needs_the_key_and_the_window() {
        let mut c = ChainCache::new(8);
        let w = Window {
            not_before: 100,
            not_after: 200,
        };
        assert!(!c.get(&key(1), at(150)));
        assert_eq!(c.insert(key(1), w), 0);
        assert!(c.get(&key(1), at(150)));
        assert!(c.get(&key(1), at(200)));
        assert!(!c.get(&key(2), at(150)));
        // Past its window: a miss, and gone.
        assert!(!c.get(&key(1), at(201)));
        assert_eq!(c.len(), 0);
        assert!(!c.get(&key(1), at(150)));
        // Before it (a clock stepped back): the same.
        c.insert(key(1), w);
        assert!(!c.get(&key(1), at(99)));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_bound_holds_and_returning_clients_stay() {
        let mut c = ChainCache::new(4);
        for n in 0..4 {
            assert_eq!(c.insert(key(n), ALWAYS), 0);
        }
        // 0 and 1 return; then a stream of one-time clients.
        assert!(c.get(&key(0), at(1)) && c.get(&key(1), at(1)));
        let mut evicted = 0;
        for n in 100..150 {
            evicted += c.insert(key(n), ALWAYS);
            assert!(c.len() <= 4);
            // The returning clients keep coming back.
            assert!(c.get(&key(0), at(1)), "{n}");
            assert!(c.get(&key(1), at(1)), "{n}");
        }
        assert_eq!(evicted, 50);
        assert_eq!(c.len(), 4);
        assert!(c.get(&key(149), at(1)), "the newest one-time client is in");
        assert!(!c.get(&key(100), at(1)), "older one-time clients went");
        // Re-inserting a key already present replaces it in place.
        assert_eq!(c.insert(key(0), ALWAYS), 0);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn shrinking_evicts_and_zero_frees() {
        let mut c = ChainCache::new(10);
        for n in 0..10 {
            c.insert(key(n), ALWAYS);
        }
        assert!(c.get(&key(3), at(1)));
        assert_eq!(c.set_capacity(2), 8);
        assert_eq!(c.len(), 2);
        assert!(c.get(&key(3), at(1)), "the hit entry survives");
        // The index and the slots agree after all the moves.
        for n in 0..10 {
            let found = c.get(&key(n), at(1));
            assert_eq!(found, c.slots.iter().any(|s| s.key == key(n)), "{n}");
        }
        assert_eq!(c.set_capacity(0), 2);
        assert_eq!((c.len(), c.slots.capacity()), (0, 0));
        assert_eq!(c.insert(key(1), ALWAYS), 0);
        assert_eq!(c.len(), 0, "capacity 0 stores nothing");
    }

    #[test]
    fn memory_grows_with_use_never_past_the_bound() {
        let mut c = ChainCache::new(100);
        c.insert(key(0), ALWAYS);
        assert!(c.slots.capacity() <= 16);
        for n in 1..1000 {
            c.insert(key(n), ALWAYS);
        }
        assert_eq!(c.len(), 100);
        assert_eq!(c.slots.capacity(), 100);
        assert_eq!(c.index.len(), 100);
    }
}
