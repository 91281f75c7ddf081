//! `pcl-load --http2` (bench/) against the real gateway and the real echo
//! backend: what `bench/compare`'s HTTP/2 rows rest on. Every response must
//! be a 200 with its whole body, over ALPN h2 with the client certificate;
//! a refused certificate and a server that does not speak h2 must show up
//! as errors, not as throughput. Short light runs: they check the tool,
//! they measure nothing.

mod common;
use common::*;

use std::time::Duration;

use serde_json::Value;

/// One pcl-load run against the gateway; its exit code and JSON report.
fn load(gw: &Gateway, td: &TempDir, name: &str, identity: bool, args: &[&str]) -> (i32, Value) {
    let json = td.join(&format!("{name}.json"));
    let mut cmd = std::process::Command::new(pcl_load());
    cmd.args(["--http2", "-t", "1", "-d", "1s"])
        .arg("--cacert")
        .arg(gw.certs.ca())
        .args(["--sni", "localhost", "--json"])
        .arg(&json);
    if identity {
        cmd.arg("--cert")
            .arg(gw.certs.client_cert())
            .arg("--key")
            .arg(gw.certs.client_key());
    }
    cmd.args(args)
        .arg(format!("https://127.0.0.1:{}/load", gw.port()));
    let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
    let v = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("pcl-load {name}: no JSON ({e}): {}", o.describe()));
    (o.code().unwrap_or(-1), v)
}

fn n(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path:?} in {v}"))
}

#[test]
fn pcl_load_http2_gets_only_200s_with_whole_bodies() {
    let st = Stack::start("pcl-load-h2", |c, _| c);
    // Many small requests on few connections, several streams at once.
    let (code, v) = load(
        &st.gw,
        &st.td,
        "small",
        true,
        &["-c", "2", "--streams", "8"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["protocol"], "h2", "{v}");
    assert_eq!(v["tls"]["alpn"], "h2", "{v}");
    assert_eq!(n(&v, &["streams_per_connection"]), 8, "{v}");
    assert_eq!(n(&v, &["errors_total"]), 0, "{v}");
    let done = n(&v, &["requests"]) + n(&v, &["requests_in_grace"]);
    assert!(done > 50, "{v}");
    assert_eq!(
        n(&v, &["responses", "2xx"]),
        done,
        "every response a 2xx: {v}"
    );
    assert_eq!(n(&v, &["connections_opened"]), 2, "{v}");

    // 1 MiB downloads: every byte of every body was read.
    let (code, v) = load(
        &st.gw,
        &st.td,
        "bulk",
        true,
        &["-c", "1", "--streams", "4", "-H", "x-echo-bytes: 1048576"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(n(&v, &["errors_total"]), 0, "{v}");
    let done = n(&v, &["requests"]) + n(&v, &["requests_in_grace"]);
    assert!(done >= 4, "{v}");
    assert_eq!(n(&v, &["responses", "2xx"]), done, "{v}");
    assert_eq!(n(&v, &["bytes_in"]), done * 1_048_576, "whole bodies: {v}");

    // Open loop over connections x streams, with a request body each way.
    let (code, v) = load(
        &st.gw,
        &st.td,
        "rate",
        true,
        &[
            "-c",
            "2",
            "--streams",
            "4",
            "-R",
            "200",
            "-m",
            "POST",
            "--body-size",
            "100000",
        ],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(n(&v, &["errors_total"]), 0, "{v}");
    let done = n(&v, &["requests"]) + n(&v, &["requests_in_grace"]);
    assert!((150..=250).contains(&done), "about 200 in 1 s: {v}");
    assert_eq!(n(&v, &["bytes_out"]), done * 100_000, "{v}");
}

#[test]
fn pcl_load_http2_counts_non_2xx_refusals_and_a_server_without_h2_as_errors() {
    let st = Stack::start("pcl-load-h2-errors", |c, _| c);
    // The backend answers 503: counted as responses and as errors.
    let (_, v) = load(
        &st.gw,
        &st.td,
        "503",
        true,
        &["-c", "1", "--streams", "2", "-H", "x-echo-status: 503"],
    );
    let done = n(&v, &["requests"]) + n(&v, &["requests_in_grace"]);
    assert!(done > 10, "{v}");
    assert_eq!(n(&v, &["responses", "5xx"]), done, "{v}");
    assert_eq!(n(&v, &["errors", "status_non_2xx"]), done, "{v}");
    assert_eq!(n(&v, &["responses", "2xx"]), 0, "{v}");

    // No client certificate: the gateway refuses it after the client's
    // Finished (TLS 1.3); not one request succeeds, exit status 1.
    let (code, v) = load(&st.gw, &st.td, "nocert", false, &["-c", "1"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(n(&v, &["requests"]), 0, "{v}");
    assert!(n(&v, &["errors", "tls_handshake"]) > 0, "{v}");
    let details = v["error_details"].to_string();
    assert!(details.contains("CertificateRequired"), "{v}");

    // A listener with HTTP/2 off: a client offering only h2 is refused at
    // the handshake (no_application_protocol), never measured as HTTP/1.1.
    let td = TempDir::new("pcl-load-h2-off");
    let mut cfg = Config::new(&st.certs).route(RouteCfg::new("/", &[&st.echo.addr()]));
    cfg.listeners[0].alpn = Some(vec!["http/1.1".into()]);
    let gw = Gateway::start(&td, &st.certs, cfg);
    let (code, v) = load(&gw, &td, "h1only", true, &["-c", "1"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(n(&v, &["requests"]), 0, "{v}");
    assert!(n(&v, &["errors", "tls_handshake"]) > 0, "{v}");
    let details = v["error_details"].to_string();
    assert!(details.contains("NoApplicationProtocol"), "{v}");
}
