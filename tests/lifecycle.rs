//! Process lifecycle: workers and drivers, signals and draining, timeouts,
//! concurrency across workers, IPv6, log formats.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn routes(c: Config, r: Vec<RouteCfg>) -> Config {
    Config { routes: r, ..c }
}

/// Parses the `worker stopped` lines into (worker, connections).
fn stopped_lines(gw: &Gateway) -> Vec<(u64, u64, String)> {
    gw.proc
        .log_lines(&["worker stopped"])
        .into_iter()
        .map(|l| {
            let w = field_u64(&l, "worker").unwrap_or_else(|| panic!("no worker=N in {l:?}"));
            let c =
                field_u64(&l, "connections").unwrap_or_else(|| panic!("no connections=K in {l:?}"));
            (w, c, l)
        })
        .collect()
}

fn assert_driver_lines(gw: &Gateway, want: Option<&str>) {
    let lines = gw.proc.log_lines(&["worker started"]);
    assert!(!lines.is_empty());
    for l in &lines {
        let d = if l.contains("driver=io_uring") {
            "io_uring"
        } else if l.contains("driver=epoll") {
            "epoll"
        } else {
            gw.fail(&format!(
                "`worker started` line without driver=io_uring|epoll: {l:?}"
            ))
        };
        if let Some(w) = want {
            assert_eq!(d, w, "wrong driver in {l:?}");
        }
    }
}

#[test]
fn workers_log_start_and_stop_with_driver() {
    let mut st = Stack::start("life_workers", |c, _| c.workers(2));
    let gw = &mut st.gw;
    assert_eq!(
        gw.proc.count_log_lines(&["worker started"]),
        2,
        "one `worker started` line per worker"
    );
    assert_driver_lines(gw, forced_driver());
    for i in 0..4 {
        assert_eq!(gw.curl(&format!("/w{i}"), &[]).code, 200);
    }
    let st_code = gw.terminate(Duration::from_secs(15));
    assert!(st_code.success(), "exit status after SIGTERM: {st_code}");
    let lines = stopped_lines(gw);
    assert_eq!(
        lines.len(),
        2,
        "one `worker stopped` line per worker: {lines:?}"
    );
    let ids: HashSet<u64> = lines.iter().map(|l| l.0).collect();
    assert_eq!(ids.len(), 2, "distinct worker ids: {lines:?}");
    let total: u64 = lines.iter().map(|l| l.1).sum();
    assert!(
        total >= 4,
        "4 curl connections (plus probes) were accepted, counted {total}: {lines:?}"
    );
}

#[test]
fn config_driver_and_env_override() {
    // driver = "epoll" in the config, no env override
    let td = TempDir::new("life_driver_cfg");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let mut cfg = routes(
        Config::new(&certs).workers(1),
        vec![RouteCfg::new("/", &[&echo.addr()])],
    );
    cfg.driver = "epoll".into();
    let gw = Gateway::start_with_env(&td, &certs, cfg, &[("PORTCULLIS_DRIVER", None)]);
    assert_driver_lines(&gw, Some("epoll"));
    assert_eq!(gw.curl("/", &[]).code, 200);
    drop(gw);

    // the environment overrides the config
    let mut cfg = routes(
        Config::new(&certs).workers(1),
        vec![RouteCfg::new("/", &[&echo.addr()])],
    );
    cfg.driver = "io_uring".into();
    let gw = Gateway::start_with_env(&td, &certs, cfg, &[("PORTCULLIS_DRIVER", Some("epoll"))]);
    assert_driver_lines(&gw, Some("epoll"));
    assert_eq!(gw.curl("/", &[]).code, 200);
}

#[test]
fn sigterm_drains_in_flight_and_refuses_new_work() {
    let backend = MiniBackend::start(|head| {
        if head.to_ascii_lowercase().contains("x-slow: 1") {
            Behaviour::Respond {
                body: r#"{"slow":true}"#.into(),
                delay: Duration::from_secs(3),
            }
        } else {
            Behaviour::Respond {
                body: r#"{"slow":false}"#.into(),
                delay: Duration::ZERO,
            }
        }
    });
    let mut st = Stack::start("life_drain", |mut c, _| {
        c.drain_timeout = "30s".into();
        routes(c.workers(1), vec![RouteCfg::new("/", &[&backend.addr()])])
    });
    let addr = st.gw.addr();

    // B: a kept-alive connection that has already served a request
    let mut b = st.gw.tls();
    let r = b.get("/warm", &[]).unwrap();
    assert_eq!(r.status, 200);
    while backend.heads.try_recv().is_ok() {}

    // A: a slow request, in flight at the backend
    let mut a = st.gw.tls();
    a.send(&get_req("/slow", &["x-slow: 1"])).unwrap();
    let head = backend
        .heads
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| st.gw.fail("the slow request never reached the backend"));
    assert!(head.starts_with("GET /slow"), "{head}");

    let t0 = Instant::now();
    st.gw.proc.sigterm();

    // new connections are refused promptly
    let refused = wait_until(Duration::from_secs(3), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    });
    if !refused {
        st.gw
            .fail("the listener still accepts connections 3 s after SIGTERM");
    }

    // a new request on the kept-alive connection gets 503 + close
    let r = b
        .get("/during-drain", &[])
        .unwrap_or_else(|e| st.gw.fail(&format!("B during drain: {e}")));
    r.assert_error(503, "PCS.5030");
    assert!(
        r.connection_close(),
        "503 during drain must carry Connection: close"
    );
    b.assert_closed("kept-alive connection after the drain 503");

    // the in-flight request completes
    let r = a.read_final().unwrap_or_else(|e| {
        st.gw
            .fail(&format!("in-flight request lost during drain: {e}"))
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["slow"], true);
    drop(a);
    drop(b);

    let status = st
        .gw
        .proc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| {
            st.gw
                .fail("gateway did not exit after its in-flight request finished")
        });
    assert!(status.success(), "exit status after drain: {status}");
    assert!(t0.elapsed() < Duration::from_secs(12));
    assert!(st.gw.proc.count_log_lines(&["worker stopped"]) >= 1);
}

#[test]
fn sigint_exits_zero() {
    let mut st = Stack::start("life_sigint", |c, _| c.workers(1));
    assert_eq!(st.gw.curl("/", &[]).code, 200);
    st.gw.proc.signal(libc::SIGINT);
    let status = st
        .gw
        .proc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| st.gw.fail("no exit after SIGINT"));
    assert!(status.success(), "exit status after SIGINT: {status}");
    assert_eq!(st.gw.proc.count_log_lines(&["worker stopped"]), 1);
}

#[test]
fn drain_timeout_bounds_shutdown() {
    let backend = MiniBackend::start(|_| Behaviour::Respond {
        body: "{}".into(),
        delay: Duration::from_secs(60),
    });
    let mut st = Stack::start("life_drain_timeout", |mut c, _| {
        c.drain_timeout = "1s".into();
        c.backend_response = "120s".into();
        routes(c.workers(1), vec![RouteCfg::new("/", &[&backend.addr()])])
    });
    let mut a = st.gw.tls();
    a.send(&get_req("/forever", &[])).unwrap();
    backend
        .heads
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| st.gw.fail("request never reached the backend"));
    let t0 = Instant::now();
    st.gw.proc.sigterm();
    if st.gw.proc.wait_exit(Duration::from_secs(8)).is_none() {
        st.gw
            .fail("drain_timeout = 1s, but the gateway was still running 8 s after SIGTERM");
    }
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(700),
        "exited before drain_timeout while a request was in flight: {el:?}"
    );
    let (bytes, _) = a.read_until_close(Duration::from_secs(5));
    assert!(!String::from_utf8_lossy(&bytes).contains("HTTP/1.1 200"));
}

#[test]
fn slowloris_head_is_cut_off() {
    let st = Stack::start("life_slowloris", |mut c, _| {
        c.request_head = "2s".into();
        c.workers(1)
    });
    let mut c = st.gw.tls();
    let head = b"GET /slowloris HTTP/1.1\r\nHost: localhost\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let t0 = Instant::now();
    let mut got: Vec<u8> = Vec::new();
    let mut closed = false;
    for &byte in head.iter() {
        if t0.elapsed() > Duration::from_secs(15) {
            break;
        }
        if c.send(&[byte]).is_err() {
            closed = true;
            break;
        }
        match c.wait_closed(Duration::from_secs(1)) {
            Closed::StillOpen => continue,
            Closed::Eof => {
                closed = true;
                break;
            }
            Closed::Data(d) => {
                c.unread(d);
                let (all, cl) = c.read_until_close(Duration::from_secs(5));
                got = all;
                closed = cl;
                break;
            }
        }
    }
    let el = t0.elapsed();
    assert!(
        closed,
        "a one-byte-per-second head was never cut off ({el:?}); received {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        el < Duration::from_secs(6),
        "cut off only after {el:?} (request_head = 2s)"
    );
    if !got.is_empty() {
        let r = parse_response_bytes(&got).unwrap();
        r.assert_error(408, "PCS.4080");
        assert!(
            r.connection_close(),
            "408 must carry Connection: close: {:?}",
            r.headers
        );
    }
    // the gateway still serves others
    assert_eq!(st.gw.curl("/", &[]).code, 200);
}

#[test]
fn idle_keepalive_connection_is_closed() {
    let st = Stack::start("life_idle", |mut c, _| {
        c.idle = "1s".into();
        c
    });
    let mut c = st.gw.tls();
    assert_eq!(c.get("/", &[]).unwrap().status, 200);
    let t0 = Instant::now();
    match c.wait_closed(Duration::from_secs(8)) {
        Closed::Eof => {}
        Closed::Data(d) => {
            // a 408 before closing an idle connection is acceptable
            let text = String::from_utf8_lossy(&d).into_owned();
            assert!(
                text.starts_with("HTTP/1.1 408"),
                "unexpected data on an idle connection: {text}"
            );
            let (_, closed) = c.read_until_close(Duration::from_secs(5));
            assert!(closed);
        }
        Closed::StillOpen => st.gw.fail("idle = 1s, connection still open after 8 s"),
    }
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(500),
        "idle connection closed too early: {el:?}"
    );
    assert!(
        el < Duration::from_secs(6),
        "idle connection closed late: {el:?}"
    );
}

#[test]
fn silent_connection_hits_handshake_timeout() {
    let st = Stack::start("life_handshake_timeout", |mut c, _| {
        c.handshake = "1s".into();
        c
    });
    let mut s = TcpStream::connect(st.gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let r = s.read(&mut buf);
    let el = t0.elapsed();
    match r {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => st.gw.fail(&format!(
            "expected the gateway to close a silent connection, got {other:?} after {el:?}"
        )),
    }
    assert!(
        el >= Duration::from_millis(500) && el < Duration::from_secs(6),
        "closed after {el:?} (handshake = 1s)"
    );
}

#[test]
fn two_hundred_concurrent_clients_across_two_workers() {
    let mut st = Stack::start("life_200", |c, _| c.workers(2));
    let cfg = client_config(&st.certs, ClientAuth::Default, &[]);
    let addr = st.gw.addr();
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (cfg, barrier) = (cfg.clone(), barrier.clone());
            thread::spawn(move || -> Result<(), String> {
                barrier.wait();
                let s = tls_connect(addr, cfg)
                    .map_err(|e| format!("client {i}: connect/handshake: {e}"))?;
                let mut c = HttpConn::new(s);
                for j in 0..3 {
                    let p = format!("/c{i}/r{j}");
                    let r = c
                        .get(&p, &[])
                        .map_err(|e| format!("client {i} request {j}: {e}"))?;
                    if r.status != 200 {
                        return Err(format!("client {i} request {j}: status {}", r.status));
                    }
                    let v: serde_json::Value = serde_json::from_slice(&r.body)
                        .map_err(|e| format!("client {i}: bad JSON {e}"))?;
                    if v["path"] != p.as_str() {
                        return Err(format!("client {i}: wrong response {v}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let errors: Vec<String> = handles
        .into_iter()
        .filter_map(|h| match h.join() {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some("client thread panicked".into()),
        })
        .collect();
    if !errors.is_empty() {
        st.gw.fail(&format!(
            "{} of {n} clients failed; first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        ));
    }
    let status = st.gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status: {status}");
    let lines = stopped_lines(&st.gw);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ids: HashSet<u64> = lines.iter().map(|l| l.0).collect();
    assert_eq!(ids.len(), 2, "{lines:?}");
    for (w, conns, l) in &lines {
        assert!(
            *conns > 0,
            "worker {w} accepted no connection (SO_REUSEPORT should spread them): {l}"
        );
    }
    let total: u64 = lines.iter().map(|l| l.1).sum();
    assert!(
        total >= n as u64,
        "only {total} connections counted for {n} clients: {lines:?}"
    );
}

#[test]
fn ipv6_listener() {
    let Some(p6) = free_port_v6() else {
        eprintln!("NOTE: ::1 is not configured on lo; skipping the IPv6 listener test");
        return;
    };
    let td = TempDir::new("life_ipv6");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let mut cfg = routes(
        Config::new(&certs),
        vec![RouteCfg::new("/", &[&echo.addr()])],
    );
    cfg.listeners
        .push(ListenerCfg::new(&format!("[::1]:{p6}"), &certs));
    let gw = Gateway::start(&td, &certs, cfg);
    let r = curl(
        &gw.work,
        &certs,
        gw.port(),
        Auth::Client,
        &[&format!("https://[::1]:{p6}/six")],
        &["-g"],
    );
    assert_eq!(r.code, 200, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["path"], "/six");
    assert_eq!(v["headers"]["x-forwarded-for"], "::1", "{v}");
    // rustls over IPv6, SNI localhost
    let cfg = client_config(&certs, ClientAuth::Default, &[]);
    let s = tls_connect(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, p6)), cfg).unwrap();
    let mut c = HttpConn::new(s);
    assert_eq!(c.get("/six-rustls", &[]).unwrap().status, 200);
    // and the IPv4 listener next to it
    assert_eq!(gw.curl("/four", &[]).code, 200);
}

#[test]
fn json_log_format() {
    let mut st = Stack::start("life_json_log", |mut c, _| {
        c.log_format = "json".into();
        c.workers(1)
    });
    assert_eq!(st.gw.curl("/", &[]).code, 200);
    let status = st.gw.terminate(Duration::from_secs(10));
    assert!(status.success());
    let log = st.gw.proc.stderr();
    let mut n = 0;
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}\n{log}"));
        assert!(v.is_object(), "{l}");
        n += 1;
    }
    assert!(n >= 2, "expected JSON log lines, got:\n{log}");
    assert!(
        log.contains("worker started") && log.contains("worker stopped"),
        "{log}"
    );
}

#[test]
fn access_log_on_and_off() {
    let mut st = Stack::start("life_access_on", |mut c, _| {
        c.access_log = true;
        c.workers(1)
    });
    assert_eq!(st.gw.curl("/access-probe-7f3a", &[]).code, 200);
    if !wait_until(Duration::from_secs(5), || {
        st.gw.proc.output().contains("/access-probe-7f3a")
    }) {
        st.gw
            .fail("access_log = true, but the request path never appeared in the gateway's output");
    }
    st.gw.terminate(Duration::from_secs(10));

    let mut st = Stack::start("life_access_off", |c, _| c.workers(1));
    assert_eq!(st.gw.curl("/quiet-probe-91c2", &[]).code, 200);
    st.gw.terminate(Duration::from_secs(10));
    let out = st.gw.proc.output();
    assert!(
        !out.contains("/quiet-probe-91c2"),
        "access_log = false, yet the request was logged:\n{out}"
    );
}
