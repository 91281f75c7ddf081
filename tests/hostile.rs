//! Hostile clients and failing backends: every path has a bound, and a
//! backend connection is reused only when it is clean.
//!
//! Real gateway, real TLS clients, the real echo backend and small scripted
//! backends (real sockets). Each test plays one misbehaviour: a client that
//! never reads, a body trickled a byte at a time, a connection flood past
//! the caps, a slow admin client, a backend that sends more than it should,
//! a pooled connection that dies under a POST, a TLS backend that is cut off,
//! an HTTP/1.0 client facing a chunked backend.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Polls the admin listener until `series` equals `want` (bounded).
fn wait_metric(admin: &str, series: &str, want: f64, within: Duration) -> Option<f64> {
    let mut last = None;
    let ok = wait_until(within, || {
        last = metric(&admin_get(admin, "/metrics").1, series);
        last == Some(want)
    });
    if ok {
        None
    } else {
        Some(last.unwrap_or(f64::NAN))
    }
}

fn with_admin(c: Config) -> (Config, String) {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut c = c.workers(1);
    c.admin = Some(admin.clone());
    (c, admin)
}

#[test]
fn a_client_that_never_reads_a_large_response_is_dropped_after_the_send_timeout() {
    let mut admin = String::new();
    let st = Stack::start("hostile-noread", |c, _| {
        let (c, a) = with_admin(c.timeouts_line("send = \"2s\""));
        admin = a;
        c
    });
    let mut conn = st.gw.tls();
    conn.send(&get_req("/big", &["x-echo-bytes: 268435456"]))
        .expect("send the request");
    // The client never reads: its window closes and the gateway's write stalls.
    assert_eq!(
        wait_metric(
            &admin,
            "portcullis_open_connections",
            1.0,
            Duration::from_secs(5)
        ),
        None,
        "the connection is open while the response is being written"
    );
    let started = Instant::now();
    if let Some(v) = wait_metric(
        &admin,
        "portcullis_open_connections",
        0.0,
        Duration::from_secs(12),
    ) {
        panic!("the gateway still holds the non-reading client ({v} open)");
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    // What the client sees once it reads: some body, then a reset (never a
    // clean end that could pass for a complete response).
    conn.set_read_timeout(Duration::from_secs(5));
    let (_, closed) = conn.read_until_close(Duration::from_secs(10));
    assert!(closed, "the connection ended");
}

#[test]
fn a_client_that_pipelines_and_never_reads_its_error_responses_is_dropped() {
    let mut admin = String::new();
    let st = Stack::start("hostile-noread-errors", |c, _| {
        let (c, a) = with_admin(c.timeouts_line("send = \"2s\""));
        admin = a;
        c
    });
    let mut conn = st.gw.tls();
    conn.set_read_timeout(Duration::from_secs(1));
    conn.s
        .sock
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    // Requests for a host no route serves: each gets a 404 on a kept-alive
    // connection. Write them for a while (bounded), never read.
    let request = b"GET /nothing HTTP/1.1\r\nHost: nowhere.example\r\n\r\n".repeat(200);
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        if conn.send(&request).is_err() {
            break;
        }
    }
    if let Some(v) = wait_metric(
        &admin,
        "portcullis_open_connections",
        0.0,
        Duration::from_secs(10),
    ) {
        panic!("the gateway still holds the client that never reads its 404s ({v} open)");
    }
}

#[test]
fn a_body_trickled_a_byte_at_a_time_gets_408_after_the_body_deadline() {
    let st = Stack::start("hostile-trickle", |c, echo| {
        let mut c = c;
        c.routes = vec![RouteCfg::new("/", &[&echo.addr()]).line("request_body_timeout = \"2s\"")];
        c
    });
    for chunked in [false, true] {
        let mut conn = st.gw.tls();
        let head = if chunked {
            "POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
        } else {
            "POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n"
        };
        conn.send(head.as_bytes()).unwrap();
        let started = Instant::now();
        // One byte every 200 ms (bounded: at most 10 s).
        let mut answered = None;
        conn.set_read_timeout(Duration::from_millis(200));
        while started.elapsed() < Duration::from_secs(10) {
            let byte: &[u8] = if chunked { b"1\r\nx\r\n" } else { b"x" };
            if conn.send(byte).is_err() {
                break;
            }
            match conn.read_response() {
                Ok(r) => {
                    answered = Some(r);
                    break;
                }
                Err(_) => continue,
            }
        }
        let r = answered.unwrap_or_else(|| panic!("chunked={chunked}: no answer within 10 s"));
        r.assert_error(408, "PCS.4081");
        assert!(r.connection_close(), "chunked={chunked}: Connection: close");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
            "chunked={chunked}: cut after {took:?} (deadline 2 s)"
        );
    }
}

#[test]
fn a_slow_but_steady_upload_outlives_the_base_deadline() {
    let st = Stack::start("hostile-steady", |c, echo| {
        let mut c = c;
        c.routes = vec![RouteCfg::new("/", &[&echo.addr()])
            .line("request_body_timeout = \"1s\"")
            .line("min_body_rate = \"1KiB\"")];
        c
    });
    let mut conn = st.gw.tls();
    let total = 48 * 1024;
    conn.send(
        format!("POST /steady HTTP/1.1\r\nHost: localhost\r\nContent-Length: {total}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let body = pattern(total);
    let started = Instant::now();
    // 8 KiB every 400 ms: 2.4 s in all, well past the 1 s base, and far
    // above 1 KiB/s, so every piece extends the deadline.
    for piece in body.chunks(8 * 1024) {
        conn.send(piece).unwrap();
        thread::sleep(Duration::from_millis(400));
    }
    let r = conn.read_final().expect("response");
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_sha256"], sha256_hex(&body));
}

#[test]
fn a_connection_flood_past_the_caps_is_refused_at_accept_and_served_clients_keep_going() {
    let mut admin = String::new();
    let st = Stack::start("hostile-flood", |c, _| {
        let (c, a) = with_admin(
            c.server_line("max_connections = 12")
                .server_line("max_handshakes = 4"),
        );
        admin = a;
        c
    });
    // Twelve served clients, kept alive.
    let mut served: Vec<_> = (0..12).map(|_| st.gw.tls()).collect();
    for c in served.iter_mut() {
        assert_eq!(c.get("/", &[]).expect("served").status, 200);
    }
    // Twenty more: every one is closed at once.
    for i in 0..20 {
        let mut s = TcpStream::connect(st.gw.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("extra connection {i}: expected it closed at once, got {other:?}"),
        }
    }
    // The served ones go on, and the admin listener answers.
    for c in served.iter_mut() {
        assert_eq!(c.get("/again", &[]).expect("still served").status, 200);
    }
    let body = admin_get(&admin, "/healthz");
    assert_eq!(body.0, 200);
    let ok = wait_until(Duration::from_secs(5), || {
        metric(
            &admin_get(&admin, "/metrics").1,
            "portcullis_connections_refused_total{cap=\"max_connections\"}",
        ) >= Some(20.0)
    });
    assert!(ok, "refusals are counted");
    drop(served);
    assert_eq!(
        wait_metric(
            &admin,
            "portcullis_open_connections",
            0.0,
            Duration::from_secs(10)
        ),
        None
    );

    // Handshakes: four connections that never send a ClientHello fill the
    // handshake cap; a fifth is refused; once they time out, all is well.
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(st.gw.addr()).unwrap())
        .collect();
    assert_eq!(
        wait_metric(
            &admin,
            "portcullis_handshakes_in_progress",
            4.0,
            Duration::from_secs(5)
        ),
        None
    );
    let mut fifth = TcpStream::connect(st.gw.addr()).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(
        matches!(fifth.read(&mut b), Ok(0) | Err(_)),
        "a handshake past the cap is closed at once"
    );
    drop(silent);
    let ok = wait_until(Duration::from_secs(5), || {
        st.gw
            .tls_with(client_config(&st.certs, ClientAuth::Default, &[]))
            .is_ok()
    });
    assert!(ok, "handshakes work again once the silent ones are gone");
    let ok = wait_until(Duration::from_secs(5), || {
        metric(
            &admin_get(&admin, "/metrics").1,
            "portcullis_connections_refused_total{cap=\"max_handshakes\"}",
        ) >= Some(1.0)
    });
    assert!(ok, "handshake refusals are counted");
}

#[test]
fn a_slow_admin_client_does_not_block_metrics() {
    let mut admin = String::new();
    let _st = Stack::start("hostile-admin", |c, _| {
        let (c, a) = with_admin(c);
        admin = a;
        c
    });
    // Three clients that connect and say nothing, one that sends half a line.
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&admin).unwrap())
        .collect();
    let mut half = TcpStream::connect(&admin).unwrap();
    half.write_all(b"GET /metr").unwrap();
    idle.push(half);
    let started = Instant::now();
    let (status, body) = admin_get(&admin, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("portcullis_open_connections"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/metrics waited {:?} behind slow clients",
        started.elapsed()
    );
}

/// A response the backend writes, then (after a pause) more bytes it should
/// never have sent: they must not reach the next client.
#[test]
fn a_backend_connection_with_bytes_after_its_response_is_never_reused() {
    let smuggled =
        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: 1\r\n\r\nsmuggled".to_vec();
    let pause = Duration::from_millis(100);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "HEAD",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec(),
        ),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n".to_vec()),
        (
            "GET",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
    ];
    for (method, first) in cases {
        let (first2, smuggled2) = (first.clone(), smuggled.clone());
        let backend = MiniBackend::start(move |head| {
            if head.contains("/dirty") {
                Behaviour::Script(vec![
                    (Duration::ZERO, first2.clone()),
                    (pause, smuggled2.clone()),
                ])
            } else {
                Behaviour::Respond {
                    body: "\"clean\"".into(),
                    delay: Duration::ZERO,
                }
            }
        });
        let st = Stack::start("hostile-dirty", |c, _| {
            let mut c = c.workers(1);
            c.routes = vec![RouteCfg::new("/", &[&backend.addr()])];
            c
        });
        let what = format!("{method} answered {:?}", String::from_utf8_lossy(&first));
        let mut conn = st.gw.tls();
        conn.send(format!("{method} /dirty HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .unwrap();
        let r = conn
            .read_response_for(method == "HEAD")
            .expect("first response");
        assert!(r.status < 400, "{what}: {}", r.status);
        // Let the stray bytes arrive on the pooled backend connection.
        thread::sleep(pause * 4);
        let r = conn.get("/clean", &[]).expect("second response");
        assert_eq!(
            r.header("x-smuggled"),
            None,
            "{what}: the next client got the stray response"
        );
        assert_eq!(r.text(), "\"clean\"", "{what}");
    }
}

#[test]
fn a_request_that_may_have_reached_a_dying_backend_is_retried_only_if_idempotent() {
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = seen.clone();
    // `/flaky-*`: the first time, read the request and close; later, answer.
    let first_time = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let backend = MiniBackend::start(move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        if path.starts_with("/flaky") {
            seen2.fetch_add(1, Ordering::SeqCst);
            if first_time.lock().unwrap().insert(path) {
                return Behaviour::Close;
            }
        }
        Behaviour::Respond {
            body: "\"ok\"".into(),
            delay: Duration::ZERO,
        }
    });
    let st = Stack::start("hostile-retry", |c, _| {
        let mut c = c.workers(1);
        c.routes = vec![RouteCfg::new("/", &[&backend.addr()])];
        c
    });
    for (method, retried) in [
        ("POST", false),
        ("PATCH", false),
        ("GET", true),
        ("PUT", true),
    ] {
        seen.store(0, Ordering::SeqCst);
        let mut conn = st.gw.tls();
        // Pools a backend connection.
        assert_eq!(conn.get("/warm", &[]).unwrap().status, 200);
        let req = format!(
            "{method} /flaky-{method} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
        );
        let r = conn.request(req.as_bytes()).expect("response");
        if retried {
            assert_eq!(r.status, 200, "{method}: retried on a fresh connection");
            assert_eq!(seen.load(Ordering::SeqCst), 2, "{method}: sent twice");
        } else {
            r.assert_error(502, "PCS.5021");
            assert_eq!(
                seen.load(Ordering::SeqCst),
                1,
                "{method}: must reach the backend once"
            );
        }
    }
}

#[test]
fn an_http10_client_never_gets_a_chunked_response() {
    let st = Stack::start("hostile-http10", |c, _| c);
    let mut conn = st.gw.tls();
    conn.send(
        b"GET /c HTTP/1.0\r\nHost: localhost\r\nx-echo-chunked: 1\r\nx-echo-bytes: 100000\r\n\r\n",
    )
    .unwrap();
    let (raw, closed) = conn.read_until_close(Duration::from_secs(10));
    assert!(closed, "the end of the body is the end of the connection");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end..];
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "no chunked framing for HTTP/1.0: {head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let expected: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(body.len(), expected.len(), "the body, de-chunked");
    assert!(body == expected.as_slice());
    // The same request over HTTP/1.1 stays chunked.
    let r = st
        .gw
        .tls()
        .get("/c", &["x-echo-chunked: 1", "x-echo-bytes: 1000"])
        .unwrap();
    assert!(r.chunked);
}

/// A TLS backend answering one close-delimited response per connection;
/// it ends it with close_notify, or (`truncate`) with a bare TCP close.
fn tls_backend(certs: &CertDir, truncate: bool) -> (u16, thread::JoinHandle<()>) {
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            load_certs(&certs.server_cert()),
            load_key(&certs.server_key()),
        )
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        // One connection, bounded in time.
        listener.set_nonblocking(false).unwrap();
        let Ok((sock, _)) = listener.accept() else {
            return;
        };
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut head = Vec::new();
        let mut b = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial body");
        let _ = tls.flush();
        thread::sleep(Duration::from_millis(100));
        if !truncate {
            tls.conn.send_close_notify();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
        let _ = tls.sock.shutdown(std::net::Shutdown::Both);
    });
    (port, handle)
}

#[test]
fn a_tls_backend_cut_off_mid_body_makes_an_aborted_response_not_a_complete_one() {
    for truncate in [false, true] {
        let td = TempDir::new("hostile-truncated");
        let certs = certs_init(&td.join("certs"), &[]);
        let (port, backend) = tls_backend(&certs, truncate);
        let cfg = Config::new(&certs)
            .route(RouteCfg::new("/", &[]).line("upstream = \"tlsb\""))
            .table(&format!(
                "[[upstream]]\nname = \"tlsb\"\naddresses = [\"127.0.0.1:{port}\"]\ntls = true\nca = [{}]\nserver_name = \"localhost\"",
                q(&certs.ca().to_string_lossy())
            ));
        let gw = Gateway::start(&td, &certs, cfg);
        let mut conn = gw.tls();
        conn.send(&get_req("/", &[])).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        let end = loop {
            match conn.s.read(&mut b) {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => break Err(e),
            }
        };
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.ends_with("partial body"),
            "truncate={truncate}: {text}"
        );
        match (truncate, end) {
            (false, Ok(())) => {}
            (true, Err(e)) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ),
                "an abort, not some other failure: {e:?}"
            ),
            (false, Err(e)) => panic!("a complete response must end cleanly: {e:?}"),
            (true, Ok(())) => {
                panic!("a truncated close-delimited body was relayed as complete (close_notify)")
            }
        }
        let _ = backend.join();
    }
}
