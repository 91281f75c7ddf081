//! Why the client verifier refused a client, in words, and how those words
//! reach the log line although rustls only passes on a `rustls::Error`.
//!
//! rustls picks the TLS alert from the error a verifier returns
//! (`UnknownIssuer` -> unknown_ca, `InvalidPurpose` -> unsupported_certificate,
//! `PeerMisbehaved` -> illegal_parameter), and none of those variants can
//! carry our reason. So the verifier returns the variant that sends the right
//! alert and leaves the reason in a per-thread slot ([`refuse`]); the
//! handshake driver, synchronously after rustls handed that error back and
//! before anything can await, swaps the error for one carrying the reason
//! ([`with_reason`]). The alert is queued by then, so the client still gets
//! the right one. This is sound because each core runs its connections on one
//! thread and rustls calls the verifier inside the very `process_tls_records`
//! call that returns the error: no other connection can run in between. The
//! slot is emptied when each verification starts and matched against the
//! error itself, so a stale entry is ignored, never attached to another
//! connection's failure.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use rustls::pki_types::alg_id;

use crate::metrics::HandshakeReason;
use rustls::{CertificateError, Error, OtherError, SignatureScheme};

/// A client refused by one of the rules rustls's own verifier does not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The end-entity certificate has keyUsage without digitalSignature, so
    /// its key may not sign the handshake (RFC 5280 §4.2.1.3).
    LeafKeyUsage,
    /// An intermediate CA of the only paths to a trusted CA has keyUsage
    /// without keyCertSign, so it may not issue certificates.
    IntermediateKeyUsage {
        /// RFC 4514, escaped to printable ASCII.
        subject: String,
    },
    /// The client signed its CertificateVerify under a scheme its key cannot
    /// have made: in TLS 1.3 each ECDSA scheme names its curve (RFC 8446
    /// §4.2.3); in either version the scheme names the key type.
    SchemeKeyMismatch {
        scheme: SignatureScheme,
        /// "P-256", "RSA", ... (see [`key_name`]).
        key: &'static str,
    },
}

impl Refusal {
    /// The `portcullis_handshake_failures_total` reason it counts under.
    pub fn metric_reason(&self) -> HandshakeReason {
        match self {
            Refusal::LeafKeyUsage | Refusal::IntermediateKeyUsage { .. } => {
                HandshakeReason::KeyUsage
            }
            // The certificate is fine; the client's TLS stack signed wrongly.
            Refusal::SchemeKeyMismatch { .. } => HandshakeReason::Protocol,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::LeafKeyUsage => {
                f.write_str("client certificate keyUsage lacks digitalSignature")
            }
            Refusal::IntermediateKeyUsage { subject } => {
                write!(
                    f,
                    "intermediate CA \"{subject}\" keyUsage lacks keyCertSign"
                )
            }
            Refusal::SchemeKeyMismatch { scheme, key } => {
                let ecdsa = matches!(
                    scheme,
                    SignatureScheme::ECDSA_NISTP256_SHA256
                        | SignatureScheme::ECDSA_NISTP384_SHA384
                        | SignatureScheme::ECDSA_NISTP521_SHA512
                        | SignatureScheme::ECDSA_SHA1_Legacy
                );
                write!(
                    f,
                    "{}signature scheme {} does not match the client's {key} key",
                    if ecdsa { "ECDSA " } else { "" },
                    scheme_name(*scheme)
                )
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// The IANA name of a signature scheme (what RFC 8446 and OpenSSL print).
pub fn scheme_name(scheme: SignatureScheme) -> String {
    use SignatureScheme as S;
    let name = match scheme {
        S::ECDSA_NISTP256_SHA256 => "ecdsa_secp256r1_sha256",
        S::ECDSA_NISTP384_SHA384 => "ecdsa_secp384r1_sha384",
        S::ECDSA_NISTP521_SHA512 => "ecdsa_secp521r1_sha512",
        S::ECDSA_SHA1_Legacy => "ecdsa_sha1",
        S::RSA_PKCS1_SHA1 => "rsa_pkcs1_sha1",
        S::RSA_PKCS1_SHA256 => "rsa_pkcs1_sha256",
        S::RSA_PKCS1_SHA384 => "rsa_pkcs1_sha384",
        S::RSA_PKCS1_SHA512 => "rsa_pkcs1_sha512",
        S::RSA_PSS_SHA256 => "rsa_pss_rsae_sha256",
        S::RSA_PSS_SHA384 => "rsa_pss_rsae_sha384",
        S::RSA_PSS_SHA512 => "rsa_pss_rsae_sha512",
        S::ED25519 => "ed25519",
        S::ED448 => "ed448",
        S::ML_DSA_44 => "mldsa44",
        S::ML_DSA_65 => "mldsa65",
        S::ML_DSA_87 => "mldsa87",
        other => return format!("0x{:04x}", u16::from(other)),
    };
    name.to_string()
}

/// The kind of key a SubjectPublicKeyInfo algorithm identifier (its contents,
/// as webpki reports them) names.
pub fn key_name(spki_algorithm: &[u8]) -> &'static str {
    let known = [
        (alg_id::ECDSA_P256, "P-256"),
        (alg_id::ECDSA_P384, "P-384"),
        (alg_id::ECDSA_P521, "P-521"),
        (alg_id::ECDSA_P256K1, "secp256k1"),
        (alg_id::RSA_ENCRYPTION, "RSA"),
        (alg_id::ED25519, "Ed25519"),
        (alg_id::ED448, "Ed448"),
        (alg_id::ML_DSA_44, "ML-DSA-44"),
        (alg_id::ML_DSA_65, "ML-DSA-65"),
        (alg_id::ML_DSA_87, "ML-DSA-87"),
    ];
    known
        .iter()
        .find(|(id, _)| id.as_ref() == spki_algorithm)
        .map_or("unrecognised", |(_, name)| name)
}

thread_local! {
    /// The alert-carrying error the last refusal on this thread returned, and
    /// the refusal behind it. See the module comment.
    static LAST: Cell<Option<(Error, Refusal)>> = const { Cell::new(None) };
}

/// Remembers `refusal` and returns `alert`, the error to give rustls (it
/// chooses the alert from it).
pub(super) fn refuse(alert: Error, refusal: Refusal) -> Error {
    LAST.with(|slot| slot.set(Some((alert.clone(), refusal))));
    alert
}

/// Empties the slot. Every verifier entry point calls this first, so a
/// recorded refusal always belongs to the latest verification on this
/// thread, the one whose error the driver is looking at; an entry nobody
/// consumed can never be attached to a later, unrelated failure.
pub(super) fn clear() {
    LAST.with(|slot| slot.set(None));
}

/// For the handshake driver, right after rustls returned `e` and before any
/// await: `e` with the reason the verifier gave for it, if it gave one. The
/// result is `InvalidCertificate(Other(..))`, which [`refusal`] reads back.
pub fn with_reason(e: Error) -> Error {
    match LAST.with(Cell::take) {
        Some((alert, refusal)) if alert == e => {
            Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refusal))))
        }
        _ => e,
    }
}

/// The refusal inside an error made by [`with_reason`].
pub fn refusal(e: &Error) -> Option<&Refusal> {
    match e {
        Error::InvalidCertificate(CertificateError::Other(other)) => other.0.downcast_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::PeerMisbehaved;

    #[test]
    fn reasons_name_the_rule() {
        assert_eq!(
            Refusal::LeafKeyUsage.to_string(),
            "client certificate keyUsage lacks digitalSignature"
        );
        assert_eq!(
            Refusal::IntermediateKeyUsage {
                subject: "CN=Issuing CA 2,O=Example".into()
            }
            .to_string(),
            "intermediate CA \"CN=Issuing CA 2,O=Example\" keyUsage lacks keyCertSign"
        );
        assert_eq!(
            Refusal::SchemeKeyMismatch {
                scheme: SignatureScheme::ECDSA_NISTP384_SHA384,
                key: "P-256"
            }
            .to_string(),
            "ECDSA signature scheme ecdsa_secp384r1_sha384 does not match the client's P-256 key"
        );
        assert_eq!(
            Refusal::SchemeKeyMismatch {
                scheme: SignatureScheme::RSA_PSS_SHA256,
                key: "P-256"
            }
            .to_string(),
            "signature scheme rsa_pss_rsae_sha256 does not match the client's P-256 key"
        );
        assert_eq!(scheme_name(SignatureScheme::Unknown(0xfe01)), "0xfe01");
    }

    #[test]
    fn key_names_from_spki_algorithms() {
        assert_eq!(key_name(alg_id::ECDSA_P256.as_ref()), "P-256");
        assert_eq!(key_name(alg_id::ECDSA_P521.as_ref()), "P-521");
        assert_eq!(key_name(alg_id::RSA_ENCRYPTION.as_ref()), "RSA");
        assert_eq!(key_name(b"\x06\x01\x00"), "unrecognised");
    }

    #[test]
    fn the_reason_follows_only_its_own_error() {
        let alert = Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let refusal = Refusal::IntermediateKeyUsage {
            subject: "CN=x".into(),
        };
        // The same error comes back: it gains the reason, once.
        assert_eq!(refuse(alert.clone(), refusal.clone()), alert);
        let explained = with_reason(alert.clone());
        assert_eq!(super::refusal(&explained), Some(&refusal));
        assert_eq!(with_reason(alert.clone()), alert, "the slot is emptied");

        // A different error does not pick up a stale reason (and clears it).
        refuse(alert.clone(), refusal.clone());
        let other: Error = PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into();
        assert_eq!(with_reason(other.clone()), other);
        assert_eq!(with_reason(alert.clone()), alert);

        // clear() (every verification starts with it) drops an unconsumed reason.
        refuse(alert.clone(), refusal);
        clear();
        assert_eq!(with_reason(alert.clone()), alert);
        assert_eq!(super::refusal(&alert), None);
    }

    #[test]
    fn metric_reasons() {
        assert_eq!(
            Refusal::LeafKeyUsage.metric_reason(),
            HandshakeReason::KeyUsage
        );
        let m = Refusal::SchemeKeyMismatch {
            scheme: SignatureScheme::ED25519,
            key: "RSA",
        };
        assert_eq!(m.metric_reason(), HandshakeReason::Protocol);
    }
}
