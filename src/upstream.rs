//! Per-core backend connection pools.
//!
//! Each worker owns one `Pool`; nothing in it is shared with another core, so
//! it needs no lock. Idle connections are kept per key, most recently used
//! first (the warmest socket, and the least likely to have been closed by the
//! backend's own idle timer).

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::error::{Cause, Error, Kind};
use crate::io::Transport;
use crate::tls::client::{TlsClientStream, UpstreamTlsError};

/// Everything that makes a backend connection reusable for a request, by
/// content: the address, and for TLS a digest of everything the connection
/// was authenticated with (server name, whether it was verified, the CA set,
/// the client certificate). Differently-authenticated connections are never
/// mixed, and a reload that changes nothing about a backend keeps its pool.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub tls: Option<[u8; 32]>,
}

/// A backend connection: plain TCP (which body splicing can use) or TLS.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsClientStream>),
}

impl BackendStream {
    /// The socket to splice into or from, when bytes on it are plaintext.
    pub fn plain_tcp(&mut self) -> Option<&mut TcpStream> {
        match self {
            BackendStream::Plain(tcp) => Some(tcp),
            BackendStream::Tls(_) => None,
        }
    }

    /// Whether an idle connection is exactly as clean as when it was pooled:
    /// nothing readable (not a byte, not an EOF) in the socket or in the TLS
    /// buffers. Anything else came from the backend after its last response
    /// ended (a body on a HEAD, 204 or 304, a body longer than announced, an
    /// answer to a request smuggled in the previous body) and would be read
    /// as the next client's response.
    pub fn is_idle_clean(&mut self) -> bool {
        match self {
            BackendStream::Plain(tcp) => crate::sock::peek_idle(tcp) == crate::sock::Idle::Quiet,
            BackendStream::Tls(s) => s.is_idle_clean(),
        }
    }

    /// Why TLS with the backend failed, after a read failed for that reason.
    pub fn tls_failure(&self) -> Option<&str> {
        match self {
            BackendStream::Plain(_) => None,
            BackendStream::Tls(s) => s.tls_failure(),
        }
    }

    /// For a body delimited by the connection's end: whether that end was
    /// clean. A TLS backend must have sent close_notify; without it the
    /// body may have been truncated by anyone on the path.
    pub fn ended_cleanly(&self) -> bool {
        match self {
            BackendStream::Plain(_) => true,
            BackendStream::Tls(s) => s.received_close_notify(),
        }
    }
}

impl Transport for BackendStream {
    async fn read_append(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            BackendStream::Plain(s) => s.read_append(buf).await,
            BackendStream::Tls(s) => s.read_append(buf).await,
        }
    }

    async fn write_range(
        &mut self,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        match self {
            BackendStream::Plain(s) => s.write_range(buf, range).await,
            BackendStream::Tls(s) => s.write_range(buf, range).await,
        }
    }

    async fn close(&mut self) {
        match self {
            BackendStream::Plain(s) => s.close().await,
            BackendStream::Tls(s) => s.close().await,
        }
    }

    fn abort(&mut self) {
        match self {
            BackendStream::Plain(s) => s.abort(),
            BackendStream::Tls(s) => s.abort(),
        }
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        match self {
            BackendStream::Plain(s) => s.wait_readable().await,
            BackendStream::Tls(s) => s.wait_readable().await,
        }
    }
}

/// A backend connection's read buffer: one ordinary read (`io::MIN_READ`).
const BACKEND_BUF_CAPACITY: usize = crate::io::MIN_READ;

pub struct BackendConn {
    pub stream: BackendStream,
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
    /// Idle connections found holding bytes (or closed) at checkout: closed, never used.
    pub discarded_dirty: Cell<u64>,
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
            if now.duration_since(since) >= self.idle_timeout {
                continue;
            }
            if !conn.stream.is_idle_clean() {
                self.stats
                    .discarded_dirty
                    .set(self.stats.discarded_dirty.get() + 1);
                continue;
            }
            conn.reused = true;
            self.stats.hits.set(self.stats.hits.get() + 1);
            return Some(conn);
        }
        self.stats.misses.set(self.stats.misses.get() + 1);
        None
    }

    pub fn checkin(&mut self, key: PoolKey, mut conn: BackendConn) {
        if self.max_idle_per_key == 0 {
            return;
        }
        conn.buf.clear();
        if conn.buf.capacity() > BACKEND_BUF_CAPACITY {
            // A bulk response grew it (`proxy::forward`): an idle pooled
            // connection keeps only the ordinary size; the big one goes back
            // to the core's pool for the next bulk response.
            crate::io::give_buffer(std::mem::replace(
                &mut conn.buf,
                Vec::with_capacity(BACKEND_BUF_CAPACITY),
            ));
        }
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

    /// The pool's events so far, for the worker's metrics snapshot.
    pub fn counts(&self) -> crate::metrics::PoolCounts {
        crate::metrics::PoolCounts {
            hits: self.stats.hits.get(),
            misses: self.stats.misses.get(),
            connects: self.stats.connects.get(),
            discarded_dirty: self.stats.discarded_dirty.get(),
        }
    }

    pub fn idle_count(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

/// Why a read or write on a backend connection did not complete.
#[derive(Debug)]
pub enum BackendIo {
    Failed(io::Error),
    TimedOut,
}

impl BackendIo {
    /// As an error: a timeout is the backend's slowness (504); a failure gets
    /// its kind (TLS or reset) here and its retry verdict from `broke` (the
    /// exchange's `backend_broke`, which knows how far the request got).
    pub fn into_error(
        self,
        tls_failure: Option<&str>,
        broke: impl FnOnce(Kind, Cause) -> Error,
    ) -> Error {
        match self {
            BackendIo::TimedOut => Error::new(Kind::BackendTimeout),
            // e.g. a TLS 1.3 backend refusing our certificate after the handshake.
            BackendIo::Failed(_) if tls_failure.is_some() => broke(
                Kind::BackendTls,
                Cause::BackendTls(tls_failure.unwrap_or_default().to_string()),
            ),
            BackendIo::Failed(e) => broke(Kind::BackendReset, Cause::Io(e)),
        }
    }
}

impl BackendConn {
    /// Reads more from the backend into `buf` within `wait`: Ok(false) at EOF.
    /// (On a timeout the read's buffer is lost with the cancelled read; the
    /// connection is never used again then.)
    pub async fn read_more(&mut self, wait: Duration) -> Result<bool, BackendIo> {
        let buf = std::mem::take(&mut self.buf);
        match monoio::time::timeout(wait, self.stream.read_append(buf)).await {
            Ok((res, buf)) => {
                self.buf = buf;
                match res {
                    Ok(0) => Ok(false),
                    Ok(_) => Ok(true),
                    Err(e) => Err(BackendIo::Failed(e)),
                }
            }
            Err(_) => Err(BackendIo::TimedOut),
        }
    }

    /// Writes `buf[range]` within `timeout` (a backend that stops reading our
    /// request is as stuck as one that never answers); the buffer comes back.
    pub async fn write_within(
        &mut self,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
        timeout: Duration,
    ) -> (Result<(), BackendIo>, Vec<u8>) {
        match monoio::time::timeout(timeout, self.stream.write_range(buf, range)).await {
            Ok((Ok(()), buf)) => (Ok(()), buf),
            Ok((Err(e), buf)) => (Err(BackendIo::Failed(e)), buf),
            Err(_) => (Err(BackendIo::TimedOut), Vec::new()),
        }
    }
}

/// A backend connection for `addr`: a clean pooled one, or a new one.
pub async fn checkout_or_connect(
    pool: &std::cell::RefCell<Pool>,
    addr: SocketAddr,
    tls: Option<&crate::generation::UpstreamClient>,
    connect_timeout: Duration,
) -> Result<BackendConn, Error> {
    let key = PoolKey {
        addr,
        tls: tls.map(|t| t.identity),
    };
    if let Some(b) = pool.borrow_mut().checkout(&key) {
        return Ok(b);
    }
    {
        let pool = pool.borrow();
        pool.stats.connects.set(pool.stats.connects.get() + 1);
    }
    connect(
        addr,
        tls.map(|t| (t.config.clone(), t.server_name.clone())),
        connect_timeout,
    )
    .await
}

/// Opens a fresh connection to a backend, TLS handshake included, within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    timeout: Duration,
) -> Result<BackendConn, Error> {
    let deadline = Instant::now() + timeout;
    let tcp = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(Error::with_cause(Kind::BackendConnect, Cause::Io(e))),
        Err(_) => return Err(Error::new(Kind::BackendConnectTimeout)),
    };
    let _ = tcp.set_nodelay(true);
    let stream = match tls {
        None => BackendStream::Plain(tcp),
        Some((config, name)) => {
            let left = deadline.saturating_duration_since(Instant::now());
            match monoio::time::timeout(left, TlsClientStream::connect(tcp, config, name)).await {
                Ok(Ok(s)) => BackendStream::Tls(Box::new(s)),
                Ok(Err(UpstreamTlsError::Tls(why))) => {
                    return Err(Error::with_cause(Kind::BackendTls, Cause::BackendTls(why)))
                }
                Ok(Err(UpstreamTlsError::Io(e))) => {
                    return Err(Error::with_cause(Kind::BackendConnect, Cause::Io(e)))
                }
                Err(_) => return Err(Error::new(Kind::BackendConnectTimeout)),
            }
        }
    };
    Ok(BackendConn {
        stream,
        buf: Vec::with_capacity(BACKEND_BUF_CAPACITY),
        reused: false,
    })
}
