use super::*;
use crate::certs::{self, InitOptions, KeyType};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-material-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A dev CA, server and client in this directory.
    fn with_dev_certs(key_type: KeyType) -> TempDir {
        let tmp = TempDir::new();
        let mut opts = InitOptions::new(&tmp.0);
        opts.key_type = key_type;
        assert!(certs::init(&opts).unwrap());
        tmp
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn p12(path: PathBuf, password: PasswordSource) -> IdentitySource {
    IdentitySource::Pkcs12 { path, password }
}

fn literal(pw: &str) -> PasswordSource {
    PasswordSource::Literal(pw.into())
}

#[test]
fn pem_identity_for_every_key_type() {
    for key_type in [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Ed25519,
    ] {
        let tmp = TempDir::with_dev_certs(key_type);
        let id = load_identity(&IdentitySource::Pem {
            certificate: tmp.path("server.pem"),
            private_key: tmp.path("server.key"),
        })
        .unwrap_or_else(|e| panic!("{key_type}: {e}"));
        assert_eq!(id.chain, pem_certs(&tmp.path("server.pem")), "{key_type}");
        assert_eq!(id.chain.len(), 2);
        assert!(matches!(id.key, PrivateKeyDer::Pkcs8(_)), "{key_type}");
    }
}

#[test]
fn pem_identity_with_the_wrong_key_or_order() {
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let err = load_identity(&IdentitySource::Pem {
        certificate: tmp.path("server.pem"),
        private_key: tmp.path("client.key"),
    })
    .unwrap_err();
    let want = format!(
        "{}: this private key does not belong to the first certificate in {}",
        tmp.path("client.key").display(),
        tmp.path("server.pem").display()
    );
    assert_eq!(err.to_string(), want);

    // CA first, leaf second: the key is found, out of place.
    let chain = fs::read_to_string(tmp.path("server.pem")).unwrap();
    let split = chain.find("-----END CERTIFICATE-----").unwrap() + 26;
    let (leaf, ca) = chain.split_at(split);
    fs::write(tmp.path("reversed.pem"), format!("{ca}{leaf}")).unwrap();
    let err = load_identity(&IdentitySource::Pem {
        certificate: tmp.path("reversed.pem"),
        private_key: tmp.path("server.key"),
    })
    .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("(it belongs to certificate #2 there; the leaf must come first)"),
        "{err}"
    );
}

#[test]
fn pem_files_that_are_not_what_they_should_be() {
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let pem = |certificate: &str, private_key: &str| {
        load_identity(&IdentitySource::Pem {
            certificate: tmp.path(certificate),
            private_key: tmp.path(private_key),
        })
        .unwrap_err()
        .to_string()
    };
    let name = |n: &str| tmp.path(n).display().to_string();

    assert!(
        pem("nope.pem", "server.key").starts_with(&format!("{}: cannot read: ", name("nope.pem")))
    );
    assert_eq!(
        pem("server.key", "server.key"),
        format!(
            "{}: no certificate found in this PEM file",
            name("server.key")
        )
    );
    assert_eq!(
        pem("server.pem", "server.pem"),
        format!(
            "{}: no private key found in this PEM file",
            name("server.pem")
        )
    );
    fs::write(tmp.path("der.bin"), [0x30, 0x03, 0x02, 0x01, 0x01]).unwrap();
    assert_eq!(
        pem("der.bin", "server.key"),
        format!(
            "{}: not a PEM file (expected a \"-----BEGIN CERTIFICATE-----\" block)",
            name("der.bin")
        )
    );
    fs::write(
        tmp.path("enc.key"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    assert!(pem("server.pem", "enc.key").contains("unusable private key: it is encrypted"));
}

#[test]
fn pkcs12_with_the_right_password_from_each_source() {
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let want_chain = [
        pem_certs(&tmp.path("client.pem")),
        pem_certs(&tmp.path("ca.pem")),
    ]
    .concat();
    let pem_key = PrivateKeyDer::from_pem_file(tmp.path("client.key")).unwrap();

    let var = format!("PCS_TEST_P12_PASS_{}", std::process::id());
    std::env::set_var(&var, "portcullis");
    fs::write(tmp.path("pw.txt"), "portcullis\nsecond line is ignored\n").unwrap();
    fs::write(tmp.path("pw-crlf.txt"), "portcullis\r\n").unwrap();
    fs::write(tmp.path("pw-bare.txt"), "portcullis").unwrap();
    for password in [
        literal("portcullis"),
        PasswordSource::Env(var.clone()),
        PasswordSource::File(tmp.path("pw.txt")),
        PasswordSource::File(tmp.path("pw-crlf.txt")),
        PasswordSource::File(tmp.path("pw-bare.txt")),
    ] {
        let id = load_identity(&p12(tmp.path("client.p12"), password.clone()))
            .unwrap_or_else(|e| panic!("{password:?}: {e}"));
        assert_eq!(id.chain, want_chain, "leaf first, then the CA");
        match (&id.key, &pem_key) {
            (PrivateKeyDer::Pkcs8(a), PrivateKeyDer::Pkcs8(b)) => {
                assert_eq!(a.secret_pkcs8_der(), b.secret_pkcs8_der())
            }
            other => panic!("expected PKCS#8 keys, got {other:?}"),
        }
    }
    std::env::remove_var(&var);
}

#[test]
fn pkcs12_password_problems() {
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let file = tmp.path("client.p12");
    let shown = file.display();
    let err = |password| load_identity(&p12(file.clone(), password)).unwrap_err();

    let wrong = err(literal("nope"));
    assert!(
        matches!(wrong, MaterialError::WrongPassword { .. }),
        "{wrong:?}"
    );
    assert_eq!(
        wrong.to_string(),
        format!("{shown}: wrong PKCS#12 password (the file's integrity check failed)")
    );

    let var = format!("PCS_P12_PASS_UNSET_{}", std::process::id());
    assert_eq!(
        err(PasswordSource::Env(var.clone())).to_string(),
        format!("{shown}: password variable {var} is not set")
    );

    let missing = tmp.path("no-password-file");
    assert!(err(PasswordSource::File(missing.clone()))
        .to_string()
        .starts_with(&format!(
            "{shown}: cannot read password file {}: ",
            missing.display()
        )));

    // A password file with a different first line is a wrong password.
    fs::write(tmp.path("pw.txt"), "portcullis \n").unwrap();
    assert!(matches!(
        err(PasswordSource::File(tmp.path("pw.txt"))),
        MaterialError::WrongPassword { .. }
    ));
}

#[test]
fn pkcs12_files_that_are_not_usable() {
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let err = |name: &str| {
        load_identity(&p12(tmp.path(name), literal("portcullis")))
            .unwrap_err()
            .to_string()
    };
    assert!(err("client.pem").contains("this is a PEM file, not PKCS#12"));
    fs::write(tmp.path("junk.p12"), b"\x30\x03\x02\x01\x03garbage").unwrap();
    assert!(
        err("junk.p12").contains("not a usable PKCS#12 file: the file is damaged or not PKCS#12"),
        "{}",
        err("junk.p12")
    );
}

fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("openssl not found: skipping");
    }
    found
}

/// A .p12 made by OpenSSL with the CA listed before the leaf still loads
/// leaf first; one whose key is not the leaf's is refused.
#[test]
fn pkcs12_made_by_openssl() {
    if !have_openssl() {
        return;
    }
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP384);
    let status = Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-out",
            "openssl.p12",
            "-passout",
            "pass:s3cret",
        ])
        .args([
            "-in",
            "client.pem",
            "-inkey",
            "client.key",
            "-certfile",
            "ca.pem",
        ])
        .current_dir(&tmp.0)
        .status()
        .unwrap();
    assert!(status.success());
    let id = load_identity(&p12(tmp.path("openssl.p12"), literal("s3cret"))).unwrap();
    assert_eq!(
        id.chain,
        [
            pem_certs(&tmp.path("client.pem")),
            pem_certs(&tmp.path("ca.pem"))
        ]
        .concat()
    );
    let wrong = load_identity(&p12(tmp.path("openssl.p12"), literal("secret"))).unwrap_err();
    assert!(
        matches!(wrong, MaterialError::WrongPassword { .. }),
        "{wrong}"
    );
}

/// A CRL revoking one serial, by a fresh CA: (DER, PEM). Made with rcgen.
fn crl(revoked_serial: u64) -> (CertificateRevocationListDer<'static>, String) {
    use rcgen::{
        CertificateParams, CertificateRevocationListParams, IsCa, KeyIdMethod, KeyPair,
        KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = params.self_signed(&key).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(revoked_serial),
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca, &key)
    .unwrap();
    (crl.der().clone(), crl.pem().unwrap())
}

#[test]
fn crls_in_pem_and_der() {
    let tmp = TempDir::new();
    let ((a, a_pem), (b, b_pem), (c, _)) = (crl(7), crl(8), crl(9));
    // Two blocks in one PEM file, after blank lines and with text between.
    fs::write(
        tmp.path("two.pem"),
        format!("\n  \n{a_pem}comment\n{b_pem}"),
    )
    .unwrap();
    fs::write(tmp.path("one.crl"), c.as_ref()).unwrap();
    let crls = load_crls(&[tmp.path("two.pem"), tmp.path("one.crl")]).unwrap();
    assert_eq!(crls, [a, b, c]);
    assert_eq!(load_crls(&[]).unwrap(), []);
}

#[test]
fn files_that_are_not_crls() {
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let err = |name: &str| load_crls(&[tmp.path(name)]).unwrap_err().to_string();
    let name = |n: &str| tmp.path(n).display().to_string();
    assert_eq!(
        err("ca.pem"),
        format!(
            "{}: no certificate revocation list found in this PEM file",
            name("ca.pem")
        )
    );
    // A certificate in DER is not a CRL.
    fs::write(
        tmp.path("ca.der"),
        pem_certs(&tmp.path("ca.pem"))[0].as_ref(),
    )
    .unwrap();
    assert!(
        err("ca.der").starts_with(&format!(
            "{}: not a certificate revocation list: ",
            name("ca.der")
        )),
        "{}",
        err("ca.der")
    );
    // A PEM block labelled as a CRL that holds something else.
    let ca = fs::read_to_string(tmp.path("ca.pem")).unwrap();
    fs::write(tmp.path("fake.pem"), ca.replace("CERTIFICATE", "X509 CRL")).unwrap();
    assert!(err("fake.pem").contains(": not a certificate revocation list: "));
    assert!(err("missing.crl").starts_with(&format!("{}: cannot read: ", name("missing.crl"))));
}

#[test]
fn ca_bundles() {
    let tmp = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let other = TempDir::with_dev_certs(KeyType::EcdsaP256);
    let cas = load_ca_bundle(&[tmp.path("ca.pem"), other.path("ca.pem")]).unwrap();
    assert_eq!(
        cas,
        [
            pem_certs(&tmp.path("ca.pem")),
            pem_certs(&other.path("ca.pem"))
        ]
        .concat()
    );
    fs::write(
        tmp.path("empty.pem"),
        "# nothing here\n-----BEGIN X-----\nAA==\n-----END X-----\n",
    )
    .unwrap();
    let err = load_ca_bundle(&[tmp.path("ca.pem"), tmp.path("empty.pem")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: no certificate found in this PEM file",
            tmp.path("empty.pem").display()
        )
    );
    let garbage = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    fs::write(tmp.path("garbage.pem"), garbage).unwrap();
    let err = load_ca_bundle(&[tmp.path("garbage.pem")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("certificate #1 is not usable as a CA"),
        "{err}"
    );
}

#[test]
fn password_literal_is_not_printed() {
    let source = p12("x.p12".into(), literal("hunter2"));
    assert!(!format!("{source:?}").contains("hunter2"));
}
