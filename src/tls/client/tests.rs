use super::*;
use crate::io::write_all;
use crate::tls::{HandshakeReads, PeerIdentity, TlsStream};
use monoio::net::TcpListener;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::future::Future;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::default();
    // Distinct names: a certificate from the other CA is an unknown issuer.
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn leaf(ca: &Ca, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Identity {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (vec![cert.der().clone()], key)
}

fn server_leaf(ca: &Ca, names: &[&str]) -> Identity {
    leaf(ca, names, ExtendedKeyUsagePurpose::ServerAuth)
}

fn client_leaf(ca: &Ca) -> Identity {
    leaf(ca, &["gateway"], ExtendedKeyUsagePurpose::ClientAuth)
}

/// A server config; with `client_ca`, client certificates are required.
fn server_config(
    identity: Identity,
    client_ca: Option<&Ca>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(identity.0, identity.1).unwrap())
}

fn settings(ca: &Ca, client: Option<Identity>, verify_hostname: bool) -> UpstreamTlsSettings {
    UpstreamTlsSettings {
        roots: vec![ca.cert.der().clone()],
        client_identity: client,
        verify_hostname,
    }
}

fn block_on<F: Future>(fut: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(fut)
}

fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect()
}

fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).unwrap()
}

/// What the server saw: the client's identity, its certificate chain (as
/// the server's TLS stream keeps it) and its request bytes.
type Served = Result<(PeerIdentity, Vec<CertificateDer<'static>>, Vec<u8>), String>;

/// Accepts one connection, reads `expect` bytes, answers `reply`, closes.
async fn serve_once(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    expect: usize,
    reply: Vec<u8>,
) -> Served {
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let (mut tls, identity) =
        TlsStream::accept(tcp, move |_| Some(config), HandshakeReads::ExactRecords)
            .await
            .map_err(|(e, _)| format!("{e:?}"))?;
    let mut got = Vec::new();
    while got.len() < expect {
        let (res, buf) = tls.read_append(got).await;
        got = buf;
        match res {
            Ok(0) => return Err("client closed early".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let (res, _) = write_all(&mut tls, reply).await;
    res.map_err(|e| e.to_string())?;
    tls.close().await;
    Ok((identity, tls.peer_certificates().to_vec(), got))
}

/// Connects, sends `request`, reads until EOF, closes.
async fn exchange(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    server_name: &str,
    request: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect_addr(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = TlsClientStream::connect(tcp, config, name(server_name))
        .await
        .map_err(|e| e.to_string())?;
    let (res, _) = write_all(&mut tls, request).await;
    res.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    loop {
        let (res, buf) = tls.read_append(got).await;
        got = buf;
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    assert!(
        tls.received_close_notify(),
        "the server closed with close_notify"
    );
    tls.close().await;
    Ok(got)
}

/// Runs one server connection and one client exchange against it.
fn round_trip(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
    request: Vec<u8>,
    reply: Vec<u8>,
) -> (Served, Result<Vec<u8>, String>) {
    block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = monoio::spawn(serve_once(listener, server, request.len(), reply));
        let got = exchange(addr, client, server_name, request).await;
        (served.await, got)
    })
}

#[test]
fn tls_round_trip_100k_each_way() {
    let ca = ca("upstream test CA 1");
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let server = server_config(server_leaf(&ca, &["localhost"]), None, versions);
        let client = client_config(settings(&ca, None, true)).unwrap();
        let (request, reply) = (pattern(100 * 1024, 0), pattern(100 * 1024, 7));
        let (served, got) = round_trip(server, client, "localhost", request.clone(), reply.clone());
        let (identity, peer_chain, seen) = served.unwrap();
        assert!(seen == request, "server received the request intact");
        assert!(got.unwrap() == reply, "client received the reply intact");
        assert!(peer_chain.is_empty());
        assert_eq!(identity.sni.as_deref(), Some("localhost"));
    }
}

#[test]
fn mtls_presents_our_chain() {
    let ca = ca("upstream test CA 2");
    let ours = client_leaf(&ca);
    let chain = ours.0.clone();
    let server = server_config(
        server_leaf(&ca, &["localhost"]),
        Some(&ca),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let client = client_config(settings(&ca, Some(ours), true)).unwrap();
    let (served, got) = round_trip(
        server,
        client,
        "localhost",
        b"ping".to_vec(),
        b"pong".to_vec(),
    );
    let (_, peer_chain, seen) = served.unwrap();
    assert_eq!(peer_chain, chain);
    assert_eq!(seen, b"ping");
    assert_eq!(got.unwrap(), b"pong");
}

#[test]
fn wrong_ca_is_not_trusted_even_without_hostname_check() {
    let backend_ca = ca("upstream test CA 3 backend");
    let other_ca = ca("upstream test CA 3 other");
    for verify_hostname in [true, false] {
        let server = server_config(
            server_leaf(&backend_ca, &["localhost"]),
            None,
            &[&rustls::version::TLS13],
        );
        let client = client_config(settings(&other_ca, None, verify_hostname)).unwrap();
        let (served, got) = round_trip(server, client, "localhost", b"x".to_vec(), Vec::new());
        let err = got.unwrap_err();
        assert!(
            err.contains("backend certificate not trusted: certificate not signed by a trusted CA"),
            "{err}"
        );
        assert!(served.is_err());
    }
}

#[test]
fn name_mismatch_is_refused_unless_hostname_check_is_off() {
    let ca = ca("upstream test CA 4");
    let server = || {
        server_config(
            server_leaf(&ca, &["other.internal"]),
            None,
            &[&rustls::version::TLS13],
        )
    };
    let strict = client_config(settings(&ca, None, true)).unwrap();
    let (served, got) = round_trip(server(), strict, "app.internal", b"x".to_vec(), Vec::new());
    let err = got.unwrap_err();
    assert_eq!(
        err,
        "backend certificate is not valid for app.internal (it is valid for other.internal)"
    );
    assert!(served.is_err());

    let lax = client_config(settings(&ca, None, false)).unwrap();
    let (served, got) = round_trip(
        server(),
        lax,
        "app.internal",
        b"ping".to_vec(),
        b"pong".to_vec(),
    );
    assert_eq!(served.unwrap().2, b"ping");
    assert_eq!(got.unwrap(), b"pong");
}

#[test]
fn missing_client_certificate_is_reported() {
    let ca = ca("upstream test CA 5");
    // TLS 1.2 refuses during our handshake; TLS 1.3 after it, at the first read.
    for versions in [
        &[&rustls::version::TLS12][..],
        &[&rustls::version::TLS13][..],
    ] {
        let server = server_config(server_leaf(&ca, &["localhost"]), Some(&ca), versions);
        let client = client_config(settings(&ca, None, true)).unwrap();
        let (served, got) = round_trip(server, client, "localhost", b"x".to_vec(), Vec::new());
        let err = got.unwrap_err();
        assert!(
            err.contains("backend requires a client certificate and none is configured"),
            "{err}"
        );
        assert!(served.unwrap_err().contains("NoCertificatesPresented"));
    }
}

#[test]
fn client_certificate_from_another_ca_is_reported() {
    let ca1 = ca("upstream test CA 6 trusted");
    let ca2 = ca("upstream test CA 6 unknown");
    let server = server_config(
        server_leaf(&ca1, &["localhost"]),
        Some(&ca1),
        &[&rustls::version::TLS12],
    );
    let client = client_config(settings(&ca1, Some(client_leaf(&ca2)), true)).unwrap();
    let (_, got) = round_trip(server, client, "localhost", b"x".to_vec(), Vec::new());
    let err = got.unwrap_err();
    assert!(
        err.contains("backend refused our client certificate (alert"),
        "{err}"
    );
}

#[test]
fn server_data_before_our_write_is_kept_and_bare_eof_reads_as_eof() {
    let ca = ca("upstream test CA 8");
    let server = server_config(
        server_leaf(&ca, &["localhost"]),
        None,
        &[&rustls::version::TLS13],
    );
    let client = client_config(settings(&ca, None, true)).unwrap();
    let (got, clean) = block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = monoio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (mut tls, _) =
                TlsStream::accept(tcp, move |_| Some(server), HandshakeReads::ExactRecords)
                    .await
                    .unwrap();
            let (res, _) = write_all(&mut tls, b"early ".to_vec()).await;
            res.unwrap();
            let (res, req) = tls.read_append(Vec::new()).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(req, b"ping");
            let (res, _) = write_all(&mut tls, b"late".to_vec()).await;
            res.unwrap();
            // Dropped without close_notify: a bare TCP EOF.
        });
        let tcp = TcpStream::connect_addr(addr).await.unwrap();
        let mut tls = TlsClientStream::connect(tcp, client, name("localhost"))
            .await
            .unwrap();
        // Let the early bytes arrive before we write.
        monoio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (res, _) = write_all(&mut tls, b"ping".to_vec()).await;
        res.unwrap();
        served.await;
        let mut got = Vec::new();
        loop {
            let (res, buf) = tls.read_append(got).await;
            got = buf;
            if res.unwrap() == 0 {
                break;
            }
        }
        let clean = tls.received_close_notify();
        tls.close().await;
        (got, clean)
    });
    assert_eq!(got, b"early late");
    assert!(!clean, "a bare TCP EOF is not a close_notify");
}

#[test]
fn certificate_names_read_plainly() {
    assert_eq!(plain_name("DnsName(\"a.example\")"), "a.example");
    assert_eq!(plain_name("IpAddress(192.0.2.1)"), "192.0.2.1");
    assert_eq!(plain_name("something else"), "something else");
}

#[test]
fn config_errors_read_as_plain_words() {
    let err = client_config(UpstreamTlsSettings {
        roots: Vec::new(),
        client_identity: None,
        verify_hostname: true,
    })
    .unwrap_err();
    assert!(err.contains("CA bundle is empty"), "{err}");

    let ca = ca("upstream test CA 7");
    let (chain, _) = client_leaf(&ca);
    let (_, other_key) = client_leaf(&ca);
    let err = client_config(settings(&ca, Some((chain, other_key)), true)).unwrap_err();
    assert!(err.contains("does not match"), "{err}");

    let config = client_config(settings(&ca, None, true)).unwrap();
    assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
}
