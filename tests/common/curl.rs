//! The command-line clients users reach for: `curl` (with a client
//! certificate as PEM or PKCS#12, or none; `CurlRes` keeps every status,
//! body and header dump) and `openssl s_client` (`s_client`), each run as a
//! real process under a deadline. curl speaks HTTP/1.1 unless the test
//! passes `--http2`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::certs::CertDir;
use super::procs::{run_cmd, Out};
use super::{parse_json, unique};

pub enum Auth<'a> {
    /// DIR/client.pem + DIR/client.key
    Client,
    /// No client certificate at all.
    NoCert,
    Pem(&'a Path, &'a Path),
    P12(&'a Path, &'a str),
}

pub struct CurlRes {
    pub exit: i32,
    /// Last `%{http_code}` printed (0 when none).
    pub code: u16,
    /// All codes printed (one per URL).
    pub codes: Vec<u16>,
    pub body: Vec<u8>,
    pub bodies: Vec<Vec<u8>>,
    /// Raw header dump (-D) of all responses.
    pub headers: String,
    pub stderr: String,
}

impl CurlRes {
    pub fn json(&self) -> Value {
        parse_json(&self.body)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Value of a header in the last response head.
    pub fn header(&self, name: &str) -> Option<String> {
        let last = self
            .headers
            .split("\r\n\r\n")
            .filter(|b| !b.trim().is_empty())
            .last()?;
        last.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if k.trim().eq_ignore_ascii_case(name) {
                Some(v.trim().to_string())
            } else {
                None
            }
        })
    }
    pub fn describe(&self) -> String {
        format!(
            "curl exit {} code {} \n--- headers ---\n{}\n--- body (first 2000) ---\n{}\n--- stderr ---\n{}",
            self.exit,
            self.code,
            self.headers,
            String::from_utf8_lossy(&self.body[..self.body.len().min(2000)]),
            self.stderr
        )
    }
}

/// Runs curl against `urls` (https://localhost:PORT/...), resolving
/// localhost to 127.0.0.1, one output file per URL.
pub fn curl(
    work: &Path,
    certs: &CertDir,
    port: u16,
    auth: Auth,
    urls: &[&str],
    extra: &[&str],
) -> CurlRes {
    let mut cmd = Command::new("curl");
    cmd.arg("-sS")
        .arg("--max-time")
        .arg("20")
        .arg("--cacert")
        .arg(certs.ca());
    match auth {
        Auth::Client => {
            cmd.arg("--cert")
                .arg(certs.client_cert())
                .arg("--key")
                .arg(certs.client_key());
        }
        Auth::NoCert => {}
        Auth::Pem(c, k) => {
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        Auth::P12(p, pw) => {
            cmd.arg("--cert-type")
                .arg("P12")
                .arg("--cert")
                .arg(format!("{}:{}", p.display(), pw));
        }
    }
    cmd.arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"));
    let hdr = work.join(format!("curl-{}.headers", unique()));
    cmd.arg("-D").arg(&hdr);
    cmd.arg("-w").arg("%{http_code}\\n");
    // The tests written for HTTP/1.1 stay on it (curl offers h2 by ALPN and
    // the gateway prefers it); HTTP/2 tests pass --http2.
    if !extra.iter().any(|a| a.starts_with("--http2")) {
        cmd.arg("--http1.1");
    }
    cmd.args(extra);
    let mut outs = Vec::new();
    for u in urls {
        let o = work.join(format!("curl-{}.body", unique()));
        cmd.arg(u).arg("-o").arg(&o);
        outs.push(o);
    }
    let o = run_cmd(&mut cmd, None, Duration::from_secs(40));
    let codes: Vec<u16> = o
        .stdout_str()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let bodies: Vec<Vec<u8>> = outs
        .iter()
        .map(|p| fs::read(p).unwrap_or_default())
        .collect();
    CurlRes {
        exit: o.status.code().unwrap_or(-1),
        code: codes.last().copied().unwrap_or(0),
        codes,
        body: bodies.last().cloned().unwrap_or_default(),
        bodies,
        headers: fs::read_to_string(&hdr).unwrap_or_default(),
        stderr: o.stderr,
    }
}

// ---------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------

/// Runs `openssl s_client` with `args`, feeding `request` on stdin (with
/// -ign_eof so it waits for the server to close). Returns stdout+stderr.
pub fn s_client(port: u16, args: &[&str], request: &[u8]) -> Out {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-servername")
        .arg("localhost")
        .arg("-ign_eof")
        .args(args);
    run_cmd(&mut cmd, Some(request), Duration::from_secs(30))
}
