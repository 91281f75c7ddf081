//! A throwaway PKI for development: one CA, a server leaf and client leaves.
//!
//! Used by `portcullis certs` and by `portcullis run` without a config, so
//! that mTLS works out of the box with curl and openssl. Nothing here is
//! meant for production keys: the CA key sits next to the leaves.
//!
//! `crl` (revocation lists signed by the same CA) is in its own file.

mod ca_file;
mod crl;
mod files;

use ca_file::{read_text, LoadedCa};
use files::{write_file, write_leaf, Secret};

pub use crl::{write_crl, CrlOptions, DEFAULT_CRL_DAYS};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::fs;
use std::path::PathBuf;
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

/// Issues `count` leaves like [`issue`] with the CA read once, for load
/// generation (many distinct clients): out_dir/{stem}-00001.pem and .key up
/// to `count`, common names {cn}-00001 and on. No `.p12`: its key
/// derivation would cost more than everything else here. Returns the stems.
pub fn issue_batch(opts: &LeafOptions, count: usize) -> Result<Vec<String>, CertError> {
    let ca = LoadedCa::load(&opts.ca_dir)?;
    let ca_cert = ca.params.self_signed(&ca.key).map_err(generate_error)?;
    let issuer = Issuer {
        cert: &ca_cert,
        key: &ca.key,
        der: &ca.der,
        pem: ca.pem,
    };
    fs::create_dir_all(&opts.out_dir).map_err(|source| CertError::Io {
        path: opts.out_dir.clone(),
        source,
    })?;
    let width = count.to_string().len().max(5);
    let mut stems = Vec::with_capacity(count);
    for i in 1..=count {
        let common_name = format!("{}-{i:0width$}", opts.common_name);
        let spec = LeafSpec {
            common_name: &common_name,
            names: &opts.dns_names,
            uris: &opts.uris,
            key_type: opts.key_type,
            validity: if opts.expired {
                Validity::expired()?
            } else {
                Validity::from_now(opts.days)?
            },
            kind: opts.kind,
        };
        let leaf = spec.sign(&issuer)?;
        let stem = format!("{}-{i:0width$}", opts.stem);
        let pem = match leaf.kind {
            LeafKind::Server => format!("{}{}", leaf.cert.pem(), issuer.pem),
            LeafKind::Client => leaf.cert.pem(),
        };
        let dir = &opts.out_dir;
        write_file(&dir.join(format!("{stem}.pem")), pem.as_bytes(), Secret::No)?;
        let key = leaf.key.serialize_pem();
        write_file(
            &dir.join(format!("{stem}.key")),
            key.as_bytes(),
            Secret::Yes,
        )?;
        stems.push(stem);
    }
    Ok(stems)
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

#[cfg(test)]
mod tests;
