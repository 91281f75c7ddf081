//! The command line: `check`, `run` (with a config and in dev mode) and the
//! `certs` tool, checked with the real binary, curl and openssl.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn valid_config(td: &TempDir) -> (CertDir, Config) {
    let certs = certs_init(&td.join("certs"), &[]);
    let cfg = Config::new(&certs)
        .route(
            RouteCfg::new("/api", &["127.0.0.1:9"])
                .methods(&["GET", "POST"])
                .set_host("api.internal"),
        )
        .route(RouteCfg::new("/", &["127.0.0.1:9", "127.0.0.1:10"]).max_body("1MiB"));
    (certs, cfg)
}

fn check(path: &std::path::Path) -> Out {
    let mut cmd = portcullis();
    cmd.arg("check").arg("--config").arg(path);
    run_cmd(&mut cmd, None, Duration::from_secs(30))
}

/// Writes `text` as a config and expects `check` and `run` to fail with exit 2
/// and `FILE:LINE: FIELD:` on stderr.
fn expect_config_error(td: &TempDir, text: &str, line: usize, field: &str) {
    let path = config_file(td);
    fs::write(&path, text).unwrap();
    let want = format!("{}:{}: {}:", path.display(), line, field);
    let o = check(&path);
    assert_eq!(
        o.code(),
        Some(2),
        "check must exit 2 for a bad {field}: {}",
        o.describe()
    );
    assert!(
        o.stderr.contains(&want),
        "check stderr must contain {want:?}:\n{}",
        o.describe()
    );

    let mut cmd = portcullis();
    cmd.arg("run").arg("--config").arg(&path);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(20));
    assert_eq!(
        o.code(),
        Some(2),
        "run must exit 2 for a bad {field}: {}",
        o.describe()
    );
    assert!(
        o.stderr.contains(&want),
        "run stderr must contain {want:?}:\n{}",
        o.describe()
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let td = TempDir::new("cli_check_ok");
    let (_certs, cfg) = valid_config(&td);
    let path = config_file(&td);
    cfg.write(&path);
    let o = check(&path);
    assert_eq!(o.code(), Some(0), "{}", o.describe());
    assert!(
        !o.stdout_str().trim().is_empty(),
        "check must print a summary on stdout: {}",
        o.describe()
    );
    // "auto" workers and human sizes are valid too
    let mut cfg2 = cfg.clone();
    cfg2.workers = q("auto");
    cfg2.max_body_bytes = "10485760".into();
    cfg2.write(&path);
    let o = check(&path);
    assert_eq!(o.code(), Some(0), "{}", o.describe());
}

#[test]
fn check_and_run_report_bad_backend_with_line() {
    let td = TempDir::new("cli_check_backend");
    let (_certs, mut cfg) = valid_config(&td);
    cfg.routes[0].backends = vec!["127.0.0.1:99999".into()];
    let text = cfg.render();
    let line = line_of(&text, "backends = [\"127.0.0.1:99999\"]");
    expect_config_error(&td, &text, line, "route[0].backends[0]");

    // index of the route and of the backend are both reported
    let (_c, mut cfg) = valid_config(&td);
    cfg.routes[1].backends = vec!["127.0.0.1:10".into(), "not an address".into()];
    let text = cfg.render();
    let line = line_of(&text, "\"not an address\"");
    expect_config_error(&td, &text, line, "route[1].backends[1]");
}

#[test]
fn check_reports_other_field_errors_with_line() {
    let td = TempDir::new("cli_check_fields");
    let (_certs, mut cfg) = valid_config(&td);
    cfg.listeners[0].certificate = td.join("no-such-cert.pem");
    let text = cfg.render();
    let line = line_of(&text, "no-such-cert.pem");
    expect_config_error(&td, &text, line, "listener[0].certificate");

    let (_certs, mut cfg) = valid_config(&td);
    cfg.idle = "forever".into();
    let text = cfg.render();
    let line = line_of(&text, "idle = \"forever\"");
    expect_config_error(&td, &text, line, "timeouts.idle");
}

#[test]
fn check_rejects_missing_file() {
    let td = TempDir::new("cli_check_missing");
    let o = check(&td.join("nope.toml"));
    assert_ne!(o.code(), Some(0), "{}", o.describe());
    assert!(!o.stderr.trim().is_empty());
}

/// Starts `portcullis run --listen 127.0.0.1:PORT` with PORTCULLIS_HOME and
/// returns the guard and its `curl ` line.
fn dev_run(td: &TempDir, home: &std::path::Path, port: u16) -> (ChildGuard, String) {
    let mut cmd = portcullis();
    cmd.arg("run")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("PORTCULLIS_HOME", home);
    let (mut g, lines) = ChildGuard::spawn_lines("gateway-dev", cmd, td.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.starts_with("curl ") => break l,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                g.fail("dev run closed stdout without a `curl ` line")
            }
        }
        if let Some(st) = g.try_exit() {
            g.fail(&format!(
                "dev run exited ({st}) before printing a `curl ` line"
            ));
        }
        if Instant::now() > deadline {
            g.fail("no `curl ` line on stdout within 30 s");
        }
    };
    wait_accept(SocketAddr::from(([127, 0, 0, 1], port)), &mut g);
    (g, line)
}

#[test]
fn dev_mode_prints_a_working_curl_command() {
    let td = TempDir::new("cli_dev");
    let home = td.join("home");
    let port = free_port();
    let (mut g, line) = dev_run(&td, &home, port);
    for must in [
        "--cacert",
        "--cert",
        "--key",
        &format!("https://localhost:{port}/"),
    ] {
        assert!(line.contains(must), "curl line lacks {must:?}: {line}");
    }
    let ca = home.join("dev").join("ca.pem");
    assert!(
        ca.exists(),
        "dev certs must be created in $PORTCULLIS_HOME/dev"
    );
    let dev_abs = fs::canonicalize(home.join("dev")).unwrap();
    assert!(
        line.contains(&dev_abs.display().to_string())
            || line.contains(&home.join("dev").display().to_string()),
        "curl line must use absolute paths in $PORTCULLIS_HOME/dev: {line}"
    );

    let run_line = |line: &str| {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(line);
        let o = run_cmd(&mut sh, None, Duration::from_secs(40));
        assert_eq!(
            o.code(),
            Some(0),
            "the printed curl command failed: {line}\n{}",
            o.describe()
        );
        let out = o.stdout_str();
        let (a, b) = (out.find('{'), out.rfind('}'));
        let (Some(a), Some(b)) = (a, b) else {
            panic!("no JSON in the curl output: {out}")
        };
        let v: serde_json::Value =
            serde_json::from_str(&out[a..=b]).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["method"], "GET", "{v}");
        assert!(
            v["path"].as_str().is_some_and(|p| p.starts_with('/')),
            "{v}"
        );
        assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{v}");
    };
    run_line(&line);
    let ca_hash = sha256_file(&ca);
    g.sigterm();
    let st = g
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| g.fail("dev run did not exit on SIGTERM"));
    assert!(st.success(), "{st}");
    drop(g);

    // second start: the same certificates are reused
    let port2 = free_port();
    let (_g2, line2) = dev_run(&td, &home, port2);
    assert_eq!(
        sha256_file(&ca),
        ca_hash,
        "dev CA must be reused, not regenerated"
    );
    run_line(&line2);
}

// ---------------------------------------------------------------- certs tool

fn openssl(args: &[&str]) -> Out {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    run_cmd(&mut cmd, None, Duration::from_secs(30))
}

fn x509_text(pem: &std::path::Path) -> String {
    let o = openssl(&["x509", "-in", pem.to_str().unwrap(), "-noout", "-text"]);
    assert!(o.status.success(), "{}", o.describe());
    o.stdout_str()
}

#[test]
fn certs_init_writes_a_valid_chain() {
    let td = TempDir::new("cli_certs_chain");
    let certs = certs_init(&td.join("certs"), &["--client-cn", "svc-a"]);
    let ca = certs.ca();
    for leaf in [certs.server_cert(), certs.client_cert()] {
        let o = openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ]);
        assert!(
            o.status.success() && o.stdout_str().contains(": OK"),
            "{}",
            o.describe()
        );
    }
    let server = x509_text(&certs.server_cert());
    assert!(server.contains("DNS:localhost"), "{server}");
    assert!(server.contains("IP Address:127.0.0.1"), "{server}");
    assert!(
        server.contains("IP Address:0:0:0:0:0:0:0:1") || server.contains("IP Address:::1"),
        "{server}"
    );
    let o = openssl(&[
        "x509",
        "-in",
        certs.client_cert().to_str().unwrap(),
        "-noout",
        "-subject",
    ]);
    assert!(
        o.stdout_str().replace(' ', "").contains("CN=svc-a"),
        "{}",
        o.describe()
    );
    // the PKCS#12 opens with OpenSSL 3 defaults (no legacy algorithms)
    let p12 = certs.client_p12();
    let o = openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        "pass:portcullis",
        "-nokeys",
        "-noout",
    ]);
    assert!(
        o.status.success(),
        "client.p12 must open with the default password: {}",
        o.describe()
    );
    let o = openssl(&[
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        "pass:wrong",
        "-nokeys",
        "-noout",
    ]);
    assert!(
        !o.status.success(),
        "client.p12 opened with a wrong password"
    );
}

#[test]
fn certs_init_key_types() {
    let td = TempDir::new("cli_certs_keytypes");
    for (kt, needles) in [
        ("ecdsa-p256", &["id-ecPublicKey", "P-256"][..]),
        ("ecdsa-p384", &["id-ecPublicKey", "P-384"][..]),
        ("rsa-2048", &["rsaEncryption", "2048 bit"][..]),
        ("ed25519", &["ED25519"][..]),
    ] {
        let certs = certs_init(&td.join(kt), &["--key-type", kt]);
        let text = x509_text(&certs.server_cert());
        for n in needles {
            assert!(text.contains(n), "{kt}: server.pem lacks {n:?}:\n{text}");
        }
    }
}

#[test]
fn certs_init_keeps_existing_ca_without_force() {
    let td = TempDir::new("cli_certs_force");
    let dir = td.join("certs");
    let certs = certs_init(&dir, &[]);
    let h = sha256_file(&certs.ca());
    let mut cmd = portcullis();
    cmd.arg("certs").arg("init").arg("--out").arg(&dir);
    // Without --force an existing CA is kept (the command may succeed, as an
    // idempotent init, or refuse), but never overwritten.
    let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
    assert_eq!(
        sha256_file(&certs.ca()),
        h,
        "ca.pem overwritten without --force: {}",
        o.describe()
    );
    certs_init(&dir, &["--force"]);
    assert_ne!(sha256_file(&certs.ca()), h, "--force must write a new CA");
}

#[test]
fn certs_validity_days_and_expired() {
    let td = TempDir::new("cli_certs_days");
    let certs = certs_init(&td.join("certs"), &["--days", "2"]);
    let client = certs.client_cert();
    let c = client.to_str().unwrap();
    let o = openssl(&["x509", "-in", c, "-noout", "-checkend", "86400"]);
    assert!(
        o.status.success(),
        "--days 2: must be valid for another day: {}",
        o.describe()
    );
    let o = openssl(&["x509", "-in", c, "-noout", "-checkend", "259200"]);
    assert!(
        !o.status.success(),
        "--days 2: must expire within 3 days: {}",
        o.describe()
    );

    let out = td.join("issued");
    fs::create_dir_all(&out).unwrap();
    let (pem, _) = certs_issue(&certs.dir, &out, "old", "old-client", &["--expired"]);
    let o = openssl(&[
        "x509",
        "-in",
        pem.to_str().unwrap(),
        "-noout",
        "-checkend",
        "0",
    ]);
    assert!(
        !o.status.success(),
        "--expired: the certificate must already be expired: {}",
        o.describe()
    );
    let (pem, _) = certs_issue(&certs.dir, &out, "fresh", "fresh-client", &[]);
    let o = openssl(&[
        "x509",
        "-in",
        pem.to_str().unwrap(),
        "-noout",
        "-checkend",
        "3600",
    ]);
    assert!(o.status.success(), "{}", o.describe());
    let o = openssl(&[
        "verify",
        "-CAfile",
        certs.ca().to_str().unwrap(),
        pem.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "issued cert must chain to the CA: {}",
        o.describe()
    );
}

#[test]
fn issued_server_cert_serves_its_dns_name() {
    let td = TempDir::new("cli_certs_server");
    let certs = certs_init(&td.join("certs"), &[]);
    let out = td.join("srv");
    fs::create_dir_all(&out).unwrap();
    let (pem, key) = certs_issue(
        &certs.dir,
        &out,
        "api",
        "api.internal",
        &[
            "--server",
            "--dns",
            "api.internal",
            "--key-type",
            "ecdsa-p384",
        ],
    );
    let text = x509_text(&pem);
    assert!(text.contains("DNS:api.internal"), "{text}");
    let echo = Echo::start(&td);
    let mut cfg = Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()]));
    cfg.listeners[0].certificate = pem;
    cfg.listeners[0].private_key = key;
    let gw = Gateway::start(&td, &certs, cfg);
    let port = gw.port();
    let r = curl(
        &gw.work,
        &certs,
        port,
        Auth::Client,
        &[&format!("https://api.internal:{port}/srv")],
        &["--resolve", &format!("api.internal:{port}:127.0.0.1")],
    );
    assert_eq!(r.code, 200, "{}", r.describe());
    assert_eq!(r.json()["path"], "/srv");
}
