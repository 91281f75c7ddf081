//! Large response bodies through the userspace-TLS path: read from the
//! backend in bulk pieces, sealed into full TLS records, written in few large
//! writes (`proxy::forward::BULK_READ`, `tls::steps::Ciphertext`). Every byte
//! must arrive exactly, at sizes on and just off the piece and record
//! boundaries, Content-Length and chunked, one after another on one kept-alive
//! connection (the buffers are reused between them); and a backend that
//! closes in the middle of a large body must leave the client with an
//! aborted response, never one that reads as complete.
//!
//! Real gateway, real TLS client, the real echo backend and a scripted
//! backend on a real socket.

mod common;

use std::time::Duration;

use common::*;

/// On, one below and one above the 16 KiB record and 64 KiB read sizes, and
/// 1 MiB (the bench's bulk size) with its neighbours.
const SIZES: &[usize] = &[
    1,
    16383,
    16384,
    16385,
    65535,
    65536,
    65537,
    3 * 65536 + 7,
    1024 * 1024 - 1,
    1024 * 1024,
    1024 * 1024 + 1,
    1_000_003,
];

#[test]
fn bulk_bodies_of_odd_sizes_arrive_byte_exact_on_one_connection() {
    let st = Stack::start("bulk_sizes", |c, _| c.workers(1));
    let mut conn = st.gw.tls();
    conn.set_read_timeout(Duration::from_secs(20));
    for chunked in [false, true] {
        for &n in SIZES {
            let bytes = format!("x-echo-bytes: {n}");
            let mut headers = vec![bytes.as_str()];
            if chunked {
                headers.push("x-echo-chunked: 1");
            }
            let r = conn
                .get(&format!("/bulk/{n}"), &headers)
                .unwrap_or_else(|e| panic!("n={n} chunked={chunked}: {e}"));
            assert_eq!(r.status, 200, "n={n} chunked={chunked}");
            assert_eq!(r.body.len(), n, "n={n} chunked={chunked}");
            assert!(
                r.body == pattern(n),
                "n={n} chunked={chunked}: the body differs from the backend's bytes"
            );
        }
    }
    // The connection is still in step: a small request after all of them.
    let r = conn.get("/after", &[]).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/after");
}

#[test]
fn a_backend_closing_in_the_middle_of_a_large_body_aborts_the_response() {
    const LEN: usize = 1024 * 1024;
    const SENT: usize = 300_000;
    let body = pattern(SENT);
    let backend = MiniBackend::start(move |_| {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n");
        Behaviour::ScriptThenClose(vec![
            (Duration::ZERO, head.into_bytes()),
            // In pieces, so the gateway is well into its bulk reads when the
            // backend goes.
            (Duration::from_millis(50), body[..100_000].to_vec()),
            (Duration::from_millis(50), body[100_000..].to_vec()),
        ])
    });
    let st = Stack::start("bulk_cut", |c, _| {
        let mut c = c.workers(1);
        c.routes = vec![RouteCfg::new("/", &[&backend.addr()])];
        c
    });
    let mut conn = st.gw.tls();
    conn.send(&get_req("/cut", &[])).unwrap();
    let (bytes, closed) = conn.read_until_close(Duration::from_secs(15));
    assert!(closed, "the gateway ended the connection");
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or_else(|| panic!("no response head: {text:?}"));
    let got = &bytes[head_end..];
    // The abort is a reset, which may overtake bytes still queued: what
    // arrives is a prefix of what the backend sent, never the whole length.
    assert!(
        got.len() <= SENT && got.len() < LEN,
        "{} body bytes arrived of {SENT} sent (Content-Length {LEN})",
        got.len()
    );
    assert!(
        got == &pattern(SENT)[..got.len()],
        "the bytes that came are the backend's"
    );
}

/// The host's first processor is AMD with ERMS or FSRM: glibc would copy
/// with `rep movsb`, which is slow there for the copies rustls makes of each
/// record (see `src/copy_tuning.rs`).
fn host_has_slow_rep_movsb() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    field("vendor_id").as_deref() == Some("AuthenticAMD")
        && field("flags")
            .unwrap_or_default()
            .split_ascii_whitespace()
            .any(|f| f == "erms" || f == "fsrm")
}

/// `GLIBC_TUNABLES` as the running process sees it (its environment at exec).
fn tunables_of(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"GLIBC_TUNABLES="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn on_amd_cpus_the_gateway_runs_again_with_rep_movsb_off_and_serves_bulk_exactly() {
    const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold=1099511627776";
    let td = TempDir::new("bulk_rep_movsb");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let cfg = Config::new(&certs)
        .route(RouteCfg::new("/", &[&echo.addr()]))
        .workers(1);
    // (Other tunables are kept beside ours: a unit test in copy_tuning.rs.
    // Not here: glibc rewrites the variable in place as it parses it, and
    // /proc/PID/environ then shows a shortened value.)
    let gw = Gateway::start_with_env(
        &td,
        &certs,
        cfg.clone(),
        &[
            ("GLIBC_TUNABLES", None),
            ("PORTCULLIS_KEEP_REP_MOVSB", None),
        ],
    );
    let tunables = tunables_of(gw.proc.pid());
    if host_has_slow_rep_movsb() {
        assert_eq!(
            tunables.as_deref(),
            Some(TUNABLE),
            "the gateway (same pid) runs with rep movsb off"
        );
        assert_eq!(gw.proc.count_log_lines(&["glibc memcpy", TUNABLE]), 1);
    } else {
        assert_eq!(tunables, None);
        assert_eq!(gw.proc.count_log_lines(&["glibc memcpy"]), 0);
    }
    // Its arguments are its own, not /proc/self/exe's.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", gw.proc.pid())).unwrap();
    let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(argv[0], bin().as_bytes(), "argv[0] is kept");
    assert_eq!(argv[1], b"run");
    // And its name: `ps`, `pgrep portcullis` and systemd see "portcullis".
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", gw.proc.pid())).unwrap();
    assert_eq!(comm.trim(), "portcullis");
    let mut conn = gw.tls();
    conn.set_read_timeout(Duration::from_secs(20));
    for n in [16385, 1024 * 1024 + 1] {
        let bytes = format!("x-echo-bytes: {n}");
        let r = conn.get("/bulk", &[bytes.as_str()]).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == pattern(n), "n={n}: the body is the backend's");
    }
    drop(conn);
    drop(gw);

    // The opt-out keeps glibc's own choice.
    let td2 = TempDir::new("bulk_rep_movsb_kept");
    let gw = Gateway::start_with_env(
        &td2,
        &certs,
        cfg,
        &[
            ("GLIBC_TUNABLES", None),
            ("PORTCULLIS_KEEP_REP_MOVSB", Some("1")),
        ],
    );
    assert_eq!(tunables_of(gw.proc.pid()), None);
    assert_eq!(gw.proc.count_log_lines(&["glibc memcpy"]), 0);
    drop(gw);

    // Other tunables first: glibc shortens the variable as it parses it, so
    // the second start cannot tell from it that it already ran again; it
    // must not execute itself in a loop, and serves.
    let td3 = TempDir::new("bulk_rep_movsb_others");
    let gw = Gateway::start_with_env(
        &td3,
        &certs,
        Config::new(&certs)
            .route(RouteCfg::new("/", &[&echo.addr()]))
            .workers(1),
        &[
            (
                "GLIBC_TUNABLES",
                Some("glibc.malloc.check=0:glibc.malloc.tcache_count=5"),
            ),
            ("PORTCULLIS_KEEP_REP_MOVSB", None),
        ],
    );
    let mut conn = gw.tls();
    conn.set_read_timeout(Duration::from_secs(20));
    assert_eq!(conn.get("/others", &[]).unwrap().status, 200);
}
