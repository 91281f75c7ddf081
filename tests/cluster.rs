//! Cluster mode for real: a real etcd (Debian's `etcd-server`, started here
//! on free loopback ports with a scratch data dir), two or three gateway
//! nodes (`portcullis run` on `[cluster]` bootstrap files), the real
//! `portcullis config push|get|diff`, `etcdctl` to write to etcd behind the
//! gateway's back, and real rustls clients.
//!
//! - a pushed route reaches every node (push -> last node applied is printed);
//! - a broken config is refused by `config push` (file, line, field) and,
//!   injected straight into etcd, by every node, which keeps serving;
//! - a site's certificate and client CA are rotated through etcd under load
//!   with zero failed requests;
//! - etcd down: nodes keep serving; a node restarted meanwhile starts from
//!   its snapshot; etcd back after a push and a compaction: they converge.

mod common;
use common::*;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, RootCertStore};

const PREFIX: &str = "/portcullis/";

/// TLS material for etcd's client port: its server certificate and the CA
/// that signs both it and the nodes' client certificate.
struct EtcdTls {
    certs: CertDir,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl EtcdTls {
    /// etcd's HTTP/JSON gateway dials etcd's own gRPC port with the server
    /// certificate as its client certificate, so with `--client-cert-auth`
    /// that certificate needs clientAuth beside serverAuth (else every
    /// gateway call is a 503 "broken pipe"). `portcullis certs` issues one or
    /// the other, so this one is made with openssl, signed by the same CA.
    fn new(td: &TempDir) -> EtcdTls {
        let certs = certs_init(&td.join("etcd-certs"), &[]);
        let dir = &certs.dir;
        let (server_cert, server_key) = (dir.join("etcd-server.pem"), dir.join("etcd-server.key"));
        fs::write(
            dir.join("etcd-ext.cnf"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .unwrap();
        let csr = dir.join("etcd.csr");
        let ext = dir.join("etcd-ext.cnf");
        let p = |p: &Path| p.to_string_lossy().into_owned();
        let steps: [Vec<String>; 3] = [
            vec![
                "ecparam".into(),
                "-name".into(),
                "prime256v1".into(),
                "-genkey".into(),
                "-noout".into(),
                "-out".into(),
                p(&server_key),
            ],
            vec![
                "req".into(),
                "-new".into(),
                "-subj".into(),
                "/CN=etcd".into(),
                "-key".into(),
                p(&server_key),
                "-out".into(),
                p(&csr),
            ],
            vec![
                "x509".into(),
                "-req".into(),
                "-days".into(),
                "2".into(),
                "-CAcreateserial".into(),
                "-in".into(),
                p(&csr),
                "-CA".into(),
                p(&certs.ca()),
                "-CAkey".into(),
                p(&certs.ca_key()),
                "-extfile".into(),
                p(&ext),
                "-out".into(),
                p(&server_cert),
            ],
        ];
        for args in steps {
            let o = run_cmd(
                Command::new("openssl").args(&args),
                None,
                Duration::from_secs(20),
            );
            assert!(o.status.success(), "openssl {args:?}: {}", o.describe());
        }
        EtcdTls {
            certs,
            server_cert,
            server_key,
        }
    }
}

/// A real etcd member, alone in its cluster, on loopback.
struct Etcd {
    proc: Option<ChildGuard>,
    td_path: PathBuf,
    data: PathBuf,
    client_port: u16,
    peer_port: u16,
    tls: Option<EtcdTls>,
}

impl Etcd {
    fn start(td: &TempDir, tls: Option<EtcdTls>) -> Etcd {
        let mut e = Etcd {
            proc: None,
            td_path: td.path().to_path_buf(),
            data: td.join("etcd-data"),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        e.launch();
        e
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    fn launch(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen-client-urls")
            .arg(self.endpoint())
            .arg("--advertise-client-urls")
            .arg(self.endpoint())
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            .arg("--log-level")
            .arg("warn");
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(t.certs.ca())
                .arg("--client-cert-auth");
        }
        let mut proc = ChildGuard::spawn("etcd", cmd, &self.td_path);
        wait_accept(
            SocketAddr::from(([127, 0, 0, 1], self.client_port)),
            &mut proc,
        );
        self.proc = Some(proc);
        // Accepting is not serving yet: wait for a read to answer.
        let ok = wait_until(Duration::from_secs(15), || {
            self.etcdctl(&["get", "--prefix", "/health-probe"])
                .status
                .success()
        });
        assert!(ok, "etcd did not answer:\n{}", self.log());
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.sigterm();
            assert!(
                p.wait_exit(Duration::from_secs(10)).is_some(),
                "etcd did not stop"
            );
        }
    }

    fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.output()).unwrap_or_default()
    }

    fn etcdctl(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint())
            .arg("--dial-timeout")
            .arg("2s");
        if let Some(t) = &self.tls {
            cmd.arg("--cacert")
                .arg(t.certs.ca())
                .arg("--cert")
                .arg(t.certs.client_cert())
                .arg("--key")
                .arg(t.certs.client_key());
        }
        cmd.args(args);
        run_cmd(&mut cmd, None, Duration::from_secs(20))
    }

    fn put(&self, key: &str, value: &[u8]) {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint());
        if let Some(t) = &self.tls {
            cmd.arg("--cacert")
                .arg(t.certs.ca())
                .arg("--cert")
                .arg(t.certs.client_cert())
                .arg("--key")
                .arg(t.certs.client_key());
        }
        cmd.arg("put").arg(key);
        let o = run_cmd(&mut cmd, Some(value), Duration::from_secs(20));
        assert!(o.status.success(), "etcdctl put: {}", o.describe());
    }

    /// The current revision (from `etcdctl endpoint status`).
    fn revision(&self) -> i64 {
        let o = self.etcdctl(&["get", "--prefix", PREFIX, "-w", "json", "--keys-only"]);
        assert!(o.status.success(), "{}", o.describe());
        let v = parse_json(o.stdout_str().as_bytes());
        v["header"]["revision"]
            .as_i64()
            .expect("revision in etcdctl output")
    }
}

/// The shared config a test pushes: a directory with config.toml and certs/.
struct Shared {
    dir: PathBuf,
    echo: String,
}

impl Shared {
    fn new(td: &TempDir, certs: &CertDir, echo: &Echo) -> Shared {
        let dir = td.join("shared");
        fs::create_dir_all(dir.join("certs")).unwrap();
        for f in ["ca.pem", "server.pem", "server.key"] {
            fs::copy(certs.dir.join(f), dir.join("certs").join(f)).unwrap();
        }
        Shared {
            dir,
            echo: echo.addr(),
        }
    }

    /// Writes config.toml: one listener, the given client CAs, the routes.
    fn write(&self, client_ca: &[&str], routes: &[&str]) -> PathBuf {
        let cas: Vec<String> = client_ca.iter().map(|c| format!("\"certs/{c}\"")).collect();
        let mut text = format!(
            "[[listener]]\naddress = \"127.0.0.1:1\"  # each node's own in its bootstrap\ncertificate = \"certs/server.pem\"\nprivate_key = \"certs/server.key\"\nclient_ca = [{}]\n",
            cas.join(", ")
        );
        for r in routes {
            text.push_str(&format!(
                "\n[[route]]\npath = \"{r}\"\nbackends = [\"{}\"]\nset_headers = {{ \"X-Route\" = \"{r}\" }}\n",
                self.echo
            ));
        }
        let path = self.dir.join("config.toml");
        fs::write(&path, text).unwrap();
        path
    }
}

/// One gateway node: its own directory with node.toml and its snapshot.
struct Node {
    proc: Option<ChildGuard>,
    dir: PathBuf,
    port: u16,
    admin: u16,
}

impl Node {
    fn bootstrap(td: &TempDir, name: &str, etcd: &Etcd) -> Node {
        let dir = td.join(name);
        fs::create_dir_all(&dir).unwrap();
        let (port, admin) = (free_port(), free_port());
        let tls = match &etcd.tls {
            Some(t) => format!(
                "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                t.certs.ca().display(),
                t.certs.client_cert().display(),
                t.certs.client_key().display()
            ),
            None => String::new(),
        };
        fs::write(
            dir.join("node.toml"),
            format!(
                "[server]\nworkers = 1\n\n[admin]\naddress = \"127.0.0.1:{admin}\"\n\n[cluster]\nstore = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{PREFIX}\"\n{tls}snapshot = \"cluster.snapshot\"\nretry_max = \"1s\"\nrequest_timeout = \"3s\"\nlisten = [\"127.0.0.1:{port}\"]\n",
                etcd.endpoint()
            ),
        )
        .unwrap();
        Node {
            proc: None,
            dir,
            port,
            admin,
        }
    }

    fn toml(&self) -> PathBuf {
        self.dir.join("node.toml")
    }

    fn start(&mut self) {
        let mut cmd = portcullis();
        cmd.arg("run").arg("--config").arg(self.toml());
        let mut p = ChildGuard::spawn("node", cmd, &self.dir);
        wait_accept(SocketAddr::from(([127, 0, 0, 1], self.port)), &mut p);
        // The listeners are bound before the admin listener starts.
        wait_accept(SocketAddr::from(([127, 0, 0, 1], self.admin)), &mut p);
        self.proc = Some(p);
    }

    fn kill(&mut self) {
        if let Some(p) = self.proc.take() {
            p.signal(libc::SIGKILL);
            drop(p);
        }
    }

    fn proc(&self) -> &ChildGuard {
        self.proc.as_ref().expect("node running")
    }

    fn metrics(&self) -> String {
        admin_get(&format!("127.0.0.1:{}", self.admin), "/metrics").1
    }

    fn revision(&self) -> i64 {
        metric(&self.metrics(), "portcullis_config_revision").unwrap_or(-1.0) as i64
    }

    fn failures(&self) -> i64 {
        metric(&self.metrics(), "portcullis_config_update_failures_total").unwrap_or(-1.0) as i64
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// GET over a new TLS connection; the status and the route the echo saw.
    fn get(&self, cfg: &Arc<ClientConfig>, path: &str) -> Result<(u16, String), String> {
        let s = tls_connect(self.addr(), cfg.clone()).map_err(|e| format!("connect: {e}"))?;
        let mut c = HttpConn::new(s);
        let r = c.get(path, &[]).map_err(|e| format!("GET {path}: {e}"))?;
        let route = if r.status == 200 {
            r.json()["headers"]["x-route"]
                .as_str()
                .unwrap_or("")
                .to_string()
        } else {
            String::new()
        };
        Ok((r.status, route))
    }
}

fn push(node: &Node, file: &Path) -> Out {
    let mut cmd = portcullis();
    cmd.args(["config", "push", "--cluster"])
        .arg(node.toml())
        .arg(file);
    run_cmd(&mut cmd, None, Duration::from_secs(30))
}

/// The revision `config push` printed.
fn pushed_revision(o: &Out) -> i64 {
    assert!(o.status.success(), "config push: {}", o.describe());
    let text = o.stdout_str();
    text.split("as revision ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {text:?}"))
}

/// `count` nodes bootstrapped on `etcd`, `config` pushed through the first,
/// every node started and converged on it; the nodes and that revision.
fn start_nodes(td: &TempDir, etcd: &Etcd, count: usize, config: &Path) -> (Vec<Node>, i64) {
    let mut nodes: Vec<Node> = (0..count)
        .map(|i| Node::bootstrap(td, &format!("node{i}"), etcd))
        .collect();
    let first = pushed_revision(&push(&nodes[0], config));
    for n in &mut nodes {
        n.start();
    }
    converge(&nodes.iter().collect::<Vec<_>>(), first, Instant::now());
    (nodes, first)
}

/// Waits until every node serves `revision`; the time from `since` to the last.
fn converge(nodes: &[&Node], revision: i64, since: Instant) -> Duration {
    let ok = wait_until(Duration::from_secs(20), || {
        nodes.iter().all(|n| n.revision() == revision)
    });
    let took = since.elapsed();
    if !ok {
        let seen: Vec<i64> = nodes.iter().map(|n| n.revision()).collect();
        let logs: Vec<String> = nodes.iter().map(|n| n.proc().stderr()).collect();
        panic!(
            "nodes did not converge on revision {revision}: {seen:?}\n{}",
            logs.join("\n-----\n")
        );
    }
    took
}

/// A rustls client trusting every CA in `cas`, presenting `cert`/`key`.
fn client(cas: &[PathBuf], cert: &Path, key: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        for c in load_certs(ca) {
            roots.add(c).unwrap();
        }
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(load_certs(cert), load_key(key))
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn default_client(certs: &CertDir) -> Arc<ClientConfig> {
    client(&[certs.ca()], &certs.client_cert(), &certs.client_key())
}

#[test]
fn push_reaches_every_node_and_broken_configs_are_refused() {
    let td = TempDir::new("cluster-push");
    let certs = certs_init(&td.join("certs"), &[]);
    // etcd over mTLS, as in production: its own CA, server and client certificate.
    let etcd = Etcd::start(&td, Some(EtcdTls::new(&td)));
    let echo = Echo::start(&td);
    let shared = Shared::new(&td, &certs, &echo);
    let (nodes, _) = start_nodes(&td, &etcd, 3, &shared.write(&["ca.pem"], &["/api"]));
    let all: Vec<&Node> = nodes.iter().collect();
    let cfg = default_client(&certs);
    for n in &nodes {
        assert_eq!(n.get(&cfg, "/api/x").unwrap(), (200, "/api".into()));
        assert_eq!(n.get(&cfg, "/new/x").unwrap().0, 404);
        let snap = n.dir.join("cluster.snapshot");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&snap).unwrap().permissions().mode() & 0o777,
            0o600,
            "the snapshot holds private keys"
        );
    }

    // A new route: every node serves it, soon.
    let file = shared.write(&["ca.pem"], &["/api", "/new"]);
    let mut diff = portcullis();
    diff.args(["config", "diff", "--cluster"])
        .arg(nodes[0].toml())
        .arg(&file);
    let d = run_cmd(&mut diff, None, Duration::from_secs(20));
    assert_eq!(d.code(), Some(1), "{}", d.describe());
    assert!(
        d.stdout_str().contains("+13: path = \"/new\""),
        "{}",
        d.describe()
    );
    let t0 = Instant::now();
    let rev = pushed_revision(&push(&nodes[0], &file));
    let took = converge(&all, rev, t0);
    println!(
        "cluster: push -> last of {} nodes applied: {} ms (goal < 1000 ms)",
        nodes.len(),
        took.as_millis()
    );
    assert!(took < Duration::from_secs(5), "convergence took {took:?}");
    for n in &nodes {
        assert_eq!(n.get(&cfg, "/new/x").unwrap(), (200, "/new".into()));
    }
    let d = run_cmd(&mut diff, None, Duration::from_secs(20));
    assert!(d.status.success(), "{}", d.describe());
    let mut get = portcullis();
    get.args(["config", "get", "--cluster"])
        .arg(nodes[1].toml());
    let g = run_cmd(&mut get, None, Duration::from_secs(20));
    assert!(
        g.stdout_str().contains(&format!("at revision {rev}")),
        "{}",
        g.describe()
    );
    assert!(
        g.stdout_str().contains("# file files/certs/server.key"),
        "{}",
        g.describe()
    );

    // A broken config: `config push` refuses it with file, line and field,
    // and etcd is left alone.
    let bad = shared.dir.join("bad.toml");
    let text = fs::read_to_string(&file)
        .unwrap()
        .replace("path = \"/new\"", "path = \"new\"");
    fs::write(&bad, text).unwrap();
    let o = push(&nodes[0], &bad);
    assert_eq!(o.code(), Some(2), "{}", o.describe());
    assert!(
        o.stderr
            .contains("bad.toml:13: route[1].path: \"new\" must start with \"/\""),
        "{}",
        o.describe()
    );
    assert_eq!(etcd.revision(), rev, "a refused push wrote nothing");

    // Injected straight into etcd, behind the push's back: every node
    // refuses it (key and reason logged, counted) and keeps serving.
    etcd.put(
        &format!("{PREFIX}config.toml"),
        fs::read(&bad).unwrap().as_slice(),
    );
    for n in &nodes {
        let line = n
            .proc()
            .wait_log_line(
                &[
                    "cluster config refused",
                    "/portcullis/config.toml:13: route[1].path",
                ],
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| n.proc().fail("no refusal logged"));
        assert!(line.contains(&format!("serving_revision={rev}")), "{line}");
    }
    for n in &nodes {
        assert!(
            wait_until(Duration::from_secs(5), || n.failures() == 1),
            "failures: {}",
            n.failures()
        );
        assert_eq!(n.revision(), rev, "still the last good revision");
        assert_eq!(n.get(&cfg, "/new/x").unwrap(), (200, "/new".into()));
    }
    // The good config.toml back (same content as served: nothing rebuilt,
    // the new revision is served), then a certificate that does not parse.
    etcd.put(
        &format!("{PREFIX}config.toml"),
        fs::read(&file).unwrap().as_slice(),
    );
    let restored = etcd.revision();
    converge(&all, restored, Instant::now());
    etcd.put(
        &format!("{PREFIX}files/certs/server.pem"),
        b"not a certificate",
    );
    for n in &nodes {
        let line = n
            .proc()
            .wait_log_line(
                &[
                    "cluster config refused",
                    "/portcullis/files/certs/server.pem",
                ],
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| n.proc().fail("no refusal naming the certificate key"));
        assert!(
            line.contains(&format!("serving_revision={restored}")),
            "{line}"
        );
        assert!(
            wait_until(Duration::from_secs(5), || n.failures() == 2),
            "failures: {}",
            n.failures()
        );
        assert_eq!(n.revision(), restored, "still the last good revision");
        assert_eq!(n.get(&cfg, "/new/x").unwrap(), (200, "/new".into()));
    }
    // The good config pushed again puts everything right.
    let again = pushed_revision(&push(&nodes[0], &file));
    converge(&all, again, Instant::now());
    for n in &nodes {
        assert_eq!(n.get(&cfg, "/new/x").unwrap(), (200, "/new".into()));
    }
}

#[test]
fn certificate_and_ca_rotation_under_load_fails_no_request() {
    let td = TempDir::new("cluster-rotate");
    let old = certs_init(&td.join("old"), &[]);
    let new = certs_init(&td.join("new"), &[]);
    let etcd = Etcd::start(&td, None);
    let echo = Echo::start(&td);
    let shared = Shared::new(&td, &old, &echo);
    fs::copy(new.ca(), shared.dir.join("certs/ca-new.pem")).unwrap();
    let (nodes, _) = start_nodes(&td, &etcd, 2, &shared.write(&["ca.pem"], &["/"]));
    let all: Vec<&Node> = nodes.iter().collect();

    // Clients trust both CAs (the new one was distributed first, as it must
    // be); which client certificate they present follows the rotation.
    let both = [old.ca(), new.ca()];
    let current = Arc::new(RwLock::new(client(
        &both,
        &old.client_cert(),
        &old.client_key(),
    )));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr()).collect();
    let rr = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (current, stop, ok, failures, addrs, rr) = (
                current.clone(),
                stop.clone(),
                ok.clone(),
                failures.clone(),
                addrs.clone(),
                rr.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let addr = addrs[rr.fetch_add(1, Ordering::Relaxed) % addrs.len()];
                    let cfg = current.read().unwrap().clone();
                    // A new handshake each time, then three keep-alive requests.
                    let result = tls_connect(addr, cfg)
                        .map_err(|e| e.to_string())
                        .and_then(|s| {
                            let mut c = HttpConn::new(s);
                            for _ in 0..3 {
                                let r = c.get("/load", &[]).map_err(|e| e.to_string())?;
                                if r.status != 200 {
                                    return Err(format!("status {}", r.status));
                                }
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(())
                        });
                    if let Err(e) = result {
                        failures.lock().unwrap().push(format!("{addr}: {e}"));
                    }
                }
            })
        })
        .collect();
    let served = |ok: &AtomicU64, at_least: u64| {
        let start = ok.load(Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(10), || ok.load(Ordering::Relaxed)
                >= start + at_least),
            "load stalled"
        );
    };
    served(&ok, 50);

    // 1: the new server certificate, and both client CAs.
    fs::copy(new.server_cert(), shared.dir.join("certs/server.pem")).unwrap();
    fs::copy(new.server_key(), shared.dir.join("certs/server.key")).unwrap();
    let r1 = pushed_revision(&push(
        &nodes[0],
        &shared.write(&["ca.pem", "ca-new.pem"], &["/"]),
    ));
    converge(&all, r1, Instant::now());
    served(&ok, 50);
    // 2: clients move to certificates of the new CA.
    *current.write().unwrap() = client(&both, &new.client_cert(), &new.client_key());
    served(&ok, 50);
    // 3: the old client CA goes.
    let r3 = pushed_revision(&push(&nodes[0], &shared.write(&["ca-new.pem"], &["/"])));
    converge(&all, r3, Instant::now());
    served(&ok, 50);
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    println!(
        "cluster rotation: {} requests, {} failed",
        ok.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed during the rotation: {:?}",
        &failures[..failures.len().min(10)]
    );

    // The rotation took: only the new CA's server certificate is presented,
    // and the old client certificate is refused.
    let new_only = client(&[new.ca()], &new.client_cert(), &new.client_key());
    let old_client = client(&both, &old.client_cert(), &old.client_key());
    for n in &nodes {
        assert_eq!(n.get(&new_only, "/x").unwrap().0, 200);
        assert!(
            n.get(&old_client, "/x").is_err(),
            "old client certificate still accepted"
        );
    }
}

#[test]
fn etcd_down_snapshot_restart_then_compaction_and_convergence() {
    let td = TempDir::new("cluster-down");
    let certs = certs_init(&td.join("certs"), &[]);
    let mut etcd = Etcd::start(&td, None);
    let echo = Echo::start(&td);
    let shared = Shared::new(&td, &certs, &echo);
    let (mut nodes, first) = start_nodes(&td, &etcd, 2, &shared.write(&["ca.pem"], &["/before"]));
    let cfg = default_client(&certs);

    // etcd goes away: both nodes keep serving.
    etcd.stop();
    for n in &nodes {
        n.proc()
            .wait_log_line(
                &["cluster: lost etcd; still serving"],
                Duration::from_secs(15),
            )
            .unwrap_or_else(|| n.proc().fail("no lost-etcd line"));
        assert_eq!(n.get(&cfg, "/before/x").unwrap(), (200, "/before".into()));
    }
    // A node restarted meanwhile starts from its snapshot.
    nodes[1].kill();
    nodes[1].start();
    nodes[1]
        .proc()
        .wait_log_line(
            &[
                "starting from the local snapshot",
                &format!("revision={first}"),
            ],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| nodes[1].proc().fail("not started from the snapshot"));
    assert_eq!(nodes[1].revision(), first);
    assert_eq!(
        nodes[1].get(&cfg, "/before/x").unwrap(),
        (200, "/before".into())
    );

    // etcd back; before the nodes reconnect, a new config is pushed and the
    // history compacted past what they watched from.
    etcd.launch();
    let rev = pushed_revision(&push(&nodes[0], &shared.write(&["ca.pem"], &["/after"])));
    let c = etcd.etcdctl(&["compact", &rev.to_string()]);
    assert!(c.status.success(), "{}", c.describe());
    converge(&nodes.iter().collect::<Vec<_>>(), rev, Instant::now());
    for n in &nodes {
        assert_eq!(n.get(&cfg, "/after/x").unwrap(), (200, "/after".into()));
        assert_eq!(n.get(&cfg, "/before/x").unwrap().0, 404);
    }

    // A watch from before the compaction is canceled with the compact
    // revision (what a node does then: a full re-read, as above).
    let bootstrap = portcullis::config::load_bootstrap(&nodes[0].toml()).unwrap();
    let mut client = portcullis::cluster::etcd::Client::new(&bootstrap.cluster).unwrap();
    let mut watch = client.watch(PREFIX, first).unwrap();
    let mut saw = Vec::new();
    for _ in 0..3 {
        match watch.next_event() {
            Ok(portcullis::cluster::etcd::WatchEvent::Message(m)) => {
                let done = matches!(m, portcullis::cluster::wire::WatchMessage::Compacted { .. });
                saw.push(format!("{m:?}"));
                if done {
                    break;
                }
            }
            other => {
                saw.push(format!("{other:?}"));
                break;
            }
        }
    }
    assert!(
        saw.iter()
            .any(|m| m == &format!("Compacted {{ compact_revision: {rev} }}")),
        "{saw:?}"
    );
}
