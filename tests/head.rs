//! A response to HEAD ends at its head: neither the echo backend nor the
//! gateway's own error responses may send a body after it. A client reads
//! such a body as the start of its next response on the connection; from a
//! backend, it poisons the pooled connection (the next request through it
//! got 502 PCS.5022 "invalid HTTP version"). Both were found by bench/soak.
//!
//! Real echo backend over plain TCP, real gateway over TLS, requests
//! pipelined on one connection so that any stray byte lands where the next
//! response must start.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn the_echo_backend_answers_head_with_a_gets_head_and_no_body() {
    let td = TempDir::new("head_echo");
    let echo = Echo::start(&td);
    let mut c = echo.connect();
    let mut all = req("HEAD", "/bytes", &["x-echo-bytes: 10"], b"");
    all.extend(req(
        "HEAD",
        "/chunked",
        &["x-echo-bytes: 10", "x-echo-chunked: 1"],
        b"",
    ));
    all.extend(req("HEAD", "/json", &[], b""));
    all.extend(get_req("/after", &["Connection: close"]));
    c.send(&all).unwrap();

    let r = c.read_response_for(true).expect("HEAD with x-echo-bytes");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("10"), "{:?}", r.headers);
    let r = c.read_response_for(true).expect("HEAD, chunked");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{r:?}");
    let r = c.read_response_for(true).expect("HEAD of the JSON echo");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-length").is_some(), "{r:?}");
    let r = c
        .read_response()
        .expect("the GET after three HEADs gets its own response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/after");
    let (rest, closed) = c.read_until_close(Duration::from_secs(5));
    assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
    assert!(closed);
}

#[test]
fn the_gateways_own_error_responses_to_head_carry_no_body() {
    let dead = format!("127.0.0.1:{}", dead_port());
    let st = Stack::start("head_errors", |c, echo| {
        let mut c = c;
        c.routes = vec![
            RouteCfg::new("/get-only/", &[&echo.addr()]).methods(&["GET"]),
            RouteCfg::new("/dead/", &[&dead]),
            RouteCfg::new("/ok/", &[&echo.addr()]),
        ];
        c
    });
    let mut c = st.gw.tls();
    c.set_read_timeout(Duration::from_secs(10));
    // 404 and 405 keep the connection: the next response must start right
    // after their heads.
    let mut all = req("HEAD", "/nowhere", &[], b"");
    all.extend(req("HEAD", "/get-only/x", &[], b""));
    all.extend(get_req("/ok/after", &[]));
    c.send(&all).unwrap();
    let r = c.read_response_for(true).expect("HEAD of an unrouted path");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        r.header("content-length").is_some_and(|n| n != "0"),
        "the head of the error a GET would get: {r:?}"
    );
    let r = c.read_response_for(true).expect("HEAD on a GET-only route");
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET"), "{r:?}");
    let r = c
        .read_response()
        .expect("the GET after two refused HEADs gets its own response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/ok/after");

    // A 502 closes the connection: nothing may come between its head and the end.
    c.send(&req("HEAD", "/dead/x", &[], b"")).unwrap();
    let r = c.read_response_for(true).expect("HEAD to a dead backend");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.connection_close(), "{r:?}");
    let (rest, closed) = c.read_until_close(Duration::from_secs(5));
    assert!(
        rest.is_empty(),
        "a body after the head of a HEAD response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(closed);

    // A GET still gets the JSON error body.
    let mut c = st.gw.tls();
    let r = c.get("/nowhere", &[]).unwrap();
    r.assert_error(404, "PCS.4040");
}
