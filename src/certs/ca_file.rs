//! Reading the CA back from `ca.pem` and `ca.key` (for `certs issue` and
//! `certs crl`), refusing a key that does not match its certificate.

use rcgen::{CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::fs;
use std::path::Path;

use super::CertError;

pub(super) struct LoadedCa {
    pub(super) params: CertificateParams,
    pub(super) key: KeyPair,
    pub(super) der: CertificateDer<'static>,
    pub(super) pem: String,
}

impl LoadedCa {
    pub(super) fn load(dir: &Path) -> Result<LoadedCa, CertError> {
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

pub(super) fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The first `-----BEGIN {label}-----` … `-----END {label}-----` block,
/// copied verbatim, with a trailing newline.
pub(super) fn first_pem_block(text: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = start + text[start..].find(&end)? + end.len();
    Some(format!("{}\n", &text[start..stop]))
}

pub(super) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
