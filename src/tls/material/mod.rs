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
pub fn crl_problem(e: &webpki::Error) -> String {
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
mod tests;
