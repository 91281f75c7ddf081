//! The pure half of driving rustls's unbuffered server connection: what a
//! rustls state asks the I/O shell to do next ([`step_of`]), and the encode
//! and encrypt calls that grow a buffer until rustls's output fits
//! ([`Sink`], [`Ciphertext`]). No socket here; `stream.rs` is the shell.

use std::io;

use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};

/// Where rustls writes the records it makes: an initialised region of
/// `room` bytes past what is already queued, then `commit` of how much of it
/// rustls filled.
pub(super) trait Sink {
    fn room(&mut self, room: usize) -> &mut [u8];
    fn commit(&mut self, room: usize, written: usize);
}

/// A plain vector: grows (zero-filled) by `room`, then shrinks to what was
/// written. Fine for handshake messages and small writes.
impl Sink for Vec<u8> {
    fn room(&mut self, room: usize) -> &mut [u8] {
        let start = self.len();
        self.resize(start + room, 0);
        &mut self[start..]
    }

    fn commit(&mut self, room: usize, written: usize) {
        self.truncate(self.len() - room + written);
    }
}

/// Queued ciphertext whose buffer stays initialised past the queued bytes:
/// rustls needs a `&mut [u8]` to write into, and a `Vec` zero-fills its
/// spare room on every `resize`, a whole extra pass over every response
/// byte. Here the zeroing happens once, when the buffer grows; after that
/// the bytes past `len` are stale ciphertext that rustls overwrites.
#[derive(Default)]
pub(crate) struct Ciphertext {
    /// Initialised all the way to `buf.len()`; `buf[..len]` is queued.
    buf: Vec<u8>,
    len: usize,
}

impl Ciphertext {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Ciphertext {
            buf: Vec::with_capacity(capacity),
            len: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hands the buffer out for a write of `buf[..n]` (`n` returned); give
    /// it back with `restore`.
    pub(crate) fn take(&mut self) -> (Vec<u8>, usize) {
        let n = std::mem::take(&mut self.len);
        (std::mem::take(&mut self.buf), n)
    }

    /// Takes a buffer back after a write: everything in it was sent.
    pub(crate) fn restore(&mut self, buf: Vec<u8>) {
        self.buf = buf;
        self.len = 0;
    }

    /// The buffer alone, emptied (to give back to the core's pool).
    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.buf
    }
}

impl Sink for Ciphertext {
    fn room(&mut self, room: usize) -> &mut [u8] {
        let end = self.len + room;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        &mut self.buf[self.len..end]
    }

    fn commit(&mut self, _room: usize, written: usize) {
        self.len += written;
    }
}

pub(super) fn encrypt_all(
    wt: &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
    data: &[u8],
    outgoing: &mut impl Sink,
) -> io::Result<()> {
    let records = data.len() / 16384 + 1;
    let mut room = data.len() + records * 64;
    loop {
        match wt.encrypt(data, outgoing.room(room)) {
            Ok(n) => {
                outgoing.commit(room, n);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(s)) if s.required_size > room => {
                outgoing.commit(room, 0);
                room = s.required_size
            }
            Err(e) => {
                outgoing.commit(room, 0);
                return Err(io::Error::other(e.to_string()));
            }
        }
    }
}

/// Queues a close_notify alert.
pub(super) fn close_notify_into(
    wt: &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
    outgoing: &mut impl Sink,
) -> io::Result<()> {
    const ROOM: usize = 64;
    match wt.queue_close_notify(outgoing.room(ROOM)) {
        Ok(n) => {
            outgoing.commit(ROOM, n);
            Ok(())
        }
        Err(e) => {
            outgoing.commit(ROOM, 0);
            Err(io::Error::other(e.to_string()))
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
    outgoing: &mut impl Sink,
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
    out: &mut impl Sink,
    e: &mut EncodeTlsData<'_, rustls::server::ServerConnectionData>,
) {
    let mut room = 4096;
    loop {
        match e.encode(out.room(room)) {
            Ok(n) => {
                out.commit(room, n);
                return;
            }
            Err(EncodeError::InsufficientSize(s)) if s.required_size > room => {
                out.commit(room, 0);
                room = s.required_size
            }
            Err(_) => {
                out.commit(room, 0);
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
