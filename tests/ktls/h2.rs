//! The HTTP/2 part of the kernel-TLS suite: clients that offer only `h2`,
//! served by the gateway over kernel TLS (`PollKtls`).
//!
//! The client is the `h2` crate (the same implementation the gateway
//! serves with, but its client half) on a monoio runtime, over userspace
//! rustls through the small poll-style adapter `ClientTls` below; the
//! guest has no curl or nghttp. The TLS-level cases (close_notify, a fatal
//! alert) use a plain blocking rustls stream and hand-written HTTP/2
//! frames, so that exactly one thing happens on the wire at a time.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::{ClientConfig, ClientConnection};

use super::{client_config, connect, fmt_stat, hex, stat, tls_stat, wait_log, Suite, GATEWAY};

/// The admin listener the suite's gateway config opens (for /metrics).
pub const ADMIN: &str = "127.0.0.1:9100";

/// Client TLS (rustls, in userspace) as a poll-style stream for `h2`.
/// `conn` is shared so a check can ask rustls for a KeyUpdate mid-connection.
struct ClientTls {
    tcp: TcpStreamPoll,
    conn: Rc<RefCell<ClientConnection>>,
    /// Ciphertext rustls produced; `out[sent..]` is not yet written.
    out: Vec<u8>,
    sent: usize,
    /// Set when the server's close_notify arrived.
    close_notify: Rc<Cell<bool>>,
    /// Ciphertext read and not yet taken by rustls: it is fed only while
    /// no plaintext waits, so rustls's received-plaintext limit holds.
    incoming: Vec<u8>,
}

impl ClientTls {
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            while self.sent < self.out.len() {
                match Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.sent..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => self.sent += n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            self.out.clear();
            self.sent = 0;
            let mut conn = self.conn.borrow_mut();
            if !conn.wants_write() {
                return Poll::Ready(Ok(()));
            }
            conn.write_tls(&mut self.out)?;
        }
    }
}

impl AsyncRead for ClientTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let read = this
                .conn
                .borrow_mut()
                .reader()
                .read(buf.initialize_unfilled());
            match read {
                Ok(0) => {
                    this.close_notify.set(true);
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // What rustls owes the server (a KeyUpdate answer) goes first.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if this.incoming.is_empty() {
                let mut chunk = [0u8; 16 * 1024];
                let mut rb = ReadBuf::new(&mut chunk);
                match Pin::new(&mut this.tcp).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                if rb.filled().is_empty() {
                    // EOF: rustls tells a clean one (close_notify) from not.
                    let mut conn = this.conn.borrow_mut();
                    conn.read_tls(&mut &[][..])?;
                    conn.process_new_packets().map_err(io::Error::other)?;
                    continue;
                }
                this.incoming.extend_from_slice(rb.filled());
            }
            let mut conn = this.conn.borrow_mut();
            let mut rest = &this.incoming[..];
            let taken = conn.read_tls(&mut rest)?;
            this.incoming.drain(..taken);
            conn.process_new_packets().map_err(io::Error::other)?;
        }
    }
}

impl AsyncWrite for ClientTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        let n = this.conn.borrow_mut().writer().write(data)?;
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.conn.borrow_mut().send_close_notify();
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_shutdown(cx),
            other => other,
        }
    }
}

/// One HTTP/2 client connection.
struct H2 {
    send: h2::client::SendRequest<Bytes>,
    conn: Rc<RefCell<ClientConnection>>,
    close_notify: Rc<Cell<bool>>,
    /// The connection task's result, when it ended.
    ended: Rc<RefCell<Option<Result<(), String>>>>,
}

/// Handshakes TLS (blocking, before the runtime sees the socket), checks
/// ALPN chose h2, then the HTTP/2 preface; the connection runs in its own task.
async fn h2_connect(cfg: &Arc<ClientConfig>) -> Result<H2, String> {
    let tls = connect(GATEWAY, cfg)?;
    if tls.conn.alpn_protocol() != Some(b"h2") {
        return Err(format!("ALPN chose {:?}", tls.conn.alpn_protocol()));
    }
    let (conn, sock) = tls.into_parts();
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let tcp = monoio::net::TcpStream::from_std(sock)
        .map_err(|e| e.to_string())?
        .try_into_poll_io()
        .map_err(|(e, _)| e.to_string())?;
    let conn = Rc::new(RefCell::new(conn));
    let close_notify = Rc::new(Cell::new(false));
    let io = ClientTls {
        tcp,
        conn: conn.clone(),
        out: Vec::new(),
        sent: 0,
        close_notify: close_notify.clone(),
        incoming: Vec::new(),
    };
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(8 << 20)
        .initial_connection_window_size(32 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let ended = Rc::new(RefCell::new(None));
    let result = ended.clone();
    monoio::spawn(async move {
        let r = connection.await.map_err(|e| e.to_string());
        *result.borrow_mut() = Some(r);
    });
    Ok(H2 {
        send,
        conn,
        close_notify,
        ended,
    })
}

/// One request on the connection; (status, body).
async fn h2_request(
    send: &h2::client::SendRequest<Bytes>,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> Result<(u16, Vec<u8>), String> {
    let mut req = http::Request::builder()
        .method(if body.is_some() { "POST" } else { "GET" })
        .uri(format!("https://localhost{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).map_err(|e| e.to_string())?;
    let mut send = send
        .clone()
        .ready()
        .await
        .map_err(|e| format!("ready: {e}"))?;
    let (resp, mut out) = send
        .send_request(req, body.is_none())
        .map_err(|e| format!("send_request: {e}"))?;
    if let Some(b) = body {
        // h2 queues what the window does not take yet and sends it as the
        // gateway opens it.
        out.send_data(b, true)
            .map_err(|e| format!("send_data: {e}"))?;
    }
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body after {} bytes: {e}", got.len()))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    Ok((status, got))
}

fn expect_path(status: u16, body: &[u8], path: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    if status == 200
        && text.contains(&format!("\"path\":\"{path}\""))
        && text.contains("\"x-forwarded-proto\":\"https\"")
    {
        Ok(())
    } else {
        Err(format!(
            "{path}: status {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }
}

/// Runs `f` on a fresh monoio runtime (one per check, as each check is
/// independent), with a deadline.
fn block_on<F: Future<Output = Result<(), String>>>(f: impl FnOnce() -> F) -> Result<(), String> {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        match monoio::time::timeout(Duration::from_secs(120), f()).await {
            Ok(r) => r,
            Err(_) => Err("timed out after 120 s".into()),
        }
    })
}

/// The client config with `h2` as the only ALPN protocol.
pub fn h2_only(cfg: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut cfg = (**cfg).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(cfg)
}

/// Blocking client for the TLS-level cases: TLS with ALPN h2, then the
/// HTTP/2 preface and an empty SETTINGS, and the server's first frame read.
fn raw_h2(cfg: &Arc<ClientConfig>) -> Result<super::Tls, String> {
    let mut tls = connect(GATEWAY, cfg)?;
    if tls.conn.alpn_protocol() != Some(b"h2") {
        return Err(format!("ALPN chose {:?}", tls.conn.alpn_protocol()));
    }
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    tls.write_all(&hello).map_err(|e| format!("preface: {e}"))?;
    tls.flush().map_err(|e| e.to_string())?;
    let mut head = [0u8; 9];
    tls.read_exact(&mut head)
        .map_err(|e| format!("server SETTINGS: {e}"))?;
    if head[3] != 4 {
        return Err(format!("first frame from the server has type {}", head[3]));
    }
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).map_err(|e| e.to_string())?;
    Ok(tls)
}

/// Reads the Prometheus text of the gateway's admin listener.
fn metrics() -> String {
    let Ok(mut s) = std::net::TcpStream::connect(ADMIN) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn h2_metric(mode: &str) -> f64 {
    metric(
        &metrics(),
        &format!("portcullis_http2_connections_total{{tls_mode=\"{mode}\"}}"),
    )
}

/// Waits (metrics are published once a second) until `ok` holds.
fn wait_metric(ok: impl Fn() -> bool) -> bool {
    for _ in 0..50 {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The HTTP/2 checks. `tls13` is the suite's TLS 1.3 client config (any
/// suite, ALPN set here).
pub fn checks(suite: &mut Suite, pki: &Path, tls13: &Arc<ClientConfig>, gw_log: &Path) {
    let h2cfg = h2_only(tls13);
    let before = tls_stat();
    let ktls_before = h2_metric("ktls");
    let user_before = h2_metric("userspace");

    suite.check("h2 only: a client offering only h2 is served over kTLS", || {
        block_on(|| async {
            let c = h2_connect(&h2cfg).await?;
            for i in 0..3 {
                let path = format!("/h2/{i}");
                let (status, body) = h2_request(&c.send, &path, &[], None).await?;
                expect_path(status, &body, &path)?;
            }
            Ok(())
        })?;
        let counted = wait_metric(|| h2_metric("ktls") >= ktls_before + 1.0);
        let after = tls_stat();
        let tx = stat(&after, "TlsTxSw") - stat(&before, "TlsTxSw");
        let rx = stat(&after, "TlsRxSw") - stat(&before, "TlsRxSw");
        let user = h2_metric("userspace") - user_before;
        if !counted || user != 0.0 || tx < 1 || rx < 1 {
            return Err(format!(
                "http2 ktls +{}, userspace +{user}; TlsTxSw +{tx}, TlsRxSw +{rx} ({})",
                h2_metric("ktls") - ktls_before,
                fmt_stat(&after)
            ));
        }
        println!("  portcullis_http2_connections_total{{tls_mode=\"ktls\"}} +1, TlsTxSw +{tx}, TlsRxSw +{rx}");
        Ok(())
    });

    suite.check(
        "h2 over kTLS: 20 concurrent streams on one connection",
        || {
            block_on(|| async {
                let c = h2_connect(&h2cfg).await?;
                let start = std::time::Instant::now();
                let mut tasks = Vec::new();
                for i in 0..20 {
                    let send = c.send.clone();
                    tasks.push(monoio::spawn(async move {
                        let path = format!("/h2/concurrent/{i}");
                        // Each answer comes 500 ms late: one after another
                        // they would take 10 s.
                        let (status, body) =
                            h2_request(&send, &path, &[("x-echo-delay-ms", "500")], None).await?;
                        expect_path(status, &body, &path)
                    }));
                }
                for t in tasks {
                    t.await?;
                }
                let took = start.elapsed();
                if took >= Duration::from_secs(5) {
                    return Err(format!("20 streams of 500 ms took {took:?}: not at once"));
                }
                println!("  20 streams of 500 ms each answered in {took:.2?}");
                Ok(())
            })
        },
    );

    suite.check(
        "h2 over kTLS: 1 MiB up and 1 MiB down, byte for byte",
        || {
            block_on(|| async {
                let c = h2_connect(&h2cfg).await?;
                let up: Vec<u8> = (0..1024 * 1024u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect();
                let want = hex(digest::digest(&digest::SHA256, &up).as_ref());
                let (status, body) =
                    h2_request(&c.send, "/h2/upload", &[], Some(Bytes::from(up))).await?;
                let text = String::from_utf8_lossy(&body);
                if status != 200
                    || !text.contains(&want)
                    || !text.contains("\"body_bytes\":1048576")
                {
                    return Err(format!(
                        "upload: status {status}: {}",
                        text.chars().take(300).collect::<String>()
                    ));
                }
                let (status, body) = h2_request(
                    &c.send,
                    "/h2/download",
                    &[("x-echo-bytes", "1048576")],
                    None,
                )
                .await?;
                let pattern: Vec<u8> = (0..1024 * 1024usize).map(|i| (i % 251) as u8).collect();
                if status != 200 || body != pattern {
                    return Err(format!(
                        "download: status {status}, {} bytes, equal: {}",
                        body.len(),
                        body == pattern
                    ));
                }
                Ok(())
            })
        },
    );

    suite.check(
        "h2 over kTLS: client KeyUpdate (update_requested): streams stay correct, or clean close with the reason logged",
        || {
            let outcome = block_on(|| async {
                let c = h2_connect(&h2cfg).await?;
                let (status, body) = h2_request(&c.send, "/h2/before-keyupdate", &[], None).await?;
                expect_path(status, &body, "/h2/before-keyupdate")?;
                c.conn
                    .borrow_mut()
                    .refresh_traffic_keys()
                    .map_err(|e| e.to_string())?;
                match h2_request(&c.send, "/h2/after-keyupdate", &[], None).await {
                    Ok((status, body)) => {
                        expect_path(status, &body, "/h2/after-keyupdate")?;
                        // And the other direction's new key, on a second stream.
                        let (status, body) =
                            h2_request(&c.send, "/h2/after-keyupdate-2", &[], None).await?;
                        expect_path(status, &body, "/h2/after-keyupdate-2")?;
                        println!("  kernel rekeyed: requests after the KeyUpdate answered");
                        Ok(())
                    }
                    Err(e) => {
                        // Let the connection task see the end.
                        for _ in 0..50 {
                            if c.ended.borrow().is_some() {
                                break;
                            }
                            monoio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if c.close_notify.get() {
                            Err(format!("CLEAN: {e}"))
                        } else {
                            Err(format!("no close_notify from the gateway: {e}; connection: {:?}", c.ended.borrow()))
                        }
                    }
                }
            });
            match outcome {
                Ok(()) => Ok(()),
                Err(e) if e.starts_with("CLEAN: ") => {
                    if wait_log(gw_log, "cannot take a new key into kernel TLS") {
                        println!("  kernel cannot rekey: gateway closed the h2 connection with close_notify and logged why");
                        Ok(())
                    } else {
                        Err(format!("closed without the log line: {e}"))
                    }
                }
                Err(e) => Err(e),
            }
        },
    );

    suite.check(
        "h2 over kTLS: close_notify from the client mid-connection: the gateway answers with close_notify",
        || {
            let mut tls = raw_h2(&h2cfg)?;
            tls.conn.send_close_notify();
            tls.flush().map_err(|e| e.to_string())?;
            // The gateway's SETTINGS ack and GOAWAY may come first; rustls
            // reports Ok at the end only after a close_notify.
            let mut rest = Vec::new();
            match tls.read_to_end(&mut rest) {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("unclean close: {e}")),
            }
        },
    );

    suite.check(
        "h2 over kTLS: a connection error, then more frames unread: GOAWAY PROTOCOL_ERROR arrives, the close is clean",
        || {
            let mut tls = raw_h2(&h2cfg)?;
            // PING on stream 1: a connection error (PROTOCOL_ERROR).
            let mut bad = vec![0, 0, 8, 6, 0, 0, 0, 0, 1];
            bad.extend_from_slice(&[0; 8]);
            tls.write_all(&bad).map_err(|e| format!("bad PING: {e}"))?;
            tls.flush().map_err(|e| e.to_string())?;
            // More frames, written apart and nothing read: without the
            // gateway's lingering close they meet a reset.
            for i in 0..50u64 {
                std::thread::sleep(Duration::from_millis(5));
                let mut ping = vec![0, 0, 8, 6, 0, 0, 0, 0, 0];
                ping.extend_from_slice(&i.to_be_bytes());
                tls.write_all(&ping)
                    .and_then(|()| tls.flush())
                    .map_err(|e| format!("PING {i} met the close: {e}"))?;
            }
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest)
                .map_err(|e| format!("unclean close: {e}"))?;
            let mut at = 0;
            while at + 9 <= rest.len() {
                let len = usize::from(rest[at]) << 16
                    | usize::from(rest[at + 1]) << 8
                    | usize::from(rest[at + 2]);
                if rest[at + 3] == 7 && at + 17 <= rest.len() {
                    let code = u32::from_be_bytes([
                        rest[at + 13],
                        rest[at + 14],
                        rest[at + 15],
                        rest[at + 16],
                    ]);
                    return if code == 1 {
                        Ok(())
                    } else {
                        Err(format!("GOAWAY with code {code}, not PROTOCOL_ERROR"))
                    };
                }
                at += 9 + len;
            }
            Err(format!("no GOAWAY in the {} bytes before the close", rest.len()))
        },
    );

    suite.check(
        "h2 over kTLS: fatal alert from the client mid-connection: gateway closes and names it, then serves on",
        || {
            // One known suite, so the client's kernel can take the key.
            let cfg = h2_only(&client_config(
                pki,
                Some(cs::TLS13_AES_128_GCM_SHA256),
                &rustls::version::TLS13,
            ));
            let marks = std::fs::read_to_string(gw_log)
                .map(|s| s.matches("alert=DecryptError").count())
                .unwrap_or(0);
            let tls = raw_h2(&cfg)?;
            // The alert goes through the client's own kTLS, so rustls's
            // record sequence numbers stay right without rustls sending it.
            let (conn, sock) = tls.into_parts();
            let secrets = conn
                .dangerous_extract_secrets()
                .map_err(|e| e.to_string())?;
            let fd = sock.as_raw_fd();
            ktls_core::setup_ulp(&portcullis::tls::ktls::sys::borrow(&fd))
                .map_err(|e| e.to_string())?;
            let (seq, tx) = secrets.tx;
            let tx =
                portcullis::tls::ktls::kernel_crypto_tx(rustls::ProtocolVersion::TLSv1_3, tx, seq)?;
            tx.set(&portcullis::tls::ktls::sys::borrow(&fd))
                .map_err(|e| e.to_string())?;
            // decrypt_error (51), fatal.
            portcullis::tls::ktls::sys::send_record(fd, 21, &[2, 51])
                .map_err(|e| e.to_string())?;
            let named = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(50));
                std::fs::read_to_string(gw_log)
                    .map(|s| s.matches("alert=DecryptError").count() > marks)
                    .unwrap_or(false)
            });
            if !named {
                return Err("no log line naming the alert (DecryptError)".into());
            }
            block_on(|| async {
                let c = h2_connect(&h2cfg).await?;
                let (status, body) = h2_request(&c.send, "/h2/after-alert", &[], None).await?;
                expect_path(status, &body, "/h2/after-alert")
            })
        },
    );
}
