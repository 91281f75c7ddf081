//! TLS material from files: identities (PEM certificate + key, or PKCS#12),
//! CA bundles and certificate revocation lists.
//!
//! Every error names the file and says in plain words what is wrong with it,
//! so that a config pointing at the wrong file is fixed from the message
//! alone.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};

/// Where the password of a PKCS#12 file comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Literal(String),
    /// The name of an environment variable holding the password.
    Env(String),
    /// A file whose first line is the password (its line ending is not part
    /// of it).
    File(PathBuf),
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(_) => f.write_str("Literal(\"[password elided]\")"),
            Self::Env(var) => f.debug_tuple("Env").field(var).finish(),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// Where a certificate chain and its private key come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// `certificate` holds the leaf first, then any intermediates.
    Pem {
        certificate: PathBuf,
        private_key: PathBuf,
    },
    Pkcs12 {
        path: PathBuf,
        password: PasswordSource,
    },
}

/// A certificate chain (leaf first) and the leaf's private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

#[non_exhaustive]
#[derive(Debug)]
pub enum MaterialError {
    /// The file cannot be read at all.
    Io { path: PathBuf, source: io::Error },
    /// Not PEM at all: no `-----BEGIN` line anywhere.
    NotPem { path: PathBuf, label: &'static str },
    /// A PEM file that is not well-formed.
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    /// Well-formed PEM without a block of the kind wanted.
    Empty { path: PathBuf, what: &'static str },
    /// The PKCS#12 file's MAC does not verify with the password given.
    WrongPassword { path: PathBuf },
    /// `PasswordSource::Env` names a variable that is not set.
    PasswordVarUnset { path: PathBuf, var: String },
    /// The password could not be read for another reason (its file is
    /// unreadable, or it is not UTF-8).
    Password { path: PathBuf, reason: String },
    /// A PKCS#12 file that cannot be used, for a reason other than its password.
    Pkcs12 { path: PathBuf, reason: String },
    /// A private key this build cannot sign with.
    UnsupportedKey { path: PathBuf, reason: String },
    /// The private key is not the key of the leaf certificate.
    KeyMismatch {
        /// The key file (or the PKCS#12 file).
        path: PathBuf,
        /// The PEM certificate file; None for PKCS#12.
        certificate: Option<PathBuf>,
        /// 1-based position of the certificate in `certificate` that the key
        /// does belong to, if any.
        matches_certificate: Option<usize>,
    },
    /// A certificate that rustls cannot use for the purpose it is loaded for.
    Certificate { path: PathBuf, reason: String },
    /// A file given as a CRL that does not parse as one.
    NotCrl { path: PathBuf, reason: String },
}

impl fmt::Display for MaterialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: cannot read: {source}", path.display()),
            Self::NotPem { path, label } => write!(
                f,
                "{}: not a PEM file (expected a \"-----BEGIN {label}-----\" block)",
                path.display()
            ),
            Self::Pem { path, what, reason } => {
                write!(f, "{}: cannot read {what}: {reason}", path.display())
            }
            Self::Empty { path, what } => {
                write!(f, "{}: no {what} found in this PEM file", path.display())
            }
            Self::WrongPassword { path } => write!(
                f,
                "{}: wrong PKCS#12 password (the file's integrity check failed)",
                path.display()
            ),
            Self::PasswordVarUnset { path, var } => {
                write!(f, "{}: password variable {var} is not set", path.display())
            }
            Self::Password { path, reason } | Self::Certificate { path, reason } => {
                write!(f, "{}: {reason}", path.display())
            }
            Self::Pkcs12 { path, reason } => {
                write!(f, "{}: not a usable PKCS#12 file: {reason}", path.display())
            }
            Self::UnsupportedKey { path, reason } => {
                write!(f, "{}: unusable private key: {reason}", path.display())
            }
            Self::KeyMismatch {
                path,
                certificate: None,
                ..
            } => write!(
                f,
                "{}: the private key does not belong to the certificate stored with it",
                path.display()
            ),
            Self::KeyMismatch {
                path,
                certificate: Some(cert),
                matches_certificate,
            } => {
                write!(
                    f,
                    "{}: this private key does not belong to the first certificate in {}",
                    path.display(),
                    cert.display()
                )?;
                if let Some(n) = matches_certificate {
                    write!(
                        f,
                        " (it belongs to certificate #{n} there; the leaf must come first)"
                    )?;
                }
                Ok(())
            }
            Self::NotCrl { path, reason } => write!(
                f,
                "{}: not a certificate revocation list: {reason}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for MaterialError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Loads a chain and its key, and checks that the key is the leaf's.
pub fn load_identity(source: &IdentitySource) -> Result<Identity, MaterialError> {
    match source {
        IdentitySource::Pem {
            certificate,
            private_key,
        } => {
            let chain = load_certs(certificate, "certificate")?;
            let key = load_private_key(private_key)?;
            check_key(&chain, &key, private_key, Some(certificate))?;
            Ok(Identity { chain, key })
        }
        IdentitySource::Pkcs12 { path, password } => {
            let password = password.read(path)?;
            let identity = load_pkcs12(path, &password)?;
            check_key(&identity.chain, &identity.key, path, None)?;
            Ok(identity)
        }
    }
}

/// The certificates of each PEM file, in order; each file must hold at least
/// one, and each must be usable as a trust anchor.
pub fn load_ca_bundle(paths: &[PathBuf]) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let mut all = Vec::new();
    for path in paths {
        let certs = load_certs(path, "certificate")?;
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|e| MaterialError::Certificate {
                    path: path.clone(),
                    reason: format!("certificate #{} is not usable as a CA: {e}", i + 1),
                })?;
        }
        all.extend(certs);
    }
    Ok(all)
}

/// The CRLs of each file, in order. A file is PEM if it starts with
/// `-----BEGIN` (after optional whitespace), and may then hold several
/// `X509 CRL` blocks; otherwise it is one DER-encoded CRL. Each CRL is
/// parsed the way rustls's verifier will parse it.
pub fn load_crls(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, MaterialError> {
    let mut all = Vec::new();
    for path in paths {
        let data = read(path)?;
        let crls = if looks_like_pem(&data) {
            let crls = CertificateRevocationListDer::pem_slice_iter(&data)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_error(path, "certificate revocation list", e))?;
            if crls.is_empty() {
                return Err(MaterialError::Empty {
                    path: path.clone(),
                    what: "certificate revocation list",
                });
            }
            crls
        } else {
            vec![CertificateRevocationListDer::from(data)]
        };
        for (i, crl) in crls.iter().enumerate() {
            webpki::OwnedCertRevocationList::from_der(crl.as_ref()).map_err(|e| {
                let reason = crl_problem(&e);
                MaterialError::NotCrl {
                    path: path.clone(),
                    reason: if crls.len() > 1 {
                        format!("block #{}: {reason}", i + 1)
                    } else {
                        reason
                    },
                }
            })?;
        }
        all.extend(crls);
    }
    Ok(all)
}

/// All the certificates of a PEM file, at least one. `what` names them in
/// errors ("certificate", "CA certificate").
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let data = read(path)?;
    if !looks_like_pem_anywhere(&data) {
        return Err(MaterialError::NotPem {
            path: path.to_path_buf(),
            label: "CERTIFICATE",
        });
    }
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, what, e))?;
    if certs.is_empty() {
        return Err(MaterialError::Empty {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(certs)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, MaterialError> {
    let data = read(path)?;
    if !looks_like_pem_anywhere(&data) {
        return Err(MaterialError::NotPem {
            path: path.to_path_buf(),
            label: "PRIVATE KEY",
        });
    }
    match PrivateKeyDer::from_pem_slice(&data) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) if contains(&data, b"-----BEGIN ENCRYPTED PRIVATE KEY") => {
            Err(MaterialError::UnsupportedKey {
                path: path.to_path_buf(),
                reason:
                    "it is encrypted; give it unencrypted, or use a PKCS#12 file with a password"
                        .into(),
            })
        }
        Err(e) => Err(pem_error(path, "private key", e)),
    }
}

fn load_pkcs12(path: &Path, password: &str) -> Result<Identity, MaterialError> {
    use p12_keystore::error::Error as P12;
    use p12_keystore::{KeyStore, KeyStoreEntry};

    let data = read(path)?;
    let bad = |reason: String| MaterialError::Pkcs12 {
        path: path.to_path_buf(),
        reason,
    };
    if looks_like_pem(&data) {
        return Err(bad(
            "this is a PEM file, not PKCS#12 (give it as a PEM certificate or key instead)".into(),
        ));
    }
    let store = KeyStore::from_pkcs12(&data, password).map_err(|e| match e {
        // The MAC is keyed by the password: a mismatch means the password is
        // wrong (or the file was altered, which the message also covers).
        P12::MacError(_) => MaterialError::WrongPassword {
            path: path.to_path_buf(),
        },
        P12::IoError(source) => MaterialError::Io {
            path: path.to_path_buf(),
            source,
        },
        P12::DerError(_) | P12::InvalidVersion | P12::X509Error(_) | P12::InvalidData => {
            bad(format!("the file is damaged or not PKCS#12 ({e})"))
        }
        P12::Pkcs5Error(_) | P12::UnpadError => bad(format!(
            "its contents cannot be decrypted (a wrong password, if the file has no integrity check): {e}"
        )),
        other => bad(other.to_string()),
    })?;
    let chains: Vec<_> = store
        .entries()
        .filter_map(|(_, entry)| match entry {
            KeyStoreEntry::PrivateKeyChain(chain) => Some(chain),
            _ => None,
        })
        .collect();
    let chain = match chains.as_slice() {
        [one] => *one,
        [] => {
            return Err(bad(
                "it holds no private key together with its certificate (a key and its certificate are paired by their localKeyID attribute)"
                    .into(),
            ))
        }
        many => {
            return Err(bad(format!(
                "it holds {} private keys; expected exactly one",
                many.len()
            )))
        }
    };
    // p12-keystore orders the chain: the certificate paired with the key,
    // then its issuer, and so on up.
    Ok(Identity {
        chain: chain
            .chain()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().to_vec())),
    })
}

/// The key must sign for the first certificate of the chain.
fn check_key(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    key_path: &Path,
    cert_path: Option<&Path>,
) -> Result<(), MaterialError> {
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(key).map_err(|e| {
        MaterialError::UnsupportedKey {
            path: key_path.to_path_buf(),
            reason: format!(
                "not an RSA, ECDSA (P-256/P-384/P-521) or Ed25519 key rustls can use ({e})"
            ),
        }
    })?;
    let belongs_to = |cert: &CertificateDer<'static>| {
        CertifiedKey::new(vec![cert.clone()], signing_key.clone()).keys_match()
    };
    let Some(leaf) = chain.first() else {
        return Err(MaterialError::Certificate {
            path: cert_path.unwrap_or(key_path).to_path_buf(),
            reason: "no certificate found".into(),
        });
    };
    match belongs_to(leaf) {
        // Unknown: the key cannot tell its public half; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(MaterialError::KeyMismatch {
                path: key_path.to_path_buf(),
                certificate: cert_path.map(Path::to_path_buf),
                matches_certificate: chain
                    .iter()
                    .position(|c| belongs_to(c).is_ok())
                    .map(|i| i + 1),
            })
        }
        Err(e) => Err(MaterialError::Certificate {
            path: cert_path.unwrap_or(key_path).to_path_buf(),
            reason: format!("the leaf certificate cannot be parsed: {e}"),
        }),
    }
}

impl PasswordSource {
    /// The password; `for_file` is the PKCS#12 file, named in errors.
    fn read(&self, for_file: &Path) -> Result<String, MaterialError> {
        let problem = |reason: String| MaterialError::Password {
            path: for_file.to_path_buf(),
            reason,
        };
        match self {
            Self::Literal(password) => Ok(password.clone()),
            Self::Env(var) => match std::env::var(var) {
                Ok(password) => Ok(password),
                Err(std::env::VarError::NotPresent) => Err(MaterialError::PasswordVarUnset {
                    path: for_file.to_path_buf(),
                    var: var.clone(),
                }),
                Err(std::env::VarError::NotUnicode(_)) => Err(problem(format!(
                    "password variable {var} is not valid UTF-8"
                ))),
            },
            Self::File(path) => {
                let data = fs::read(path).map_err(|e| {
                    problem(format!("cannot read password file {}: {e}", path.display()))
                })?;
                let text = String::from_utf8(data).map_err(|_| {
                    problem(format!(
                        "password file {} is not UTF-8 text",
                        path.display()
                    ))
                })?;
                let line = text.split('\n').next().unwrap_or_default();
                Ok(line.strip_suffix('\r').unwrap_or(line).to_string())
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, MaterialError> {
    fs::read(path).map_err(|source| MaterialError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, what: &'static str, e: pem::Error) -> MaterialError {
    match e {
        pem::Error::NoItemsFound => MaterialError::Empty {
            path: path.to_path_buf(),
            what,
        },
        pem::Error::Io(source) => MaterialError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => MaterialError::Pem {
            path: path.to_path_buf(),
            what,
            reason: other.to_string(),
        },
    }
}

/// Starts with `-----BEGIN` after optional whitespace.
fn looks_like_pem(data: &[u8]) -> bool {
    data.trim_ascii_start().starts_with(b"-----BEGIN")
}

/// PEM files may carry text before the first block (OpenSSL writes "Bag
/// Attributes" there), so certificates and keys accept a block anywhere.
fn looks_like_pem_anywhere(data: &[u8]) -> bool {
    contains(data, b"-----BEGIN")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// webpki's CRL parse errors in plain words.
fn crl_problem(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::BadDer | E::BadDerTime | E::TrailingData(_) => {
            "its DER encoding is not that of a CRL (damaged, or another kind of file)".into()
        }
        E::UnsupportedCrlVersion => "only version 2 CRLs are supported".into(),
        E::UnsupportedDeltaCrl => "delta CRLs are not supported".into(),
        E::UnsupportedIndirectCrl => "indirect CRLs are not supported".into(),
        E::UnsupportedCriticalExtension => {
            "it has a critical extension that is not supported".into()
        }
        E::UnsupportedRevocationReason => "it uses an unknown revocation reason code".into(),
        E::UnsupportedRevocationReasonsPartitioning => {
            "CRLs partitioned by revocation reason are not supported".into()
        }
        E::UnsupportedCrlIssuingDistributionPoint => {
            "its issuing distribution point is not supported".into()
        }
        E::InvalidCrlNumber => "its CRL number is invalid".into(),
        E::InvalidSerialNumber => "a revoked serial number is invalid".into(),
        E::MalformedExtensions => "its extensions are malformed".into(),
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
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

        assert!(pem("nope.pem", "server.key")
            .starts_with(&format!("{}: cannot read: ", name("nope.pem"))));
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
            err("junk.p12")
                .contains("not a usable PKCS#12 file: the file is damaged or not PKCS#12"),
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
}
