//! The dev PKI used for real: rustls handshakes with every key type, and
//! curl presenting the PKCS#12 client bundle.

use super::*;

fn load_key(path: &Path) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivateKeyDer::from_pem_file(path).unwrap()
}

/// Full mutual TLS handshake in memory with rustls (the gateway's TLS
/// stack): server.pem/key as server for "localhost", client.pem/key as
/// client, both verified against ca.pem.
fn rustls_handshake(dir: &Path, server_name: &str) -> Result<(), rustls::Error> {
    use std::sync::Arc;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in load_chain(&dir.join("ca.pem")) {
        roots.add(ca).unwrap();
    }
    let roots = Arc::new(roots);
    // The gateway's own client verifier (keyUsage rules included).
    let verifier = crate::tls::client_verifier::build(
        &load_chain(&dir.join("ca.pem")),
        &[],
        true,
        provider.signature_verification_algorithms,
        crate::config::TlsSettings::default().verified_chain_cache,
    )
    .unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            load_chain(&dir.join("server.pem")),
            load_key(&dir.join("server.key")),
        )
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            load_chain(&dir.join("client.pem")),
            load_key(&dir.join("client.key")),
        )
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).unwrap();
        }
        server.process_new_packets()?;
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).unwrap();
        }
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            assert!(server.peer_certificates().is_some_and(|c| !c.is_empty()));
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn rustls_accepts_every_key_type() {
    for key_type in KeyType::ALL {
        let tmp = TempDir::new();
        let mut opts = InitOptions::new(&tmp.0);
        opts.key_type = key_type;
        assert!(init(&opts).unwrap());
        for name in ["localhost", "127.0.0.1", "::1"] {
            rustls_handshake(&tmp.0, name).unwrap_or_else(|e| panic!("{key_type} {name}: {e}"));
        }
        let wrong = rustls_handshake(&tmp.0, "example.com").unwrap_err();
        assert!(wrong.to_string().contains("not valid for name"), "{wrong}");

        // A client leaf issued later by the same CA is accepted too, and an
        // expired one is refused by the server.
        let mut later = LeafOptions::new(&tmp.0, "client", LeafKind::Client);
        later.key_type = key_type;
        issue(&later).unwrap();
        rustls_handshake(&tmp.0, "localhost").unwrap();
        later.expired = true;
        issue(&later).unwrap();
        let expired = rustls_handshake(&tmp.0, "localhost").unwrap_err();
        assert!(expired.to_string().contains("expired"), "{expired}");
    }
}

/// The .p12 works as curl's client certificate against a server that
/// demands one (openssl s_server), as documented for users.
#[test]
fn curl_presents_the_p12() {
    if !have("openssl") || !have("curl") {
        return;
    }
    let tmp = TempDir::new();
    init(&InitOptions::new(&tmp.0)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-Verify",
            "1",
            "-verify_return_error",
        ])
        .args([
            "-CAfile",
            "ca.pem",
            "-cert",
            "server.pem",
            "-key",
            "server.key",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .current_dir(&tmp.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "s_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("https://localhost:{port}/");
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--max-time",
                "10",
                "--cacert",
                "ca.pem",
            ])
            .args(extra)
            .arg(&url)
            .current_dir(&tmp.0)
            .output()
            .unwrap()
    };
    let with_p12 = curl(&["--cert-type", "P12", "--cert", "client.p12:portcullis"]);
    let without = curl(&[]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        with_p12.status.success(),
        "curl with the .p12 failed: {}",
        String::from_utf8_lossy(&with_p12.stderr)
    );
    assert!(String::from_utf8_lossy(&with_p12.stdout).contains("portcullis-dev-client"));
    assert!(
        !without.status.success(),
        "the server did not demand a client certificate"
    );
}
