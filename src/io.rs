//! The byte-stream seam between the proxy and its two sides.
//!
//! The proxy is written once against [`Transport`]; the client side is a
//! userspace-TLS stream today and a plain kernel-TLS socket tomorrow, the
//! backend side a plain TCP socket. Buffers are owned and passed through the
//! I/O call and back (monoio's completion model), so one buffer per
//! connection is reused for its whole life.

use std::io;
use std::ops::Range;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

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

/// Idle buffers kept per core (beyond this they are freed).
const MAX_POOLED_BUFFERS: usize = 4096;

thread_local! {
    /// This core's spare buffers: connections return theirs while idle and take
    /// one back when bytes arrive, so the steady state allocates nothing and
    /// idle connections hold no buffer memory.
    static BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer with at least `capacity` bytes of room, from this core's pool.
pub fn take_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default();
    if buf.capacity() < capacity {
        buf.reserve(capacity);
    }
    buf
}

/// Gives a buffer back to this core's pool (contents are discarded).
pub fn give_buffer(mut buf: Vec<u8>) {
    if buf.capacity() == 0 {
        return;
    }
    buf.clear();
    BUFFERS.with(|b| {
        let mut pool = b.borrow_mut();
        if pool.len() < MAX_POOLED_BUFFERS {
            pool.push(buf);
        }
    });
}
