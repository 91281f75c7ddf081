//! Builds the rustls server configuration of a listener from its PEM files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};

use crate::config::ListenerConfig;

/// ALPN: HTTP/1.1 only until the HTTP/2 codec exists; a client that offers only
/// h2 is refused at the handshake rather than spoken to in the wrong protocol.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

#[non_exhaustive]
#[derive(Debug)]
pub enum TlsSetupError {
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    Empty {
        path: PathBuf,
        what: &'static str,
    },
    Rustls {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pem { path, what, reason } => {
                write!(f, "{}: cannot read {what}: {reason}", path.display())
            }
            Self::Empty { path, what } => {
                write!(f, "{}: no {what} found in this PEM file", path.display())
            }
            Self::Rustls { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// The crypto provider every TLS config of the process uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Ticket encrypter shared by the per-core configs, so a session resumed on
/// another core than the one that issued its ticket still resumes.
pub fn shared_ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// One config per listener per core: the session cache inside it is then
/// core-local and takes no lock shared with another core.
pub fn build(
    listener: &ListenerConfig,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = provider();
    let chain = load_certs(&listener.certificate, "certificate")?;
    let key =
        PrivateKeyDer::from_pem_file(&listener.private_key).map_err(|e| TlsSetupError::Pem {
            path: listener.private_key.clone(),
            what: "private key",
            reason: e.to_string(),
        })?;

    let mut roots = RootCertStore::empty();
    for path in &listener.client_ca {
        for ca in load_certs(path, "CA certificate")? {
            roots.add(ca).map_err(|e| TlsSetupError::Rustls {
                path: path.clone(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    let ca_path = listener.client_ca.first().cloned().unwrap_or_default();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsSetupError::Rustls {
            path: ca_path,
            reason: e.to_string(),
        })?;

    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if listener.tls_versions.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if listener.tls_versions.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsSetupError::Rustls {
            path: listener.certificate.clone(),
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Rustls {
            path: listener.private_key.clone(),
            reason: format!("key does not match the certificate or is unsupported: {e}"),
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    // Needed for the kernel-TLS handover: rustls hands over the traffic secrets.
    config.enable_secret_extraction = true;
    config.max_early_data_size = 0;
    config.ticketer = ticketer;
    Ok(Arc::new(config))
}

fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::Pem {
            path: path.to_path_buf(),
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(certs)
}
