//! Session resumption never crosses a trust boundary.
//!
//! A resumed TLS session skips client-certificate verification, so a ticket
//! or session ID issued under one trust configuration (a site or listener:
//! its certificate, client CAs, CRLs, mTLS mode, config generation) must
//! never resume under another. These tests drive the real gateway with a real
//! rustls client that keeps its tickets and session IDs in a store shared
//! between connections, as browsers and HTTP clients do, and play the
//! attacker: the ticket from a lax listener or site offered to a strict one,
//! a ClientHello split over records to steer site selection, a ticket kept
//! across a reload that changed a CA or a CRL, and a certificate that expired
//! after its session began. TLS 1.3 tickets, TLS 1.2 tickets and TLS 1.2
//! session IDs alike.

mod common;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12Resumption};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, SupportedProtocolVersion};

const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;

/// How a client resumes: TLS 1.3 tickets, TLS 1.2 tickets, TLS 1.2 session IDs.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Tls13,
    Tls12Tickets,
    Tls12SessionIds,
}

const ALL_MODES: [Mode; 3] = [Mode::Tls13, Mode::Tls12Tickets, Mode::Tls12SessionIds];

impl Mode {
    fn version(self) -> &'static SupportedProtocolVersion {
        match self {
            Mode::Tls13 => TLS13,
            Mode::Tls12Tickets | Mode::Tls12SessionIds => TLS12,
        }
    }
}

/// A rustls client config: trusts `server_ca`, presents `identity` if any,
/// keeps sessions in `store`, splits its records (the ClientHello included)
/// Build it once per client: rustls offers a stored session only to the
/// config (verifier and certificate) that established it.
fn client(
    server_ca: &Path,
    identity: Option<(&Path, &Path)>,
    mode: Mode,
    store: &Arc<dyn ClientSessionStore>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(server_ca) {
        roots.add(c).expect("add CA");
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[mode.version()])
    .expect("protocol versions")
    .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert), load_key(key))
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    let tls12 = match mode {
        Mode::Tls12SessionIds => Tls12Resumption::SessionIdOnly,
        _ => Tls12Resumption::SessionIdOrTickets,
    };
    cfg.resumption = Resumption::store(store.clone()).tls12_resumption(tls12);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn new_store() -> Arc<dyn ClientSessionStore> {
    Arc::new(ClientSessionMemoryCache::new(64))
}

/// What one connection attempt came to.
#[derive(Debug)]
enum Outcome {
    /// The request was answered; whether the handshake resumed a session.
    Served { resumed: bool, status: u16 },
    /// The gateway refused with a TLS alert (during or right after the handshake).
    Refused(String),
    /// The gateway closed without an alert; whether the handshake had resumed.
    Closed { resumed: bool },
}

/// Connects to `addr` with SNI `name`, sends `GET /` with `Host: name`, and
/// reads the answer. Reading also takes in the TLS 1.3 tickets the gateway
/// sends after the handshake, so the store holds them for the next attempt.
fn attempt(addr: SocketAddr, cfg: &Arc<ClientConfig>, name: &str) -> Outcome {
    let alert = |e: &std::io::Error| match rustls_error(e) {
        Some(rustls::Error::AlertReceived(a)) => Some(format!("{a:?}")),
        _ => None,
    };
    let stream = match tls_connect_name(addr, cfg.clone(), name) {
        Ok(s) => s,
        Err(e) => match alert(&e) {
            Some(a) => return Outcome::Refused(a),
            None => panic!("handshake with {addr} ({name}) failed without an alert: {e:?}"),
        },
    };
    let resumed = stream.conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let mut conn = HttpConn::new(stream);
    let host = format!("Host: {name}");
    let request = format!("GET / HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n");
    if let Err(e) = conn.send(request.as_bytes()) {
        return match alert(&e) {
            Some(a) => Outcome::Refused(a),
            None => Outcome::Closed { resumed },
        };
    }
    match conn.read_final() {
        Ok(r) => Outcome::Served {
            resumed,
            status: r.status,
        },
        Err(e) => match alert(&e) {
            Some(a) => Outcome::Refused(a),
            None => Outcome::Closed { resumed },
        },
    }
}

/// Waits (bounded) for at least `n` log lines with all of `needles`: the
/// gateway logs a refusal after its lingering close, a moment after the
/// client has seen it.
fn wait_log_count(gw: &ChildGuard, needles: &[&str], n: usize) -> bool {
    wait_until(Duration::from_secs(5), || gw.count_log_lines(needles) >= n)
}

/// The same client (same verifier, certificate and session store: rustls
/// only offers a session to the config that made it) splitting its records,
/// the ClientHello included, into `size`-byte pieces.
fn fragmenting(cfg: &Arc<ClientConfig>, size: usize) -> Arc<ClientConfig> {
    let mut c = (**cfg).clone();
    c.max_fragment_size = Some(size);
    Arc::new(c)
}

fn assert_served(o: Outcome, resumed: bool, what: &str) {
    match o {
        Outcome::Served { resumed: r, status } => {
            assert_eq!(status, 200, "{what}: status");
            assert_eq!(r, resumed, "{what}: resumed");
        }
        other => panic!("{what}: expected 200 (resumed: {resumed}), got {other:?}"),
    }
}

fn assert_refused(o: Outcome, alert: &str, what: &str) {
    match o {
        Outcome::Refused(a) => assert_eq!(a, alert, "{what}: alert"),
        other => panic!("{what}: expected the TLS alert {alert}, got {other:?}"),
    }
}

/// Runs `portcullis run` on a hand-written config and waits until it serves.
fn start(td: &TempDir, toml: &str, addrs: &[SocketAddr], workers: usize) -> (ChildGuard, PathBuf) {
    let path = config_file(td);
    fs::write(&path, toml).expect("write config");
    let mut cmd = portcullis();
    cmd.arg("run").arg("--config").arg(&path);
    let mut proc = ChildGuard::spawn("gateway", cmd, td.path());
    for a in addrs {
        wait_accept(*a, &mut proc);
    }
    if !wait_until(Duration::from_secs(10), || {
        proc.count_log_lines(&["worker started"]) >= workers
    }) {
        proc.fail("the gateway did not start its workers");
    }
    (proc, path)
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn p(path: &Path) -> String {
    q(&path.to_string_lossy())
}

/// Two CAs: `one` (whose server certificate every listener uses, and whose
/// client the tests play) and `two`.
struct TwoCas {
    td: TempDir,
    one: CertDir,
    two: CertDir,
    echo: Echo,
}

impl TwoCas {
    fn new(name: &str) -> TwoCas {
        let td = TempDir::new(name);
        let one = certs_init(&td.join("one"), &[]);
        let two = certs_init(&td.join("two"), &[]);
        let echo = Echo::start(&td);
        TwoCas { td, one, two, echo }
    }

    /// A gateway with one listener (CA one's server certificate and client
    /// CA) routing everything to the echo backend; returns its port.
    fn one_listener(&self, workers: usize) -> (u16, ChildGuard) {
        let port = free_port();
        let toml = format!(
            "[server]\nworkers = {workers}\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\ncertificate = {}\nprivate_key = {}\nclient_ca = [{}]\n\n[[route]]\npath = \"/\"\nbackends = [\"{}\"]\n",
            p(&self.one.server_cert()),
            p(&self.one.server_key()),
            p(&self.one.ca()),
            self.echo.addr()
        );
        let (gw, _) = start(&self.td, &toml, &[addr(port)], workers);
        (port, gw)
    }

    fn client_one(&self, mode: Mode, store: &Arc<dyn ClientSessionStore>) -> Arc<ClientConfig> {
        let id = (self.one.client_cert(), self.one.client_key());
        client(&self.one.ca(), Some((&id.0, &id.1)), mode, store)
    }
}

#[test]
fn a_session_from_one_listener_never_resumes_on_another_with_other_cas() {
    let t = TwoCas::new("resume-listeners");
    let (port_a, port_b) = (free_port(), free_port());
    let listener = |port: u16, ca: &Path| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:{port}\"\ncertificate = {}\nprivate_key = {}\nclient_ca = [{}]\n\n",
            p(&t.one.server_cert()),
            p(&t.one.server_key()),
            p(ca)
        )
    };
    // One worker: TLS 1.2 session IDs live in a per-core cache, and the
    // control (resuming where it is allowed) must resume every time.
    let toml = format!(
        "[server]\nworkers = 1\n\n{}{}[[route]]\npath = \"/\"\nbackends = [\"{}\"]\n",
        listener(port_a, &t.one.ca()),
        listener(port_b, &t.two.ca()),
        t.echo.addr()
    );
    let (gw, _) = start(&t.td, &toml, &[addr(port_a), addr(port_b)], 1);
    for mode in ALL_MODES {
        let store = new_store();
        let cfg = t.client_one(mode, &store);
        let what = |step: &str| format!("{mode:?}: {step}");
        assert_served(
            attempt(addr(port_a), &cfg, "localhost"),
            false,
            &what("full handshake on A"),
        );
        // The control: the session does resume where it was issued, so the
        // refusal below is the trust boundary, not a client that never resumes.
        assert_served(
            attempt(addr(port_a), &cfg, "localhost"),
            true,
            &what("resumed on A"),
        );
        // Same SNI, same store: the client offers A's session to B, whose
        // CAs never signed this client. B must run a full handshake and refuse.
        assert_refused(
            attempt(addr(port_b), &cfg, "localhost"),
            "UnknownCA",
            &what("A's session offered to B"),
        );
    }
    assert!(
        wait_log_count(
            &gw,
            &["client certificate refused", "not signed by a trusted CA"],
            3
        ),
        "each refusal on B is logged with its reason:\n{}",
        gw.stderr()
    );
}

#[test]
fn tickets_resume_on_every_core_of_the_site_that_issued_them() {
    let t = TwoCas::new("resume-cores");
    let (port, _gw) = t.one_listener(2);
    for mode in [Mode::Tls13, Mode::Tls12Tickets] {
        let store = new_store();
        let cfg = t.client_one(mode, &store);
        assert_served(
            attempt(addr(port), &cfg, "localhost"),
            false,
            "full handshake",
        );
        // Connections spread over both cores (SO_REUSEPORT hashes the source
        // port): a ticket key kept per core would fail about half of these.
        for i in 0..8 {
            assert_served(
                attempt(addr(port), &cfg, "localhost"),
                true,
                &format!("{mode:?}: resumption {i}"),
            );
        }
    }
}

/// A listener serving site `a` (mandatory mTLS, CA one, `a.example`) and a
/// default site `open` (no client certificates, `open.example`).
struct TwoSites {
    t: TwoCas,
    port: u16,
    server_ca: PathBuf,
    gw: ChildGuard,
}

impl TwoSites {
    fn start(name: &str) -> TwoSites {
        let t = TwoCas::new(name);
        let (cert, key) = certs_issue(
            &t.one.dir,
            &t.td.join("one"),
            "sites",
            "sites",
            &["--server", "--dns", "a.example", "--dns", "open.example"],
        );
        let port = free_port();
        let toml = format!(
            "[server]\nworkers = 1\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
             [[site]]\nname = \"a\"\nserver_names = [\"a.example\"]\ncertificate = {c}\nprivate_key = {k}\nclient_ca = [{ca}]\nmtls = \"mandatory\"\n\n\
             [[site]]\nname = \"open\"\nserver_names = [\"open.example\"]\ncertificate = {c}\nprivate_key = {k}\nmtls = \"off\"\ndefault = true\n\n\
             [[route]]\nsite = \"a\"\npath = \"/\"\nbackends = [\"{e}\"]\n\n\
             [[route]]\nsite = \"open\"\npath = \"/\"\nbackends = [\"{e}\"]\n",
            c = p(&cert),
            k = p(&key),
            ca = p(&t.one.ca()),
            e = t.echo.addr()
        );
        // One worker: TLS 1.2 session IDs live in a per-core cache.
        let (gw, _) = start(&t.td, &toml, &[addr(port)], 1);
        let server_ca = t.one.ca();
        TwoSites {
            t,
            port,
            server_ca,
            gw,
        }
    }
}

#[test]
fn a_client_hello_split_over_records_selects_the_site_it_names() {
    let s = TwoSites::start("resume-fragmented");
    let alice = (s.t.one.client_cert(), s.t.one.client_key());
    for mode in [Mode::Tls13, Mode::Tls12Tickets] {
        let what = |step: &str| format!("{mode:?}: {step}");
        let store = new_store();
        // 40-byte records: a ClientHello of a few hundred bytes arrives in
        // about ten records, so the name is not in the first one.
        let whole_anon = client(&s.server_ca, None, mode, &store);
        let split_anon = fragmenting(&whole_anon, 40);
        // The attack: no certificate, a split hello naming the strict site.
        // Before the fix the lax default site ran this handshake (and rustls
        // stored a.example in its ticket).
        let refused = attempt(addr(s.port), &split_anon, "a.example");
        let alert = "CertificateRequired";
        assert_refused(
            refused,
            alert,
            &what("split hello for a.example, no certificate"),
        );
        // ... and then an ordinary hello carrying whatever the store holds.
        assert_refused(
            attempt(addr(s.port), &whole_anon, "a.example"),
            alert,
            &what("resumption attempt on a.example, no certificate"),
        );
        // The open site still serves anonymous clients, split hello or not,
        // and its sessions resume there (and only there: see below).
        assert_served(
            attempt(addr(s.port), &split_anon, "open.example"),
            false,
            &what("split hello for open.example"),
        );
        assert_served(
            attempt(addr(s.port), &whole_anon, "open.example"),
            true,
            &what("resumed on open.example"),
        );
        // Alice's split hello reaches site a and is verified there.
        let alice_cfg = client(&s.server_ca, Some((&alice.0, &alice.1)), mode, &new_store());
        let split_alice = fragmenting(&alice_cfg, 40);
        assert_served(
            attempt(addr(s.port), &split_alice, "a.example"),
            false,
            &what("alice, split hello"),
        );
    }
    assert!(
        s.gw.count_log_lines(&[
            "client certificate refused",
            "sni=\"a.example\"",
            "site=\"a\"",
            "client sent no certificate"
        ]) >= 4,
        "every refusal names site a and the reason:\n{}",
        s.gw.stderr()
    );
}

#[test]
fn a_session_from_the_open_site_never_resumes_on_the_strict_one() {
    let s = TwoSites::start("resume-sites");
    for mode in ALL_MODES {
        // A hostile client store: whatever session it last got, it offers
        // to every name (rustls's own store is keyed by server name).
        let store: Arc<dyn ClientSessionStore> = Arc::new(OneSlotStore::default());
        let cfg = client(&s.server_ca, None, mode, &store);
        assert_served(
            attempt(addr(s.port), &cfg, "open.example"),
            false,
            &format!("{mode:?}: open"),
        );
        assert_served(
            attempt(addr(s.port), &cfg, "open.example"),
            true,
            &format!("{mode:?}: open, resumed"),
        );
        match attempt(addr(s.port), &cfg, "a.example") {
            Outcome::Served { .. } => panic!("{mode:?}: the open site's session opened a.example"),
            Outcome::Refused(_) | Outcome::Closed { resumed: false } => {}
            Outcome::Closed { resumed: true } => {
                panic!("{mode:?}: a.example resumed the open site's session")
            }
        }
    }
}

/// A client session store with one slot for every server name: the
/// attacker's store, replaying a session wherever it likes.
#[derive(Debug, Default)]
struct OneSlotStore {
    tls12: std::sync::Mutex<Option<rustls::client::Tls12ClientSessionValue>>,
    tls13: std::sync::Mutex<Option<rustls::client::Tls13ClientSessionValue>>,
}

impl ClientSessionStore for OneSlotStore {
    fn set_kx_hint(&self, _: rustls::pki_types::ServerName<'static>, _: rustls::NamedGroup) {}
    fn kx_hint(&self, _: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        None
    }
    fn set_tls12_session(
        &self,
        _: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        *self.tls12.lock().unwrap() = Some(value);
    }
    fn tls12_session(
        &self,
        _: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.tls12.lock().unwrap().clone()
    }
    fn remove_tls12_session(&self, _: &rustls::pki_types::ServerName<'static>) {}
    fn insert_tls13_ticket(
        &self,
        _: rustls::pki_types::ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        *self.tls13.lock().unwrap() = Some(value);
    }
    fn take_tls13_ticket(
        &self,
        _: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.tls13.lock().unwrap().take()
    }
}

/// Rewrites the config at `path` with `edit` and has the running gateway
/// reload it; waits for the new generation.
fn reload(gw: &ChildGuard, path: &Path, edit: impl FnOnce(String) -> String) {
    let text = fs::read_to_string(path).expect("read config");
    fs::write(path, edit(text)).expect("write config");
    let before = gw.count_log_lines(&["config reloaded"]);
    gw.signal(libc::SIGHUP);
    if !wait_until(Duration::from_secs(10), || {
        gw.count_log_lines(&["config reloaded"]) > before
    }) {
        gw.fail("the reload did not happen");
    }
}

#[test]
fn a_session_does_not_survive_a_reload_that_changes_a_ca_or_a_crl() {
    let t = TwoCas::new("resume-reload");
    let port = free_port();
    let crl_empty = t.td.join("empty.crl.pem");
    let crl_alice = t.td.join("alice.crl.pem");
    for (out, revoke) in [(&crl_empty, None), (&crl_alice, Some(t.one.client_cert()))] {
        let mut cmd = portcullis();
        cmd.args(["certs", "crl", "--ca-dir"])
            .arg(&t.one.dir)
            .arg("--out")
            .arg(out);
        if let Some(cert) = revoke {
            cmd.arg("--revoke").arg(cert);
        }
        let o = run_cmd(&mut cmd, None, Duration::from_secs(30));
        assert!(o.status.success(), "certs crl: {}", o.describe());
    }
    let toml = format!(
        "[server]\nworkers = 1\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n\
         [[site]]\nname = \"a\"\nserver_names = [\"localhost\"]\ncertificate = {}\nprivate_key = {}\nclient_ca = [{}]\ncrl = [{}]\ndefault = true\n\n\
         [[route]]\npath = \"/\"\nbackends = [\"{}\"]\n",
        p(&t.one.server_cert()),
        p(&t.one.server_key()),
        p(&t.one.ca()),
        p(&crl_empty),
        t.echo.addr()
    );
    let (gw, path) = start(&t.td, &toml, &[addr(port)], 1);
    for mode in ALL_MODES {
        // A CRL that revokes the client arrives by reload.
        let store = new_store();
        let cfg = t.client_one(mode, &store);
        assert_served(
            attempt(addr(port), &cfg, "localhost"),
            false,
            &format!("{mode:?}: before"),
        );
        assert_served(
            attempt(addr(port), &cfg, "localhost"),
            true,
            &format!("{mode:?}: resumed"),
        );
        let (empty, alice) = (p(&crl_empty), p(&crl_alice));
        reload(&gw, &path, |text| text.replace(&empty, &alice));
        assert_refused(
            attempt(addr(port), &cfg, "localhost"),
            "CertificateRevoked",
            &format!("{mode:?}: session from before the CRL"),
        );
        reload(&gw, &path, |text| text.replace(&alice, &empty));

        // The client CA is replaced by reload.
        let store = new_store();
        let cfg = t.client_one(mode, &store);
        assert_served(
            attempt(addr(port), &cfg, "localhost"),
            false,
            &format!("{mode:?}: CA one"),
        );
        let (one, two) = (p(&t.one.ca()), p(&t.two.ca()));
        reload(&gw, &path, |text| {
            text.replacen(
                &format!("client_ca = [{one}]"),
                &format!("client_ca = [{two}]"),
                1,
            )
        });
        assert_refused(
            attempt(addr(port), &cfg, "localhost"),
            "UnknownCA",
            &format!("{mode:?}: session from before the CA change"),
        );
        reload(&gw, &path, |text| {
            text.replacen(
                &format!("client_ca = [{two}]"),
                &format!("client_ca = [{one}]"),
                1,
            )
        });
    }
}

/// A client certificate from `ca` valid from a minute ago until `until`.
fn short_lived_client(ca: &CertDir, out: &Path, until: time::OffsetDateTime) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::from_pem(&fs::read_to_string(ca.ca_key()).unwrap()).unwrap();
    let ca_params =
        rcgen::CertificateParams::from_ca_cert_pem(&fs::read_to_string(ca.ca()).unwrap()).unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "short-lived");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = until;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let (cert_path, key_path) = (out.join("short.pem"), out.join("short.key"));
    fs::write(&cert_path, cert.pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

#[test]
fn a_certificate_that_expired_since_its_session_began_does_not_resume() {
    let t = TwoCas::new("resume-expired");
    let (port, gw) = t.one_listener(1);
    // X.509 times have one-second resolution: expire 3 s from now.
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let (cert, key) = short_lived_client(&t.one, t.td.path(), until);
    let clients: Vec<(Mode, Arc<ClientConfig>)> = ALL_MODES
        .iter()
        .map(|m| {
            (
                *m,
                client(&t.one.ca(), Some((&cert, &key)), *m, &new_store()),
            )
        })
        .collect();
    for (mode, cfg) in &clients {
        assert_served(
            attempt(addr(port), cfg, "localhost"),
            false,
            &format!("{mode:?}: while valid"),
        );
    }
    let expired_at = Instant::now() + Duration::from_secs(5);
    while Instant::now() < expired_at {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (mode, cfg) in &clients {
        match attempt(addr(port), cfg, "localhost") {
            // Resumed, then closed by the gateway before any request is served.
            Outcome::Closed { resumed: true } => {}
            other => panic!(
                "{mode:?}: expected a resumed handshake closed by the gateway, got {other:?}"
            ),
        }
    }
    let needles = [
        "client certificate refused",
        "certificate expired at",
        "resumed session",
    ];
    assert!(
        wait_log_count(&gw, &needles, 3),
        "one log line per refused resumption:\n{}",
        gw.stderr()
    );
}

/// Raw bytes: the gateway answers a ClientHello it cannot read with a
/// plaintext fatal alert and never chooses a site for it.
#[test]
fn client_hellos_that_cannot_be_read_are_refused_with_an_alert() {
    use std::io::{Read, Write};
    let t = TwoCas::new("resume-badhello");
    let (port, gw) = t.one_listener(1);
    let cases: [(&str, Vec<u8>, u8); 4] = [
        // A hello announcing 16 MiB.
        ("oversized", vec![22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff], 47),
        // Half a hello, then an alert record.
        (
            "interrupted",
            vec![22, 3, 1, 0, 2, 1, 0, 21, 3, 3, 0, 2, 1, 0],
            10,
        ),
        // An empty handshake record.
        ("empty record", vec![22, 3, 1, 0, 0], 50),
        // A ServerHello where the ClientHello belongs.
        ("not a hello", vec![22, 3, 1, 0, 4, 2, 0, 0, 0], 10),
    ];
    for (what, bytes, alert) in cases {
        let mut s = std::net::TcpStream::connect(addr(port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&bytes).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert_eq!(
            got,
            vec![21, 3, 3, 0, 2, 2, alert],
            "{what}: the alert record"
        );
    }
    assert!(
        wait_log_count(&gw, &["ClientHello could not be read"], 4),
        "{}",
        gw.stderr()
    );
}
