//! Gateway configuration for tests: `Config`, `ListenerCfg` and `RouteCfg`
//! build a `portcullis.toml` in code with the README's defaults (one IPv4
//! listener on a fresh port, two workers), builder methods for the common
//! knobs and raw `key = value` lines or tables for everything else;
//! `render` writes the TOML a test hands to `portcullis run` or `check`.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::certs::CertDir;
use super::{free_port, unique, TempDir};

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
    /// `alpn = [...]` when set (the gateway's default: h2, http/1.1).
    pub alpn: Option<Vec<String>>,
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
            alpn: None,
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
            if let Some(alpn) = &l.alpn {
                let ps: Vec<String> = alpn.iter().map(|p| q(p)).collect();
                s.push_str(&format!("alpn = [{}]\n", ps.join(", ")));
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
