//! Headers the backend trusts, end to end: what a client may not forge
//! (identity and forwarding headers in any spelling a CGI-style backend folds
//! together), who the client is behind `trusted_proxies`, the PROXY protocol
//! (curl's v1, HAProxy's v2, hand-written headers in front of a real rustls
//! handshake, refusals), XFCC quoting with a hostile certificate, and TRACE.
//!
//! Everything runs through the real binary, real TLS and the real echo
//! backend, which answers with the headers it received as JSON.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use serde_json::Value;

/// One gateway with three listeners on one `mtls = "optional"` site:
/// `edge` (trusts nobody), `behind` (trusts 127.0.0.1 and 10.0.0.0/8 with
/// X-Forwarded-For) and `pp` (PROXY protocol from 127.0.0.1 only).
struct Rig {
    td: TempDir,
    certs: CertDir,
    _echo: Echo,
    gw: ChildGuard,
    edge: u16,
    behind: u16,
    pp: u16,
    admin: u16,
}

impl Rig {
    fn start(name: &str) -> Rig {
        let td = TempDir::new(name);
        let certs = certs_init(&td.join("certs"), &[]);
        let echo = Echo::start(&td);
        let (edge, behind, pp, admin) = (free_port(), free_port(), free_port(), free_port());
        let path = |p: PathBuf| q(&p.to_string_lossy());
        let text = format!(
            r#"[server]
workers = 1
access_log = true

[[listener]]
address = "127.0.0.1:{edge}"

[[listener]]
address = "127.0.0.1:{behind}"
trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]

[[listener]]
address = "127.0.0.1:{pp}"
trusted_proxies = ["127.0.0.1/32"]
proxy_protocol = true

[[site]]
name = "main"
server_names = ["localhost"]
certificate = {cert}
private_key = {key}
client_ca = [{ca}]
mtls = "optional"
default = true

[[route]]
path = "/trace/"
methods = ["GET", "TRACE", "TRACK"]
backends = ["{echo}"]

[[route]]
path = "/"
backends = ["{echo}"]
set_headers = {{ "X-Gateway" = "portcullis" }}
remove_headers = ["X-Debug"]
forward_client_cert = ["subject", "xfcc"]

[admin]
address = "127.0.0.1:{admin}"
"#,
            cert = path(certs.server_cert()),
            key = path(certs.server_key()),
            ca = path(certs.ca()),
            echo = echo.addr(),
        );
        let config = config_file(&td);
        fs::write(&config, text).unwrap();
        let mut cmd = portcullis();
        cmd.arg("run").arg("--config").arg(&config);
        let mut gw = ChildGuard::spawn("gateway", cmd, td.path());
        // The `pp` listener is probed last: that probe sends no PROXY header
        // and is logged and counted like any other such connection.
        for port in [edge, behind, admin, pp] {
            wait_accept(SocketAddr::from(([127, 0, 0, 1], port)), &mut gw);
        }
        if gw
            .wait_log_line(&["worker started"], Duration::from_secs(10))
            .is_none()
        {
            gw.fail("no `worker started` line");
        }
        Rig {
            td,
            certs,
            _echo: echo,
            gw,
            edge,
            behind,
            pp,
            admin,
        }
    }

    /// curl to https://localhost:PORT/PATH (localhost is 127.0.0.1).
    fn curl(&self, port: u16, auth: Auth, path: &str, extra: &[&str]) -> CurlRes {
        let url = format!("https://localhost:{port}{path}");
        curl(self.td.path(), &self.certs, port, auth, &[&url], extra)
    }

    /// The echo backend's JSON `headers` object for a request that must succeed.
    fn echoed(&self, port: u16, auth: Auth, path: &str, extra: &[&str]) -> Value {
        let r = self.curl(port, auth, path, extra);
        assert_eq!((r.exit, r.code), (0, 200), "{}", r.describe());
        r.json()["headers"].clone()
    }

    /// The value of one `portcullis_handshake_failures_total` reason, read
    /// from the admin endpoint once the worker's snapshot shows `at_least`.
    fn handshake_failures(&self, reason: &str, at_least: u64) -> u64 {
        let needle = format!("portcullis_handshake_failures_total{{reason=\"{reason}\"}} ");
        let mut value = 0;
        wait_until(Duration::from_secs(5), || {
            let mut s = match TcpStream::connect(("127.0.0.1", self.admin)) {
                Ok(s) => s,
                Err(_) => return false,
            };
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            let mut text = String::new();
            let _ = s.read_to_string(&mut text);
            value = text
                .lines()
                .find_map(|l| l.strip_prefix(&needle))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            value >= at_least
        });
        value
    }

    /// A TCP connection to `port` from 127.0.0.1 that first writes `preamble`
    /// and the ClientHello in ONE write, then finishes a rustls handshake on
    /// the same socket: the gateway must take the preamble and not one byte
    /// of the hello.
    fn tls_after(&self, port: u16, preamble: &[u8]) -> std::io::Result<HttpConn<TlsStream>> {
        let cfg = client_config(&self.certs, ClientAuth::None, &[]);
        let mut sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        sock.set_write_timeout(Some(Duration::from_secs(20)))?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
        let mut first = preamble.to_vec();
        conn.write_tls(&mut first)?;
        sock.write_all(&first)?;
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock)?;
        }
        Ok(HttpConn::new(s))
    }
}

/// Lowercased, with every non-alphanumeric byte as '-': how CGI, WSGI, Rack
/// and lighttpd tell header names apart.
fn fold(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b.to_ascii_lowercase())
            } else {
                '-'
            }
        })
        .collect()
}

/// Names the gateway alone may send a backend (the echo lowercases names).
const PROTECTED: [&str; 12] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
    "x-ssl-client-subject",
    "x-ssl-client-cert",
    "x-forwarded-client-cert",
    "client-cert",
    "x-gateway",
    "x-debug",
    "proxy",
];

/// Every header the backend saw whose name folds onto a protected one must
/// be the gateway's own spelling.
#[track_caller]
fn assert_no_twins(h: &Value) {
    let obj = h.as_object().expect("headers object");
    for key in obj.keys() {
        let folded = fold(key);
        if PROTECTED.contains(&folded.as_str()) || folded.starts_with("x-forwarded-") {
            assert!(
                matches!(
                    key.as_str(),
                    "x-forwarded-for"
                        | "x-forwarded-proto"
                        | "x-forwarded-host"
                        | "x-real-ip"
                        | "x-gateway"
                        | "x-forwarded-client-cert"
                        | "x-ssl-client-subject"
                ),
                "client header {key:?} reached the backend: {h}"
            );
        }
    }
}

const FORGED: [&str; 22] = [
    "-H",
    "X_SSL_Client_Subject: CN=admin",
    "-H",
    "X-SSL-Client-Subject: CN=admin",
    "-H",
    "x_forwarded_client_cert: Hash=00;Subject=\"CN=admin\"",
    "-H",
    "X_Forwarded_For: 6.6.6.6",
    "-H",
    "X.Real.IP: 6.6.6.6",
    "-H",
    "X_Gateway: forged",
    "-H",
    "X_Debug: 1",
    "-H",
    "Proxy: http://evil.example:3128",
    "-H",
    "X_Forwarded_Host: evil.example",
    "-H",
    "x-forwarded_proto: http",
    "-H",
    "X-Forwarded-Port: 80",
];

#[test]
fn underscore_twins_and_forged_forwarding_headers_never_reach_the_backend() {
    let rig = Rig::start("hdr_twins");
    let mut extra = FORGED.to_vec();
    extra.extend_from_slice(&[
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "Forwarded: for=6.6.6.6;proto=http;host=evil.example",
        "-H",
        "X-Real-IP: 6.6.6.6",
        "-H",
        "X-Forwarded-Host: evil.example",
        "-H",
        "X-Forwarded-Proto: http",
        "-H",
        "X-Innocent_Name: kept",
    ]);
    // An optional-mTLS site and no certificate: the forged identity is all
    // the backend could go by.
    let h = rig.echoed(rig.edge, Auth::NoCert, "/x", &extra);
    assert_no_twins(&h);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert_eq!(
        h["x-forwarded-host"],
        format!("localhost:{}", rig.edge),
        "{h}"
    );
    assert_eq!(h["x-gateway"], "portcullis", "{h}");
    for absent in [
        "x-ssl-client-subject",
        "x-forwarded-client-cert",
        "forwarded",
        "proxy",
    ] {
        assert!(h.get(absent).is_none(), "{absent}: {h}");
    }
    assert_eq!(h["x-innocent_name"], "kept", "{h}");

    // With a certificate the identity headers are the verified ones.
    let h = rig.echoed(rig.edge, Auth::Client, "/x", &extra);
    assert_no_twins(&h);
    assert_eq!(h["x-ssl-client-subject"], "CN=portcullis-dev-client", "{h}");
    assert!(
        h["x-forwarded-client-cert"]
            .as_str()
            .is_some_and(|v| v.starts_with("Hash=") && !v.contains("admin")),
        "{h}"
    );

    // A trusted proxy's look-alike X_Forwarded_For is not believed either.
    let h = rig.echoed(
        rig.behind,
        Auth::NoCert,
        "/x",
        &[
            "-H",
            "X_Forwarded_For: 203.0.113.99",
            "-H",
            "X-Forwarded-For: 10.1.2.3",
        ],
    );
    assert_no_twins(&h);
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1", "{h}");
    assert_eq!(h["x-real-ip"], "10.1.2.3", "{h}");
}

#[test]
fn trusted_proxies_keep_the_chain_and_name_the_right_most_untrusted_client() {
    let rig = Rig::start("hdr_trusted");
    let xff = |chain: &str| format!("X-Forwarded-For: {chain}");
    // 127.0.0.1 is trusted on `behind`: its chain is kept and appended to.
    let chain = xff("198.51.100.1, 203.0.113.7, 10.1.2.3");
    let h = rig.echoed(rig.behind, Auth::NoCert, "/a", &["-H", &chain]);
    assert_eq!(
        h["x-forwarded-for"], "198.51.100.1, 203.0.113.7, 10.1.2.3, 127.0.0.1",
        "{h}"
    );
    assert_eq!(h["x-real-ip"], "203.0.113.7", "{h}");
    assert!(
        rig.gw
            .wait_log_line(
                &[
                    "portcullis::access",
                    "client=203.0.113.7",
                    "peer=127.0.0.1",
                    "target=/a"
                ],
                Duration::from_secs(5)
            )
            .is_some(),
        "access log names the client"
    );
    // Every entry trusted: the left-most is the client.
    let only_trusted = xff("10.9.9.9");
    let h = rig.echoed(rig.behind, Auth::NoCert, "/b", &["-H", &only_trusted]);
    assert_eq!(h["x-real-ip"], "10.9.9.9", "{h}");
    // Garbage stops the walk: nothing left of it can be trusted.
    let garbage = xff("203.0.113.7, unknown, 10.1.2.3");
    let h = rig.echoed(rig.behind, Auth::NoCert, "/c", &["-H", &garbage]);
    assert_eq!(h["x-real-ip"], "10.1.2.3", "{h}");
    // No header: the trusted peer itself.
    let h = rig.echoed(rig.behind, Auth::NoCert, "/d", &[]);
    assert_eq!(
        (&h["x-forwarded-for"], &h["x-real-ip"]),
        (&Value::from("127.0.0.1"), &Value::from("127.0.0.1")),
        "{h}"
    );

    // 127.0.0.5 is not trusted: its X-Forwarded-For is replaced.
    let h = rig.echoed(
        rig.behind,
        Auth::NoCert,
        "/e",
        &["--interface", "127.0.0.5", "-H", &chain],
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.5", "{h}");
    assert_eq!(h["x-real-ip"], "127.0.0.5", "{h}");
    // And nobody is trusted on the edge listener.
    let h = rig.echoed(rig.edge, Auth::NoCert, "/f", &["-H", &chain]);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert!(
        rig.gw.stderr().contains("trusted_proxies set"),
        "start-up log"
    );
}

#[test]
fn proxy_v1_from_curl_and_refusals() {
    let rig = Rig::start("hdr_pp_v1");
    // curl writes `PROXY TCP4 127.0.0.1 127.0.0.1 <sport> <dport>` itself.
    let h = rig.echoed(rig.pp, Auth::Client, "/v1", &["--haproxy-protocol"]);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-ssl-client-subject"], "CN=portcullis-dev-client", "{h}");
    // Keep-alive after the header: several requests on the connection.
    let url = format!("https://localhost:{}/again", rig.pp);
    let r = curl(
        rig.td.path(),
        &rig.certs,
        rig.pp,
        Auth::NoCert,
        &[&url, &url, &url],
        &["--haproxy-protocol"],
    );
    assert_eq!(r.codes, [200, 200, 200], "{}", r.describe());

    // A peer outside trusted_proxies is closed before anything is read.
    let r = rig.curl(
        rig.pp,
        Auth::NoCert,
        "/untrusted",
        &["--haproxy-protocol", "--interface", "127.0.0.5"],
    );
    assert!(r.exit != 0 && r.code == 0, "{}", r.describe());
    let line = rig
        .gw
        .wait_log_line(
            &[
                "connection refused before TLS",
                "peer=127.0.0.5:",
                "not in trusted_proxies",
            ],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| rig.gw.fail("no refusal line for the untrusted peer"));
    assert_eq!(
        rig.gw
            .count_log_lines(&["connection refused before TLS", "peer=127.0.0.5:"]),
        1,
        "logged once: {line}"
    );
    assert_eq!(rig.handshake_failures("proxy_untrusted", 1), 1);

    // TLS without the header: closed at once, named, counted.
    let r = rig.curl(rig.pp, Auth::NoCert, "/no-header", &[]);
    assert!(r.exit != 0 && r.code == 0, "{}", r.describe());
    assert!(rig
        .gw
        .wait_log_line(
            &[
                "connection refused before TLS",
                "not a PROXY protocol header"
            ],
            Duration::from_secs(5)
        )
        .is_some());
    // One count per refusal that was not about trust (the harness's start-up
    // probe sends no header either).
    let refused = rig.gw.count_log_lines(&["connection refused before TLS"]) as u64 - 1;
    assert!(refused >= 2, "{refused}");
    assert_eq!(rig.handshake_failures("proxy_header", refused), refused);
}

#[test]
fn hand_written_proxy_headers_then_a_real_tls_handshake_on_the_same_socket() {
    let rig = Rig::start("hdr_pp_raw");
    let expect_client = |conn: &mut HttpConn<TlsStream>, client: &str| {
        let r = conn.get("/raw", &["X-Forwarded-For: 6.6.6.6"]).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let h = r.json()["headers"].clone();
        assert_eq!(h["x-forwarded-for"], client, "{h}");
        assert_eq!(h["x-real-ip"], client, "{h}");
    };
    // v1 with a source address that is not the socket's.
    let v1 = format!("PROXY TCP4 198.51.100.9 127.0.0.1 40000 {}\r\n", rig.pp);
    let mut conn = rig.tls_after(rig.pp, v1.as_bytes()).expect("v1 + TLS");
    expect_client(&mut conn, "198.51.100.9");
    expect_client(&mut conn, "198.51.100.9");
    assert!(rig
        .gw
        .wait_log_line(
            &[
                "portcullis::access",
                "client=198.51.100.9",
                "peer=198.51.100.9"
            ],
            Duration::from_secs(5)
        )
        .is_some());

    // v2, IPv6 source, with TLVs (ALPN, an AWS-style VPC endpoint ID).
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21".to_vec();
    let mut body = vec![
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42,
    ];
    body.extend_from_slice(&[0; 15]);
    body.push(1);
    body.extend_from_slice(&4444u16.to_be_bytes());
    body.extend_from_slice(&rig.pp.to_be_bytes());
    body.extend_from_slice(&[0x01, 0x00, 0x08]);
    body.extend_from_slice(b"http/1.1");
    body.extend_from_slice(&[0xEA, 0x00, 0x05, 0x01]);
    body.extend_from_slice(b"vpce");
    v2.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    v2.extend_from_slice(&body);
    let mut conn = rig.tls_after(rig.pp, &v2).expect("v2 + TLS");
    expect_client(&mut conn, "2001:db8::42");

    // v2 LOCAL (a balancer's health check) and v1 UNKNOWN keep the socket's
    // address: here the balancer's own (trusted) one, so its X-Forwarded-For
    // would be believed, as from any trusted peer.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let unknown = b"PROXY UNKNOWN\r\n";
    for preamble in [&local[..], &unknown[..]] {
        let mut conn = rig
            .tls_after(rig.pp, preamble)
            .expect("LOCAL/UNKNOWN + TLS");
        let r = conn.get("/raw", &[]).unwrap();
        let h = r.json()["headers"].clone();
        assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
        let r = conn.get("/raw", &["X-Forwarded-For: 203.0.113.3"]).unwrap();
        let h = r.json()["headers"].clone();
        assert_eq!(h["x-forwarded-for"], "203.0.113.3, 127.0.0.1", "{h}");
        assert_eq!(h["x-real-ip"], "203.0.113.3", "{h}");
    }
}

#[test]
fn malformed_proxy_headers_are_closed_at_once() {
    let rig = Rig::start("hdr_pp_bad");
    let hostile: [(&str, Vec<u8>); 5] = [
        (
            "bad address",
            b"PROXY TCP4 198.51.100.999 127.0.0.1 1 2\r\n".to_vec(),
        ),
        (
            "plain HTTP",
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        (
            "bare LF",
            b"PROXY TCP4 198.51.100.9 127.0.0.1 1 2\n\x16\x03\x01".to_vec(),
        ),
        // A v2 header claiming 65535 bytes: refused on its fixed part, not
        // waited for until the handshake timeout.
        (
            "hostile length",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec(),
        ),
        ("overlong v1", {
            let mut v = b"PROXY UNKNOWN ".to_vec();
            v.resize(200, b'a');
            v
        }),
    ];
    for (what, bytes) in hostile {
        let started = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", rig.pp)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{what}: the gateway answered {:?}", &buf[..n]);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{what}: closed only after {:?}",
            started.elapsed()
        );
    }
    for reason in [
        "PROXY v1 source address is invalid",
        "not a PROXY protocol header",
        "bare LF",
        "longer than 4096 bytes",
        "longer than 107 bytes",
    ] {
        assert!(
            rig.gw
                .wait_log_line(
                    &["connection refused before TLS", reason],
                    Duration::from_secs(5)
                )
                .is_some(),
            "no log line for {reason}"
        );
    }
    // One count per refusal (the harness's own start-up probe included).
    let refused = rig.gw.count_log_lines(&["connection refused before TLS"]) as u64;
    assert!(refused >= 5, "{refused}");
    assert_eq!(rig.handshake_failures("proxy_header", refused), refused);
    // The listener still serves a proper header afterwards.
    let h = rig.echoed(rig.pp, Auth::NoCert, "/ok", &["--haproxy-protocol"]);
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
}

/// HAProxy in TCP mode in front of the `pp` listener, sending PROXY v2;
/// curl binds 127.0.0.5 so the client differs from HAProxy's own address.
#[test]
fn proxy_v2_through_a_real_haproxy() {
    let haproxy = Command::new("haproxy").arg("-v").output();
    assert!(
        haproxy.is_ok_and(|o| o.status.success()),
        "haproxy is required for this test (apt-get install haproxy; .ci/run installs it)"
    );
    let rig = Rig::start("hdr_pp_haproxy");
    let front = free_port();
    let cfg = rig.td.join("haproxy.cfg");
    fs::write(
        &cfg,
        format!(
            "global\n  maxconn 100\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\n\
             frontend fe\n  bind 127.0.0.1:{front}\n  default_backend be\n\n\
             backend be\n  server gw 127.0.0.1:{} send-proxy-v2 source 127.0.0.1\n",
            rig.pp
        ),
    )
    .unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg);
    let mut ha = ChildGuard::spawn("haproxy", cmd, rig.td.path());
    wait_accept(SocketAddr::from(([127, 0, 0, 1], front)), &mut ha);

    let h = rig.echoed(
        front,
        Auth::Client,
        "/via-haproxy",
        &["--interface", "127.0.0.5", "-H", "X-Forwarded-For: 6.6.6.6"],
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.5", "{h}");
    assert_eq!(h["x-real-ip"], "127.0.0.5", "{h}");
    assert_eq!(h["x-ssl-client-subject"], "CN=portcullis-dev-client", "{h}");
    assert!(rig
        .gw
        .wait_log_line(
            &[
                "portcullis::access",
                "client=127.0.0.5",
                "target=/via-haproxy"
            ],
            Duration::from_secs(5)
        )
        .is_some());
    // Several requests on one kept-alive connection through HAProxy.
    let url = format!("https://localhost:{front}/again");
    let r = curl(
        rig.td.path(),
        &rig.certs,
        front,
        Auth::NoCert,
        &[&url, &url],
        &["--interface", "127.0.0.5"],
    );
    assert_eq!(r.codes, [200, 200], "{}", r.describe());
}

/// Envoy's XFCC grammar: elements split on ',' and pairs on ';' outside
/// quotes, `\x` inside quotes is `x`.
fn parse_xfcc(header: &str) -> Vec<Vec<(String, String)>> {
    let mut elements = vec![Vec::new()];
    let (mut key, mut value) = (String::new(), String::new());
    let (mut in_value, mut quoted, mut escaped) = (false, false, false);
    for c in header.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {
                    value.push(c);
                    escaped = false;
                }
            }
            continue;
        }
        match c {
            '"' if in_value && value.is_empty() => quoted = true,
            '=' if !in_value => in_value = true,
            ';' | ',' => {
                let pair = (std::mem::take(&mut key), std::mem::take(&mut value));
                elements.last_mut().unwrap().push(pair);
                in_value = false;
                if c == ',' {
                    elements.push(Vec::new());
                }
            }
            c if in_value => value.push(c),
            c => key.push(c),
        }
    }
    elements.last_mut().unwrap().push((key, value));
    elements
}

#[test]
fn xfcc_subject_with_quotes_and_backslashes_stays_one_quoted_string() {
    let rig = Rig::start("hdr_xfcc");
    fs::create_dir_all(rig.td.join("evil")).unwrap();
    let (pem, key) = certs_issue(
        &rig.certs.dir,
        &rig.td.join("evil"),
        "evil",
        r#"x\",URI=spiffe://evil;By=spiffe://admin"#,
        &[],
    );
    let h = rig.echoed(rig.edge, Auth::Pem(&pem, &key), "/x", &[]);
    let subject = h["x-ssl-client-subject"]
        .as_str()
        .expect("subject")
        .to_string();
    assert_eq!(subject, r#"CN=x\\\"\,URI=spiffe://evil\;By=spiffe://admin"#);
    let xfcc = h["x-forwarded-client-cert"]
        .as_str()
        .expect("XFCC")
        .to_string();
    let elements = parse_xfcc(&xfcc);
    assert_eq!(elements.len(), 1, "one element: {xfcc}");
    let keys: Vec<&str> = elements[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Hash", "Subject"], "{xfcc}");
    assert_eq!(elements[0][1].1, subject, "{xfcc}");
}

#[test]
fn trace_and_track_are_refused_unless_the_route_lists_them() {
    let rig = Rig::start("hdr_trace");
    for method in ["TRACE", "TRACK"] {
        let r = rig.curl(rig.edge, Auth::Client, "/x", &["-X", method]);
        assert_eq!(r.code, 405, "{method}: {}", r.describe());
        assert_error_json(&r.body, 405, "PCS.4051");
        // The route that lists it forwards it.
        let r = rig.curl(rig.edge, Auth::Client, "/trace/x", &["-X", method]);
        assert_eq!(r.code, 200, "{method}: {}", r.describe());
        assert_eq!(r.json()["method"], method);
    }
    // Lower case (some backends upper-case methods) and CONNECT with an
    // origin-form target, on one kept-alive connection.
    let cfg = client_config(&rig.certs, ClientAuth::Default, &[]);
    let mut conn =
        HttpConn::new(tls_connect(SocketAddr::from(([127, 0, 0, 1], rig.edge)), cfg).expect("TLS"));
    for method in ["trace", "CONNECT", "Track"] {
        let r = conn.request(&req(method, "/x", &[], b"")).unwrap();
        r.assert_error(405, "PCS.4051");
    }
    let r = conn.request(&req("CONNECT", "/trace/x", &[], b"")).unwrap();
    r.assert_error(405, "PCS.4051");
    let r = conn.get("/x", &[]).unwrap();
    assert_eq!(r.status, 200, "the connection stays usable: {}", r.text());
}
