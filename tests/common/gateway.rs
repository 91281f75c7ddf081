//! The product under test, started for real: `Gateway` runs `portcullis run`
//! on a rendered config and waits until every listener accepts and every
//! worker has started; `Echo` runs the built-in echo backend; `Stack` is the
//! usual trio (certificates, echo, gateway with one catch-all route). Each
//! owns its process through a `ChildGuard`, so nothing outlives the test.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::certs::{certs_init, CertDir};
use super::config::{config_file, Config, RouteCfg};
use super::curl::{curl, Auth, CurlRes};
use super::http_client::HttpConn;
use super::procs::{wait_accept, ChildGuard};
use super::tls_client::{client_config, tls_connect, ClientAuth, TlsStream};
use super::{free_port, portcullis, wait_until, TempDir};

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

    /// Runs `portcullis run` on a config written by hand (`text`); `cfg`
    /// says which listeners to wait for and how many workers.
    pub fn start_text(td: &TempDir, certs: &CertDir, cfg: Config, text: &str) -> Gateway {
        let config_path = config_file(td);
        std::fs::write(&config_path, text).expect("write config");
        let mut cmd = portcullis();
        cmd.arg("run").arg("--config").arg(&config_path);
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
                "gateway did not log {want} `worker started` lines"
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
