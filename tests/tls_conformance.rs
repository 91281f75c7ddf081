//! TLS conformance of the handshake driver around rustls: misbehaving
//! clients written with tlslite-ng (tests/tlsconf/*.py) against the real
//! gateway and echo backend. Each script prints one JSON line saying what the
//! client saw (the alert, a close, HTTP statuses); each test asserts that line
//! and the gateway's log for that connection (found by the client's port):
//! exactly one line, with the reason an operator needs.
//!
//! rustls passes BoGo; what these check is ours: record-exact reads, how an
//! error inside rustls becomes one alert and a close, the log line, and
//! renegotiation/KeyUpdate/corrupted records after the handshake. The wider
//! (slow, networked, not CI) run of tlsfuzzer's scripts is
//! tests/tlsfuzzer/run.sh.
//!
//! python3 with tlslite-ng and ecdsa at the versions in tests/tlsconf/tlsconf.py
//! is required (`.ci/run` installs them): without them these tests fail, they
//! do not skip. `PORTCULLIS_PYTHON` names another interpreter.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::Value;

const INSTALL: &str = "python3 -m pip install tlslite-ng==0.8.2 ecdsa==0.19.2";

fn python() -> String {
    std::env::var("PORTCULLIS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fails loudly (once per test binary) when python3 or tlslite-ng is missing.
fn require_tlslite() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| {
        let mut cmd = Command::new(python());
        cmd.arg("-c")
            .arg("import tlslite, ecdsa; print(tlslite.__version__, ecdsa.__version__)");
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) => return Err(format!("cannot run {}: {e}", python())),
        };
        let versions = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || versions != "0.8.2 0.19.2" {
            return Err(format!(
                "{} has tlslite-ng/ecdsa {versions:?} (want \"0.8.2 0.19.2\"): {}",
                python(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    });
    if let Err(why) = checked {
        panic!(
            "tests/tls_conformance.rs needs python3 with tlslite-ng and ecdsa: {why}\n\
             install them with: {INSTALL} (CI's .ci/run does)"
        );
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tlsconf")
        .join(format!("{name}.py"))
}

/// The gateway under test: the usual stack (ECDSA P-256 certificates, echo
/// backend), access log on (to prove what never reached a backend), and
/// kernel TLS off so the userspace driver is what answers after the
/// handshake on every host (the kTLS control-record path has its own VM suite).
fn stack(name: &str) -> Stack {
    require_tlslite();
    Stack::start(name, |mut c, _| {
        // One worker: a panic in it is then the whole gateway going down,
        // not a connection quietly served by the other core.
        c.workers = "1".into();
        c.access_log = true;
        c.listeners[0].ktls = Some("off".into());
        c
    })
}

/// Runs tests/tlsconf/NAME.py against the stack with TLS `tls` and the
/// stack's client certificate; its JSON line.
fn run(st: &Stack, name: &str, tls: &str) -> Value {
    let cert = st.certs.client_cert();
    let key = st.certs.client_key();
    let args = [
        "--cert".as_ref(),
        cert.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--tls".as_ref(),
        tls.as_ref(),
    ];
    run_script(st, name, &args)
}

/// Runs tests/tlsconf/NAME.py against the stack with `args`; its JSON line.
fn run_script(st: &Stack, name: &str, args: &[&std::ffi::OsStr]) -> Value {
    let mut cmd = Command::new(python());
    // No __pycache__ left in the source tree.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.arg(script(name))
        .arg("--port")
        .arg(st.gw.port().to_string())
        .args(args);
    let out = run_cmd(&mut cmd, None, Duration::from_secs(60));
    if !out.status.success() {
        st.gw
            .fail(&format!("{name}.py {args:?} failed: {}", out.describe()));
    }
    let stdout = out.stdout_str();
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        st.gw.fail(&format!(
            "{name}.py {args:?} printed no JSON line ({e}): {}",
            out.describe()
        ))
    })
}

fn peer_of(st: &Stack, outcome: &Value) -> String {
    match outcome["client_port"].as_u64() {
        Some(port) => format!("peer=127.0.0.1:{port} "),
        None => st.gw.fail(&format!("no client_port in {outcome}")),
    }
}

/// Waits for the gateway's line about this client's connection and checks it
/// is the only one, that it carries every needle, and that rustls added no
/// line of its own.
fn assert_one_log_line(st: &Stack, outcome: &Value, needles: &[&str]) -> String {
    let peer = peer_of(st, outcome);
    let mut all = vec![peer.as_str()];
    all.extend_from_slice(needles);
    let Some(line) = st.gw.proc.wait_log_line(&all, Duration::from_secs(5)) else {
        st.gw.fail(&format!(
            "no gateway log line with {all:?} (client saw {outcome})"
        ))
    };
    // Give a second line (if any were coming) the chance to arrive.
    std::thread::sleep(Duration::from_millis(200));
    let lines = st.gw.proc.log_lines(&[peer.as_str()]);
    if lines.len() != 1 {
        st.gw.fail(&format!(
            "want exactly one log line for {peer}, got {}: {lines:#?}",
            lines.len()
        ));
    }
    let rustls_lines = st.gw.proc.log_lines(&["rustls::"]);
    if !rustls_lines.is_empty() {
        st.gw.fail(&format!(
            "rustls logged lines of its own (the gateway's line says it all): {rustls_lines:#?}"
        ));
    }
    line
}

fn assert_alert(st: &Stack, outcome: &Value, alert: &str) {
    if outcome["alert"] != alert || outcome["alert_level"] != "fatal" {
        st.gw.fail(&format!(
            "want a fatal {alert} alert, the client saw {outcome}"
        ));
    }
}

/// The gateway still serves an honest client (nothing above took a worker down).
fn assert_still_serving(st: &Stack) {
    let r = st.gw.curl("/still-serving", &[]);
    if r.code != 200 {
        st.gw
            .fail(&format!("gateway no longer serves: {}", r.describe()));
    }
}

fn bad_certificate_verify(tls: &str) {
    let st = stack(&format!("tlsconf_bad_cv_{}", tls.replace('.', "")));
    let outcome = run(&st, "bad_certificate_verify", tls);
    assert_alert(&st, &outcome, "decrypt_error");
    let line = assert_one_log_line(
        &st,
        &outcome,
        &[
            "client certificate refused",
            "reason=CertificateVerify signature does not verify with the client certificate's key",
        ],
    );
    assert!(!line.contains("trusted CA"), "{line}");
    assert_still_serving(&st);
}

#[test]
fn bad_certificate_verify_signature_tls12() {
    bad_certificate_verify("1.2");
}

#[test]
fn bad_certificate_verify_signature_tls13() {
    bad_certificate_verify("1.3");
}

fn garbage_certificate(tls: &str) {
    let st = stack(&format!("tlsconf_garbage_cert_{}", tls.replace('.', "")));
    let outcome = run(&st, "garbage_certificate", tls);
    assert_alert(&st, &outcome, "bad_certificate");
    assert_one_log_line(
        &st,
        &outcome,
        &[
            "client certificate refused",
            "reason=certificate is not valid DER",
        ],
    );
}

#[test]
fn certificate_that_is_not_der_tls12() {
    garbage_certificate("1.2");
}

#[test]
fn certificate_that_is_not_der_tls13() {
    garbage_certificate("1.3");
}

fn unoffered_scheme(tls: &str) {
    let st = stack(&format!("tlsconf_unoffered_{}", tls.replace('.', "")));
    let outcome = run(&st, "unoffered_scheme", tls);
    assert_alert(&st, &outcome, "illegal_parameter");
    assert_one_log_line(
        &st,
        &outcome,
        &[
            "TLS handshake failed",
            "reason=client violated the TLS protocol (SignedHandshakeWithUnadvertisedSigScheme)",
        ],
    );
}

#[test]
fn certificate_verify_under_a_scheme_not_offered_tls12() {
    unoffered_scheme("1.2");
}

#[test]
fn certificate_verify_under_a_scheme_not_offered_tls13() {
    unoffered_scheme("1.3");
}

fn app_data_before_finished(tls: &str) {
    let st = stack(&format!("tlsconf_early_data_{}", tls.replace('.', "")));
    let outcome = run(&st, "app_data_before_finished", tls);
    assert_alert(&st, &outcome, "unexpected_message");
    assert_one_log_line(
        &st,
        &outcome,
        &[
            "TLS handshake failed",
            "reason=received unexpected message: got ApplicationData when expecting",
        ],
    );
    let reached = st.gw.proc.log_lines(&["before-finished"]);
    assert!(
        reached.is_empty(),
        "a request sent before the client's Finished reached a backend: {reached:#?}"
    );
}

#[test]
fn application_data_before_the_client_finished_tls12() {
    app_data_before_finished("1.2");
}

#[test]
fn application_data_before_the_client_finished_tls13() {
    app_data_before_finished("1.3");
}

/// rustls never renegotiates: the first ClientHello after the handshake gets
/// a warning no_renegotiation and the connection goes on serving; a second
/// one ends the connection (rustls's limit), without a close_notify that
/// would call it an orderly close, and with one log line.
#[test]
fn renegotiation_refused_then_connection_closed_tls12() {
    let st = stack("tlsconf_renegotiation");
    let outcome = run(&st, "renegotiation", "1.2");
    let want = [
        ("handshake", Value::from(true)),
        ("http_status", Value::from(200)),
        (
            "after_renegotiation_1",
            Value::from("alert warning no_renegotiation"),
        ),
        ("http_status_after_refusal", Value::from(200)),
        ("after_renegotiation_2", Value::from("connection closed")),
    ];
    for (key, value) in want {
        if outcome[key] != value {
            st.gw
                .fail(&format!("{key}: want {value}, the client saw {outcome}"));
        }
    }
    assert_one_log_line(
        &st,
        &outcome,
        &[
            "TLS connection failed",
            "reason=client violated the TLS protocol (TooManyRenegotiationRequests)",
        ],
    );
    assert_still_serving(&st);
}

/// KeyUpdate (update_requested) in the userspace driver: rustls answers with
/// its own KeyUpdate and both requests are served; nothing is logged.
#[test]
fn key_update_requested_mid_connection_tls13() {
    let st = stack("tlsconf_key_update");
    let outcome = run(&st, "key_update", "1.3");
    if outcome["http_status"] != 200 || outcome["http_status_after_key_update"] != 200 {
        st.gw
            .fail(&format!("both requests must be served: {outcome}"));
    }
    let peer = peer_of(&st, &outcome);
    let lines = st.gw.proc.log_lines(&[peer.as_str()]);
    assert!(lines.is_empty(), "unexpected log lines: {lines:#?}");
}

/// A record that does not authenticate after the handshake: one fatal
/// bad_record_mac, then the close; the worker survives. (rustls re-read
/// the bad record when the driver asked it for the alert a second time, and
/// its debug assertion against a second fatal alert took the worker thread,
/// and with it a one-worker gateway, down.)
fn corrupted_record(tls: &str) {
    let st = stack(&format!("tlsconf_corrupted_{}", tls.replace('.', "")));
    let outcome = run(&st, "corrupted_record", tls);
    if outcome["http_status"] != 200 {
        st.gw
            .fail(&format!("the request before the corruption: {outcome}"));
    }
    let want = serde_json::json!(["alert fatal bad_record_mac", "connection closed"]);
    if outcome["records_after"] != want {
        st.gw.fail(&format!(
            "after the corrupted record want {want}, the client saw {outcome}"
        ));
    }
    assert_one_log_line(
        &st,
        &outcome,
        &[
            "TLS connection failed",
            "reason=cannot decrypt peer's message",
        ],
    );
    assert_still_serving(&st);
}

#[test]
fn corrupted_record_after_the_handshake_tls12() {
    corrupted_record("1.2");
}

#[test]
fn corrupted_record_after_the_handshake_tls13() {
    corrupted_record("1.3");
}

/// A ClientHello record longer than 2^14 bytes: record_overflow (RFC 8446
/// 5.1), from our own ClientHello reader (rustls does not check plaintext
/// records; before, a 16,385-byte one was accepted and one over 18,432
/// bytes closed the connection without an alert). Exactly 2^14 is fine.
#[test]
fn client_hello_record_longer_than_a_plaintext_record_may_be() {
    let st = stack("tlsconf_oversized_hello");
    let outcome = run_script(
        &st,
        "oversized_hello_record",
        &["--bodies".as_ref(), "16384,16385,20000".as_ref()],
    );
    let answers = &outcome["answers"];
    let fits = answers["16384"].as_str().unwrap_or_default();
    if !fits.starts_with("record type 22") {
        st.gw.fail(&format!(
            "a 2^14-byte hello record must be answered with the ServerHello: {outcome}"
        ));
    }
    for over in ["16385", "20000"] {
        if answers[over] != "alert fatal record_overflow" {
            st.gw.fail(&format!(
                "a {over}-byte hello record: want record_overflow, the client saw {outcome}"
            ));
        }
        let port = outcome["client_ports"][over].as_u64().unwrap_or(0);
        let peer = format!("peer=127.0.0.1:{port} ");
        let needles = [
            peer.as_str(),
            "TLS handshake refused",
            "reason=a ClientHello record is longer than 2^14 bytes",
        ];
        if st
            .gw
            .proc
            .wait_log_line(&needles, Duration::from_secs(5))
            .is_none()
        {
            st.gw.fail(&format!("no log line with {needles:?}"));
        }
        let lines = st.gw.proc.log_lines(&[peer.as_str()]);
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }
}
