//! `portcullis certs crl`: a certificate revocation list signed by the dev
//! CA, revoking the certificates given by file.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{CertificateRevocationListParams, RevokedCertParams, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use super::{generate_error, read_text, write_file, CertError, LoadedCa, Secret, Validity};

/// How long a CRL is valid (its nextUpdate) unless told otherwise.
pub const DEFAULT_CRL_DAYS: u32 = 30;

/// What `write_crl` writes. `CrlOptions::new` fills in the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlOptions {
    /// Holds ca.pem and ca.key.
    pub ca_dir: PathBuf,
    /// The PEM file written.
    pub out: PathBuf,
    /// PEM certificates to revoke (the first certificate of each file).
    /// Empty makes a valid CRL that revokes nothing.
    pub revoke: Vec<PathBuf>,
    /// nextUpdate, in days from now.
    pub days: u32,
}

impl CrlOptions {
    pub fn new(ca_dir: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        CrlOptions {
            ca_dir: ca_dir.into(),
            out: out.into(),
            revoke: Vec::new(),
            days: DEFAULT_CRL_DAYS,
        }
    }
}

/// Writes `out` (PEM, "X509 CRL"), signed by the CA in `ca_dir`, listing
/// the serial number of each certificate in `revoke`. Every one of them must
/// have been issued by that CA. Returns how many serials the CRL lists (a
/// certificate given twice counts once).
///
/// The CRL number is the current Unix time in seconds, so a CRL written
/// later supersedes an earlier one.
pub fn write_crl(opts: &CrlOptions) -> Result<usize, CertError> {
    let validity = Validity::from_now(opts.days)?;
    let ca = LoadedCa::load(&opts.ca_dir)?;
    let ca_path = opts.ca_dir.join("ca.pem");
    let (_, ca_x509) =
        x509_parser::parse_x509_certificate(ca.der.as_ref()).map_err(|e| CertError::ReadCa {
            path: ca_path.clone(),
            reason: format!("cannot parse the certificate ({e})"),
        })?;

    let mut serials: Vec<Vec<u8>> = Vec::new();
    for path in &opts.revoke {
        let serial = serial_issued_by(path, &ca.der, &ca_x509, &ca_path)?;
        if !serials.contains(&serial) {
            serials.push(serial);
        }
    }

    let now = time::OffsetDateTime::now_utc();
    let crl_number = u64::try_from(now.unix_timestamp()).unwrap_or(1).max(1);
    let params = CertificateRevocationListParams {
        this_update: validity.not_before,
        next_update: validity.not_after,
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: now,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        // The CRL's authority key identifier must be the CA's own subject key
        // identifier, which the loaded parameters carry.
        key_identifier_method: ca.params.key_identifier_method.clone(),
    };
    let ca_cert = ca.params.self_signed(&ca.key).map_err(generate_error)?;
    let crl = params.signed_by(&ca_cert, &ca.key).map_err(|e| match e {
        rcgen::Error::IssuerNotCrlSigner => CertError::ReadCa {
            path: ca_path.clone(),
            reason: "this CA may not sign CRLs (its keyUsage lacks cRLSign)".into(),
        },
        other => generate_error(other),
    })?;

    // Verifiers find a CRL's CA by comparing names byte for byte; rcgen
    // writes the name anew from its parsed form, so make sure it came out
    // the same.
    let (_, parsed) = x509_parser::parse_x509_crl(crl.der().as_ref())
        .map_err(|e| CertError::Generate(format!("the CRL written does not parse: {e}")))?;
    if parsed.issuer().as_raw() != ca_x509.subject().as_raw() {
        return Err(CertError::ReadCa {
            path: ca_path,
            reason: "its subject name cannot be reproduced exactly in a CRL".into(),
        });
    }

    let pem = crl.pem().map_err(generate_error)?;
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| CertError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    write_file(&opts.out, pem.as_bytes(), Secret::No)?;
    Ok(serials.len())
}

/// The serial number (big-endian, as encoded) of the first certificate in
/// `path`, after checking that the CA issued it.
fn serial_issued_by(
    path: &Path,
    ca_der: &CertificateDer<'_>,
    ca: &X509Certificate<'_>,
    ca_path: &Path,
) -> Result<Vec<u8>, CertError> {
    let refuse = |reason: String| CertError::Revoke {
        path: path.to_path_buf(),
        reason,
    };
    let text = read_text(path)?;
    let der = CertificateDer::from_pem_slice(text.as_bytes())
        .map_err(|e| refuse(format!("no PEM certificate found ({e})")))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| refuse(format!("cannot parse the certificate ({e})")))?;
    if der.as_ref() == ca_der.as_ref() {
        return Err(refuse(format!(
            "this is the CA certificate itself ({})",
            ca_path.display()
        )));
    }
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(refuse(format!(
            "issued by \"{}\", not by the CA in {} (\"{}\")",
            cert.issuer(),
            ca_path.display(),
            ca.subject()
        )));
    }
    match cert.verify_signature(Some(ca.public_key())) {
        // An algorithm the checker does not know: the matching name will do.
        Ok(()) | Err(x509_parser::error::X509Error::SignatureUnsupportedAlgorithm) => {}
        Err(_) => {
            return Err(refuse(format!(
                "its signature does not verify with the key of {} (another CA with the same name?)",
                ca_path.display()
            )))
        }
    }
    Ok(cert.raw_serial().to_vec())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{have, openssl, TempDir};
    use super::super::{init, issue, InitOptions, KeyType, LeafKind, LeafOptions};
    use super::*;
    use crate::tls::material::load_crls;
    use rustls::pki_types::UnixTime;
    use rustls::server::danger::ClientCertVerifier;
    use rustls::CertificateError;
    use std::sync::Arc;

    fn first_cert(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    /// The gateway's client verifier for the CA in `dir`, with the CRL at `crl`.
    fn verifier(dir: &Path, crl: &Path) -> Arc<dyn ClientCertVerifier> {
        let crls = load_crls(&[crl.to_path_buf()]).unwrap();
        crate::tls::client_verifier::build(
            &[first_cert(&dir.join("ca.pem"))],
            &crls,
            true,
            crate::tls::server_config::provider().signature_verification_algorithms,
            crate::config::TlsSettings::default().verified_chain_cache,
        )
        .unwrap()
    }

    fn verify(verifier: &dyn ClientCertVerifier, leaf: &Path) -> Result<(), rustls::Error> {
        verifier
            .verify_client_cert(&first_cert(leaf), &[], UnixTime::now())
            .map(|_| ())
    }

    fn client(dir: &Path, stem: &str, key_type: KeyType) -> PathBuf {
        let mut opts = LeafOptions::new(dir, stem, LeafKind::Client);
        opts.key_type = key_type;
        issue(&opts).unwrap();
        dir.join(format!("{stem}.pem"))
    }

    #[test]
    fn revoked_clients_are_refused_by_the_client_verifier() {
        for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048, KeyType::Ed25519] {
            let tmp = TempDir::new();
            let dir = &tmp.0;
            let mut opts = InitOptions::new(dir);
            opts.key_type = key_type;
            assert!(init(&opts).unwrap());
            let alice = client(dir, "alice", key_type);
            let bob = client(dir, "bob", key_type);

            let mut crl = CrlOptions::new(dir, dir.join("crl/revoked.pem"));
            crl.revoke = vec![alice.clone(), alice.clone()];
            assert_eq!(write_crl(&crl).unwrap(), 1);
            let text = fs::read_to_string(&crl.out).unwrap();
            assert!(text.starts_with("-----BEGIN X509 CRL-----"), "{text}");

            let v = verifier(dir, &crl.out);
            assert_eq!(
                verify(&*v, &alice),
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)),
                "{key_type}"
            );
            verify(&*v, &bob).unwrap_or_else(|e| panic!("{key_type}: {e}"));
            verify(&*v, &dir.join("client.pem")).unwrap();
        }
    }

    #[test]
    fn an_empty_crl_revokes_nothing() {
        let tmp = TempDir::new();
        let dir = &tmp.0;
        assert!(init(&InitOptions::new(dir)).unwrap());
        let crl = CrlOptions::new(dir, dir.join("empty.crl"));
        assert_eq!(write_crl(&crl).unwrap(), 0);
        let v = verifier(dir, &crl.out);
        verify(&*v, &dir.join("client.pem")).unwrap();

        if !have("openssl") {
            return;
        }
        let (ok, text) = openssl(
            dir,
            &[
                "crl",
                "-in",
                "empty.crl",
                "-CAfile",
                "ca.pem",
                "-noout",
                "-text",
            ],
        );
        assert!(ok && text.contains("verify OK"), "{text}");
        assert!(text.contains("No Revoked Certificates"), "{text}");
        assert!(text.contains("CRL Number"), "{text}");
        // The CRL's authority key identifier names the CA's key.
        let (_, ca_text) = openssl(dir, &["x509", "-in", "ca.pem", "-noout", "-text"]);
        let ski = ca_text
            .split("X509v3 Subject Key Identifier:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string();
        assert!(text.contains(&ski), "AKI should be {ski}:\n{text}");
    }

    #[test]
    fn refuses_certificates_it_cannot_revoke() {
        let tmp = TempDir::new();
        let (a, b) = (tmp.0.join("a"), tmp.0.join("b"));
        init(&InitOptions::new(&a)).unwrap();
        init(&InitOptions::new(&b)).unwrap();
        let err = |revoke: PathBuf| {
            let mut crl = CrlOptions::new(&a, a.join("crl.pem"));
            crl.revoke = vec![a.join("client.pem"), revoke];
            let e = write_crl(&crl).unwrap_err();
            assert!(!crl.out.exists(), "nothing is written on error");
            e.to_string()
        };

        let other = err(b.join("client.pem"));
        assert!(
            other.starts_with(&format!(
                "{}: cannot revoke: issued by \"CN=Portcullis Dev CA ",
                b.join("client.pem").display()
            )),
            "{other}"
        );
        assert!(err(a.join("ca.pem")).contains("this is the CA certificate itself"));
        assert!(err(a.join("client.key")).contains("no PEM certificate found"));
        assert!(
            err(a.join("missing.pem")).starts_with(&a.join("missing.pem").display().to_string())
        );

        // Same name, different key: only the signature tells them apart.
        let forged = {
            // A leaf signed by b's key under a's name: rcgen reads a's
            // certificate for the name and uses b's key to sign.
            let ca_params = rcgen::CertificateParams::from_ca_cert_pem(
                &fs::read_to_string(a.join("ca.pem")).unwrap(),
            )
            .unwrap();
            let b_key =
                rcgen::KeyPair::from_pem(&fs::read_to_string(b.join("ca.key")).unwrap()).unwrap();
            let issuer = ca_params.self_signed(&b_key).unwrap();
            let leaf_key = rcgen::KeyPair::generate().unwrap();
            let leaf = rcgen::CertificateParams::new(vec!["x.test".to_string()])
                .unwrap()
                .signed_by(&leaf_key, &issuer, &b_key)
                .unwrap();
            let path = tmp.0.join("forged.pem");
            fs::write(&path, leaf.pem()).unwrap();
            path
        };
        assert!(err(forged).contains("its signature does not verify"));

        let mut crl = CrlOptions::new(&a, a.join("crl.pem"));
        crl.days = 0;
        assert!(matches!(write_crl(&crl), Err(CertError::Generate(_))));
    }
}
