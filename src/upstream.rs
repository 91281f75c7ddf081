//! Per-core backend connection pools.
//!
//! Each worker owns one `Pool`; nothing in it is shared with another core, so
//! it needs no lock. Idle connections are kept per key, most recently used
//! first (the warmest socket, and the least likely to have been closed by the
//! backend's own idle timer).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::error::ProxyError;

/// Everything that makes a backend connection reusable for a request. Grows
/// with upstream TLS (identity, SNI) so differently-authenticated connections
/// are never mixed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct PoolKey {
    pub addr: SocketAddr,
}

pub struct BackendConn {
    pub stream: TcpStream,
    /// Read buffer for responses; reused for the life of the connection.
    pub buf: Vec<u8>,
    /// True when it came out of the pool: it may have been closed meanwhile.
    pub reused: bool,
}

#[derive(Default)]
pub struct PoolStats {
    pub hits: Cell<u64>,
    pub misses: Cell<u64>,
    pub connects: Cell<u64>,
}

pub struct Pool {
    idle: HashMap<PoolKey, Vec<(BackendConn, Instant)>>,
    max_idle_per_key: usize,
    idle_timeout: Duration,
    pub stats: PoolStats,
}

impl Pool {
    pub fn new(max_idle_per_key: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: HashMap::new(),
            max_idle_per_key,
            idle_timeout,
            stats: PoolStats::default(),
        }
    }

    pub fn checkout(&mut self, key: &PoolKey) -> Option<BackendConn> {
        let Some(list) = self.idle.get_mut(key) else {
            self.stats.misses.set(self.stats.misses.get() + 1);
            return None;
        };
        let now = Instant::now();
        while let Some((mut conn, since)) = list.pop() {
            if now.duration_since(since) < self.idle_timeout {
                conn.reused = true;
                self.stats.hits.set(self.stats.hits.get() + 1);
                return Some(conn);
            }
        }
        self.stats.misses.set(self.stats.misses.get() + 1);
        None
    }

    pub fn checkin(&mut self, key: PoolKey, mut conn: BackendConn) {
        if self.max_idle_per_key == 0 {
            return;
        }
        conn.buf.clear();
        let list = self.idle.entry(key).or_default();
        if list.len() >= self.max_idle_per_key {
            // Drop the coldest one: it is the likeliest to be closed soon anyway.
            list.remove(0);
        }
        list.push((conn, Instant::now()));
    }

    /// Drops connections idle longer than the idle timeout.
    pub fn evict_expired(&mut self) {
        let timeout = self.idle_timeout;
        let now = Instant::now();
        for list in self.idle.values_mut() {
            list.retain(|(_, since)| now.duration_since(*since) < timeout);
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

/// Opens a fresh connection to a backend within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<BackendConn, ProxyError> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(BackendConn {
                stream,
                buf: Vec::with_capacity(16 * 1024),
                reused: false,
            })
        }
        Ok(Err(e)) => Err(ProxyError::BackendConnect(e)),
        Err(_) => Err(ProxyError::BackendConnectTimeout),
    }
}
