//! The `portcullis echo` backend, spoken to directly over plain HTTP/1.1.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn echo_reports_the_request_as_json() {
    let td = TempDir::new("echo_json");
    let echo = Echo::start(&td);
    let mut c = echo.connect();
    let r = c
        .request(
            b"GET /x/y?a=1&b=2 HTTP/1.1\r\nHost: example.test\r\nX-Dup: one\r\nX-Dup: two\r\nX-MiXeD-Case: V\r\n\r\n",
        )
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{:?}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/x/y");
    assert_eq!(v["query"], "a=1&b=2");
    assert_eq!(v["host"], "example.test");
    assert_eq!(v["headers"]["x-dup"], "one, two", "{v}");
    assert_eq!(v["headers"]["x-mixed-case"], "V", "{v}");
    assert_eq!(v["headers"]["host"], "example.test", "{v}");
    assert_eq!(v["body_bytes"], 0);
    assert_eq!(v["body_sha256"], sha256_hex(b""));
    assert_eq!(v["connection"]["requests"], 1);
    let id = v["connection"]["id"]
        .as_u64()
        .expect("connection.id is a u64");

    // keep-alive: same connection, count goes up; body hashed
    let r = c.request(&req("POST", "/p", &[], b"hello")).unwrap();
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["query"], serde_json::Value::Null);
    assert_eq!(v["body_bytes"], 5);
    assert_eq!(v["body_sha256"], sha256_hex(b"hello"));
    assert_eq!(v["connection"]["id"], id);
    assert_eq!(v["connection"]["requests"], 2);

    // chunked request body
    let r = c
        .request(b"PUT /c HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        .unwrap();
    let v = r.json();
    assert_eq!(v["method"], "PUT");
    assert_eq!(v["body_bytes"], 7);
    assert_eq!(v["body_sha256"], sha256_hex(b"abcdefg"));
    assert_eq!(v["connection"]["requests"], 3);

    // another connection: another id, count restarts
    let mut c2 = echo.connect();
    let v = c2.get("/", &[]).unwrap().json();
    assert_ne!(v["connection"]["id"], id);
    assert_eq!(v["connection"]["requests"], 1);
}

#[test]
fn echo_without_host_reports_null() {
    let td = TempDir::new("echo_nohost");
    let echo = Echo::start(&td);
    let mut c = echo.connect();
    c.send(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
    let r = c.read_final().unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["host"], serde_json::Value::Null, "{v}");
    assert_eq!(v["path"], "/old");
}

#[test]
fn echo_steering_headers() {
    let td = TempDir::new("echo_steer");
    let echo = Echo::start(&td);
    let mut c = echo.connect();

    let r = c.get("/s", &["x-echo-status: 418"]).unwrap();
    assert_eq!(r.status, 418);
    assert_eq!(r.json()["path"], "/s");

    let r = c.get("/b", &["x-echo-bytes: 1000"]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body, pattern(1000));

    let r = c
        .get("/bc", &["x-echo-bytes: 5000", "x-echo-chunked: 1"])
        .unwrap();
    assert!(
        r.chunked,
        "x-echo-chunked must send a chunked body: {:?}",
        r.headers
    );
    assert_eq!(r.body, pattern(5000));

    let r = c.get("/jc", &["x-echo-chunked: 1"]).unwrap();
    assert!(r.chunked);
    assert_eq!(r.json()["path"], "/jc");

    let t = Instant::now();
    let r = c.get("/d", &["x-echo-delay-ms: 300"]).unwrap();
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "x-echo-delay-ms ignored: {:?}",
        t.elapsed()
    );

    // all on one kept-alive connection
    let v = c.get("/last", &[]).unwrap().json();
    assert_eq!(v["connection"]["requests"], 6);
}

#[test]
fn echo_workers_flag_and_large_body() {
    let td = TempDir::new("echo_workers");
    let port = free_port();
    let mut cmd = portcullis();
    cmd.arg("echo")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--workers")
        .arg("2");
    let mut g = ChildGuard::spawn("echo2", cmd, td.path());
    wait_accept(SocketAddr::from(([127, 0, 0, 1], port)), &mut g);
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = HttpConn::new(s);
    let body = prng_bytes(3 * 1024 * 1024 + 17, 11);
    let r = c.request(&req("POST", "/big", &[], &body)).unwrap();
    let v = r.json();
    assert_eq!(v["body_bytes"], body.len());
    assert_eq!(v["body_sha256"], sha256_hex(&body));
    let r = c.get("/dl", &["x-echo-bytes: 3000000"]).unwrap();
    assert_eq!(r.body.len(), 3_000_000);
    assert!(r.body == pattern(3_000_000));
}
