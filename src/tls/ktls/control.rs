//! What a kernel-TLS connection still does itself once the kernel holds the
//! keys, whatever drives its socket: reading the records that are not
//! application data (a plain read of one fails with EIO) and deciding what
//! each asks for (alert: close or error; close_notify: EOF; TLS 1.3
//! KeyUpdate: the new receive key now, ours after our answer; renegotiation:
//! refused), the records we owe the client in order, and the send key's AEAD
//! record limit.
//!
//! Both kernel streams use it: `KtlsStream` (completion mode, HTTP/1.1) and
//! `PollKtls` (readiness mode, HTTP/2). Nothing here waits: every syscall is
//! MSG_DONTWAIT, and what the socket cannot take now stays in `outbox` for
//! the stream to retry when it can write, each in its own way.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{AlertDescription, ProtocolVersion, SupportedCipherSuite};
use tracing::{info, warn};

use super::{kernel_crypto_rx, kernel_crypto_tx, ktls_io_error, sys};

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
/// A record's plaintext at most; a control record is one record.
const MAX_RECORD: usize = 16 * 1024;

/// What a control record asks of the reader.
pub(super) enum Control {
    /// Nothing for the reader: read on.
    Continue,
    /// Application data that came through the control read: `payload(n)`.
    Data(usize),
    /// close_notify: the client sends no more.
    Eof,
    /// The connection is over (the alert we owe, if any, is in the outbox).
    Fail(io::Error),
}

/// A record we owe the client, or the send-key switch that must follow one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgoing {
    Alert(u8, AlertDescription),
    /// Our KeyUpdate (update_not_requested), under the old send key.
    KeyUpdate,
    /// Then the new send key.
    InstallTxKey,
}

/// The state a kernel-TLS connection keeps besides its socket.
pub(super) struct KernelTls {
    /// Only what a TLS 1.3 KeyUpdate needs (the traffic secrets, in rustls's
    /// `KernelConnection`), and only where this kernel can take a new key:
    /// elsewhere a KeyUpdate ends the connection, and nothing of rustls is kept.
    kconn: Option<Box<KernelConnection<ServerConnectionData>>>,
    version: ProtocolVersion,
    peer: Option<SocketAddr>,
    /// Upper bound of records sent under the current send key.
    tx_records: u64,
    /// The suite's confidentiality limit (records per key); u64::MAX if none.
    tx_limit: u64,
    read_closed: bool,
    close_notify_sent: bool,
    key_updates: u32,
    /// Scratch for one control record: allocated on first use, since
    /// control records are rare, and given back when it held data.
    control: Vec<u8>,
    outbox: VecDeque<Outgoing>,
}

impl KernelTls {
    pub(super) fn new(
        kconn: KernelConnection<ServerConnectionData>,
        peer: Option<SocketAddr>,
        tx_seq: u64,
        can_rekey: bool,
    ) -> Self {
        let tx_limit = match kconn.negotiated_cipher_suite() {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        };
        let version = kconn.protocol_version();
        let kconn = (version == ProtocolVersion::TLSv1_3 && can_rekey).then(|| Box::new(kconn));
        KernelTls {
            kconn,
            version,
            peer,
            tx_records: tx_seq,
            tx_limit,
            read_closed: false,
            close_notify_sent: false,
            key_updates: 0,
            control: Vec::new(),
            outbox: VecDeque::new(),
        }
    }

    pub(super) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client's close_notify came, or we stopped reading for good.
    pub(super) fn read_closed(&self) -> bool {
        self.read_closed
    }

    /// Hands the payload of a `Control::Data(n)` to `out`, then gives the
    /// scratch space back.
    pub(super) fn take_payload(&mut self, n: usize, out: impl FnOnce(&[u8])) {
        out(&self.control[..n.min(self.control.len())]);
        self.control = Vec::new();
    }

    /// Counts `bytes` sent (by write or splice) against the send key's
    /// record limit. Each send may end a record early, hence the +1.
    pub(super) fn count_sent(&mut self, bytes: u64) {
        self.tx_records = self
            .tx_records
            .saturating_add(bytes.div_ceil(MAX_RECORD as u64) + 1);
    }

    /// Whether sending `bytes` more would come near the AEAD limit.
    pub(super) fn limit_reached(&self, bytes: usize) -> bool {
        let records = (bytes as u64).div_ceil(MAX_RECORD as u64) + 1;
        self.tx_records.saturating_add(records) >= self.tx_limit.saturating_sub(LIMIT_MARGIN)
    }

    /// Queues our close_notify (once).
    pub(super) fn queue_close_notify(&mut self) {
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.outbox.push_back(Outgoing::Alert(
                ALERT_WARNING,
                AlertDescription::CloseNotify,
            ));
        }
    }

    pub(super) fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Sends what we owe, in order, as far as the socket takes it now:
    /// Err(WouldBlock) means wait until it is writable and call again.
    pub(super) fn send_outbox(&mut self, fd: RawFd) -> io::Result<()> {
        while let Some(&next) = self.outbox.front() {
            match next {
                Outgoing::Alert(level, desc) => {
                    sys::send_record(fd, RECORD_ALERT, &[level, u8::from(desc)])?;
                    self.tx_records += 1;
                }
                Outgoing::KeyUpdate => {
                    sys::send_record(fd, RECORD_HANDSHAKE, &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0])?;
                    self.tx_records += 1;
                }
                Outgoing::InstallTxKey => {
                    if let Err(why) = self.install_tx_key(fd) {
                        self.outbox.clear();
                        warn!(peer = ?self.peer, reason = %why, "cannot install our new send key; closing the connection");
                        return Err(io::Error::other(why));
                    }
                }
            }
            self.outbox.pop_front();
        }
        Ok(())
    }

    /// A read of the socket failed with EIO: the next record is not
    /// application data. Fetches it and says what it means; what we owe in
    /// answer is queued (`send_outbox`).
    pub(super) fn on_control_record(&mut self, fd: RawFd) -> Control {
        if self.control.is_empty() {
            self.control = vec![0; MAX_RECORD + 512];
        }
        let (record_type, len) = match sys::recv_record(fd, &mut self.control) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Control::Continue,
            Err(e) => return Control::Fail(e),
        };
        let control = std::mem::take(&mut self.control);
        let payload = &control[..len.min(control.len())];
        let answer = match record_type {
            RECORD_APPLICATION_DATA => Control::Data(payload.len()),
            RECORD_ALERT => self.on_alert(payload),
            RECORD_HANDSHAKE => self.on_handshake(fd, payload),
            other => {
                self.fatal(AlertDescription::UnexpectedMessage);
                Control::Fail(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("client sent TLS record type {other}"),
                ))
            }
        };
        // The scratch stays while the reader still has to copy data out of
        // it; otherwise an idle connection does not keep 16 KiB for the
        // rare next control record.
        if matches!(answer, Control::Data(_)) {
            self.control = control;
        }
        answer
    }

    fn fatal(&mut self, desc: AlertDescription) {
        self.outbox.push_back(Outgoing::Alert(ALERT_FATAL, desc));
    }

    fn on_alert(&mut self, payload: &[u8]) -> Control {
        let [level, desc] = match payload {
            [level, desc] => [*level, *desc],
            _ => {
                self.fatal(AlertDescription::DecodeError);
                return Control::Fail(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed alert record",
                ));
            }
        };
        let description = AlertDescription::from(desc);
        match description {
            AlertDescription::CloseNotify => {
                self.read_closed = true;
                Control::Eof
            }
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

    fn on_handshake(&mut self, fd: RawFd, msg: &[u8]) -> Control {
        let msg_type = msg.first().copied();
        if self.version == ProtocolVersion::TLSv1_2 && msg_type == Some(HANDSHAKE_CLIENT_HELLO) {
            // Renegotiation is never offered; say so and carry on, as rustls does.
            self.outbox.push_back(Outgoing::Alert(
                ALERT_WARNING,
                AlertDescription::NoRenegotiation,
            ));
            return Control::Continue;
        }
        let Some(update_requested) = key_update(self.version, msg) else {
            self.fatal(AlertDescription::UnexpectedMessage);
            return Control::Fail(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected handshake message after the handshake",
            ));
        };
        self.key_updates += 1;
        if self.key_updates > MAX_KEY_UPDATES {
            self.fatal(AlertDescription::UnexpectedMessage);
            return Control::Fail(io::Error::new(
                io::ErrorKind::InvalidData,
                "too many KeyUpdates",
            ));
        }
        if let Err(why) = self.install_rx_key(fd) {
            warn!(
                peer = ?self.peer,
                reason = %why,
                "client sent a TLS 1.3 KeyUpdate, but this kernel cannot take a new key into kernel TLS \
                 (rekeying needs Linux 6.13 or newer); closing the connection cleanly"
            );
            self.queue_close_notify();
            self.read_closed = true;
            return Control::Fail(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "kernel cannot rekey kernel TLS",
            ));
        }
        if update_requested {
            // Announce ours under the old key, then switch.
            self.outbox.push_back(Outgoing::KeyUpdate);
            self.outbox.push_back(Outgoing::InstallTxKey);
        }
        Control::Continue
    }

    fn install_rx_key(&mut self, fd: RawFd) -> Result<(), String> {
        let Some(kconn) = self.kconn.as_mut() else {
            return Err(
                "the start-up probe found the kernel cannot set TLS_RX twice (EBUSY)".into(),
            );
        };
        let (seq, secrets) = kconn.update_rx_secret().map_err(|e| e.to_string())?;
        let rx = kernel_crypto_rx(self.version, secrets, seq)?;
        rx.set(&sys::borrow(&fd))
            .map_err(|e| ktls_io_error(e).to_string())
    }

    fn install_tx_key(&mut self, fd: RawFd) -> Result<(), String> {
        let Some(kconn) = self.kconn.as_mut() else {
            return Err("no TLS 1.3 secrets kept for a new send key".into());
        };
        let (seq, secrets) = kconn.update_tx_secret().map_err(|e| e.to_string())?;
        let tx = kernel_crypto_tx(self.version, secrets, seq)?;
        tx.set(&sys::borrow(&fd))
            .map_err(|e| ktls_io_error(e).to_string())?;
        self.tx_records = 0;
        Ok(())
    }
}

/// A TLS 1.3 KeyUpdate message: Some(update_requested), else None (anything
/// else, or any other version).
fn key_update(version: ProtocolVersion, msg: &[u8]) -> Option<bool> {
    match msg {
        [HANDSHAKE_KEY_UPDATE, 0, 0, 1, request @ (0 | 1)]
            if version == ProtocolVersion::TLSv1_3 =>
        {
            Some(*request == 1)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_update_is_recognised_byte_by_byte() {
        let v13 = ProtocolVersion::TLSv1_3;
        assert_eq!(key_update(v13, &[24, 0, 0, 1, 0]), Some(false));
        assert_eq!(key_update(v13, &[24, 0, 0, 1, 1]), Some(true));
        // request_update outside {0, 1}, wrong length, wrong type, TLS 1.2.
        assert_eq!(key_update(v13, &[24, 0, 0, 1, 2]), None);
        assert_eq!(key_update(v13, &[24, 0, 0, 2, 0, 0]), None);
        assert_eq!(key_update(v13, &[24, 0, 0, 1]), None);
        assert_eq!(key_update(v13, &[20, 0, 0, 1, 0]), None);
        assert_eq!(
            key_update(ProtocolVersion::TLSv1_2, &[24, 0, 0, 1, 0]),
            None
        );
    }
}
