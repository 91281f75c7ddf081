//! Tells a client whose CertificateVerify signature does not verify apart
//! from a client certificate whose chain signature does not.
//!
//! rustls reports both as `InvalidCertificate(BadSignature)` and answers
//! both with decrypt_error (as OpenSSL does), so the gateway used to log a
//! client that presented a perfectly good certificate, and then could not
//! sign the handshake with its key, as "certificate not signed by a trusted
//! CA", and count it as `unknown_ca`. Found by tlsfuzzer's CertificateVerify
//! scripts (tests/tlsfuzzer/run.sh).
//!
//! [`NoteSignatureFailures`] wraps the client verifier and, when the
//! CertificateVerify check fails, notes it in a per-thread flag; the
//! handshake driver reads the flag right after rustls handed back the error.
//! That is sound because each core runs its connections on one thread and
//! rustls calls the verifier inside the very `process_tls_records` call
//! that returns the error: no other handshake can run in between (there is
//! no await between the two), and the driver clears the flag before each
//! call so a stale one is never read. The alert is rustls's, unchanged.

use std::cell::Cell;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

thread_local! {
    static CERTIFICATE_VERIFY_FAILED: Cell<bool> = const { Cell::new(false) };
}

/// Forgets any earlier note (call before handing rustls more input).
pub fn clear() {
    CERTIFICATE_VERIFY_FAILED.with(|f| f.set(false));
}

/// Whether `e`, just returned by rustls on this thread, is the client's
/// CertificateVerify signature failing to verify (as opposed to its
/// certificate chain, which rustls reports with the same error).
pub fn is_certificate_verify_failure(e: &Error) -> bool {
    let noted = CERTIFICATE_VERIFY_FAILED.with(|f| f.replace(false));
    noted && matches!(e, Error::InvalidCertificate(CertificateError::BadSignature))
}

fn note<T>(result: Result<T, Error>) -> Result<T, Error> {
    if result.is_err() {
        CERTIFICATE_VERIFY_FAILED.with(|f| f.set(true));
    }
    result
}

/// A client verifier that notes CertificateVerify failures; every decision
/// is the wrapped verifier's.
#[derive(Debug)]
pub struct NoteSignatureFailures(pub Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for NoteSignatureFailures {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        note(self.0.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        note(self.0.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: Error = Error::InvalidCertificate(CertificateError::BadSignature);

    #[test]
    fn only_a_noted_bad_signature_counts_and_only_once() {
        clear();
        assert!(!is_certificate_verify_failure(&BAD), "nothing noted");
        let _ = note::<()>(Err(BAD));
        assert!(is_certificate_verify_failure(&BAD));
        assert!(!is_certificate_verify_failure(&BAD), "the note is consumed");
        let _ = note::<()>(Err(BAD));
        assert!(
            !is_certificate_verify_failure(&Error::NoCertificatesPresented),
            "another error is not a CertificateVerify failure"
        );
        let _ = note::<()>(Err(BAD));
        clear();
        assert!(!is_certificate_verify_failure(&BAD), "cleared");
        let _ = note::<()>(Ok(()));
        assert!(
            !is_certificate_verify_failure(&BAD),
            "success notes nothing"
        );
    }
}
