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

#[cfg(test)]
mod tests {
    //! The DER-carrying headers come from the connection's chain, not from
    //! the parsed certificate (which keeps no copy): the leaf for the PEM and
    //! `Client-Cert`, the rest, in order, for `Client-Cert-Chain`.

    use super::*;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use base64::Engine;
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

    fn chain() -> Vec<CertificateDer<'static>> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "Test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name.push(DnType::CommonName, "alice");
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        vec![leaf.der().clone(), ca.der().clone()]
    }

    fn header<'a>(out: &'a str, name: &str) -> Option<&'a str> {
        out.split("\r\n")
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn der_headers_are_written_from_the_chain() {
        let chain = chain();
        let cert = ClientCert::from_chain(&chain).unwrap();
        let fwd = IdentityForwarding {
            escaped_pem: Some("X-PEM".into()),
            client_cert: Some("Client-Cert".into()),
            client_cert_chain: Some("Client-Cert-Chain".into()),
            subject: Some("X-Subject".into()),
            ..IdentityForwarding::default()
        };
        let mut out = Vec::new();
        write(&fwd, &cert, &chain, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            header(&out, "Client-Cert"),
            Some(format!(":{}:", BASE64.encode(&chain[0])).as_str())
        );
        assert_eq!(
            header(&out, "Client-Cert-Chain"),
            Some(format!(":{}:", BASE64.encode(&chain[1])).as_str())
        );
        assert_eq!(
            header(&out, "X-PEM"),
            Some(identity::escaped_pem(&chain[0]).as_str())
        );
        assert_eq!(header(&out, "X-Subject"), Some("CN=alice"));

        // Only the leaf: no Client-Cert-Chain (RFC 9440 §2.3).
        let mut out = Vec::new();
        write(&fwd, &cert, &chain[..1], &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(header(&out, "Client-Cert").is_some());
        assert_eq!(header(&out, "Client-Cert-Chain"), None);
    }
}
