//! The server stream's two ways of reading a handshake ([`HandshakeReads`]),
//! through a real loopback socket and rustls's own client presenting a
//! client certificate. The client queues its request before the handshake
//! ends, so its last flight (Certificate, CertificateVerify, Finished) and
//! the request's record leave in one write: record-exact reads must leave
//! the request in the kernel (what the kernel-TLS handover needs), reading
//! what is there must take it along and still hand it out.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{Read, Write};

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn leaf(ca: &rcgen::Certificate, ca_key: &KeyPair, purpose: ExtendedKeyUsagePurpose) -> Identity {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "leaf");
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (vec![cert.der().clone()], key)
}

/// A server config that requires a client certificate, and a client with one.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "stream test CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let provider = super::super::server_config::provider();
    let (chain, key) = leaf(&ca, &ca_key, ExtendedKeyUsagePurpose::ServerAuth);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let (chain, key) = leaf(&ca, &ca_key, ExtendedKeyUsagePurpose::ClientAuth);
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    (Arc::new(server), Arc::new(client))
}

/// rustls's client on a blocking socket: queues "ping" before the
/// handshake, so it goes out in the same write as the client's Finished,
/// then reads until "pong".
fn client(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(config, name).unwrap();
        conn.writer().write_all(b"ping").unwrap();
        while conn.is_handshaking() || conn.wants_write() {
            conn.complete_io(&mut tcp).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 4 {
            conn.complete_io(&mut tcp).unwrap();
            let mut buf = [0u8; 16];
            match conn.reader().read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
        }
        assert_eq!(got, b"pong");
    })
}

/// Serves one connection read `reads`'s way; returns whether the request
/// was already in userspace when the handshake ended, and whether the
/// connection could then be split for the kernel.
fn serve_one(reads: HandshakeReads) -> (bool, bool) {
    let (server, client_config) = configs();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = client(addr, client_config);
    let seen = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = monoio::net::TcpListener::from_std(listener).unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let (stream, _) = TlsStream::accept(tcp, move |_| Some(server), reads)
                .await
                .map_err(|(e, _)| format!("{e:?}"))
                .unwrap();
            assert_eq!(
                stream.peer_certificates().len(),
                1,
                "the client's certificate"
            );
            let taken_along = !stream.incoming.is_empty() || !stream.pending_plain.is_empty();
            let (mut stream, splits) = match stream.into_parts() {
                Ok((tcp, conn)) => (TlsStream::from_parts(tcp, conn), true),
                Err(stream) => (stream, false),
            };
            // As the proxy does: wait for a request, then read it. A request
            // taken along with the handshake must count as one waiting.
            let ready =
                monoio::time::timeout(std::time::Duration::from_secs(5), stream.wait_readable())
                    .await;
            assert!(
                matches!(ready, Ok(Ok(()))),
                "the request was not seen as readable"
            );
            let (res, req) = stream.read_append(Vec::new()).await;
            assert_eq!(res.unwrap(), 4);
            assert_eq!(req, b"ping");
            let (res, _) = crate::io::write_all(&mut stream, b"pong".to_vec()).await;
            res.unwrap();
            stream.close().await;
            (taken_along, splits)
        });
    client.join().unwrap();
    seen
}

#[test]
fn record_exact_reads_leave_the_request_in_the_kernel() {
    let (taken_along, splits) = serve_one(HandshakeReads::ExactRecords);
    assert!(!taken_along, "nothing past Finished may be read");
    assert!(
        splits,
        "the connection must be ready for the kernel handover"
    );
}

#[test]
fn reading_what_is_there_takes_the_request_along_and_serves_it() {
    let (taken_along, splits) = serve_one(HandshakeReads::Available);
    assert!(
        taken_along,
        "the request came in the same write as Finished and should have been read with it"
    );
    assert!(!splits, "ciphertext already read cannot go to the kernel");
}
