//! A throwaway PKI for development: one CA, a server leaf and client leaves.
//!
//! Used by `portcullis certs` and by `portcullis run` without a config, so
//! that mTLS works out of the box with curl and openssl. Nothing here is
//! meant for production keys: the CA key sits next to the leaves.
//!
//! `crl` (revocation lists signed by the same CA) is in its own file.

mod crl;

pub use crl::{write_crl, CrlOptions, DEFAULT_CRL_DAYS};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    /// OpenSSL 3 reads all its files, .p12 included; some other PKCS#12
    /// consumers (browsers, macOS Keychain) don't take Ed25519 keys.
    Ed25519,
}

impl KeyType {
    /// The spelling `FromStr` accepts.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Ed25519 => "ed25519",
        }
    }

    const ALL: [KeyType; 4] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Ed25519,
    ];
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = UnknownKeyType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownKeyType(s.to_string()))
    }
}

/// A `--key-type` value that is none of the supported names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKeyType(pub String);

impl fmt::Display for UnknownKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown key type \"{}\" (expected ecdsa-p256, ecdsa-p384, rsa-2048 or ed25519)",
            self.0
        )
    }
}

impl std::error::Error for UnknownKeyType {}

/// What `init` generates. `InitOptions::new` fills in the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    pub out_dir: PathBuf,
    /// DNS names and IP literals for the server certificate's SANs.
    pub server_names: Vec<String>,
    pub client_cn: String,
    pub key_type: KeyType,
    pub p12_password: String,
    pub days: u32,
    /// Regenerate even if the files exist.
    pub force: bool,
}

impl InitOptions {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        InitOptions {
            out_dir: out_dir.into(),
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            client_cn: "portcullis-dev-client".into(),
            key_type: KeyType::default(),
            p12_password: DEFAULT_P12_PASSWORD.into(),
            days: DEFAULT_DAYS,
            force: false,
        }
    }
}

pub const DEFAULT_P12_PASSWORD: &str = "portcullis";
/// The longest validity Apple platforms accept for a TLS server certificate.
pub const DEFAULT_DAYS: u32 = 825;

/// The files `init` needs to find in `out_dir` to consider the set complete.
/// It also writes server.p12, which is not required, so that directories
/// made before servers had a .p12 stay usable.
pub const INIT_FILES: [&str; 7] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
    "client.p12",
];

/// Writes out_dir/{ca.pem, ca.key, server.pem, server.key, server.p12,
/// client.pem, client.key, client.p12}; server.pem is the leaf followed by
/// the CA.
///
/// Generated once: if all the files exist and `!force`, they are left alone
/// and this returns Ok(false). Ok(true) means it generated. If only some
/// exist it refuses ([`CertError::Incomplete`]) rather than replace a CA that
/// clients may already trust.
pub fn init(opts: &InitOptions) -> Result<bool, CertError> {
    let dir = &opts.out_dir;
    if !opts.force {
        let missing: Vec<PathBuf> = INIT_FILES
            .iter()
            .map(|name| dir.join(name))
            .filter(|path| !path.exists())
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        if missing.len() < INIT_FILES.len() {
            return Err(CertError::Incomplete {
                dir: dir.clone(),
                missing,
            });
        }
    }
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.clone(),
        source,
    })?;

    let ca_key = generate_key(opts.key_type)?;
    let ca = ca_params(opts.days)?
        .self_signed(&ca_key)
        .map_err(generate_error)?;
    let issuer = Issuer {
        cert: &ca,
        key: &ca_key,
        der: ca.der(),
        pem: ca.pem(),
    };

    let server_cn = opts
        .server_names
        .first()
        .cloned()
        .unwrap_or_else(|| "portcullis-dev-server".into());
    let server = LeafSpec {
        common_name: &server_cn,
        names: &opts.server_names,
        uris: &[],
        key_type: opts.key_type,
        validity: Validity::from_now(opts.days)?,
        kind: LeafKind::Server,
    };
    let client = LeafSpec {
        common_name: &opts.client_cn,
        names: &[],
        uris: &[],
        key_type: opts.key_type,
        validity: Validity::from_now(opts.days)?,
        kind: LeafKind::Client,
    };
    let server = server.sign(&issuer)?;
    let client = client.sign(&issuer)?;

    // The CA goes last: if writing stops half-way, the set is incomplete and
    // the next run says so instead of silently reusing a CA without leaves.
    write_leaf(dir, "server", &server, &issuer, &opts.p12_password)?;
    write_leaf(dir, "client", &client, &issuer, &opts.p12_password)?;
    write_file(
        &dir.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        Secret::Yes,
    )?;
    write_file(&dir.join("ca.pem"), issuer.pem.as_bytes(), Secret::No)?;
    Ok(true)
}

/// One extra leaf, signed by an existing CA. `LeafOptions::new` fills in the
/// defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafOptions {
    /// Holds ca.pem and ca.key.
    pub ca_dir: PathBuf,
    pub out_dir: PathBuf,
    /// File stem: "alice" → alice.pem, alice.key, alice.p12.
    pub stem: String,
    pub common_name: String,
    /// SANs; IP literals become IP SANs. Optional for client leaves.
    pub dns_names: Vec<String>,
    /// URI SANs, such as SPIFFE IDs ("spiffe://example.org/service").
    pub uris: Vec<String>,
    pub key_type: KeyType,
    pub p12_password: String,
    pub days: u32,
    /// Validity entirely in the past (now-30d .. now-1d), to test rejection.
    pub expired: bool,
    pub kind: LeafKind,
}

impl LeafOptions {
    pub fn new(ca_dir: impl Into<PathBuf>, stem: impl Into<String>, kind: LeafKind) -> Self {
        let ca_dir = ca_dir.into();
        let stem = stem.into();
        LeafOptions {
            out_dir: ca_dir.clone(),
            ca_dir,
            common_name: stem.clone(),
            stem,
            dns_names: Vec::new(),
            uris: Vec::new(),
            key_type: KeyType::default(),
            p12_password: DEFAULT_P12_PASSWORD.into(),
            days: DEFAULT_DAYS,
            expired: false,
            kind,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// EKU clientAuth.
    Client,
    /// EKU serverAuth; its .pem holds the leaf followed by the CA.
    Server,
}

/// Issues one leaf signed by the CA in `ca_dir`, overwriting
/// out_dir/{stem}.pem, {stem}.key and {stem}.p12 (key plus [leaf, CA]: for
/// curl and browsers, or a server identity loaded from PKCS#12).
pub fn issue(opts: &LeafOptions) -> Result<(), CertError> {
    let ca = LoadedCa::load(&opts.ca_dir)?;
    let ca_cert = ca.params.self_signed(&ca.key).map_err(generate_error)?;
    let issuer = Issuer {
        cert: &ca_cert,
        key: &ca.key,
        // The chain must carry the CA exactly as clients have it on disk,
        // not the re-signed copy rcgen needs to act as issuer.
        der: &ca.der,
        pem: ca.pem,
    };
    let validity = if opts.expired {
        Validity::expired()?
    } else {
        Validity::from_now(opts.days)?
    };
    let spec = LeafSpec {
        common_name: &opts.common_name,
        names: &opts.dns_names,
        uris: &opts.uris,
        key_type: opts.key_type,
        validity,
        kind: opts.kind,
    };
    let leaf = spec.sign(&issuer)?;
    fs::create_dir_all(&opts.out_dir).map_err(|source| CertError::Io {
        path: opts.out_dir.clone(),
        source,
    })?;
    write_leaf(
        &opts.out_dir,
        &opts.stem,
        &leaf,
        &issuer,
        &opts.p12_password,
    )
}

#[non_exhaustive]
#[derive(Debug)]
pub enum CertError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Key or certificate generation failed (rcgen's message).
    Generate(String),
    /// Building the PKCS#12 file failed.
    Pkcs12(String),
    /// ca.pem or ca.key is unreadable as a CA.
    ReadCa { path: PathBuf, reason: String },
    /// Some of the `init` files exist and some don't.
    Incomplete { dir: PathBuf, missing: Vec<PathBuf> },
    /// A SAN URI that cannot go into a certificate.
    Uri { uri: String, reason: &'static str },
    /// A certificate given to `crl` that it cannot revoke.
    Revoke { path: PathBuf, reason: String },
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            CertError::Generate(why) => write!(f, "cannot generate certificate: {why}"),
            CertError::Pkcs12(why) => write!(f, "cannot build PKCS#12 file: {why}"),
            CertError::ReadCa { path, reason } => {
                write!(f, "{}: cannot use as CA: {reason}", path.display())
            }
            CertError::Uri { uri, reason } => write!(f, "SAN URI \"{uri}\": {reason}"),
            CertError::Revoke { path, reason } => {
                write!(f, "{}: cannot revoke: {reason}", path.display())
            }
            CertError::Incomplete { dir, missing } => {
                let names: Vec<String> = missing
                    .iter()
                    .map(|p| {
                        p.file_name()
                            .unwrap_or(p.as_os_str())
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                write!(
                    f,
                    "{}: dev certificates are incomplete (missing {}); remove the directory or regenerate them all with --force",
                    dir.display(),
                    names.join(", ")
                )
            }
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

// --- Generation -----------------------------------------------------------

/// The signing side of a leaf: rcgen's view of the CA plus the CA as it is
/// written in files.
struct Issuer<'a> {
    cert: &'a Certificate,
    key: &'a KeyPair,
    der: &'a CertificateDer<'static>,
    /// One PEM block, ending in a newline.
    pem: String,
}

struct LeafSpec<'a> {
    common_name: &'a str,
    names: &'a [String],
    uris: &'a [String],
    key_type: KeyType,
    validity: Validity,
    kind: LeafKind,
}

struct IssuedLeaf {
    cert: Certificate,
    key: KeyPair,
    kind: LeafKind,
    common_name: String,
}

impl LeafSpec<'_> {
    fn sign(&self, issuer: &Issuer<'_>) -> Result<IssuedLeaf, CertError> {
        let key = generate_key(self.key_type)?;
        // `new` turns IP literals into IP SANs and the rest into DNS SANs.
        let mut params = CertificateParams::new(self.names.to_vec()).map_err(generate_error)?;
        for uri in self.uris {
            check_uri(uri)?;
            let ia5 = uri.as_str().try_into().map_err(|_| CertError::Uri {
                uri: uri.clone(),
                reason: "only ASCII characters can go into a certificate (percent-encode the rest)",
            })?;
            params.subject_alt_names.push(SanType::URI(ia5));
        }
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if self.key_type == KeyType::Rsa2048 {
            // TLS 1.2 RSA key exchange encrypts to the key.
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![match self.kind {
            LeafKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
            LeafKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = self.validity.not_before;
        params.not_after = self.validity.not_after;
        let cert = params
            .signed_by(&key, issuer.cert, issuer.key)
            .map_err(generate_error)?;
        Ok(IssuedLeaf {
            cert,
            key,
            kind: self.kind,
            common_name: self.common_name.to_string(),
        })
    }
}

/// RFC 5280 wants an absolute URI: a scheme, a colon, then no spaces.
fn check_uri(uri: &str) -> Result<(), CertError> {
    let bad = |reason| {
        Err(CertError::Uri {
            uri: uri.to_string(),
            reason,
        })
    };
    let Some((scheme, rest)) = uri.split_once(':') else {
        return bad("not an absolute URI (expected scheme:..., like spiffe://example.org/service)");
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return bad("not an absolute URI (expected scheme:..., like spiffe://example.org/service)");
    }
    if rest.is_empty() {
        return bad("nothing follows the scheme");
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("a URI cannot contain spaces or control characters");
    }
    Ok(())
}

fn ca_params(days: u32) -> Result<CertificateParams, CertError> {
    let validity = Validity::from_now(days)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // A random suffix makes every dev CA's name unique, so a certificate from
    // another dev CA is reported as "not signed by a trusted CA" (unknown
    // issuer) rather than as a signature that fails under a same-named CA.
    let mut tag = [0u8; 4];
    aws_lc_rs::rand::fill(&mut tag)
        .map_err(|_| CertError::Generate("the system random generator failed".into()))?;
    let suffix: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Portcullis Dev CA {suffix}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(params)
}

fn generate_key(key_type: KeyType) -> Result<KeyPair, CertError> {
    match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyType::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyType::Ed25519 => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(generate_error)?;
            return match ed25519_pkcs8_v1(key.serialized_der()) {
                Some(v1) => KeyPair::from_pkcs8_der_and_sign_algo(
                    &PrivatePkcs8KeyDer::from(v1),
                    &rcgen::PKCS_ED25519,
                )
                .map_err(generate_error),
                None => Ok(key),
            };
        }
    }
    .map_err(generate_error)
}

/// aws-lc writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key),
/// which OpenSSL 3.0 refuses to load ("unsupported"). The v1 form holds the
/// same private key and every consumer reads it, rustls included.
/// None if the input is not laid out as expected (then it is kept as is).
fn ed25519_pkcs8_v1(v2: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE { INTEGER 1, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING (32) } ...
    const V2_PREFIX: [u8; 16] = [
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    // The same with version 0 and the outer length of a body without the public key.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed = v2.strip_prefix(&V2_PREFIX)?.get(..32)?;
    Some([&V1_PREFIX[..], seed].concat())
}

fn generate_error(e: rcgen::Error) -> CertError {
    CertError::Generate(e.to_string())
}

/// 16 random bytes, positive and without a leading zero byte, so every
/// serial has the same length (RFC 5280 allows up to 20).
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| CertError::Generate("the system random generator failed".into()))?;
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

struct Validity {
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
}

impl Validity {
    /// From an hour ago, so a peer whose clock runs a little behind still
    /// accepts it, until `days` from now.
    fn from_now(days: u32) -> Result<Validity, CertError> {
        if days == 0 {
            return Err(CertError::Generate(
                "validity must be at least 1 day".into(),
            ));
        }
        let now = time::OffsetDateTime::now_utc();
        let not_after = now
            .checked_add(time::Duration::days(i64::from(days)))
            .filter(|t| t.year() <= 9999)
            .ok_or_else(|| CertError::Generate(format!("validity of {days} days is too long")))?;
        Ok(Validity {
            not_before: now - time::Duration::hours(1),
            not_after,
        })
    }

    fn expired() -> Result<Validity, CertError> {
        let now = time::OffsetDateTime::now_utc();
        Ok(Validity {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
        })
    }
}

// --- Reading an existing CA ----------------------------------------------

struct LoadedCa {
    params: CertificateParams,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem: String,
}

impl LoadedCa {
    fn load(dir: &Path) -> Result<LoadedCa, CertError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let cert_text = read_text(&cert_path)?;
        let key_text = read_text(&key_path)?;
        let bad_cert = |reason: String| CertError::ReadCa {
            path: cert_path.clone(),
            reason,
        };
        let bad_key = |reason: String| CertError::ReadCa {
            path: key_path.clone(),
            reason,
        };

        let der = CertificateDer::from_pem_slice(cert_text.as_bytes())
            .map_err(|e| bad_cert(format!("no PEM certificate found ({e})")))?;
        let pem = first_pem_block(&cert_text, "CERTIFICATE")
            .ok_or_else(|| bad_cert("no PEM certificate found".into()))?;
        let params = CertificateParams::from_ca_cert_pem(&pem)
            .map_err(|e| bad_cert(format!("cannot parse the certificate ({e})")))?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(bad_cert(
                "not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
            ));
        }
        let key = KeyPair::from_pem(&key_text)
            .map_err(|e| bad_key(format!("cannot parse the private key ({e})")))?;
        // The certificate embeds its SubjectPublicKeyInfo verbatim (DER is
        // canonical), so a key that matches it appears inside it byte for byte.
        // Without this check a mismatched key signs leaves nobody can verify.
        if !contains(der.as_ref(), &key.public_key_der()) {
            return Err(bad_key(format!(
                "does not match the certificate in {}",
                cert_path.display()
            )));
        }
        Ok(LoadedCa {
            params,
            key,
            der,
            pem,
        })
    }
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The first `-----BEGIN {label}-----` … `-----END {label}-----` block,
/// copied verbatim, with a trailing newline.
fn first_pem_block(text: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = start + text[start..].find(&end)? + end.len();
    Some(format!("{}\n", &text[start..stop]))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// --- Writing ----------------------------------------------------------------

fn write_leaf(
    dir: &Path,
    stem: &str,
    leaf: &IssuedLeaf,
    issuer: &Issuer<'_>,
    p12_password: &str,
) -> Result<(), CertError> {
    let pem = match leaf.kind {
        // Servers send the chain; the CA is what clients are told to trust.
        LeafKind::Server => format!("{}{}", leaf.cert.pem(), issuer.pem),
        LeafKind::Client => leaf.cert.pem(),
    };
    let key_pem = leaf.key.serialize_pem();
    write_file(&dir.join(format!("{stem}.pem")), pem.as_bytes(), Secret::No)?;
    write_file(
        &dir.join(format!("{stem}.key")),
        key_pem.as_bytes(),
        Secret::Yes,
    )?;
    let p12 = pkcs12(leaf, issuer.der, p12_password)?;
    write_file(&dir.join(format!("{stem}.p12")), &p12, Secret::Yes)
}

/// Key plus chain [leaf, CA]. p12-keystore's defaults (PBES2 with AES-256,
/// HMAC-SHA-256 MAC) are what OpenSSL 3 reads without `-legacy`.
fn pkcs12(
    leaf: &IssuedLeaf,
    ca: &CertificateDer<'_>,
    password: &str,
) -> Result<Vec<u8>, CertError> {
    use p12_keystore::{KeyStore, KeyStoreEntry, PrivateKeyChain};
    let p12_error = |e: p12_keystore::error::Error| CertError::Pkcs12(e.to_string());
    let leaf_der = leaf.cert.der();
    let chain = vec![
        p12_keystore::Certificate::from_der(leaf_der).map_err(p12_error)?,
        p12_keystore::Certificate::from_der(ca).map_err(p12_error)?,
    ];
    // localKeyId ties the key to its certificate inside the file; a digest
    // of the certificate is what OpenSSL itself uses.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf_der);
    let chain = PrivateKeyChain::new(leaf.key.serialize_der(), digest.as_ref(), chain);
    let mut store = KeyStore::new();
    // The alias becomes the friendlyName browsers show when asking which
    // certificate to present.
    store.add_entry(&leaf.common_name, KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().map_err(p12_error)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Secret {
    Yes,
    No,
}

/// Writes `bytes` to `path`, replacing it. Secrets are mode 0600, set before
/// any byte is written so the key is never readable by others, even when an
/// older file with wider permissions is being replaced.
fn write_file(path: &Path, bytes: &[u8], secret: Secret) -> Result<(), CertError> {
    let io_error = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret == Secret::Yes {
        owner_only_on_create(&mut options);
    }
    let mut file = options.open(path).map_err(io_error)?;
    if secret == Secret::Yes {
        make_owner_only(&file).map_err(io_error)?;
    }
    file.write_all(bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

#[cfg(unix)]
fn owner_only_on_create(options: &mut fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600);
}

#[cfg(unix)]
fn make_owner_only(file: &fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn owner_only_on_create(_: &mut fs::OpenOptions) {}

#[cfg(not(unix))]
fn make_owner_only(_: &fs::File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn load_chain(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn load_key(path: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
        rustls::pki_types::PrivateKeyDer::from_pem_file(path).unwrap()
    }

    /// Full mutual TLS handshake in memory with rustls (the gateway's TLS
    /// stack): server.pem/key as server for "localhost", client.pem/key as
    /// client, both verified against ca.pem.
    fn rustls_handshake(dir: &Path, server_name: &str) -> Result<(), rustls::Error> {
        use std::sync::Arc;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_chain(&dir.join("ca.pem")) {
            roots.add(ca).unwrap();
        }
        let roots = Arc::new(roots);
        // The gateway's own client verifier (keyUsage rules included).
        let verifier = crate::tls::client_verifier::build(
            &load_chain(&dir.join("ca.pem")),
            &[],
            true,
            provider.signature_verification_algorithms,
        )
        .unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                load_chain(&dir.join("server.pem")),
                load_key(&dir.join("server.key")),
            )
            .unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                load_chain(&dir.join("client.pem")),
                load_key(&dir.join("client.key")),
            )
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let mut slice = &buf[..];
            while !slice.is_empty() {
                server.read_tls(&mut slice).unwrap();
            }
            server.process_new_packets()?;
            let mut buf = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let mut slice = &buf[..];
            while !slice.is_empty() {
                client.read_tls(&mut slice).unwrap();
            }
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                assert!(server.peer_certificates().is_some_and(|c| !c.is_empty()));
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn rustls_accepts_every_key_type() {
        for key_type in KeyType::ALL {
            let tmp = TempDir::new();
            let mut opts = InitOptions::new(&tmp.0);
            opts.key_type = key_type;
            assert!(init(&opts).unwrap());
            for name in ["localhost", "127.0.0.1", "::1"] {
                rustls_handshake(&tmp.0, name).unwrap_or_else(|e| panic!("{key_type} {name}: {e}"));
            }
            let wrong = rustls_handshake(&tmp.0, "example.com").unwrap_err();
            assert!(wrong.to_string().contains("not valid for name"), "{wrong}");

            // A client leaf issued later by the same CA is accepted too, and an
            // expired one is refused by the server.
            let mut later = LeafOptions::new(&tmp.0, "client", LeafKind::Client);
            later.key_type = key_type;
            issue(&later).unwrap();
            rustls_handshake(&tmp.0, "localhost").unwrap();
            later.expired = true;
            issue(&later).unwrap();
            let expired = rustls_handshake(&tmp.0, "localhost").unwrap_err();
            assert!(expired.to_string().contains("expired"), "{expired}");
        }
    }

    /// The .p12 works as curl's client certificate against a server that
    /// demands one (openssl s_server), as documented for users.
    #[test]
    fn curl_presents_the_p12() {
        if !have("openssl") || !have("curl") {
            return;
        }
        let tmp = TempDir::new();
        init(&InitOptions::new(&tmp.0)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-www",
                "-Verify",
                "1",
                "-verify_return_error",
            ])
            .args([
                "-CAfile",
                "ca.pem",
                "-cert",
                "server.pem",
                "-key",
                "server.key",
            ])
            .args(["-accept", &format!("127.0.0.1:{port}")])
            .current_dir(&tmp.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s_server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let url = format!("https://localhost:{port}/");
        let curl = |extra: &[&str]| {
            Command::new("curl")
                .args([
                    "--silent",
                    "--show-error",
                    "--max-time",
                    "10",
                    "--cacert",
                    "ca.pem",
                ])
                .args(extra)
                .arg(&url)
                .current_dir(&tmp.0)
                .output()
                .unwrap()
        };
        let with_p12 = curl(&["--cert-type", "P12", "--cert", "client.p12:portcullis"]);
        let without = curl(&[]);
        let _ = server.kill();
        let _ = server.wait();
        assert!(
            with_p12.status.success(),
            "curl with the .p12 failed: {}",
            String::from_utf8_lossy(&with_p12.stderr)
        );
        assert!(String::from_utf8_lossy(&with_p12.stdout).contains("portcullis-dev-client"));
        assert!(
            !without.status.success(),
            "the server did not demand a client certificate"
        );
    }
}
