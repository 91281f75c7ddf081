//! `[cluster]`: a node whose routes, sites and certificates come from etcd.
//!
//! A node's bootstrap file then holds only what is the node's own: `[server]`,
//! `[admin]` and `[cluster]` (where etcd is, how to authenticate to it, where
//! the last good snapshot lives, and optionally this node's listener
//! addresses). Everything else is the shared config, pushed to etcd with
//! `portcullis config push`; [`parse_shared`] is how both the push and every
//! node read it, so a config a node refuses is one the push refused too.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::build;
use super::field::{Field, Problem};
use super::tree::{self, Node, Value};
use super::{addr, Config, ConfigError, ServerSettings};

/// Sections that belong to one node, never to the shared config.
pub const NODE_ONLY: [&str; 3] = ["server", "admin", "cluster"];

/// A node's bootstrap file with a `[cluster]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeBootstrap {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub admin: Option<SocketAddr>,
    pub cluster: ClusterSettings,
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Tried in order; the first that answers is used until it fails.
    pub endpoints: Vec<Endpoint>,
    /// Every key of the shared config starts with it; ends with "/".
    pub prefix: String,
    /// TLS to etcd (required by `https://` endpoints).
    pub tls: Option<ClusterTls>,
    /// TCP connect (and TLS handshake) to one endpoint.
    pub dial_timeout: Duration,
    /// One request (range, txn) end to end; also how long a silent watch
    /// waits before it checks that etcd is still there.
    pub request_timeout: Duration,
    /// The longest wait between reconnection attempts (backoff doubles up to it).
    pub retry_max: Duration,
    /// The last good shared config on local disk (0600, written atomically).
    pub snapshot: PathBuf,
    /// This node's addresses for the shared config's `[[listener]]`s, in
    /// order; empty = the shared config's own addresses.
    pub listen: Vec<SocketAddr>,
}

/// `https://host:port` or `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// CA bundle etcd's certificate must chain to, and this node's client
/// certificate for etcd's `--client-cert-auth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What a node's `--config` file turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeConfig {
    /// A whole config, served as today.
    File(Box<Config>),
    /// A bootstrap file: the rest comes from etcd.
    Cluster(Box<NodeBootstrap>),
}

/// Reads a node's `--config`: a bootstrap file when it has `[cluster]`,
/// otherwise exactly what [`super::load`] reads.
pub fn load_node(path: &Path) -> Result<NodeConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |p: Problem| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: p.line,
        field: p.field,
        problem: p.problem,
    };
    let root = tree::parse(&text).map_err(|e| {
        invalid(Problem {
            line: e.line,
            field: e.field,
            problem: e.problem,
        })
    })?;
    if !has_key(&root, "cluster") {
        return super::parse(path, &text).map(|c| NodeConfig::File(Box::new(c)));
    }
    let base_dir = path.parent().unwrap_or(Path::new(""));
    bootstrap(root, path, base_dir)
        .map(|b| NodeConfig::Cluster(Box::new(b)))
        .map_err(invalid)
}

/// Reads the bootstrap file of `portcullis config push|get|diff --cluster`.
pub fn load_bootstrap(path: &Path) -> Result<NodeBootstrap, ConfigError> {
    match load_node(path)? {
        NodeConfig::Cluster(b) => Ok(*b),
        NodeConfig::File(_) => Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            line: 1,
            field: "cluster".into(),
            problem: "missing: this is a whole config, not a node's bootstrap file with [cluster]"
                .into(),
        }),
    }
}

/// Parses the shared config exactly as `check` does, refusing what only a
/// node's bootstrap file may hold and any file outside the config's own
/// directory (a node has only what etcd holds, beside the config).
pub fn parse_shared(source_name: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |line, field: String, problem: String| ConfigError::Invalid {
        path: source_name.to_path_buf(),
        line,
        field,
        problem,
    };
    let root = tree::parse(text).map_err(|e| invalid(e.line, e.field, e.problem))?;
    if let Value::Table(entries) = &root.value {
        if let Some((key, node)) = entries
            .iter()
            .find(|(k, _)| NODE_ONLY.contains(&k.as_str()))
        {
            return Err(invalid(
                node.line,
                key.clone(),
                format!(
                    "[{key}] belongs in each node's bootstrap file, not in the config pushed to the cluster"
                ),
            ));
        }
    }
    let config = super::parse(source_name, text)?;
    let base_dir = source_name.parent().unwrap_or(Path::new(""));
    for file in referenced_files(&config) {
        if relative_key(base_dir, &file).is_none() {
            return Err(invalid(
                1,
                "(file reference)".into(),
                format!(
                    "\"{}\" is outside the config's directory: in a cluster every file is written by a path relative to the config, without \"..\"",
                    file.display()
                ),
            ));
        }
    }
    Ok(config)
}

/// Every file a config names (certificates, keys, PKCS#12 files and their
/// password files, CA bundles, CRLs), each once, in config order.
pub fn referenced_files(config: &Config) -> Vec<PathBuf> {
    use crate::tls::material::{IdentitySource, PasswordSource};
    let mut out: Vec<PathBuf> = Vec::new();
    let mut add = |p: &PathBuf| {
        if !out.contains(p) {
            out.push(p.clone());
        }
    };
    let identity = |id: &IdentitySource, add: &mut dyn FnMut(&PathBuf)| match id {
        IdentitySource::Pem {
            certificate,
            private_key,
        } => {
            add(certificate);
            add(private_key);
        }
        IdentitySource::Pkcs12 { path, password } => {
            add(path);
            if let PasswordSource::File(f) = password {
                add(f);
            }
        }
    };
    for s in &config.sites {
        identity(&s.identity, &mut add);
        s.client_ca.iter().for_each(&mut add);
        s.crls.iter().for_each(&mut add);
    }
    for u in &config.upstreams {
        if let Some(t) = &u.tls {
            t.ca.iter().for_each(&mut add);
            if let Some(id) = &t.client_identity {
                identity(id, &mut add);
            }
        }
    }
    out
}

/// `file` as a "/"-separated path below `base_dir`, or None if it is not
/// strictly inside it (absolute elsewhere, or through "..").
pub fn relative_key(base_dir: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(base_dir).ok()?;
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

fn has_key(root: &Node, key: &str) -> bool {
    matches!(&root.value, Value::Table(entries) if entries.iter().any(|(k, _)| k == key))
}

fn bootstrap(root: Node, source: &Path, base_dir: &Path) -> Result<NodeBootstrap, Problem> {
    let root = Field::root(root);
    let mut top = match root.table(&NODE_ONLY) {
        Ok(t) => t,
        Err(mut p) => {
            p.problem = format!(
                "{}; with [cluster], the bootstrap file holds only [server], [admin] and [cluster]: the rest comes from etcd (portcullis config push)",
                p.problem
            );
            return Err(p);
        }
    };
    let server = match top.take("server") {
        Some(f) => build::server(f, base_dir)?,
        None => ServerSettings::default(),
    };
    let admin = match top.take("admin") {
        Some(f) => {
            let mut t = f.table(&["address"])?;
            let a = t.require("address")?;
            Some(addr::parse_listen_addr(a.string()?).map_err(|why| a.problem(why))?)
        }
        None => None,
    };
    let cluster = cluster(top.require("cluster")?, base_dir)?;
    Ok(NodeBootstrap {
        source: source.to_path_buf(),
        server,
        admin,
        cluster,
    })
}

fn cluster(field: Field, base_dir: &Path) -> Result<ClusterSettings, Problem> {
    let mut t = field.table(&[
        "store",
        "endpoints",
        "prefix",
        "ca",
        "cert",
        "key",
        "dial_timeout",
        "request_timeout",
        "retry_max",
        "snapshot",
        "listen",
    ])?;
    t.require("store")?.choice(&["etcd"])?;
    let mut endpoints = Vec::new();
    for f in t.require("endpoints")?.non_empty_array("endpoint URLs")? {
        endpoints.push(endpoint(f.string()?).map_err(|why| f.problem(why))?);
    }
    let prefix = match t.take("prefix") {
        Some(f) => {
            let p = f.string()?;
            if !p.starts_with('/') || !p.ends_with('/') || p.len() < 2 {
                return Err(f.problem(format!(
                    "\"{p}\": a key prefix starts and ends with \"/\", e.g. \"/portcullis/\""
                )));
            }
            p.to_string()
        }
        None => "/portcullis/".to_string(),
    };
    let ca = t
        .take("ca")
        .map(|f| f.readable_file(base_dir))
        .transpose()?;
    let cert = t.take("cert");
    let key = t.take("key");
    let identity = match (cert, key) {
        (Some(c), Some(k)) => Some((c.readable_file(base_dir)?, k.readable_file(base_dir)?)),
        (None, None) => None,
        (Some(c), None) => return Err(c.problem("cert without key: give both, or neither".into())),
        (None, Some(k)) => return Err(k.problem("key without cert: give both, or neither".into())),
    };
    let wants_tls = endpoints.iter().any(|e| e.tls);
    let tls = match ca {
        Some(ca) => Some(ClusterTls { ca, identity }),
        None if wants_tls => {
            return Err(t.problem_here(
                "ca",
                "missing: https:// endpoints need the CA bundle etcd's certificate chains to",
            ))
        }
        None if identity.is_some() => {
            return Err(t.problem_here(
                "ca",
                "missing: cert and key are for TLS to etcd, which needs ca",
            ))
        }
        None => None,
    };
    if tls.is_some() && !endpoints.iter().all(|e| e.tls) {
        return Err(t.problem_here(
            "endpoints",
            "with ca (TLS to etcd), every endpoint must be https://: a plain one would send keys in the clear",
        ));
    }
    let duration =
        |t: &mut super::field::Fields, key: &str, default: u64| -> Result<Duration, Problem> {
            match t.take(key) {
                Some(f) => f.positive_duration(),
                None => Ok(Duration::from_secs(default)),
            }
        };
    let dial_timeout = duration(&mut t, "dial_timeout", 2)?;
    let request_timeout = duration(&mut t, "request_timeout", 5)?;
    let retry_max = duration(&mut t, "retry_max", 5)?;
    let snapshot_field = t.require("snapshot")?;
    let written = snapshot_field.string()?;
    if written.is_empty() {
        return Err(snapshot_field.problem("empty file name".into()));
    }
    let snapshot = base_dir.join(written);
    let listen = match t.take("listen") {
        Some(f) => f
            .non_empty_array("listener addresses")?
            .into_iter()
            .map(|a| addr::parse_listen_addr(a.string()?).map_err(|why| a.problem(why)))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(ClusterSettings {
        endpoints,
        prefix,
        tls,
        dial_timeout,
        request_timeout,
        retry_max,
        snapshot,
        listen,
    })
}

/// Parses `http://host:port` / `https://host:port` (IPv6 in brackets).
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!(
            "\"{url}\": expected http://HOST:PORT or https://HOST:PORT"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, p) = r
            .split_once("]:")
            .ok_or_else(|| format!("\"{url}\": expected [IPv6]:PORT"))?;
        (h, p)
    } else {
        rest.rsplit_once(':')
            .ok_or_else(|| format!("\"{url}\": the port is missing (etcd's is usually 2379)"))?
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "\"{url}\": expected http://HOST:PORT or https://HOST:PORT"
        ));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("\"{url}\": bad port"))?;
    Ok(Endpoint {
        tls,
        host: host.to_string(),
        port,
    })
}

/// The node's config: the shared one with this node's own parts put in.
pub fn apply_node(bootstrap: &NodeBootstrap, mut shared: Config) -> Result<Config, String> {
    shared.server = bootstrap.server.clone();
    shared.admin = bootstrap.admin;
    let listen = &bootstrap.cluster.listen;
    if !listen.is_empty() {
        if listen.len() != shared.listeners.len() {
            return Err(format!(
                "{}: cluster.listen gives {} address(es), the shared config has {} [[listener]](s)",
                bootstrap.source.display(),
                listen.len(),
                shared.listeners.len()
            ));
        }
        for (l, a) in shared.listeners.iter_mut().zip(listen) {
            l.address = *a;
        }
    }
    Ok(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = endpoint("https://etcd-1.example:2379").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port),
            (true, "etcd-1.example", 2379)
        );
        let e = endpoint("http://[::1]:2379/").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "::1", 2379));
        assert_eq!(e.to_string(), "http://[::1]:2379");
        for bad in [
            "etcd:2379",
            "http://etcd",
            "http://:2379",
            "http://h:0",
            "http://h:x",
            "https://h/x:1",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_keys_stay_inside() {
        let base = Path::new("/etc/pc");
        assert_eq!(
            relative_key(base, Path::new("/etc/pc/certs/a.pem")).as_deref(),
            Some("certs/a.pem")
        );
        assert_eq!(
            relative_key(base, Path::new("/etc/pc/./a.pem")).as_deref(),
            Some("a.pem")
        );
        assert_eq!(relative_key(base, Path::new("/etc/pc/../x.pem")), None);
        assert_eq!(relative_key(base, Path::new("/etc/other/x.pem")), None);
        assert_eq!(relative_key(base, Path::new("/etc/pc")), None);
    }

    #[test]
    fn shared_config_refuses_node_sections_with_their_line() {
        let text =
            "[[route]]\npath = \"/\"\nbackends = [\"127.0.0.1:1\"]\n\n[server]\nworkers = 1\n";
        let e = parse_shared(Path::new("/x/shared.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "/x/shared.toml:5: server: [server] belongs in each node's bootstrap file"
            ),
            "{e}"
        );
    }

    #[test]
    fn bootstrap_holds_only_node_sections() {
        let dir = std::env::temp_dir().join(format!("pc-cluster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, "[cluster]\nstore = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nsnapshot = \"snap\"\nlisten = [\"127.0.0.1:9443\"]\n\n[[route]]\npath = \"/\"\n").unwrap();
        let e = load_node(&path).unwrap_err().to_string();
        assert!(e.contains(":7: route: unknown field"), "{e}");
        assert!(e.contains("only [server], [admin] and [cluster]"), "{e}");
        std::fs::write(&path, "[admin]\naddress = \"127.0.0.1:9901\"\n[cluster]\nstore = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nsnapshot = \"snap\"\n").unwrap();
        let NodeConfig::Cluster(b) = load_node(&path).unwrap() else {
            panic!("not a bootstrap")
        };
        assert_eq!(b.cluster.prefix, "/portcullis/");
        assert_eq!(b.cluster.snapshot, dir.join("snap"));
        assert_eq!(b.admin, Some("127.0.0.1:9901".parse().unwrap()));
        assert!(b.cluster.tls.is_none());
        std::fs::write(&path, "[cluster]\nstore = \"etcd\"\nendpoints = [\"https://127.0.0.1:2379\"]\nsnapshot = \"snap\"\n").unwrap();
        let e = load_node(&path).unwrap_err().to_string();
        assert!(e.contains("cluster.ca: missing: https:// endpoints"), "{e}");
        std::fs::write(&path, "[cluster]\nstore = \"zookeeper\"\nendpoints = [\"http://127.0.0.1:2379\"]\nsnapshot = \"snap\"\n").unwrap();
        let e = load_node(&path).unwrap_err().to_string();
        assert!(e.contains(":2: cluster.store"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
