//! Shared harness for Portcullis integration tests.
//!
//! Everything here drives real processes over real sockets: the `portcullis`
//! binary (gateway, echo backend, certificate tool), curl, openssl s_client,
//! and a rustls client. Every child process is owned by a guard that kills it
//! on drop; every wait is bounded in time.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, RootCertStore, StreamOwned, SupportedProtocolVersion,
};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Basics
// ---------------------------------------------------------------------------

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portcullis")
}

/// A fresh `portcullis` command. The child inherits the environment, so
/// `PORTCULLIS_DRIVER` set by CI reaches the gateway and the echo backend.
pub fn portcullis() -> Command {
    Command::new(bin())
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

/// A free TCP port on 127.0.0.1 (bind to :0, read the port, drop).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
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
// Processes
// ---------------------------------------------------------------------------

/// Output of a finished command.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn describe(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout_str(),
            self.stderr
        )
    }
}

/// Runs a command to completion with a deadline (killed and panicking past
/// it). stdout/stderr are captured; `stdin` bytes are written then closed.
pub fn run_cmd(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let desc = format!("{:?}", cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let stdin_thread = stdin.map(|data| {
        let data = data.to_vec();
        let mut pipe = child.stdin.take().unwrap();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
            // dropping the pipe closes the child's stdin
        })
    });
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => panic!("wait {desc}: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    if let Some(t) = stdin_thread {
        let _ = t.join();
    }
    let stdout = t_out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    match status {
        Some(status) => Out {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "command timed out after {:?}: {desc}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            timeout,
            String::from_utf8_lossy(&stdout),
            stderr
        ),
    }
}

/// A long-running child process, SIGKILLed and reaped on drop. Its stdout and
/// stderr go to files whose tails are printed if the test is panicking.
pub struct ChildGuard {
    pub name: String,
    child: Option<Child>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout/stderr redirected to files in `dir`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> ChildGuard {
        let n = unique();
        let stdout_path = dir.join(format!("{name}-{n}.stdout"));
        let stderr_path = dir.join(format!("{name}-{n}.stderr"));
        let out = File::create(&stdout_path).unwrap();
        let err = File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        ChildGuard {
            name: name.to_string(),
            child: Some(child),
            stdout_path,
            stderr_path,
            exit: None,
        }
    }

    /// Like `spawn`, but stdout is also delivered line by line on a channel
    /// (and still copied to the stdout file).
    pub fn spawn_lines(
        name: &str,
        mut cmd: Command,
        dir: &Path,
    ) -> (ChildGuard, mpsc::Receiver<String>) {
        let n = unique();
        let stdout_path = dir.join(format!("{name}-{n}.stdout"));
        let stderr_path = dir.join(format!("{name}-{n}.stderr"));
        let mut out = File::create(&stdout_path).unwrap();
        let err = File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let pipe = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out, "{line}");
                let _ = tx.send(line);
            }
        });
        (
            ChildGuard {
                name: name.to_string(),
                child: Some(child),
                stdout_path,
                stderr_path,
                exit: None,
            },
            rx,
        )
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        assert!(pid > 0, "{}: no child to signal", self.name);
        let r = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            r,
            0,
            "kill({pid}, {sig}) failed: {}",
            io::Error::last_os_error()
        );
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM)
    }

    /// Exit status if the child has exited (non-blocking).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.stderr_path).unwrap_or_default())
    }

    pub fn stdout(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.stdout_path).unwrap_or_default())
    }

    /// stdout + stderr, for assertions that do not care which stream.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout(), self.stderr())
    }

    /// Polls the stderr file until a line contains every needle.
    pub fn wait_log_line(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = find_line(&self.stderr(), needles);
            found.is_some()
        });
        found
    }

    /// Number of stderr lines containing every needle.
    pub fn count_log_lines(&self, needles: &[&str]) -> usize {
        self.stderr()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.stderr()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(|s| s.to_string())
            .collect()
    }

    fn tail(path: &Path) -> String {
        let s = strip_ansi(&fs::read_to_string(path).unwrap_or_default());
        let n = s.len();
        if n > 6000 {
            let mut i = n - 6000;
            while !s.is_char_boundary(i) {
                i += 1;
            }
            format!("...{}", &s[i..])
        } else {
            s
        }
    }

    /// Panics with the child's logs.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "{msg}\n--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            Self::tail(&self.stdout_path),
            self.name,
            Self::tail(&self.stderr_path)
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.exit.is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- [{}] stdout tail ---\n{}\n--- [{}] stderr tail ---\n{}",
                self.name,
                Self::tail(&self.stdout_path),
                self.name,
                Self::tail(&self.stderr_path)
            );
        }
    }
}

pub fn find_line(text: &str, needles: &[&str]) -> Option<String> {
    text.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(|s| s.to_string())
}

/// Waits until `addr` accepts a TCP connection (poll every 20 ms, up to 10 s),
/// failing with the child's logs if it exits first.
pub fn wait_accept(addr: SocketAddr, child: &mut ChildGuard) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_exit() {
            child.fail(&format!(
                "{} exited ({st}) before accepting on {addr}",
                child.name
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if Instant::now() >= deadline {
            child.fail(&format!(
                "{} did not accept on {addr} within 10 s",
                child.name
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Certificates (made by the product's own `certs` subcommand)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    pub fn client_p12(&self) -> PathBuf {
        self.dir.join("client.p12")
    }
}

/// `portcullis certs init --out DIR EXTRA...`; asserts success and the files.
pub fn certs_init(out: &Path, extra: &[&str]) -> CertDir {
    let mut cmd = portcullis();
    cmd.arg("certs")
        .arg("init")
        .arg("--out")
        .arg(out)
        .args(extra);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    assert!(o.status.success(), "certs init failed: {}", o.describe());
    let cd = CertDir {
        dir: out.to_path_buf(),
    };
    for f in [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "client.p12",
    ] {
        let p = out.join(f);
        let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "certs init did not write {}", p.display());
    }
    cd
}

/// `portcullis certs issue ...`; returns (cert.pem, key).
pub fn certs_issue(
    ca_dir: &Path,
    out: &Path,
    stem: &str,
    cn: &str,
    extra: &[&str],
) -> (PathBuf, PathBuf) {
    let mut cmd = portcullis();
    cmd.arg("certs")
        .arg("issue")
        .arg("--ca-dir")
        .arg(ca_dir)
        .arg("--out")
        .arg(out)
        .arg("--stem")
        .arg(stem)
        .arg("--cn")
        .arg(cn)
        .args(extra);
    let o = run_cmd(&mut cmd, None, Duration::from_secs(60));
    assert!(o.status.success(), "certs issue failed: {}", o.describe());
    let pem = out.join(format!("{stem}.pem"));
    let key = out.join(format!("{stem}.key"));
    assert!(
        pem.exists() && key.exists(),
        "certs issue did not write {stem}.pem/.key in {}",
        out.display()
    );
    (pem, key)
}

// ---------------------------------------------------------------------------
// Gateway configuration
// ---------------------------------------------------------------------------

/// Renders a TOML basic string (JSON string syntax is valid TOML for these).
pub fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// A size: bare integer if all digits, else a quoted string ("10MiB").
fn size_val(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        s.to_string()
    } else {
        q(s)
    }
}

#[derive(Clone, Debug)]
pub struct ListenerCfg {
    pub address: String,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub client_ca: Vec<PathBuf>,
    pub tls_versions: Vec<String>,
    /// `ktls = "..."` when set.
    pub ktls: Option<String>,
}

impl ListenerCfg {
    pub fn new(address: &str, certs: &CertDir) -> ListenerCfg {
        ListenerCfg {
            address: address.to_string(),
            certificate: certs.server_cert(),
            private_key: certs.server_key(),
            client_ca: vec![certs.ca()],
            tls_versions: vec!["1.2".into(), "1.3".into()],
            ktls: None,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.address
            .parse()
            .unwrap_or_else(|e| panic!("listener address {}: {e}", self.address))
    }
}

#[derive(Clone, Debug, Default)]
pub struct RouteCfg {
    pub host: Option<String>,
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub backends: Vec<String>,
    pub set_host: Option<String>,
    pub max_body_bytes: Option<String>,
    /// Raw `key = value` lines added to the route's table.
    pub extra: Vec<String>,
}

impl RouteCfg {
    pub fn new(path: &str, backends: &[&str]) -> RouteCfg {
        RouteCfg {
            path: path.to_string(),
            backends: backends.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
    pub fn host(mut self, h: &str) -> Self {
        self.host = Some(h.into());
        self
    }
    pub fn methods(mut self, m: &[&str]) -> Self {
        self.methods = Some(m.iter().map(|s| s.to_string()).collect());
        self
    }
    pub fn set_host(mut self, h: &str) -> Self {
        self.set_host = Some(h.into());
        self
    }
    pub fn max_body(mut self, s: &str) -> Self {
        self.max_body_bytes = Some(s.into());
        self
    }
    /// Adds a raw `key = value` line to the route's table.
    pub fn line(mut self, l: &str) -> Self {
        self.extra.push(l.into());
        self
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Raw TOML value: `2` or `"auto"`.
    pub workers: String,
    pub driver: String,
    pub log_format: String,
    pub access_log: bool,
    pub drain_timeout: String,
    pub listeners: Vec<ListenerCfg>,
    pub max_header_bytes: u64,
    pub max_headers: u64,
    pub max_body_bytes: String,
    pub handshake: String,
    pub request_head: String,
    pub idle: String,
    pub backend_connect: String,
    pub backend_response: String,
    pub pool_max_idle: u64,
    pub pool_idle_timeout: String,
    pub routes: Vec<RouteCfg>,
    /// `[admin] address`, when set.
    pub admin: Option<String>,
    /// Raw `key = value` lines added to `[server]`, `[limits]` and `[timeouts]`.
    pub server_extra: Vec<String>,
    pub limits_extra: Vec<String>,
    pub timeouts_extra: Vec<String>,
    /// Raw TOML tables (e.g. `[[upstream]] ...`) appended at the end.
    pub tables: Vec<String>,
}

impl Config {
    /// One IPv4 listener on a fresh port, TLS 1.2+1.3, the dir's CA as client CA.
    pub fn new(certs: &CertDir) -> Config {
        let port = free_port();
        Config {
            workers: "2".into(),
            driver: "auto".into(),
            log_format: "text".into(),
            access_log: false,
            drain_timeout: "10s".into(),
            listeners: vec![ListenerCfg::new(&format!("127.0.0.1:{port}"), certs)],
            max_header_bytes: 16384,
            max_headers: 100,
            max_body_bytes: "10MiB".into(),
            handshake: "10s".into(),
            request_head: "10s".into(),
            idle: "60s".into(),
            backend_connect: "3s".into(),
            backend_response: "30s".into(),
            pool_max_idle: 64,
            pool_idle_timeout: "30s".into(),
            routes: Vec::new(),
            admin: None,
            server_extra: Vec::new(),
            limits_extra: Vec::new(),
            timeouts_extra: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// Appends a raw TOML table (e.g. an `[[upstream]]`).
    pub fn table(mut self, t: &str) -> Self {
        self.tables.push(t.into());
        self
    }

    /// Adds a raw `key = value` line to `[server]`.
    pub fn server_line(mut self, l: &str) -> Self {
        self.server_extra.push(l.into());
        self
    }

    /// Adds a raw `key = value` line to `[limits]`.
    pub fn limits_line(mut self, l: &str) -> Self {
        self.limits_extra.push(l.into());
        self
    }

    /// Adds a raw `key = value` line to `[timeouts]`.
    pub fn timeouts_line(mut self, l: &str) -> Self {
        self.timeouts_extra.push(l.into());
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.to_string();
        self
    }

    pub fn route(mut self, r: RouteCfg) -> Self {
        self.routes.push(r);
        self
    }

    /// Number of "worker started" lines to wait for at startup.
    pub fn expected_workers(&self) -> usize {
        self.workers.parse().unwrap_or(1)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# generated by the Portcullis integration tests\n");
        s.push_str("[server]\n");
        s.push_str(&format!("workers = {}\n", self.workers));
        s.push_str(&format!("driver = {}\n", q(&self.driver)));
        s.push_str(&format!("log_format = {}\n", q(&self.log_format)));
        s.push_str(&format!("access_log = {}\n", self.access_log));
        s.push_str(&format!("drain_timeout = {}\n", q(&self.drain_timeout)));
        for l in &self.server_extra {
            s.push_str(&format!("{l}\n"));
        }
        for l in &self.listeners {
            s.push_str("\n[[listener]]\n");
            s.push_str(&format!("address = {}\n", q(&l.address)));
            s.push_str(&format!(
                "certificate = {}\n",
                q(&l.certificate.to_string_lossy())
            ));
            s.push_str(&format!(
                "private_key = {}\n",
                q(&l.private_key.to_string_lossy())
            ));
            let cas: Vec<String> = l
                .client_ca
                .iter()
                .map(|p| q(&p.to_string_lossy()))
                .collect();
            s.push_str(&format!("client_ca = [{}]\n", cas.join(", ")));
            if let Some(mode) = &l.ktls {
                s.push_str(&format!("ktls = {}\n", q(mode)));
            }
            let vs: Vec<String> = l.tls_versions.iter().map(|v| q(v)).collect();
            s.push_str(&format!("tls_versions = [{}]\n", vs.join(", ")));
        }
        s.push_str("\n[limits]\n");
        s.push_str(&format!("max_header_bytes = {}\n", self.max_header_bytes));
        s.push_str(&format!("max_headers = {}\n", self.max_headers));
        s.push_str(&format!(
            "max_body_bytes = {}\n",
            size_val(&self.max_body_bytes)
        ));
        for l in &self.limits_extra {
            s.push_str(&format!("{l}\n"));
        }
        s.push_str("\n[timeouts]\n");
        s.push_str(&format!("handshake = {}\n", q(&self.handshake)));
        s.push_str(&format!("request_head = {}\n", q(&self.request_head)));
        s.push_str(&format!("idle = {}\n", q(&self.idle)));
        s.push_str(&format!("backend_connect = {}\n", q(&self.backend_connect)));
        s.push_str(&format!(
            "backend_response = {}\n",
            q(&self.backend_response)
        ));
        for l in &self.timeouts_extra {
            s.push_str(&format!("{l}\n"));
        }
        s.push_str("\n[pool]\n");
        s.push_str(&format!("max_idle_per_backend = {}\n", self.pool_max_idle));
        s.push_str(&format!("idle_timeout = {}\n", q(&self.pool_idle_timeout)));
        for r in &self.routes {
            s.push_str("\n[[route]]\n");
            if let Some(h) = &r.host {
                s.push_str(&format!("host = {}\n", q(h)));
            }
            s.push_str(&format!("path = {}\n", q(&r.path)));
            if let Some(m) = &r.methods {
                let ms: Vec<String> = m.iter().map(|x| q(x)).collect();
                s.push_str(&format!("methods = [{}]\n", ms.join(", ")));
            }
            if !r.backends.is_empty() {
                let bs: Vec<String> = r.backends.iter().map(|x| q(x)).collect();
                s.push_str(&format!("backends = [{}]\n", bs.join(", ")));
            }
            if let Some(h) = &r.set_host {
                s.push_str(&format!("set_host = {}\n", q(h)));
            }
            if let Some(m) = &r.max_body_bytes {
                s.push_str(&format!("max_body_bytes = {}\n", size_val(m)));
            }
            for l in &r.extra {
                s.push_str(&format!("{l}\n"));
            }
        }
        if let Some(a) = &self.admin {
            s.push_str(&format!("\n[admin]\naddress = {}\n", q(a)));
        }
        for t in &self.tables {
            s.push_str(&format!("\n{t}\n"));
        }
        s
    }

    pub fn write(&self, path: &Path) {
        fs::write(path, self.render()).expect("write config");
    }
}

/// A fresh path DIR/gwN/portcullis.toml (its directory created).
pub fn config_file(td: &TempDir) -> PathBuf {
    let d = td.join(&format!("gw{}", unique()));
    fs::create_dir_all(&d).unwrap();
    d.join("portcullis.toml")
}

/// 1-based number of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in config:\n{text}"))
        + 1
}

// ---------------------------------------------------------------------------
// Gateway and echo processes
// ---------------------------------------------------------------------------

pub struct Gateway {
    pub proc: ChildGuard,
    pub cfg: Config,
    pub config_path: PathBuf,
    pub certs: CertDir,
    /// Work directory (the test's temp dir) for curl output files.
    pub work: PathBuf,
}

impl Gateway {
    /// Writes the config to DIR/portcullis.toml, runs `portcullis run`, waits
    /// for every listener to accept and one "worker started" line per worker.
    pub fn start(td: &TempDir, certs: &CertDir, cfg: Config) -> Gateway {
        Self::start_with_env(td, certs, cfg, &[])
    }

    pub fn start_with_env(
        td: &TempDir,
        certs: &CertDir,
        cfg: Config,
        env: &[(&str, Option<&str>)],
    ) -> Gateway {
        let config_path = config_file(td);
        cfg.write(&config_path);
        let mut cmd = portcullis();
        cmd.arg("run").arg("--config").arg(&config_path);
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let mut proc = ChildGuard::spawn("gateway", cmd, td.path());
        for l in &cfg.listeners {
            wait_accept(l.socket_addr(), &mut proc);
        }
        let want = cfg.expected_workers();
        let ok = wait_until(Duration::from_secs(10), || {
            proc.count_log_lines(&["worker started"]) >= want || proc.try_exit().is_some()
        });
        if !ok || proc.try_exit().is_some() {
            proc.fail(&format!(
                "gateway did not log {want} `worker started` lines (or exited)"
            ));
        }
        Gateway {
            proc,
            cfg,
            config_path,
            certs: certs.clone(),
            work: td.path().to_path_buf(),
        }
    }

    pub fn port(&self) -> u16 {
        self.cfg.listeners[0].socket_addr().port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.cfg.listeners[0].socket_addr()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.port(), path)
    }

    /// curl with the default client certificate.
    pub fn curl(&self, path: &str, extra: &[&str]) -> CurlRes {
        self.curl_auth(Auth::Client, path, extra)
    }

    pub fn curl_auth(&self, auth: Auth, path: &str, extra: &[&str]) -> CurlRes {
        curl(
            &self.work,
            &self.certs,
            self.port(),
            auth,
            &[&self.url(path)],
            extra,
        )
    }

    /// A connected, handshaken rustls client (TLS 1.2+1.3, client cert).
    pub fn tls(&self) -> HttpConn<TlsStream> {
        let cfg = client_config(&self.certs, ClientAuth::Default, &[]);
        HttpConn::new(
            tls_connect(self.addr(), cfg)
                .unwrap_or_else(|e| self.proc.fail(&format!("TLS connect failed: {e}"))),
        )
    }

    pub fn tls_with(&self, cfg: Arc<ClientConfig>) -> io::Result<TlsStream> {
        tls_connect(self.addr(), cfg)
    }

    pub fn fail(&self, msg: &str) -> ! {
        self.proc.fail(msg)
    }

    /// Sends SIGTERM and waits for exit; returns the status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.sigterm();
        match self.proc.wait_exit(timeout) {
            Some(st) => st,
            None => self.proc.fail(&format!(
                "gateway did not exit within {timeout:?} after SIGTERM"
            )),
        }
    }
}

/// The echo backend, `portcullis echo --listen 127.0.0.1:PORT`.
pub struct Echo {
    pub proc: ChildGuard,
    pub port: u16,
}

impl Echo {
    pub fn start(td: &TempDir) -> Echo {
        let port = free_port();
        let mut cmd = portcullis();
        cmd.arg("echo")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"));
        let mut proc = ChildGuard::spawn("echo", cmd, td.path());
        wait_accept(SocketAddr::from(([127, 0, 0, 1], port)), &mut proc);
        Echo { proc, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A plain TCP connection to the echo backend.
    pub fn connect(&self) -> HttpConn<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect echo");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        HttpConn::new(s)
    }
}

/// Certs + echo + gateway with a single catch-all route to the echo.
pub struct Stack {
    pub td: TempDir,
    pub certs: CertDir,
    pub echo: Echo,
    pub gw: Gateway,
}

impl Stack {
    pub fn start(name: &str, tweak: impl FnOnce(Config, &Echo) -> Config) -> Stack {
        let td = TempDir::new(name);
        let certs = certs_init(&td.join("certs"), &[]);
        let echo = Echo::start(&td);
        let cfg = Config::new(&certs).route(RouteCfg::new("/", &[&echo.addr()]));
        let cfg = tweak(cfg, &echo);
        let gw = Gateway::start(&td, &certs, cfg);
        Stack {
            td,
            certs,
            echo,
            gw,
        }
    }
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// rustls client
// ---------------------------------------------------------------------------

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

pub enum ClientAuth {
    /// DIR/client.pem + DIR/client.key
    Default,
    None,
    Pem(PathBuf, PathBuf),
}

pub fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let v: Vec<_> = CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("open {}: {e:?}", path.display()))
        .map(|c| c.expect("cert PEM"))
        .collect();
    assert!(!v.is_empty(), "no certificate in {}", path.display());
    v
}

pub fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap_or_else(|e| panic!("key {}: {e:?}", path.display()))
}

/// A rustls client config trusting DIR/ca.pem. `versions` empty = 1.2 and 1.3.
/// ALPN offers http/1.1.
pub fn client_config(
    certs: &CertDir,
    auth: ClientAuth,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    client_config_alpn(certs, auth, versions, &[b"http/1.1"])
}

pub fn client_config_alpn(
    certs: &CertDir,
    auth: ClientAuth,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(&certs.ca()) {
        roots.add(c).expect("add CA");
    }
    let versions: Vec<&'static SupportedProtocolVersion> = if versions.is_empty() {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        versions.to_vec()
    };
    let b = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&versions)
    .expect("protocol versions")
    .with_root_certificates(roots);
    let mut cfg = match auth {
        ClientAuth::Default => b
            .with_client_auth_cert(
                load_certs(&certs.client_cert()),
                load_key(&certs.client_key()),
            )
            .expect("client auth cert"),
        ClientAuth::Pem(c, k) => b
            .with_client_auth_cert(load_certs(&c), load_key(&k))
            .expect("client auth cert"),
        ClientAuth::None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// TCP connect (5 s), TLS handshake to SNI "localhost"; 20 s socket timeouts.
pub fn tls_connect(addr: SocketAddr, cfg: Arc<ClientConfig>) -> io::Result<TlsStream> {
    tls_connect_name(addr, cfg, "localhost")
}

pub fn tls_connect_name(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    name: &str,
) -> io::Result<TlsStream> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))?;
    sock.set_write_timeout(Some(Duration::from_secs(20)))?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(cfg, name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// The rustls error inside an io::Error, if any.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Connects and expects the gateway to refuse the client with a TLS alert
/// (during the handshake for TLS 1.2, on the first read for TLS 1.3).
/// Returns a description of the alert.
pub fn expect_tls_alert(addr: SocketAddr, cfg: Arc<ClientConfig>) -> String {
    let mut s = match tls_connect(addr, cfg) {
        Err(e) => {
            return match rustls_error(&e) {
                Some(rustls::Error::AlertReceived(a)) => format!("{a:?}"),
                _ => panic!("handshake failed, but not with a TLS alert: {e:?}"),
            }
        }
        Ok(s) => s,
    };
    // TLS 1.3: the client finishes first; the server's verdict arrives next.
    let mut buf = [0u8; 1024];
    match s.read(&mut buf) {
        Ok(n) => panic!(
            "expected a TLS alert, read {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => match rustls_error(&e) {
            Some(rustls::Error::AlertReceived(a)) => format!("{a:?}"),
            _ => panic!("connection failed, but not with a TLS alert: {e:?}"),
        },
    }
}

// ---------------------------------------------------------------------------
// Minimal HTTP/1.1 client over any stream
// ---------------------------------------------------------------------------

pub trait Transport: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn json(&self) -> Value {
        parse_json(&self.body)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// `Connection: close` present (token match, case-insensitive).
    pub fn connection_close(&self) -> bool {
        self.headers_named("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status; body: {}", self.text());
        assert_error_json(&self.body, status, code);
    }
}

#[derive(Debug)]
pub enum Closed {
    /// Orderly EOF, close_notify, or reset: the connection is gone.
    Eof,
    /// Nothing happened before the deadline.
    StillOpen,
    /// Unexpected bytes arrived.
    Data(Vec<u8>),
}

fn is_closed_err(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
    ) || rustls_error(e).is_some()
}

fn is_timeout_err(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub struct HttpConn<S: Transport> {
    pub s: S,
    buf: Vec<u8>,
    eof: bool,
}

impl<S: Transport> HttpConn<S> {
    pub fn new(s: S) -> Self {
        HttpConn {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn set_read_timeout(&self, d: Duration) {
        self.s.tcp().set_read_timeout(Some(d)).unwrap();
    }

    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.s.write_all(data)?;
        self.s.flush()
    }

    /// Reads more bytes into the buffer; Ok(0) on EOF (incl. TLS EOF
    /// without close_notify).
    fn fill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut tmp = [0u8; 65536];
        match self.s.read(&mut tmp) {
            Ok(0) => {
                self.eof = true;
                Ok(0)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(self.buf.len()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.eof = true;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF in line"));
            }
        }
    }

    fn read_exact_buf(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF after {} of {} body bytes", self.buf.len(), n),
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads one response (1xx included). `head_request`: no body expected.
    pub fn read_response_for(&mut self, head_request: bool) -> io::Result<Response> {
        // status line (skip nothing: a blank line here is a protocol error)
        let status_line = match self.read_line() {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.buf.is_empty() => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ))
            }
            Err(e) => return Err(e),
        };
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            ));
        }
        let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
        let reason = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let l = self.read_line()?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad header line {l:?}"))
            })?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let mut resp = Response {
            status,
            reason,
            headers,
            body: Vec::new(),
            chunked: false,
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let te = resp
            .header("transfer-encoding")
            .map(|s| s.to_ascii_lowercase());
        if te
            .as_deref()
            .map(|t| t.contains("chunked"))
            .unwrap_or(false)
        {
            resp.chunked = true;
            let mut body = Vec::new();
            loop {
                let line = self.read_line()?;
                let size_str = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_str, 16).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
                if size == 0 {
                    // trailers
                    loop {
                        if self.read_line()?.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                body.extend(self.read_exact_buf(size)?);
                let crlf = self.read_exact_buf(2)?;
                if crlf != b"\r\n" {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "missing CRLF after chunk",
                    ));
                }
            }
            resp.body = body;
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad content-length {cl:?}"),
                )
            })?;
            resp.body = self.read_exact_buf(n)?;
        } else {
            // read to EOF
            while self.fill()? != 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    pub fn read_response(&mut self) -> io::Result<Response> {
        self.read_response_for(false)
    }

    /// Reads responses until a final (non-1xx) one.
    pub fn read_final(&mut self) -> io::Result<Response> {
        loop {
            let r = self.read_response()?;
            if !(100..200).contains(&r.status) {
                return Ok(r);
            }
        }
    }

    pub fn request(&mut self, req: &[u8]) -> io::Result<Response> {
        self.send(req)?;
        self.read_final()
    }

    /// GET path with Host: localhost and extra header lines ("K: V").
    pub fn get(&mut self, path: &str, headers: &[&str]) -> io::Result<Response> {
        self.request(&get_req(path, headers))
    }

    /// Waits (up to `timeout`) for the peer to close the connection.
    pub fn wait_closed(&mut self, timeout: Duration) -> Closed {
        if !self.buf.is_empty() {
            return Closed::Data(std::mem::take(&mut self.buf));
        }
        if self.eof {
            return Closed::Eof;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Closed::StillOpen;
            }
            self.set_read_timeout(left.max(Duration::from_millis(10)));
            let mut tmp = [0u8; 4096];
            match self.s.read(&mut tmp) {
                Ok(0) => return Closed::Eof,
                Ok(n) => return Closed::Data(tmp[..n].to_vec()),
                Err(e) if is_timeout_err(&e) => continue,
                Err(e) if is_closed_err(&e) => return Closed::Eof,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("unexpected read error while waiting for close: {e:?}"),
            }
        }
    }

    /// Asserts the connection is closed by the peer within 5 s.
    pub fn assert_closed(&mut self, what: &str) {
        match self.wait_closed(Duration::from_secs(5)) {
            Closed::Eof => {}
            other => panic!("{what}: expected the gateway to close the connection, got {other:?}"),
        }
    }

    /// Reads everything until EOF / reset / deadline; returns (bytes, closed).
    pub fn read_until_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let mut all = std::mem::take(&mut self.buf);
        if self.eof {
            return (all, true);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (all, false);
            }
            self.set_read_timeout(left.max(Duration::from_millis(10)));
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => return (all, true),
                Ok(n) => all.extend_from_slice(&tmp[..n]),
                Err(e) if is_timeout_err(&e) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return (all, true),
            }
        }
    }

    /// Pushes bytes back in front of the read buffer (after read_until_close).
    pub fn unread(&mut self, data: Vec<u8>) {
        let mut d = data;
        d.extend_from_slice(&self.buf);
        self.buf = d;
    }
}

/// Builds "GET path HTTP/1.1\r\nHost: localhost\r\n<headers>\r\n".
pub fn get_req(path: &str, headers: &[&str]) -> Vec<u8> {
    req("GET", path, headers, b"")
}

/// A request with Host: localhost, the given header lines, and (if non-empty)
/// a Content-Length body.
pub fn req(method: &str, path: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut s = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    if !body.is_empty() {
        s.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    s.push_str("\r\n");
    let mut v = s.into_bytes();
    v.extend_from_slice(body);
    v
}

/// Parses a complete response held in `bytes` (e.g. from read_until_close).
pub fn parse_response_bytes(bytes: &[u8]) -> io::Result<Response> {
    let text = bytes;
    let end = text
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no complete head"))?;
    let head = String::from_utf8_lossy(&text[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let sl = lines.next().unwrap_or("");
    let mut parts = sl.splitn(3, ' ');
    let _v = parts.next();
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {sl:?}"),
        )
    })?;
    let reason = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut body = text[end + 4..].to_vec();
    if let Some(cl) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        if let Ok(n) = cl.1.parse::<usize>() {
            body.truncate(n);
        }
    }
    Ok(Response {
        status,
        reason,
        headers,
        body,
        chunked: false,
    })
}

// ---------------------------------------------------------------------------
// A scripted plain-HTTP backend running in test threads (for failure modes
// the echo backend cannot produce: stall, reset, garbage, gated responses).
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Behaviour {
    /// 200 with this body (application/json), after `delay`; keep-alive.
    Respond { body: String, delay: Duration },
    /// Read the request, never answer (keep the socket open).
    Stall,
    /// Read the request head, close (FIN).
    Close,
    /// Read the request head, close with RST (SO_LINGER 0).
    Reset,
    /// Answer bytes that are not HTTP, then close.
    Garbage,
    /// After reading the request (and its Content-Length body), write each
    /// piece after its delay, then keep the connection for the next request.
    Script(Vec<(Duration, Vec<u8>)>),
}

pub struct MiniBackend {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    /// Receives each request head as soon as it has been read.
    pub heads: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl MiniBackend {
    pub fn start(behave: impl Fn(&str) -> Behaviour + Send + Sync + 'static) -> MiniBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let behave = Arc::new(behave);
        let (stop2, req2, held2) = (stop.clone(), requests.clone(), held.clone());
        let thread = thread::spawn(move || {
            let started = Instant::now();
            // bounded: a backend lives at most 5 minutes
            while !stop2.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        let _ = sock.set_nonblocking(false);
                        let (b, r, h, t, st) = (
                            behave.clone(),
                            req2.clone(),
                            held2.clone(),
                            tx.clone(),
                            stop2.clone(),
                        );
                        thread::spawn(move || serve_conn(sock, b, r, h, t, st));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        MiniBackend {
            port,
            requests,
            heads: rx,
            stop,
            thread: Some(thread),
            held,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for MiniBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::unix::io::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn serve_conn(
    mut sock: TcpStream,
    behave: Arc<dyn Fn(&str) -> Behaviour + Send + Sync>,
    requests: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    tx: mpsc::Sender<String>,
    stop: Arc<AtomicBool>,
) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // read one head
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 16384];
            match sock.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let cl: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                if k.trim().eq_ignore_ascii_case("content-length") {
                    v.trim().parse().ok()
                } else {
                    None
                }
            })
            .unwrap_or(0);
        requests.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(head.clone());
        match behave(&head) {
            Behaviour::Respond { body, delay } => {
                while buf.len() < cl {
                    let mut tmp = [0u8; 65536];
                    match sock.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                buf.drain(..cl);
                if !delay.is_zero() {
                    let until = Instant::now() + delay;
                    while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                    body.len(),
                    body
                );
                if sock.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
            Behaviour::Stall => {
                if let Ok(c) = sock.try_clone() {
                    held.lock().unwrap().push(c);
                }
                // hold the socket open until the backend is dropped (bounded)
                let until = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Behaviour::Close => {
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            Behaviour::Reset => {
                set_linger_zero(&sock);
                drop(sock);
                return;
            }
            Behaviour::Script(pieces) => {
                while buf.len() < cl {
                    let mut tmp = [0u8; 65536];
                    match sock.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                buf.drain(..cl);
                for (delay, bytes) in pieces {
                    thread::sleep(delay);
                    if sock.write_all(&bytes).is_err() {
                        return;
                    }
                }
            }
            Behaviour::Garbage => {
                let _ = sock.write_all(b"this is not HTTP at all\r\n\r\n");
                let _ = sock.shutdown(Shutdown::Write);
                thread::sleep(Duration::from_millis(200));
                return;
            }
        }
    }
}

/// Resolves "host:port" to the first socket address.
pub fn sockaddr(s: &str) -> SocketAddr {
    s.to_socket_addrs().unwrap().next().unwrap()
}

// ---------------------------------------------------------------------------
// Admin listener
// ---------------------------------------------------------------------------

/// GET on the plain-HTTP admin listener; (status, body).
pub fn admin_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("admin {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one Prometheus series (`name{labels}` exactly) in `body`.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}
