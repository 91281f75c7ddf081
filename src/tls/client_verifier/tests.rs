//! The verifier on certificates made here with rcgen, called as rustls calls
//! it; and, where the rules are the old ones, compared with rustls's own
//! `WebPkiClientVerifier` on the same input.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::alg_id;
use rustls::server::WebPkiClientVerifier;

use super::*;
use crate::tls::server_config::provider;

mod cache;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

fn ca_params(cn: &str, usages: &[KeyUsagePurpose]) -> CertificateParams {
    let mut p = params(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = usages.to_vec();
    p
}

fn root(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let cert = ca_params(
        cn,
        &[KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
    )
    .self_signed(&key)
    .unwrap();
    Ca { cert, key }
}

fn intermediate(issuer: &Ca, cn: &str, usages: &[KeyUsagePurpose], key: KeyPair) -> Ca {
    let cert = ca_params(cn, usages)
        .signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap();
    Ca { cert, key }
}

fn leaf_params(usages: &[KeyUsagePurpose]) -> CertificateParams {
    let mut p = params("client");
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = usages.to_vec();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p
}

fn leaf(issuer: &Ca, usages: &[KeyUsagePurpose]) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params(usages)
        .signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap();
    cert.der().clone()
}

fn ours(root: &Ca) -> Arc<dyn ClientCertVerifier> {
    cached(root, &[], 0)
}

/// Ours with `crls` and a chain cache of `entries` on this thread.
fn cached(
    root: &Ca,
    crls: &[CertificateRevocationListDer<'static>],
    entries: usize,
) -> Arc<dyn ClientCertVerifier> {
    build(
        &[root.cert.der().clone()],
        crls,
        true,
        provider().signature_verification_algorithms,
        entries,
    )
    .unwrap()
}

fn theirs(root: &Ca) -> Arc<dyn ClientCertVerifier> {
    let mut store = RootCertStore::empty();
    store.add(root.cert.der().clone()).unwrap();
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .unwrap()
}

fn now() -> UnixTime {
    UnixTime::now()
}

/// The error as the handshake driver reports it.
fn verify(
    v: &Arc<dyn ClientCertVerifier>,
    ee: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
) -> Result<(), Error> {
    v.verify_client_cert(ee, chain, now())
        .map(|_| ())
        .map_err(with_reason)
}

use KeyUsagePurpose::{ContentCommitment, CrlSign, DigitalSignature, KeyCertSign};

#[test]
fn leaf_key_usage_needs_digital_signature_when_present() {
    let ca = root("Root");
    let v = ours(&ca);
    assert_eq!(verify(&v, &leaf(&ca, &[DigitalSignature]), &[]), Ok(()));
    assert_eq!(
        verify(&v, &leaf(&ca, &[]), &[]),
        Ok(()),
        "no keyUsage at all"
    );
    assert_eq!(
        verify(&v, &leaf(&ca, &[DigitalSignature, ContentCommitment]), &[]),
        Ok(())
    );

    let non_repudiation = leaf(&ca, &[ContentCommitment]);
    // rustls alone accepts it: this is the hole.
    assert!(theirs(&ca)
        .verify_client_cert(&non_repudiation, &[], now())
        .is_ok());
    // The alert rustls sends comes from the raw error: unsupported_certificate.
    let raw = v
        .verify_client_cert(&non_repudiation, &[], now())
        .unwrap_err();
    assert_eq!(
        raw,
        Error::InvalidCertificate(CertificateError::InvalidPurpose)
    );
    let reported = with_reason(raw);
    assert_eq!(refusal(&reported), Some(&Refusal::LeafKeyUsage));
    assert_eq!(
        crate::tls::reason::describe(&reported),
        "client certificate keyUsage lacks digitalSignature"
    );
}

#[test]
fn intermediate_key_usage_needs_key_cert_sign_when_present() {
    let ca = root("Root");
    let v = ours(&ca);
    for usages in [&[KeyCertSign, CrlSign][..], &[][..]] {
        let sub = intermediate(&ca, "Issuing", usages, KeyPair::generate().unwrap());
        let ee = leaf(&sub, &[DigitalSignature]);
        assert_eq!(
            verify(&v, &ee, &[sub.cert.der().clone()]),
            Ok(()),
            "{usages:?}"
        );
    }

    let bad = intermediate(
        &ca,
        "No CertSign CA",
        &[CrlSign],
        KeyPair::generate().unwrap(),
    );
    let ee = leaf(&bad, &[DigitalSignature]);
    let chain = [bad.cert.der().clone()];
    assert!(theirs(&ca).verify_client_cert(&ee, &chain, now()).is_ok());
    let raw = v.verify_client_cert(&ee, &chain, now()).unwrap_err();
    // unknown_ca, as OpenSSL sends for an invalid CA.
    assert_eq!(
        raw,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    let reported = with_reason(raw);
    assert_eq!(
        crate::tls::reason::describe(&reported),
        "intermediate CA \"CN=No CertSign CA\" keyUsage lacks keyCertSign"
    );
}

#[test]
fn path_building_goes_on_past_an_intermediate_without_key_cert_sign() {
    // The same CA (name and key) certified twice: once without keyCertSign,
    // once with. A client that sends both, the bad one first, is accepted
    // through the good one.
    let ca = root("Root");
    let key_pem = KeyPair::generate().unwrap().serialize_pem();
    let bad = intermediate(
        &ca,
        "Issuing",
        &[CrlSign],
        KeyPair::from_pem(&key_pem).unwrap(),
    );
    let good = intermediate(
        &ca,
        "Issuing",
        &[KeyCertSign],
        KeyPair::from_pem(&key_pem).unwrap(),
    );
    let ee = leaf(&good, &[DigitalSignature]);
    let v = ours(&ca);
    assert_eq!(
        verify(&v, &ee, &[bad.cert.der().clone(), good.cert.der().clone()]),
        Ok(())
    );
    // With only the bad one, refused.
    assert!(verify(&v, &ee, &[bad.cert.der().clone()]).is_err());
}

#[test]
fn an_untrusted_certificate_is_untrusted_whatever_its_key_usage() {
    let ca = root("Root");
    let stranger = root("Stranger");
    let ee = leaf(&stranger, &[ContentCommitment]);
    let err = verify(&ours(&ca), &ee, &[]).unwrap_err();
    assert_eq!(
        err,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert_eq!(refusal(&err), None);
}

#[test]
fn old_rules_give_the_errors_rustls_gives() {
    let ca = root("Root");
    let (ours, theirs) = (ours(&ca), theirs(&ca));
    let check = |ee: &CertificateDer<'_>, chain: &[CertificateDer<'_>], at: UnixTime| {
        let a = ours.verify_client_cert(ee, chain, at).map(|_| ());
        let b = theirs.verify_client_cert(ee, chain, at).map(|_| ());
        assert_eq!(a, b);
        a
    };
    // Fine, then expired (ExpiredContext: "certificate expired at ...") and
    // not yet valid.
    let ee = leaf(&ca, &[DigitalSignature]);
    assert_eq!(check(&ee, &[], now()), Ok(()));
    // rcgen's default validity is 1975 to 4096.
    let after = UnixTime::since_unix_epoch(Duration::from_secs(70_000_000_000));
    assert!(matches!(
        check(&ee, &[], after),
        Err(Error::InvalidCertificate(
            CertificateError::ExpiredContext { .. }
        ))
    ));
    let before = UnixTime::since_unix_epoch(Duration::from_secs(0));
    assert!(matches!(
        check(&ee, &[], before),
        Err(Error::InvalidCertificate(
            CertificateError::NotValidYetContext { .. }
        ))
    ));
    // Untrusted.
    let other = root("Other");
    assert_eq!(
        check(&leaf(&other, &[DigitalSignature]), &[], now()),
        Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
    );
    // Server-only EKU: InvalidPurposeContext.
    let key = KeyPair::generate().unwrap();
    let mut p = leaf_params(&[DigitalSignature]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_only = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    assert!(matches!(
        check(server_only.der(), &[], now()),
        Err(Error::InvalidCertificate(
            CertificateError::InvalidPurposeContext { .. }
        ))
    ));
    // Not a certificate.
    assert_eq!(
        check(&CertificateDer::from(vec![0x30, 0x00]), &[], now()),
        Err(Error::InvalidCertificate(CertificateError::BadEncoding))
    );
}

#[test]
fn modes_and_hints() {
    let ca = root("Root");
    let algs = provider().signature_verification_algorithms;
    let roots = [ca.cert.der().clone()];
    let mandatory = build(&roots, &[], true, algs, 0).unwrap();
    let optional = build(&roots, &[], false, algs, 0).unwrap();
    assert!(mandatory.offer_client_auth() && mandatory.client_auth_mandatory());
    assert!(optional.offer_client_auth() && !optional.client_auth_mandatory());
    let hints = |v: &Arc<dyn ClientCertVerifier>| -> Vec<Vec<u8>> {
        v.root_hint_subjects()
            .iter()
            .map(|n| n.as_ref().to_vec())
            .collect()
    };
    assert_eq!(hints(&mandatory), hints(&theirs(&ca)));
    assert_eq!(hints(&mandatory).len(), 1);
    assert_eq!(
        mandatory.supported_verify_schemes(),
        theirs(&ca).supported_verify_schemes()
    );
    assert!(build(&[], &[], true, algs, 0).is_err());
    assert!(
        build(&[CertificateDer::from(vec![1, 2, 3])], &[], true, algs, 0)
            .unwrap_err()
            .contains("a client CA is not usable")
    );
    assert!(build(
        &roots,
        &[CertificateRevocationListDer::from(vec![1, 2])],
        true,
        algs,
        0
    )
    .unwrap_err()
    .contains("CRL"));
}

#[test]
fn tls13_ecdsa_schemes_name_one_curve() {
    let cases = [
        (SignatureScheme::ECDSA_NISTP256_SHA256, alg_id::ECDSA_P256),
        (SignatureScheme::ECDSA_NISTP384_SHA384, alg_id::ECDSA_P384),
        (SignatureScheme::ECDSA_NISTP521_SHA512, alg_id::ECDSA_P521),
    ];
    for (scheme, curve) in cases {
        let mapping = tls13_ecdsa(scheme).unwrap();
        assert_eq!(mapping.len(), 1);
        assert_eq!(mapping[0].0, scheme);
        assert_eq!(mapping[0].1.len(), 1);
        assert_eq!(mapping[0].1[0].public_key_alg_id(), curve, "{scheme:?}");
    }
    // The other TLS 1.3 schemes keep the provider's entry, which is one
    // algorithm each (what rustls's "first entry" rule relies on).
    for (scheme, algs) in provider().signature_verification_algorithms.mapping {
        if tls13_ecdsa(*scheme).is_none() {
            assert_eq!(algs.len(), 1, "{scheme:?}");
        }
    }
}

#[test]
fn a_scheme_the_key_cannot_use_is_illegal_parameter_with_a_reason() {
    let mismatch = Error::InvalidCertificate(
        CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
            signature_algorithm_id: alg_id::ECDSA_SHA384.as_ref().to_vec(),
            public_key_algorithm_id: alg_id::ECDSA_P256.as_ref().to_vec(),
        },
    );
    let raw = scheme_refusal(SignatureScheme::ECDSA_NISTP384_SHA384, mismatch);
    assert_eq!(
        raw,
        Error::PeerMisbehaved(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)
    );
    let reported = with_reason(raw);
    assert_eq!(
        crate::tls::reason::describe(&reported),
        "ECDSA signature scheme ecdsa_secp384r1_sha384 does not match the client's P-256 key"
    );
    // A bad signature stays a bad signature (decrypt_error).
    let bad = Error::InvalidCertificate(CertificateError::BadSignature);
    assert_eq!(
        scheme_refusal(SignatureScheme::ECDSA_NISTP256_SHA256, bad.clone()),
        bad
    );
}
