//! Client certificates OpenSSL-based gateways (nginx, HAProxy) refuse:
//! keyUsage without digitalSignature on the client's certificate, an
//! intermediate CA whose keyUsage lacks keyCertSign, and (TLS 1.3) an ECDSA
//! CertificateVerify under another curve's scheme. Real handshakes against
//! the real binary, with curl (OpenSSL) and rustls clients, TLS 1.2 and 1.3;
//! the certificates are made here with rcgen.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use common::*;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::client::ResolvesClientCert;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{ClientConfig, RootCertStore, SignatureAlgorithm, SignatureScheme};

const REFUSED: &str = "client certificate refused";
const TLS12: &[&str] = &["--tlsv1.2", "--tls-max", "1.2"];
const TLS13: &[&str] = &["--tlsv1.3"];

// ---------------------------------------------------------------------------
// A small PKI made with rcgen, next to the gateway's own dev CA
// ---------------------------------------------------------------------------

struct Issuer {
    cert: Certificate,
    key: KeyPair,
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca(cn: &str, usages: &[KeyUsagePurpose], parent: Option<&Issuer>) -> Issuer {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::default();
    p.distinguished_name = name(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = usages.to_vec();
    let cert = match parent {
        None => p.self_signed(&key),
        Some(parent) => p.signed_by(&key, &parent.cert, &parent.key),
    }
    .expect("sign CA");
    Issuer { cert, key }
}

/// A client certificate (P-256, EKU clientAuth) with these keyUsage bits
/// (none: no keyUsage extension), written as `stem.pem` (the certificate,
/// then `chain`) and `stem.key`.
fn client(
    dir: &Path,
    stem: &str,
    usages: &[KeyUsagePurpose],
    issuer: &Issuer,
    chain: &[&Issuer],
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("client key");
    let mut p = CertificateParams::default();
    p.distinguished_name = name(stem);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = usages.to_vec();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p
        .signed_by(&key, &issuer.cert, &issuer.key)
        .expect("sign client");
    let mut pem = cert.pem();
    for ca in chain {
        pem.push_str(&ca.cert.pem());
    }
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, pem).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

/// Dev certificates, an rcgen root trusted next to the dev CA, the echo
/// backend and the gateway (with an admin listener).
struct Setup {
    td: TempDir,
    _echo: Echo,
    gw: Gateway,
    root: Issuer,
    admin: String,
}

fn start(name: &str) -> Setup {
    let td = TempDir::new(name);
    let certs = certs_init(&td.join("certs"), &[]);
    let root = ca(
        "Client Rules Test Root",
        &[KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
        None,
    );
    let root_pem = td.join("root.pem");
    std::fs::write(&root_pem, root.cert.pem()).unwrap();
    let echo = Echo::start(&td);
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cfg = Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()]));
    cfg.listeners[0].client_ca = vec![certs.ca(), root_pem];
    cfg.admin = Some(admin.clone());
    let gw = Gateway::start(&td, &certs, cfg);
    Setup {
        td,
        _echo: echo,
        gw,
        root,
        admin,
    }
}

// ---------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------

/// curl (OpenSSL) gets a 200 from the echo backend, TLS 1.2 and 1.3.
fn curl_accepted(gw: &Gateway, cert: &Path, key: &Path, what: &str) {
    for version in [TLS12, TLS13] {
        let r = gw.curl_auth(Auth::Pem(cert, key), "/rules", version);
        assert_eq!(r.code, 200, "{what} {version:?}: {}", r.describe());
        assert_eq!(r.json()["path"], "/rules", "{what}");
    }
}

/// rustls, TLS 1.2 and 1.3: handshake and a request.
fn rustls_accepted(gw: &Gateway, cert: &Path, key: &Path, what: &str) {
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = client_config(
            &gw.certs,
            ClientAuth::Pem(cert.into(), key.into()),
            &[version],
        );
        let s = gw
            .tls_with(cfg)
            .unwrap_or_else(|e| gw.fail(&format!("{what} {version:?}: {e}")));
        let r = HttpConn::new(s).get("/rules", &[]).unwrap();
        assert_eq!(r.status, 200, "{what} {version:?}");
    }
}

/// curl names `alert` and rustls receives `rustls_alert`, in TLS 1.2 and
/// 1.3; each of the four refusals is logged with `reason`.
fn refused(gw: &Gateway, cert: &Path, key: &Path, alert: &str, rustls_alert: &str, reason: &str) {
    let before = gw.proc.count_log_lines(&[REFUSED, reason]);
    for version in [TLS12, TLS13] {
        let r = gw.curl_auth(Auth::Pem(cert, key), "/rules", version);
        assert_ne!(r.exit, 0, "{reason} {version:?}: {}", r.describe());
        assert_ne!(r.code, 200, "{reason} {version:?}");
        assert!(
            r.stderr.to_ascii_lowercase().contains(alert),
            "{version:?}: curl should name the alert {alert:?}: {}",
            r.describe()
        );
    }
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = client_config(
            &gw.certs,
            ClientAuth::Pem(cert.into(), key.into()),
            &[version],
        );
        assert_eq!(
            expect_tls_alert(gw.addr(), cfg),
            rustls_alert,
            "{reason} {version:?}"
        );
    }
    expect_logged(gw, reason, before + 4);
}

fn expect_logged(gw: &Gateway, reason: &str, at_least: usize) {
    let ok = wait_until(Duration::from_secs(5), || {
        gw.proc
            .count_log_lines(&[REFUSED, &format!("reason={reason}")])
            >= at_least
    });
    if !ok {
        gw.fail(&format!(
            "expected {at_least} `{REFUSED}` lines with reason={reason}"
        ));
    }
}

fn handshake_failures(admin: &str, reason: &str) -> f64 {
    let mut s = TcpStream::connect(admin).unwrap_or_else(|e| panic!("admin {admin}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let series = format!("portcullis_handshake_failures_total{{reason=\"{reason}\"}}");
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series.as_str())
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn expect_counted(admin: &str, reason: &str, n: f64) {
    let ok = wait_until(Duration::from_secs(5), || {
        handshake_failures(admin, reason) >= n
    });
    assert!(
        ok,
        "portcullis_handshake_failures_total{{reason=\"{reason}\"}} stayed below {n}: {}",
        handshake_failures(admin, reason)
    );
}

// ---------------------------------------------------------------------------
// keyUsage of the client's own certificate
// ---------------------------------------------------------------------------

#[test]
fn client_key_usage_must_allow_digital_signature() {
    use KeyUsagePurpose::{ContentCommitment, DigitalSignature};
    let st = start("rules_leaf_ku");
    let dir = st.td.path();

    let (c, k) = client(dir, "signer", &[DigitalSignature], &st.root, &[]);
    curl_accepted(&st.gw, &c, &k, "keyUsage=digitalSignature");
    rustls_accepted(&st.gw, &c, &k, "keyUsage=digitalSignature");

    let (c, k) = client(dir, "no-key-usage", &[], &st.root, &[]);
    curl_accepted(&st.gw, &c, &k, "no keyUsage extension");
    rustls_accepted(&st.gw, &c, &k, "no keyUsage extension");

    // nonRepudiation (contentCommitment) only: a document-signing key.
    let (c, k) = client(dir, "non-repudiation", &[ContentCommitment], &st.root, &[]);
    refused(
        &st.gw,
        &c,
        &k,
        "unsupported certificate",
        "UnsupportedCertificate",
        "client certificate keyUsage lacks digitalSignature",
    );
    expect_counted(&st.admin, "key_usage", 4.0);

    // The gateway still serves good clients afterwards.
    assert_eq!(st.gw.curl("/after", &[]).code, 200);
}

// ---------------------------------------------------------------------------
// keyUsage of an intermediate CA
// ---------------------------------------------------------------------------

#[test]
fn intermediate_ca_key_usage_must_allow_key_cert_sign() {
    use KeyUsagePurpose::{CrlSign, DigitalSignature, KeyCertSign};
    let st = start("rules_intermediate_ku");
    let dir = st.td.path();

    let good = ca("Issuing CA", &[KeyCertSign, CrlSign], Some(&st.root));
    let (c, k) = client(dir, "via-good", &[DigitalSignature], &good, &[&good]);
    curl_accepted(&st.gw, &c, &k, "intermediate with keyCertSign");
    rustls_accepted(&st.gw, &c, &k, "intermediate with keyCertSign");

    // CA:TRUE, but its keyUsage says it may only sign CRLs.
    let bad = ca("CRL-only CA", &[CrlSign], Some(&st.root));
    let (c, k) = client(dir, "via-bad", &[DigitalSignature], &bad, &[&bad]);
    refused(
        &st.gw,
        &c,
        &k,
        "unknown ca",
        "UnknownCA",
        "intermediate CA \"CN=CRL-only CA\" keyUsage lacks keyCertSign",
    );
    expect_counted(&st.admin, "key_usage", 4.0);
}

// ---------------------------------------------------------------------------
// TLS 1.3: an ECDSA scheme names its curve
// ---------------------------------------------------------------------------

/// A P-256 key that signs CertificateVerify under whatever scheme it is told
/// to claim, hashing with that scheme's hash.
#[derive(Debug)]
struct ClaimingKey {
    pkcs8: Vec<u8>,
    claim: SignatureScheme,
    hash: &'static digest::Algorithm,
}

impl SigningKey for ClaimingKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&self.claim).then(|| {
            Box::new(ClaimingSigner {
                pkcs8: self.pkcs8.clone(),
                claim: self.claim,
                hash: self.hash,
            }) as Box<dyn Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct ClaimingSigner {
    pkcs8: Vec<u8>,
    claim: SignatureScheme,
    hash: &'static digest::Algorithm,
}

impl Signer for ClaimingSigner {
    /// ECDSA signs the leftmost bits of a hash as wide as the curve's order
    /// (SEC 1 §4.1.3, FIPS 186-5 §6.4.1), so P-256 over SHA-384 signs the
    /// first 32 bytes of the SHA-384 digest. aws-lc-rs has no P-256/SHA-384
    /// signing algorithm; signing that prefix as a P-256/SHA-256 digest gives
    /// exactly that signature (the TLS 1.2 case below, which the gateway
    /// verifies as ECDSA P-256/SHA-384, shows it).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let fail = |what: &str| rustls::Error::General(format!("test signer: {what}"));
        let full = digest::digest(self.hash, message);
        let prefix = digest::Digest::import_less_safe(&full.as_ref()[..32], &digest::SHA256)
            .map_err(|_| fail("digest"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.pkcs8)
            .map_err(|_| fail("key"))?;
        let sig = key.sign_digest(&prefix).map_err(|_| fail("sign"))?;
        Ok(sig.as_ref().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        self.claim
    }
}

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

fn claiming_client(
    gw: &Gateway,
    cert: &Path,
    pkcs8: &[u8],
    claim: SignatureScheme,
    hash: &'static digest::Algorithm,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(&gw.certs.ca()) {
        roots.add(c).unwrap();
    }
    let key = ClaimingKey {
        pkcs8: pkcs8.to_vec(),
        claim,
        hash,
    };
    let certified = CertifiedKey::new(load_certs(cert), Arc::new(key));
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_cert_resolver(Arc::new(Presents(Arc::new(certified))));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[test]
fn tls13_ecdsa_signature_scheme_must_match_the_key_curve() {
    let st = start("rules_ecdsa_scheme");
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = name("p256-client");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &st.root.cert, &st.root.key).unwrap();
    let cert_path = st.td.join("p256-client.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    let pkcs8 = key.serialize_der();
    let (tls12, tls13) = (&rustls::version::TLS12, &rustls::version::TLS13);
    let get = |cfg| {
        let s = st
            .gw
            .tls_with(cfg)
            .unwrap_or_else(|e| st.gw.fail(&format!("handshake: {e}")));
        HttpConn::new(s).get("/ecdsa", &[]).unwrap().status
    };

    // Honest: P-256 under ecdsa_secp256r1_sha256, both versions.
    let p256 = SignatureScheme::ECDSA_NISTP256_SHA256;
    for v in [tls12, tls13] {
        let cfg = claiming_client(&st.gw, &cert_path, &pkcs8, p256, &digest::SHA256, v);
        assert_eq!(get(cfg), 200, "{v:?}");
    }

    let wrong = [
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &digest::SHA384,
            "ecdsa_secp384r1_sha384",
        ),
        (
            SignatureScheme::ECDSA_NISTP521_SHA512,
            &digest::SHA512,
            "ecdsa_secp521r1_sha512",
        ),
    ];
    for (scheme, hash, iana) in wrong {
        // TLS 1.2 schemes name a hash, not a curve: a valid signature
        // (P-256 over SHA-384/512) is accepted, as OpenSSL accepts it.
        let cfg = claiming_client(&st.gw, &cert_path, &pkcs8, scheme, hash, tls12);
        assert_eq!(get(cfg), 200, "TLS 1.2 {iana}");

        // TLS 1.3: refused with illegal_parameter (OpenSSL: "wrong curve";
        // tlsfuzzer's test-tls13-ecdsa-in-certificate-verify expects it).
        let before = st.gw.proc.count_log_lines(&[REFUSED, iana]);
        let cfg = claiming_client(&st.gw, &cert_path, &pkcs8, scheme, hash, tls13);
        assert_eq!(
            expect_tls_alert(st.gw.addr(), cfg),
            "IllegalParameter",
            "TLS 1.3 {iana}"
        );
        expect_logged(
            &st.gw,
            &format!("ECDSA signature scheme {iana} does not match the client's P-256 key"),
            before + 1,
        );
    }
    expect_counted(&st.admin, "protocol", 2.0);
}
