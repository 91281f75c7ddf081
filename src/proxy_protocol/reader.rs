//! Reads a PROXY header off an accepted socket, and not one byte more.
//!
//! The TLS handshake that follows reads one record at a time so the
//! connection can move to kernel TLS at a record boundary; a reader that
//! over-read here would swallow the start of the ClientHello. So: read
//! exactly `FIRST_READ` bytes, then exactly as many more as the parser says
//! it needs (v2: the rest by its length; v1: a byte at a time up to the CRLF,
//! 107 bytes at most). The caller bounds the whole thing with the handshake
//! deadline.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRentExt;
use monoio::net::TcpStream;

use super::{parse, Header, Invalid, Parsed, FIRST_READ};
use crate::trusted_proxies::TrustedProxies;

/// Why a connection on a `proxy_protocol` listener was closed before TLS.
#[derive(Debug)]
pub enum Refused {
    /// The TCP peer is not in the listener's `trusted_proxies`.
    UntrustedPeer,
    /// The first bytes are not a valid PROXY header (or there is none).
    Invalid(Invalid),
    /// The peer closed or the socket failed before the header was complete.
    Io(io::Error),
    /// No complete header before the deadline.
    TimedOut,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::UntrustedPeer => f.write_str(
                "the peer is not in trusted_proxies, so its PROXY header cannot be believed",
            ),
            Refused::Invalid(why) => write!(f, "{why}"),
            Refused::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the peer closed the connection before a complete PROXY header")
            }
            Refused::Io(e) => write!(f, "reading the PROXY header failed: {e}"),
            Refused::TimedOut => {
                f.write_str("no complete PROXY header within the handshake timeout")
            }
        }
    }
}

/// Checks that `peer` may speak the PROXY protocol, reads its header within
/// `timeout`, and returns the client address it names (or `peer` when it
/// names none).
pub async fn read_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trusted: &TrustedProxies,
    timeout: Duration,
) -> Result<(SocketAddr, Header), Refused> {
    if !trusted.contains(peer.ip()) {
        return Err(Refused::UntrustedPeer);
    }
    match monoio::time::timeout(timeout, read(tcp)).await {
        Ok(Ok(header)) => Ok((header.source.unwrap_or(peer), header)),
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err(Refused::TimedOut),
    }
}

async fn read(tcp: &mut TcpStream) -> Result<Header, Refused> {
    let mut buf = Vec::with_capacity(64);
    let mut want = FIRST_READ;
    loop {
        read_exact_to(tcp, &mut buf, want)
            .await
            .map_err(Refused::Io)?;
        match parse(&buf).map_err(Refused::Invalid)? {
            Parsed::Complete(header) => {
                // The parser only ever asked for bytes of the header itself.
                debug_assert_eq!(header.len, buf.len());
                return Ok(header);
            }
            Parsed::NeedAtLeast(n) if n > buf.len() => want = n,
            Parsed::NeedAtLeast(_) => {
                return Err(Refused::Invalid(Invalid(
                    "PROXY header parser made no progress",
                )))
            }
        }
    }
}

/// Grows `buf` to exactly `end` bytes from the socket.
async fn read_exact_to(tcp: &mut TcpStream, buf: &mut Vec<u8>, end: usize) -> io::Result<()> {
    let start = buf.len();
    if end <= start {
        return Ok(());
    }
    buf.reserve(end - start);
    let owned = std::mem::take(buf);
    let (res, slice) = tcp.read_exact(owned.slice_mut(start..end)).await;
    *buf = slice.into_inner();
    res.map(|_| ())
}
