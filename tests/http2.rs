//! HTTP/2 to clients (ALPN h2), end to end: the real gateway binary, the
//! real echo backend, and real HTTP/2 clients: curl `--http2`, `nghttp`
//! (nghttp2-client) and a raw-frame Python client built on PyPI's h2
//! project (`tests/h2/h2client.py`) for the protocol-level and abuse cases.
//!
//! h2spec cannot be had here; its sections are covered as follows (each test
//! names its own): framing (4.x: frame size, CONTINUATION), streams (5.1:
//! states, resets; 5.1.2: concurrency), flow control (5.2, 6.9: windows,
//! overflow), HPACK (section 4 of RFC 7541 / h2spec hpack: the decoded size),
//! SETTINGS (6.5: floods, acks), errors (5.4: connection and stream errors,
//! GOAWAY 6.8), and HTTP semantics (8.1: malformed requests, 8.2.2:
//! connection-specific fields, 8.3.1: :authority).

mod common;
use common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/h2client.py");

/// Runs one scenario of the Python client against the gateway; its JSON.
fn h2client(gw: &Gateway, scenario: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .arg(scenario)
        .arg("--port")
        .arg(gw.port().to_string())
        .arg("--certs")
        .arg(&gw.certs.dir)
        .args(args);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(90));
    assert!(o.status.success(), "h2client {scenario}: {}", o.describe());
    let out = o.stdout_str();
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("h2client {scenario}: {e}: {}", o.describe()))
}

/// The gateway's resident memory (kB).
fn rss_kb(gw: &Gateway) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gw.proc.pid())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A plain HTTP/2 GET still works (the gateway survived whatever came before).
fn assert_serves(gw: &Gateway) {
    let r = gw.curl("/alive", &["--http2"]);
    assert_eq!(r.code, 200, "{}", r.describe());
    assert!(r.headers.starts_with("HTTP/2 200"), "{}", r.describe());
}

fn status(v: &Value, sid: u32) -> Option<u64> {
    v["status"][sid.to_string()].as_u64()
}

fn body(v: &Value, sid: u32) -> Value {
    let text = v["body"][sid.to_string()].as_str().unwrap_or_default();
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn stack(name: &str, tweak: impl FnOnce(Config) -> Config) -> Stack {
    Stack::start(name, |c, _| tweak(c))
}

// --- Clients users reach for ------------------------------------------------

/// curl --http2 with a client certificate: GET, then 1 MiB up (compared by
/// the echo's SHA-256) and 1 MiB down (Content-Length and chunked from the
/// backend), byte for byte; the access log says protocol="h2".
#[test]
fn curl_http2_get_and_bodies_both_ways() {
    let admin = format!("127.0.0.1:{}", free_port());
    let st = stack("h2_curl", |mut c| {
        c.access_log = true;
        c.admin = Some(admin.clone());
        c
    });
    let gw = &st.gw;
    let r = gw.curl("/hello?x=1", &["--http2"]);
    assert_eq!(r.code, 200, "{}", r.describe());
    assert!(r.headers.starts_with("HTTP/2 200"), "{}", r.describe());
    let v = r.json();
    assert_eq!(v["path"], "/hello", "{v}");
    assert!(
        v["host"]
            .as_str()
            .unwrap_or_default()
            .starts_with("localhost:"),
        "{v}"
    );
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{v}");

    let up: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let file = st.td.join("up.bin");
    std::fs::write(&file, &up).unwrap();
    let data = format!("@{}", file.display());
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let mut args = vec!["--http2", "--data-binary", data.as_str()];
        args.extend_from_slice(extra);
        let r = gw.curl("/upload", &args);
        assert_eq!(r.code, 200, "{}", r.describe());
        let v = r.json();
        assert_eq!(v["body_bytes"], up.len(), "{v}");
        assert_eq!(v["body_sha256"], sha256_hex(&up), "{v}");
    }
    let want: Vec<u8> = (0..1024 * 1024usize).map(|i| (i % 251) as u8).collect();
    for chunked in ["0", "1"] {
        let chunked = format!("x-echo-chunked: {chunked}");
        let r = gw.curl(
            "/download",
            &["--http2", "-H", "x-echo-bytes: 1048576", "-H", &chunked],
        );
        assert_eq!(r.code, 200, "{}", r.describe());
        assert!(
            r.body == want,
            "{chunked}: {} bytes, not the pattern",
            r.body.len()
        );
    }
    let line = gw.proc.wait_log_line(
        &["portcullis::access", "protocol=\"h2\"", "/upload"],
        Duration::from_secs(5),
    );
    assert!(line.is_some(), "no h2 access line: {}", gw.proc.stderr());
    // Counted as HTTP/2 connections (metrics are published once a second).
    let counted = wait_until(Duration::from_secs(5), || {
        let (_, text) = admin_get(&admin, "/metrics");
        metric(
            &text,
            "portcullis_http2_connections_total{tls_mode=\"userspace\"}",
        )
        .unwrap_or(0.0)
            >= 5.0
    });
    assert!(counted, "{}", admin_get(&admin, "/metrics").1);
}

/// nghttp (nghttp2's client, with --cert/--key) with 20 concurrent streams
/// on one connection (h2spec: streams 5.1, concurrency 5.1.2).
#[test]
fn nghttp_many_streams_on_one_connection() {
    let st = stack("h2_nghttp", |c| c);
    let gw = &st.gw;
    let out = run_cmd(
        Command::new("nghttp")
            .args(["-n", "-s", "-m", "20"])
            .arg("--cert")
            .arg(gw.certs.client_cert())
            .arg("--key")
            .arg(gw.certs.client_key())
            .arg(format!("https://127.0.0.1:{}/many", gw.port())),
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.describe());
    let ok = out
        .stdout_str()
        .lines()
        .filter(|l| l.contains(" 200 ") && l.contains("/many"))
        .count();
    assert_eq!(ok, 20, "{}", out.describe());
}

/// Streams of one connection run at once, each on its own backend
/// connection: 8 responses that each take 1 s arrive in well under 8 s.
#[test]
fn streams_run_at_once_on_several_backend_connections() {
    let st = stack("h2_parallel", |c| c);
    let started = Instant::now();
    let v = h2client(
        &st.gw,
        "get",
        &[
            "--n",
            "8",
            "--path",
            "/slow",
            "--header",
            "x-echo-delay-ms:1000",
        ],
    );
    let took = started.elapsed();
    let mut backend_conns = std::collections::BTreeSet::new();
    for i in 0..8 {
        let sid = 1 + 2 * i;
        assert_eq!(status(&v, sid), Some(200), "stream {sid}: {v}");
        backend_conns.insert(body(&v, sid)["connection"]["id"].to_string());
    }
    assert!(
        took < Duration::from_secs(6),
        "took {took:?}: streams were served one by one"
    );
    assert!(
        backend_conns.len() >= 4,
        "backend connections used: {backend_conns:?}"
    );
}

// --- ALPN ---------------------------------------------------------------------

/// ALPN: by default h2 is chosen when offered; `alpn = ["http/1.1"]` turns
/// it off (curl --http2 falls back to HTTP/1.1), and a client offering only
/// h2 to such a listener is refused with no_application_protocol.
#[test]
fn alpn_chooses_h2_by_default_and_config_turns_it_off() {
    let st = stack("h2_alpn", |c| c);
    let v = h2client(&st.gw, "handshake", &["--alpn", "h2,http/1.1"]);
    assert_eq!(v["alpn"], "h2", "{v}");
    assert_eq!(status(&v, 1), Some(200), "{v}");

    let off = stack("h2_alpn_off", |mut c| {
        c.listeners[0].alpn = Some(vec!["http/1.1".into()]);
        c
    });
    let r = off.gw.curl("/x", &["--http2"]);
    assert_eq!(r.code, 200, "{}", r.describe());
    assert!(r.headers.starts_with("HTTP/1.1 200"), "{}", r.describe());
    let v = h2client(&off.gw, "handshake", &["--alpn", "h2"]);
    let err = v["handshake_error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        err.contains("no application protocol") || err.contains("no_application_protocol"),
        "{v}"
    );
}

/// A mandatory-mTLS listener refuses a client without a certificate at the
/// handshake, whatever protocol it asks for.
#[test]
fn mandatory_mtls_refuses_an_h2_client_without_a_certificate() {
    let st = stack("h2_nocert", |c| c);
    let v = h2client(&st.gw, "handshake", &["--no-cert"]);
    assert!(status(&v, 1).is_none(), "served without a certificate: {v}");
    assert!(
        v["handshake_error"].is_string() || v["closed"] == true,
        "no refusal: {v}"
    );
    let r = st.gw.curl_auth(Auth::NoCert, "/", &["--http2"]);
    assert_ne!(r.exit, 0, "{}", r.describe());
}

// --- What every stream gets (the request core) ------------------------------

/// `:authority` naming another site on the same connection: 421 PCS.4210
/// (h2spec http/8.3.1). Routing by site works per stream.
#[test]
fn authority_of_another_site_is_misdirected() {
    let td = TempDir::new("h2_421");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let base = Config::new(&certs);
    let port = base.listeners[0].socket_addr().port();
    let p = |f: std::path::PathBuf| q(&f.to_string_lossy());
    let site = |name: &str, names: &str| {
        format!(
            "[[site]]\nname = \"{name}\"\nserver_names = {names}\ncertificate = {}\nprivate_key = {}\nclient_ca = [{}]\n\n",
            p(certs.server_cert()),
            p(certs.server_key()),
            p(certs.ca())
        )
    };
    let e = echo.addr();
    let text = format!(
        "[server]\nworkers = 2\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n{}{}\
         [[route]]\npath = \"/\"\nbackends = [\"{e}\"]\n",
        site("local", r#"["localhost"]"#),
        site("other", r#"["other.example"]"#),
    );
    let gw = Gateway::start_text(&td, &certs, base, &text);
    let v = h2client(&gw, "get", &["--authority", "other.example"]);
    assert_eq!(status(&v, 1), Some(421), "{v}");
    assert_eq!(body(&v, 1)["error"]["code"], "PCS.4210", "{v}");
    let v = h2client(&gw, "get", &["--authority", "localhost"]);
    assert_eq!(status(&v, 1), Some(200), "{v}");
}

/// Path tricks get the same answer as over HTTP/1.1 (the one normaliser),
/// and the allowlisted route is never reached by a spelling.
#[test]
fn path_tricks_get_the_same_answers_as_http11() {
    let st = stack("h2_paths", |c| {
        c.route(RouteCfg::new("/admin/", &["127.0.0.1:9"]).line("allow_subject_cn = [\"nobody\"]"))
    });
    let gw = &st.gw;
    for path in [
        "/admin/x",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/ADMIN/x",
        "/admin;x=1/x",
        "/%61dmin/x",
        "/a/%2F/b",
        "//admin/x",
        "/public/x",
    ] {
        let mut c = gw.tls();
        let h1 = c
            .request(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .unwrap_or_else(|e| gw.fail(&format!("{path}: {e}")));
        let v = h2client(gw, "get", &["--path", path]);
        assert_eq!(
            status(&v, 1),
            Some(u64::from(h1.status)),
            "{path}: h2 {v} vs h1 {}",
            h1.text()
        );
        if h1.status >= 400 {
            assert_eq!(
                body(&v, 1)["error"]["code"],
                h1.json()["error"]["code"],
                "{path}: {v}"
            );
        }
    }
}

/// Identity and forwarding headers a client sends are stripped; the
/// gateway's own are written (h2spec http/8.2.2 for the connection fields).
#[test]
fn forged_identity_headers_are_stripped_and_connection_fields_refused() {
    let st = Stack::start("h2_forged", |c, echo| {
        c.route(RouteCfg::new("/id/", &[&echo.addr()]).line("forward_client_cert = [\"subject\"]"))
    });
    let gw = &st.gw;
    let v = h2client(
        gw,
        "get",
        &[
            "--path",
            "/id/x",
            "--header",
            "x-ssl-client-subject:CN=forged",
            "--header",
            "x_ssl_client_subject:CN=forged",
        ],
    );
    assert_eq!(status(&v, 1), Some(200), "{v}");
    let h = &body(&v, 1)["headers"];
    let subject = h["x-ssl-client-subject"].as_str().unwrap_or_default();
    assert!(
        subject.contains("portcullis-dev-client") && !subject.contains("forged"),
        "{h}"
    );
    assert!(h.get("x_ssl_client_subject").is_none(), "{h}");
    let v = h2client(
        gw,
        "get",
        &[
            "--path",
            "/who",
            "--header",
            "x-forwarded-for:6.6.6.6",
            "--header",
            "x-real-ip:6.6.6.6",
            "--header",
            "forwarded:for=6.6.6.6",
            "--header",
            "cookie:a=1",
            "--header",
            "cookie:b=2",
        ],
    );
    assert_eq!(status(&v, 1), Some(200), "{v}");
    let h = &body(&v, 1)["headers"];
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
    assert!(h.get("forwarded").is_none(), "{h}");
    assert_eq!(h["cookie"], "a=1; b=2", "RFC 9113 8.2.3: {h}");
    let v = h2client(gw, "get", &["--header", "connection:close"]);
    assert_ne!(
        status(&v, 1),
        Some(200),
        "connection-specific field accepted: {v}"
    );
}

/// Body clock (408 PCS.4081) and backend failures (502, 504) as JSON on
/// the stream, as HTTP/1.1 gets them.
#[test]
fn stream_deadlines_and_backend_errors() {
    let st = stack("h2_deadlines", |c| {
        c.timeouts_line("request_body = \"1s\"")
            .route(RouteCfg::new("/dead/", &["127.0.0.1:9"]))
    });
    let gw = &st.gw;
    let v = h2client(gw, "body-stall", &["--path", "/up"]);
    assert_eq!(status(&v, 1), Some(408), "{v}");
    assert_eq!(body(&v, 1)["error"]["code"], "PCS.4081", "{v}");
    let v = h2client(gw, "get", &["--path", "/dead/x"]);
    assert_eq!(status(&v, 1), Some(502), "{v}");
    assert_eq!(body(&v, 1)["error"]["code"], "PCS.5020", "{v}");

    let slow = stack("h2_504", |mut c| {
        c.backend_response = "1s".into();
        c
    });
    let v = h2client(
        &slow.gw,
        "get",
        &["--path", "/slow", "--header", "x-echo-delay-ms:3000"],
    );
    assert_eq!(status(&v, 1), Some(504), "{v}");
}

/// Request bodies are judged as HTTP/1.1's: past the route's limit 413
/// PCS.4130 on the stream; DATA that disagrees with content-length is a
/// malformed stream (h2spec http/8.1.2.6: RST_STREAM PROTOCOL_ERROR); a HEAD
/// gets its head and no body.
#[test]
fn request_bodies_and_head_on_a_stream() {
    let st = Stack::start("h2_bodies", |c, echo| {
        c.route(RouteCfg::new("/small/", &[&echo.addr()]).max_body("1KiB"))
    });
    let gw = &st.gw;
    let v = h2client(
        gw,
        "get",
        &[
            "--method",
            "POST",
            "--path",
            "/small/x",
            "--body-bytes",
            "4096",
        ],
    );
    assert_eq!(status(&v, 1), Some(413), "{v}");
    assert_eq!(body(&v, 1)["error"]["code"], "PCS.4130", "{v}");
    let v = h2client(
        gw,
        "get",
        &[
            "--method",
            "POST",
            "--path",
            "/up",
            "--header",
            "content-length:5",
            "--body-bytes",
            "10",
        ],
    );
    assert_ne!(status(&v, 1), Some(200), "{v}");
    assert_eq!(v["rst"]["1"], 1, "{v}");
    let v = h2client(gw, "get", &["--method", "HEAD", "--path", "/h"]);
    assert_eq!(status(&v, 1), Some(200), "{v}");
    assert!(v["body"]["1"].is_null(), "{v}");
    assert!(
        v["ended"]
            .as_array()
            .is_some_and(|e| e.contains(&Value::from(1))),
        "{v}"
    );
}

// --- Abuse ----------------------------------------------------------------------

/// Rapid reset (CVE-2023-44487; h2spec streams 5.1, errors 5.4.1): 2000
/// streams opened and cancelled at once end in GOAWAY ENHANCE_YOUR_CALM or
/// a closed connection long before the client is done; the gateway serves on.
#[test]
fn rapid_reset_is_cut_off() {
    let st = stack("h2_rapid_reset", |c| c);
    let v = h2client(&st.gw, "rapid-reset", &["--n", "2000"]);
    let calm = v["goaway"]["code"] == 11;
    let cut = v["closed"] == true && v["sent"].as_u64().unwrap_or(0) < 4000;
    assert!(calm || cut, "rapid reset not stopped: {v}");
    assert_serves(&st.gw);
}

/// CONTINUATION flood (h2spec framing 4.3/6.10): a header block that never
/// ends is cut off by the header list limit, never buffered without bound.
#[test]
fn continuation_flood_is_cut_off() {
    let st = stack("h2_continuation", |c| c);
    let before = rss_kb(&st.gw);
    let v = h2client(&st.gw, "continuation", &["--n", "100000"]);
    assert_ne!(status(&v, 1), Some(200), "{v}");
    let stopped = v["closed"] == true
        || !v["goaway"].is_null()
        || v["rst"]["1"].is_number()
        || status(&v, 1) == Some(431);
    assert!(stopped, "{v}");
    assert!(
        v["sent"].as_u64().unwrap_or(0) < 100_001,
        "the whole flood was taken: {v}"
    );
    assert!(
        rss_kb(&st.gw) < before + 64 * 1024,
        "memory grew: {} -> {} kB",
        before,
        rss_kb(&st.gw)
    );
    assert_serves(&st.gw);
}

/// HPACK bomb (h2spec hpack, RFC 7541 section 4): 3 KB on the wire decoding
/// to 4 MB is judged by the decoded size (max_header_bytes) and refused; a
/// plain header list past the limit gets 431 or a reset, and more fields
/// than max_headers get 431 PCS.4311, as HTTP/1.1 does.
#[test]
fn hpack_bomb_and_large_header_lists_are_refused() {
    let st = stack("h2_hpack", |c| c);
    let v = h2client(&st.gw, "hpack-bomb", &["--n", "1000"]);
    assert!(
        v["wire_bytes"].as_u64().unwrap_or(u64::MAX) < 16 * 1024,
        "{v}"
    );
    assert_ne!(status(&v, 1), Some(200), "bomb served: {v}");
    let refused = !v["goaway"].is_null()
        || v["rst"]["1"].is_number()
        || status(&v, 1) == Some(431)
        || v["closed"] == true;
    assert!(refused, "{v}");
    // Distinct fields (no dynamic-table reuse) past 16 KiB.
    let big: Vec<String> = (0..40)
        .map(|i| format!("x-big-{i}:{}", "v".repeat(500)))
        .collect();
    let mut args = vec!["--path", "/big"];
    for h in &big {
        args.extend_from_slice(&["--header", h]);
    }
    let v = h2client(&st.gw, "get", &args);
    // Past max_header_bytes (16 KiB): the JSON 431 HTTP/1.1 gives for a head
    // too large, on the same decoded-size measure h2 uses.
    assert_eq!(status(&v, 1), Some(431), "{v}");
    assert_eq!(body(&v, 1)["error"]["code"], "PCS.4310", "{v}");
    // Past twice the limit h2 answers itself, before the stream is ours:
    // 431 with no body (it has no hook for one); the connection lives on.
    let huge: Vec<String> = (0..80)
        .map(|i| format!("x-huge-{i}:{}", "v".repeat(500)))
        .collect();
    let mut args = vec!["--path", "/huge"];
    for h in &huge {
        args.extend_from_slice(&["--header", h]);
    }
    let v = h2client(&st.gw, "get", &args);
    assert_eq!(status(&v, 1), Some(431), "{v}");
    assert!(v["body"]["1"].is_null(), "{v}");
    // Many small fields: our max_headers (100).
    let many: Vec<String> = (0..150).map(|i| format!("x-m-{i}:1")).collect();
    let mut args = vec!["--path", "/many"];
    for h in &many {
        args.extend_from_slice(&["--header", h]);
    }
    let v = h2client(&st.gw, "get", &args);
    assert_eq!(status(&v, 1), Some(431), "{v}");
    assert_eq!(body(&v, 1)["error"]["code"], "PCS.4311", "{v}");
    assert_serves(&st.gw);
}

/// A header list past max_header_bytes from the clients users run: curl
/// `--http2` and nghttp get HTTP/1.1's 431 PCS.4310 with its JSON body.
#[test]
fn header_list_too_large_gets_the_json_431_from_curl_and_nghttp() {
    let st = stack("h2_431", |c| c);
    let big = format!("x-big: {}", "v".repeat(20_000));
    let r = st.gw.curl("/big", &["--http2", "-H", &big]);
    assert_eq!(r.code, 431, "{}", r.describe());
    assert!(r.headers.starts_with("HTTP/2 431"), "{}", r.describe());
    assert_eq!(r.json()["error"]["code"], "PCS.4310", "{}", r.describe());
    let certs = &st.gw.certs;
    let mut cmd = Command::new("nghttp");
    cmd.arg("--cert")
        .arg(certs.client_cert())
        .arg("--key")
        .arg(certs.client_key())
        .arg("-H")
        .arg(format!("x-big:{}", "v".repeat(20_000)))
        .arg(format!("https://127.0.0.1:{}/big", st.gw.port()));
    let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
    let out = o.stdout_str();
    let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    assert_eq!(v["error"]["code"], "PCS.4310", "{}", o.describe());
    assert_serves(&st.gw);
}

/// `Expect: 100-continue` on a stream is answered as HTTP/1.1 answers it:
/// an interim 100 once the backend has the head, so a client holding its
/// body back sends it at once; Expect never reaches the backend.
#[test]
fn expect_100_continue_gets_an_interim_100_on_the_stream() {
    let st = stack("h2_expect", |c| c);
    let v = h2client(
        &st.gw,
        "expect-continue",
        &["--path", "/up", "--body-bytes", "1000", "--wait", "8"],
    );
    assert_eq!(v["interim"]["1"], serde_json::json!([100]), "{v}");
    assert!(v["continue_after"].as_f64().unwrap_or(99.0) < 4.0, "{v}");
    assert_eq!(status(&v, 1), Some(200), "{v}");
    let echoed = body(&v, 1);
    assert_eq!(echoed["body_bytes"], 1000, "{v}");
    assert!(echoed["headers"]["expect"].is_null(), "{v}");
    // curl waits for the 100 (here up to 15 s) before it sends the body.
    let file = st.td.join("up.bin");
    std::fs::write(&file, vec![b'u'; 64 * 1024]).unwrap();
    let data = format!("@{}", file.display());
    let started = Instant::now();
    let r = st.gw.curl(
        "/upload",
        &[
            "--http2",
            "-H",
            "Expect: 100-continue",
            "--expect100-timeout",
            "15",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(r.code, 200, "{}", r.describe());
    assert!(r.headers.contains("HTTP/2 100"), "{}", r.describe());
    assert_eq!(r.json()["body_bytes"], 64 * 1024, "{}", r.describe());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// SETTINGS, PING and empty DATA floods sent without reading (h2spec
/// SETTINGS 6.5, PING 6.7, framing 6.1): memory stays bounded, the empty
/// DATA flood is cut off, the gateway serves on.
#[test]
fn settings_ping_and_empty_data_floods_stay_bounded() {
    let st = stack("h2_floods", |c| c);
    let before = rss_kb(&st.gw);
    for scenario in ["settings-flood", "ping-flood"] {
        let v = h2client(&st.gw, scenario, &["--n", "100000", "--wait", "5"]);
        assert!(v["sent"].as_u64().is_some(), "{scenario}: {v}");
        let now = rss_kb(&st.gw);
        assert!(
            now < before + 64 * 1024,
            "{scenario}: memory grew {before} -> {now} kB"
        );
    }
    let v = h2client(&st.gw, "empty-data-flood", &["--n", "100000"]);
    let cut = v["goaway"]["code"] == 11
        || (v["closed"] == true && v["sent"].as_u64().unwrap_or(0) < 100_000);
    assert!(cut, "empty DATA flood not cut off: {v}");
    assert_serves(&st.gw);
}

/// WINDOW_UPDATE past 2^31-1 (h2spec flow control 6.9.1): on the connection
/// GOAWAY FLOW_CONTROL_ERROR, on a stream RST_STREAM FLOW_CONTROL_ERROR.
#[test]
fn window_update_overflow_is_a_flow_control_error() {
    let st = stack("h2_window", |c| c);
    let v = h2client(&st.gw, "window-overflow", &[]);
    assert_eq!(v["goaway"]["code"], 3, "{v}");
    let v = h2client(
        &st.gw,
        "stream-window-overflow",
        &["--path", "/w", "--header", "x-echo-delay-ms:500"],
    );
    let stream_error = v["rst"]["1"] == 3 || v["goaway"]["code"] == 3;
    assert!(stream_error, "{v}");
    assert_serves(&st.gw);
}

/// Lingering close (h2spec errors 5.4.1, GOAWAY 6.8): a connection error
/// followed by more frames the client sends without reading. The gateway
/// answers GOAWAY PROTOCOL_ERROR and closes, reading and discarding what
/// still comes; a plain close with the client's later bytes unread is a
/// reset (the client's next writes fail), and a reset can destroy the GOAWAY
/// before the client reads it. Several connections in a row: it must never
/// flake.
#[test]
fn goaway_survives_the_close_when_the_client_sends_more() {
    let st = stack("h2_linger", |c| c);
    for round in 0..5 {
        let v = h2client(&st.gw, "error-then-more", &["--n", "50"]);
        assert_eq!(v["goaway"]["code"], 1, "round {round}: {v}");
        // Every later frame reached a socket still open for reading...
        assert_eq!(v["sent"], 50, "round {round}: {v}");
        assert!(v["write_error"].is_null(), "round {round}: {v}");
        // ...and the end was close_notify and FIN, not a reset.
        assert_eq!(v["closed"], true, "round {round}: {v}");
        assert!(v["error"].is_null(), "round {round}: {v}");
    }
    assert_serves(&st.gw);
}

/// A client that never opens its window (h2spec flow control 5.2): its
/// streams are reset (CANCEL) after timeouts.send and the gateway holds no
/// more than the send buffer for them meanwhile.
#[test]
fn streams_that_never_read_are_reset_after_the_send_timeout() {
    let st = stack("h2_never_read", |c| c.timeouts_line("send = \"2s\""));
    let before = rss_kb(&st.gw);
    let started = Instant::now();
    let v = h2client(
        &st.gw,
        "never-read",
        &[
            "--n",
            "5",
            "--path",
            "/big",
            "--header",
            "x-echo-bytes:4194304",
            "--wait",
            "20",
        ],
    );
    for i in 0..5 {
        let sid = (1 + 2 * i).to_string();
        assert_eq!(v["rst"][&sid], 8, "stream {sid} not reset with CANCEL: {v}");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(15),
        "reset after {took:?}"
    );
    assert!(
        rss_kb(&st.gw) < before + 64 * 1024,
        "memory grew: {before} -> {} kB",
        rss_kb(&st.gw)
    );
    let line = st
        .gw
        .proc
        .wait_log_line(&["granted no flow-control window"], Duration::from_secs(5));
    assert!(line.is_some(), "{}", st.gw.proc.stderr());
    assert_serves(&st.gw);
}

/// More streams than max_concurrent_streams (h2spec streams 5.1.2): the
/// extra ones are refused (RST_STREAM REFUSED_STREAM), the rest served.
#[test]
fn streams_past_max_concurrent_streams_are_refused() {
    let st = stack("h2_max_streams", |c| {
        c.table("[http2]\nmax_concurrent_streams = 4")
    });
    let v = h2client(
        &st.gw,
        "too-many-streams",
        &[
            "--n",
            "10",
            "--path",
            "/s",
            "--header",
            "x-echo-delay-ms:800",
        ],
    );
    let mut ok = 0;
    let mut refused = 0;
    for i in 0..10 {
        let sid = 1 + 2 * i;
        if status(&v, sid) == Some(200) {
            ok += 1;
        } else if v["rst"][sid.to_string()] == 7 {
            refused += 1;
        }
    }
    assert_eq!((ok, refused), (4, 6), "{v}");
}

/// Deadlines of the connection: a client that sends no preface is closed
/// after the handshake timeout; one that asks for nothing gets GOAWAY
/// (NO_ERROR) after the idle timeout.
#[test]
fn silent_and_idle_connections_are_closed() {
    let st = stack("h2_idle", |mut c| {
        c.handshake = "1s".into();
        c.idle = "1s".into();
        c
    });
    let v = h2client(&st.gw, "no-preface", &["--wait", "10"]);
    assert_eq!(v["alpn"], "h2", "{v}");
    assert_eq!(v["closed"], true, "{v}");
    assert!(v["after"].as_f64().unwrap_or(99.0) < 5.0, "{v}");
    let v = h2client(&st.gw, "idle", &["--wait", "10"]);
    assert_eq!(v["goaway"]["code"], 0, "{v}");
    assert!(v["after"].as_f64().unwrap_or(99.0) < 5.0, "{v}");
}

/// Reload (SIGHUP): a new connection gets the new config; an HTTP/2
/// connection accepted before keeps the generation it began with for every
/// stream, as an HTTP/1.1 keep-alive connection does.
#[test]
fn reload_new_connections_get_the_new_config_streams_keep_theirs() {
    let st = Stack::start("h2_reload", |c, echo| {
        c.route(RouteCfg::new("/g/", &[&echo.addr()]).set_host("gen-one"))
    });
    let gw = &st.gw;
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .args(["hold", "--path", "/g/x", "--wait", "3", "--port"])
        .arg(gw.port().to_string())
        .arg("--certs")
        .arg(&gw.certs.dir);
    let mut held = ChildGuard::spawn("h2hold", cmd, st.td.path());
    std::thread::sleep(Duration::from_millis(1000));
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, text.replace("gen-one", "gen-two")).unwrap();
    gw.proc.signal(libc::SIGHUP);
    let reloaded = gw
        .proc
        .wait_log_line(&["config reloaded"], Duration::from_secs(10));
    assert!(reloaded.is_some(), "{}", gw.proc.stderr());
    let v = h2client(gw, "get", &["--path", "/g/x"]);
    assert_eq!(body(&v, 1)["host"], "gen-two", "{v}");
    assert!(
        held.wait_exit(Duration::from_secs(20)).is_some(),
        "held connection still running"
    );
    let last = held.stdout().lines().last().unwrap_or_default().to_string();
    let v: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
    assert_eq!(body(&v, 1)["host"], "gen-one", "{last}");
    assert_eq!(body(&v, 3)["host"], "gen-one", "{last}");
}

/// Drain (SIGTERM): GOAWAY to the HTTP/2 client, whose stream in flight
/// still completes (h2spec GOAWAY 6.8).
#[test]
fn drain_sends_goaway_and_finishes_the_stream() {
    let mut st = stack("h2_drain", |c| c);
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT)
        .args([
            "drain",
            "--path",
            "/slow",
            "--header",
            "x-echo-delay-ms:1000",
            "--port",
        ])
        .arg(st.gw.port().to_string())
        .arg("--certs")
        .arg(&st.gw.certs.dir);
    let (mut client, lines) = ChildGuard::spawn_lines("h2drain", cmd, st.td.path());
    let ready = lines
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_default();
    assert!(ready.contains("ready"), "{ready}: {}", client.stderr());
    std::thread::sleep(Duration::from_millis(200));
    st.gw.terminate(Duration::from_secs(15));
    assert!(
        client.wait_exit(Duration::from_secs(20)).is_some(),
        "client still running"
    );
    let last = client
        .stdout()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let v: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
    assert!(!v["goaway"].is_null(), "no GOAWAY: {last}");
    assert_eq!(status(&v, 1), Some(200), "in-flight stream cut: {last}");
}

// --- Load generators our users run ------------------------------------------

/// h2load (nghttp2-client) cannot present a client certificate. Against a
/// site with `mtls = "optional"` it is served: every request of a short,
/// bounded run (4 connections × 10 concurrent streams) answered 200. Against
/// the same gateway's mandatory-mTLS site it is refused at the handshake:
/// no request is answered, and the gateway keeps serving.
#[test]
fn h2load_runs_against_an_optional_mtls_site_and_is_refused_by_a_mandatory_one() {
    let td = TempDir::new("h2_h2load");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let mut base = Config::new(&certs);
    base.workers = "1".into();
    let port = base.listeners[0].socket_addr().port();
    let p = |f: std::path::PathBuf| q(&f.to_string_lossy());
    let site = |name: &str, names: &str, mtls: &str| {
        format!(
            "[[site]]\nname = \"{name}\"\nserver_names = {names}\ncertificate = {}\nprivate_key = {}\nclient_ca = [{}]\nmtls = \"{mtls}\"\n\n",
            p(certs.server_cert()),
            p(certs.server_key()),
            p(certs.ca())
        )
    };
    let e = echo.addr();
    let text = format!(
        "[server]\nworkers = 1\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n{}{}\
         [[route]]\npath = \"/\"\nbackends = [\"{e}\"]\n",
        site("open", r#"["localhost"]"#, "optional"),
        site("strict", r#"["strict.example"]"#, "mandatory"),
    );
    let gw = Gateway::start_text(&td, &certs, base, &text);
    let h2load = |sni: &str| {
        let mut cmd = Command::new("h2load");
        cmd.args(["-n", "2000", "-c", "4", "-m", "10", "--connect-to"])
            .arg(format!("127.0.0.1:{port}"))
            .arg(format!("https://{sni}:{port}/load"));
        let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
        o.stdout_str()
    };
    let out = h2load("localhost");
    assert!(
        out.contains(
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"
        ),
        "{out}"
    );
    assert!(out.contains("status codes: 2000 2xx"), "{out}");
    assert!(out.contains("Application protocol: h2"), "{out}");
    let out = h2load("strict.example");
    assert!(out.contains("0 succeeded"), "{out}");
    assert!(!out.contains("status codes: 2000 2xx"), "{out}");
    assert!(
        gw.proc
            .wait_log_line(
                &["client certificate refused", "strict"],
                Duration::from_secs(5)
            )
            .is_some(),
        "no refusal logged for the mandatory site"
    );
    assert_serves(&gw);
}
