//! Live binary upgrade: a second gateway process takes the listening
//! sockets over from a running one (`run --takeover`, and SIGUSR2 through
//! `portcullis upgrade`) while clients keep sending, on kept-alive
//! connections and on a new TLS handshake per request; the old process
//! finishes what it had accepted, drains and exits; not one request fails.
//! A takeover that cannot happen (no upgrade socket, nobody listening on
//! it) fails loudly in the new process and leaves the old one serving.

mod common;
use common::*;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Requests answered, kept-alive reconnections, and every failure.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// A kept-alive connection the old process closed between requests,
    /// retried once on a new connection (as curl and browsers do, RFC 9112
    /// §9.3.1); the retry must succeed.
    keepalive_retries: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

fn backend() -> MiniBackend {
    MiniBackend::start(|head| Behaviour::Respond {
        body: r#"{"ok":true}"#.into(),
        delay: if head.to_ascii_lowercase().contains("x-slow: 1") {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        },
    })
}

fn upgrade_config(td: &TempDir, certs: &CertDir, backend: &MiniBackend) -> Config {
    Config::new(certs)
        .workers(2)
        .server_line(&format!(
            "upgrade_socket = {}",
            q_path(&td.join("upgrade.sock"))
        ))
        .server_line(&format!("pid_file = {}", q_path(&td.join("gateway.pid"))))
        .route(RouteCfg::new(
            "/",
            &[&format!("127.0.0.1:{}", backend.port)],
        ))
}

fn q_path(p: &Path) -> String {
    q(&p.display().to_string())
}

/// Clients that run until `stop`: `keepalive` threads reuse one connection,
/// `handshakes` threads open a new one (full handshake) per request.
fn start_load(
    addr: SocketAddr,
    certs: &CertDir,
    keepalive: usize,
    handshakes: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<thread::JoinHandle<()>> {
    let cfg = client_config(certs, ClientAuth::Default, &[]);
    let mut threads = Vec::new();
    for t in 0..keepalive {
        let (cfg, stop, tally) = (cfg.clone(), stop.clone(), tally.clone());
        threads.push(thread::spawn(move || {
            let mut conn: Option<HttpConn<TlsStream>> = None;
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let path = format!("/ka/{t}/{n}");
                let reused = conn.is_some();
                let first = match conn.as_mut() {
                    Some(c) => c.get(&path, &[]),
                    None => tls_connect(addr, cfg.clone())
                        .map(HttpConn::new)
                        .and_then(|mut c| {
                            let r = c.get(&path, &[]);
                            conn = Some(c);
                            r
                        }),
                };
                let result = match first {
                    Err(e) if reused => {
                        // Closed by the old process while idle: once more on a new connection.
                        tally.keepalive_retries.fetch_add(1, Ordering::SeqCst);
                        conn = None;
                        tls_connect(addr, cfg.clone())
                            .map(HttpConn::new)
                            .and_then(|mut c| {
                                let r = c.get(&path, &[]);
                                conn = Some(c);
                                r
                            })
                            .map_err(|e2| format!("{e}; retried on a new connection: {e2}"))
                    }
                    other => other.map_err(|e| e.to_string()),
                };
                match result {
                    Ok(r) if r.status == 200 => {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                        if r.connection_close() {
                            conn = None;
                        }
                    }
                    Ok(r) => {
                        tally.fail(format!(
                            "keep-alive {path}: status {} {}",
                            r.status,
                            r.text()
                        ));
                        conn = None;
                    }
                    Err(e) => {
                        tally.fail(format!("keep-alive {path}: {e}"));
                        conn = None;
                    }
                }
            }
        }));
    }
    for t in 0..handshakes {
        let (cfg, stop, tally) = (cfg.clone(), stop.clone(), tally.clone());
        threads.push(thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let path = format!("/new/{t}/{n}");
                let result = tls_connect(addr, cfg.clone())
                    .map(HttpConn::new)
                    .and_then(|mut c| c.get(&path, &[]));
                match result {
                    Ok(r) if r.status == 200 => {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => tally.fail(format!("new connection {path}: status {}", r.status)),
                    Err(e) => tally.fail(format!("new connection {path}: {e}")),
                }
            }
        }));
    }
    threads
}

fn wait_ok_above(tally: &Tally, n: u64, what: &str) {
    let ok = wait_until(Duration::from_secs(10), || {
        tally.ok.load(Ordering::SeqCst) > n
    });
    assert!(ok, "no request answered {what} (answered so far: {n})");
}

fn stop_load(stop: &AtomicBool, threads: Vec<thread::JoinHandle<()>>, tally: &Tally) {
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("client thread");
    }
    let failures = tally.failures.lock().unwrap();
    eprintln!(
        "upgrade load: {} requests answered, {} kept-alive connections closed by the old process and retried, {} failures",
        tally.ok.load(Ordering::SeqCst),
        tally.keepalive_retries.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during the upgrade, e.g.:\n  {}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// `pcl-load` (bench/) beside the test's own clients, for `duration`:
/// keep-alive connections (`--retry-reused`: a GET that meets the old
/// process's close of an idle connection goes once more, as curl's would),
/// or with `--new-conn` a full mTLS handshake per request.
fn start_pcl_load(
    td: &TempDir,
    certs: &CertDir,
    addr: SocketAddr,
    name: &str,
    mode: &[&str],
    duration: &str,
) -> (ChildGuard, PathBuf) {
    let json = td.join(&format!("{name}.json"));
    let mut cmd = std::process::Command::new(pcl_load());
    cmd.args(["-t", "1", "-d", duration])
        .arg("--cacert")
        .arg(certs.ca())
        .arg("--cert")
        .arg(certs.client_cert())
        .arg("--key")
        .arg(certs.client_key())
        .args(["--sni", "localhost", "--json"])
        .arg(&json)
        .args(mode)
        .arg(format!("https://{addr}/pcl/{name}"));
    (ChildGuard::spawn(name, cmd, td.path()), json)
}

/// Waits for a pcl-load run to end; every request it sent was answered 200.
fn expect_pcl_load_clean(run: (ChildGuard, PathBuf)) -> (u64, u64) {
    let (mut child, json) = run;
    let status = child
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| child.fail("pcl-load did not finish"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
        .unwrap_or_else(|e| child.fail(&format!("no JSON report ({e})")));
    assert!(status.success(), "pcl-load exit status {status}: {v}");
    expect_pcl_load_clean_json(&v)
}

/// No error, every response 2xx, at least one; (requests, retried_reused).
fn expect_pcl_load_clean_json(v: &serde_json::Value) -> (u64, u64) {
    let n = |k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in pcl-load's report {v}"))
    };
    assert_eq!(
        n("errors_total"),
        0,
        "pcl-load saw failures: {}",
        v["error_details"]
    );
    assert!(n("requests") > 0, "{v}");
    assert_eq!(
        v["responses"]["2xx"].as_u64(),
        Some(n("requests") + n("requests_in_grace")),
        "{v}"
    );
    (n("requests"), n("retried_reused"))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A gateway process this test did not spawn (the one SIGUSR2 starts):
/// killed on drop so nothing outlives the test.
struct PidGuard(i32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes two integers and touches none of our memory.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

#[test]
fn takeover_under_load_drops_nothing_and_the_old_process_drains_and_exits() {
    let td = TempDir::new("upgrade_takeover");
    let certs = certs_init(&td.join("certs"), &[]);
    let backend = backend();
    let cfg = upgrade_config(&td, &certs, &backend);
    let mut a = Gateway::start(&td, &certs, cfg);
    let addr = a.addr();
    let pid_file = td.join("gateway.pid");
    assert_eq!(read_pid(&pid_file), Some(a.proc.pid()));

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = start_load(addr, &certs, 4, 2, stop.clone(), tally.clone());
    // pcl-load too, the tool our users load-test with, for longer than the
    // whole upgrade takes (the slow request holds the old process ~3 s).
    let pcl_keepalive = start_pcl_load(
        &td,
        &certs,
        addr,
        "keepalive",
        &["-c", "4", "--retry-reused"],
        "6s",
    );
    let pcl_handshakes = start_pcl_load(
        &td,
        &certs,
        addr,
        "handshakes",
        &["-c", "2", "--new-conn"],
        "6s",
    );
    wait_ok_above(&tally, 50, "by the old process");

    // A request in flight at the backend when the takeover happens.
    let mut slow = a.tls();
    slow.send(&get_req("/slow", &["x-slow: 1"])).unwrap();
    let reached = wait_until(Duration::from_secs(10), || {
        backend.heads.try_iter().any(|h| h.starts_with("GET /slow"))
    });
    if !reached {
        a.fail("the slow request never reached the backend");
    }

    let mut cmd = portcullis();
    cmd.arg("run")
        .arg("--config")
        .arg(&a.config_path)
        .arg("--takeover")
        .arg(td.join("upgrade.sock"));
    let mut b = ChildGuard::spawn("gateway-b", cmd, td.path());
    let took = b.wait_log_line(
        &["took over the listening sockets"],
        Duration::from_secs(20),
    );
    if took.is_none() {
        b.fail("the new process did not take over within 20 s");
    }
    let before = tally.ok.load(Ordering::SeqCst);

    // The old process finishes its in-flight request, then exits 0.
    let r = slow.read_final().unwrap_or_else(|e| {
        a.fail(&format!(
            "the in-flight request was lost in the takeover: {e}"
        ))
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.connection_close(),
        "the old process closes the connection after its last response"
    );
    drop(slow);
    let status = a
        .proc
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| a.fail("the old process did not exit after draining"));
    assert!(status.success(), "old process exit status: {status}");
    assert!(a.proc.count_log_lines(&["stops accepting and drains"]) == 1);
    assert!(a.proc.count_log_lines(&["worker stopped"]) == 2);
    assert_eq!(a.proc.count_log_lines(&["drain timeout reached"]), 0);

    // The new process serves everything afterwards.
    wait_ok_above(
        &tally,
        before + 50,
        "by the new process after the old one exited",
    );
    stop_load(&stop, load, &tally);
    let (keepalive, retried) = expect_pcl_load_clean(pcl_keepalive);
    let (handshakes, _) = expect_pcl_load_clean(pcl_handshakes);
    eprintln!(
        "pcl-load through the upgrade: {keepalive} keep-alive requests ({retried} retried after the old process closed an idle connection), {handshakes} on new connections, none failed"
    );
    assert!(b.try_exit().is_none(), "the new process exited");
    assert_eq!(
        read_pid(&pid_file),
        Some(b.pid()),
        "the pid file names the new process"
    );
    let mut c =
        HttpConn::new(tls_connect(addr, client_config(&certs, ClientAuth::Default, &[])).unwrap());
    assert_eq!(c.get("/after", &[]).unwrap().status, 200);
    assert_eq!(b.count_log_lines(&["worker started"]), 2);
    assert_eq!(
        b.count_log_lines(&["takeover: received the listening sockets", "sockets=2"]),
        1
    );
}

#[test]
fn fewer_workers_take_over_every_socket() {
    // Old: 3 workers (3 sockets), new: 1 worker accepting on all three. A
    // socket left without an acceptor would strand the connections the kernel
    // hashes to it.
    let td = TempDir::new("upgrade_fewer");
    let certs = certs_init(&td.join("certs"), &[]);
    let backend = backend();
    let cfg = upgrade_config(&td, &certs, &backend).workers(3);
    let mut a = Gateway::start(&td, &certs, cfg.clone());
    let config_b = td.join("b.toml");
    cfg.workers(1).write(&config_b);
    let mut cmd = portcullis();
    cmd.arg("run")
        .arg("--config")
        .arg(&config_b)
        .arg("--takeover")
        .arg(td.join("upgrade.sock"));
    let b = ChildGuard::spawn("gateway-b", cmd, td.path());
    if b.wait_log_line(
        &["took over the listening sockets"],
        Duration::from_secs(20),
    )
    .is_none()
    {
        b.fail("the new process did not take over");
    }
    a.proc
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| a.fail("the old process did not exit"));
    // Many new connections: the kernel spreads them over all three sockets.
    let cfg = client_config(&certs, ClientAuth::Default, &[]);
    for i in 0..30 {
        let mut c = HttpConn::new(
            tls_connect(a.addr(), cfg.clone())
                .unwrap_or_else(|e| b.fail(&format!("connection {i}: {e}"))),
        );
        c.set_read_timeout(Duration::from_secs(5));
        let r = c
            .get("/", &[])
            .unwrap_or_else(|e| b.fail(&format!("connection {i} was not served: {e}")));
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        b.count_log_lines(&[
            "takeover: received the listening sockets",
            "sockets=3",
            "workers=1"
        ]),
        1
    );
}

#[test]
fn a_takeover_that_cannot_connect_fails_loudly_and_leaves_the_old_process_serving() {
    let td = TempDir::new("upgrade_refused");
    let certs = certs_init(&td.join("certs"), &[]);
    let backend = backend();
    let cfg = upgrade_config(&td, &certs, &backend);
    let mut a = Gateway::start(&td, &certs, cfg);

    // A socket path nobody serves, and a stale socket file nobody listens on.
    let stale = td.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for (path, why) in [
        (td.join("absent.sock"), "No such file"),
        (stale, "Connection refused"),
    ] {
        let out = run_cmd(
            portcullis()
                .arg("run")
                .arg("--config")
                .arg(&a.config_path)
                .arg("--takeover")
                .arg(&path),
            None,
            Duration::from_secs(20),
        );
        assert_eq!(out.code(), Some(1), "{}", out.describe());
        let stderr = out.stderr.clone();
        assert!(
            stderr.contains(&format!("cannot take over from {}", path.display()))
                && stderr.contains(why),
            "{stderr}"
        );
        assert!(
            stderr.contains("server.upgrade_socket"),
            "the error says what to check: {stderr}"
        );
    }
    // The old process noticed nothing and serves on.
    assert!(a.proc.try_exit().is_none(), "the old process exited");
    assert_eq!(a.curl("/still", &[]).code, 200);
    assert_eq!(a.proc.count_log_lines(&["drains"]), 0);
    assert_eq!(read_pid(&td.join("gateway.pid")), Some(a.proc.pid()));
    a.terminate(Duration::from_secs(10));
}

#[test]
fn a_new_process_that_dies_before_accepting_leaves_the_old_one_serving() {
    // The new config cannot be served with the sockets (a different driver
    // than the running one is refused): the old process must see the
    // attempt fail and go on accepting.
    let td = TempDir::new("upgrade_aborted");
    let certs = certs_init(&td.join("certs"), &[]);
    let backend = backend();
    let mut a = Gateway::start(&td, &certs, upgrade_config(&td, &certs, &backend));
    let old = if a.proc.count_log_lines(&["worker started", "driver=epoll"]) > 0 {
        "epoll"
    } else {
        "io_uring"
    };
    let new = if old == "epoll" { "io_uring" } else { "epoll" };
    let out = run_cmd(
        portcullis()
            .env("PORTCULLIS_DRIVER", new)
            .arg("run")
            .arg("--config")
            .arg(&a.config_path)
            .arg("--takeover")
            .arg(td.join("upgrade.sock")),
        None,
        Duration::from_secs(20),
    );
    let stderr = out.stderr.clone();
    if stderr.contains("io_uring is not usable") {
        eprintln!("SKIP: io_uring is not usable here, so there is no second driver to refuse");
        return;
    }
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        stderr.contains("a takeover needs the same driver"),
        "{stderr}"
    );
    let logged = a
        .proc
        .wait_log_line(&["takeover attempt failed"], Duration::from_secs(10));
    assert!(
        logged.is_some(),
        "the old process logs the failed attempt:\n{}",
        a.proc.stderr()
    );
    assert!(a.proc.try_exit().is_none());
    assert_eq!(a.curl("/still", &[]).code, 200);
    // And a good takeover still works afterwards: the socket is served again.
    let mut cmd = portcullis();
    cmd.env("PORTCULLIS_DRIVER", old)
        .arg("run")
        .arg("--config")
        .arg(&a.config_path)
        .arg("--takeover")
        .arg(td.join("upgrade.sock"));
    let b = ChildGuard::spawn("gateway-b", cmd, td.path());
    if b.wait_log_line(
        &["took over the listening sockets"],
        Duration::from_secs(20),
    )
    .is_none()
    {
        b.fail("the second attempt did not take over");
    }
    a.proc
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| a.fail("the old process did not exit"));
}

#[test]
fn sigusr2_upgrade_runs_the_binary_now_at_the_path() {
    // The old process runs a copy of the binary; the "package" then replaces
    // that file (write beside, rename over, as dpkg does) and `portcullis
    // upgrade` asks the old process to start what is at the path now.
    let td = TempDir::new("upgrade_sigusr2");
    let certs = certs_init(&td.join("certs"), &[]);
    let backend = backend();
    let bin_dir = td.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let installed: PathBuf = bin_dir.join("portcullis");
    std::fs::copy(bin(), &installed).unwrap();
    let cfg = upgrade_config(&td, &certs, &backend);
    let config_path = config_file(&td);
    cfg.write(&config_path);
    let mut cmd = std::process::Command::new(&installed);
    cmd.arg("run").arg("--config").arg(&config_path);
    let mut a = ChildGuard::spawn("gateway-a", cmd, td.path());
    wait_accept(cfg.listeners[0].socket_addr(), &mut a);
    let addr = cfg.listeners[0].socket_addr();
    let old_pid = a.pid();
    assert!(wait_until(Duration::from_secs(10), || read_pid(
        &td.join("gateway.pid")
    ) == Some(old_pid)));

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = start_load(addr, &certs, 2, 1, stop.clone(), tally.clone());
    wait_ok_above(&tally, 20, "by the old process");

    let staged = bin_dir.join("portcullis.dpkg-new");
    std::fs::copy(bin(), &staged).unwrap();
    std::fs::rename(&staged, &installed).unwrap();

    let out = run_cmd(
        portcullis()
            .arg("upgrade")
            .arg("--config")
            .arg(&config_path),
        None,
        Duration::from_secs(60),
    );
    let new_pid = read_pid(&td.join("gateway.pid"));
    let _guard = new_pid.map(PidGuard);
    assert_eq!(
        out.code(),
        Some(0),
        "{}\n--- gateway log ---\n{}",
        out.describe(),
        a.stderr()
    );
    let new_pid = new_pid.expect("the new process wrote the pid file");
    assert_ne!(new_pid, old_pid);
    assert!(
        out.stdout_str().contains(&format!(
            "upgraded: process {old_pid} exited after draining; process {new_pid} serves"
        )),
        "{}",
        out.describe()
    );
    let status = a
        .wait_exit(Duration::from_secs(5))
        .expect("old process gone");
    assert!(status.success(), "{status}");
    assert!(alive(new_pid));
    // The new process runs the file now at the path, not the replaced one.
    let exe = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(exe, installed, "the new process runs {}", exe.display());

    let before = tally.ok.load(Ordering::SeqCst);
    wait_ok_above(&tally, before + 20, "by the new process");
    stop_load(&stop, load, &tally);
    assert!(
        a.stderr().contains("SIGUSR2: starting the new binary"),
        "{}",
        a.stderr()
    );
}

#[test]
fn connections_the_old_process_accepted_are_served_by_it_after_the_takeover() {
    // One connection accepted before the takeover that has not begun its
    // TLS handshake, and one past its handshake that has sent no request:
    // their clients never learn of the upgrade, so the old process must
    // wait for them (within drain_timeout), not only for requests in flight.
    let td = TempDir::new("upgrade_accepted");
    let certs = certs_init(&td.join("certs"), &[]);
    let backend = backend();
    let mut a = Gateway::start(&td, &certs, upgrade_config(&td, &certs, &backend));
    let addr = a.addr();
    let cfg = client_config(&certs, ClientAuth::Default, &[]);
    let tcp_only = std::net::TcpStream::connect(addr).unwrap();
    tcp_only
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut handshaken = HttpConn::new(tls_connect(addr, cfg.clone()).unwrap());
    // Let the old process's accept loops take both connections.
    thread::sleep(Duration::from_millis(300));

    let mut cmd = portcullis();
    cmd.arg("run")
        .arg("--config")
        .arg(&a.config_path)
        .arg("--takeover")
        .arg(td.join("upgrade.sock"));
    let b = ChildGuard::spawn("gateway-b", cmd, td.path());
    if b.wait_log_line(
        &["took over the listening sockets"],
        Duration::from_secs(20),
    )
    .is_none()
    {
        b.fail("the new process did not take over");
    }
    // Long past the moment a drain that waits only for requests would end.
    thread::sleep(Duration::from_millis(700));
    assert!(
        a.proc.try_exit().is_none(),
        "the old process exited with connections it accepted still open"
    );

    let r = handshaken
        .get("/after-handshake", &[])
        .unwrap_or_else(|e| a.fail(&format!("a handshaken connection was dropped: {e}")));
    assert_eq!(r.status, 200);
    assert!(r.connection_close());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp_only);
    let mut late = HttpConn::new({
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                a.fail(&format!(
                    "a connection accepted before the takeover lost its handshake: {e}"
                ));
            }
        }
        tls
    });
    let r = late.get("/after-connect", &[]).unwrap_or_else(|e| {
        a.fail(&format!(
            "a connection accepted before the takeover was dropped: {e}"
        ))
    });
    assert_eq!(r.status, 200);
    let status = a
        .proc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| a.fail("the old process did not exit once its connections closed"));
    assert!(status.success());
}

/// `pcl-load --retry-reused`, which the takeover test leans on, does what it
/// says: with an idle timeout shorter than the gap between requests every
/// kept-alive connection is closed by the gateway before its next GET, which
/// without the flag is an error each time and with it is sent once more on
/// a new connection and answered.
#[test]
fn pcl_load_retry_reused_resends_a_get_whose_idle_connection_was_closed() {
    let td = TempDir::new("upgrade_retry_reused");
    let certs = certs_init(&td.join("certs"), &[]);
    let backend = backend();
    let mut cfg = upgrade_config(&td, &certs, &backend);
    cfg.idle = "200ms".into();
    let gw = Gateway::start(&td, &certs, cfg);
    let addr = gw.addr();
    let run = |name: &str, retry: bool| {
        let mut mode = vec!["-c", "1", "-R", "3"];
        if retry {
            mode.push("--retry-reused");
        }
        let (mut child, json) = start_pcl_load(&td, &certs, addr, name, &mode, "2s");
        child
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| child.fail("pcl-load did not finish"));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap_or_default())
                .unwrap_or_else(|e| child.fail(&format!("no JSON report ({e})")));
        v
    };
    let plain = run("no-retry", false);
    assert!(
        plain["errors_total"].as_u64().unwrap_or(0) >= 3,
        "every request after an idle gap meets a closed connection: {plain}"
    );
    assert_eq!(plain["retried_reused"].as_u64(), Some(0), "{plain}");
    let v = expect_pcl_load_clean_json(&run("retry", true));
    assert!(v.1 >= 3, "retried {} times, expected one per request", v.1);
}
