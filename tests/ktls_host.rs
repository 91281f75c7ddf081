//! Kernel-TLS policy on the machine the suite runs on. The kTLS data path
//! itself is proven inside a VM whose kernel has the `tls` module
//! (tests/ktls/run.sh); here: `on` refuses to start where the kernel cannot,
//! `auto` says why once and serves over userspace rustls, `off` never probes.

mod common;

use std::time::Duration;

use common::*;

fn host_has_ktls() -> Result<(), String> {
    portcullis::tls::ktls::probe()
        .available
        .map_err(|u| u.reason)
}

#[test]
fn ktls_on_refuses_to_start_without_kernel_tls() {
    let td = TempDir::new("ktls_on");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let mut cfg = Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()]));
    for l in &mut cfg.listeners {
        l.ktls = Some("on".into());
    }
    match host_has_ktls() {
        Err(reason) => {
            let path = td.join("on.toml");
            std::fs::write(&path, cfg.render()).unwrap();
            let mut cmd = portcullis();
            cmd.arg("run").arg("--config").arg(&path);
            let out = run_cmd(&mut cmd, None, Duration::from_secs(20));
            assert_eq!(
                out.code(),
                Some(1),
                "ktls = on must refuse to start: {}",
                out.describe()
            );
            let want = format!("ktls = \"on\" but kernel TLS unavailable: {reason}");
            assert!(
                out.stderr.contains(&want),
                "stderr must say {want:?}: {}",
                out.describe()
            );
            if reason.contains("ENOENT") {
                assert!(
                    out.stderr.contains("modprobe tls"),
                    "must say how to fix it: {}",
                    out.describe()
                );
            }
        }
        Ok(()) => {
            // A host with kernel TLS: `on` starts and says so.
            let gw = Gateway::start(&td, &certs, cfg);
            assert!(gw
                .proc
                .wait_log_line(&["kernel TLS available"], Duration::from_secs(5))
                .is_some());
            assert_eq!(gw.curl("/on", &[]).code, 200);
        }
    }
}

#[test]
fn ktls_auto_logs_the_fallback_once_and_serves() {
    let mut st = Stack::start("ktls_auto", |c, _| {
        let mut c = c.workers(2);
        for l in &mut c.listeners {
            l.ktls = Some("auto".into());
        }
        c
    });
    for i in 0..4 {
        assert_eq!(st.gw.curl(&format!("/auto{i}"), &[]).code, 200);
    }
    let available = host_has_ktls();
    let status = st.gw.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let stderr = strip_ansi(&st.gw.proc.stderr());
    let mut modes = (0u64, 0u64);
    for line in stderr.lines().filter(|l| l.contains("worker stopped")) {
        modes.0 += field_u64(line, "ktls").unwrap_or(0);
        modes.1 += field_u64(line, "userspace").unwrap_or(0);
    }
    match available {
        Err(reason) => {
            let said = stderr.matches("kernel TLS unavailable").count();
            assert_eq!(
                said, 1,
                "the fallback is logged exactly once (2 workers probed):\n{stderr}"
            );
            assert!(
                stderr.contains(&format!(
                    "kernel TLS unavailable: {reason}; serving over userspace rustls"
                )),
                "{stderr}"
            );
            assert_eq!(modes.0, 0, "no connection can be kTLS here");
            assert!(
                modes.1 >= 4,
                "the 4 connections are counted as userspace: {modes:?}\n{stderr}"
            );
        }
        Ok(()) => assert!(
            modes.0 >= 4,
            "kTLS host: connections go to the kernel: {modes:?}"
        ),
    }
}

#[test]
fn ktls_off_never_probes() {
    let mut st = Stack::start("ktls_off", |c, _| {
        let mut c = c.workers(1);
        for l in &mut c.listeners {
            l.ktls = Some("off".into());
        }
        c
    });
    assert_eq!(st.gw.curl("/off", &[]).code, 200);
    let status = st.gw.terminate(Duration::from_secs(15));
    assert!(status.success());
    let stderr = strip_ansi(&st.gw.proc.stderr());
    assert!(
        !stderr.contains("kernel TLS"),
        "off must not probe or mention kernel TLS:\n{stderr}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("worker stopped"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(field_u64(&line, "userspace"), Some(1), "{line}");
}

/// HTTP/2 on an `auto` listener takes the same handover as HTTP/1.1: here
/// (no kTLS) it is served over userspace TLS and counted so; on a kTLS host
/// it goes to the kernel. (The kTLS side itself is in the VM suite.)
#[test]
fn http2_on_an_auto_listener_is_counted_by_the_tls_mode_it_got() {
    let admin = format!("127.0.0.1:{}", free_port());
    let mut st = Stack::start("ktls_auto_h2", |c, _| {
        let mut c = c.workers(1);
        c.admin = Some(admin.clone());
        for l in &mut c.listeners {
            l.ktls = Some("auto".into());
        }
        c
    });
    for i in 0..3 {
        let r = st.gw.curl(&format!("/h2auto{i}"), &["--http2"]);
        assert_eq!(r.code, 200, "{}", r.describe());
        assert!(r.headers.starts_with("HTTP/2 200"), "{}", r.describe());
    }
    let (want, other) = match host_has_ktls() {
        Ok(()) => ("ktls", "userspace"),
        Err(_) => ("userspace", "ktls"),
    };
    let name = |mode: &str| format!("portcullis_http2_connections_total{{tls_mode=\"{mode}\"}}");
    let counted = wait_until(Duration::from_secs(5), || {
        let (_, text) = admin_get(&admin, "/metrics");
        metric(&text, &name(want)).unwrap_or(0.0) >= 3.0
    });
    let (_, text) = admin_get(&admin, "/metrics");
    assert!(counted, "{text}");
    assert_eq!(metric(&text, &name(other)), Some(0.0), "{text}");
    let status = st.gw.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
}
