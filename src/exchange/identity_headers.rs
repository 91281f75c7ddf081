//! The client-identity headers a route forwards to its backend.
//!
//! Incoming copies of every identity header are stripped before these are
//! written (see `GatewaySettings::identity_headers`), so a backend can trust
//! that what it sees came from the gateway's own TLS verification.

use rustls::pki_types::CertificateDer;

use crate::config::IdentityForwarding;
use crate::http::head::put_header;
use crate::identity::{self, ClientCert};

/// Appends one `Name: value\r\n` line per enabled header to `out`. `cert`
/// was parsed from `chain` (leaf first), which the DER-carrying headers
/// are written from.
pub(crate) fn write(
    fwd: &IdentityForwarding,
    cert: &ClientCert,
    chain: &[CertificateDer<'_>],
    out: &mut Vec<u8>,
) {
    let Some((leaf, intermediates)) = chain.split_first() else {
        // A parsed certificate came from a chain: never empty here.
        return;
    };
    if let Some(name) = &fwd.escaped_pem {
        put_header(out, name.as_bytes(), identity::escaped_pem(leaf).as_bytes());
    }
    if let Some(name) = &fwd.client_cert {
        let value = identity::rfc9440_client_cert(leaf);
        put_header(out, name.as_bytes(), value.as_bytes());
    }
    if let Some(name) = &fwd.client_cert_chain {
        // RFC 9440 §2.3: omitted when there is no chain to send.
        if let Some(value) = identity::rfc9440_client_cert_chain(intermediates) {
            put_header(out, name.as_bytes(), value.as_bytes());
        }
    }
    if let Some(name) = &fwd.xfcc {
        put_header(out, name.as_bytes(), identity::xfcc(cert).as_bytes());
    }
    if let Some(name) = &fwd.subject {
        put_header(out, name.as_bytes(), cert.subject.as_bytes());
    }
    if let Some(name) = &fwd.fingerprint {
        put_header(out, name.as_bytes(), cert.fingerprint_hex().as_bytes());
    }
}
