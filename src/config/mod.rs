//! The TOML configuration file, read and validated into typed values.
//!
//! Every error names the file, the 1-based line and the field, as
//! `portcullis.toml:14: route[1].backends[0]: <problem>`, so an operator can
//! jump straight to it. Validation happens once at load; the rest of the
//! gateway trusts these types.
//!
//! Layout: `tree` turns TOML into a tree of values that know their line,
//! `build` walks it into [`Config`], `units` and `addr` parse the small
//! languages inside strings (durations, sizes, socket addresses).

mod addr;
mod build;
mod cluster;
mod field;
mod names;
mod route;
mod sites;
mod tree;
mod units;
mod url;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::http::path::{EscapedSlashes, PathOptions};
pub use crate::trusted_proxies::{Cidr, TrustedProxies};
pub use cluster::{
    apply_node, load_bootstrap, load_node, parse_shared, referenced_files, relative_key,
    ClusterSettings, ClusterTls, Endpoint, NodeBootstrap, NodeConfig,
};
pub use units::{parse_duration, parse_size};
pub use url::CrlUrl;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it came from (as given, not canonicalised).
    pub source: PathBuf,
    pub server: ServerSettings,
    /// At least one.
    pub listeners: Vec<ListenerConfig>,
    /// Every TLS identity served: the `[[site]]` tables in file order, then one
    /// implicit site per listener that carries its own certificate.
    pub sites: Vec<SiteConfig>,
    /// Named `[[upstream]]` tables, then one implicit upstream per route that
    /// lists plain `backends`.
    pub upstreams: Vec<UpstreamConfig>,
    /// Lowercased names of every header that carries client identity (the
    /// defaults and any configured name): stripped from every request.
    pub identity_headers: Vec<String>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub pool: PoolSettings,
    /// At least one, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[admin] address`: plain-HTTP /metrics and /healthz; None = no admin listener.
    pub admin: Option<std::net::SocketAddr>,
    /// `[paths]`: how request paths are normalised before routing.
    pub paths: PathOptions,
    /// `[tls]`: process-wide TLS settings (every site).
    pub tls: TlsSettings,
    /// `[http2]`: limits of HTTP/2 client connections.
    pub http2: Http2Settings,
    /// `[reload]`: what reloads the TLS material besides SIGHUP.
    pub reload: ReloadSettings,
    /// `[state] dir`: where the gateway keeps what it fetched (the last good
    /// copy of each `crl_urls` CRL). Required when any site has `crl_urls`.
    pub state_dir: Option<PathBuf>,
}

/// `[reload]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Reload (the whole generation, all or nothing) when a certificate,
    /// key, CA bundle, PKCS#12, password or CRL file the config names changes.
    pub watch_files: bool,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        ReloadSettings { watch_files: true }
    }
}

/// `[tls]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// Verified client chains each worker remembers, so a returning client
    /// skips path building (tls::client_verifier); 0 = off. A reload may change it.
    pub verified_chain_cache: usize,
    /// A certificate expiring within this is logged as a warning at start,
    /// at each reload and once a day; `certs status` and `doctor` flag it.
    pub warn_expiry: Duration,
    /// How often each `crl_urls` CRL is fetched again (sooner when its
    /// nextUpdate comes first).
    pub crl_refresh: Duration,
}

/// `[server]`: process-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub workers: Workers,
    pub driver: DriverChoice,
    pub log_format: LogFormat,
    /// A `tracing_subscriber::EnvFilter` directive, already checked to parse.
    pub log_level: String,
    pub access_log: bool,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    /// Where `run` writes its process id, for `portcullis reload`.
    pub pid_file: Option<PathBuf>,
    /// Where `run` serves its listening sockets to a new process taking over
    /// (`run --takeover`, SIGUSR2). None: no takeover is possible.
    pub upgrade_socket: Option<PathBuf>,
    /// Client connections one worker serves at once; past it new ones are
    /// closed at accept. None = derived from RLIMIT_NOFILE and the workers.
    pub max_connections: Option<usize>,
    /// TLS handshakes in progress on one worker; past it new connections
    /// are closed at accept (a handshake flood cannot starve served clients).
    pub max_handshakes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    /// One per available core.
    Auto,
    /// At least 1.
    Count(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One `[[listener]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// Indices into `Config::sites`: the listener's own implicit site, or
    /// every `[[site]]`. Non-empty.
    pub sites: Vec<usize>,
    /// The site for a ClientHello whose SNI names none of `sites` (or has no
    /// SNI); None = such handshakes are refused (`unrecognized_name`).
    pub default_site: Option<usize>,
    /// Hand the symmetric crypto to the kernel after the handshake.
    pub ktls: KtlsMode,
    /// Peers whose X-Forwarded-For (and PROXY header) is believed; empty =
    /// nobody, the gateway is the edge.
    pub trusted_proxies: TrustedProxies,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from
    /// one of `trusted_proxies` (non-empty when this is true).
    pub proxy_protocol: bool,
}

/// One TLS identity with its own client-certificate policy: a `[[site]]`
/// table, or the certificate fields of a `[[listener]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteConfig {
    /// `site.name`, or "listener[i]" for a listener's own.
    pub name: String,
    /// SNI / Host names this site answers; empty for a listener's own site
    /// (it answers every name).
    pub server_names: Vec<HostMatch>,
    pub identity: IdentitySource,
    /// CA bundles client certificates must chain to; empty only with `mtls = off`.
    pub client_ca: Vec<PathBuf>,
    pub mtls: MtlsMode,
    /// CRL files (PEM or DER); the client's end-entity certificate is checked.
    pub crls: Vec<PathBuf>,
    /// CRLs fetched over HTTP (`crl_urls`), checked like `crls` once fetched;
    /// the last good copy of each is kept in `[state] dir`.
    pub crl_urls: Vec<CrlUrl>,
    pub tls_versions: TlsVersions,
    /// ALPN protocols offered, in the server's order of preference
    /// (non-empty, no repeats); a client offering none of them is refused
    /// with `no_application_protocol`.
    pub alpn: Vec<AppProtocol>,
    /// `ocsp_stapling = "on"` and its options; None = off (the default).
    pub ocsp: Option<crate::ocsp::Want>,
}

/// An application protocol a site speaks over TLS (ALPN, RFC 7301).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProtocol {
    Http2,
    Http11,
}

impl AppProtocol {
    /// The ALPN identifier.
    pub fn id(self) -> &'static [u8] {
        match self {
            AppProtocol::Http2 => b"h2",
            AppProtocol::Http11 => b"http/1.1",
        }
    }

    /// The default: both, HTTP/2 preferred.
    pub fn default_alpn() -> Vec<AppProtocol> {
        vec![AppProtocol::Http2, AppProtocol::Http11]
    }
}

/// `[http2]`: how much one HTTP/2 client connection may ask of the gateway.
/// The header list limit is `limits.max_header_bytes` (HPACK-decoded size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Http2Settings {
    /// Streams open at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Bytes a client may send on one stream before we read them
    /// (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window: u32,
    /// Bytes a client may send on the whole connection before we read them.
    pub connection_window: u32,
    /// Response bytes buffered per stream for a client that is not reading.
    pub max_send_buffer: usize,
    /// Streams a client may reset before the gateway accepted them (rapid
    /// reset, CVE-2023-44487): past it the connection gets GOAWAY
    /// ENHANCE_YOUR_CALM.
    pub max_pending_reset_streams: usize,
    /// Streams the gateway may reset because of the client's protocol
    /// errors before it closes the connection.
    pub max_local_error_resets: usize,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: 100,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            max_send_buffer: 256 * 1024,
            max_pending_reset_streams: 20,
            max_local_error_resets: 1024,
        }
    }
}

/// How a site treats client certificates at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    /// A valid certificate is required to finish the handshake.
    Mandatory,
    /// A presented certificate must be valid; none is allowed (routes decide).
    Optional,
    /// No certificate is asked for.
    Off,
}

// The identity types are defined beside their loader; config only names files.
pub use crate::tls::material::{IdentitySource, PasswordSource};

/// A set of backend addresses and how to speak to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `upstream.name`, or "route[i]" for a route's plain `backends`.
    pub name: String,
    /// Non-empty; host names were resolved at load.
    pub addresses: Vec<SocketAddr>,
    /// None = plain HTTP.
    pub tls: Option<UpstreamTls>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA bundles the backend's certificate must chain to (non-empty).
    pub ca: Vec<PathBuf>,
    /// Sent as SNI and checked against the backend's certificate.
    pub server_name: String,
    /// False only with `insecure_skip_verify_hostname = true`.
    pub verify_hostname: bool,
    /// The certificate the gateway presents to the backend (mTLS).
    pub client_identity: Option<IdentitySource>,
}

/// Kernel TLS policy of a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KtlsMode {
    /// Use kernel TLS where this host's probe says it works; userspace otherwise (logged once).
    #[default]
    Auto,
    /// Require kernel TLS: refuse to start where the probe says no.
    On,
    /// Always userspace rustls.
    Off,
}

/// At least one of the two is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsVersions {
    pub tls12: bool,
    pub tls13: bool,
}

/// `[limits]`: request size limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// 1 KiB ..= 1 MiB.
    pub max_header_bytes: usize,
    /// 1 ..= 512.
    pub max_headers: usize,
    /// Default for routes that don't set their own.
    pub max_body_bytes: u64,
    /// Bytes per second a request body must keep up, past `timeouts.request_body`
    /// (each this many bytes received extend the body's deadline by a second).
    /// Default for routes that don't set their own.
    pub min_body_rate: u64,
}

/// How long a request body may take: `base`, plus a second for every
/// `min_rate` bytes received (a slow but steady upload keeps going; a client
/// trickling a byte a second is cut off after `base`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyDeadline {
    pub base: Duration,
    /// Bytes per second, at least 1.
    pub min_rate: u64,
}

/// `[timeouts]`: all greater than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Duration,
    pub request_head: Duration,
    pub idle: Duration,
    pub backend_connect: Duration,
    pub backend_response: Duration,
    /// The base time for a whole request body (extended by `min_body_rate`).
    pub request_body: Duration,
    /// Longest one write (to a client or a backend) may take; also the
    /// kernel's TCP_USER_TIMEOUT on client sockets.
    pub send: Duration,
}

/// `[pool]`: idle backend connections, kept per worker (core).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// 0 turns pooling off.
    pub max_idle_per_backend: usize,
    /// Greater than zero.
    pub idle_timeout: Duration,
}

/// One `[[route]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// None matches any host.
    pub host: Option<HostMatch>,
    /// Only for connections to this site (index into `Config::sites`); None = any.
    pub site: Option<usize>,
    /// In normal form (see `http::path::route_path_problem`); matches the
    /// request paths equal to it or below it on a segment boundary, with or
    /// without its trailing slash.
    pub path: String,
    /// Uppercased HTTP tokens, no duplicates; None matches any method.
    pub methods: Option<Vec<String>>,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Host header to send to the backend instead of the client's.
    pub set_host: Option<String>,
    /// The route's own value, or `limits.max_body_bytes`.
    pub max_body_bytes: u64,
    /// The route's own values, or `timeouts.request_body` and `limits.min_body_rate`.
    pub body_deadline: BodyDeadline,
    pub client_policy: ClientPolicy,
    pub forward_identity: IdentityForwarding,
    pub headers: HeaderRules,
    /// Replaces the matched `path` prefix in the (normalised) path sent to
    /// the backend; "" for `strip_path_prefix`. In normal form.
    pub rewrite_prefix: Option<String>,
}

/// Who may use a route, judged on the verified client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientPolicy {
    /// 401 when the connection has no client certificate.
    pub require_client_cert: bool,
    /// 403 when the certificate matches none of these (empty = anyone).
    pub allow: crate::identity::Allowlist,
}

impl ClientPolicy {
    /// Whether the route needs a certificate at all (an allowlist implies it).
    pub fn needs_certificate(&self) -> bool {
        self.require_client_cert || !self.allow.is_empty()
    }
}

/// Which client-identity headers go to the backend, by header name (None = not sent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityForwarding {
    /// URL-escaped PEM, as nginx's `$ssl_client_escaped_cert`.
    pub escaped_pem: Option<String>,
    /// RFC 9440 `Client-Cert`.
    pub client_cert: Option<String>,
    /// RFC 9440 `Client-Cert-Chain`.
    pub client_cert_chain: Option<String>,
    /// Envoy's `X-Forwarded-Client-Cert`.
    pub xfcc: Option<String>,
    pub subject: Option<String>,
    pub fingerprint: Option<String>,
}

impl IdentityForwarding {
    pub fn is_empty(&self) -> bool {
        self == &IdentityForwarding::default()
    }
}

/// Request header edits, applied after the gateway's own (Host, X-Forwarded-*).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// Replace: any header of that name from the client is dropped first.
    pub set: Vec<(String, String)>,
    /// Append, keeping what the client sent.
    pub add: Vec<(String, String)>,
    /// Lowercased names to drop.
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// A host in the normal form of `http::host` (lower case, no trailing
    /// dot, IPv6 as `[::1]`), so it compares equal to normalised SNI and Host.
    Exact(String),
    /// From "*.example.com": holds ".example.com", normalised. Matches any
    /// depth of subdomain ("a.b.example.com"), but not "example.com" itself.
    WildcardSuffix(String),
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(name) => f.write_str(name),
            HostMatch::WildcardSuffix(suffix) => write!(f, "*{suffix}"),
        }
    }
}

impl HostMatch {
    /// `host` must be in the normal form of `http::host::normalize_host`.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(exact) => host == exact,
            HostMatch::WildcardSuffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates `text` as if read from `source_name`: errors name it,
/// and relative paths in it are resolved against its parent directory.
pub fn parse(source_name: &Path, text: &str) -> Result<Config, ConfigError> {
    let invalid = |line, field, problem| ConfigError::Invalid {
        path: source_name.to_path_buf(),
        line,
        field,
        problem,
    };
    let root = tree::parse(text).map_err(|e| invalid(e.line, e.field, e.problem))?;
    let base_dir = source_name.parent().unwrap_or(Path::new(""));
    build::build(root, source_name, base_dir).map_err(|p| invalid(p.line, p.field, p.problem))
}

#[non_exhaustive]
#[derive(Debug)]
pub enum ConfigError {
    /// The file itself could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but something in it is wrong.
    Invalid {
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// Dotted path such as `route[2].methods[1]`.
        field: String,
        problem: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            ConfigError::Invalid {
                path,
                line,
                field,
                problem,
            } => write!(f, "{}:{line}: {field}: {problem}", path.display()),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}

// Defaults, public so that running without a config file (dev mode) uses the
// same values a config file would get.

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            workers: Workers::Auto,
            driver: DriverChoice::Auto,
            log_format: LogFormat::Text,
            log_level: "info".to_string(),
            access_log: false,
            drain_timeout: Duration::from_secs(10),
            pid_file: None,
            upgrade_socket: None,
            max_connections: None,
            max_handshakes: 512,
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            // ~370 KB per worker when full (tls::client_verifier::cache).
            verified_chain_cache: 4096,
            warn_expiry: Duration::from_secs(21 * 86_400),
            crl_refresh: Duration::from_secs(3600),
        }
    }
}

impl Default for TlsVersions {
    fn default() -> Self {
        TlsVersions {
            tls12: true,
            tls13: true,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            max_body_bytes: 10 * 1024 * 1024,
            min_body_rate: 1024,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: Duration::from_secs(10),
            request_head: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            backend_connect: Duration::from_secs(3),
            backend_response: Duration::from_secs(30),
            request_body: Duration::from_secs(30),
            send: Duration::from_secs(30),
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle_per_backend: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests;
