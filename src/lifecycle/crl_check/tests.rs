//! `check_fetched` against CRLs and CAs made here with rcgen: the right CA,
//! another CA with the same name, a damaged body, a replayed older CRL.

use super::*;
use rcgen::{
    CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A CA named `CN=cn` with a fresh key.
fn ca(cn: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ca {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

/// A CRL by `ca` issued `age_days` ago: (DER, PEM).
fn crl(ca: &Ca, age_days: i64) -> (Vec<u8>, String) {
    let this_update = time::OffsetDateTime::now_utc() - time::Duration::days(age_days);
    let crl = CertificateRevocationListParams {
        this_update,
        next_update: this_update + time::Duration::days(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)
    .unwrap();
    (crl.der().to_vec(), crl.pem().unwrap())
}

fn der(ca: &Ca) -> CertificateDer<'static> {
    ca.cert.der().clone()
}

#[test]
fn a_crl_signed_by_a_client_ca_passes_in_der_and_pem() {
    let (a, b) = (ca("A"), ca("B"));
    let (crl_der, crl_pem) = crl(&a, 0);
    check_fetched(&crl_der, &[der(&b), der(&a)], None).unwrap();
    check_fetched(crl_pem.as_bytes(), &[der(&a)], None).unwrap();
}

#[test]
fn a_crl_from_another_ca_is_refused_even_with_the_same_name() {
    let (a, impostor) = (ca("A"), ca("A"));
    let (crl_der, _) = crl(&impostor, 0);
    let e = check_fetched(&crl_der, &[der(&a)], None).unwrap_err();
    assert!(
        e.contains("not signed by any of the site's client CAs"),
        "{e}"
    );
    assert!(e.contains("CN=A"), "{e}");
}

#[test]
fn a_body_that_is_not_a_crl_is_refused() {
    let a = ca("A");
    for bad in [
        &b""[..],
        b"<html>503 Service Unavailable</html>",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        assert!(check_fetched(bad, &[der(&a)], None).is_err(), "{bad:?}");
    }
    let (mut crl_der, _) = crl(&a, 0);
    let last = crl_der.len() - 1;
    crl_der[last] ^= 1;
    let e = check_fetched(&crl_der, &[der(&a)], None).unwrap_err();
    assert!(e.contains("not signed"), "a flipped signature bit: {e}");
}

#[test]
fn an_older_crl_than_the_kept_one_is_a_replay() {
    let a = ca("A");
    let (old, _) = crl(&a, 3);
    let (new, new_pem) = crl(&a, 0);
    let e = check_fetched(&old, &[der(&a)], Some(&new)).unwrap_err();
    assert!(e.contains("older than the copy kept"), "{e}");
    check_fetched(&new, &[der(&a)], Some(&old)).unwrap();
    check_fetched(new_pem.as_bytes(), &[der(&a)], Some(new_pem.as_bytes())).unwrap();
    // A kept copy that no longer parses does not block a good fetch.
    check_fetched(&new, &[der(&a)], Some(b"garbage")).unwrap();
}
