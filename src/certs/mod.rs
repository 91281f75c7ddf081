//! A throwaway PKI for development: one CA, a server leaf and client leaves.
//!
//! Used by `portcullis certs` and by `portcullis run` without a config, so
//! that mTLS works out of the box with curl and openssl. Nothing here is
//! meant for production keys: the CA key sits next to the leaves.
//!
//! `crl` (revocation lists signed by the same CA) is in its own file, and
//! `sign` makes one certificate (keys, serials, validity, signing).

mod ca_file;
mod crl;
mod files;
mod sign;

use ca_file::{read_text, LoadedCa};
use files::{write_file, write_leaf, Secret};
use sign::{ca_params, generate_error, generate_key, IssuedLeaf, Issuer, LeafSpec, Validity};

pub use crl::{write_crl, CrlOptions, DEFAULT_CRL_DAYS};

use rustls::pki_types::CertificateDer;
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

#[cfg(test)]
mod tests;
