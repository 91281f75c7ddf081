//! TLS and client-certificate behaviour of the gateway: real curl, real
//! openssl s_client, a real rustls client, the real `portcullis` binary.

mod common;

use std::time::Duration;

use common::*;

const REFUSED: &str = "client certificate refused";

fn raw_get_close() -> &'static [u8] {
    b"GET /raw?via=s_client HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
}

/// Waits (5 s) for the refusal log line with `reason`.
fn assert_refusal_logged(gw: &Gateway, reason: &str) {
    if gw
        .proc
        .wait_log_line(&[REFUSED, reason], Duration::from_secs(5))
        .is_none()
    {
        gw.fail(&format!(
            "no log line containing both {REFUSED:?} and {reason:?}"
        ));
    }
}

#[test]
fn good_client_cert_curl_gets_echo_json() {
    let st = Stack::start("tls_good_cert", |c, _| c);
    let r = st
        .gw
        .curl("/hello/world?x=1&y=two", &["-H", "X-Custom: abc123"]);
    assert_eq!(r.exit, 0, "{}", r.describe());
    assert_eq!(r.code, 200, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["method"], "GET", "{v}");
    assert_eq!(v["path"], "/hello/world", "{v}");
    assert_eq!(v["query"], "x=1&y=two", "{v}");
    assert_eq!(
        v["host"],
        format!("localhost:{}", st.gw.port()),
        "Host must be kept: {v}"
    );
    let h = &v["headers"];
    assert_eq!(h["x-custom"], "abc123", "{v}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{v}");
    assert_eq!(h["x-forwarded-proto"], "https", "{v}");
    assert_eq!(v["body_bytes"], 0, "{v}");
    assert_eq!(v["body_sha256"], sha256_hex(b""), "{v}");
    assert!(v["connection"]["id"].is_u64(), "{v}");
    assert!(
        v["connection"]["requests"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    // POST with a body reaches the backend intact.
    let r = st.gw.curl("/post", &["--data-binary", "hello portcullis"]);
    assert_eq!(r.code, 200, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["body_bytes"], 16);
    assert_eq!(v["body_sha256"], sha256_hex(b"hello portcullis"));
}

/// At the edge (no trusted_proxies) the client's X-Forwarded-For is replaced,
/// not appended to: otherwise the client picks the address the backend logs.
#[test]
fn forwarded_headers_replaced_and_hop_by_hop_removed() {
    let st = Stack::start("tls_forwarded", |c, _| c);
    let mut c = st.gw.tls();
    let r = c
        .get(
            "/fwd",
            &[
                "X-Forwarded-For: 203.0.113.9",
                "Connection: keep-alive, X-Hop-Secret",
                "X-Hop-Secret: must-not-pass",
                "Keep-Alive: timeout=5",
                "TE: trailers",
                "Proxy-Connection: keep-alive",
                "X-End-To-End: passes",
            ],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{v}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{v}");
    assert_eq!(h["x-forwarded-proto"], "https", "{v}");
    assert_eq!(h["x-end-to-end"], "passes", "{v}");
    for hop in ["keep-alive", "te", "proxy-connection", "x-hop-secret"] {
        assert!(
            h.get(hop).is_none(),
            "hop-by-hop header {hop} was forwarded: {v}"
        );
    }
    if let Some(conn) = h.get("connection").and_then(|x| x.as_str()) {
        assert!(
            !conn.to_ascii_lowercase().contains("x-hop-secret"),
            "client Connection forwarded: {v}"
        );
    }
    assert_eq!(v["host"], "localhost", "{v}");
}

#[test]
fn alpn_prefers_h2_and_serves_http11_to_who_asks_for_it() {
    let st = Stack::start("tls_alpn", |c, _| c);
    let cfg = client_config_alpn(&st.certs, ClientAuth::Default, &[], &[b"h2", b"http/1.1"]);
    let s = st.gw.tls_with(cfg).expect("handshake");
    assert_eq!(
        s.conn.alpn_protocol(),
        Some(&b"h2"[..]),
        "a client offering h2 gets it (tests/http2.rs serves it)"
    );
    let cfg = client_config_alpn(&st.certs, ClientAuth::Default, &[], &[b"http/1.1"]);
    let s = st.gw.tls_with(cfg).expect("handshake");
    assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut c = HttpConn::new(s);
    let r = c.get("/alpn", &[]).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn no_client_cert_is_refused() {
    let st = Stack::start("tls_no_cert", |c, _| c);
    let gw = &st.gw;
    // curl without --cert/--key
    let r = gw.curl_auth(Auth::NoCert, "/", &[]);
    assert_ne!(
        r.exit,
        0,
        "curl without a client cert must fail: {}",
        r.describe()
    );
    assert_ne!(r.code, 200, "{}", r.describe());
    assert_refusal_logged(gw, "client sent no certificate");
    let before = gw
        .proc
        .count_log_lines(&[REFUSED, "client sent no certificate"]);

    // openssl s_client without -cert, TLS 1.2 and 1.3
    for v in ["-tls1_2", "-tls1_3"] {
        let ca = st.certs.ca();
        let o = s_client(
            gw.port(),
            &[v, "-CAfile", ca.to_str().unwrap()],
            raw_get_close(),
        );
        let out = o.stdout_str();
        assert!(
            !out.contains("HTTP/1.1 200"),
            "s_client {v} without a cert got a response:\n{}",
            o.describe()
        );
    }
    let ok = wait_until(Duration::from_secs(5), || {
        gw.proc
            .count_log_lines(&[REFUSED, "client sent no certificate"])
            >= before + 2
    });
    if !ok {
        gw.fail("each s_client attempt without a certificate must log a refusal");
    }

    // rustls client without a cert: refused with a TLS alert, both versions
    for ver in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = client_config(&st.certs, ClientAuth::None, &[ver]);
        let alert = expect_tls_alert(gw.addr(), cfg);
        eprintln!("no-cert {ver:?}: alert {alert}");
    }
}

#[test]
fn untrusted_ca_is_refused() {
    let st = Stack::start("tls_untrusted", |c, _| c);
    let other = certs_init(&st.td.join("other-ca"), &[]);
    let (c, k) = (other.client_cert(), other.client_key());
    let r = st.gw.curl_auth(Auth::Pem(&c, &k), "/", &[]);
    assert_ne!(
        r.exit,
        0,
        "a client cert from another CA must be refused: {}",
        r.describe()
    );
    assert_ne!(r.code, 200);
    assert_refusal_logged(&st.gw, "certificate not signed by a trusted CA");
    let cfg = client_config(
        &st.certs,
        ClientAuth::Pem(c.clone(), k.clone()),
        &[&rustls::version::TLS13],
    );
    expect_tls_alert(st.gw.addr(), cfg);
    // the good cert still works afterwards
    assert_eq!(st.gw.curl("/", &[]).code, 200);
}

#[test]
fn expired_client_cert_is_refused() {
    let st = Stack::start("tls_expired", |c, _| c);
    let out = st.td.join("expired");
    std::fs::create_dir_all(&out).unwrap();
    let (c, k) = certs_issue(&st.certs.dir, &out, "old", "expired-client", &["--expired"]);
    let r = st.gw.curl_auth(Auth::Pem(&c, &k), "/", &[]);
    assert_ne!(
        r.exit,
        0,
        "an expired client cert must be refused: {}",
        r.describe()
    );
    assert_ne!(r.code, 200);
    assert_refusal_logged(&st.gw, "certificate expired at");
    let cfg = client_config(&st.certs, ClientAuth::Pem(c, k), &[&rustls::version::TLS12]);
    expect_tls_alert(st.gw.addr(), cfg);
}

#[test]
fn issued_client_cert_is_accepted() {
    let st = Stack::start("tls_issued", |c, _| c);
    let out = st.td.join("issued");
    std::fs::create_dir_all(&out).unwrap();
    let (c, k) = certs_issue(&st.certs.dir, &out, "alice", "alice", &[]);
    assert!(
        out.join("alice.p12").exists(),
        "certs issue (client kind) must write alice.p12"
    );
    let r = st.gw.curl_auth(Auth::Pem(&c, &k), "/issued", &[]);
    assert_eq!(r.code, 200, "{}", r.describe());
    assert_eq!(r.json()["path"], "/issued");
}

#[test]
fn tls12_and_tls13_with_curl() {
    let st = Stack::start("tls_versions_curl", |c, _| c);
    for (flags, want) in [
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "TLSv1.2"),
        (&["--tlsv1.3"][..], "TLSv1.3"),
    ] {
        let mut args = vec!["-v"];
        args.extend_from_slice(flags);
        let r = st.gw.curl("/ver", &args);
        assert_eq!(r.code, 200, "{flags:?}: {}", r.describe());
        assert!(
            r.stderr.contains(&format!("SSL connection using {want}")),
            "{flags:?}: curl did not negotiate {want}:\n{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("ALPN: server accepted http/1.1")
                || r.stderr.contains("ALPN, server accepted to use http/1.1"),
            "{flags:?}: ALPN http/1.1 not accepted:\n{}",
            r.stderr
        );
        assert_eq!(r.json()["path"], "/ver");
    }
}

#[test]
fn tls12_and_tls13_with_openssl_s_client() {
    let st = Stack::start("tls_versions_sclient", |c, _| c);
    let (ca, cert, key) = (st.certs.ca(), st.certs.client_cert(), st.certs.client_key());
    for (flag, want) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let o = s_client(
            st.gw.port(),
            &[
                flag,
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
                "-CAfile",
                ca.to_str().unwrap(),
                "-verify_return_error",
                "-alpn",
                "http/1.1",
            ],
            raw_get_close(),
        );
        let out = o.stdout_str();
        assert!(
            out.contains("HTTP/1.1 200"),
            "{flag}: no 200 in s_client output:\n{}",
            o.describe()
        );
        assert!(
            out.contains(want),
            "{flag}: {want} not negotiated:\n{}",
            o.describe()
        );
        assert!(
            out.contains("\"path\":\"/raw\"") || out.contains("\"path\": \"/raw\""),
            "{flag}: echo JSON missing:\n{out}"
        );
        assert!(
            out.contains("Verify return code: 0"),
            "{flag}: server cert did not verify:\n{out}"
        );
    }
}

#[test]
fn tls12_and_tls13_with_rustls() {
    let st = Stack::start("tls_versions_rustls", |c, _| c);
    for (ver, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let cfg = client_config(&st.certs, ClientAuth::Default, &[ver]);
        let s = st.gw.tls_with(cfg).expect("handshake");
        assert_eq!(s.conn.protocol_version(), Some(want));
        let mut c = HttpConn::new(s);
        for i in 0..3 {
            let r = c.get(&format!("/r{i}"), &[]).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["path"], format!("/r{i}"));
        }
    }
}

#[test]
fn tls13_only_listener_refuses_tls12_client() {
    let st = Stack::start("tls13_only", |mut c, _| {
        c.listeners[0].tls_versions = vec!["1.3".into()];
        c
    });
    let r = st.gw.curl("/", &["--tlsv1.2", "--tls-max", "1.2"]);
    assert_ne!(
        r.exit,
        0,
        "TLS 1.2-only curl must fail on a 1.3-only listener: {}",
        r.describe()
    );
    assert_ne!(r.code, 200);
    let cfg = client_config(&st.certs, ClientAuth::Default, &[&rustls::version::TLS12]);
    assert!(
        st.gw.tls_with(cfg).is_err(),
        "rustls TLS 1.2-only handshake must fail"
    );
    // TLS 1.3 still works
    let r = st.gw.curl("/", &["--tlsv1.3"]);
    assert_eq!(r.code, 200, "{}", r.describe());
}

#[test]
fn tls13_key_update_keeps_connection_working() {
    let st = Stack::start("tls_key_update", |c, _| c);
    let cfg = client_config(&st.certs, ClientAuth::Default, &[&rustls::version::TLS13]);
    let mut c = HttpConn::new(st.gw.tls_with(cfg).expect("handshake"));
    for i in 0..4 {
        let r = c.get(&format!("/ku{i}"), &[]).unwrap();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.json()["path"], format!("/ku{i}"));
        c.s.conn.refresh_traffic_keys().expect("key update");
    }
    let r = c.get("/after", &[]).unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn pkcs12_client_cert_with_curl() {
    let st = Stack::start("tls_p12", |c, _| c);
    let p12 = st.certs.client_p12();
    let r = st.gw.curl_auth(Auth::P12(&p12, "portcullis"), "/p12", &[]);
    assert_eq!(
        r.code,
        200,
        "default p12 password 'portcullis': {}",
        r.describe()
    );
    assert_eq!(r.json()["path"], "/p12");

    // a client cert issued with a custom password
    let out = st.td.join("p12");
    std::fs::create_dir_all(&out).unwrap();
    certs_issue(
        &st.certs.dir,
        &out,
        "bob",
        "bob",
        &["--p12-password", "s3cret-pw"],
    );
    let bob = out.join("bob.p12");
    let r = st.gw.curl_auth(Auth::P12(&bob, "s3cret-pw"), "/bob", &[]);
    assert_eq!(r.code, 200, "custom p12 password: {}", r.describe());
    // wrong password: curl cannot load the cert
    let r = st.gw.curl_auth(Auth::P12(&bob, "wrong"), "/bob", &[]);
    assert_ne!(r.exit, 0);
}

#[test]
fn pkcs12_custom_password_from_init() {
    let td = TempDir::new("tls_p12_init");
    let certs = certs_init(&td.join("certs"), &["--p12-password", "init-pw"]);
    let echo = Echo::start(&td);
    let gw = Gateway::start(
        &td,
        &certs,
        Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()])),
    );
    let p12 = certs.client_p12();
    let r = gw.curl_auth(Auth::P12(&p12, "init-pw"), "/", &[]);
    assert_eq!(r.code, 200, "{}", r.describe());
}

#[test]
fn several_client_ca_bundles() {
    let td = TempDir::new("tls_multi_ca");
    let a = certs_init(&td.join("a"), &[]);
    let b = certs_init(&td.join("b"), &[]);
    let c = certs_init(&td.join("c"), &[]);
    let echo = Echo::start(&td);
    let mut cfg = Config::new(&a).route(RouteCfg::new("/", &[&echo.addr()]));
    cfg.listeners[0].client_ca = vec![a.ca(), b.ca()];
    let gw = Gateway::start(&td, &a, cfg);
    for (name, d) in [("a", &a), ("b", &b)] {
        let (cc, kk) = (d.client_cert(), d.client_key());
        let r = gw.curl_auth(Auth::Pem(&cc, &kk), "/", &[]);
        assert_eq!(r.code, 200, "client cert of CA {name}: {}", r.describe());
    }
    let (cc, kk) = (c.client_cert(), c.client_key());
    let r = gw.curl_auth(Auth::Pem(&cc, &kk), "/", &[]);
    assert_ne!(r.exit, 0, "CA c is not trusted: {}", r.describe());
    assert_refusal_logged(&gw, "certificate not signed by a trusted CA");
}

fn key_type_serves(kt: &str) {
    let td = TempDir::new(&format!("tls_key_{kt}"));
    let certs = certs_init(&td.join("certs"), &["--key-type", kt]);
    let echo = Echo::start(&td);
    let gw = Gateway::start(
        &td,
        &certs,
        Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()])),
    );
    let r = gw.curl(&format!("/{kt}"), &[]);
    assert_eq!(r.code, 200, "{kt} via curl: {}", r.describe());
    assert_eq!(r.json()["path"], format!("/{kt}"));
    for ver in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let cfg = client_config(&certs, ClientAuth::Default, &[ver]);
        let mut c = HttpConn::new(
            gw.tls_with(cfg)
                .unwrap_or_else(|e| gw.fail(&format!("{kt} {ver:?}: {e}"))),
        );
        let r = c.get("/rustls", &[]).unwrap();
        assert_eq!(r.status, 200, "{kt} {ver:?} via rustls");
    }
}

#[test]
fn server_key_ecdsa_p256() {
    key_type_serves("ecdsa-p256");
}

#[test]
fn server_key_ecdsa_p384() {
    key_type_serves("ecdsa-p384");
}

#[test]
fn server_key_rsa_2048() {
    key_type_serves("rsa-2048");
}

#[test]
fn server_key_ed25519() {
    key_type_serves("ed25519");
}

#[test]
fn custom_server_name_in_certificate() {
    let td = TempDir::new("tls_server_name");
    let certs = certs_init(
        &td.join("certs"),
        &[
            "--server-name",
            "api.portcullis.test",
            "--client-cn",
            "svc-a",
        ],
    );
    let echo = Echo::start(&td);
    let gw = Gateway::start(
        &td,
        &certs,
        Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()])),
    );
    let port = gw.port();
    let r = curl(
        &gw.work,
        &certs,
        port,
        Auth::Client,
        &[&format!("https://api.portcullis.test:{port}/named")],
        &[
            "--resolve",
            &format!("api.portcullis.test:{port}:127.0.0.1"),
        ],
    );
    assert_eq!(r.code, 200, "{}", r.describe());
    // only the given names: localhost is no longer in the server cert
    let r = gw.curl("/", &[]);
    assert_ne!(
        r.exit,
        0,
        "localhost must not verify when --server-name replaces the defaults: {}",
        r.describe()
    );
}

/// The gateway picks the suite from its own preference order (AES-128-GCM,
/// AES-256-GCM, ChaCha20), not the client's (testssl.sh reports "no server
/// cipher order" otherwise): a client listing ChaCha20 and AES-256-GCM
/// first still gets AES-128-GCM; one offering only AES-256-GCM gets that.
#[test]
fn the_server_order_of_cipher_suites_wins() {
    let st = Stack::start("tls_server_order", |c, _| c);
    let (ca, cert, key) = (st.certs.ca(), st.certs.client_cert(), st.certs.client_key());
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "-tls1_3",
                "-ciphersuites",
                "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
            ],
            "TLS_AES_128_GCM_SHA256",
        ),
        (
            &[
                "-tls1_3",
                "-ciphersuites",
                "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384",
            ],
            "TLS_AES_256_GCM_SHA384",
        ),
        (
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
            ],
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ),
        (
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384",
            ],
            "ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
    ];
    for (suites, want) in cases {
        let mut args: Vec<&str> = suites.to_vec();
        args.extend([
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-CAfile",
            ca.to_str().unwrap(),
        ]);
        let o = s_client(st.gw.port(), &args, raw_get_close());
        let out = o.stdout_str();
        assert!(out.contains("HTTP/1.1 200"), "{suites:?}: {}", o.describe());
        assert!(
            out.contains(&format!("Cipher is {want}")),
            "{suites:?}: expected the server's choice {want}:\n{out}"
        );
    }
}
