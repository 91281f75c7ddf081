//! The rustls client configuration: trust anchors, client identity (PEM or
//! PKCS#12), versions, resumption.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::args::{Args, Identity, TlsVersion};

/// Everything a worker thread needs to open TLS connections.
#[derive(Clone)]
pub struct TlsSetup {
    /// Built without a session cache; each worker derives its own config
    /// from it (with a per-thread cache when --resume).
    base: ClientConfig,
    pub server_name: ServerName<'static>,
    pub resume: bool,
    /// "client certificate CN=..." or "no client certificate", for the report.
    pub identity_desc: String,
}

impl TlsSetup {
    pub fn from_args(args: &Args) -> Result<Self, String> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match args.tls {
            TlsVersion::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V12 => &[&rustls::version::TLS12],
            TlsVersion::V13 => &[&rustls::version::TLS13],
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS versions: {e}"))?;

        let builder = if args.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerVerification(provider.clone())))
        } else {
            let path = args.cacert.as_ref().ok_or("--cacert is required")?;
            let mut roots = RootCertStore::empty();
            let mut n = 0;
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--cacert {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!(
                    "--cacert {}: no certificates in it",
                    path.display()
                ));
            }
            builder.with_root_certificates(roots)
        };

        let (mut base, identity_desc) = match &args.identity {
            Identity::Dir(dir) => {
                let rotating = Rotating::load(dir, &provider)?;
                let desc = format!(
                    "{} client certificates from {} (PEM), a different one per handshake",
                    rotating.identities.len(),
                    dir.display()
                );
                (builder.with_client_cert_resolver(Arc::new(rotating)), desc)
            }
            _ => match load_identity(&args.identity)? {
                Some((chain, key, desc)) => (
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| format!("client certificate: {e}"))?,
                    desc,
                ),
                None => (
                    builder.with_no_client_auth(),
                    "no client certificate".into(),
                ),
            },
        };
        // One protocol offered, so the server cannot pick another: a run
        // measures exactly the protocol asked for.
        base.alpn_protocols = vec![if args.http2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        base.resumption = Resumption::disabled();

        let name = args.sni.clone().unwrap_or_else(|| args.target.host.clone());
        let server_name =
            ServerName::try_from(name.clone()).map_err(|e| format!("server name {name:?}: {e}"))?;
        Ok(TlsSetup {
            base,
            server_name,
            resume: args.resume,
            identity_desc,
        })
    }

    /// The configuration one worker thread uses for all its connections: with
    /// --resume it owns a session cache that this thread's connections share.
    pub fn thread_config(&self, connections: usize) -> Arc<ClientConfig> {
        let mut config = self.base.clone();
        if self.resume {
            config.resumption = Resumption::in_memory_sessions(connections.max(1) * 4);
        }
        Arc::new(config)
    }
}

type LoadedIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String);

fn load_identity(identity: &Identity) -> Result<Option<LoadedIdentity>, String> {
    match identity {
        Identity::None | Identity::Dir(_) => Ok(None),
        Identity::Pem { cert, key } => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("--cert {}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!("--cert {}: no certificate in it", cert.display()));
            }
            // Like curl: without --key, the key may sit in the certificate file.
            let key_path = key.as_ref().unwrap_or(cert);
            let key = PrivateKeyDer::from_pem_file(key_path)
                .map_err(|e| format!("--key {}: {e}", key_path.display()))?;
            let desc = format!("client certificate {} (PEM)", cert.display());
            Ok(Some((chain, key, desc)))
        }
        Identity::P12 { file, password } => {
            let data = fs::read(file).map_err(|e| format!("--cert {}: {e}", file.display()))?;
            let store = p12_keystore::KeyStore::from_pkcs12(&data, password)
                .map_err(|e| format!("--cert {} (PKCS#12): {e}", file.display()))?;
            let (alias, chain) = store.private_key_chain().ok_or_else(|| {
                format!(
                    "--cert {}: no private key with a certificate in it",
                    file.display()
                )
            })?;
            let certs: Vec<CertificateDer<'static>> = chain
                .chain()
                .iter()
                .map(|c| CertificateDer::from(c.as_der().to_vec()))
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "--cert {}: the key has no certificate",
                    file.display()
                ));
            }
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().to_vec()));
            let desc = format!("client certificate {} (PKCS#12, {alias:?})", file.display());
            Ok(Some((certs, key, desc)))
        }
    }
}

/// --client-certs DIR: every NAME.pem with a NAME.key beside it, handed out
/// in turn, one per handshake, across all threads (one relaxed atomic add
/// per handshake: nothing next to the handshake's own cost). Files are taken
/// in name order, so two runs present the same sequence.
#[derive(Debug)]
struct Rotating {
    identities: Vec<Arc<CertifiedKey>>,
    next: AtomicUsize,
}

impl Rotating {
    fn load(dir: &Path, provider: &CryptoProvider) -> Result<Rotating, String> {
        let what = |e: &dyn std::fmt::Display| format!("--client-certs {}: {e}", dir.display());
        let mut pems: Vec<_> = fs::read_dir(dir)
            .map_err(|e| what(&e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "pem") && p.with_extension("key").is_file()
            })
            .collect();
        pems.sort();
        if pems.is_empty() {
            return Err(what(&"no NAME.pem with a NAME.key beside it"));
        }
        let identities = pems
            .iter()
            .map(|pem| {
                let file = |e: &dyn std::fmt::Display| what(&format!("{}: {e}", pem.display()));
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pem)
                    .map_err(|e| file(&e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| file(&e))?;
                if chain.is_empty() {
                    return Err(file(&"no certificate in it"));
                }
                let key = PrivateKeyDer::from_pem_file(pem.with_extension("key"))
                    .map_err(|e| file(&e))?;
                let key = provider
                    .key_provider
                    .load_private_key(key)
                    .map_err(|e| file(&e))?;
                Ok(Arc::new(CertifiedKey::new(chain, key)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Rotating {
            identities,
            next: AtomicUsize::new(0),
        })
    }
}

impl ResolvesClientCert for Rotating {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.identities.len();
        self.identities.get(i).cloned()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// --insecure: accepts any server certificate, but still checks the
/// handshake signatures so the crypto cost matches a verifying client.
#[derive(Debug)]
struct NoServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
