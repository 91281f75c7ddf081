//! Writing the PKI to disk: PEM files, PKCS#12 bundles, and private keys
//! created owner-only (0600) so no other user can read them even briefly.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::*;

pub(super) fn write_leaf(
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
pub(super) fn pkcs12(
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
pub(super) enum Secret {
    Yes,
    No,
}

/// Writes `bytes` to `path`, replacing it. Secrets are mode 0600, set before
/// any byte is written so the key is never readable by others, even when an
/// older file with wider permissions is being replaced.
pub(super) fn write_file(path: &Path, bytes: &[u8], secret: Secret) -> Result<(), CertError> {
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
pub(super) fn owner_only_on_create(options: &mut fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(0o600);
}

#[cfg(unix)]
pub(super) fn make_owner_only(file: &fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
pub(super) fn owner_only_on_create(_: &mut fs::OpenOptions) {}

#[cfg(not(unix))]
pub(super) fn make_owner_only(_: &fs::File) -> std::io::Result<()> {
    Ok(())
}
