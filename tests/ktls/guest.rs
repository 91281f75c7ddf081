//! The kernel-TLS suite, run inside the QEMU guest (tests/ktls/run.sh) whose
//! kernel has the `tls` module. It starts the real gateway (ktls = "on") and
//! the real echo backend over 127.0.0.1 and drives them with rustls clients
//! (HTTP/1.1 here; HTTP/2 with the `h2` crate's client in `h2.rs`).
//! Prints one PASS/FAIL line per check and exits non-zero on any failure.
//!
//! Built as an example so it is never mistaken for a host test:
//! `cargo build --example ktls-guest`. Needs PORTCULLIS_BIN (the gateway binary).

mod h2;
mod idle;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedCipherSuite,
    SupportedProtocolVersion,
};

const GATEWAY: &str = "127.0.0.1:8443";
const ECHO: &str = "127.0.0.1:9000";
const RELAY: &str = "127.0.0.1:8444";

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn main() {
    let bin =
        PathBuf::from(std::env::var("PORTCULLIS_BIN").unwrap_or_else(|_| "./portcullis".into()));
    let work = PathBuf::from("/tmp/ktls-suite");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let pki = work.join("pki");
    run(Command::new(&bin)
        .args(["certs", "init", "--out"])
        .arg(&pki));

    let mut suite = Suite::default();
    let before = tls_stat();
    println!("tls_stat before: {}", fmt_stat(&before));

    let mut echo = spawn(
        Command::new(&bin).args(["echo", "--listen", ECHO, "--workers", "1"]),
        &work.join("echo.log"),
    );
    wait_port(ECHO);
    let config = work.join("gw.toml");
    let admin = h2::ADMIN;
    std::fs::write(
        &config,
        format!(
            "[server]\nworkers = 2\n[[listener]]\naddress = \"{GATEWAY}\"\ncertificate = \"pki/server.pem\"\nprivate_key = \"pki/server.key\"\nclient_ca = [\"pki/ca.pem\"]\nktls = \"on\"\n[admin]\naddress = \"{admin}\"\n[limits]\nmax_body_bytes = \"64MiB\"\n[[route]]\npath = \"/\"\nbackends = [\"{ECHO}\"]\n"
        ),
    )
    .expect("config");
    let gw_log = work.join("gw.log");
    let mut gw = spawn(
        Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            // Each connection's TLS mode and why (debug lines of accept and
            // the handshake), so a connection counted as userspace names itself.
            .env(
                "PORTCULLIS_LOG",
                "info,portcullis::gateway::accept=debug,portcullis::gateway=debug",
            ),
        &gw_log,
    );
    wait_port(GATEWAY);

    // Every suite the kernel can take, each over a kept-alive kTLS connection.
    let suites: [(
        &str,
        SupportedCipherSuite,
        &'static SupportedProtocolVersion,
    ); 6] = [
        (
            "TLS1.3 AES-128-GCM",
            cs::TLS13_AES_128_GCM_SHA256,
            &rustls::version::TLS13,
        ),
        (
            "TLS1.3 AES-256-GCM",
            cs::TLS13_AES_256_GCM_SHA384,
            &rustls::version::TLS13,
        ),
        (
            "TLS1.3 CHACHA20-POLY1305",
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            &rustls::version::TLS13,
        ),
        (
            "TLS1.2 ECDHE-ECDSA AES-128-GCM",
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            &rustls::version::TLS12,
        ),
        (
            "TLS1.2 ECDHE-ECDSA AES-256-GCM",
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            &rustls::version::TLS12,
        ),
        (
            "TLS1.2 ECDHE-ECDSA CHACHA20",
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            &rustls::version::TLS12,
        ),
    ];
    for (name, s, v) in suites {
        let cfg = client_config(&pki, Some(s), v);
        suite.check(
            &format!("{name}: 3 requests on one kTLS connection"),
            || {
                let mut tls = connect(GATEWAY, &cfg)?;
                let got = tls.conn.negotiated_cipher_suite().map(|x| x.suite());
                if got != Some(s.suite()) {
                    return Err(format!("negotiated {got:?}"));
                }
                for i in 0..3 {
                    let (status, body) = request(&mut tls, &format!("/suite/{i}"), &[], None)?;
                    expect_echo(status, &body, &format!("/suite/{i}"))?;
                }
                Ok(())
            },
        );
    }

    let tls13 = client_config(&pki, None, &rustls::version::TLS13);
    suite.check("200 requests on one kept-alive kTLS connection", || {
        let mut tls = connect(GATEWAY, &tls13)?;
        for i in 0..200 {
            let (status, body) = request(&mut tls, &format!("/many/{i}"), &[], None)?;
            expect_echo(status, &body, &format!("/many/{i}"))?;
        }
        Ok(())
    });

    suite.check("10 MiB request body intact (hash), through splice", || {
        let body: Vec<u8> = (0..10 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut tls = connect(GATEWAY, &tls13)?;
        let (status, resp) = request(&mut tls, "/upload", &[], Some(&body))?;
        let text = String::from_utf8_lossy(&resp);
        let want = hex(digest::digest(&digest::SHA256, &body).as_ref());
        if status != 200 || !text.contains(&want) || !text.contains("\"body_bytes\":10485760") {
            return Err(format!(
                "status {status}, body {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        Ok(())
    });

    suite.check("10 MiB response body intact (hash), through splice", || {
        let mut tls = connect(GATEWAY, &tls13)?;
        let (status, resp) = request(&mut tls, "/download", &[("x-echo-bytes", "10485760")], None)?;
        let pattern: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        if status != 200 || resp.len() != pattern.len() || resp != pattern {
            return Err(format!(
                "status {status}, {} bytes, equal: {}",
                resp.len(),
                resp == pattern
            ));
        }
        // The connection stays usable after a spliced body.
        let (status, body) = request(&mut tls, "/after-splice", &[], None)?;
        expect_echo(status, &body, "/after-splice")
    });

    let mid = tls_stat();
    suite.check("tls_stat: kTLS sessions counted, no decrypt errors", || {
        let tx = stat(&mid, "TlsTxSw") - stat(&before, "TlsTxSw");
        let rx = stat(&mid, "TlsRxSw") - stat(&before, "TlsRxSw");
        if tx < 9 || rx < 9 || stat(&mid, "TlsDecryptError") != 0 {
            return Err(format!("TlsTxSw +{tx}, TlsRxSw +{rx}, {}", fmt_stat(&mid)));
        }
        Ok(())
    });

    suite.check(
        "TLS 1.2 AES-GCM: every explicit nonce the server sends is distinct",
        || {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let relay = start_relay(RELAY, GATEWAY, seen.clone())?;
            let cfg = client_config(
                &pki,
                Some(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
                &rustls::version::TLS12,
            );
            let mut tls = connect(RELAY, &cfg)?;
            for i in 0..5 {
                let (status, body) = request(&mut tls, &format!("/nonce/{i}"), &[], None)?;
                expect_echo(status, &body, &format!("/nonce/{i}"))?;
            }
            drop(tls);
            std::thread::sleep(Duration::from_millis(200));
            drop(relay);
            let nonces = explicit_nonces(&seen.lock().map_err(|_| "lock")?);
            let mut sorted = nonces.clone();
            sorted.sort();
            sorted.dedup();
            if nonces.len() < 6 || sorted.len() != nonces.len() {
                let show: Vec<String> = nonces.iter().map(|n| hex(n)).collect();
                return Err(format!(
                    "{} encrypted records, {} distinct nonces: {}",
                    nonces.len(),
                    sorted.len(),
                    show.join(" ")
                ));
            }
            let show: Vec<String> = nonces.iter().take(3).map(|n| hex(n)).collect();
            println!(
                "  {} server records after ChangeCipherSpec, all nonces distinct; first: {}",
                nonces.len(),
                show.join(" ")
            );
            Ok(())
        },
    );

    suite.check("client KeyUpdate (update_requested): stream stays correct, or clean close with the reason logged", || {
        let mut tls = connect(GATEWAY, &tls13)?;
        let (status, body) = request(&mut tls, "/before-keyupdate", &[], None)?;
        expect_echo(status, &body, "/before-keyupdate")?;
        tls.conn.refresh_traffic_keys().map_err(|e| e.to_string())?;
        match request(&mut tls, "/after-keyupdate", &[], None) {
            Ok((status, body)) => expect_echo(status, &body, "/after-keyupdate"),
            Err(e) => {
                let logged = wait_log(&gw_log, "cannot take a new key into kernel TLS");
                let clean = e.contains("clean EOF");
                if logged && clean {
                    println!("  kernel cannot rekey: gateway closed cleanly (close_notify) and logged why");
                    Ok(())
                } else {
                    Err(format!("error {e:?}, logged: {logged}, clean close_notify: {clean}"))
                }
            }
        }
    });

    suite.check(
        "close_notify from the client: the gateway answers with close_notify",
        || {
            let mut tls = connect(GATEWAY, &tls13)?;
            let (status, body) = request(&mut tls, "/bye", &[], None)?;
            expect_echo(status, &body, "/bye")?;
            tls.conn.send_close_notify();
            tls.flush().map_err(|e| e.to_string())?;
            let mut rest = Vec::new();
            match tls.read_to_end(&mut rest) {
                Ok(_) if tls.conn.is_handshaking() => Err("handshaking?".into()),
                Ok(_) => Ok(()), // rustls reports Ok only after a close_notify
                Err(e) => Err(format!("unclean close: {e}")),
            }
        },
    );

    suite.check(
        "abrupt reset from the client mid-request, then the gateway still serves",
        || {
            let mut tls = connect(GATEWAY, &tls13)?;
            // One whole request first: the connection is then surely in the
            // kernel. A reset right after the handshake can beat the
            // handover, and a socket already reset cannot take the TLS ULP
            // (it is served, correctly, in userspace: seen once per few runs
            // as `userspace=1` in the final check).
            let (status, body) = request(&mut tls, "/before-reset", &[], None)?;
            expect_echo(status, &body, "/before-reset")?;
            tls.write_all(
                b"POST /reset HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\npartial",
            )
            .map_err(|e| e.to_string())?;
            tls.flush().map_err(|e| e.to_string())?;
            let sock = tls.get_ref();
            set_linger_zero(sock);
            drop(tls); // RST
            let mut tls = connect(GATEWAY, &tls13)?;
            let (status, body) = request(&mut tls, "/still-alive", &[], None)?;
            expect_echo(status, &body, "/still-alive")
        },
    );

    suite.check("fatal alert from the client (sent over the client's own kTLS): gateway closes and names it", || {
        let cfg = client_config(&pki, Some(cs::TLS13_AES_128_GCM_SHA256), &rustls::version::TLS13);
        let tls = connect(GATEWAY, &cfg)?;
        let (conn, sock) = tls.into_parts();
        let secrets = conn.dangerous_extract_secrets().map_err(|e| e.to_string())?;
        let fd = sock.as_raw_fd();
        ktls_core::setup_ulp(&portcullis::tls::ktls::sys::borrow(&fd)).map_err(|e| e.to_string())?;
        let (seq, tx) = secrets.tx;
        let tx = portcullis::tls::ktls::kernel_crypto_tx(rustls::ProtocolVersion::TLSv1_3, tx, seq)?;
        tx.set(&portcullis::tls::ktls::sys::borrow(&fd)).map_err(|e| e.to_string())?;
        portcullis::tls::ktls::sys::send_record(fd, 21, &[2, 40]).map_err(|e| e.to_string())?;
        if wait_log(&gw_log, "client sent a fatal TLS alert") && wait_log(&gw_log, "HandshakeFailure") {
            Ok(())
        } else {
            Err("no log line naming the alert".into())
        }
    });

    // HTTP/2 over kernel TLS (tests/ktls/h2.rs).
    h2::checks(&mut suite, &pki, &tls13, &gw_log);
    // Idle memory per kTLS connection, both protocols (tests/ktls/idle.rs).
    idle::checks(&mut suite, &bin, &work, &tls13, &h2::h2_only(&tls13));

    let after = tls_stat();
    println!("tls_stat after: {}", fmt_stat(&after));

    // Shut down and read what the workers counted.
    // SAFETY-free: kill via the pid with the `kill` command from busybox.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(gw.id().to_string())
        .status();
    let status = wait_exit(&mut gw, Duration::from_secs(15));
    suite.check("SIGTERM: gateway exits 0", || match status {
        Some(0) => Ok(()),
        other => Err(format!("exit {other:?}")),
    });
    let log = std::fs::read_to_string(&gw_log).unwrap_or_default();
    let (mut ktls, mut user, mut spliced, mut copied) = (0u64, 0u64, 0u64, 0u64);
    for line in log.lines().filter(|l| l.contains("worker stopped")) {
        ktls += field(line, "ktls");
        user += field(line, "userspace");
        spliced += field(line, "body_bytes_spliced");
        copied += field(line, "body_bytes_copied");
    }
    println!("connections: ktls={ktls} userspace={user}; body bytes: spliced={spliced} copied={copied} ({:.1}% spliced)",
        100.0 * spliced as f64 / (spliced + copied).max(1) as f64);
    suite.check(
        "connections went to kTLS and bulk body bytes took the splice path",
        || {
            if ktls >= 10 && user == 0 && spliced >= 2 * 10 * 1024 * 1024 - 64 * 1024 {
                Ok(())
            } else {
                Err(format!(
                    "ktls={ktls} userspace={user} spliced={spliced} copied={copied}"
                ))
            }
        },
    );
    let _ = echo.kill();
    for line in log.lines().filter(|l| {
        l.contains("kernel TLS")
            || l.contains("WARN")
            || l.contains("over userspace TLS")
            || l.contains("HTTP/2")
    }) {
        println!("  gw: {line}");
    }
    std::process::exit(suite.finish());
}

#[derive(Default)]
struct Suite {
    passed: usize,
    failed: usize,
}

impl Suite {
    fn check(&mut self, name: &str, f: impl FnOnce() -> Result<(), String>) {
        let t = Instant::now();
        match f() {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name} ({:.2}s)", t.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
    fn finish(&self) -> i32 {
        println!("{} passed, {} failed", self.passed, self.failed);
        i32::from(self.failed > 0)
    }
}

fn client_config(
    pki: &Path,
    suite: Option<SupportedCipherSuite>,
    version: &'static SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(s) = suite {
        provider.cipher_suites = vec![s];
    }
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.join("ca.pem")).expect("ca.pem") {
        roots.add(ca.expect("ca")).expect("add ca");
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(pki.join("client.pem"))
        .expect("client.pem")
        .map(|c| c.expect("cert"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("client.key")).expect("client.key");
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client cert");
    cfg.enable_secret_extraction = true;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn connect(addr: &str, cfg: &Arc<ClientConfig>) -> Result<Tls, String> {
    let sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// One HTTP/1.1 request; returns (status, body). "clean EOF" in the error
/// when the server closed with close_notify before answering.
fn request(
    tls: &mut Tls,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: localhost\r\n",
        if body.is_some() { "POST" } else { "GET" }
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    if let Some(b) = body {
        tls.write_all(b).map_err(|e| format!("write body: {e}"))?;
    }
    tls.flush().map_err(|e| format!("flush: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match tls.read(&mut chunk) {
            Ok(0) => return Err("clean EOF before a response".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("bad head {head}"))?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .ok_or(format!("no content-length in {head}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match tls.read(&mut chunk) {
            Ok(0) => return Err(format!("EOF after {} of {len} body bytes", body.len())),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read body: {e}")),
        }
    }
    Ok((status, body))
}

fn expect_echo(status: u16, body: &[u8], path: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    if status == 200
        && text.contains(&format!("\"path\":\"{path}\""))
        && text.contains("\"x-forwarded-proto\":\"https\"")
    {
        Ok(())
    } else {
        Err(format!(
            "status {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }
}

/// A TCP relay that records every byte the server sends.
struct Relay(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn start_relay(
    listen: &str,
    upstream: &'static str,
    seen: Arc<Mutex<Vec<u8>>>,
) -> Result<Relay, String> {
    let listener = TcpListener::bind(listen).map_err(|e| e.to_string())?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::spawn(move || {
        let Ok((client, _)) = listener.accept() else {
            return;
        };
        let Ok(server) = TcpStream::connect(upstream) else {
            return;
        };
        let (mut c2, mut s2) = (
            client.try_clone().expect("clone"),
            server.try_clone().expect("clone"),
        );
        let up = std::thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut s2);
            let _ = s2.shutdown(Shutdown::Write);
        });
        let (mut s, mut c) = (server, client);
        let mut buf = [0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Ok(mut v) = seen.lock() {
                        v.extend_from_slice(&buf[..n]);
                    }
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = c.shutdown(Shutdown::Write);
        let _ = up.join();
    });
    Ok(Relay(stop))
}

/// TLS 1.2 records from the server after its ChangeCipherSpec carry an 8-byte
/// explicit nonce first; returns them in order.
fn explicit_nonces(stream: &[u8]) -> Vec<[u8; 8]> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut encrypted = false;
    while pos + 5 <= stream.len() {
        let typ = stream[pos];
        let len = usize::from(u16::from_be_bytes([stream[pos + 3], stream[pos + 4]]));
        let body = &stream[pos + 5..(pos + 5 + len).min(stream.len())];
        if typ == 20 {
            encrypted = true;
        } else if encrypted && body.len() >= 8 {
            let mut n = [0u8; 8];
            n.copy_from_slice(&body[..8]);
            out.push(n);
        }
        pos += 5 + len;
    }
    out
}

fn set_linger_zero(sock: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn tls_stat() -> Vec<(String, i64)> {
    std::fs::read_to_string("/proc/net/tls_stat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn stat(s: &[(String, i64)], key: &str) -> i64 {
    s.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

fn fmt_stat(s: &[(String, i64)]) -> String {
    [
        "TlsCurrTxSw",
        "TlsCurrRxSw",
        "TlsTxSw",
        "TlsRxSw",
        "TlsDecryptError",
        "TlsRxNoPadViolation",
    ]
    .iter()
    .map(|k| format!("{k}={}", stat(s, k)))
    .collect::<Vec<_>>()
    .join(" ")
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn wait_log(path: &Path, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if std::fs::read_to_string(path)
            .map(|s| s.contains(needle))
            .unwrap_or(false)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn wait_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("FAIL nothing listens on {addr}");
    std::process::exit(1);
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    cmd.stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    if !out.status.success() {
        println!("FAIL {:?}: {}", cmd, String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
}
