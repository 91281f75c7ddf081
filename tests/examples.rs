//! Drives each example config in `examples/` end to end: the certificates
//! come from `examples/setup.sh` (which runs `portcullis certs`), the config
//! file is the example itself with its ports moved to free ones, the backends
//! are the real echo backend (plain, and TLS demanding a client certificate),
//! and the clients are curl and rustls.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One example running: its certificates, backends and gateway.
pub struct Example {
    pub td: TempDir,
    pub certs: PathBuf,
    pub port: u16,
    pub config: PathBuf,
    pub gateway: ChildGuard,
    _echo: ChildGuard,
    _tls_echo: ChildGuard,
}

/// The example's text with its fixed ports replaced by free ones.
pub struct Ports {
    pub gateway: u16,
    pub echo: u16,
    pub tls_echo: u16,
}

impl Ports {
    pub fn free() -> Ports {
        Ports {
            gateway: free_port(),
            echo: free_port(),
            tls_echo: free_port(),
        }
    }

    pub fn apply(&self, text: &str) -> String {
        text.replace("127.0.0.1:8443", &format!("127.0.0.1:{}", self.gateway))
            .replace("127.0.0.1:9000", &format!("127.0.0.1:{}", self.echo))
            .replace("127.0.0.1:9443", &format!("127.0.0.1:{}", self.tls_echo))
    }
}

pub fn example_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.toml"));
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.lines().any(|l| l.starts_with("# Run:")),
        "{name}.toml must say at the top how to run it"
    );
    text
}

/// Runs examples/setup.sh into `dir` with the binary under test.
pub fn make_certs(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/setup.sh");
    let out = run_cmd(
        Command::new("sh")
            .arg(script)
            .arg(dir)
            .env("PORTCULLIS", bin()),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(out.code(), Some(0), "examples/setup.sh: {}", out.describe());
}

impl Example {
    /// Starts `name` with `edit` applied to its (port-adjusted) text.
    pub fn start(name: &str, edit: impl FnOnce(String, &Path) -> String) -> Example {
        Example::start_env(name, edit, &[("SITE_B_P12_PASSWORD", "portcullis")])
    }

    pub fn start_env(
        name: &str,
        edit: impl FnOnce(String, &Path) -> String,
        env: &[(&str, &str)],
    ) -> Example {
        let (td, certs, ports, config) = Example::prepare(name, edit);
        let mut echo = ChildGuard::spawn(
            "echo",
            {
                let mut c = portcullis();
                c.args(["echo", "--workers", "1", "--listen"])
                    .arg(format!("127.0.0.1:{}", ports.echo));
                c
            },
            td.path(),
        );
        let u = certs.join("upstream");
        let mut tls_echo = ChildGuard::spawn(
            "tls-echo",
            {
                let mut c = portcullis();
                c.args(["echo", "--workers", "1", "--listen"])
                    .arg(format!("127.0.0.1:{}", ports.tls_echo))
                    .arg("--tls-cert")
                    .arg(u.join("server.pem"))
                    .arg("--tls-key")
                    .arg(u.join("server.key"))
                    .arg("--client-ca")
                    .arg(u.join("ca.pem"));
                c
            },
            td.path(),
        );
        wait_accept(([127, 0, 0, 1], ports.echo).into(), &mut echo);
        wait_accept(([127, 0, 0, 1], ports.tls_echo).into(), &mut tls_echo);
        let mut cmd = portcullis();
        cmd.arg("run").arg("--config").arg(&config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut gateway = ChildGuard::spawn("gateway", cmd, td.path());
        wait_accept(([127, 0, 0, 1], ports.gateway).into(), &mut gateway);
        Example {
            td,
            certs,
            port: ports.gateway,
            config,
            gateway,
            _echo: echo,
            _tls_echo: tls_echo,
        }
    }

    /// Certificates and the config file, nothing started.
    pub fn prepare(
        name: &str,
        edit: impl FnOnce(String, &Path) -> String,
    ) -> (TempDir, PathBuf, Ports, PathBuf) {
        let td = TempDir::new(&format!("example-{name}"));
        let certs = td.join("certs");
        make_certs(&certs);
        let ports = Ports::free();
        let config = td.join(&format!("{name}.toml"));
        fs::write(&config, edit(ports.apply(&example_text(name)), &certs)).unwrap();
        (td, certs, ports, config)
    }

    /// curl to https://HOST:PORT/PATH (HOST resolved to 127.0.0.1), trusting
    /// `ca` (e.g. "a/ca.pem") and presenting `client` (e.g. "a/client") if any.
    pub fn curl(
        &self,
        host: &str,
        path: &str,
        ca: &str,
        client: Option<&str>,
        extra: &[&str],
    ) -> Curl {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
            .arg("--resolve")
            .arg(format!("{host}:{}:127.0.0.1", self.port))
            .arg("--cacert")
            .arg(self.certs.join(ca));
        if let Some(c) = client {
            cmd.arg("--cert")
                .arg(self.certs.join(format!("{c}.pem")))
                .arg("--key")
                .arg(self.certs.join(format!("{c}.key")));
        }
        cmd.args(extra)
            .arg(format!("https://{host}:{}{path}", self.port));
        let out = run_cmd(&mut cmd, None, Duration::from_secs(30));
        let stdout = out.stdout_str();
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", stdout.as_str()));
        Curl {
            exit: out.code().unwrap_or(-1),
            code: code.trim().parse().unwrap_or(0),
            body: body.to_string(),
            stderr: out.stderr.clone(),
        }
    }

    pub fn log_has(&self, needles: &[&str]) -> bool {
        self.gateway
            .wait_log_line(needles, Duration::from_secs(5))
            .is_some()
    }
}

#[derive(Debug)]
pub struct Curl {
    pub exit: i32,
    pub code: u16,
    pub body: String,
    pub stderr: String,
}

impl Curl {
    pub fn json(&self) -> Value {
        parse_json(self.body.as_bytes())
    }

    /// The echo backend's view of a header (lowercase name).
    pub fn echoed(&self, header: &str) -> Option<String> {
        self.json()["headers"][header].as_str().map(str::to_string)
    }

    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!((self.exit, self.code), (0, 200), "{self:#?}");
        self
    }

    #[track_caller]
    pub fn error(&self, status: u16, code: &str) {
        assert_eq!(self.code, status, "{self:#?}");
        assert_error_json(self.body.as_bytes(), status, code);
    }

    /// The handshake was refused: curl failed before any HTTP status.
    #[track_caller]
    pub fn refused(&self, alert: &str) {
        assert!(
            self.exit != 0 && self.code == 0,
            "expected a refused handshake: {self:#?}"
        );
        assert!(
            self.stderr.to_ascii_lowercase().contains(alert),
            "curl should name the alert {alert:?}: {self:#?}"
        );
    }
}

/// openssl's SHA-256 fingerprint of a PEM certificate, as "AB:CD:...".
fn openssl_fingerprint(pem: &Path) -> String {
    let out = run_cmd(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(pem),
        None,
        Duration::from_secs(10),
    );
    let text = out.stdout_str();
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_string())
        .unwrap_or_else(|| panic!("openssl fingerprint: {}", out.describe()))
}

fn der_of(pem: &Path) -> Vec<u8> {
    load_certs(pem).remove(0).to_vec()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 1 {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

// --- sites by SNI -------------------------------------------------------------

#[test]
fn sites_by_sni_each_with_its_own_certificate_ca_and_mode() {
    let ex = Example::start("sites", |t, _| t);
    // Site A, mandatory, its own CA: alice in; bob (CA B) refused; mallory revoked.
    let r = ex.curl("a.example", "/hello", "a/ca.pem", Some("a/client"), &[]);
    r.ok();
    assert_eq!(r.json()["host"], format!("a.example:{}", ex.port));
    ex.curl("a.example", "/", "a/ca.pem", Some("b/client"), &[])
        .refused("unknown ca");
    assert!(ex.log_has(&[
        "client certificate refused",
        "sni=\"a.example\"",
        "site=\"a\"",
        "not signed by a trusted CA"
    ]));
    ex.curl("a.example", "/", "a/ca.pem", Some("a/mallory"), &[])
        .refused("revoked");
    assert!(ex.log_has(&["client certificate refused", "reason=certificate revoked"]));
    ex.curl("a.example", "/", "a/ca.pem", None, &[])
        .refused("certificate required");
    // Wildcard name of site A.
    ex.curl("api.a.example", "/", "a/ca.pem", Some("a/client"), &["-k"])
        .ok();

    // Site B, optional, served from PKCS#12: no certificate is fine on /public/,
    // but /private/ requires one (401); bob's works there; alice's CA is not B's.
    ex.curl("b.example", "/public/x", "b/ca.pem", None, &[])
        .ok();
    ex.curl("b.example", "/private/x", "b/ca.pem", None, &[])
        .error(401, "PCS.4010");
    ex.curl("b.example", "/private/x", "b/ca.pem", Some("b/client"), &[])
        .ok();
    // The same client identity from PKCS#12, as curl's --cert-type P12 presents it.
    let p12 = format!("{}:portcullis", ex.certs.join("b/client.p12").display());
    ex.curl(
        "b.example",
        "/private/x",
        "b/ca.pem",
        None,
        &["--cert-type", "P12", "--cert", &p12],
    )
    .ok();
    ex.curl("b.example", "/public/x", "b/ca.pem", Some("a/client"), &[])
        .refused("unknown ca");
    // Site B's routes are not site A's: "/" exists only on A.
    ex.curl("b.example", "/", "b/ca.pem", None, &[])
        .error(404, "PCS.4040");

    // One certificate must not reach another site's routes: SNI a, Host b -> 421.
    ex.curl(
        "a.example",
        "/public/x",
        "a/ca.pem",
        Some("a/client"),
        &["-H", "Host: b.example"],
    )
    .error(421, "PCS.4210");

    // Unknown SNI goes to the default site (A): its certificate, its CA.
    let r = ex.curl(
        "unknown.example",
        "/",
        "a/ca.pem",
        Some("a/client"),
        &["-k"],
    );
    r.ok();
    // No SNI at all (an IP literal): the default site too.
    let r = ex.curl("127.0.0.1", "/", "a/ca.pem", Some("a/client"), &["-k"]);
    r.ok();
}

#[test]
fn unknown_server_name_is_refused_without_a_default_site() {
    let ex = Example::start("sites", |t, _| {
        t.replace("default = true", "default = false")
    });
    ex.curl(
        "unknown.example",
        "/",
        "a/ca.pem",
        Some("a/client"),
        &["-k"],
    )
    .refused("unrecognized name");
    assert!(ex.log_has(&["matches no site", "sni=\"unknown.example\""]));
    ex.curl("a.example", "/", "a/ca.pem", Some("a/client"), &[])
        .ok();
}

/// A trailing dot in the SNI (RFC 6066 forbids it, some clients send it, and
/// rustls drops it) selects the site of the name without it, end to end: the
/// ClientHello parser drops one dot (as rustls does) and site selection trims
/// dots too, so this also passes with either one alone. curl strips the dot
/// itself, so openssl s_client sends it.
#[test]
fn a_trailing_dot_in_the_server_name_selects_the_same_site() {
    let ex = Example::start("sites", |t, _| {
        t.replace("default = true", "default = false")
    });
    let file = |f: &str| ex.certs.join(f).display().to_string();
    let (ca, cert, key) = (file("a/ca.pem"), file("a/client.pem"), file("a/client.key"));
    let out = s_client(
        ex.port,
        &[
            "-servername",
            "a.example.",
            "-CAfile",
            &ca,
            "-cert",
            &cert,
            "-key",
            &key,
        ],
        b"GET /hello HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    );
    assert!(
        out.stdout_str().contains("HTTP/1.1 200"),
        "{}",
        out.describe()
    );
}

#[test]
fn pkcs12_password_problems_are_named_at_start() {
    let (td, _certs, _ports, config) = Example::prepare("sites", |t, _| t);
    let run = |env: Option<&str>| {
        let mut cmd = portcullis();
        cmd.arg("check").arg("--config").arg(&config);
        cmd.env_remove("SITE_B_P12_PASSWORD");
        if let Some(v) = env {
            cmd.env("SITE_B_P12_PASSWORD", v);
        }
        run_cmd(&mut cmd, None, Duration::from_secs(20))
    };
    let wrong = run(Some("not-the-password"));
    assert_eq!(wrong.code(), Some(2), "{}", wrong.describe());
    assert!(
        wrong.stderr.contains("site \"b\"")
            && wrong.stderr.contains("server.p12: wrong PKCS#12 password"),
        "{}",
        wrong.describe()
    );
    let unset = run(None);
    assert_eq!(unset.code(), Some(2), "{}", unset.describe());
    assert!(
        unset.stderr.contains("SITE_B_P12_PASSWORD is not set"),
        "{}",
        unset.describe()
    );
    let right = run(Some("portcullis"));
    assert_eq!(right.code(), Some(0), "{}", right.describe());
    drop(td);
}

// --- per-route client policy --------------------------------------------------

#[test]
fn route_policy_requires_and_allowlists_client_certificates() {
    let ex = Example::start("policy", |t, _| t);
    ex.curl("a.example", "/open/", "a/ca.pem", None, &[]).ok();
    ex.curl("a.example", "/members/", "a/ca.pem", None, &[])
        .error(401, "PCS.4010");
    ex.curl("a.example", "/members/", "a/ca.pem", Some("a/client"), &[])
        .ok();
    // Subject CN allowlist.
    ex.curl("a.example", "/alice/", "a/ca.pem", Some("a/client"), &[])
        .ok();
    ex.curl("a.example", "/alice/", "a/ca.pem", Some("a/workload"), &[])
        .error(403, "PCS.4030");
    ex.curl("a.example", "/alice/", "a/ca.pem", None, &[])
        .error(401, "PCS.4010");
    // SPIFFE ID (SAN URI) allowlist with a prefix entry.
    ex.curl("a.example", "/spiffe/", "a/ca.pem", Some("a/workload"), &[])
        .ok();
    ex.curl("a.example", "/spiffe/", "a/ca.pem", Some("a/client"), &[])
        .error(403, "PCS.4030");
    // An invalid certificate is still refused at the handshake on an optional site.
    ex.curl("a.example", "/open/", "a/ca.pem", Some("b/client"), &[])
        .refused("unknown ca");
}

#[test]
fn fingerprint_allowlist_takes_openssl_format() {
    let ex = Example::start("policy", |text, certs| {
        // Pinned to alice's certificate, pasted as openssl prints it.
        let fp = openssl_fingerprint(&certs.join("a/client.pem"));
        let route = text
            .split("[[route]]")
            .nth(1)
            .expect("a route")
            .replace("/open/", "/pinned/");
        format!(
            "{text}\n[[route]]{}allow_fingerprint_sha256 = [\"{fp}\"]\n",
            route.trim_end().to_string() + "\n"
        )
    });
    ex.curl("a.example", "/pinned/", "a/ca.pem", Some("a/client"), &[])
        .ok();
    ex.curl("a.example", "/pinned/", "a/ca.pem", Some("a/workload"), &[])
        .error(403, "PCS.4030");
    ex.curl("a.example", "/pinned/", "a/ca.pem", None, &[])
        .error(401, "PCS.4010");
}

// --- identity forwarding and header/path rules ----------------------------------

#[test]
fn identity_headers_reach_the_backend_and_forged_ones_do_not() {
    let ex = Example::start("identity", |t, _| t);
    let alice = ex.certs.join("a/client.pem");
    let fp_hex = openssl_fingerprint(&alice)
        .replace(':', "")
        .to_ascii_lowercase();
    let forged = [
        "-H",
        "X-SSL-Client-Subject: CN=admin",
        "-H",
        "X-SSL-Client-Fingerprint: 00",
        "-H",
        "X-Forwarded-Client-Cert: Hash=00;Subject=\"CN=admin\"",
        "-H",
        "Client-Cert: :Zm9yZ2Vk:",
        "-H",
        "Client-Cert-Chain: :Zm9yZ2Vk:",
        "-H",
        "X-SSL-Client-Cert: forged",
        "-H",
        "X-Client-Cert-PEM: forged",
        "-H",
        "X-Debug: 1",
        "-H",
        "X-Gateway: client-says",
    ];

    // APIG case: constant Host, prefix stripped, headers set/added/removed.
    let r = ex.curl(
        "a.example",
        "/apig/orders?id=7",
        "a/ca.pem",
        Some("a/client"),
        &forged,
    );
    r.ok();
    let v = r.json();
    assert_eq!(v["path"], "/orders", "{v}");
    assert_eq!(v["query"], "id=7");
    assert_eq!(v["host"], "api-mtls.virtual.example");
    assert_eq!(
        r.echoed("x-gateway").as_deref(),
        Some("portcullis"),
        "set replaces the client's"
    );
    assert_eq!(r.echoed("x-env").as_deref(), Some("edge"));
    assert_eq!(r.echoed("x-debug"), None);
    assert_eq!(
        r.echoed("x-ssl-client-subject").as_deref(),
        Some("CN=alice")
    );
    assert_eq!(r.echoed("x-ssl-client-fingerprint"), Some(fp_hex.clone()));
    for absent in [
        "x-forwarded-client-cert",
        "client-cert",
        "client-cert-chain",
        "x-ssl-client-cert",
        "x-client-cert-pem",
    ] {
        assert_eq!(
            r.echoed(absent),
            None,
            "{absent} must be stripped, not forwarded: {v}"
        );
    }

    // Every identity form, one renamed; prefix rewritten.
    let r = ex.curl(
        "a.example",
        "/all/x?q=1",
        "a/ca.pem",
        Some("a/client"),
        &forged,
    );
    r.ok();
    let v = r.json();
    assert_eq!(v["path"], "/v2/x");
    let pem = percent_decode(&r.echoed("x-client-cert-pem").expect("escaped PEM"));
    assert_eq!(load_certs_from_text(&pem), der_of(&alice));
    assert_eq!(
        r.echoed("x-ssl-client-cert"),
        None,
        "renamed away, and the forged copy stripped"
    );
    let client_cert = r.echoed("client-cert").expect("RFC 9440 Client-Cert");
    let b64 = client_cert
        .strip_prefix(':')
        .and_then(|s| s.strip_suffix(':'))
        .expect(":b64:");
    assert_eq!(base64_decode(b64), der_of(&alice));
    let xfcc = r.echoed("x-forwarded-client-cert").expect("XFCC");
    assert_eq!(xfcc, format!("Hash={fp_hex};Subject=\"CN=alice\""));
    assert_eq!(
        r.echoed("x-ssl-client-subject").as_deref(),
        Some("CN=alice")
    );
}

fn load_certs_from_text(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_decode(&body)
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64 char") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// --- gateway-to-backend TLS and mTLS ------------------------------------------

#[test]
fn upstream_mtls_presents_our_certificate_and_verifies_the_backend() {
    let ex = Example::start("upstream-mtls", |t, _| t);
    let r = ex.curl("a.example", "/app/x", "a/ca.pem", Some("a/client"), &[]);
    r.ok();
    assert_eq!(
        r.json()["tls"]["client_subject"],
        "CN=portcullis-gateway",
        "the backend saw our identity"
    );
    // A pooled connection that carries our certificate must never serve the
    // upstream that has none: the backend refuses that one.
    ex.curl(
        "a.example",
        "/no-client-cert/x",
        "a/ca.pem",
        Some("a/client"),
        &[],
    )
    .error(502, "PCS.5023");
    assert!(ex.log_has(&["PCS.5023", "requires a client certificate"]));
    ex.curl("a.example", "/app/y", "a/ca.pem", Some("a/client"), &[])
        .ok();
    // Host-name verification off (explicitly) for an IP address: warned at start.
    ex.curl("a.example", "/by-ip/x", "a/ca.pem", Some("a/client"), &[])
        .ok();
    assert!(ex.log_has(&["insecure_skip_verify_hostname = true", "app-by-ip"]));
}

#[test]
fn upstream_with_wrong_ca_or_name_gets_502() {
    let ex = Example::start("upstream-mtls", |t, _| {
        // The first upstream trusts the wrong CA; the second expects another name.
        t.replacen(
            "ca = [\"certs/upstream/ca.pem\"]",
            "ca = [\"certs/b/ca.pem\"]",
            1,
        )
        .replacen(
            "server_name = \"app.internal\"\n\n[[upstream]]\nname = \"app-by-ip\"",
            "server_name = \"other.internal\"\n\n[[upstream]]\nname = \"app-by-ip\"",
            1,
        )
    });
    ex.curl("a.example", "/app/x", "a/ca.pem", Some("a/client"), &[])
        .error(502, "PCS.5023");
    assert!(ex.log_has(&["PCS.5023", "backend certificate not trusted"]));
    ex.curl(
        "a.example",
        "/no-client-cert/x",
        "a/ca.pem",
        Some("a/client"),
        &[],
    )
    .error(502, "PCS.5023");
    assert!(ex.log_has(&["PCS.5023", "not valid for other.internal"]));
}

#[test]
fn a_reload_that_changes_nothing_about_a_tls_backend_keeps_its_warm_connection() {
    // The pool key is the backend's address and the content of its TLS
    // material, not the config generation: after a reload that leaves the
    // upstream as it was, the next request reuses the pooled connection (no
    // new TLS handshake to the backend); a reload that changes its CA set
    // gets a fresh connection.
    let admin = format!("127.0.0.1:{}", free_port());
    let with_admin = |t: String| format!("[admin]\naddress = \"{admin}\"\n\n{t}");
    let ex = Example::start("upstream-mtls", |t, _| with_admin(t));
    let pool = |event: &str| {
        let (_, body) = admin_get(&admin, "/metrics");
        metric(
            &body,
            &format!("portcullis_backend_pool_total{{event=\"{event}\"}}"),
        )
        .unwrap_or_else(|| panic!("no pool {event} series"))
    };
    // Workers publish their counters every few hundred milliseconds.
    let settles_at = |event: &str, want: f64| {
        wait_until(Duration::from_secs(5), || pool(event) >= want);
        pool(event)
    };
    let get = |path: &str| {
        ex.curl("a.example", path, "a/ca.pem", Some("a/client"), &[])
            .ok();
    };
    get("/app/1");
    assert_eq!(settles_at("connect", 1.0), 1.0);
    let original = fs::read_to_string(&ex.config).unwrap();
    ex.gateway.signal(libc::SIGHUP);
    assert!(ex.log_has(&["config reloaded"]));
    get("/app/2");
    assert!(
        settles_at("hit", 1.0) >= 1.0,
        "the unchanged backend kept its pool"
    );
    assert_eq!(pool("connect"), 1.0);
    // The same backend, trusted through a bundle with one more CA: another key.
    let bundle = ex.td.join("two-cas.pem");
    let two = [
        fs::read_to_string(ex.certs.join("upstream/ca.pem")).unwrap(),
        fs::read_to_string(ex.certs.join("b/ca.pem")).unwrap(),
    ]
    .concat();
    fs::write(&bundle, two).unwrap();
    fs::write(
        &ex.config,
        original.replacen(
            "ca = [\"certs/upstream/ca.pem\"]",
            &format!("ca = [\"{}\"]", bundle.display()),
            1,
        ),
    )
    .unwrap();
    ex.gateway.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || {
        ex.gateway.stderr().matches("config reloaded").count() >= 2
    }));
    get("/app/3");
    assert_eq!(
        settles_at("connect", 2.0),
        2.0,
        "a changed CA set is another pool"
    );
}

// --- reload -------------------------------------------------------------------

fn x_gateway(resp: &Response) -> String {
    let v = parse_json(&resp.body);
    v["headers"]["x-gateway"].as_str().unwrap_or("").to_string()
}

fn reload_cmd(config: &Path) -> Out {
    run_cmd(
        portcullis().arg("reload").arg("--config").arg(config),
        None,
        Duration::from_secs(20),
    )
}

#[test]
fn reload_serves_new_connections_the_new_config_and_refuses_a_broken_one() {
    let ex = Example::start("identity", |t, _| t);
    let addr = ([127, 0, 0, 1], ex.port).into();
    let alice = CertDir {
        dir: ex.certs.join("a"),
    };
    let cfg = client_config(&alice, ClientAuth::Default, &[]);
    let connect = || HttpConn::new(tls_connect_name(addr, cfg.clone(), "a.example").unwrap());
    let mut before = connect();
    assert_eq!(
        x_gateway(&before.get("/apig/x", &[]).unwrap()),
        "portcullis"
    );

    let original = fs::read_to_string(&ex.config).unwrap();
    fs::write(
        &ex.config,
        original.replace("\"portcullis\" }", "\"portcullis-2\" }"),
    )
    .unwrap();
    let out = reload_cmd(&ex.config);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(ex.log_has(&["config reloaded", "generation=2"]));
    assert_eq!(
        x_gateway(&connect().get("/apig/x", &[]).unwrap()),
        "portcullis-2"
    );
    // A connection accepted before the reload finishes on the config it started with.
    assert_eq!(
        x_gateway(&before.get("/apig/x", &[]).unwrap()),
        "portcullis"
    );

    // A broken file: `reload` says where, before signalling anything ...
    let broken = format!(
        "colour = \"red\"\n{}",
        fs::read_to_string(&ex.config).unwrap()
    );
    fs::write(&ex.config, &broken).unwrap();
    let out = reload_cmd(&ex.config);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr
            .contains("identity.toml:1: colour: unknown field"),
        "{}",
        out.describe()
    );
    // ... and a SIGHUP with it is refused by the gateway, which keeps serving.
    ex.gateway.signal(libc::SIGHUP);
    assert!(ex.log_has(&["reload refused", "colour"]));
    assert_eq!(
        x_gateway(&connect().get("/apig/x", &[]).unwrap()),
        "portcullis-2"
    );
    // A certificate that cannot load is refused the same way.
    let missing_key = original.replace("certs/a/server.key", "certs/a/no-such.key");
    fs::write(&ex.config, missing_key).unwrap();
    ex.gateway.signal(libc::SIGHUP);
    assert!(ex.log_has(&["reload refused", "no-such.key"]));
    // What needs a restart is refused with that reason.
    let moved = original.replace(
        &format!("127.0.0.1:{}", ex.port),
        &format!("127.0.0.1:{}", free_port()),
    );
    fs::write(&ex.config, moved).unwrap();
    ex.gateway.signal(libc::SIGHUP);
    assert!(ex.log_has(&["reload refused", "needs a restart"]));
    assert_eq!(
        x_gateway(&connect().get("/apig/x", &[]).unwrap()),
        "portcullis-2"
    );
}

#[test]
fn ten_reloads_under_load_fail_no_request() {
    let ex = Example::start("identity", |t, _| t);
    let a = ex.certs.join("a");
    let url = format!("https://a.example:{}/apig/load", ex.port);
    let load = |name: &str, extra: &[&str]| {
        let json = ex.td.join(&format!("{name}.json"));
        let mut cmd = Command::new(pcl_load());
        cmd.args(["-d", "7s", "-t", "1", "--timeout", "5s"])
            .arg("--cacert")
            .arg(a.join("ca.pem"))
            .arg("--cert")
            .arg(a.join("client.pem"))
            .arg("--key")
            .arg(a.join("client.key"))
            .arg("--sni")
            .arg("a.example")
            .arg("--json")
            .arg(&json)
            .args(extra)
            .arg(url.replace("a.example", "127.0.0.1"));
        (ChildGuard::spawn(name, cmd, ex.td.path()), json)
    };
    // Kept-alive connections (they stay on the generation they started with)
    // and a full handshake per request (each lands on whatever is current).
    let (mut keepalive, keepalive_json) = load("keepalive", &["-c", "4"]);
    let (mut handshakes, handshakes_json) = load("handshakes", &["-c", "2", "--new-conn"]);
    std::thread::sleep(Duration::from_millis(800));
    let original = fs::read_to_string(&ex.config).unwrap();
    for i in 1..=10 {
        let text = original.replace("\"portcullis\" }", &format!("\"portcullis-{i}\" }}"));
        fs::write(&ex.config, text).unwrap();
        let out = reload_cmd(&ex.config);
        assert_eq!(out.code(), Some(0), "reload {i}: {}", out.describe());
        std::thread::sleep(Duration::from_millis(450));
    }
    assert!(
        ex.log_has(&["config reloaded", "generation=11"]),
        "all ten reloads applied"
    );
    for (child, json) in [
        (&mut keepalive, &keepalive_json),
        (&mut handshakes, &handshakes_json),
    ] {
        let status = child
            .wait_exit(Duration::from_secs(20))
            .expect("pcl-load stops by itself");
        assert!(
            status.success(),
            "{} exited {status}: {}",
            child.name,
            child.output()
        );
        let v: Value = serde_json::from_slice(&fs::read(json).unwrap()).unwrap();
        assert_eq!(v["errors_total"], 0, "{}: {v}", child.name);
        assert!(
            v["requests"].as_u64().unwrap_or(0) > 50,
            "{}: {v}",
            child.name
        );
    }
    // New connections after the last reload see its config.
    let alice = CertDir { dir: a };
    let cfg = client_config(&alice, ClientAuth::Default, &[]);
    let mut conn = HttpConn::new(
        tls_connect_name(([127, 0, 0, 1], ex.port).into(), cfg, "a.example").unwrap(),
    );
    assert_eq!(
        x_gateway(&conn.get("/apig/x", &[]).unwrap()),
        "portcullis-10"
    );
}
