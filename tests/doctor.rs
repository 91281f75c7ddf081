//! `portcullis doctor` on the machine the suite runs on.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn doctor_reports_each_check_and_agrees_with_the_probes() {
    let out = run_cmd(portcullis().arg("doctor"), None, Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let text = out.stdout_str();
    for needle in [
        "io_uring",
        "kernel TLS",
        "RLIMIT_MEMLOCK",
        "RLIMIT_NOFILE",
        "somaxconn",
        "cores",
    ] {
        assert!(
            text.contains(needle),
            "doctor must report {needle}:\n{text}"
        );
    }
    match portcullis::tls::ktls::probe().available {
        Err(why) => assert!(
            text.contains(&format!("[warn] kernel TLS unavailable: {}", why.reason)),
            "{text}"
        ),
        Ok(()) => assert!(text.contains("kernel TLS works"), "{text}"),
    }
    let uring = if monoio::utils::detect_uring() {
        "[ok  ] io_uring is usable"
    } else {
        "[warn] io_uring is not usable"
    };
    assert!(text.contains(uring), "{text}");
}

#[test]
fn doctor_fails_on_a_broken_config() {
    let td = TempDir::new("doctor_bad");
    let path = td.join("bad.toml");
    std::fs::write(&path, "[server]\nworkers = 0\n").unwrap();
    let out = run_cmd(
        portcullis().arg("doctor").arg("--config").arg(&path),
        None,
        Duration::from_secs(30),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stdout_str().contains("[FAIL] config:"),
        "{}",
        out.describe()
    );
}
