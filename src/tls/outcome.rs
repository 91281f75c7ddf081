//! What a server handshake yields: the facts about the client it
//! established ([`PeerIdentity`]), or why it failed ([`HandshakeFailure`]),
//! and how it reads the client's records ([`HandshakeReads`]). The stream
//! that runs the handshake is `stream`; these types are what the rest of the
//! gateway (accept, logging, metrics, kTLS) sees of it.

use std::io;

use rustls::{ProtocolVersion, SupportedCipherSuite};

use super::client_hello;

/// What the handshake established about the client, captured before rustls
/// may be converted away (kernel TLS keeps no copy of it).
///
/// The client's certificate chain is not here: rustls keeps it for a
/// userspace connection, and a copy here would be a second one on every
/// connection for its whole life (an idle one included). The transport
/// answers for it (`Transport::peer_certificates`): rustls's copy in
/// userspace, the one copy `KtlsStream` takes at the handover in the kernel.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    pub sni: Option<String>,
    pub version: Option<ProtocolVersion>,
    pub suite: Option<SupportedCipherSuite>,
    /// The handshake resumed a session (ticket or session ID) instead of
    /// verifying the client's certificate anew.
    pub resumed: bool,
    /// ALPN chose HTTP/2 (`h2`): the connection is served by `http2`.
    pub h2: bool,
}

#[non_exhaustive]
#[derive(Debug)]
pub enum HandshakeFailure {
    /// rustls refused the handshake; an alert was sent to the client.
    Tls(rustls::Error),
    /// The socket failed or the client closed it mid-handshake.
    Io(io::Error),
    /// The first bytes were not a TLS record (plain HTTP to a TLS port, a scanner).
    NotTls,
    /// The SNI names no site and the listener has no default site.
    UnknownServerName,
    /// The ClientHello could not be read (so no site could be chosen from
    /// it); refused with the alert the error names.
    BadClientHello(client_hello::HelloError),
    /// A resumed session restored a client certificate that has expired (or
    /// is not yet valid) since the session was established.
    ResumedCertificateExpired(rustls::CertificateError),
    /// The client's certificate verified, but its CertificateVerify
    /// signature did not (rustls reports this with the same error as a
    /// chain signature that does not verify; see `signature_failure`).
    CertificateVerify(rustls::Error),
}

/// How the handshake reads the client's records after its ClientHello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeReads {
    /// One record per read (a header, then exactly its body): nothing past
    /// the client's Finished is taken from the socket, so the kernel can
    /// take the connection over. Two reads per record: a TLS 1.3 client's
    /// second flight (ChangeCipherSpec, Certificate, CertificateVerify,
    /// Finished, four records) costs eight.
    ExactRecords,
    /// Whatever the socket has, in one read: for a connection that stays in
    /// userspace (kernel TLS off or missing), where bytes past Finished are
    /// simply the first application data. The client's second flight
    /// usually arrives in one segment and then costs one read.
    Available,
}
