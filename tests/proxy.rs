//! Routing, forwarding, bodies, keep-alive/pooling, limits, errors and
//! request-smuggling defences, end to end through the real gateway.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::*;

fn routes(c: Config, r: Vec<RouteCfg>) -> Config {
    Config { routes: r, ..c }
}

/// After a non-closing error: either the gateway said `Connection: close` and
/// closes, or the connection must still serve a request correctly.
fn assert_close_or_usable(c: &mut HttpConn<TlsStream>, r: &Response, next_path: &str) {
    if r.connection_close() {
        c.assert_closed("after an error with Connection: close");
    } else {
        let n = c
            .get(next_path, &[])
            .expect("connection kept alive must serve the next request");
        assert_eq!(
            n.status,
            200,
            "next request after {}: {}",
            r.status,
            n.text()
        );
        assert_eq!(n.json()["path"], next_path);
    }
}

// ---------------------------------------------------------------- routing

#[test]
fn no_route_is_404() {
    let st = Stack::start("proxy_404", |c, e| {
        routes(c, vec![RouteCfg::new("/api", &[&e.addr()])])
    });
    let r = st.gw.curl("/other", &[]);
    assert_eq!(r.code, 404, "{}", r.describe());
    assert_error_json(&r.body, 404, "PCS.4040");
    let r = st.gw.curl("/api/users?id=7", &[]);
    assert_eq!(r.code, 200, "{}", r.describe());
    assert_eq!(r.json()["path"], "/api/users");

    let mut c = st.gw.tls();
    let r = c.get("/other", &[]).unwrap();
    r.assert_error(404, "PCS.4040");
    assert_close_or_usable(&mut c, &r, "/api");
}

#[test]
fn method_not_on_route_is_405() {
    let st = Stack::start("proxy_405", |c, e| {
        routes(c, vec![RouteCfg::new("/", &[&e.addr()]).methods(&["GET"])])
    });
    let r = st.gw.curl("/m", &["-X", "POST", "--data-binary", "abc"]);
    assert_eq!(r.code, 405, "{}", r.describe());
    assert_error_json(&r.body, 405, "PCS.4050");
    let r = st.gw.curl("/m", &["-X", "DELETE"]);
    assert_eq!(r.code, 405, "{}", r.describe());
    let r = st.gw.curl("/m", &[]);
    assert_eq!(r.code, 200);

    // a rejected request with a body must not leave the body to be parsed
    // as the next request
    let mut c = st.gw.tls();
    let body = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let r = c.request(&req("POST", "/m", &[], body)).unwrap();
    r.assert_error(405, "PCS.4050");
    assert_close_or_usable(&mut c, &r, "/after-405");
}

#[test]
fn longest_prefix_wins_across_two_backends() {
    let td = TempDir::new("proxy_prefix");
    let certs = certs_init(&td.join("certs"), &[]);
    let e1 = Echo::start(&td);
    let e2 = Echo::start(&td);
    // "/a" is declared first: first-match routing would be wrong.
    let cfg = routes(
        Config::new(&certs),
        vec![
            RouteCfg::new("/a", &[&e1.addr()]).set_host("one"),
            RouteCfg::new("/a/b", &[&e2.addr()]).set_host("two"),
            RouteCfg::new("/", &[&e1.addr()]).set_host("root"),
        ],
    );
    let gw = Gateway::start(&td, &certs, cfg);
    let mut c = gw.tls();
    for (path, want) in [
        ("/a", "one"),
        ("/a/b", "two"),
        ("/a/b/c", "two"),
        ("/a/x", "one"),
        ("/zzz", "root"),
        ("/", "root"),
    ] {
        let r = c.get(path, &[]).unwrap();
        assert_eq!(r.status, 200, "{path}");
        let v = r.json();
        assert_eq!(v["host"], want, "{path} routed to the wrong route: {v}");
        assert_eq!(v["path"], path);
    }
    let r = gw.curl("/a/b/deep?q=1", &[]);
    assert_eq!(r.json()["host"], "two");
}

#[test]
fn host_routes_match_host_header() {
    let td = TempDir::new("proxy_host");
    let certs = certs_init(&td.join("certs"), &[]);
    let e = Echo::start(&td);
    let cfg = routes(
        Config::new(&certs),
        vec![
            RouteCfg::new("/", &[&e.addr()])
                .host("localhost")
                .set_host("h-local"),
            RouteCfg::new("/", &[&e.addr()])
                .host("other.example")
                .set_host("h-other"),
        ],
    );
    let gw = Gateway::start(&td, &certs, cfg);
    // curl sends Host: localhost:PORT; the port must not matter
    let r = gw.curl("/h", &[]);
    assert_eq!(r.code, 200, "{}", r.describe());
    assert_eq!(r.json()["host"], "h-local");
    let mut c = gw.tls();
    let r = c
        .request(b"GET /h HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["host"], "h-other");
    let r = c
        .request(b"GET /h HTTP/1.1\r\nHost: third.example\r\n\r\n")
        .unwrap();
    r.assert_error(404, "PCS.4040");
}

#[test]
fn set_host_rewrites_host_header() {
    let st = Stack::start("proxy_set_host", |c, e| {
        routes(
            c,
            vec![RouteCfg::new("/", &[&e.addr()]).set_host("api-mtls.virtual.example")],
        )
    });
    let r = st.gw.curl("/sh", &[]);
    assert_eq!(r.code, 200);
    let v = r.json();
    assert_eq!(v["host"], "api-mtls.virtual.example", "{v}");
    assert_eq!(v["headers"]["host"], "api-mtls.virtual.example", "{v}");
}

#[test]
fn several_backends_round_robin() {
    let a = MiniBackend::start(|_| Behaviour::Respond {
        body: r#"{"backend":"A"}"#.into(),
        delay: Duration::ZERO,
    });
    let b = MiniBackend::start(|_| Behaviour::Respond {
        body: r#"{"backend":"B"}"#.into(),
        delay: Duration::ZERO,
    });
    let td = TempDir::new("proxy_rr");
    let certs = certs_init(&td.join("certs"), &[]);
    let cfg = routes(
        Config::new(&certs).workers(1),
        vec![RouteCfg::new("/", &[&a.addr(), &b.addr()])],
    );
    let gw = Gateway::start(&td, &certs, cfg);
    let mut c = gw.tls();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..10 {
        let r = c.get(&format!("/rr{i}"), &[]).unwrap();
        assert_eq!(r.status, 200);
        *seen
            .entry(r.json()["backend"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        seen.get("A").copied().unwrap_or(0) >= 3 && seen.get("B").copied().unwrap_or(0) >= 3,
        "not round robin: {seen:?}"
    );
}

// ---------------------------------------------------------------- backend failures

#[test]
fn backend_down_is_502() {
    let dead = dead_port();
    let st = Stack::start("proxy_502_down", |c, _| {
        routes(c, vec![RouteCfg::new("/", &[&format!("127.0.0.1:{dead}")])])
    });
    let r = st.gw.curl("/down", &[]);
    assert_eq!(r.code, 502, "{}", r.describe());
    assert_error_json(&r.body, 502, "PCS.5020");
    // a second try (nothing cached wrongly)
    let mut c = st.gw.tls();
    let r = c.get("/down2", &[]).unwrap();
    r.assert_error(502, "PCS.5020");
}

#[test]
fn backend_stall_is_504() {
    let stall = MiniBackend::start(|_| Behaviour::Stall);
    let st = Stack::start("proxy_504", |mut c, _| {
        c.backend_response = "1s".into();
        routes(c, vec![RouteCfg::new("/", &[&stall.addr()])])
    });
    let t = Instant::now();
    let r = st.gw.curl("/stall", &[]);
    let el = t.elapsed();
    assert_eq!(r.code, 504, "{}", r.describe());
    assert_error_json(&r.body, 504, "PCS.5040");
    assert!(el < Duration::from_secs(5), "504 took {el:?}");
    assert!(
        el >= Duration::from_millis(800),
        "504 came before the 1s backend_response timeout: {el:?}"
    );
    assert!(
        stall.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "backend never got the request"
    );
}

#[test]
fn slow_echo_past_backend_response_is_504() {
    let st = Stack::start("proxy_504_echo", |mut c, _| {
        c.backend_response = "1s".into();
        c
    });
    let t = Instant::now();
    let r = st.gw.curl("/slow", &["-H", "x-echo-delay-ms: 4000"]);
    assert_eq!(r.code, 504, "{}", r.describe());
    assert_error_json(&r.body, 504, "PCS.5040");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "504 took {:?}",
        t.elapsed()
    );
    // a fast request still works afterwards
    let r = st.gw.curl("/fast", &["-H", "x-echo-delay-ms: 10"]);
    assert_eq!(r.code, 200);
}

fn backend_failure_is_502(cases: &[(&str, Behaviour)], code: &str) {
    for (name, beh) in cases {
        let b2 = beh.clone();
        let mb = MiniBackend::start(move |_| b2.clone());
        let st = Stack::start(&format!("proxy_5021_{name}"), |c, _| {
            routes(c, vec![RouteCfg::new("/", &[&mb.addr()])])
        });
        let r = st.gw.curl("/x", &[]);
        assert_eq!(r.code, 502, "{name}: {}", r.describe());
        assert_error_json(&r.body, 502, code);
        assert!(
            mb.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "{name}: backend never got the request"
        );
    }
}

#[test]
fn backend_close_or_reset_is_502() {
    backend_failure_is_502(
        &[("close", Behaviour::Close), ("reset", Behaviour::Reset)],
        "PCS.5021",
    );
}

#[test]
fn backend_invalid_response_is_502() {
    // Its own code: an operator looking at the log must tell "backend died"
    // from "backend speaks something that is not HTTP".
    backend_failure_is_502(&[("garbage", Behaviour::Garbage)], "PCS.5022");
}

#[test]
fn backend_status_passes_through() {
    let st = Stack::start("proxy_status", |c, _| c);
    for s in [201u16, 404, 418, 500, 503] {
        let r = st.gw.curl("/s", &["-H", &format!("x-echo-status: {s}")]);
        assert_eq!(r.code, s, "{}", r.describe());
        // the body is the backend's JSON, not a gateway error
        let v = r.json();
        assert_eq!(v["path"], "/s", "{v}");
        assert!(v.get("error").is_none(), "{v}");
    }
}

// ---------------------------------------------------------------- bodies

#[test]
fn chunked_upload_with_curl() {
    let st = Stack::start("proxy_chunked_up", |c, _| c);
    let data = prng_bytes(300_001, 7);
    let f = st.td.join("up.bin");
    std::fs::write(&f, &data).unwrap();
    let r = st.gw.curl(
        "/up",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &format!("@{}", f.display()),
        ],
    );
    assert_eq!(r.code, 200, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["body_bytes"], data.len());
    assert_eq!(v["body_sha256"], sha256_hex(&data));
}

#[test]
fn chunked_upload_raw_with_extensions_and_trailers() {
    let st = Stack::start("proxy_chunked_raw", |c, _| c);
    let mut c = st.gw.tls();
    let r = c
        .request(
            b"POST /c HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["body_bytes"], 11);
    assert_eq!(v["body_sha256"], sha256_hex(b"hello world"));
    // framing after a chunked body is right: the next request works
    let r = c.get("/next", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/next");
}

#[test]
fn chunked_download() {
    let st = Stack::start("proxy_chunked_down", |c, _| c);
    let n = 1_000_003usize;
    let r = st.gw.curl(
        "/dl",
        &[
            "-H",
            "x-echo-chunked: 1",
            "-H",
            &format!("x-echo-bytes: {n}"),
        ],
    );
    assert_eq!(r.code, 200, "{}", r.describe());
    assert_eq!(r.body.len(), n);
    assert!(
        r.body == pattern(n),
        "downloaded bytes differ from the pattern"
    );

    let mut c = st.gw.tls();
    let r = c
        .get("/dl2", &["x-echo-chunked: 1", "x-echo-bytes: 70000"])
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 70000);
    assert!(r.body == pattern(70000));
    let r = c.get("/dl3", &["x-echo-bytes: 1234"]).unwrap();
    assert_eq!(r.body, pattern(1234));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
}

#[test]
fn ten_mib_each_way_intact() {
    let st = Stack::start("proxy_10mib", |mut c, _| {
        c.max_body_bytes = "64MiB".into();
        c
    });
    let n = 10 * 1024 * 1024;
    let data = prng_bytes(n, 0x5eed);
    let f = st.td.join("ten.bin");
    std::fs::write(&f, &data).unwrap();
    let want = sha256_hex(&data);
    drop(data);
    let at = format!("@{}", f.display());
    let r = st.gw.curl("/upload", &["--data-binary", &at]);
    assert_eq!(r.code, 200, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["body_bytes"], n, "{v}");
    assert_eq!(v["body_sha256"], want, "{v}");

    let r = st.gw.curl(
        "/upload-chunked",
        &["-H", "Transfer-Encoding: chunked", "--data-binary", &at],
    );
    assert_eq!(r.code, 200, "{}", r.describe());
    assert_eq!(r.json()["body_sha256"], want);

    let r = st
        .gw
        .curl("/download", &["-H", &format!("x-echo-bytes: {n}")]);
    assert_eq!(r.code, 200, "{}", r.describe());
    assert_eq!(r.body.len(), n);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&pattern(n)));
}

#[test]
fn expect_100_continue_is_answered() {
    let st = Stack::start("proxy_expect", |c, _| c);
    let mut c = st.gw.tls();
    c.send(b"POST /e HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n").unwrap();
    c.set_read_timeout(Duration::from_secs(5));
    let interim = c
        .read_response()
        .expect("the gateway must answer Expect: 100-continue before the body is sent");
    assert_eq!(interim.status, 100, "{interim:?}");
    c.set_read_timeout(Duration::from_secs(20));
    c.send(b"hello world").unwrap();
    let r = c.read_final().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_sha256"], sha256_hex(b"hello world"));
}

#[test]
fn head_request_keeps_framing() {
    let st = Stack::start("proxy_head", |c, _| c);
    let mut c = st.gw.tls();
    c.send(b"HEAD /h HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let r = c.read_response_for(true).unwrap();
    assert_eq!(r.status, 200);
    let r = c.get("/after-head", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/after-head");
}

#[test]
fn pipelined_requests_answered_in_order() {
    let st = Stack::start("proxy_pipeline", |c, _| c);
    let mut c = st.gw.tls();
    let mut both = get_req("/p1", &[]);
    both.extend(req("POST", "/p2", &[], b"body-two"));
    both.extend(get_req("/p3", &[]));
    c.send(&both).unwrap();
    for p in ["/p1", "/p2", "/p3"] {
        let r = c.read_final().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["path"], p);
    }
}

// ---------------------------------------------------------------- keep-alive / pooling

#[test]
fn keepalive_reuses_backend_connection_curl() {
    let st = Stack::start("proxy_keepalive_curl", |c, _| c.workers(1));
    let port = st.gw.port();
    let urls: Vec<String> = (1..=3)
        .map(|i| format!("https://localhost:{port}/k{i}"))
        .collect();
    let u: Vec<&str> = urls.iter().map(|s| s.as_str()).collect();
    let r = curl(&st.gw.work, &st.certs, port, Auth::Client, &u, &["-v"]);
    assert_eq!(r.codes, vec![200, 200, 200], "{}", r.describe());
    assert!(
        r.stderr.contains("Re-using existing connection")
            || r.stderr.contains("Reusing existing connection"),
        "curl did not reuse its client connection:\n{}",
        r.stderr
    );
    let vs: Vec<_> = r.bodies.iter().map(|b| parse_json(b)).collect();
    let ids: HashSet<u64> = vs
        .iter()
        .map(|v| v["connection"]["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "backend connection not reused: {vs:?}");
    let reqs: Vec<u64> = vs
        .iter()
        .map(|v| v["connection"]["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(reqs, vec![1, 2, 3], "{vs:?}");
}

#[test]
fn keepalive_fifty_requests_on_one_connection() {
    let st = Stack::start("proxy_keepalive_50", |c, _| c.workers(1));
    let mut c = st.gw.tls();
    let mut prev: Option<(u64, u64)> = None;
    for i in 0..50 {
        let r = c
            .get(&format!("/n{i}"), &[])
            .unwrap_or_else(|e| st.gw.fail(&format!("request {i}: {e}")));
        assert_eq!(r.status, 200, "request {i}");
        let v = r.json();
        assert_eq!(v["path"], format!("/n{i}"));
        let id = v["connection"]["id"].as_u64().unwrap();
        let n = v["connection"]["requests"].as_u64().unwrap();
        if let Some((pid, pn)) = prev {
            assert_eq!(id, pid, "request {i}: backend connection changed");
            assert_eq!(n, pn + 1, "request {i}: requests count not consecutive");
        }
        prev = Some((id, n));
    }
}

// ---------------------------------------------------------------- limits

#[test]
fn header_over_limit_is_431_and_closes() {
    let st = Stack::start("proxy_431", |c, _| c);
    let mut c = st.gw.tls();
    let big = format!("X-Big: {}", "a".repeat(17_000));
    let r = c.get("/big", &[&big]).unwrap();
    r.assert_error(431, "PCS.4310");
    assert!(
        r.connection_close(),
        "431 must carry Connection: close: {:?}",
        r.headers
    );
    c.assert_closed("after 431");

    let r = st.gw.curl("/big", &["-H", &big]);
    assert_eq!(r.code, 431, "{}", r.describe());
}

#[test]
fn too_many_headers_rejected_and_many_allowed() {
    let st = Stack::start("proxy_many_headers", |c, _| c);
    let ok: Vec<String> = (0..90).map(|i| format!("X-H{i}: v{i}")).collect();
    let okr: Vec<&str> = ok.iter().map(|s| s.as_str()).collect();
    let mut c = st.gw.tls();
    let r = c.get("/ninety", &okr).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-h89"], "v89");

    let many: Vec<String> = (0..150).map(|i| format!("X-H{i}: v{i}")).collect();
    let manyr: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
    let mut c = st.gw.tls();
    let r = c.get("/many", &manyr).unwrap();
    assert!(
        r.status == 431 || r.status == 400,
        "150 headers over max_headers=100: {} {}",
        r.status,
        r.text()
    );
    assert!(r.connection_close());
    c.assert_closed("after too many headers");
}

#[test]
fn body_over_route_limit_is_413_and_closes() {
    let st = Stack::start("proxy_413", |mut c, e| {
        c.max_body_bytes = "4096".into();
        routes(
            c,
            vec![
                RouteCfg::new("/", &[&e.addr()]).max_body("1MiB"),
                RouteCfg::new("/global", &[&e.addr()]),
            ],
        )
    });
    // Content-Length above the route limit: refused from the head alone
    let mut c = st.gw.tls();
    c.send(b"POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2097152\r\n\r\n")
        .unwrap();
    let r = c.read_final().unwrap();
    r.assert_error(413, "PCS.4130");
    assert!(r.connection_close(), "413 must carry Connection: close");
    c.assert_closed("after 413");

    // under the route limit but over the global one: the route wins
    let body = prng_bytes(8192, 3);
    let mut c = st.gw.tls();
    let r = c.request(&req("POST", "/up", &[], &body)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_sha256"], sha256_hex(&body));

    // a route without its own limit uses [limits].max_body_bytes
    let mut c = st.gw.tls();
    let r = c.request(&req("POST", "/global", &[], &body)).unwrap();
    r.assert_error(413, "PCS.4130");
    c.assert_closed("after 413 (global limit)");

    // a chunked body growing past the limit never reaches the backend whole
    let mut c = st.gw.tls();
    let mut chunked =
        b"POST /global HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend(format!("{:x}\r\n", body.len()).as_bytes());
    chunked.extend(&body);
    chunked.extend(b"\r\n0\r\n\r\n");
    let _ = c.send(&chunked);
    let (bytes, closed) = c.read_until_close(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(" 200 "),
        "an over-limit chunked body was forwarded: {text}"
    );
    if !bytes.is_empty() {
        let r = parse_response_bytes(&bytes).unwrap();
        r.assert_error(413, "PCS.4130");
    }
    assert!(
        closed,
        "connection must close after an over-limit chunked body"
    );

    // curl too (it uses Expect: 100-continue for a large body)
    let f = st.td.join("two-mib.bin");
    std::fs::write(&f, prng_bytes(2 * 1024 * 1024, 9)).unwrap();
    let r = st
        .gw
        .curl("/up", &["--data-binary", &format!("@{}", f.display())]);
    assert_eq!(r.code, 413, "{}", r.describe());
}

// ---------------------------------------------------------------- smuggling

/// Sends raw bytes on a fresh connection; expects a 400 with `code` (if Some)
/// and then EOF. The scripted backend must see nothing.
fn expect_400(gw: &Gateway, raw: &[u8], code: Option<&str>, what: &str) {
    let mut c = gw.tls();
    let _ = c.send(raw);
    let r = c
        .read_final()
        .unwrap_or_else(|e| gw.fail(&format!("{what}: no response: {e}")));
    assert_eq!(r.status, 400, "{what}: {}", r.text());
    match code {
        Some(code) => assert_error_json(&r.body, 400, code),
        None => {
            let v = r.json();
            assert!(
                v["error"]["code"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("PCS.400"),
                "{what}: {v}"
            );
        }
    }
    assert!(
        r.connection_close(),
        "{what}: 400 must carry Connection: close"
    );
    c.assert_closed(what);
}

#[test]
fn smuggling_attempts_are_rejected() {
    let mini = MiniBackend::start(|_| Behaviour::Respond {
        body: r#"{"backend":"mini"}"#.into(),
        delay: Duration::ZERO,
    });
    let st = Stack::start("proxy_smuggle", |c, e| {
        routes(
            c,
            vec![
                RouteCfg::new("/", &[&mini.addr()]),
                RouteCfg::new("/echo", &[&e.addr()]),
            ],
        )
    });
    let gw = &st.gw;
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Some("PCS.4001"),
        "CL + TE",
    );
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        Some("PCS.4001"),
        "TE + CL",
    );
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Some("PCS.4001"),
        "two differing Content-Length",
    );
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 6\r\n\r\nhello!",
        None,
        "CL list 5, 6",
    );
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
        Some("PCS.4002"),
        "CL abc",
    );
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\nhello",
        Some("PCS.4002"),
        "CL -5",
    );
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\n\r\nhello",
        Some("PCS.4002"),
        "CL +5",
    );
    expect_400(
        gw,
        b"GARBAGE\r\n\r\n",
        Some("PCS.4000"),
        "garbage request line",
    );
    expect_400(
        gw,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nNo colon here\r\n\r\n",
        None,
        "header without colon",
    );
    expect_400(
        gw,
        b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        None,
        "space before colon",
    );
    assert_eq!(
        mini.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a rejected request reached the backend"
    );

    // Transfer-Encoding whose final coding is not chunked: 400 (or 501)
    let mut c = gw.tls();
    let _ = c.send(b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\nxxxx");
    let r = c.read_final().expect("a response to TE: gzip");
    assert!(
        r.status == 400 || r.status == 501,
        "TE gzip: {} {}",
        r.status,
        r.text()
    );
    assert_eq!(
        mini.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "TE gzip reached the backend"
    );

    // Invalid chunk size: the head may already be forwarded, so either a 400
    // or a closed connection, but never the echo's 200.
    let mut c = gw.tls();
    let _ = c.send(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    let (bytes, closed) = c.read_until_close(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert!(
        !text.contains("HTTP/1.1 200"),
        "bad chunk size was forwarded whole: {text}"
    );
    assert!(
        closed,
        "connection must be closed after a bad chunk; got {text}"
    );
    if !bytes.is_empty() {
        let r = parse_response_bytes(&bytes).unwrap();
        assert_eq!(r.status, 400, "{text}");
        assert_error_json(&r.body, 400, "PCS.4003");
    }

    // the gateway is still healthy
    let r = gw.curl("/echo/ok", &[]);
    assert_eq!(r.code, 200);
}
