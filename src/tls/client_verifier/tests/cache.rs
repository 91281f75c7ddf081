//! The verified-chain cache as the verifier uses it, on real certificates
//! (rcgen) and real CRLs, with the time passed in as rustls passes it: hits
//! and misses counted by this thread's metrics (each test runs on its own
//! thread, so on its own cache), and what must never be served from it.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;

use super::*;
use crate::metrics::{chain_cache_counts, ChainCacheCounts};

fn at(secs: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(secs))
}

fn secs(t: time::OffsetDateTime) -> u64 {
    t.unix_timestamp() as u64
}

/// Counts since `before`: (hits, misses).
fn delta(before: ChainCacheCounts) -> (u64, u64) {
    let now = chain_cache_counts();
    (now.hits - before.hits, now.misses - before.misses)
}

/// A client leaf from `issuer` valid in [not_before, not_after], serial `serial`.
fn leaf_valid(
    issuer: &Ca,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    serial: u64,
) -> CertificateDer<'static> {
    let mut p = leaf_params(&[DigitalSignature]);
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(SerialNumber::from(serial));
    let key = KeyPair::generate().unwrap();
    p.signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap()
        .der()
        .clone()
}

fn date(y: i32) -> time::OffsetDateTime {
    time::Date::from_calendar_date(y, time::Month::January, 1)
        .unwrap()
        .midnight()
        .assume_utc()
}

fn check(
    v: &Arc<dyn ClientCertVerifier>,
    ee: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    t: UnixTime,
) -> Result<(), Error> {
    v.verify_client_cert(ee, chain, t)
        .map(|_| ())
        .map_err(with_reason)
}

#[test]
fn a_returning_chain_hits_and_nothing_else_does() {
    let ca = root("Root");
    let sub = intermediate(&ca, "Issuing", &[KeyCertSign], KeyPair::generate().unwrap());
    let ee = leaf(&sub, &[DigitalSignature]);
    let chain = [sub.cert.der().clone()];
    let v = cached(&ca, &[], 16);
    let start = chain_cache_counts();
    assert_eq!(check(&v, &ee, &chain, now()), Ok(()));
    assert_eq!(delta(start), (0, 1), "first sight: verified in full");
    assert_eq!(check(&v, &ee, &chain, now()), Ok(()));
    assert_eq!(delta(start), (1, 1), "the same chain again: a hit");
    assert_eq!(chain_cache_counts().entries, 1);

    // Another client of the same CA, the same leaf sent with the CA twice,
    // or without it: other bytes, other keys.
    let other = leaf(&sub, &[DigitalSignature]);
    assert_eq!(check(&v, &other, &chain, now()), Ok(()));
    assert_eq!(delta(start), (1, 2));
    let twice = [sub.cert.der().clone(), sub.cert.der().clone()];
    assert_eq!(check(&v, &ee, &twice, now()), Ok(()));
    assert_eq!(delta(start), (1, 3));
    assert!(
        check(&v, &ee, &[], now()).is_err(),
        "no path without the CA"
    );
    assert_eq!(delta(start), (1, 4));

    // The same CAs in a new verifier (a reload builds one per site per core):
    // a miss, and then its own hit.
    let reloaded = cached(&ca, &[], 16);
    assert_eq!(check(&reloaded, &ee, &chain, now()), Ok(()));
    assert_eq!(delta(start), (1, 5));
    assert_eq!(check(&reloaded, &ee, &chain, now()), Ok(()));
    assert_eq!(delta(start), (2, 5));

    // Off: nothing counted, nothing kept (and what the other verifiers kept
    // on this core is let go).
    let off = ours(&ca);
    assert_eq!(check(&off, &ee, &chain, now()), Ok(()));
    assert_eq!(check(&off, &ee, &chain, now()), Ok(()));
    assert_eq!(delta(start), (2, 5));
    assert_eq!(chain_cache_counts().entries, 0);
}

#[test]
fn a_cached_chain_is_refused_once_any_certificate_on_its_path_expires() {
    let now_t = time::OffsetDateTime::now_utc();
    let ca = root("Root");
    let sub = intermediate(&ca, "Issuing", &[KeyCertSign], KeyPair::generate().unwrap());
    // The leaf outlives nothing: it ends in two hours, the intermediate
    // (rcgen's default) in 4096; then the other way round below.
    let hour = time::Duration::hours(1);
    let ee = leaf_valid(&sub, now_t - hour, now_t + 2 * hour, 1);
    let chain = [sub.cert.der().clone()];
    let v = cached(&ca, &[], 16);
    let start = chain_cache_counts();
    let t0 = secs(now_t);
    assert_eq!(check(&v, &ee, &chain, at(t0)), Ok(()));
    assert_eq!(check(&v, &ee, &chain, at(t0 + 3600)), Ok(()));
    assert_eq!(delta(start), (1, 1));
    // Its last valid second is still a hit; the next is the full check's
    // refusal (with its context: alert certificate_expired, the log's time).
    let last = secs(now_t + 2 * hour);
    assert_eq!(check(&v, &ee, &chain, at(last)), Ok(()));
    assert_eq!(delta(start), (2, 1));
    assert!(matches!(
        check(&v, &ee, &chain, at(last + 1)),
        Err(Error::InvalidCertificate(
            CertificateError::ExpiredContext { .. }
        ))
    ));
    assert_eq!(delta(start), (2, 2));
    // ... and before notBefore (a clock stepped back) the same.
    assert_eq!(check(&v, &ee, &chain, at(t0)), Ok(()));
    assert!(matches!(
        check(&v, &ee, &chain, at(t0 - 7200)),
        Err(Error::InvalidCertificate(
            CertificateError::NotValidYetContext { .. }
        ))
    ));

    // An intermediate that expires before its leaf bounds the window.
    let mut p = ca_params("Short CA", &[KeyCertSign]);
    p.not_before = now_t - hour;
    p.not_after = now_t + hour;
    let short_key = KeyPair::generate().unwrap();
    let short = Ca {
        cert: p.signed_by(&short_key, &ca.cert, &ca.key).unwrap(),
        key: short_key,
    };
    let ee = leaf(&short, &[DigitalSignature]);
    let chain = [short.cert.der().clone()];
    assert_eq!(check(&v, &ee, &chain, at(t0)), Ok(()));
    assert_eq!(check(&v, &ee, &chain, at(t0 + 60)), Ok(()));
    let before = chain_cache_counts();
    assert!(matches!(
        check(&v, &ee, &chain, at(t0 + 7200)),
        Err(Error::InvalidCertificate(
            CertificateError::ExpiredContext { .. }
        ))
    ));
    assert_eq!(delta(before), (0, 1));
}

#[test]
fn a_trust_anchor_past_its_dates_ends_the_window() {
    // webpki does not check a CA's own dates; the cache is stricter: a chain
    // whose CA has expired is verified in full every time (and accepted, as
    // without the cache), never served from the cache.
    let now_t = time::OffsetDateTime::now_utc();
    let key = KeyPair::generate().unwrap();
    let mut p = ca_params("Old Root", &[KeyCertSign, CrlSign]);
    p.not_before = date(2020);
    p.not_after = now_t + time::Duration::hours(1);
    let ca = Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    };
    let ee = leaf(&ca, &[DigitalSignature]);
    let v = cached(&ca, &[], 16);
    let start = chain_cache_counts();
    let t0 = secs(now_t);
    assert_eq!(check(&v, &ee, &[], at(t0)), Ok(()));
    assert_eq!(check(&v, &ee, &[], at(t0)), Ok(()));
    assert_eq!(delta(start), (1, 1));
    let later = at(t0 + 7200);
    for _ in 0..2 {
        assert_eq!(check(&v, &ee, &[], later), Ok(()), "webpki's verdict");
    }
    assert_eq!(
        delta(start),
        (1, 3),
        "never a hit past the anchor's notAfter"
    );
}

#[test]
fn a_crl_in_a_new_verifier_refuses_a_cached_chain() {
    let ca = root("Root");
    let now_t = time::OffsetDateTime::now_utc();
    let year = time::Duration::days(365);
    let ee = leaf_valid(&ca, now_t - year, now_t + year, 4242);
    let crl = |revoked: &[u64]| -> CertificateRevocationListDer<'static> {
        CertificateRevocationListParams {
            this_update: now_t - time::Duration::hours(1),
            next_update: now_t + time::Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now_t - time::Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.cert, &ca.key)
        .unwrap()
        .der()
        .clone()
    };
    let before = cached(&ca, &[crl(&[7])], 16);
    assert_eq!(check(&before, &ee, &[], now()), Ok(()));
    assert_eq!(check(&before, &ee, &[], now()), Ok(()));
    let start = chain_cache_counts();
    // The reload with the CRL that revokes it.
    let after = cached(&ca, &[crl(&[7, 4242])], 16);
    for _ in 0..2 {
        assert_eq!(
            check(&after, &ee, &[], now()),
            Err(Error::InvalidCertificate(CertificateError::Revoked))
        );
    }
    assert_eq!(delta(start), (0, 2), "a refusal is never cached");
    // The old generation's verifier still holds its entry (its connections
    // were accepted under it); it is reachable only through that verifier.
    assert_eq!(check(&before, &ee, &[], now()), Ok(()));
    assert_eq!(delta(start), (1, 2));
}

#[test]
fn refusals_are_never_cached_and_keep_their_reasons() {
    let ca = root("Root");
    let v = cached(&ca, &[], 16);
    let start = chain_cache_counts();
    // Untrusted, keyUsage without digitalSignature (the chain itself is
    // fine: the refusal comes after path building), an intermediate without
    // keyCertSign, not a certificate.
    let stranger = leaf(&root("Stranger"), &[DigitalSignature]);
    let non_repudiation = leaf(&ca, &[ContentCommitment]);
    let bad_ca = intermediate(
        &ca,
        "No CertSign CA",
        &[CrlSign],
        KeyPair::generate().unwrap(),
    );
    let bad_ca_leaf = leaf(&bad_ca, &[DigitalSignature]);
    let garbage = CertificateDer::from(vec![0x30, 0x00]);
    for round in 0..3 {
        assert_eq!(
            check(&v, &stranger, &[], now()),
            Err(Error::InvalidCertificate(CertificateError::UnknownIssuer))
        );
        let e = check(&v, &non_repudiation, &[], now()).unwrap_err();
        assert_eq!(refusal(&e), Some(&Refusal::LeafKeyUsage), "round {round}");
        let e = check(&v, &bad_ca_leaf, &[bad_ca.cert.der().clone()], now()).unwrap_err();
        assert!(
            matches!(refusal(&e), Some(Refusal::IntermediateKeyUsage { .. })),
            "round {round}: {e:?}"
        );
        assert!(check(&v, &garbage, &[], now()).is_err());
    }
    assert_eq!(delta(start), (0, 12));
    assert_eq!(chain_cache_counts().entries, 0);
}

#[test]
fn the_bound_holds_per_core() {
    let ca = root("Root");
    let v = cached(&ca, &[], 4);
    let leaves: Vec<_> = (0..10).map(|_| leaf(&ca, &[DigitalSignature])).collect();
    let start = chain_cache_counts();
    for ee in &leaves {
        assert_eq!(check(&v, ee, &[], now()), Ok(()));
        assert!(chain_cache_counts().entries <= 4);
    }
    assert_eq!(chain_cache_counts().entries, 4);
    assert_eq!(chain_cache_counts().evictions - start.evictions, 6);
    // The last four are the ones kept.
    let before = chain_cache_counts();
    for ee in &leaves[6..] {
        assert_eq!(check(&v, ee, &[], now()), Ok(()));
    }
    assert_eq!(delta(before), (4, 0));
    // A reload to a smaller bound shrinks this core's cache at its next use.
    let smaller = cached(&ca, &[], 2);
    assert_eq!(check(&smaller, &leaves[0], &[], now()), Ok(()));
    assert_eq!(chain_cache_counts().entries, 2);
    // Another thread (another core) has its own, empty cache.
    let (v2, ee) = (v.clone(), leaves[9].clone());
    let other = std::thread::spawn(move || {
        let start = chain_cache_counts();
        v2.verify_client_cert(&ee, &[], UnixTime::now()).unwrap();
        delta(start)
    })
    .join()
    .unwrap();
    assert_eq!(other, (0, 1));
}

/// A client that presents `chain` but signs with `key` (its own, or a thief's).
#[derive(Debug)]
struct Presents(Arc<CertifiedKey>);

impl ResolvesClientCert for Presents {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn pkcs8(key: &KeyPair) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into()
}

/// A whole handshake in memory: our verifier `v` on the server side.
fn handshake(
    v: &Arc<dyn ClientCertVerifier>,
    ca: &Ca,
    client: CertifiedKey,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<(), Error> {
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca.cert, &ca.key)
        .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_client_cert_verifier(v.clone())
        .with_single_cert(vec![server_cert.der().clone()], pkcs8(&server_key))
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(Presents(Arc::new(client))));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        s.process_new_packets()?;
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        let _ = c.process_new_packets();
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn certificate_verify_is_checked_on_every_handshake_even_after_a_hit() {
    let ca = root("Root");
    let owner_key = KeyPair::generate().unwrap();
    let cert = leaf_params(&[DigitalSignature])
        .signed_by(&owner_key, &ca.cert, &ca.key)
        .unwrap();
    let signer = |key: &KeyPair| {
        let signing = provider()
            .key_provider
            .load_private_key(pkcs8(key))
            .unwrap();
        CertifiedKey::new(vec![cert.der().clone()], signing)
    };
    let thief_key = KeyPair::generate().unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let v = cached(&ca, &[], 16);
        let start = chain_cache_counts();
        assert_eq!(handshake(&v, &ca, signer(&owner_key), version), Ok(()));
        assert_eq!(handshake(&v, &ca, signer(&owner_key), version), Ok(()));
        assert_eq!(delta(start), (1, 1), "{version:?}: the second was a hit");
        // The certificate is cached, but the thief cannot sign for its key.
        let stolen = handshake(&v, &ca, signer(&thief_key), version);
        assert_eq!(
            stolen,
            Err(Error::InvalidCertificate(CertificateError::BadSignature)),
            "{version:?}"
        );
        assert_eq!(
            delta(start),
            (2, 1),
            "{version:?}: chain from the cache, signature not"
        );
    }
}
