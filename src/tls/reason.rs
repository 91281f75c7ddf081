//! Handshake failures in plain words, for the one log line an operator reads.

use rustls::{CertificateError, Error};

use crate::metrics::HandshakeReason;

use super::client_verifier::Refusal;

/// Whether a handshake failed because of the client's certificate (as
/// opposed to the client's TLS stack, or the network).
pub fn is_client_certificate_error(e: &Error) -> bool {
    matches!(
        e,
        Error::NoCertificatesPresented | Error::InvalidCertificate(_)
    )
}

/// Why a client whose certificate verified but whose CertificateVerify
/// signature did not was refused.
pub const CERTIFICATE_VERIFY_FAILED: &str = "CertificateVerify signature does not verify with the client certificate's key (the client does not hold that key, or signed something else)";

/// The rustls error inside an I/O error from a TLS stream, if that is what
/// it carries (as opposed to the socket failing).
pub fn tls_error(e: &std::io::Error) -> Option<&Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
}

/// "client sent no certificate", "certificate not signed by a trusted CA",
/// "certificate expired at 2026-01-01T00:00:00Z", ...
pub fn describe(e: &Error) -> String {
    match e {
        Error::NoCertificatesPresented => "client sent no certificate".into(),
        Error::InvalidCertificate(c) => describe_certificate(c),
        Error::PeerIncompatible(p) => {
            format!("client offered nothing this listener accepts ({p:?})")
        }
        Error::PeerMisbehaved(p) => format!("client violated the TLS protocol ({p:?})"),
        Error::AlertReceived(a) => format!("client aborted the handshake with alert {a:?}"),
        Error::InvalidMessage(m) => format!("client sent an invalid TLS message ({m:?})"),
        other => other.to_string(),
    }
}

fn describe_certificate(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => "certificate not signed by a trusted CA".into(),
        CertificateError::Expired => "certificate expired".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("certificate expired at {}", rfc3339(not_after.as_secs()))
        }
        CertificateError::NotValidYet => "certificate not yet valid".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("certificate not valid before {}", rfc3339(not_before.as_secs()))
        }
        CertificateError::Revoked => "certificate revoked".into(),
        // The verifier found a trusted CA with the issuer's name, but that CA's
        // key did not sign the certificate: from the operator's side, the same
        // problem as an unknown issuer.
        CertificateError::BadSignature => {
            "certificate not signed by a trusted CA (a trusted CA has the issuer's name, but its key did not sign it)".into()
        }
        CertificateError::BadEncoding => "certificate is not valid DER".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate is not valid for TLS client authentication".into()
        }
        // A rule of our own verifier (keyUsage, ECDSA scheme vs curve): it
        // says which one.
        CertificateError::Other(other) => match other.0.downcast_ref::<Refusal>() {
            Some(refusal) => refusal.to_string(),
            None => format!("certificate rejected ({c:?})"),
        },
        other => format!("certificate rejected ({other:?})"),
    }
}

fn rfc3339(unix_secs: u64) -> String {
    let formatted = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    formatted.unwrap_or_else(|| format!("unix time {unix_secs}"))
}

/// The `portcullis_handshake_failures_total` reason a failed handshake counts under.
pub fn metric_reason(failure: &super::HandshakeFailure) -> HandshakeReason {
    use super::HandshakeFailure as F;
    use rustls::{CertificateError as C, Error as E};
    if let F::Tls(e) = failure {
        if let Some(refusal) = super::client_verifier::refusal(e) {
            return refusal.metric_reason();
        }
    }
    match failure {
        F::Tls(E::NoCertificatesPresented) => HandshakeReason::NoCertificate,
        F::Tls(E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
            HandshakeReason::UnknownCa
        }
        F::Tls(E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }))
        | F::ResumedCertificateExpired(_) => HandshakeReason::Expired,
        F::Tls(E::InvalidCertificate(C::Revoked)) => HandshakeReason::Revoked,
        F::UnknownServerName => HandshakeReason::UnknownSite,
        F::Tls(E::InvalidCertificate(_)) => HandshakeReason::BadCertificate,
        // The certificate is fine; the client could not sign with its key.
        F::CertificateVerify(_) | F::Tls(_) | F::NotTls => HandshakeReason::Protocol,
        F::Io(_) => HandshakeReason::Io,
        F::BadClientHello(_) => HandshakeReason::BadClientHello,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;
    use std::time::Duration;

    #[test]
    fn reasons_read_as_plain_words() {
        assert_eq!(
            describe(&Error::NoCertificatesPresented),
            "client sent no certificate"
        );
        let unknown = Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(describe(&unknown), "certificate not signed by a trusted CA");
        let expired = Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_767_225_600)),
        });
        assert_eq!(
            describe(&expired),
            "certificate expired at 2026-01-01T00:00:00Z"
        );
        assert!(is_client_certificate_error(&unknown));
    }

    #[test]
    fn verifier_refusals_read_as_their_rule() {
        use rustls::OtherError;
        use std::sync::Arc;
        let e = Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            Refusal::LeafKeyUsage,
        ))));
        assert_eq!(
            describe(&e),
            "client certificate keyUsage lacks digitalSignature"
        );
        assert!(is_client_certificate_error(&e));
    }
}
