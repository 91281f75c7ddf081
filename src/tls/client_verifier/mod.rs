//! The client-certificate verifier of every site that asks for one.
//!
//! It does what rustls's `WebPkiClientVerifier` does (webpki path building to
//! the site's CAs, the CLIENT_AUTH EKU, the site's CRLs for the client's own
//! certificate with unknown status allowed, optional or mandatory, the CAs'
//! names as hints) and adds the checks OpenSSL-based peers (nginx, HAProxy)
//! make and webpki does not:
//!
//! - the client's certificate, if it has keyUsage, must allow
//!   digitalSignature: its key signs the handshake (RFC 5280 §4.2.1.3);
//! - every intermediate CA on the path must, if it has keyUsage, allow
//!   keyCertSign. This runs inside path building (webpki's `verify_path`), so
//!   a client that also sent a proper intermediate still gets through;
//! - in TLS 1.3, an ECDSA CertificateVerify must use the scheme of the key's
//!   own curve (RFC 8446 §4.2.3): ecdsa_secp384r1_sha384 only with P-384, and
//!   so on. TLS 1.2 schemes do not name a curve and keep the usual mapping.
//!
//! Refusals send the alert OpenSSL sends for the same fault (unsupported
//! certificate, unknown CA, illegal parameter) and log which rule failed (see
//! [`refusal`]). Errors webpki reports are mapped as rustls maps them, so the
//! alerts and reasons of expired, revoked or untrusted clients are unchanged.
//!
//! Per handshake this adds one DER walk (`key_usage`: a few TLV headers, no
//! allocation) for the client's certificate and one per intermediate of each
//! candidate path, over certificates webpki has already parsed. Allocation
//! is what rustls's verifier does (a Vec of CRL references when the site has
//! CRLs), plus the reason of a refused client.
//!
//! A chain this verifier accepted before on this core is found in the
//! per-core verified-chain cache ([`cache`]; `[tls] verified_chain_cache`
//! entries, 0 = off) and not built again: one SHA-256 over the chain's bytes
//! instead of path building and its signature checks. A miss costs that hash
//! and, after a success, three more DER walks (`validity`) for the window.

mod cache;
mod refusal;
#[cfg(test)]
mod tests;
mod validity;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, TrustAnchor,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertRevocationListError, CertificateError, DigitallySignedStruct, DistinguishedName, Error,
    ExtendedKeyPurpose, OtherError, PeerMisbehaved, RootCertStore, SignatureScheme,
};
use webpki::{
    CertRevocationList, ExpirationPolicy, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy, VerifiedPath,
};

pub use refusal::{refusal, with_reason, Refusal};

use super::key_usage::key_usage;
use refusal::{clear, refuse};
use validity::{validity, Window};

/// Revocation as before this verifier existed: a CRL past its nextUpdate
/// still counts. The chain cache relies on it: with `Enforce`, a cached
/// success would also have to end at the earliest nextUpdate of the CRLs
/// consulted, which `window` does not add. Changing the policy without
/// that fails to compile.
const CRL_EXPIRATION: ExpirationPolicy = ExpirationPolicy::Ignore;
const _: () = assert!(
    matches!(CRL_EXPIRATION, ExpirationPolicy::Ignore),
    "the verified-chain cache window must then include the CRLs' nextUpdate"
);

/// Ids of verifiers, for the chain cache's keys: one per `build`, never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A site's client verifier: `mandatory` refuses clients without a
/// certificate; otherwise they are let in and a presented certificate must
/// still verify. `algorithms` are the crypto provider's. `chain_cache` is
/// the bound of this core's verified-chain cache, 0 = off (see [`cache`]).
pub fn build(
    client_roots: &[CertificateDer<'static>],
    crls: &[CertificateRevocationListDer<'static>],
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
    chain_cache: usize,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut store = RootCertStore::empty();
    for ca in client_roots {
        store
            .add(ca.clone())
            .map_err(|e| format!("a client CA is not usable: {e}"))?;
    }
    if store.is_empty() {
        return Err("cannot build the client verifier: no client CA".into());
    }
    let crls = crls
        .iter()
        .map(|der| webpki::OwnedCertRevocationList::from_der(der.as_ref()).map(Into::into))
        .collect::<Result<Vec<CertRevocationList<'static>>, _>>()
        .map_err(|e| format!("cannot build the client verifier: a CRL does not parse: {e}"))?;
    // The CAs' own validity, for the cache's window. webpki does not check a
    // trust anchor's dates, so one that cannot be read only leaves it out.
    let anchor_windows = client_roots
        .iter()
        .filter_map(|ca| {
            let anchor = webpki::anchor_from_trusted_cert(ca).ok()?;
            let window = validity(ca.as_ref()).ok()?;
            Some((
                anchor.subject.as_ref().to_vec(),
                anchor.subject_public_key_info.as_ref().to_vec(),
                window,
            ))
        })
        .collect();
    Ok(Arc::new(ClientVerifier {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        hints: store.subjects(),
        roots: store.roots,
        anchor_windows,
        crls,
        mandatory,
        algorithms,
        chain_cache,
    }))
}

#[derive(Debug)]
struct ClientVerifier {
    /// Unique to this verifier (its CAs, CRLs and mode, on one site, one
    /// core, one config generation): part of every chain-cache key.
    id: u64,
    roots: Vec<TrustAnchor<'static>>,
    /// (subject, SPKI, validity) of each client CA whose dates are readable.
    anchor_windows: Vec<(Vec<u8>, Vec<u8>, Window)>,
    /// The CAs' subjects, sent in CertificateRequest so a client with several
    /// certificates picks one of ours.
    hints: Vec<DistinguishedName>,
    crls: Vec<CertRevocationList<'static>>,
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
    /// Entries in this core's verified-chain cache; 0 = off.
    chain_cache: usize,
}

impl ClientVerifier {
    /// When the verified path stays valid: every certificate on it within
    /// its dates (the anchor's too, when readable). None when a date cannot
    /// be read (the chain is then not cached), or when `now` is outside
    /// (only possible through the anchor, whose dates webpki ignores).
    fn window(&self, end_entity: &[u8], path: &VerifiedPath<'_>, now: UnixTime) -> Option<Window> {
        let mut window = validity(end_entity).ok()?;
        for ca in path.intermediate_certificates() {
            window = window.narrow(validity(ca.der().as_ref()).ok()?);
        }
        let anchor = path.anchor();
        for (subject, spki, anchor_window) in &self.anchor_windows {
            if subject[..] == *anchor.subject && spki[..] == *anchor.subject_public_key_info {
                window = window.narrow(*anchor_window);
            }
        }
        window.contains(now).then_some(window)
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        clear();
        let cache_key = if self.chain_cache == 0 {
            cache::disable();
            None
        } else {
            let key = cache::chain_key(self.id, end_entity.as_ref(), intermediates);
            if cache::lookup(self.chain_cache, &key, now) {
                return Ok(ClientCertVerified::assertion());
            }
            Some(key)
        };
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(webpki_error)?;

        // Same revocation policy as before this verifier existed: the
        // client's own certificate only, and a client of a CA without a CRL
        // here is not locked out.
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::EndEntity)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(CRL_EXPIRATION)
                .build()
        });

        // The first intermediate a candidate path was dropped for.
        let refused_ca: Cell<Option<String>> = Cell::new(None);
        let check_path = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
            for ca in path.intermediate_certificates() {
                let der = ca.der();
                match key_usage(der.as_ref()) {
                    Ok(Some(ku)) if !ku.key_cert_sign() => {
                        let first = refused_ca.take().unwrap_or_else(|| {
                            crate::identity::subject_of(der.as_ref())
                                .unwrap_or_else(|| "(unreadable subject)".into())
                        });
                        refused_ca.set(Some(first));
                        // Lowest-ranked webpki error: a more specific failure
                        // of another path wins, and path building goes on.
                        return Err(webpki::Error::UnknownIssuer);
                    }
                    Ok(_) => {}
                    Err(_) => return Err(webpki::Error::BadDer),
                }
            }
            Ok(())
        };

        let verified = cert.verify_for_usage(
            self.algorithms.all,
            &self.roots,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            revocation,
            Some(&check_path),
        );
        let window = match (verified, refused_ca.take()) {
            (Ok(path), _) => self.window(end_entity.as_ref(), &path, now),
            (Err(webpki::Error::UnknownIssuer), Some(subject)) => {
                return Err(refuse(
                    CertificateError::UnknownIssuer.into(),
                    Refusal::IntermediateKeyUsage { subject },
                ))
            }
            (Err(e), _) => return Err(webpki_error(e)),
        };

        // After the chain: an untrusted certificate is reported as untrusted,
        // whatever its keyUsage says.
        match key_usage(end_entity.as_ref()) {
            Ok(Some(ku)) if !ku.digital_signature() => {
                return Err(refuse(
                    CertificateError::InvalidPurpose.into(),
                    Refusal::LeafKeyUsage,
                ))
            }
            Ok(_) => {}
            Err(_) => return Err(CertificateError::BadEncoding.into()),
        }
        // Every rule passed: only now is the chain remembered.
        if let (Some(key), Some(window)) = (cache_key, window) {
            cache::remember(self.chain_cache, key, window);
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // The CertificateVerify proves the client holds the key now: checked
        // on every handshake, a cached chain or not.
        clear();
        verify_tls12_signature(message, cert, dss, &self.algorithms)
            .map_err(|e| scheme_refusal(dss.scheme, e))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // Every handshake, as in TLS 1.2.
        clear();
        let algorithms = WebPkiSupportedAlgorithms {
            all: self.algorithms.all,
            mapping: tls13_ecdsa(dss.scheme).unwrap_or(self.algorithms.mapping),
        };
        verify_tls13_signature(message, cert, dss, &algorithms)
            .map_err(|e| scheme_refusal(dss.scheme, e))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

type Mapping = &'static [(
    SignatureScheme,
    &'static [&'static dyn SignatureVerificationAlgorithm],
)];

/// TLS 1.3: an ECDSA scheme means one curve. (rustls's provider table lists
/// every curve under each ECDSA scheme for TLS 1.2's sake and relies on
/// taking the first entry in TLS 1.3; this does not depend on that order.)
fn tls13_ecdsa(scheme: SignatureScheme) -> Option<Mapping> {
    use webpki::aws_lc_rs as alg;
    static P256: Mapping = &[(
        SignatureScheme::ECDSA_NISTP256_SHA256,
        &[alg::ECDSA_P256_SHA256],
    )];
    static P384: Mapping = &[(
        SignatureScheme::ECDSA_NISTP384_SHA384,
        &[alg::ECDSA_P384_SHA384],
    )];
    static P521: Mapping = &[(
        SignatureScheme::ECDSA_NISTP521_SHA512,
        &[alg::ECDSA_P521_SHA512],
    )];
    match scheme {
        SignatureScheme::ECDSA_NISTP256_SHA256 => Some(P256),
        SignatureScheme::ECDSA_NISTP384_SHA384 => Some(P384),
        SignatureScheme::ECDSA_NISTP521_SHA512 => Some(P521),
        _ => None,
    }
}

/// A CertificateVerify whose scheme the client's key cannot use is a
/// protocol violation (OpenSSL: illegal_parameter, "wrong curve"), not a bad
/// signature (decrypt_error), and is reported as such.
fn scheme_refusal(scheme: SignatureScheme, e: Error) -> Error {
    match &e {
        Error::InvalidCertificate(
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                public_key_algorithm_id,
                ..
            },
        ) => refuse(
            PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into(),
            Refusal::SchemeKeyMismatch {
                scheme,
                key: refusal::key_name(public_key_algorithm_id),
            },
        ),
        _ => e,
    }
}

/// webpki's verdict as the rustls error (hence alert and log reason) rustls's
/// own verifier gives for it.
fn webpki_error(e: webpki::Error) -> Error {
    use webpki::Error as W;
    #[allow(deprecated)]
    let certificate = match e {
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        W::CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }
        }
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
        W::CrlExpired { time, next_update } => {
            CertificateError::ExpiredRevocationListContext { time, next_update }
        }
        W::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        W::UnsupportedSignatureAlgorithm | W::UnsupportedSignatureAlgorithmForPublicKey => {
            CertificateError::UnsupportedSignatureAlgorithm
        }
        W::UnsupportedSignatureAlgorithmContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                supported_algorithms: cx.supported_algorithms,
            }
        }
        W::UnsupportedSignatureAlgorithmForPublicKeyContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                public_key_algorithm_id: cx.public_key_algorithm_id,
            }
        }
        W::RequiredEkuNotFound => CertificateError::InvalidPurpose,
        W::RequiredEkuNotFoundContext(cx) => CertificateError::InvalidPurposeContext {
            required: purpose(cx.required.oid_values().collect()),
            presented: cx.present.into_iter().map(purpose).collect(),
        },
        // A CRL that names the client's CA but cannot be used: rustls reports
        // the CRL, not the certificate (and sends handshake_failure).
        W::IssuerNotCrlSigner => {
            return Error::InvalidCertRevocationList(CertRevocationListError::IssuerInvalidForCrl)
        }
        W::InvalidCrlSignatureForPublicKey => {
            return Error::InvalidCertRevocationList(CertRevocationListError::BadSignature)
        }
        W::UnsupportedCrlSignatureAlgorithm
        | W::UnsupportedCrlSignatureAlgorithmForPublicKey
        | W::UnsupportedCrlSignatureAlgorithmContext(_)
        | W::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
            return Error::InvalidCertRevocationList(
                CertRevocationListError::UnsupportedSignatureAlgorithm,
            )
        }
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    Error::InvalidCertificate(certificate)
}

fn purpose(oid: Vec<usize>) -> ExtendedKeyPurpose {
    match oid.as_slice() {
        [1, 3, 6, 1, 5, 5, 7, 3, 2] => ExtendedKeyPurpose::ClientAuth,
        [1, 3, 6, 1, 5, 5, 7, 3, 1] => ExtendedKeyPurpose::ServerAuth,
        _ => ExtendedKeyPurpose::Other(oid),
    }
}
