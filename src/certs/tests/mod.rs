//! Tests of the development PKI: what `init`, `issue` and the PKCS#12
//! files hold, checked by parsing them back.

use super::*;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-certs-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(super) fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("{tool} not found: skipping the part of this test that needs it");
    }
    found
}

/// Runs `openssl args…` in `dir`; returns (success, stdout + stderr).
pub(super) fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = openssl(dir, args);
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_type_names() {
    for k in KeyType::ALL {
        assert_eq!(k.name().parse::<KeyType>(), Ok(k));
        assert_eq!(k.to_string(), k.name());
    }
    assert_eq!("ECDSA-P256".parse::<KeyType>(), Ok(KeyType::EcdsaP256));
    assert_eq!(KeyType::default(), KeyType::EcdsaP256);
    let err = "dsa".parse::<KeyType>().unwrap_err();
    assert!(err.to_string().contains("\"dsa\""), "{err}");
}

#[test]
fn defaults() {
    let opts = InitOptions::new("x");
    assert_eq!(opts.server_names, ["localhost", "127.0.0.1", "::1"]);
    assert_eq!(opts.client_cn, "portcullis-dev-client");
    assert_eq!(opts.p12_password, "portcullis");
    assert_eq!(
        (opts.days, opts.force, opts.key_type),
        (825, false, KeyType::EcdsaP256)
    );
    let leaf = LeafOptions::new("ca", "alice", LeafKind::Client);
    assert_eq!(
        (leaf.out_dir.as_path(), leaf.common_name.as_str()),
        (Path::new("ca"), "alice")
    );
    assert!(!leaf.expired);
}

#[test]
fn init_generates_once() {
    let tmp = TempDir::new();
    let dir = tmp.0.join("nested/certs");
    let mut opts = InitOptions::new(&dir);
    assert!(init(&opts).unwrap());
    let contents = |name: &str| fs::read(dir.join(name)).unwrap();
    let before: Vec<Vec<u8>> = INIT_FILES.iter().map(|n| contents(n)).collect();
    #[cfg(unix)]
    for (name, want) in [
        ("ca.key", 0o600),
        ("server.key", 0o600),
        ("client.key", 0o600),
        ("client.p12", 0o600),
    ] {
        assert_eq!(mode(&dir.join(name)), want, "{name}");
    }
    let server_pem = String::from_utf8(contents("server.pem")).unwrap();
    assert_eq!(server_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(server_pem.ends_with(&String::from_utf8(contents("ca.pem")).unwrap()));

    // Second run: untouched.
    assert!(!init(&opts).unwrap());
    let after: Vec<Vec<u8>> = INIT_FILES.iter().map(|n| contents(n)).collect();
    assert_eq!(before, after);

    // Forced: a new CA.
    opts.force = true;
    assert!(init(&opts).unwrap());
    assert_ne!(contents("ca.pem"), before[0]);
}

#[test]
fn init_refuses_an_incomplete_set() {
    let tmp = TempDir::new();
    let opts = InitOptions::new(&tmp.0);
    assert!(init(&opts).unwrap());
    fs::remove_file(tmp.0.join("client.p12")).unwrap();
    let err = init(&opts).unwrap_err();
    assert!(matches!(err, CertError::Incomplete { .. }), "{err:?}");
    assert!(err.to_string().contains("client.p12"), "{err}");
    let ca_before = fs::read(tmp.0.join("ca.pem")).unwrap();
    assert_eq!(fs::read(tmp.0.join("ca.pem")).unwrap(), ca_before);
}

#[test]
fn init_rejects_bad_validity() {
    let tmp = TempDir::new();
    let mut opts = InitOptions::new(&tmp.0);
    opts.days = 0;
    assert!(matches!(init(&opts), Err(CertError::Generate(_))));
    opts.days = u32::MAX;
    assert!(matches!(init(&opts), Err(CertError::Generate(_))));
}

/// What OpenSSL 3 (and so curl 7.88) sees in each generated file.
fn check_with_openssl(dir: &Path, key_type: KeyType) {
    openssl_ok(dir, &["verify", "-CAfile", "ca.pem", "client.pem"]);
    openssl_ok(dir, &["verify", "-CAfile", "ca.pem", "server.pem"]);

    let ca = openssl_ok(dir, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    assert!(ca.contains("CN = Portcullis Dev CA"), "{ca}");
    assert!(ca.contains("CA:TRUE"), "{ca}");
    assert!(ca.contains("Certificate Sign, CRL Sign"), "{ca}");

    let client = openssl_ok(dir, &["x509", "-in", "client.pem", "-noout", "-text"]);
    assert!(client.contains("TLS Web Client Authentication"), "{client}");
    assert!(
        !client.contains("TLS Web Server Authentication"),
        "{client}"
    );
    assert!(client.contains("CN = portcullis-dev-client"), "{client}");
    assert!(client.contains("CA:FALSE"), "{client}");
    assert!(!client.contains("Subject Alternative Name"), "{client}");
    let usage = if key_type == KeyType::Rsa2048 {
        "Digital Signature, Key Encipherment"
    } else {
        "Digital Signature"
    };
    assert!(client.contains(usage), "{client}");

    let server = openssl_ok(dir, &["x509", "-in", "server.pem", "-noout", "-text"]);
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    assert!(
        server.contains("DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"),
        "{server}"
    );

    for key in ["ca.key", "server.key", "client.key"] {
        openssl_ok(dir, &["pkey", "-in", key, "-noout"]);
    }
    openssl_ok(
        dir,
        &[
            "pkcs12",
            "-in",
            "client.p12",
            "-passin",
            "pass:portcullis",
            "-noout",
        ],
    );
    let info = openssl_ok(
        dir,
        &[
            "pkcs12",
            "-in",
            "client.p12",
            "-passin",
            "pass:portcullis",
            "-info",
            "-nokeys",
        ],
    );
    assert_eq!(info.matches("BEGIN CERTIFICATE").count(), 2, "{info}");
    // p12-keystore names certificate bags by subject; the key bag gets the alias.
    assert!(
        info.contains("friendlyName: CN=portcullis-dev-client"),
        "{info}"
    );
    assert!(info.contains("localKeyID"), "{info}");
    let (wrong, _) = openssl(
        dir,
        &[
            "pkcs12",
            "-in",
            "client.p12",
            "-passin",
            "pass:nope",
            "-noout",
        ],
    );
    assert!(!wrong, "a wrong password was accepted");

    // The key inside the .p12 is the client certificate's key.
    let key_bag = openssl_ok(
        dir,
        &[
            "pkcs12",
            "-in",
            "client.p12",
            "-passin",
            "pass:portcullis",
            "-nocerts",
            "-nodes",
            "-out",
            "p12.key",
        ],
    );
    let _ = key_bag;
    let key_attributes = fs::read_to_string(dir.join("p12.key")).unwrap();
    assert!(
        key_attributes.contains("friendlyName: portcullis-dev-client"),
        "{key_attributes}"
    );
    let from_p12 = openssl_ok(dir, &["pkey", "-in", "p12.key", "-pubout"]);
    let from_cert = openssl_ok(dir, &["x509", "-in", "client.pem", "-noout", "-pubkey"]);
    assert_eq!(from_p12, from_cert);
    fs::remove_file(dir.join("p12.key")).unwrap();
}

#[test]
fn openssl_reads_every_key_type() {
    if !have("openssl") {
        return;
    }
    for key_type in KeyType::ALL {
        let tmp = TempDir::new();
        let mut opts = InitOptions::new(&tmp.0);
        opts.key_type = key_type;
        assert!(init(&opts).unwrap());
        check_with_openssl(&tmp.0, key_type);
    }
}

#[test]
fn issue_signs_with_the_ca_on_disk() {
    let tmp = TempDir::new();
    let ca_dir = tmp.0.join("ca");
    let out_dir = tmp.0.join("out");
    assert!(init(&InitOptions::new(&ca_dir)).unwrap());

    let mut alice = LeafOptions::new(&ca_dir, "alice", LeafKind::Client);
    alice.out_dir = out_dir.clone();
    alice.common_name = "Alice Example".into();
    alice.key_type = KeyType::Rsa2048;
    issue(&alice).unwrap();

    let mut old = LeafOptions::new(&ca_dir, "old", LeafKind::Client);
    old.out_dir = out_dir.clone();
    old.expired = true;
    issue(&old).unwrap();

    let mut api = LeafOptions::new(&ca_dir, "api", LeafKind::Server);
    api.out_dir = out_dir.clone();
    api.dns_names = vec!["api.example.test".into(), "10.1.2.3".into()];
    issue(&api).unwrap();

    for name in [
        "alice.pem",
        "alice.key",
        "alice.p12",
        "old.pem",
        "old.key",
        "old.p12",
        "api.pem",
        "api.key",
        "api.p12",
    ] {
        assert!(out_dir.join(name).is_file(), "{name}");
    }
    #[cfg(unix)]
    assert_eq!(mode(&out_dir.join("alice.key")), 0o600);

    if !have("openssl") {
        return;
    }
    let ca = ca_dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    openssl_ok(&out_dir, &["verify", "-CAfile", ca, "alice.pem"]);
    openssl_ok(&out_dir, &["verify", "-CAfile", ca, "api.pem"]);
    let (ok, text) = openssl(&out_dir, &["verify", "-CAfile", ca, "old.pem"]);
    assert!(!ok && text.contains("expired"), "{text}");

    let alice_text = openssl_ok(&out_dir, &["x509", "-in", "alice.pem", "-noout", "-text"]);
    assert!(alice_text.contains("CN = Alice Example"), "{alice_text}");
    assert!(
        alice_text.contains("TLS Web Client Authentication"),
        "{alice_text}"
    );
    assert!(
        alice_text.contains("Digital Signature, Key Encipherment"),
        "{alice_text}"
    );
    // The leaf names the on-disk CA's key, so chain building finds it.
    let ca_text = openssl_ok(&ca_dir, &["x509", "-in", "ca.pem", "-noout", "-text"]);
    let ski = ca_text
        .split("X509v3 Subject Key Identifier:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    assert!(
        alice_text.contains(&ski),
        "AKI should be {ski}:\n{alice_text}"
    );

    let api_text = openssl_ok(&out_dir, &["x509", "-in", "api.pem", "-noout", "-text"]);
    assert!(
        api_text.contains("TLS Web Server Authentication"),
        "{api_text}"
    );
    assert!(
        api_text.contains("DNS:api.example.test, IP Address:10.1.2.3"),
        "{api_text}"
    );
    let chain = fs::read_to_string(out_dir.join("api.pem")).unwrap();
    assert!(chain.ends_with(&fs::read_to_string(ca_dir.join("ca.pem")).unwrap()));

    let info = openssl_ok(
        &out_dir,
        &[
            "pkcs12",
            "-in",
            "alice.p12",
            "-passin",
            "pass:portcullis",
            "-info",
            "-nokeys",
        ],
    );
    assert_eq!(info.matches("BEGIN CERTIFICATE").count(), 2, "{info}");
}

/// The server's .p12 loads as a server identity: key and [leaf, CA].
#[test]
fn issue_batch_makes_distinct_clients_of_the_ca() {
    let tmp = TempDir::new();
    let ca_dir = tmp.0.join("ca");
    assert!(init(&InitOptions::new(&ca_dir)).unwrap());
    let mut opts = LeafOptions::new(&ca_dir, "load", LeafKind::Client);
    opts.out_dir = tmp.0.join("clients");
    opts.common_name = "load".into();
    let stems = issue_batch(&opts, 3).unwrap();
    assert_eq!(stems, ["load-00001", "load-00002", "load-00003"]);
    let verifier = crate::tls::client_verifier::build(
        &load_chain(&ca_dir.join("ca.pem")),
        &[],
        true,
        crate::tls::server_config::provider().signature_verification_algorithms,
        0,
    )
    .unwrap();
    let mut seen = std::collections::HashSet::new();
    for stem in &stems {
        let chain = load_chain(&opts.out_dir.join(format!("{stem}.pem")));
        assert_eq!(chain.len(), 1, "a client file holds its leaf only");
        assert!(
            seen.insert(chain[0].to_vec()),
            "{stem} is a new certificate"
        );
        verifier
            .verify_client_cert(&chain[0], &[], rustls::pki_types::UnixTime::now())
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let key = std::fs::read_to_string(opts.out_dir.join(format!("{stem}.key"))).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(mode(&opts.out_dir.join(format!("{stem}.key"))) & 0o077, 0);
        assert!(!opts.out_dir.join(format!("{stem}.p12")).exists());
        let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert!(
            cert.subject().to_string().ends_with(&format!("CN={stem}")),
            "{}",
            cert.subject()
        );
    }
}

#[test]
fn server_leaves_get_a_p12() {
    use crate::tls::material::{load_identity, IdentitySource, PasswordSource};
    let tmp = TempDir::new();
    assert!(init(&InitOptions::new(&tmp.0)).unwrap());
    let mut api = LeafOptions::new(&tmp.0, "api", LeafKind::Server);
    api.p12_password = "api-secret".into();
    issue(&api).unwrap();
    for (stem, password) in [("server", "portcullis"), ("api", "api-secret")] {
        let id = load_identity(&IdentitySource::Pkcs12 {
            path: tmp.0.join(format!("{stem}.p12")),
            password: PasswordSource::Literal(password.into()),
        })
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
        assert_eq!(
            id.chain,
            load_chain(&tmp.0.join(format!("{stem}.pem"))),
            "{stem}"
        );
    }
    #[cfg(unix)]
    assert_eq!(mode(&tmp.0.join("api.p12")), 0o600);
}

#[test]
fn issue_adds_uri_sans() {
    let tmp = TempDir::new();
    assert!(init(&InitOptions::new(&tmp.0)).unwrap());
    let mut svc = LeafOptions::new(&tmp.0, "svc", LeafKind::Client);
    svc.uris = vec![
        "spiffe://example.org/ns/prod/sa/billing".into(),
        "urn:example:billing".into(),
    ];
    svc.dns_names = vec!["billing.internal".into()];
    issue(&svc).unwrap();
    let der = &load_chain(&tmp.0.join("svc.pem"))[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    let names: Vec<String> = san
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => format!("URI:{u}"),
            x509_parser::extensions::GeneralName::DNSName(d) => format!("DNS:{d}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "DNS:billing.internal",
            "URI:spiffe://example.org/ns/prod/sa/billing",
            "URI:urn:example:billing"
        ]
    );

    for (uri, why) in [
        ("billing", "not an absolute URI"),
        ("1http://x", "not an absolute URI"),
        ("spiffe:", "nothing follows the scheme"),
        ("spiffe://example.org/a b", "spaces"),
        ("spiffe://exämple.org/a", "only ASCII"),
    ] {
        svc.uris = vec![uri.into()];
        let err = issue(&svc).unwrap_err();
        assert!(
            matches!(&err, CertError::Uri { .. }) && err.to_string().contains(why),
            "{uri}: {err}"
        );
        assert!(err.to_string().starts_with(&format!("SAN URI \"{uri}\": ")));
    }
}

#[test]
fn issue_reports_a_bad_ca() {
    let tmp = TempDir::new();
    let leaf = |ca_dir: &Path| {
        let mut opts = LeafOptions::new(ca_dir, "x", LeafKind::Client);
        opts.out_dir = tmp.0.join("out");
        issue(&opts)
    };

    let err = leaf(&tmp.0.join("nowhere")).unwrap_err();
    assert!(
        matches!(&err, CertError::Io { path, .. } if path.ends_with("nowhere/ca.pem")),
        "{err:?}"
    );
    assert!(err.to_string().contains("ca.pem"), "{err}");

    let a = tmp.0.join("a");
    let b = tmp.0.join("b");
    init(&InitOptions::new(&a)).unwrap();
    init(&InitOptions::new(&b)).unwrap();

    // Key from another CA.
    fs::copy(b.join("ca.key"), a.join("ca.key")).unwrap();
    let err = leaf(&a).unwrap_err();
    assert!(
        matches!(&err, CertError::ReadCa { path, .. } if path.ends_with("a/ca.key")),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");

    // A leaf is not a CA.
    fs::copy(b.join("client.pem"), b.join("ca.pem")).unwrap();
    fs::copy(b.join("client.key"), b.join("ca.key")).unwrap();
    let err = leaf(&b).unwrap_err();
    assert!(err.to_string().contains("not a CA certificate"), "{err}");

    // Not PEM at all.
    fs::write(b.join("ca.pem"), "hello").unwrap();
    let err = leaf(&b).unwrap_err();
    assert!(
        matches!(&err, CertError::ReadCa { path, .. } if path.ends_with("b/ca.pem")),
        "{err:?}"
    );
}

pub(super) fn load_chain(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

mod handshake;
