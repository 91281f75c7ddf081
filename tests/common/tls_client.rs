//! A rustls client, for what curl cannot show: a client config trusting a
//! test CA (with the default, another or no client certificate, chosen TLS
//! versions and ALPN), a blocking handshake to a chosen SNI (`tls_connect`),
//! the rustls error inside an `io::Error`, and `expect_tls_alert` for the
//! alert the gateway refuses a client with.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};

use super::certs::CertDir;

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

pub enum ClientAuth {
    /// DIR/client.pem + DIR/client.key
    Default,
    None,
    Pem(PathBuf, PathBuf),
}

pub fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let v: Vec<_> = CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("open {}: {e:?}", path.display()))
        .map(|c| c.expect("cert PEM"))
        .collect();
    assert!(!v.is_empty(), "no certificate in {}", path.display());
    v
}

pub fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("key {}: {e:?}", path.display()))
}

/// A rustls client config trusting DIR/ca.pem. `versions` empty = 1.2 and 1.3.
/// ALPN offers http/1.1.
pub fn client_config(
    certs: &CertDir,
    auth: ClientAuth,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    client_config_alpn(certs, auth, versions, &[b"http/1.1"])
}

pub fn client_config_alpn(
    certs: &CertDir,
    auth: ClientAuth,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(&certs.ca()) {
        roots.add(c).expect("add CA");
    }
    let versions: Vec<&'static SupportedProtocolVersion> = if versions.is_empty() {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        versions.to_vec()
    };
    let b = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&versions)
    .expect("protocol versions")
    .with_root_certificates(roots);
    let mut cfg = match auth {
        ClientAuth::Default => b
            .with_client_auth_cert(
                load_certs(&certs.client_cert()),
                load_key(&certs.client_key()),
            )
            .expect("client auth cert"),
        ClientAuth::Pem(c, k) => b
            .with_client_auth_cert(load_certs(&c), load_key(&k))
            .expect("client auth cert"),
        ClientAuth::None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// TCP connect (5 s), TLS handshake to SNI "localhost"; 20 s socket timeouts.
pub fn tls_connect(addr: SocketAddr, cfg: Arc<ClientConfig>) -> io::Result<TlsStream> {
    tls_connect_name(addr, cfg, "localhost")
}

pub fn tls_connect_name(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    name: &str,
) -> io::Result<TlsStream> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    sock.set_write_timeout(Some(Duration::from_secs(20)))?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(cfg, name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The rustls error inside an io::Error, if any.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Connects and expects the gateway to refuse the client with a TLS alert
/// (during the handshake for TLS 1.2, on the first read for TLS 1.3).
/// Returns a description of the alert.
pub fn expect_tls_alert(addr: SocketAddr, cfg: Arc<ClientConfig>) -> String {
    let mut s = match tls_connect(addr, cfg) {
        Err(e) => {
            return match rustls_error(&e) {
                Some(rustls::Error::AlertReceived(a)) => format!("{a:?}"),
                _ => panic!("handshake failed, but not with a TLS alert: {e:?}"),
            }
        }
        Ok(s) => s,
    };
    // TLS 1.3: the client finishes first; the server's verdict arrives next.
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(n) => panic!(
            "expected a TLS alert, read {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => match rustls_error(&e) {
            Some(rustls::Error::AlertReceived(a)) => format!("{a:?}"),
            _ => panic!("connection failed, but not with a TLS alert: {e:?}"),
        },
    }
}
