//! A connection whose symmetric crypto the kernel does: application data is a
//! plain byte stream for io_uring; records that are not application data
//! (alerts, KeyUpdate) surface as EIO and are fetched with a cmsg.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{AlertDescription, ProtocolVersion, SupportedCipherSuite};
use tracing::{info, warn};

use super::{kernel_crypto_rx, kernel_crypto_tx, ktls_io_error, sys};
use crate::io::{linger_close, KernelSocket, Transport, CLOSE_FLUSH_TIME};

const RECORD_ALERT: u8 = 21;
const RECORD_HANDSHAKE: u8 = 22;
const RECORD_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;
/// More KeyUpdates than this on one connection is abuse (rustls's own bound).
const MAX_KEY_UPDATES: u32 = 32;
/// Stop sending this many records short of the AEAD limit: leaves room for
/// the response in flight and the close_notify.
const LIMIT_MARGIN: u64 = 1 << 16;
/// One write at most this large (a record is 16 KiB; this just bounds a syscall).
const MAX_WRITE: usize = 1 << 20;

pub struct KtlsStream {
    tcp: TcpStream,
    kconn: KernelConnection<ServerConnectionData>,
    version: ProtocolVersion,
    peer: Option<SocketAddr>,
    can_rekey: bool,
    /// Upper bound of records sent under the current send key.
    tx_records: u64,
    /// The suite's confidentiality limit (records per key); u64::MAX if none.
    tx_limit: u64,
    read_closed: bool,
    close_notify_sent: bool,
    key_updates: u32,
    /// Scratch for control records (at most one record).
    control: Vec<u8>,
}

/// What a control record asks of the reader.
enum Control {
    Continue,
    Data(usize),
    Eof,
    Fail(io::Error),
}

impl KtlsStream {
    pub(super) fn new(
        tcp: TcpStream,
        kconn: KernelConnection<ServerConnectionData>,
        tx_seq: u64,
        can_rekey: bool,
    ) -> Self {
        let tx_limit = match kconn.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        KtlsStream {
            peer: tcp.peer_addr().ok(),
            version: kconn.protocol_version(),
            tcp,
            kconn,
            can_rekey,
            tx_records: tx_seq,
            tx_limit,
            read_closed: false,
            close_notify_sent: false,
            key_updates: 0,
            control: Vec::new(),
        }
    }

    /// Counts bytes that reached the socket some other way (splice) against
    /// the send key's record limit.
    fn count_sent(&mut self, bytes: u64) {
        // Each send may end a record early, hence the +1.
        self.tx_records = self
            .tx_records
            .saturating_add(bytes.div_ceil(16 * 1024) + 1);
    }

    fn limit_reached(&self, bytes: usize) -> bool {
        let records = (bytes as u64).div_ceil(16 * 1024) + 1;
        self.tx_records.saturating_add(records) >= self.tx_limit.saturating_sub(LIMIT_MARGIN)
    }

    async fn on_control_record(&mut self, dst: &mut Vec<u8>) -> Control {
        if self.control.is_empty() {
            // Control records are rare: the scratch space is allocated on first use.
            self.control = vec![0; 16 * 1024 + 512];
        }
        let fd = self.tcp.as_raw_fd();
        let (record_type, len) = match sys::recv_record(fd, &mut self.control) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Control::Continue,
            Err(e) => return Control::Fail(e),
        };
        let payload = &self.control[..len];
        match record_type {
            RECORD_APPLICATION_DATA => {
                dst.extend_from_slice(payload);
                Control::Data(len)
            }
            RECORD_ALERT => self.on_alert(payload.get(..2).map(|a| [a[0], a[1]])).await,
            RECORD_HANDSHAKE => {
                let msg = payload.to_vec(); // rare path: KeyUpdate / renegotiation attempt
                self.on_handshake(&msg).await
            }
            other => {
                self.send_alert(ALERT_FATAL, AlertDescription::UnexpectedMessage)
                    .await;
                Control::Fail(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("client sent TLS record type {other}"),
                ))
            }
        }
    }

    async fn on_alert(&mut self, alert: Option<[u8; 2]>) -> Control {
        let Some([level, desc]) = alert else {
            self.send_alert(ALERT_FATAL, AlertDescription::DecodeError)
                .await;
            return Control::Fail(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed alert record",
            ));
        };
        let description = AlertDescription::from(desc);
        match description {
            AlertDescription::CloseNotify => Control::Eof,
            // TLS 1.3: user_canceled is followed by close_notify.
            AlertDescription::UserCanceled => Control::Continue,
            _ if self.version == ProtocolVersion::TLSv1_2 && level == ALERT_WARNING => {
                Control::Continue
            }
            _ => {
                info!(peer = ?self.peer, alert = ?description, "client sent a fatal TLS alert; closing the connection");
                Control::Fail(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("client sent alert {description:?}"),
                ))
            }
        }
    }

    async fn on_handshake(&mut self, msg: &[u8]) -> Control {
        let msg_type = msg.first().copied();
        if self.version == ProtocolVersion::TLSv1_2 && msg_type == Some(HANDSHAKE_CLIENT_HELLO) {
            // Renegotiation is never offered; say so and carry on, as rustls does.
            self.send_alert(ALERT_WARNING, AlertDescription::NoRenegotiation)
                .await;
            return Control::Continue;
        }
        let is_key_update = self.version == ProtocolVersion::TLSv1_3
            && msg.len() == 5
            && msg_type == Some(HANDSHAKE_KEY_UPDATE)
            && msg[1..4] == [0, 0, 1]
            && msg[4] <= 1;
        if !is_key_update {
            self.send_alert(ALERT_FATAL, AlertDescription::UnexpectedMessage)
                .await;
            return Control::Fail(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected handshake message after the handshake",
            ));
        }
        self.key_updates += 1;
        if self.key_updates > MAX_KEY_UPDATES {
            self.send_alert(ALERT_FATAL, AlertDescription::UnexpectedMessage)
                .await;
            return Control::Fail(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many KeyUpdates",
            ));
        }
        let update_requested = msg[4] == 1;
        if let Err(why) = self.install_rx_key() {
            warn!(
                peer = ?self.peer,
                reason = %why,
                "client sent a TLS 1.3 KeyUpdate, but this kernel cannot take a new key into kernel TLS \
                 (rekeying needs Linux 6.13 or newer); closing the connection cleanly"
            );
            self.close_notify().await;
            self.read_closed = true;
            return Control::Fail(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "kernel cannot rekey kernel TLS",
            ));
        }
        if update_requested {
            // Announce ours under the old key, then switch.
            if let Err(e) = self
                .send_record(RECORD_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0])
                .await
            {
                return Control::Fail(e);
            }
            if let Err(why) = self.install_tx_key() {
                warn!(peer = ?self.peer, reason = %why, "cannot install our new send key; closing the connection");
                return Control::Fail(io::Error::other(why));
            }
        }
        Control::Continue
    }

    fn install_rx_key(&mut self) -> Result<(), String> {
        if !self.can_rekey {
            return Err(
                "the start-up probe found the kernel cannot set TLS_RX twice (EBUSY)".into(),
            );
        }
        let (seq, secrets) = self.kconn.update_rx_secret().map_err(|e| e.to_string())?;
        let rx = kernel_crypto_rx(self.version, secrets, seq)?;
        let fd = self.tcp.as_raw_fd();
        rx.set(&sys::borrow(&fd))
            .map_err(|e| ktls_io_error(e).to_string())
    }

    fn install_tx_key(&mut self) -> Result<(), String> {
        let (seq, secrets) = self.kconn.update_tx_secret().map_err(|e| e.to_string())?;
        let tx = kernel_crypto_tx(self.version, secrets, seq)?;
        let fd = self.tcp.as_raw_fd();
        tx.set(&sys::borrow(&fd))
            .map_err(|e| ktls_io_error(e).to_string())?;
        self.tx_records = 0;
        Ok(())
    }

    async fn send_alert(&mut self, level: u8, desc: AlertDescription) {
        let _ = self
            .send_record(RECORD_ALERT, &[level, u8::from(desc)])
            .await;
    }

    async fn close_notify(&mut self) {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.send_alert(ALERT_WARNING, AlertDescription::CloseNotify)
                .await;
        }
    }

    async fn send_record(&mut self, record_type: u8, payload: &[u8]) -> io::Result<()> {
        let fd = self.tcp.as_raw_fd();
        for _ in 0..64 {
            match sys::send_record(fd, record_type, payload) {
                Ok(_) => {
                    self.tx_records += 1;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable(false).await?,
                Err(e) => return Err(e),
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
            if self.read_closed {
                return (Ok(0), buf);
            }
            let (res, b) = self.tcp.read_append(buf).await;
            buf = b;
            match res {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    match self.on_control_record(&mut buf).await {
                        Control::Continue => {}
                        Control::Data(n) => return (Ok(n), buf),
                        Control::Eof => {
                            self.read_closed = true;
                            return (Ok(0), buf);
                        }
                        Control::Fail(e) => return (Err(e), buf),
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EBADMSG) => {
                    warn!(peer = ?self.peer, "kernel TLS could not authenticate a record from the client (bad record MAC); closing");
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
        if self.limit_reached(range.len()) {
            // Past this the AEAD's guarantees weaken: end the connection instead.
            warn!(peer = ?self.peer, "send key is near its confidentiality limit; closing the connection");
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
        if self.read_closed {
            return Ok(());
        }
        self.tcp.readable(false).await
    }

    async fn close(&mut self) {
        let _ = monoio::time::timeout(CLOSE_FLUSH_TIME, self.close_notify()).await;
        linger_close(&mut self.tcp).await;
    }

    fn abort(&mut self) {
        crate::sock::set_abortive_close(&self.tcp);
    }

    fn kernel_socket(&mut self) -> Option<&mut dyn KernelSocket> {
        Some(self)
    }
}

impl KernelSocket for KtlsStream {
    fn socket(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    fn account_sent(&mut self, bytes: u64) {
        self.count_sent(bytes);
    }
}
