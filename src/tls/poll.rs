//! A server TLS connection as a poll-style stream (tokio's `AsyncRead` and
//! `AsyncWrite`, which monoio's `poll-io` feature uses), for a protocol
//! library that reads and writes from one task at once: HTTP/2's `h2`.
//!
//! The HTTP/1.1 shell drives TLS with ownership-passing reads and writes
//! (`stream.rs`), one at a time. HTTP/2 is full duplex: `h2` polls its read
//! side and flushes its write side in the same task. So after the handshake
//! (completion-based and record-exact, in `stream.rs`) the socket is turned
//! to monoio's readiness mode and rustls's unbuffered connection is driven
//! from inside `poll_read` and `poll_write`. The encode and encrypt calls
//! are `steps.rs`'s, shared with the HTTP/1.1 stream.
//!
//! Copies are the HTTP/1.1 path's: rustls decrypts each record in place and
//! we copy once into `h2`'s buffer; writes encrypt `h2`'s bytes straight
//! into `outgoing`. Memory is bounded: at most one read chunk of ciphertext
//! is asked for at a time, and `poll_write` stops taking bytes while more
//! than `OUT_HIGH_WATER` of ciphertext waits for the socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::ConnectionState;
use tracing::info;

use super::steps::{encode_into, encrypt_all};
use super::{reason, TlsStream};
use crate::io::{discard_poll, PollClose, CLOSE_FLUSH_TIME};

/// Most ciphertext asked of the socket per read (a few records).
const READ_CHUNK: usize = 64 * 1024;
/// Room for the first read after an idle wait: one whole record. Bulk input
/// grows the buffer to `READ_CHUNK` at the next read; a request on an idle
/// connection costs zeroing this much, not `READ_CHUNK`.
const WAKE_CHUNK: usize = 17 * 1024;
/// Room taken for ciphertext when there is none buffered.
const OUT_CAPACITY: usize = 16 * 1024;
/// Above this much unsent ciphertext, `poll_write` waits for the socket.
const OUT_HIGH_WATER: usize = 256 * 1024;
/// `poll_write` leaves ciphertext for `poll_flush` up to this much.
const SEND_BATCH: usize = 64 * 1024;

pub struct PollTls {
    tcp: TcpStreamPoll,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet consumed by rustls is
    /// `incoming[..in_len]`; the rest is room for the next read, zeroed once
    /// when the buffer grows, never per read.
    incoming: Vec<u8>,
    in_len: usize,
    /// Ciphertext produced; `outgoing[sent..]` is not yet written.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext decrypted and not yet read (it did not fit the reader's
    /// buffer, or it came while the writer was asking for WriteTraffic).
    plain: Vec<u8>,
    plain_pos: usize,
    /// The reader's waker: plaintext found by the writer must wake it.
    read_waker: Option<Waker>,
    /// close_notify came (reads see EOF from now on).
    peer_closed: bool,
    /// The socket reached EOF.
    eof: bool,
    /// rustls returned an error: nothing asks it anything again.
    failed: bool,
    /// close_notify is queued: no second one.
    close_sent: bool,
}

impl PollTls {
    /// Takes over a connection whose handshake is done (userspace TLS): its
    /// socket goes to readiness mode.
    pub fn new(tls: TlsStream) -> io::Result<PollTls> {
        let (tcp, conn, incoming, plain) = tls.into_poll_parts();
        let tcp = tcp.try_into_poll_io().map_err(|(e, _)| e)?;
        let in_len = incoming.len();
        let mut incoming = incoming;
        incoming.resize(in_len + READ_CHUNK, 0);
        Ok(PollTls {
            tcp,
            conn,
            incoming,
            in_len,
            // Taken from the core's pool when there is something to send.
            outgoing: Vec::new(),
            sent: 0,
            plain,
            plain_pos: 0,
            read_waker: None,
            peer_closed: false,
            eof: false,
            failed: false,
            close_sent: false,
        })
    }

    /// The socket underneath (for socket options such as an abortive close).
    pub fn socket(&self) -> &TcpStreamPoll {
        &self.tcp
    }

    fn unsent(&self) -> usize {
        self.outgoing.len() - self.sent
    }

    /// Writes `outgoing[sent..]` until done or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Nothing left to send: the buffer goes back to the core's pool, so
        // an idle connection holds none (`poll_write` takes one again).
        crate::io::give_buffer(std::mem::take(&mut self.outgoing));
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Drops the first `n` bytes of the received ciphertext (rustls's discard).
    fn consume(&mut self, n: usize) {
        let n = n.min(self.in_len);
        self.incoming.copy_within(n..self.in_len, 0);
        self.in_len -= n;
    }

    /// Reads ciphertext after `incoming[..in_len]`: Ok(0) is EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.is_empty() {
            // Back from an idle wait (see below).
            self.incoming = crate::io::take_buffer(WAKE_CHUNK);
            self.incoming.resize(WAKE_CHUNK, 0);
        } else if self.incoming.len() - self.in_len < 16 * 1024 {
            self.incoming.resize(self.in_len + READ_CHUNK, 0);
        }
        let mut rb = ReadBuf::new(&mut self.incoming[self.in_len..]);
        let res = Pin::new(&mut self.tcp).poll_read(cx, &mut rb);
        let n = rb.filled().len();
        self.in_len += n;
        match res {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.in_len == 0 {
                    // Nothing buffered and nothing to read: the client is
                    // idle (an HTTP/2 connection between streams waits
                    // here). The read buffer goes back to the core's pool
                    // meanwhile: kept, it is `READ_CHUNK` per idle connection.
                    crate::io::give_buffer(std::mem::take(&mut self.incoming));
                }
                Poll::Pending
            }
        }
    }

    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) {
        let avail = &self.plain[self.plain_pos..];
        let n = avail.len().min(buf.remaining());
        buf.put_slice(&avail[..n]);
        self.plain_pos += n;
        if self.plain_pos == self.plain.len() {
            self.plain.clear();
            self.plain_pos = 0;
        }
    }

    /// rustls failed: one more call yields the fatal alert it queued (see
    /// `TlsStream::take_pending_alert` for why exactly one), which goes out
    /// with the next send. Logged once, as the HTTP/1.1 stream does.
    fn fail(&mut self, e: rustls::Error) -> io::Error {
        if !self.failed {
            self.failed = true;
            let peer = self.tcp.peer_addr().map(|p| p.to_string());
            let peer = peer.unwrap_or_else(|_| "-".into());
            info!(peer = %peer, reason = %reason::describe(&e), "TLS connection failed after the handshake; closed");
            let status = self
                .conn
                .process_tls_records(&mut self.incoming[..self.in_len]);
            let discard = status.discard;
            if let Ok(ConnectionState::EncodeTlsData(mut enc)) = status.state {
                encode_into(&mut self.outgoing, &mut enc);
            }
            self.consume(discard);
        }
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

impl PollClose for PollTls {
    async fn linger_close(&mut self) {
        // close_notify (once: `h2` may have shut us down already) and FIN;
        // a client that reads nothing does not hold the close open.
        let shut = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_shutdown(cx));
        if !matches!(
            monoio::time::timeout(CLOSE_FLUSH_TIME, shut).await,
            Ok(Ok(()))
        ) {
            let _ = std::future::poll_fn(|cx| Pin::new(&mut self.tcp).poll_shutdown(cx)).await;
        }
        // Ciphertext from here on is only discarded: nothing of it is
        // answered, so it need not be decrypted.
        discard_poll(&mut self.tcp).await;
    }
}

/// What one look at rustls's state means for the reader.
enum Next {
    Again,
    Fill,
    Fail(rustls::Error),
}

impl AsyncRead for PollTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        loop {
            if this.plain_pos < this.plain.len() {
                this.take_plain(buf);
            }
            // Something read: hand it over (an empty record gives nothing,
            // and nothing must not read as EOF).
            if buf.filled().len() > start || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.failed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the TLS connection already failed",
                )));
            }
            if this.peer_closed || this.eof {
                return Poll::Ready(Ok(()));
            }
            let status = this
                .conn
                .process_tls_records(&mut this.incoming[..this.in_len]);
            let discard = status.discard;
            let next = match status.state {
                Ok(ConnectionState::ReadTraffic(mut rt)) => {
                    let mut next = Next::Again;
                    while let Some(record) = rt.next_record() {
                        match record {
                            Ok(r) => {
                                let n = r.payload.len().min(buf.remaining());
                                buf.put_slice(&r.payload[..n]);
                                this.plain.extend_from_slice(&r.payload[n..]);
                            }
                            Err(e) => {
                                next = Next::Fail(e);
                                break;
                            }
                        }
                    }
                    next
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut this.outgoing, &mut e);
                    Next::Again
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    Next::Again
                }
                Ok(ConnectionState::WriteTraffic(_)) => Next::Fill,
                Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => {
                    this.peer_closed = true;
                    Next::Again
                }
                Ok(other) => Next::Fail(rustls::Error::General(format!(
                    "unexpected TLS state {other:?}"
                ))),
                Err(e) => Next::Fail(e),
            };
            this.consume(discard);
            match next {
                Next::Again => {}
                Next::Fail(e) => {
                    let err = this.fail(e);
                    // The alert, as far as the socket takes it now.
                    let _ = this.poll_send(cx);
                    return Poll::Ready(Err(err));
                }
                Next::Fill => {
                    // What rustls queued (a KeyUpdate answer) goes out now.
                    if this.unsent() > 0 {
                        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                            return Poll::Ready(Err(e));
                        }
                    }
                    match this.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => this.eof = true,
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            this.read_waker = Some(cx.waker().clone());
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}

impl AsyncWrite for PollTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(io::Error::other("the TLS connection failed")));
        }
        if this.unsent() >= OUT_HIGH_WATER {
            match this.poll_send(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        loop {
            let status = this
                .conn
                .process_tls_records(&mut this.incoming[..this.in_len]);
            let discard = status.discard;
            let mut result: Option<Result<usize, rustls::Error>> = None;
            let mut io_error = None;
            match status.state {
                Ok(ConnectionState::WriteTraffic(mut wt)) => {
                    if this.outgoing.capacity() == 0 {
                        this.outgoing = crate::io::take_buffer(OUT_CAPACITY);
                    }
                    match encrypt_all(&mut wt, data, &mut this.outgoing) {
                        Ok(()) => result = Some(Ok(data.len())),
                        Err(e) => io_error = Some(e),
                    }
                }
                Ok(ConnectionState::ReadTraffic(mut rt)) => {
                    // Plaintext arrived while we only wanted to write: keep
                    // it for the reader and wake it (it may wait on the socket).
                    while let Some(record) = rt.next_record() {
                        match record {
                            Ok(r) => this.plain.extend_from_slice(r.payload),
                            Err(e) => {
                                result = Some(Err(e));
                                break;
                            }
                        }
                    }
                    if let Some(w) = this.read_waker.take() {
                        w.wake();
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut this.outgoing, &mut e)
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                Ok(ConnectionState::PeerClosed) => {
                    this.peer_closed = true;
                    if let Some(w) = this.read_waker.take() {
                        w.wake();
                    }
                }
                Ok(other) => {
                    io_error = Some(io::Error::other(format!(
                        "TLS connection cannot send in state {other:?}"
                    )))
                }
                Err(e) => result = Some(Err(e)),
            }
            this.consume(discard);
            if let Some(e) = io_error {
                return Poll::Ready(Err(e));
            }
            match result {
                Some(Ok(n)) => {
                    // Ciphertext waits for poll_flush, which h2 calls after
                    // each batch of frames: a DATA frame comes as two writes
                    // (its 9-byte head, then its payload), and sending each
                    // at once cost two syscalls and two wake-ups of the
                    // client per 16 KiB. Past SEND_BATCH it goes now.
                    if this.unsent() >= SEND_BATCH {
                        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                            return Poll::Ready(Err(e));
                        }
                    }
                    return Poll::Ready(Ok(n));
                }
                Some(Err(e)) => {
                    let err = this.fail(e);
                    let _ = this.poll_send(cx);
                    if let Some(w) = this.read_waker.take() {
                        w.wake();
                    }
                    return Poll::Ready(Err(err));
                }
                None => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.failed && !this.close_sent {
            // close_notify, once: after it rustls offers no WriteTraffic.
            let status = this
                .conn
                .process_tls_records(&mut this.incoming[..this.in_len]);
            let discard = status.discard;
            if let Ok(ConnectionState::WriteTraffic(mut wt)) = status.state {
                let start = this.outgoing.len();
                this.outgoing.resize(start + 64, 0);
                match wt.queue_close_notify(&mut this.outgoing[start..]) {
                    Ok(n) => this.outgoing.truncate(start + n),
                    Err(_) => this.outgoing.truncate(start),
                }
            }
            this.consume(discard);
            this.close_sent = true;
        }
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_shutdown(cx),
            other => other,
        }
    }
}
