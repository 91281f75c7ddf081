//! A kernel-TLS connection as a poll-style stream (tokio's `AsyncRead` and
//! `AsyncWrite`, which monoio's `poll-io` feature uses), for HTTP/2's `h2`,
//! which reads and writes from one task at once: the kernel-TLS twin of
//! `tls::poll::PollTls`.
//!
//! Application data is plain reads and writes on the socket, which the
//! kernel decrypts and encrypts. A read that meets a record which is not
//! application data fails with EIO; it is fetched and judged by
//! `control.rs`, exactly as for HTTP/1.1's `KtlsStream` (alert: error;
//! close_notify: EOF; KeyUpdate: rekey or a clean close). The records we
//! owe in answer go out before any more of `h2`'s bytes; when the socket is
//! full they are retried on a short timer, since a readiness-mode socket
//! offers no wait-for-writable of its own outside a write.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use tracing::warn;

use super::control::{Control, KernelTls};
use super::KtlsStream;
use crate::io::{discard_poll, PollClose, CLOSE_FLUSH_TIME};

/// One write at most this large (bounds a syscall; records are 16 KiB).
const MAX_WRITE: usize = 1 << 20;
/// How often a control record is retried while the socket is full.
const CONTROL_RETRY: Duration = Duration::from_millis(5);
/// Give up on a control record the socket has had no room for this long
/// (the peer stopped reading; the kernel's user timeout ends it anyway).
const CONTROL_GIVE_UP: Duration = Duration::from_secs(10);

pub struct PollKtls {
    tcp: TcpStreamPoll,
    tls: KernelTls,
    /// Application data from a control read that did not fit the reader's
    /// buffer (rare: a record that came between the EIO and the recvmsg).
    plain: Vec<u8>,
    /// Set while a control record waits for room in the socket.
    retry: Option<(Pin<Box<monoio::time::Sleep>>, Instant)>,
}

impl PollKtls {
    /// Takes over a connection already handed to the kernel: its socket goes
    /// to readiness mode. On error the connection is lost (the kernel has
    /// the keys, so there is no way back to userspace TLS).
    pub fn new(stream: KtlsStream) -> io::Result<PollKtls> {
        let (tcp, tls) = stream.into_parts();
        let tcp = tcp.try_into_poll_io().map_err(|(e, _)| e)?;
        Ok(PollKtls {
            tcp,
            tls,
            plain: Vec::new(),
            retry: None,
        })
    }

    /// The socket underneath (for socket options such as an abortive close).
    pub fn socket(&self) -> &TcpStreamPoll {
        &self.tcp
    }

    /// Sends the records we owe; Pending (with a timer armed) while the
    /// socket has no room.
    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let fd = self.tcp.as_raw_fd();
        loop {
            match self.tls.send_outbox(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    self.retry = None;
                    return Poll::Ready(done);
                }
            }
            let (sleep, since) = self.retry.get_or_insert_with(|| {
                (Box::pin(monoio::time::sleep(CONTROL_RETRY)), Instant::now())
            });
            if since.elapsed() >= CONTROL_GIVE_UP {
                self.retry = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "socket stayed full while sending a TLS control record",
                )));
            }
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => sleep.as_mut().set(monoio::time::sleep(CONTROL_RETRY)),
            }
        }
    }

    /// A read met a control record: fetch it and send what it asks of us.
    fn on_control_record(&mut self, cx: &mut Context<'_>) -> Control {
        let answer = self.tls.on_control_record(self.tcp.as_raw_fd());
        match (answer, self.poll_outbox(cx)) {
            // Already failing: the alert we owe goes out if it can.
            (fail @ Control::Fail(_), _) => fail,
            (_, Poll::Ready(Err(e))) => Control::Fail(e),
            // Sent, or retried by the timer: either way read on.
            (answer, _) => answer,
        }
    }

    fn take_plain(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.plain.len().min(buf.remaining());
        buf.put_slice(&self.plain[..n]);
        self.plain.drain(..n);
        if self.plain.is_empty() {
            self.plain = Vec::new();
        }
    }
}

impl PollClose for PollKtls {
    async fn linger_close(&mut self) {
        // close_notify (once) and FIN, bounded as for userspace TLS.
        let shut = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_shutdown(cx));
        if !matches!(
            monoio::time::timeout(CLOSE_FLUSH_TIME, shut).await,
            Ok(Ok(()))
        ) {
            let _ = std::future::poll_fn(|cx| Pin::new(&mut self.tcp).poll_shutdown(cx)).await;
        }
        // Read through the kTLS stream, not the bare socket: a control
        // record (the client's own close_notify, an alert) fails a plain
        // read with EIO and would stay unread, and unread bytes at close
        // are what turns it into a reset.
        discard_poll(self).await;
    }
}

impl AsyncRead for PollKtls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                this.take_plain(buf);
                return Poll::Ready(Ok(()));
            }
            if this.tls.read_closed() {
                return Poll::Ready(Ok(()));
            }
            if this.tls.has_outbox() {
                // Our answer to an earlier control record still waits for
                // room; its timer wakes us, reading need not wait for it.
                if let Poll::Ready(Err(e)) = this.poll_outbox(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            match Pin::new(&mut this.tcp).poll_read(cx, buf) {
                Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                    match this.on_control_record(cx) {
                        Control::Continue => {}
                        Control::Data(n) => {
                            let plain = &mut this.plain;
                            this.tls.take_payload(n, |p| {
                                let fits = p.len().min(buf.remaining());
                                buf.put_slice(&p[..fits]);
                                plain.extend_from_slice(&p[fits..]);
                            });
                            return Poll::Ready(Ok(()));
                        }
                        Control::Eof => return Poll::Ready(Ok(())),
                        Control::Fail(e) => return Poll::Ready(Err(e)),
                    }
                }
                Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EBADMSG) => {
                    warn!(peer = ?this.tls.peer(), "kernel TLS could not authenticate a record from the client (bad record MAC); closing");
                    return Poll::Ready(Err(e));
                }
                other => return other,
            }
        }
    }
}

impl AsyncWrite for PollKtls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What we owe the client (a KeyUpdate answer) goes first.
        if this.tls.has_outbox() {
            match this.poll_outbox(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        if this.tls.limit_reached(data.len()) {
            // Past this the AEAD's guarantees weaken: end the connection instead.
            warn!(peer = ?this.tls.peer(), "send key is near its confidentiality limit; closing the connection");
            return Poll::Ready(Err(io::Error::other("AEAD confidentiality limit reached")));
        }
        match Pin::new(&mut this.tcp).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                this.tls.count_sent(n as u64);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_outbox(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // close_notify, once, then the TCP FIN.
        this.tls.queue_close_notify();
        match this.poll_outbox(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_shutdown(cx),
            other => other,
        }
    }
}
