//! A connection whose symmetric crypto the kernel does: application data is a
//! plain byte stream for io_uring; records that are not application data
//! (alerts, KeyUpdate) surface as EIO and are fetched with a cmsg; what they
//! mean and what we answer is `control.rs`'s, shared with HTTP/2's `PollKtls`.

use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use rustls::kernel::KernelConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::ServerConnectionData;
use tracing::warn;

use super::control::{Control, KernelTls};
use crate::io::{linger_close, KernelSocket, Transport, CLOSE_FLUSH_TIME};

/// One write at most this large (a record is 16 KiB; this just bounds a syscall).
const MAX_WRITE: usize = 1 << 20;
/// Waits for room in the socket while sending control records, at most.
const MAX_CONTROL_WAITS: usize = 64;

pub struct KtlsStream {
    tcp: TcpStream,
    tls: KernelTls,
    /// The client's certificate chain, taken from rustls just before it
    /// gave the connection up (its kernel connection keeps none): the
    /// connection's one copy.
    peer_chain: Vec<CertificateDer<'static>>,
}

impl KtlsStream {
    pub(super) fn new(
        tcp: TcpStream,
        kconn: KernelConnection<ServerConnectionData>,
        tx_seq: u64,
        can_rekey: bool,
        peer_chain: Vec<CertificateDer<'static>>,
    ) -> Self {
        let peer = tcp.peer_addr().ok();
        KtlsStream {
            tls: KernelTls::new(kconn, peer, tx_seq, can_rekey),
            tcp,
            peer_chain,
        }
    }

    /// Moves the client's certificate chain out (for HTTP/2, whose
    /// connection state keeps it once the stream is `h2`'s).
    pub fn take_peer_certificates(&mut self) -> Vec<CertificateDer<'static>> {
        std::mem::take(&mut self.peer_chain)
    }

    /// The socket and the kernel-TLS state, for the readiness-mode stream
    /// HTTP/2 needs (`PollKtls`).
    pub(super) fn into_parts(self) -> (TcpStream, KernelTls) {
        (self.tcp, self.tls)
    }

    /// Fetches the control record a read met, then sends what it asks of us.
    async fn on_control_record(&mut self) -> Control {
        let answer = self.tls.on_control_record(self.tcp.as_raw_fd());
        let sent = self.send_outbox().await;
        match (answer, sent) {
            // Already failing: the alert we owe goes out if it can.
            (fail @ Control::Fail(_), _) => fail,
            (answer, Ok(())) => answer,
            (_, Err(e)) => Control::Fail(e),
        }
    }

    async fn send_outbox(&mut self) -> io::Result<()> {
        let fd = self.tcp.as_raw_fd();
        for _ in 0..MAX_CONTROL_WAITS {
            match self.tls.send_outbox(fd) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable(false).await?,
                done => return done,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "socket stayed full while sending a TLS control record",
        ))
    }
}

impl Transport for KtlsStream {
    async fn read_append(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if self.tls.read_closed() {
                return (Ok(0), buf);
            }
            let (res, b) = self.tcp.read_append(buf).await;
            buf = b;
            match res {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    match self.on_control_record().await {
                        Control::Continue => {}
                        Control::Data(n) => {
                            self.tls.take_payload(n, |p| buf.extend_from_slice(p));
                            return (Ok(n), buf);
                        }
                        Control::Eof => return (Ok(0), buf),
                        Control::Fail(e) => return (Err(e), buf),
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EBADMSG) => {
                    warn!(peer = ?self.tls.peer(), "kernel TLS could not authenticate a record from the client (bad record MAC); closing");
                    return (Err(e), buf);
                }
                other => return (other, buf),
            }
        }
    }

    async fn write_range(
        &mut self,
        buf: Vec<u8>,
        range: Range<usize>,
    ) -> (io::Result<()>, Vec<u8>) {
        if range.is_empty() {
            return (Ok(()), buf);
        }
        if self.tls.limit_reached(range.len()) {
            // Past this the AEAD's guarantees weaken: end the connection instead.
            warn!(peer = ?self.tls.peer(), "send key is near its confidentiality limit; closing the connection");
            return (
                Err(io::Error::other("AEAD confidentiality limit reached")),
                buf,
            );
        }
        let mut buf = buf;
        let mut pos = range.start;
        while pos < range.end {
            let end = (pos + MAX_WRITE).min(range.end);
            let (res, slice) = self
                .tcp
                .write_all(monoio::buf::IoBuf::slice(buf, pos..end))
                .await;
            buf = slice.into_inner();
            if let Err(e) = res {
                return (Err(e), buf);
            }
            self.account_sent((end - pos) as u64);
            pos = end;
        }
        (Ok(()), buf)
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        if self.tls.read_closed() {
            return Ok(());
        }
        self.tcp.readable(false).await
    }

    async fn close(&mut self) {
        self.tls.queue_close_notify();
        let _ = monoio::time::timeout(CLOSE_FLUSH_TIME, self.send_outbox()).await;
        linger_close(&mut self.tcp).await;
    }

    fn abort(&mut self) {
        crate::sock::set_abortive_close(&self.tcp);
    }

    fn kernel_socket(&mut self) -> Option<&mut dyn KernelSocket> {
        Some(self)
    }

    fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_chain
    }
}

impl KernelSocket for KtlsStream {
    fn socket(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    fn account_sent(&mut self, bytes: u64) {
        self.tls.count_sent(bytes);
    }
}
