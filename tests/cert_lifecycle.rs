//! Certificate lifecycle, against the real binary: expiry gauges in
//! `/metrics` checked against each certificate's notAfter as openssl reads
//! it, the start-up warning for a certificate within `warn_expiry`,
//! `certs status` and `doctor` with an expired certificate, a site's
//! certificate and key replaced on disk and served without SIGHUP (the
//! half-written pair refused and never served), and CRLs by URL from a real
//! HTTP server (python3 -m http.server): a revocation arrives by refresh, a
//! CRL signed by another CA is refused, the kept copy serves when the URL is
//! down at start.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// `portcullis certs crl` for the CA in `ca`, revoking `revoke`.
fn write_crl(ca: &CertDir, out: &Path, revoke: Option<&Path>, days: u32) {
    let mut cmd = portcullis();
    cmd.args(["certs", "crl", "--ca-dir"])
        .arg(&ca.dir)
        .arg("--out")
        .arg(out)
        .args(["--days", &days.to_string()]);
    if let Some(cert) = revoke {
        cmd.arg("--revoke").arg(cert);
    }
    let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
    assert!(o.status.success(), "certs crl: {}", o.describe());
}

/// Unix time of an openssl date field (`openssl x509 -enddate`, `openssl
/// crl -nextupdate`), converted by date(1): a second opinion on the dates
/// the gateway parsed itself.
fn openssl_date(args: &[&str], file: &Path) -> i64 {
    let out = Command::new("openssl")
        .args(args)
        .arg("-noout")
        .arg("-in")
        .arg(file)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let date = text
        .trim()
        .split_once('=')
        .expect("field=date")
        .1
        .to_string();
    let out = Command::new("date")
        .args(["-u", "-d", &date, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("date -d {date:?}: {out:?}"))
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn p(path: &Path) -> String {
    q(&path.to_string_lossy())
}

/// A gateway on a hand-written config: one `[[site]]` (`site` is the rest
/// of its table), an echo route, the admin listener; `extra` is appended.
struct Setup {
    td: TempDir,
    certs: CertDir,
    _echo: Echo,
    gw: ChildGuard,
    config: PathBuf,
    port: u16,
    admin: String,
}

fn config_text(
    certs: &CertDir,
    echo: &Echo,
    port: u16,
    admin: &str,
    site: &str,
    extra: &str,
) -> String {
    format!(
        "[server]\nworkers = 1\n\n[admin]\naddress = {}\n\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[site]]\nname = \"a\"\nserver_names = [\"localhost\"]\nclient_ca = [{}]\ndefault = true\n{site}\n\n\
         [[route]]\npath = \"/\"\nbackends = [{}]\n\n{extra}\n",
        q(admin),
        p(&certs.ca()),
        q(&echo.addr()),
    )
}

/// Starts `portcullis run`; None (and the child, for its log) when it exits.
fn start_gateway(td: &TempDir, config: &Path, port: u16) -> Result<ChildGuard, ChildGuard> {
    let mut cmd = portcullis();
    cmd.arg("run").arg("--config").arg(config);
    let mut gw = ChildGuard::spawn("gateway", cmd, td.path());
    let up = wait_until(Duration::from_secs(40), || {
        gw.count_log_lines(&["worker started"]) >= 1 || gw.try_exit().is_some()
    });
    if !up || gw.try_exit().is_some() {
        return Err(gw);
    }
    wait_accept(sockaddr(&format!("127.0.0.1:{port}")), &mut gw);
    Ok(gw)
}

/// `certs`: a CA made by the test, or None for a fresh one in the test's directory.
fn setup(
    name: &str,
    certs: Option<&CertDir>,
    site: impl FnOnce(&TempDir, &CertDir) -> String,
    extra: &str,
) -> Setup {
    let td = TempDir::new(name);
    let certs = match certs {
        Some(c) => c.clone(),
        None => certs_init(&td.join("certs"), &[]),
    };
    let echo = Echo::start(&td);
    let port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let site = site(&td, &certs);
    let config = config_file(&td);
    fs::write(
        &config,
        config_text(&certs, &echo, port, &admin, &site, extra),
    )
    .unwrap();
    let gw = match start_gateway(&td, &config, port) {
        Ok(gw) => gw,
        Err(gw) => gw.fail("the gateway did not start"),
    };
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
    /// One full handshake and GET with the default client certificate:
    /// the status, or the TLS alert that refused it.
    fn get(&self) -> Result<u16, String> {
        let cfg = client_config(&self.certs, ClientAuth::Default, &[]);
        let addr = sockaddr(&format!("127.0.0.1:{}", self.port));
        let stream = tls_connect(addr, cfg).map_err(|e| format!("{e}"))?;
        let mut conn = HttpConn::new(stream);
        conn.send(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("{e}"))?;
        conn.read_response()
            .map(|r| r.status)
            .map_err(|e| match rustls_error(&e) {
                Some(rustls::Error::AlertReceived(a)) => format!("{a:?}"),
                _ => format!("{e}"),
            })
    }

    /// The leaf certificate the gateway serves to a new handshake now.
    fn served_leaf(&self) -> Vec<u8> {
        let cfg = client_config(&self.certs, ClientAuth::Default, &[]);
        let s = tls_connect(sockaddr(&format!("127.0.0.1:{}", self.port)), cfg)
            .unwrap_or_else(|e| self.gw.fail(&format!("handshake: {e}")));
        s.conn.peer_certificates().expect("server certificates")[0].to_vec()
    }

    fn metrics(&self) -> String {
        admin_get(&self.admin, "/metrics").1
    }

    fn reloads(&self, trigger: &str, result: &str) -> f64 {
        let series =
            format!("portcullis_config_reloads_total{{trigger=\"{trigger}\",result=\"{result}\"}}");
        metric(&self.metrics(), &series).unwrap_or(-1.0)
    }
}

#[test]
fn expiry_gauges_match_each_certificates_not_after_and_an_expiring_one_is_logged() {
    let s = setup(
        "expiry-gauges",
        None,
        |td, certs| {
            // A 3-day server certificate (within the default warn_expiry
            // of 21 days), the CA's 825 days, a 30-day CRL.
            let (cert, key) = certs_issue(
                &certs.dir,
                &td.join("certs"),
                "short",
                "localhost",
                &["--server", "--dns", "localhost", "--days", "3"],
            );
            write_crl(certs, &td.join("clients.crl"), None, 30);
            format!(
                "certificate = {}\nprivate_key = {}\ncrl = [{}]",
                p(&cert),
                p(&key),
                p(&td.join("clients.crl"))
            )
        },
        "",
    );
    let body = s.metrics();
    let now = now_unix();
    let certs_dir = s.td.join("certs");
    for (kind, file) in [
        ("server", certs_dir.join("short.pem")),
        ("client_ca", s.certs.ca()),
    ] {
        let labels = format!("site=\"a\",file=\"{}\",kind=\"{kind}\"", file.display());
        let not_after = openssl_date(&["x509", "-enddate"], &file);
        let stamp = metric(
            &body,
            &format!("portcullis_cert_not_after_timestamp_seconds{{{labels}}}"),
        )
        .unwrap_or_else(|| {
            s.gw.fail(&format!("no not_after series for {labels}:\n{body}"))
        });
        assert_eq!(
            stamp as i64, not_after,
            "{kind}: notAfter as openssl reads it"
        );
        let left = metric(
            &body,
            &format!("portcullis_cert_expiry_seconds{{{labels}}}"),
        )
        .unwrap_or_else(|| s.gw.fail(&format!("no expiry series for {labels}")));
        assert!(
            (left as i64 - (not_after - now)).abs() <= 5,
            "{kind}: {left} s left, want about {}",
            not_after - now
        );
    }
    let crl = s.td.join("clients.crl");
    let next = openssl_date(&["crl", "-nextupdate"], &crl);
    let series = format!(
        "portcullis_crl_next_update_timestamp_seconds{{site=\"a\",file=\"{}\"}}",
        crl.display()
    );
    assert_eq!(
        metric(&body, &series).map(|v| v as i64),
        Some(next),
        "{body}"
    );
    // Computed at scrape time: a later scrape has fewer seconds left.
    let labels = format!(
        "portcullis_cert_expiry_seconds{{site=\"a\",file=\"{}\",kind=\"server\"}}",
        certs_dir.join("short.pem").display()
    );
    let first = metric(&body, &labels).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let later = metric(&s.metrics(), &labels).unwrap();
    assert!(later <= first - 2.0, "{first} then {later}");

    // The 3-day certificate is inside the default 21 days: one warning at
    // start naming it; the 825-day CA is not warned about.
    let warned = s.gw.log_lines(&["certificate lifecycle:"]);
    assert_eq!(warned.len(), 1, "{warned:?}\n{}", s.gw.output());
    assert!(
        warned[0].contains("WARN")
            && warned[0].contains("server certificate \"CN=localhost\" of site \"a\"")
            && (warned[0].contains("short.pem expires in 2.9 days")
                || warned[0].contains("short.pem expires in 3.0 days")),
        "{}",
        warned[0]
    );
}

/// The `certs status` row of `kind` for `file`.
fn row(out: &str, kind: &str, file: &Path) -> String {
    out.lines()
        .find(|l| l.starts_with(kind) && l.ends_with(&*file.to_string_lossy()))
        .unwrap_or_else(|| panic!("no {kind} row for {}:\n{out}", file.display()))
        .to_string()
}

#[test]
fn certs_status_and_doctor_list_every_certificate_and_fail_on_an_expired_one() {
    let td = TempDir::new("certs-status");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let config = config_file(&td);
    let status = |config: &Path| {
        let mut cmd = portcullis();
        cmd.args(["certs", "status", "--config"]).arg(config);
        run_cmd(&mut cmd, None, Duration::from_secs(30))
    };
    let site = format!(
        "certificate = {}\nprivate_key = {}",
        p(&certs.server_cert()),
        p(&certs.server_key())
    );
    let upstream = format!(
        "[[upstream]]\nname = \"up\"\naddresses = [\"127.0.0.1:9\"]\ntls = true\nserver_name = \"localhost\"\nca = [{}]\npkcs12 = {}\npkcs12_password = \"portcullis\"\n",
        p(&certs.ca()),
        p(&certs.client_p12())
    );
    fs::write(
        &config,
        config_text(&certs, &echo, free_port(), "127.0.0.1:9", &site, &upstream),
    )
    .unwrap();
    let o = status(&config);
    assert_eq!(o.code(), Some(0), "{}", o.describe());
    let out = o.stdout_str();
    for (kind, file) in [
        ("server", certs.server_cert()),
        ("client_ca", certs.ca()),
        ("upstream_ca", certs.ca()),
        ("upstream_client", certs.client_p12()),
    ] {
        let r = row(&out, kind, &file);
        assert!(
            r.contains(" ok ") && (r.contains(" 825.0 ") || r.contains(" 824.9 ")),
            "{r}"
        );
    }
    assert!(out.contains("0 expired, 0 expiring"), "{out}");

    // An expired server certificate: listed as such, exit status 1, and
    // doctor calls it fatal.
    let (old, old_key) = certs_issue(
        &certs.dir,
        &td.join("certs"),
        "old",
        "localhost",
        &["--server", "--dns", "localhost", "--expired"],
    );
    let site = format!("certificate = {}\nprivate_key = {}", p(&old), p(&old_key));
    fs::write(
        &config,
        config_text(&certs, &echo, free_port(), "127.0.0.1:9", &site, ""),
    )
    .unwrap();
    let o = status(&config);
    assert_eq!(o.code(), Some(1), "{}", o.describe());
    let out = o.stdout_str();
    let r = row(&out, "server", &old);
    assert!(r.contains("EXPIRED") && r.contains(" -1.0 "), "{r}");
    assert!(out.contains("1 expired"), "{out}");
    assert!(
        o.describe().contains("1 certificate or CRL expired"),
        "{}",
        o.describe()
    );

    let mut cmd = portcullis();
    cmd.args(["doctor", "--config"]).arg(&config);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    assert_eq!(o.code(), Some(1), "{}", o.describe());
    let line = find_line(
        &o.stdout_str(),
        &["[FAIL]", "server certificate", "EXPIRED"],
    );
    assert!(line.is_some(), "{}", o.describe());
}

#[test]
fn a_replaced_certificate_and_key_are_served_without_sighup() {
    let s = setup(
        "file-watch",
        None,
        |td, certs| {
            // Copies, so the test can overwrite them in place.
            let (cert, key) = (td.join("site.pem"), td.join("site.key"));
            fs::copy(certs.server_cert(), &cert).unwrap();
            fs::copy(certs.server_key(), &key).unwrap();
            format!("certificate = {}\nprivate_key = {}", p(&cert), p(&key))
        },
        "",
    );
    assert!(
        s.gw.wait_log_line(
            &["watching the certificate, key and CRL files"],
            Duration::from_secs(5)
        )
        .is_some(),
        "watch_files is on by default:\n{}",
        s.gw.output()
    );
    let old_leaf = s.served_leaf();
    let (new_cert, new_key) = certs_issue(
        &s.certs.dir,
        &s.td.join("certs"),
        "renewed",
        "localhost",
        // 100 days: its notAfter is the file's earliest, unlike the old pair's.
        &["--server", "--dns", "localhost", "--days", "100"],
    );
    let new_leaf = load_certs(&new_cert)[0].to_vec();
    assert_ne!(old_leaf, new_leaf);

    // The certificate first: with the old key it is a broken pair, refused
    // with SIGHUP's refusal line, and the old pair keeps serving.
    fs::write(s.td.join("site.pem"), fs::read(&new_cert).unwrap()).unwrap();
    let refused = s.gw.wait_log_line(
        &[
            "reload refused",
            "trigger=\"file_watch\"",
            "still serving the previous config",
        ],
        Duration::from_secs(10),
    );
    let refused = refused.unwrap_or_else(|| s.gw.fail("the half-written pair was not refused"));
    assert!(
        refused.contains("site.key"),
        "names the key file: {refused}"
    );
    for _ in 0..3 {
        assert_eq!(s.served_leaf(), old_leaf, "a broken pair is never served");
        assert_eq!(s.get(), Ok(200));
    }
    assert_eq!(s.reloads("file_watch", "refused"), 1.0);

    // Then the key: the pair loads, without SIGHUP.
    fs::write(s.td.join("site.key"), fs::read(&new_key).unwrap()).unwrap();
    let reloaded = wait_until(Duration::from_secs(10), || {
        s.gw.count_log_lines(&["config reloaded", "trigger=\"file_watch\""]) >= 1
    });
    assert!(reloaded, "no file-triggered reload:\n{}", s.gw.output());
    assert_eq!(s.served_leaf(), new_leaf);
    assert_eq!(s.get(), Ok(200));
    assert_eq!(s.reloads("file_watch", "done"), 1.0);
    assert_eq!(s.reloads("signal", "done"), 0.0);
    // The expiry gauges follow the new generation: the file's earliest
    // notAfter, here the CA's (the chain file holds it after the leaf).
    let renewed_not_after = openssl_date(&["x509", "-enddate"], &new_cert)
        .min(openssl_date(&["x509", "-enddate"], &s.certs.ca()));
    let series = format!(
        "portcullis_cert_not_after_timestamp_seconds{{site=\"a\",file=\"{}\",kind=\"server\"}}",
        s.td.join("site.pem").display()
    );
    assert_eq!(
        metric(&s.metrics(), &series).map(|v| v as i64),
        Some(renewed_not_after)
    );
}

/// `python3 -m http.server` serving `dir` on a fresh port.
fn http_server(td: &TempDir, dir: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--directory",
    ])
    .arg(dir);
    let mut child = ChildGuard::spawn("http-server", cmd, td.path());
    wait_accept(sockaddr(&format!("127.0.0.1:{port}")), &mut child);
    (child, port)
}

fn crl_site(url: &str) -> impl FnOnce(&TempDir, &CertDir) -> String + '_ {
    move |_, certs| {
        format!(
            "certificate = {}\nprivate_key = {}\ncrl_urls = [{}]",
            p(&certs.server_cert()),
            p(&certs.server_key()),
            q(url)
        )
    }
}

#[test]
fn a_crl_by_url_revokes_a_client_after_the_refresh_and_a_foreign_crl_is_refused() {
    let td = TempDir::new("crl-url-www");
    let www = td.join("www");
    fs::create_dir_all(&www).unwrap();
    // The start-up fetch must find the CRL: the CA and its first (empty)
    // CRL exist before the gateway starts.
    let (server, http_port) = http_server(&td, &www);
    let url = format!("http://127.0.0.1:{http_port}/clients.crl");
    let ca_dir = td.join("ca");
    let certs = certs_init(&ca_dir, &[]);
    write_crl(&certs, &www.join("clients.crl"), None, 30);
    let s = setup(
        "crl-url",
        Some(&certs),
        |_, _| {
            format!(
                "certificate = {}\nprivate_key = {}\ncrl_urls = [{}]",
                p(&certs.server_cert()),
                p(&certs.server_key()),
                q(&url)
            )
        },
        &format!(
            "[tls]\ncrl_refresh = \"1s\"\n\n[state]\ndir = {}\n",
            p(&td.join("state"))
        ),
    );
    let _ = &server;
    assert!(
        s.gw.log_lines(&["CRL fetched", "clients.crl"]).len() == 1,
        "fetched at start:\n{}",
        s.gw.output()
    );
    assert_eq!(s.get(), Ok(200));
    let kept: Vec<_> = fs::read_dir(td.join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");

    // A CRL signed by another CA: refused, the kept copy stays, the client
    // is still served.
    let impostor = certs_init(&td.join("impostor"), &[]);
    let foreign = td.join("foreign.crl");
    write_crl(&impostor, &foreign, None, 30);
    let before = fs::read(&kept[0]).unwrap();
    fs::copy(&foreign, www.join("clients.crl")).unwrap();
    let refused = s.gw.wait_log_line(
        &[
            "CRL fetch failed; keeping the last good copy",
            "not signed by any of the site's client CAs",
        ],
        Duration::from_secs(10),
    );
    assert!(refused.is_some(), "{}", s.gw.output());
    assert_eq!(fs::read(&kept[0]).unwrap(), before, "the kept copy stays");
    assert_eq!(s.get(), Ok(200));

    // The CA revokes the client: the next refresh fetches it, reloads, and
    // a new handshake is refused.
    write_crl(
        &certs,
        &www.join("clients.crl"),
        Some(&certs.client_cert()),
        30,
    );
    let revoked = wait_until(Duration::from_secs(10), || {
        s.gw.count_log_lines(&["config reloaded", "trigger=\"crl_url\""]) >= 1
    });
    assert!(revoked, "no reload after the new CRL:\n{}", s.gw.output());
    assert_eq!(s.get(), Err("CertificateRevoked".to_string()));
    assert_eq!(s.reloads("crl_url", "done"), 1.0);
    assert_ne!(fs::read(&kept[0]).unwrap(), before, "the new CRL is kept");
    let series =
        format!("portcullis_crl_next_update_timestamp_seconds{{site=\"a\",file=\"{url}\"}}");
    assert!(metric(&s.metrics(), &series).is_some(), "{}", s.metrics());
}

#[test]
fn with_the_crl_url_down_at_start_the_kept_copy_is_used() {
    let td = TempDir::new("crl-url-down");
    let www = td.join("www");
    fs::create_dir_all(&www).unwrap();
    let certs = certs_init(&td.join("ca"), &[]);
    let echo = Echo::start(&td);
    let (port, admin) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let state = td.join("state");
    let (mut server, http_port) = http_server(&td, &www);
    let url = format!("http://127.0.0.1:{http_port}/clients.crl");
    let site = crl_site(&url)(&td, &certs);
    let extra = format!("[state]\ndir = {}\n", p(&state));
    let config = config_file(&td);
    fs::write(
        &config,
        config_text(&certs, &echo, port, &admin, &site, &extra),
    )
    .unwrap();

    // Never fetched and the URL answers 404: no copy, so no start (a
    // client CA with a CRL is never served as if it had none).
    let refused = match start_gateway(&td, &config, port) {
        Ok(gw) => gw.fail("started without any copy of its CRL"),
        Err(gw) => gw,
    };
    let out = refused.output();
    assert!(out.contains("HTTP 404"), "{out}");
    assert!(out.contains("no copy of this CRL yet"), "{out}");

    // The CRL revoking the client is published and fetched once...
    write_crl(
        &certs,
        &www.join("clients.crl"),
        Some(&certs.client_cert()),
        30,
    );
    let mut gw = start_gateway(&td, &config, port).unwrap_or_else(|gw| gw.fail("did not start"));
    gw.sigterm();
    assert!(gw.wait_exit(Duration::from_secs(15)).is_some());
    // ...then the server goes away: the next start uses the kept copy.
    server.sigterm();
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
    let gw = start_gateway(&td, &config, port)
        .unwrap_or_else(|gw| gw.fail("did not start on the kept copy"));
    let line = gw.wait_log_line(
        &["CRL fetch failed at start; using the copy kept on disk"],
        Duration::from_secs(5),
    );
    assert!(line.is_some(), "{}", gw.output());
    let s = Setup {
        td,
        certs,
        _echo: echo,
        gw,
        config,
        port,
        admin,
    };
    assert_eq!(s.get(), Err("CertificateRevoked".to_string()));
    let _ = &s.config;
}
