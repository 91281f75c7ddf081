//! The pure half of driving rustls's unbuffered server connection: what a
//! rustls state asks the I/O shell to do next ([`step_of`]), and the encode
//! and encrypt calls that grow a buffer until rustls's output fits. No
//! socket here; `stream.rs` is the shell.

use std::io;

use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};

pub(super) fn encrypt_all(
    wt: &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
    data: &[u8],
    outgoing: &mut Vec<u8>,
) -> io::Result<()> {
    let start = outgoing.len();
    let records = data.len() / 16384 + 1;
    let mut room = data.len() + records * 64;
    loop {
        outgoing.resize(start + room, 0);
        match wt.encrypt(data, &mut outgoing[start..]) {
            Ok(n) => {
                outgoing.truncate(start + n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) if s.required_size > room => {
                room = s.required_size
            }
            Err(e) => {
                outgoing.truncate(start);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}

/// What the I/O shell must do next, decided from a rustls state without I/O.
pub(super) enum Step {
    Continue,
    Flush,
    NeedData,
    WriteTraffic,
    Plaintext(usize),
    Eof,
    Fail(rustls::Error),
}

pub(super) fn step_of(
    status: UnbufferedStatus<'_, '_, rustls::server::ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) -> (usize, Step) {
    let step = match status.state {
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            encode_into(outgoing, &mut e);
            Step::Continue
        }
        Ok(ConnectionState::TransmitTlsData(t)) => {
            // Marking it sent before the write is fine: the bytes are already in
            // `outgoing`, which the shell flushes before asking rustls again.
            t.done();
            Step::Flush
        }
        Ok(ConnectionState::BlockedHandshake) => Step::NeedData,
        Ok(ConnectionState::WriteTraffic(_)) => Step::WriteTraffic,
        Ok(ConnectionState::ReadTraffic(_)) => Step::Plaintext(0),
        Ok(ConnectionState::PeerClosed) | Ok(ConnectionState::Closed) => Step::Eof,
        Ok(other) => Step::Fail(rustls::Error::General(format!(
            "unexpected TLS state {other:?}"
        ))),
        Err(e) => Step::Fail(e),
    };
    (status.discard, step)
}

pub(super) fn encode_into(
    out: &mut Vec<u8>,
    e: &mut EncodeTlsData<'_, rustls::server::ServerConnectionData>,
) {
    let start = out.len();
    let mut room = 4096;
    loop {
        out.resize(start + room, 0);
        match e.encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(s)) if s.required_size > room => {
                room = s.required_size
            }
            Err(_) => {
                out.truncate(start);
                return;
            }
        }
    }
}

/// The `unrecognized_name` alert description (RFC 6066 section 3).
pub(super) const UNRECOGNIZED_NAME: u8 = 112;

/// A fatal alert record in plaintext (before the handshake, no keys exist yet).
pub(super) fn plaintext_alert(description: u8) -> [u8; 7] {
    const ALERT: u8 = 21;
    const FATAL: u8 = 2;
    [ALERT, 0x03, 0x03, 0x00, 0x02, FATAL, description]
}
