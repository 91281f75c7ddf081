//! A server-side TLS connection over rustls's unbuffered API.
//!
//! A connection that may be handed to kernel TLS reads its handshake exactly
//! one TLS record per socket read, so when it completes no byte past the
//! client's Finished has left the kernel: the connection can be handed over
//! at that point. One that stays in userspace anyway reads what the socket
//! has ([`HandshakeReads`]). Afterwards the same type serves application
//! data in userspace with buffers it owns and reuses.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, UnbufferedStatus};
use rustls::{HandshakeKind, ServerConfig, SupportedCipherSuite};
use tracing::info;

use super::client_hello::{
    self, Hello, HelloAssembler, HelloError, MAX_RECORD_BODY, RECORD_HEADER_LEN,
};
use super::steps::{
    close_notify_into, encode_into, encrypt_all, plaintext_alert, step_of, Ciphertext, Step,
    UNRECOGNIZED_NAME,
};
use super::{reason, resumption, signature_failure};
use crate::io::{linger_close, Transport};

use super::outcome::{HandshakeFailure, HandshakeReads, PeerIdentity};

pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet processed by rustls.
    incoming: Vec<u8>,
    /// Ciphertext produced by rustls and not yet written.
    outgoing: Ciphertext,
    /// Plaintext decrypted while we were only trying to write (a client may
    /// pipeline); handed out by the next read.
    pending_plain: Vec<u8>,
    sni: Option<String>,
    peer_closed: bool,
    /// rustls returned an error (and sent its alert, if it had one): the
    /// connection is over and rustls must not be asked anything again.
    failed: bool,
}

impl TlsStream {
    /// The negotiated suite (after the handshake).
    pub fn negotiated_suite(&self) -> Option<SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The client's certificate chain as rustls keeps it (leaf first; empty
    /// when the client sent none). The only copy a userspace connection has.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        self.conn.peer_certificates().unwrap_or_default()
    }

    /// Splits a finished connection for the kernel-TLS handover, only at a
    /// record boundary: nothing unread, unwritten or undelivered on either
    /// side (a partial record left behind would make the kernel decode from
    /// the middle of it).
    // The Err gives the stream back, once per connection, to stay in userspace.
    #[allow(clippy::result_large_err)]
    pub(crate) fn into_parts(self) -> Result<(TcpStream, UnbufferedServerConnection), Self> {
        let clean = !self.conn.is_handshaking()
            && self.incoming.is_empty()
            && self.outgoing.is_empty()
            && self.pending_plain.is_empty()
            && !self.peer_closed;
        if clean {
            Ok((self.tcp, self.conn))
        } else {
            Err(self)
        }
    }

    /// Splits a finished connection for the poll-style stream HTTP/2 needs
    /// (`tls::poll`): the socket, rustls, the ciphertext not yet processed
    /// and the plaintext not yet read. Nothing of ours is unwritten: the
    /// handshake flushed it.
    pub(crate) fn into_poll_parts(
        self,
    ) -> (TcpStream, UnbufferedServerConnection, Vec<u8>, Vec<u8>) {
        (self.tcp, self.conn, self.incoming, self.pending_plain)
    }

    /// Puts a connection back together when the handover stopped before the
    /// point of no return.
    pub(crate) fn from_parts(tcp: TcpStream, conn: UnbufferedServerConnection) -> Self {
        TlsStream {
            tcp,
            conn,
            incoming: Vec::with_capacity(RECORD_HEADER_LEN + MAX_RECORD_BODY),
            outgoing: Ciphertext::default(),
            pending_plain: Vec::new(),
            sni: None,
            peer_closed: false,
            failed: false,
        }
    }

    /// Runs the handshake on an accepted socket. `select` picks the server
    /// config from the ClientHello's SNI (read from the whole hello before
    /// rustls sees it); None refuses with an `unrecognized_name` alert. On
    /// failure the alert has been written, and the SNI (if any was read) is
    /// returned with the error for the log line. `reads`: see
    /// [`HandshakeReads`] (the ClientHello itself is always read record by
    /// record, for the site choice).
    pub async fn accept<F>(
        mut tcp: TcpStream,
        select: F,
        reads: HandshakeReads,
    ) -> Result<(Self, PeerIdentity), (HandshakeFailure, Option<String>)>
    where
        F: FnOnce(Option<&str>) -> Option<Arc<ServerConfig>>,
    {
        let mut incoming = Vec::with_capacity(RECORD_HEADER_LEN + MAX_RECORD_BODY);
        // The site is chosen from the whole ClientHello, however many records
        // the client split it over: rustls will reassemble it, so we must see
        // the same name it does, or refuse.
        let mut assembler = HelloAssembler::new();
        let sni = loop {
            let start = incoming.len();
            let read = read_one_record(&mut tcp, &mut incoming).await;
            let pushed = match read {
                Ok(()) => assembler.push_record(&incoming[start..]),
                // Longer than any record may be: record_overflow, if it was
                // a handshake record (a client speaking TLS); else not TLS.
                Err(e)
                    if e.kind() == io::ErrorKind::InvalidData
                        && incoming.get(start) == Some(&client_hello::CONTENT_HANDSHAKE) =>
                {
                    Err(HelloError::RecordOverflow)
                }
                Err(e) => return Err((HandshakeFailure::Io(e), None)),
            };
            match pushed {
                Ok(Hello::Complete { server_name }) => break server_name,
                Ok(Hello::Incomplete) => {}
                Err(HelloError::NotHandshake) => {
                    linger_close(&mut tcp).await;
                    return Err((HandshakeFailure::NotTls, None));
                }
                Err(e) => {
                    let (_, _) = tcp.write_all(plaintext_alert(e.alert()).to_vec()).await;
                    linger_close(&mut tcp).await;
                    return Err((HandshakeFailure::BadClientHello(e), None));
                }
            }
        };
        let Some(config) = select(sni.as_deref()) else {
            let (_, _) = tcp
                .write_all(plaintext_alert(UNRECOGNIZED_NAME).to_vec())
                .await;
            linger_close(&mut tcp).await;
            return Err((HandshakeFailure::UnknownServerName, sni));
        };
        let conn = match UnbufferedServerConnection::new(config) {
            Ok(c) => c,
            Err(e) => return Err((HandshakeFailure::Tls(e), sni)),
        };
        let mut stream = TlsStream {
            tcp,
            conn,
            incoming,
            outgoing: Ciphertext::with_capacity(4096),
            pending_plain: Vec::new(),
            sni,
            peer_closed: false,
            failed: false,
        };
        match stream.handshake(reads).await {
            Ok(()) => {
                let identity = PeerIdentity {
                    sni: stream.sni.clone(),
                    version: stream.conn.protocol_version(),
                    suite: stream.conn.negotiated_cipher_suite(),
                    resumed: stream.conn.handshake_kind() == Some(HandshakeKind::Resumed),
                    h2: stream.conn.alpn_protocol() == Some(super::server_config::ALPN_H2),
                };
                if identity.resumed {
                    let now = rustls::pki_types::UnixTime::now();
                    let chain = stream.peer_certificates();
                    if let Err(e) = resumption::check_restored_chain(chain, now) {
                        // Past the handshake no alert can be sent through
                        // rustls: close_notify, then the connection is gone.
                        stream.close().await;
                        return Err((HandshakeFailure::ResumedCertificateExpired(e), stream.sni));
                    }
                }
                Ok((stream, identity))
            }
            Err(e) => {
                linger_close(&mut stream.tcp).await;
                Err((e, stream.sni.take()))
            }
        }
    }

    async fn handshake(&mut self, reads: HandshakeReads) -> Result<(), HandshakeFailure> {
        loop {
            signature_failure::clear();
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let step = match status.state {
                // The client's first request, read along with its Finished
                // (HandshakeReads::Available). rustls has already decrypted
                // it and dropped its ciphertext from `incoming`, so it is
                // taken out here and kept for the first read: left in rustls,
                // `wait_readable` would see nothing buffered and wait on the
                // socket for a request that has already arrived.
                Ok(ConnectionState::ReadTraffic(mut rt)) => {
                    let mut step = Step::Plaintext(0);
                    while let Some(record) = rt.next_record() {
                        match record {
                            Ok(r) => self.pending_plain.extend_from_slice(r.payload),
                            Err(e) => {
                                step = Step::Fail(e);
                                break;
                            }
                        }
                    }
                    step
                }
                state => step_of(UnbufferedStatus { discard, state }, &mut self.outgoing).1,
            };
            self.incoming.drain(..discard);
            match step {
                Step::Continue => {}
                Step::Flush => self.flush().await.map_err(HandshakeFailure::Io)?,
                // Done; Plaintext when the first request came along (above).
                Step::WriteTraffic | Step::Plaintext(_) if !self.conn.is_handshaking() => {
                    // NewSessionTickets come after the handshake ends and before the
                    // first WriteTraffic; they are flushed by the Flush step above,
                    // so nothing of ours is left unwritten here.
                    return self.flush().await.map_err(HandshakeFailure::Io);
                }
                Step::NeedData | Step::WriteTraffic => match reads {
                    HandshakeReads::ExactRecords => {
                        read_one_record(&mut self.tcp, &mut self.incoming)
                            .await
                            .map_err(HandshakeFailure::Io)?;
                    }
                    HandshakeReads::Available => {
                        let buf = std::mem::take(&mut self.incoming);
                        let (res, buf) = self.tcp.read_append(buf).await;
                        self.incoming = buf;
                        match res {
                            Ok(0) => {
                                return Err(HandshakeFailure::Io(io::Error::new(
                                    io::ErrorKind::UnexpectedEof,
                                    "client closed the connection during the handshake",
                                )))
                            }
                            Ok(_) => {}
                            Err(e) => return Err(HandshakeFailure::Io(e)),
                        }
                    }
                },
                Step::Plaintext(_) | Step::Eof => {
                    return Err(HandshakeFailure::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection during the handshake",
                    )))
                }
                Step::Fail(e) => {
                    // Now, before any await: see tls::client_verifier::refusal
                    // and tls::signature_failure.
                    let e = super::client_verifier::with_reason(e);
                    let failure = if signature_failure::is_certificate_verify_failure(&e) {
                        HandshakeFailure::CertificateVerify(e)
                    } else {
                        HandshakeFailure::Tls(e)
                    };
                    // TLS 1.3 checks ALPN after queuing its ServerHello:
                    // the alert comes after that record, not first.
                    let queued = match &failure {
                        HandshakeFailure::Tls(rustls::Error::NoApplicationProtocol) => 4,
                        _ => 1,
                    };
                    self.take_pending_alert_records(queued);
                    let _ = self.flush().await;
                    return Err(failure);
                }
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let (buf, n) = self.outgoing.take();
        let (res, slice) = self.tcp.write_all(IoBuf::slice(buf, 0..n)).await;
        self.outgoing.restore(slice.into_inner());
        res.map(|_| ())
    }

    /// After rustls returned an error it may have queued a fatal alert: send
    /// it, and mark the connection failed.
    async fn send_pending_alert(&mut self) {
        self.take_pending_alert();
        let _ = self.flush().await;
    }

    /// Moves the fatal alert rustls queued with its error (if any) onto
    /// `outgoing`, and marks the connection failed so that nothing asks
    /// rustls anything again.
    ///
    /// Exactly one more call: rustls hands out queued records before it
    /// reads input, so that call yields the alert if there is one. Any later
    /// call goes back to the input, and after an error found while reading
    /// records (one that does not decrypt, a malformed handshake fragment)
    /// the bad record is still there: rustls fails on it again and queues a
    /// second fatal alert (in debug builds its assertion against that
    /// panics and takes the worker thread down; found by tlsfuzzer's
    /// KeyUpdate script). rustls must still be given the real unprocessed
    /// input: its deframer may point into it, and an empty slice there makes
    /// it panic.
    fn take_pending_alert(&mut self) {
        self.take_pending_alert_records(1);
    }

    /// As `take_pending_alert`, for an error rustls found while processing
    /// a whole message (the message is consumed, so the input holds no bad
    /// record) after queuing up to `records` records ahead of its alert:
    /// asks again only while rustls still hands out queued records.
    fn take_pending_alert_records(&mut self, records: usize) {
        if self.failed {
            return;
        }
        self.failed = true;
        for _ in 0..records.max(1) {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let more = match status.state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut self.outgoing, &mut e);
                    true
                }
                _ => false,
            };
            self.incoming.drain(..discard);
            if !more {
                break;
            }
        }
    }

    /// The one log line for a connection whose TLS failed after the
    /// handshake (the handshake's own failures are logged by the gateway).
    fn log_failure(&self, e: &rustls::Error) {
        let peer = self.tcp.peer_addr().ok();
        let peer = peer.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let sni = self.sni.as_deref().unwrap_or("-");
        info!(peer = %peer, sni, reason = %reason::describe(e), "TLS connection failed after the handshake; closed");
    }

    /// Reads more ciphertext after the handshake: as much as the socket has.
    async fn read_ciphertext(&mut self) -> io::Result<usize> {
        if self.incoming.capacity() == 0 {
            self.incoming = crate::io::take_buffer(RECORD_HEADER_LEN + MAX_RECORD_BODY);
        }
        let (res, buf) = self
            .tcp
            .read_append(std::mem::take(&mut self.incoming))
            .await;
        self.incoming = buf;
        res
    }

    /// Encrypts `data` (or, with None, a close_notify) onto `outgoing`.
    ///
    /// rustls only offers WriteTraffic once it has processed what it was
    /// given, so buffered input is processed here too: any plaintext it
    /// yields is kept for the next read, never dropped.
    fn encrypt_into_outgoing(&mut self, data: Option<&[u8]>) -> io::Result<()> {
        if self.failed {
            return Err(failed_connection());
        }
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let mut result = None;
            match status.state {
                Ok(ConnectionState::WriteTraffic(mut wt)) => {
                    result = Some(match data {
                        Some(data) => encrypt_all(&mut wt, data, &mut self.outgoing),
                        None => close_notify_into(&mut wt, &mut self.outgoing),
                    });
                }
                Ok(ConnectionState::ReadTraffic(mut rt)) => {
                    while let Some(record) = rt.next_record() {
                        match record {
                            Ok(r) => self.pending_plain.extend_from_slice(r.payload),
                            Err(e) => {
                                result = Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                                break;
                            }
                        }
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut self.outgoing, &mut e)
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                // Edge-triggered: remember it for the read side.
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                Ok(other) => {
                    result = Some(Err(io::Error::other(format!(
                        "TLS connection cannot send in state {other:?}"
                    ))))
                }
                Err(e) => result = Some(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
            }
            self.incoming.drain(..discard);
            if let Some(Err(e)) = &result {
                if let Some(tls) = reason::tls_error(e) {
                    // rustls failed on input that arrived while we were
                    // writing: its alert goes out with the next flush.
                    self.log_failure(tls);
                    self.take_pending_alert();
                }
            }
            if let Some(r) = result {
                return r;
            }
        }
    }
}

impl Transport for TlsStream {
    async fn read_append(&mut self, mut dst: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        if self.failed {
            return (Err(failed_connection()), dst);
        }
        if !self.pending_plain.is_empty() {
            let n = self.pending_plain.len();
            dst.extend_from_slice(&self.pending_plain);
            self.pending_plain.clear();
            return (Ok(n), dst);
        }
        loop {
            if self.peer_closed {
                return (Ok(0), dst);
            }
            let status = self.conn.process_tls_records(&mut self.incoming);
            let discard = status.discard;
            let step = match status.state {
                Ok(ConnectionState::ReadTraffic(mut rt)) => {
                    let mut got = 0;
                    let mut failed = None;
                    while let Some(record) = rt.next_record() {
                        match record {
                            Ok(r) => {
                                dst.extend_from_slice(r.payload);
                                got += r.payload.len();
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) => Step::Fail(e),
                        None => Step::Plaintext(got),
                    }
                }
                other => {
                    step_of(
                        UnbufferedStatus {
                            discard,
                            state: other,
                        },
                        &mut self.outgoing,
                    )
                    .1
                }
            };
            self.incoming.drain(..discard);
            match step {
                Step::Plaintext(n) if n > 0 => return (Ok(n), dst),
                Step::Plaintext(_) | Step::Continue => {}
                Step::Flush => {
                    if let Err(e) = self.flush().await {
                        return (Err(e), dst);
                    }
                }
                Step::NeedData | Step::WriteTraffic => match self.read_ciphertext().await {
                    Ok(0) => return (Ok(0), dst), // EOF without close_notify: treat as EOF
                    Ok(_) => {}
                    Err(e) => return (Err(e), dst),
                },
                Step::Eof => {
                    self.peer_closed = true;
                    return (Ok(0), dst);
                }
                Step::Fail(e) => {
                    self.log_failure(&e);
                    self.send_pending_alert().await;
                    return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), dst);
                }
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
        let res = match buf.get(range) {
            Some(data) => self.encrypt_into_outgoing(Some(data)),
            None => Err(io::Error::other("write range outside the buffer")),
        };
        if let Err(e) = res {
            return (Err(e), buf);
        }
        (self.flush().await, buf)
    }

    async fn wait_readable(&mut self) -> io::Result<()> {
        if !self.incoming.is_empty()
            || !self.pending_plain.is_empty()
            || self.peer_closed
            || self.failed
        {
            return Ok(());
        }
        // Nothing buffered: hand the buffers back while the client is idle.
        crate::io::give_buffer(std::mem::take(&mut self.incoming));
        crate::io::give_buffer(std::mem::take(&mut self.outgoing).into_buffer());
        self.tcp.readable(false).await
    }

    async fn close(&mut self) {
        // After a failure there is no orderly close to announce: the fatal
        // alert (if rustls had one) is the last record we send.
        if !self.failed {
            let _ = self.encrypt_into_outgoing(None);
        }
        // A client that stopped reading does not get to hold the close open.
        let _ = monoio::time::timeout(crate::io::CLOSE_FLUSH_TIME, self.flush()).await;
        linger_close(&mut self.tcp).await;
    }

    fn abort(&mut self) {
        crate::sock::set_abortive_close(&self.tcp);
    }

    fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        TlsStream::peer_certificates(self)
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;

fn failed_connection() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the TLS connection already failed",
    )
}

/// Reads exactly one TLS record (header, then exactly its body) onto `incoming`.
async fn read_one_record(tcp: &mut TcpStream, incoming: &mut Vec<u8>) -> io::Result<()> {
    let start = incoming.len();
    let header_end = start + RECORD_HEADER_LEN;
    read_exact_to(tcp, incoming, header_end).await?;
    let mut header = [0u8; RECORD_HEADER_LEN];
    header.copy_from_slice(&incoming[start..header_end]);
    let body_len = client_hello::record_body_len(&header);
    if body_len > MAX_RECORD_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TLS record longer than the protocol allows",
        ));
    }
    read_exact_to(tcp, incoming, header_end + body_len).await
}

async fn read_exact_to(tcp: &mut TcpStream, incoming: &mut Vec<u8>, end: usize) -> io::Result<()> {
    let start = incoming.len();
    if end <= start {
        return Ok(());
    }
    incoming.reserve(end - start);
    let buf = std::mem::take(incoming);
    let (res, slice) = tcp.read_exact(buf.slice_mut(start..end)).await;
    *incoming = slice.into_inner();
    res.map(|_| ())
}
