//! OCSP stapling against real parts: `openssl ocsp` as the responder (with
//! its index file as the CA's database), certificates made by `portcullis
//! certs` and by `openssl x509` (for the AIA extension and a delegated
//! responder certificate), `openssl s_client -status` as the client that
//! shows the staple, and `/metrics`.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `openssl ocsp` answering for the CA from `index` on 127.0.0.1:port.
struct Responder {
    _proc: ChildGuard,
}

impl Responder {
    fn start(
        td: &TempDir,
        port: u16,
        index: &Path,
        signer: (&Path, &Path),
        ca: &Path,
    ) -> Responder {
        let mut cmd = Command::new("openssl");
        cmd.arg("ocsp")
            .arg("-index")
            .arg(index)
            .arg("-port")
            .arg(port.to_string())
            .arg("-rsigner")
            .arg(signer.0)
            .arg("-rkey")
            .arg(signer.1)
            .arg("-CA")
            .arg(ca)
            // nextUpdate 5 minutes ahead: the gateway's own refresh
            // (ocsp_refresh = "1s" below) is what paces the test.
            .arg("-nmin")
            .arg("5")
            .arg("-ignore_err");
        let proc = ChildGuard::spawn("ocsp-responder", cmd, td.path());
        // Not wait_accept: openssl 3.0's responder stops answering after a
        // connection that closes without a request (the probe). It says
        // this on stderr once its socket listens.
        if proc
            .wait_log_line(
                &["waiting for OCSP client connections"],
                Duration::from_secs(10),
            )
            .is_none()
        {
            proc.fail("openssl ocsp did not start listening");
        }
        Responder { _proc: proc }
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
    assert!(o.status.success(), "openssl {args:?}: {}", o.describe());
}

/// The serial of a PEM certificate as `openssl x509 -serial` prints it (hex).
fn serial_of(cert: &Path) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["x509", "-noout", "-serial", "-in"]).arg(cert);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(10));
    o.stdout_str()
        .trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("no serial: {}", o.describe()))
        .to_string()
}

/// Writes the responder's index: the certificate valid, or revoked. openssl
/// re-reads the index when its mtime changes (one-second resolution), so
/// a rewrite first waits for the next second.
fn write_index(index: &Path, serial: &str, revoked: bool) {
    let line = if revoked {
        format!("R\t491231235959Z\t251201000000Z\t{serial}\tunknown\t/CN=localhost\n")
    } else {
        format!("V\t491231235959Z\t\t{serial}\tunknown\t/CN=localhost\n")
    };
    if index.exists() {
        std::thread::sleep(Duration::from_millis(1100));
    }
    fs::write(index, line).unwrap();
    fs::write(index.with_extension("txt.attr"), "unique_subject = no\n").unwrap();
}

/// An openssl-made certificate from the `certs init` CA, with `ext` lines.
fn openssl_leaf(certs: &CertDir, stem: &str, cn: &str, ext: &str) -> (PathBuf, PathBuf) {
    let dir = &certs.dir;
    fs::write(dir.join(format!("{stem}.ext")), ext).unwrap();
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{stem}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &format!("{stem}.csr"),
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &format!("{stem}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("0x{:x}", 0x5ca1ab1e_u64 + stem.len() as u64),
            "-days",
            "30",
            "-extfile",
            &format!("{stem}.ext"),
            "-out",
            &format!("{stem}-leaf.pem"),
        ],
        dir,
    );
    (
        dir.join(format!("{stem}-leaf.pem")),
        dir.join(format!("{stem}.key")),
    )
}

/// What `openssl s_client -status` saw stapled on a full mTLS handshake
/// that also got its 200: "good", "revoked" or "none".
fn stapled(gw: &Gateway) -> String {
    stapled_with(gw, &[])
}

fn stapled_with(gw: &Gateway, extra: &[&str]) -> String {
    let c = &gw.certs;
    let (cert, key, ca) = (c.client_cert(), c.client_key(), c.ca());
    let mut args = extra.to_vec();
    args.extend([
        "-status",
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-CAfile",
        ca.to_str().unwrap(),
        "-alpn",
        "http/1.1",
    ]);
    let o = s_client(
        gw.port(),
        &args,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let out = o.stdout_str();
    assert!(
        out.contains("HTTP/1.1 200"),
        "the handshake or request failed:\n{}",
        o.describe()
    );
    if out.contains("OCSP response: no response sent") {
        return "none".into();
    }
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Cert Status: "))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no OCSP verdict in s_client output:\n{}", o.describe()))
}

fn wait_stapled(gw: &Gateway, want: &str, within: Duration) {
    let mut last = String::new();
    if !wait_until(within, || {
        last = stapled(gw);
        last == want
    }) {
        gw.fail(&format!(
            "staple never became {want:?} (last seen {last:?})"
        ));
    }
}

/// The gateway config with stapling lines added to its listener.
fn start_gateway(td: &TempDir, certs: &CertDir, cfg: Config, ocsp_lines: &str) -> Gateway {
    let text = cfg
        .render()
        .replacen("\n[limits]\n", &format!("{ocsp_lines}\n\n[limits]\n"), 1);
    Gateway::start_text(td, certs, cfg, &text)
}

fn admin_metrics(admin: &str) -> String {
    let (status, body) = admin_get(admin, "/metrics");
    assert_eq!(status, 200);
    body
}

#[test]
fn staples_good_from_the_aia_responder_via_a_delegated_signer_then_revoked() {
    let td = TempDir::new("ocsp-aia");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let port = free_port();
    let (leaf, key) = openssl_leaf(
        &certs,
        "aia",
        "localhost",
        &format!(
            "subjectAltName=DNS:localhost\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nauthorityInfoAccess=OCSP;URI:http://127.0.0.1:{port}/\n"
        ),
    );
    // A responder certificate the CA delegated OCSP signing to (RFC 6960 4.2.2.2).
    let (signer, signer_key) = openssl_leaf(
        &certs,
        "responder",
        "OCSP responder",
        "keyUsage=digitalSignature\nextendedKeyUsage=OCSPSigning\n",
    );
    let chain = certs.dir.join("aia.pem");
    fs::write(
        &chain,
        [fs::read(&leaf).unwrap(), fs::read(certs.ca()).unwrap()].concat(),
    )
    .unwrap();
    let index = td.join("index.txt");
    let serial = serial_of(&leaf);
    write_index(&index, &serial, false);
    let _responder = Responder::start(&td, port, &index, (&signer, &signer_key), &certs.ca());

    let admin = format!("127.0.0.1:{}", free_port());
    let mut cfg = Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()]));
    cfg.listeners[0].certificate = chain;
    cfg.listeners[0].private_key = key;
    cfg.admin = Some(admin.clone());
    let gw = start_gateway(
        &td,
        &certs,
        cfg,
        "ocsp_stapling = \"on\"\nocsp_refresh = \"1s\"",
    );
    wait_stapled(&gw, "good", Duration::from_secs(15));
    // TLS 1.2 carries it in a CertificateStatus message, 1.3 in the
    // certificate entry: both.
    assert_eq!(stapled_with(&gw, &["-tls1_2"]), "good");
    assert_eq!(stapled_with(&gw, &["-tls1_3"]), "good");
    assert!(
        gw.proc
            .wait_log_line(
                &[
                    "OCSP response stapled",
                    "status good",
                    "signed by CN=OCSP responder"
                ],
                Duration::from_secs(5)
            )
            .is_some(),
        "no stapling log line naming the delegated signer:\n{}",
        gw.proc.output()
    );
    let m = admin_metrics(&admin);
    assert_eq!(
        metric(
            &m,
            "portcullis_ocsp_staple_status{site=\"listener[0]\",status=\"good\"}"
        ),
        Some(1.0),
        "{m}"
    );
    let age = metric(
        &m,
        "portcullis_ocsp_staple_age_seconds{site=\"listener[0]\"}",
    )
    .unwrap_or(-1.0);
    assert!((0.0..60.0).contains(&age), "staple age {age}:\n{m}");
    assert!(
        metric(
            &m,
            "portcullis_ocsp_staple_next_update_timestamp_seconds{site=\"listener[0]\"}"
        )
        .is_some(),
        "{m}"
    );

    // The CA revokes the certificate: the next refresh staples "revoked"
    // (and the good response held before is not served any more).
    write_index(&index, &serial, true);
    wait_stapled(&gw, "revoked", Duration::from_secs(20));
    assert!(gw
        .proc
        .wait_log_line(&["REVOKED"], Duration::from_secs(5))
        .is_some());
    let m = admin_metrics(&admin);
    assert_eq!(
        metric(
            &m,
            "portcullis_ocsp_staple_status{site=\"listener[0]\",status=\"revoked\"}"
        ),
        Some(1.0),
        "{m}"
    );
}

#[test]
fn responder_down_at_start_then_up_and_the_staple_survives_its_loss_and_a_reload() {
    let td = TempDir::new("ocsp-down");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let port = free_port();
    let index = td.join("index.txt");
    write_index(&index, &serial_of(&certs.server_cert()), false);
    let admin = format!("127.0.0.1:{}", free_port());
    let mut cfg = Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()]));
    cfg.admin = Some(admin.clone());
    let url = format!("http://127.0.0.1:{port}/ocsp");
    let gw = start_gateway(
        &td,
        &certs,
        cfg,
        &format!("ocsp_stapling = \"on\"\nocsp_url = \"{url}\"\nocsp_refresh = \"1s\""),
    );

    // Nothing listens at the responder's address: handshakes go on unstapled.
    assert!(
        gw.proc
            .wait_log_line(
                &["OCSP fetch failed", "handshakes go out without a staple"],
                Duration::from_secs(10)
            )
            .is_some(),
        "{}",
        gw.proc.output()
    );
    assert_eq!(stapled(&gw), "none");
    let failed = format!(
        "portcullis_ocsp_fetches_total{{site=\"listener[0]\",responder=\"{url}\",result=\"failed\"}}"
    );
    let m = admin_metrics(&admin);
    assert!(metric(&m, &failed).unwrap_or(0.0) >= 1.0, "{m}");
    assert_eq!(
        metric(
            &m,
            "portcullis_ocsp_staple_status{site=\"listener[0]\",status=\"none\"}"
        ),
        Some(1.0),
        "{m}"
    );

    // The responder comes up (signing as the CA itself): the staple appears.
    let responder = Responder::start(
        &td,
        port,
        &index,
        (&certs.ca(), &certs.ca_key()),
        &certs.ca(),
    );
    wait_stapled(&gw, "good", Duration::from_secs(15));

    // It goes away again, and the config is reloaded: the response in hand
    // is kept (same certificate), fetch failures are logged meanwhile.
    drop(responder);
    let failures_before = gw
        .proc
        .count_log_lines(&["OCSP fetch failed", "keeping the good response"]);
    let reloads = gw.proc.count_log_lines(&["config reloaded"]);
    gw.proc.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || {
        gw.proc.count_log_lines(&["config reloaded"]) > reloads
    }));
    assert!(
        wait_until(Duration::from_secs(10), || {
            gw.proc
                .count_log_lines(&["OCSP fetch failed", "keeping the good response"])
                > failures_before
        }),
        "{}",
        gw.proc.output()
    );
    assert_eq!(stapled(&gw), "good");
}

#[test]
fn config_refuses_stapling_it_cannot_do() {
    let td = TempDir::new("ocsp-config");
    let certs = certs_init(&td.join("certs"), &[]);
    let cfg = Config::new(&certs).route(RouteCfg::new("/", &["127.0.0.1:9"]));
    let check = |lines: &str| {
        let path = td.join(&format!("c{}.toml", lines.len()));
        let text = cfg
            .render()
            .replacen("\n[limits]\n", &format!("{lines}\n\n[limits]\n"), 1);
        fs::write(&path, &text).unwrap();
        let mut cmd = portcullis();
        cmd.arg("check").arg("--config").arg(&path);
        let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
        (o.status.success(), o.describe(), text)
    };
    // `certs init` certificates name no responder.
    let (ok, out, _) = check("ocsp_stapling = \"on\"");
    assert!(
        !ok && out.contains("names no OCSP responder") && out.contains("set ocsp_url"),
        "{out}"
    );
    let (ok, out, text) = check("ocsp_stapling = \"on\"\nocsp_url = \"https://ocsp.example/\"");
    assert!(
        !ok && out.contains("ocsp_url") && out.contains("not an http:// URL"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            ":{}: listener[0].ocsp_url",
            line_of(&text, "ocsp_url")
        )),
        "{out}"
    );
    let (ok, out, _) = check("ocsp_url = \"http://127.0.0.1:1/\"");
    assert!(!ok && out.contains("only with ocsp_stapling"), "{out}");
    let (ok, out, _) = check("ocsp_stapling = \"on\"\nocsp_url = \"http://127.0.0.1:1/\"");
    assert!(ok, "{out}");
}
