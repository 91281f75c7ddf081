//! Builds the rustls server configuration of a site from its loaded material.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::client_verifier;
use super::signature_failure::NoteSignatureFailures;
use super::staple::StapledCert;
use crate::config::{AppProtocol, MtlsMode, TlsVersions};

/// The ALPN identifier of HTTP/2 (RFC 9113 section 3.2): a connection that
/// negotiated it is served by `http2`, any other by the HTTP/1.1 shell.
pub const ALPN_H2: &[u8] = b"h2";
/// HTTP/1.1's ALPN identifier (also offered to TLS backends, which speak only it).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The crypto provider every TLS config of the process uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The provider of the server side: [`provider`] with its suites in the
/// server's order of preference ([`suite_rank`]).
fn server_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| suite_rank(s.suite()));
    provider
}

/// Where a suite stands in the server's order (lower first; the sort is
/// stable, so suites of equal rank keep the provider's order): AES-128-GCM,
/// then AES-256-GCM, then ChaCha20-Poly1305, in TLS 1.3 and 1.2 alike.
///
/// AES-128-GCM first because the handshake's key exchange (X25519, P-256)
/// and the certificates' P-256 keys are of 128-bit strength: AES-256 and
/// SHA-384 add no strength to such a connection, only cost. SHA-384 is the
/// cost that counts: the TLS 1.3 key schedule and transcript run on the
/// suite's hash, and SHA-256 has CPU instructions on current x86 and ARM
/// where SHA-384 has none (it was the top symbol of the handshake profile,
/// 10% of the core; see flamegraphs/README.md). BoringSSL and Go order their
/// suites the same way. A client that offers only AES-256 still gets it.
pub fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

/// A new session-ticket key (with rustls's rotation) for one site of one
/// config generation, shared by that site's per-core configs so a session
/// resumes on any core.
///
/// Never shared between sites or generations: a ticket restores the client
/// certificate verified when it was issued, so it must only be accepted
/// under the same certificate, client CAs, CRLs and mTLS mode. A ticket
/// presented elsewhere does not decrypt and the client gets a full handshake
/// (nginx shipped the shared-key version of this as CVE-2025-23419).
pub fn site_ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// A site's TLS material, loaded and parsed once per config generation; each
/// core builds its own [`ServerConfig`] from it.
pub struct SiteTls {
    pub name: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub client_roots: Vec<CertificateDer<'static>>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    pub mtls: MtlsMode,
    pub versions: TlsVersions,
    /// `[tls] verified_chain_cache`: entries per core, 0 = off.
    pub verified_chain_cache: usize,
    /// The protocols offered by ALPN, in order of preference. A client that
    /// offers ALPN but none of these is refused (`no_application_protocol`)
    /// rather than spoken to in a protocol it did not ask for.
    pub alpn: Vec<AppProtocol>,
    /// `ocsp_stapling = "on"`: the response to staple, kept fresh by the
    /// stapling thread; None staples nothing.
    pub ocsp: Option<Arc<crate::ocsp::Staple>>,
}

/// One config per site per core: the session cache inside it (TLS 1.2
/// session IDs) is then core-local, takes no lock shared with another core,
/// and, like the ticket key, belongs to this site alone.
pub fn build(
    site: &SiteTls,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(server_provider());
    let fail = |what: &str, e: &dyn fmt::Display| format!("site \"{}\": {what}: {e}", site.name);
    let verifier = match site.mtls {
        MtlsMode::Off => WebPkiClientVerifier::no_client_auth(),
        // Ours, not rustls's WebPkiClientVerifier: it also checks keyUsage and
        // TLS 1.3 ECDSA scheme/curve pairs (see tls::client_verifier).
        mode => client_verifier::build(
            &site.client_roots,
            &site.crls,
            mode == MtlsMode::Mandatory,
            provider.signature_verification_algorithms,
            site.verified_chain_cache,
        )
        .map_err(|e| format!("site \"{}\": {e}", site.name))?,
    };

    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if site.versions.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if site.versions.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let key_problem = |e: &rustls::Error| {
        fail(
            "the private key does not match the certificate or is unsupported",
            e,
        )
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| fail("TLS versions", &e))?
        .with_client_cert_verifier(Arc::new(NoteSignatureFailures(verifier)));
    let mut config = match &site.ocsp {
        None => builder
            .with_single_cert(site.chain.clone(), site.key.clone_key())
            .map_err(|e| key_problem(&e))?,
        Some(staple) => {
            // The same checks with_single_cert makes, then a resolver that
            // adds the current OCSP response (tls::staple).
            let key = CertifiedKey::from_der(site.chain.clone(), site.key.clone_key(), &provider)
                .map_err(|e| key_problem(&e))?;
            key.keys_match().map_err(|e| key_problem(&e))?;
            builder.with_cert_resolver(Arc::new(StapledCert::new(key, staple.clone())))
        }
    };
    config.alpn_protocols = site.alpn.iter().map(|p| p.id().to_vec()).collect();
    // Our suite order (AES-128-GCM, AES-256-GCM, ChaCha20: see suite_rank),
    // not whatever the client lists first.
    config.ignore_client_order = true;
    // Needed for the kernel-TLS handover: rustls hands over the traffic secrets.
    config.enable_secret_extraction = true;
    config.max_early_data_size = 0;
    config.ticketer = ticketer;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite as S;

    fn order(version: u16) -> Vec<S> {
        server_provider()
            .cipher_suites
            .iter()
            .filter(|s| u16::from(s.version().version) == version)
            .map(|s| s.suite())
            .collect()
    }

    #[test]
    fn the_server_prefers_aes_128_then_aes_256_then_chacha() {
        assert_eq!(
            order(0x0304),
            [
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
        let tls12 = order(0x0303);
        let ecdsa: Vec<S> = tls12
            .iter()
            .copied()
            .filter(|s| format!("{s:?}").contains("ECDSA"))
            .collect();
        assert_eq!(
            ecdsa,
            [
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        // Nothing dropped or added: the same suites as the provider's.
        assert_eq!(
            server_provider().cipher_suites.len(),
            provider().cipher_suites.len()
        );
    }
}
