//! A client TLS connection as a poll-style stream (tokio's `AsyncRead` and
//! `AsyncWrite`, which monoio's `poll-io` feature re-exports), for `h2`,
//! which reads and writes from one task at once.
//!
//! The handshake is done before, completion-based, by `conn::Conn` (the
//! same code as HTTP/1.1, so the same errors and the same report); then the
//! socket goes to monoio's readiness mode and rustls's buffered
//! `ClientConnection` is driven from inside `poll_read` and `poll_write`,
//! as tokio-rustls does. Memory is bounded: one read chunk of ciphertext at
//! a time, and `poll_write` takes nothing more while `OUT_HIGH_WATER` of
//! ciphertext waits for the socket.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::TcpStream;
use rustls::ClientConnection;

/// Most ciphertext asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;
/// Above this much unsent ciphertext, `poll_write` waits for the socket.
const OUT_HIGH_WATER: usize = 256 * 1024;

/// Starts the text of the `io::Error` for a TLS connection that failed
/// before any application data came: in TLS 1.3 that is how a server refuses
/// a client certificate (its alert follows the client's Finished). `h2`
/// keeps only an error's kind and text, so the report finds it by this
/// prefix and counts it as `tls_handshake`, as HTTP/1.1 does.
pub const REFUSED_BEFORE_DATA: &str = "TLS failed before any data: ";

pub struct PollTls {
    tcp: TcpStreamPoll,
    tls: Box<ClientConnection>,
    /// Ciphertext read from the socket, fed to rustls at once.
    rbuf: Vec<u8>,
    /// Plaintext decrypted and not yet handed to the reader: `plain[ppos..]`.
    plain: Vec<u8>,
    ppos: usize,
    /// Ciphertext produced; `out[sent..]` is not yet written.
    out: Vec<u8>,
    sent: usize,
    /// close_notify or EOF: reads return end of stream from now on.
    eof: bool,
    /// Application data has come: a TLS failure now is not a refusal.
    got_data: bool,
    /// close_notify is queued: no second one.
    close_sent: bool,
}

impl PollTls {
    /// Takes over a connection whose handshake is done; `plain` is what was
    /// decrypted with the handshake's last flight and not read yet.
    pub fn new(tcp: TcpStream, tls: Box<ClientConnection>, plain: Vec<u8>) -> io::Result<PollTls> {
        let tcp = tcp.try_into_poll_io().map_err(|(e, _)| e)?;
        Ok(PollTls {
            tcp,
            tls,
            rbuf: vec![0; READ_CHUNK],
            got_data: !plain.is_empty(),
            plain,
            ppos: 0,
            out: Vec::with_capacity(16 * 1024),
            sent: 0,
            eof: false,
            close_sent: false,
        })
    }

    fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Moves what rustls has to send onto `out`.
    fn queue_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.out)?;
        }
        Ok(())
    }

    /// Writes `out[sent..]` until done or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Feeds `rbuf[..n]` to rustls, moving plaintext onto `plain` between
    /// rounds (rustls holds only a little received plaintext itself).
    fn absorb(&mut self, n: usize) -> io::Result<()> {
        let rbuf = std::mem::take(&mut self.rbuf);
        let res = self.absorb_from(&rbuf[..n]);
        self.rbuf = rbuf;
        res
    }

    fn absorb_from(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            let used = self.tls.read_tls(&mut input)?;
            let state = self.tls.process_new_packets().map_err(|e| self.failed(e))?;
            let avail = state.plaintext_bytes_to_read();
            if avail > 0 {
                let start = self.plain.len();
                self.plain.resize(start + avail, 0);
                let k = self.tls.reader().read(&mut self.plain[start..])?;
                self.plain.truncate(start + k);
                self.got_data = true;
            }
            if state.peer_has_closed() {
                self.eof = true;
                break;
            }
            if used == 0 && avail == 0 {
                return Err(io::Error::other("TLS input not consumed"));
            }
        }
        Ok(())
    }

    /// A rustls error: its alert is queued for the next send.
    fn failed(&mut self, e: rustls::Error) -> io::Error {
        let _ = self.queue_tls();
        let words = crate::conn::first_words(&e.to_string());
        if self.got_data {
            io::Error::new(io::ErrorKind::InvalidData, format!("tls: {words}"))
        } else {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{REFUSED_BEFORE_DATA}{words}"),
            )
        }
    }
}

impl AsyncRead for PollTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ppos < this.plain.len() {
                let avail = &this.plain[this.ppos..];
                let n = avail.len().min(buf.remaining());
                buf.put_slice(&avail[..n]);
                this.ppos += n;
                if this.ppos == this.plain.len() {
                    this.plain.clear();
                    this.ppos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.rbuf);
            let n = match Pin::new(&mut this.tcp).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => rb.filled().len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                // EOF without close_notify: h2 sees the end of the stream
                // and reports the connection as closed.
                this.eof = true;
                continue;
            }
            if let Err(e) = this.absorb(n) {
                // The alert, as far as the socket takes it now.
                let _ = this.poll_send(cx);
                return Poll::Ready(Err(e));
            }
            // A KeyUpdate answer or similar goes out now.
            if this.tls.wants_write() {
                this.queue_tls()?;
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
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
        if this.unsent() >= OUT_HIGH_WATER {
            match this.poll_send(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.tls.writer().write(data)?;
        this.queue_tls()?;
        if n == 0 && !data.is_empty() {
            return Poll::Ready(Err(io::Error::other("TLS connection refuses more data")));
        }
        // Start sending now; what does not fit waits for poll_flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.queue_tls()?;
        this.poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            this.tls.send_close_notify();
        }
        this.queue_tls()?;
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_shutdown(cx),
            other => other,
        }
    }
}
