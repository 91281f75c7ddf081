//! Shared harness for Portcullis integration tests.
//!
//! Everything here drives real processes over real sockets: the `portcullis`
//! binary (gateway, echo backend, certificate tool), curl, openssl s_client,
//! and a rustls client. Every child process is owned by a guard that kills it
//! on drop; every wait is bounded in time.
//!
//! This file holds the basics every other part uses (the binary, scratch
//! directories, ports, hashing and byte patterns, log-text helpers, polling,
//! the gateway's JSON error bodies) and re-exports every submodule, so a test
//! says `mod common; use common::*;` and sees one flat set of names. The
//! submodules, each about one thing a test starts or talks to, import their
//! siblings by name (`super::procs::ChildGuard`), never through these
//! re-exports, so the dependencies between them stay visible and point one
//! way: `certs` uses `procs`; `config`, `curl` and `tls_client` use `certs`
//! (`curl` also `procs`); `http_client` uses `tls_client`; `gateway` sits on
//! all of them; `backends` and `admin` stand alone.
#![allow(dead_code)]

mod admin;
mod backends;
mod certs;
mod config;
mod curl;
mod gateway;
mod http_client;
mod procs;
mod tls_client;

// Each test binary uses only part of the harness, so in each some of these
// re-exports go unused (the reason for `dead_code` above too).
#[allow(unused_imports)]
pub use {
    admin::*, backends::*, certs::*, config::*, curl::*, gateway::*, http_client::*, procs::*,
    tls_client::*,
};

use std::fs;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A fresh `portcullis` command. The child inherits the environment, so
/// `PORTCULLIS_DRIVER` set by CI reaches the gateway and the echo backend.
pub fn portcullis() -> Command {
    Command::new(bin())
}

/// The load generator `pcl-load`, built beside the gateway by the workspace
/// build (tests/run.sh builds it).
pub fn pcl_load() -> PathBuf {
    let path = Path::new(bin()).with_file_name("pcl-load");
    assert!(
        path.exists(),
        "{} missing: build the workspace (cargo build --workspace)",
        path.display()
    );
    path
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// A per-test scratch directory. Removed on drop, kept (and its path printed)
/// when the test is panicking so the logs can be inspected.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portcullis-it");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = base.join(format!(
            "{}-{}-{}-{}",
            name,
            std::process::id(),
            unique(),
            nanos
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// A new, unique file name inside the directory.
    pub fn file(&self, stem: &str) -> PathBuf {
        self.path.join(format!("{}-{}", stem, unique()))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("PORTCULLIS_KEEP_TMP").is_some() {
            eprintln!("[harness] keeping test directory {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// Not `bind(:0)`: that hands out a port from the kernel's ephemeral range,
/// where every outgoing connection (curl, the gateway's backend
/// connections) also takes its local port, so between this call and the
/// server's own bind a client socket could take it ("address already in
/// use"). Ports come from 10000-31999 instead, below the ephemeral range
/// (32768-60999 by default), each handed out once per test process, the
/// starting point spread by the process id so consecutive test binaries do
/// not reuse each other's ports.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = (FIRST + n) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A free TCP port on [::1], or None when ::1 is not configured.
pub fn free_port_v6() -> Option<u16> {
    let l = TcpListener::bind("[::1]:0").ok()?;
    Some(l.local_addr().ok()?.port())
}

/// A port on which nothing listens (bound then dropped).
pub fn dead_port() -> u16 {
    free_port()
}

/// Resolves "host:port" to the first socket address.
pub fn sockaddr(s: &str) -> SocketAddr {
    s.to_socket_addrs().unwrap().next().unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    hex(d.as_ref())
}

pub fn sha256_file(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

/// The echo backend's `x-echo-bytes` pattern: byte i = (i % 251).
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Deterministic pseudo-random bytes (xorshift64*), for upload bodies.
pub fn prng_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Remove ANSI colour escapes (tracing's text formatter may emit them even
/// into a file).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Reads the numeric value of `key=N` in a log line (key preceded by start,
/// a space or a non-identifier character).
pub fn field_u64(line: &str, key: &str) -> Option<u64> {
    let pat = format!("{key}=");
    let mut start = 0;
    while let Some(i) = line[start..].find(&pat) {
        let at = start + i;
        let ok_before = at == 0 || {
            let b = line.as_bytes()[at - 1];
            !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        };
        let rest = &line[at + pat.len()..];
        let rest = rest.trim_start_matches('"');
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if ok_before && !digits.is_empty() {
            return digits.parse().ok();
        }
        start = at + pat.len();
    }
    None
}

/// The driver the gateway must report given the environment, if forced.
pub fn forced_driver() -> Option<&'static str> {
    match std::env::var("PORTCULLIS_DRIVER").ok().as_deref() {
        Some("epoll") => Some("epoll"),
        Some("io_uring") => Some("io_uring"),
        _ => None,
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The gateway's JSON bodies (read from curl's output and from HttpConn alike)
// ---------------------------------------------------------------------------

pub fn parse_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        )
    })
}

/// Asserts the gateway's error JSON shape and returns the code string.
pub fn assert_error_json(body: &[u8], status: u16, code: &str) {
    let v = parse_json(body);
    assert_eq!(v["error"]["status"], status, "error.status in {v}");
    assert_eq!(v["error"]["code"], code, "error.code in {v}");
    assert!(
        v["error"]["message"].is_string(),
        "error.message missing in {v}"
    );
}
