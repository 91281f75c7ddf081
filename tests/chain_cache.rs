//! The per-core verified-chain cache (`[tls] verified_chain_cache`), seen
//! from outside: the real gateway (one worker, so every connection meets the
//! same core's cache), real curl and rustls clients making full handshakes,
//! and `/metrics` counting what the cache did. A returning client is a hit; a
//! reload that brings a CRL revoking it refuses it (`certificate revoked`)
//! however often it was a hit before; with the cache off nothing is a hit.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// (hits, misses, entries) as `/metrics` reports them.
fn cache_counts(admin: &str) -> (f64, f64, f64) {
    let body = admin_get(admin, "/metrics").1;
    let get =
        |series: &str| metric(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"));
    (
        get("portcullis_verified_chain_cache_total{event=\"hit\"}"),
        get("portcullis_verified_chain_cache_total{event=\"miss\"}"),
        get("portcullis_verified_chain_cache_entries"),
    )
}

/// Waits (workers publish once a second) until the counts are `want`.
fn expect_counts(gw: &ChildGuard, admin: &str, want: (f64, f64, f64), what: &str) {
    let mut seen = (-1.0, -1.0, -1.0);
    if !wait_until(Duration::from_secs(5), || {
        seen = cache_counts(admin);
        seen == want
    }) {
        gw.fail(&format!(
            "{what}: cache (hits, misses, entries) {seen:?}, expected {want:?}"
        ));
    }
}

/// `portcullis certs crl` for the CA in `ca`, revoking `revoke`.
fn write_crl(ca: &CertDir, out: &Path, revoke: Option<&Path>) {
    let mut cmd = portcullis();
    cmd.args(["certs", "crl", "--ca-dir"])
        .arg(&ca.dir)
        .arg("--out")
        .arg(out);
    if let Some(cert) = revoke {
        cmd.arg("--revoke").arg(cert);
    }
    let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
    assert!(o.status.success(), "certs crl: {}", o.describe());
}

struct Setup {
    td: TempDir,
    certs: CertDir,
    _echo: Echo,
    gw: ChildGuard,
    config: PathBuf,
    port: u16,
    admin: String,
}

/// One worker, one site with a CRL, the admin listener; `tls` is the
/// `[tls]` table's body ("" leaves the defaults).
fn setup(name: &str, tls: &str, crl_revokes_client: bool) -> Setup {
    let td = TempDir::new(name);
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let crl = td.join("clients.crl.pem");
    write_crl(
        &certs,
        &crl,
        crl_revokes_client.then(|| certs.client_cert()).as_deref(),
    );
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let p = |path: &Path| q(&path.to_string_lossy());
    let toml = format!(
        "[server]\nworkers = 1\n\n[tls]\n{tls}\n\n[admin]\naddress = {}\n\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[site]]\nname = \"a\"\nserver_names = [\"localhost\"]\ncertificate = {}\n\
         private_key = {}\nclient_ca = [{}]\ncrl = [{}]\ndefault = true\n\n\
         [[route]]\npath = \"/\"\nbackends = [{}]\n",
        q(&admin),
        p(&certs.server_cert()),
        p(&certs.server_key()),
        p(&certs.ca()),
        p(&crl),
        q(&echo.addr()),
    );
    let config = config_file(&td);
    fs::write(&config, toml).expect("write config");
    let mut cmd = portcullis();
    cmd.arg("run").arg("--config").arg(&config);
    let mut gw = ChildGuard::spawn("gateway", cmd, td.path());
    wait_accept(sockaddr(&format!("127.0.0.1:{port}")), &mut gw);
    if gw
        .wait_log_line(&["worker started"], Duration::from_secs(10))
        .is_none()
    {
        gw.fail("the gateway did not start its worker");
    }
    Setup {
        td,
        certs,
        _echo: echo,
        gw,
        config,
        port,
        admin,
    }
}

impl Setup {
    fn curl(&self) -> CurlRes {
        curl(
            self.td.path(),
            &self.certs,
            self.port,
            Auth::Client,
            &[&format!("https://localhost:{}/", self.port)],
            &[],
        )
    }

    /// A rustls client with the same certificate: one full handshake and a GET.
    fn rustls_get(&self) -> u16 {
        let cfg = client_config(&self.certs, ClientAuth::Default, &[]);
        let stream = tls_connect(sockaddr(&format!("127.0.0.1:{}", self.port)), cfg)
            .unwrap_or_else(|e| self.gw.fail(&format!("TLS connect: {e}")));
        let mut conn = HttpConn::new(stream);
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        conn.read_response().map(|r| r.status).unwrap_or(0)
    }

    /// Makes the running gateway reload its config file, edited by `edit`.
    fn reload(&self, edit: impl FnOnce(String) -> String) {
        let text = fs::read_to_string(&self.config).expect("read config");
        fs::write(&self.config, edit(text)).expect("write config");
        let before = self.gw.count_log_lines(&["config reloaded"]);
        self.gw.signal(libc::SIGHUP);
        if !wait_until(Duration::from_secs(10), || {
            self.gw.count_log_lines(&["config reloaded"]) > before
        }) {
            self.gw.fail("the reload did not happen");
        }
    }
}

#[test]
fn a_returning_client_is_a_hit_until_a_reloaded_crl_revokes_it() {
    let s = setup("chain-cache", "", false);
    let (gw, admin) = (&s.gw, s.admin.as_str());
    expect_counts(gw, admin, (0.0, 0.0, 0.0), "at start");

    let first = s.curl();
    assert_eq!(first.code, 200, "{}", first.describe());
    expect_counts(
        gw,
        admin,
        (0.0, 1.0, 1.0),
        "first connection: verified in full",
    );
    for i in 1..=3 {
        let again = s.curl();
        assert_eq!(again.code, 200, "{}", again.describe());
        expect_counts(gw, admin, (i as f64, 1.0, 1.0), "curl came back: a hit");
    }
    // rustls with the same certificate sends the leaf alone, where curl
    // (OpenSSL) appends the CA from its store: other chain bytes, another
    // entry; and then its own hit.
    assert_eq!(s.rustls_get(), 200);
    expect_counts(gw, admin, (3.0, 2.0, 2.0), "rustls: the leaf alone");
    assert_eq!(s.rustls_get(), 200);
    expect_counts(gw, admin, (4.0, 2.0, 2.0), "rustls came back: a hit");

    // A CRL revoking this client arrives by reload: a new verifier, a miss,
    // and the full check's refusal with its alert and log line.
    let revoked = s.td.join("revoked.crl.pem");
    write_crl(&s.certs, &revoked, Some(&s.certs.client_cert()));
    let old = q(&s.td.join("clients.crl.pem").to_string_lossy());
    s.reload(|t| t.replace(&old, &q(&revoked.to_string_lossy())));
    for round in 0..2 {
        let refused = s.curl();
        assert_ne!(refused.code, 200, "round {round}: {}", refused.describe());
        let cfg = client_config(&s.certs, ClientAuth::Default, &[]);
        let alert = expect_tls_alert(sockaddr(&format!("127.0.0.1:{}", s.port)), cfg);
        assert_eq!(alert, "CertificateRevoked", "round {round}");
    }
    // The client may read the alert before the line is written: wait for it.
    let logged = wait_until(Duration::from_secs(5), || {
        gw.count_log_lines(&["client certificate refused", "reason=certificate revoked"]) >= 4
    });
    assert!(logged, "every refusal logs its reason:\n{}", gw.output());
    // Four refusals, four misses: none came from the cache, none went into it.
    expect_counts(gw, admin, (4.0, 6.0, 2.0), "after the CRL");
    let body = admin_get(admin, "/metrics").1;
    assert_eq!(
        metric(
            &body,
            "portcullis_handshake_failures_total{reason=\"revoked\"}"
        ),
        Some(4.0),
        "{body}"
    );

    // Un-revoked by another reload: verified in full once more, then a hit.
    s.reload(|t| t.replace(&q(&revoked.to_string_lossy()), &old));
    assert_eq!(s.curl().code, 200);
    assert_eq!(s.curl().code, 200);
    expect_counts(gw, admin, (5.0, 7.0, 3.0), "after the CRL went");
}

#[test]
fn with_the_cache_off_nothing_is_a_hit() {
    let s = setup("chain-cache-off", "verified_chain_cache = 0", false);
    for _ in 0..3 {
        let r = s.curl();
        assert_eq!(r.code, 200, "{}", r.describe());
    }
    assert_eq!(s.rustls_get(), 200);
    // Wait for a snapshot that has seen the four connections, then look.
    let mut body = String::new();
    let served = wait_until(Duration::from_secs(5), || {
        body = admin_get(&s.admin, "/metrics").1;
        metric(
            &body,
            "portcullis_connections_total{tls_mode=\"userspace\"}",
        )
        .unwrap_or(0.0)
            + metric(&body, "portcullis_connections_total{tls_mode=\"ktls\"}").unwrap_or(0.0)
            >= 4.0
    });
    assert!(served, "{body}");
    assert_eq!(cache_counts(&s.admin), (0.0, 0.0, 0.0), "{body}");
}

#[test]
fn a_client_revoked_from_the_start_is_refused_every_time() {
    // Refusals are never cached: the tenth attempt is judged like the first.
    let s = setup("chain-cache-revoked", "verified_chain_cache = 16", true);
    for _ in 0..3 {
        let cfg = client_config(&s.certs, ClientAuth::Default, &[]);
        let alert = expect_tls_alert(sockaddr(&format!("127.0.0.1:{}", s.port)), cfg);
        assert_eq!(alert, "CertificateRevoked");
    }
    expect_counts(&s.gw, &s.admin, (0.0, 3.0, 0.0), "three refusals");
}

#[test]
fn pcl_load_presents_a_new_client_per_handshake_from_a_directory() {
    // 20 clients in turn against a cache of 4 per worker: every handshake is
    // a miss (each client returns after 19 others). One client over and over:
    // hits. A light open-loop rate: this checks the tool, it measures nothing.
    let s = setup("chain-cache-pcl-load", "verified_chain_cache = 4", false);
    let clients = s.td.join("clients");
    let mut cmd = portcullis();
    cmd.args(["certs", "issue", "--ca-dir"])
        .arg(&s.certs.dir)
        .arg("--out")
        .arg(&clients)
        .args(["--stem", "load", "--cn", "load", "--count", "20"]);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    assert!(o.status.success(), "certs issue --count: {}", o.describe());
    assert!(
        o.stdout_str().contains("wrote 20 certificates"),
        "{}",
        o.describe()
    );
    let run = |name: &str, identity: &[&str]| -> serde_json::Value {
        let json = s.td.join(&format!("{name}.json"));
        let mut cmd = std::process::Command::new(pcl_load());
        cmd.args(["-d", "2s", "-t", "1", "-c", "2", "-R", "40", "--new-conn"])
            .arg("--cacert")
            .arg(s.certs.ca())
            .args(identity)
            .arg("--sni")
            .arg("localhost")
            .arg("--json")
            .arg(&json)
            .arg(format!("https://127.0.0.1:{}/", s.port));
        let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
        assert!(o.status.success(), "pcl-load {name}: {}", o.describe());
        serde_json::from_slice(&fs::read(&json).unwrap()).unwrap()
    };
    let dir = clients.to_string_lossy().into_owned();
    let v = run("many", &["--client-certs", &dir]);
    assert_eq!(v["errors_total"], 0, "{v}");
    let handshakes = v["requests"].as_u64().unwrap_or(0) as f64;
    assert!(handshakes >= 40.0, "{v}");
    let mut seen = (0.0, 0.0, 0.0);
    let all_missed = wait_until(Duration::from_secs(5), || {
        seen = cache_counts(&s.admin);
        seen.1 >= handshakes
    });
    assert!(all_missed, "{handshakes} handshakes, cache {seen:?}");
    assert_eq!(seen.0, 0.0, "no client came back within 4: {seen:?}");
    assert_eq!(seen.2, 4.0, "the bound: {seen:?}");

    let cert = s.certs.client_cert().to_string_lossy().into_owned();
    let key = s.certs.client_key().to_string_lossy().into_owned();
    let v = run("one", &["--cert", &cert, "--key", &key]);
    assert_eq!(v["errors_total"], 0, "{v}");
    let again = v["requests"].as_u64().unwrap_or(0) as f64;
    let hits = wait_until(Duration::from_secs(5), || {
        seen = cache_counts(&s.admin);
        seen.0 + 1.0 >= again
    });
    assert!(hits, "{again} handshakes by one client, cache {seen:?}");
}

#[test]
fn check_explains_the_cache_and_a_bad_value_names_file_line_and_field() {
    let td = TempDir::new("chain-cache-check");
    let certs = certs_init(&td.join("certs"), &[]);
    let base = Config::new(&certs).route(RouteCfg::new("/", &["127.0.0.1:9"]));
    let check = |cfg: &Config| {
        let path = config_file(&td);
        cfg.write(&path);
        let mut cmd = portcullis();
        cmd.arg("check").arg("--config").arg(&path);
        (run_cmd(&mut cmd, None, Duration::from_secs(30)), path)
    };
    let (o, _) = check(&base);
    assert_eq!(o.code(), Some(0), "{}", o.describe());
    assert!(
        o.stdout_str()
            .contains("verified-chain cache 4096 entries per worker"),
        "{}",
        o.describe()
    );
    let (o, _) = check(&base.clone().table("[tls]\nverified_chain_cache = 0"));
    assert!(
        o.stdout_str().contains("verified-chain cache off"),
        "{}",
        o.describe()
    );

    let bad = base.clone().table("[tls]\nverified_chain_cache = -5");
    let line = line_of(&bad.render(), "verified_chain_cache = -5");
    let (o, path) = check(&bad);
    assert_eq!(o.code(), Some(2), "{}", o.describe());
    let want = format!(
        "{}:{line}: tls.verified_chain_cache: -5: must be between 0 (off) and 1048576 entries per worker",
        path.display()
    );
    assert!(o.stderr.contains(&want), "want {want:?}:\n{}", o.describe());
}

/// A client that presents `chain` and signs with `key`, whoever's it is.
#[derive(Debug)]
struct Presents(std::sync::Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

#[test]
fn a_cached_certificate_without_its_key_is_refused() {
    // The chain is a hit, but the CertificateVerify is checked every time:
    // someone who has the certificate (it is not secret) and not its key is
    // refused with decrypt_error, in TLS 1.3 and 1.2.
    let s = setup("chain-cache-thief", "", false);
    assert_eq!(s.rustls_get(), 200);
    assert_eq!(s.rustls_get(), 200);
    expect_counts(&s.gw, &s.admin, (1.0, 1.0, 1.0), "owner, twice");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let thief_key = rcgen::KeyPair::generate().unwrap();
    let signing = provider
        .key_provider
        .load_private_key(
            rustls::pki_types::PrivatePkcs8KeyDer::from(thief_key.serialize_der()).into(),
        )
        .unwrap();
    let stolen = std::sync::Arc::new(rustls::sign::CertifiedKey::new(
        load_certs(&s.certs.client_cert()),
        signing,
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(load_certs(&s.certs.ca()).remove(0)).unwrap();
    for (i, version) in [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .enumerate()
    {
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_cert_resolver(std::sync::Arc::new(Presents(stolen.clone())));
        let alert = expect_tls_alert(
            sockaddr(&format!("127.0.0.1:{}", s.port)),
            std::sync::Arc::new(cfg),
        );
        assert_eq!(alert, "DecryptError", "{version:?}");
        let hits = 2.0 + i as f64;
        expect_counts(&s.gw, &s.admin, (hits, 1.0, 1.0), "the chain was a hit");
    }
}
