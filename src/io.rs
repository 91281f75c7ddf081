//! The byte-stream seam between the proxy and its two sides.
//!
//! The proxy is written once against [`Transport`]; the client side is a
//! userspace-TLS stream today and a plain kernel-TLS socket tomorrow, the
//! backend side a plain TCP socket. Buffers are owned and passed through the
//! I/O call and back (monoio's completion model), so one buffer per
//! connection is reused for its whole life.

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::Poll;

use monoio::buf::IoBufMut;
use monoio::io::poll_io::{AsyncRead, ReadBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::CertificateDer;

/// Smallest free space a read asks the kernel to fill: below this, the read
/// buffer grows once (and keeps its capacity for the rest of the connection).
pub const MIN_READ: usize = 16 * 1024;

/// How long a closing connection may take to send its last bytes
/// (close_notify, an alert) before it is dropped anyway.
pub const CLOSE_FLUSH_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// A bidirectional byte stream with ownership-passing buffers.
#[allow(async_fn_in_trait)] // single-threaded runtime: futures need not be Send
pub trait Transport {
    /// Reads once, appending to `buf` past its current length. Ok(0) is EOF.
    async fn read_append(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>);

    /// Writes all of `buf[range]`.
    async fn write_range(&mut self, buf: Vec<u8>, range: Range<usize>)
        -> (io::Result<()>, Vec<u8>);

    /// Ends the stream cleanly (TLS close_notify where there is TLS, then FIN).
    async fn close(&mut self);

    /// Waits until there is something to read, holding no buffer meanwhile
    /// (an idle kept-alive connection then costs no buffer memory).
    async fn wait_readable(&mut self) -> io::Result<()>;

    /// Marks the stream so that dropping it resets the connection (no TLS
    /// close_notify, no FIN): for a response cut short, which must not read
    /// as complete, and for a client that stopped reading.
    fn abort(&mut self);

    /// The certificate chain the client authenticated with (leaf first;
    /// empty without one). Asked of the transport so that each connection
    /// keeps exactly one copy: rustls's in userspace, the kernel-TLS
    /// stream's own once rustls is gone. The default (none) is for the
    /// backend side, where no client authenticates.
    fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &[]
    }

    /// The plain socket underneath when the kernel does the crypto (kernel
    /// TLS): body bytes can then be spliced straight into it.
    fn kernel_socket(&mut self) -> Option<&mut dyn KernelSocket> {
        None
    }
}

/// A socket whose bytes the kernel encrypts and decrypts: what a splice needs
/// of a kernel-TLS stream, without the I/O seam knowing about TLS.
pub trait KernelSocket {
    /// The socket to splice into or from.
    fn socket(&mut self) -> &mut TcpStream;
    /// Counts bytes that reached the socket some other way (splice), for the
    /// send key's record limit.
    fn account_sent(&mut self, bytes: u64);
}

impl Transport for TcpStream {
    async fn read_append(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if buf.capacity() - buf.len() < MIN_READ {
            buf.reserve(MIN_READ);
        }
        let (start, end) = (buf.len(), buf.capacity());
        let (res, slice) = self.read(buf.slice_mut(start..end)).await;
        (res, slice.into_inner())
    }

    async fn write_range(
        &mut self,
        buf: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        if range.is_empty() {
            return (Ok(()), buf);
        }
        let (res, slice) = self.write_all(monoio::buf::IoBuf::slice(buf, range)).await;
        (res.map(|_| ()), slice.into_inner())
    }

    async fn close(&mut self) {
        let _ = self.shutdown().await;
    }

    fn abort(&mut self) {
        crate::sock::set_abortive_close(self);
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        self.readable(false).await
    }
}

/// How long, and how much, a closing connection may still be read from.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Shuts down our sending side, then reads and discards what the peer still
/// sends, briefly. Closing a socket with unread data makes the kernel send a
/// reset, and a reset can destroy our last alert or error response before the
/// client reads it; draining first lets it arrive.
pub async fn linger_close(tcp: &mut TcpStream) {
    let _ = tcp.shutdown().await;
    let deadline = std::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        match monoio::time::timeout(wait, tcp.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                drained += n;
                buf = b;
            }
            _ => return,
        }
    }
}

/// What HTTP/2's connection task does with its readiness-mode client
/// stream (`tls::poll::PollTls`, `tls::ktls::PollKtls`) once `h2` is done
/// with it: the lingering close `Transport::close` gives HTTP/1.1.
#[allow(async_fn_in_trait)] // single-threaded runtime: futures need not be Send
pub trait PollClose {
    /// close_notify (unless sent already), FIN, then read and discard what
    /// the client still sends, for at most `LINGER_TIME` and `LINGER_BYTES`.
    async fn linger_close(&mut self);
}

/// `linger_close`'s reading half on a readiness-mode stream whose sending
/// side is already shut: reads and discards until EOF, an error,
/// `LINGER_TIME` or `LINGER_BYTES`.
pub async fn discard_poll<R: AsyncRead + Unpin>(r: &mut R) {
    let deadline = std::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let read = std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        });
        match monoio::time::timeout(wait, read).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}

/// Writes the whole of `buf`.
pub async fn write_all<T: Transport>(t: &mut T, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    let len = buf.len();
    t.write_range(buf, 0..len).await
}

/// Writes all of `pending` to `tcp` and leaves it empty (capacity kept).
pub async fn drain_to(tcp: &mut TcpStream, pending: &mut Vec<u8>) -> io::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let buf = std::mem::take(pending);
    let (res, mut buf) = tcp.write_all(buf).await;
    buf.clear();
    *pending = buf;
    res.map(|_| ())
}

/// The spare buffers one core keeps, in bytes (beyond this they are freed).
/// A bound in bytes, not in buffers, so a burst of connections does not
/// leave its peak memory behind in the pool.
const MAX_POOLED_BYTES: usize = 4 * 1024 * 1024;
/// A buffer that grew past this (a large chunk, a big head) is freed rather
/// than kept: the pool should hold the common sizes (up to a bulk read and
/// its TLS records, see `proxy::forward::BULK_READ`), not the largest seen.
const MAX_POOLED_CAPACITY: usize = 68 * 1024;

/// This core's spare buffers and their total capacity.
#[derive(Default)]
struct BufferPool {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

thread_local! {
    /// This core's spare buffers: connections return theirs while idle and take
    /// one back when bytes arrive, so the steady state allocates nothing and
    /// idle connections hold no buffer memory.
    static BUFFERS: std::cell::RefCell<BufferPool> = std::cell::RefCell::new(BufferPool::default());
}

/// An empty buffer with at least `capacity` bytes of room, from this core's pool.
pub fn take_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = BUFFERS
        .with(|b| {
            let mut pool = b.borrow_mut();
            let buf = pool.buffers.pop();
            if let Some(buf) = &buf {
                pool.bytes -= buf.capacity();
            }
            buf
        })
        .unwrap_or_default();
    if buf.capacity() < capacity {
        buf.reserve(capacity);
    }
    buf
}

/// Gives a buffer back to this core's pool (contents are discarded), or
/// frees it when it is oversized or the pool holds its fill.
pub fn give_buffer(mut buf: Vec<u8>) {
    let capacity = buf.capacity();
    if capacity == 0 || capacity > MAX_POOLED_CAPACITY {
        return;
    }
    buf.clear();
    BUFFERS.with(|b| {
        let mut pool = b.borrow_mut();
        if pool.bytes + capacity <= MAX_POOLED_BYTES {
            pool.bytes += capacity;
            pool.buffers.push(buf);
        }
    });
}

/// Bytes held by this core's spare buffers now.
pub fn pooled_buffer_bytes() -> usize {
    BUFFERS.with(|b| b.borrow().bytes)
}

#[cfg(test)]
mod buffer_pool_tests {
    use super::*;

    #[test]
    fn the_pool_is_bounded_in_bytes_and_frees_oversized_buffers() {
        // Each test runs on its own thread: a fresh pool.
        assert_eq!(pooled_buffer_bytes(), 0);
        give_buffer(Vec::with_capacity(MAX_POOLED_CAPACITY + 1));
        assert_eq!(pooled_buffer_bytes(), 0, "oversized: freed");
        for _ in 0..1000 {
            give_buffer(Vec::with_capacity(16 * 1024));
        }
        assert!(pooled_buffer_bytes() <= MAX_POOLED_BYTES);
        assert!(pooled_buffer_bytes() > MAX_POOLED_BYTES - 32 * 1024);
        let before = pooled_buffer_bytes();
        let b = take_buffer(1024);
        assert!(b.capacity() >= 16 * 1024);
        assert_eq!(pooled_buffer_bytes(), before - b.capacity());
        give_buffer(b);
        assert_eq!(pooled_buffer_bytes(), before);
    }
}
