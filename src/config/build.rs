//! Walks the located tree into a [`Config`], applying defaults and checking
//! every value. Each check reports the field's dotted path and line.

use super::field::{Field, Problem};
use super::tree::{Node, Value};
use super::{
    addr, route, sites, AppProtocol, Cidr, Config, DriverChoice, EscapedSlashes, Http2Settings,
    KtlsMode, Limits, ListenerConfig, LogFormat, MtlsMode, PathOptions, PoolSettings,
    ReloadSettings, ServerSettings, SiteConfig, Timeouts, TlsSettings, TlsVersions, TrustedProxies,
    Workers,
};
use std::path::Path;

pub(super) fn build(root: Node, source: &Path, base_dir: &Path) -> Result<Config, Problem> {
    let root = Field::root(root);
    let mut top = root.table(&[
        "server", "listener", "site", "limits", "timeouts", "pool", "upstream", "route", "admin",
        "paths", "tls", "http2", "reload", "state",
    ])?;
    let server = match top.take("server") {
        Some(f) => server(f, base_dir)?,
        None => ServerSettings::default(),
    };
    // Before the sites: their crl_urls need somewhere to keep what is fetched.
    let state_dir = match top.take("state") {
        Some(f) => {
            let mut t = f.table(&["dir"])?;
            let d = t.require("dir")?;
            let written = d.string()?;
            if written.is_empty() {
                return Err(d.problem("empty directory name".to_string()));
            }
            Some(base_dir.join(written))
        }
        None => None,
    };
    let (mut sites, default_named) = match top.take_tables("site")? {
        Some(tables) => sites::sites(tables, base_dir, state_dir.is_some())?,
        None => (Vec::new(), None),
    };
    let named_sites = sites.len();
    let listener_tables = top.require_tables("listener")?;
    let mut listeners = Vec::with_capacity(listener_tables.len());
    for (i, table) in listener_tables.into_iter().enumerate() {
        let built = listener(
            table,
            i,
            base_dir,
            &listeners,
            &mut sites,
            (named_sites, default_named),
        )?;
        listeners.push(built);
    }
    let limits = match top.take("limits") {
        Some(f) => limits(f)?,
        None => Limits::default(),
    };
    let timeouts = match top.take("timeouts") {
        Some(f) => timeouts(f)?,
        None => Timeouts::default(),
    };
    let pool = match top.take("pool") {
        Some(f) => pool(f)?,
        None => PoolSettings::default(),
    };
    let admin = match top.take("admin") {
        Some(f) => {
            let mut t = f.table(&["address"])?;
            let a = t.require("address")?;
            let addr = addr::parse_listen_addr(a.string()?).map_err(|why| a.problem(why))?;
            Some(addr)
        }
        None => None,
    };
    let mut upstreams = match top.take_tables("upstream")? {
        Some(tables) => sites::upstreams(tables, base_dir)?,
        None => Vec::new(),
    };
    let paths = match top.take("paths") {
        Some(f) => paths(f)?,
        None => PathOptions::default(),
    };
    let tls = match top.take("tls") {
        Some(f) => tls(f)?,
        None => TlsSettings::default(),
    };
    let http2 = match top.take("http2") {
        Some(f) => http2(f)?,
        None => Http2Settings::default(),
    };
    let reload = match top.take("reload") {
        Some(f) => {
            let mut t = f.table(&["watch_files"])?;
            let mut r = ReloadSettings::default();
            if let Some(f) = t.take("watch_files") {
                r.watch_files = f.boolean()?;
            }
            r
        }
        None => ReloadSettings::default(),
    };
    let mut routes = Vec::new();
    for (i, table) in top.require_tables("route")?.into_iter().enumerate() {
        routes.push(route::route(
            table,
            i,
            &limits,
            &timeouts,
            &sites,
            &mut upstreams,
        )?);
    }
    let identity_headers = route::identity_header_names(&routes);
    Ok(Config {
        source: source.to_path_buf(),
        server,
        listeners,
        sites,
        upstreams,
        identity_headers,
        limits,
        timeouts,
        pool,
        routes,
        admin,
        paths,
        tls,
        http2,
        reload,
        state_dir,
    })
}

pub(super) fn server(field: Field, base_dir: &Path) -> Result<ServerSettings, Problem> {
    let mut t = field.table(&[
        "workers",
        "driver",
        "log_format",
        "log_level",
        "access_log",
        "drain_timeout",
        "pid_file",
        "upgrade_socket",
        "max_connections",
        "max_handshakes",
    ])?;
    let mut s = ServerSettings::default();
    if let Some(f) = t.take("workers") {
        s.workers = match &f.value {
            Value::String(v) if v == "auto" => Workers::Auto,
            Value::Integer(n) if *n < 1 => {
                return Err(f.problem(format!("{n} workers: must be at least 1 (or \"auto\")")))
            }
            Value::Integer(n) if *n > MAX_WORKERS => {
                return Err(f.problem(format!("{n} workers: at most {MAX_WORKERS}")))
            }
            Value::Integer(n) => Workers::Count(f.to_usize(*n)?),
            _ => {
                return Err(f.problem(format!(
                    "expected \"auto\" or an integer >= 1, found {}",
                    f.describe()
                )))
            }
        };
    }
    if let Some(f) = t.take("driver") {
        s.driver = match f.choice(&["auto", "io_uring", "epoll"])? {
            "io_uring" => DriverChoice::IoUring,
            "epoll" => DriverChoice::Epoll,
            _ => DriverChoice::Auto,
        };
    }
    if let Some(f) = t.take("log_format") {
        s.log_format = match f.choice(&["text", "json"])? {
            "json" => LogFormat::Json,
            _ => LogFormat::Text,
        };
    }
    if let Some(f) = t.take("log_level") {
        let directive = f.string()?;
        if directive.trim().is_empty() {
            return Err(f.problem(
                "must not be empty (e.g. \"info\" or \"portcullis=debug,warn\")".to_string(),
            ));
        }
        // Checked here, where a line number can be given; the logging setup
        // would otherwise fail with no hint of where the directive came from.
        tracing_subscriber::EnvFilter::builder()
            .parse(directive)
            .map_err(|e| f.problem(format!("\"{directive}\" is not a log filter: {e}")))?;
        s.log_level = directive.to_string();
    }
    if let Some(f) = t.take("access_log") {
        s.access_log = f.boolean()?;
    }
    if let Some(f) = t.take("drain_timeout") {
        // Zero is meaningful here: stop at once without draining.
        s.drain_timeout = f.duration()?;
    }
    if let Some(f) = t.take("pid_file") {
        let written = f.string()?;
        if written.is_empty() {
            return Err(f.problem("empty file name".to_string()));
        }
        s.pid_file = Some(base_dir.join(written));
    }
    if let Some(f) = t.take("upgrade_socket") {
        let written = f.string()?;
        if written.is_empty() {
            return Err(f.problem("empty file name".to_string()));
        }
        // sun_path holds 108 bytes with its terminating NUL.
        let path = base_dir.join(written);
        if path.as_os_str().len() > 107 {
            return Err(f.problem(format!(
                "{}: longer than a Unix socket path may be (107 bytes)",
                path.display()
            )));
        }
        s.upgrade_socket = Some(path);
    }
    if let Some(f) = t.take("max_connections") {
        s.max_connections = match &f.value {
            Value::String(v) if v == "auto" => None,
            Value::Integer(n) if *n >= 1 => Some(f.to_usize(*n)?),
            _ => {
                return Err(f.problem(format!(
                    "expected \"auto\" or an integer >= 1 (per worker), found {}",
                    f.describe()
                )))
            }
        };
    }
    if let Some(f) = t.take("max_handshakes") {
        let n = f.integer()?;
        if n < 1 {
            return Err(f.problem(format!("{n}: must be at least 1 (per worker)")));
        }
        s.max_handshakes = f.to_usize(n)?;
    }
    Ok(s)
}

/// Far more than any machine has cores: catches a stray extra digit.
const MAX_WORKERS: i64 = 1024;

/// A listener either carries its own certificate (one implicit site that
/// answers every name, as before sites existed) or serves every `[[site]]`.
fn listener(
    field: Field,
    index: usize,
    base_dir: &Path,
    earlier: &[ListenerConfig],
    sites: &mut Vec<SiteConfig>,
    (named_sites, default_named): (usize, Option<usize>),
) -> Result<ListenerConfig, Problem> {
    let known = [
        &[
            "address",
            "client_ca",
            "tls_versions",
            "ktls",
            "trusted_proxies",
            "proxy_protocol",
            "alpn",
        ][..],
        &sites::IDENTITY_FIELDS,
        &sites::OCSP_FIELDS,
    ]
    .concat();
    let mut t = field.table(&known)?;
    let address_field = t.require("address")?;
    let address = addr::parse_listen_addr(address_field.string()?)
        .map_err(|why| address_field.problem(why))?;
    // Port 0 asks for a fresh port each time, so it can repeat.
    if address.port() != 0 && earlier.iter().any(|l| l.address == address) {
        return Err(address_field.problem(format!("{address} is already used by another listener")));
    }
    let ktls = match t.take("ktls") {
        None => KtlsMode::Auto,
        Some(f) => match f.choice(&["auto", "on", "off"])? {
            "on" => KtlsMode::On,
            "off" => KtlsMode::Off,
            _ => KtlsMode::Auto,
        },
    };
    let trusted_proxies = match t.take("trusted_proxies") {
        None => TrustedProxies::default(),
        Some(f) => parse_trusted_proxies(f)?,
    };
    let proxy_protocol = match t.take("proxy_protocol") {
        None => false,
        Some(f) => {
            let on = f.boolean()?;
            if on && trusted_proxies.is_empty() {
                return Err(f.problem(
                    "needs trusted_proxies: the addresses of the balancers allowed to send a PROXY header (any other peer is refused)"
                        .to_string(),
                ));
            }
            on
        }
    };
    let has_own_identity = t.has("certificate") || t.has("pkcs12");
    if !has_own_identity {
        if let Some((key, line)) = t.first_key() {
            return Err(Problem {
                line,
                field: t.child_path(&key),
                problem: "only with the listener's own certificate (or pkcs12); with [[site]] tables put it in each site".to_string(),
            });
        }
        if named_sites == 0 {
            return Err(Problem {
                line: t.line,
                field: t.child_path("certificate"),
                problem: "missing: give the listener a certificate, or define [[site]] tables"
                    .to_string(),
            });
        }
        return Ok(ListenerConfig {
            address,
            sites: (0..named_sites).collect(),
            default_site: default_named,
            ktls,
            trusted_proxies,
            proxy_protocol,
        });
    }
    let identity = sites::identity_source(&mut t, base_dir)?;
    let client_ca = t
        .require("client_ca")?
        .readable_files(base_dir, "a list of CA bundle files")?;
    let tls_versions = match t.take("tls_versions") {
        None => TlsVersions::default(),
        Some(f) => sites::tls_versions(f)?,
    };
    let alpn = match t.take("alpn") {
        None => AppProtocol::default_alpn(),
        Some(f) => sites::alpn(f)?,
    };
    let ocsp = sites::ocsp_stapling(&mut t)?;
    sites.push(SiteConfig {
        name: format!("listener[{index}]"),
        server_names: Vec::new(),
        identity,
        client_ca,
        mtls: MtlsMode::Mandatory,
        crls: Vec::new(),
        crl_urls: Vec::new(),
        tls_versions,
        alpn,
        ocsp,
    });
    let own = sites.len() - 1;
    Ok(ListenerConfig {
        address,
        sites: vec![own],
        default_site: Some(own),
        ktls,
        trusted_proxies,
        proxy_protocol,
    })
}

/// `trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]`.
fn parse_trusted_proxies(field: Field) -> Result<TrustedProxies, Problem> {
    let mut networks = Vec::new();
    for item in field.non_empty_array("a list of networks such as \"10.0.0.0/8\"")? {
        let cidr = Cidr::parse(item.string()?).map_err(|why| item.problem(why))?;
        if networks.contains(&cidr) {
            return Err(item.problem(format!("{cidr} is listed twice")));
        }
        networks.push(cidr);
    }
    Ok(TrustedProxies::new(networks))
}

fn limits(field: Field) -> Result<Limits, Problem> {
    let mut t = field.table(&[
        "max_header_bytes",
        "max_headers",
        "max_body_bytes",
        "min_body_rate",
    ])?;
    let mut l = Limits::default();
    if let Some(f) = t.take("max_header_bytes") {
        let bytes = f.size()?;
        if !(1024..=1024 * 1024).contains(&bytes) {
            return Err(f.problem(format!("{bytes} bytes: must be between 1KiB and 1MiB")));
        }
        l.max_header_bytes = f.to_usize(bytes)?;
    }
    if let Some(f) = t.take("max_headers") {
        let n = f.integer()?;
        if !(1..=512).contains(&n) {
            return Err(f.problem(format!("{n}: must be between 1 and 512")));
        }
        l.max_headers = f.to_usize(n)?;
    }
    if let Some(f) = t.take("max_body_bytes") {
        l.max_body_bytes = f.size()?;
    }
    if let Some(f) = t.take("min_body_rate") {
        l.min_body_rate = f.rate()?;
    }
    Ok(l)
}

fn timeouts(field: Field) -> Result<Timeouts, Problem> {
    let mut t = field.table(&[
        "handshake",
        "request_head",
        "idle",
        "backend_connect",
        "backend_response",
        "request_body",
        "send",
    ])?;
    let mut d = Timeouts::default();
    let slots = [
        ("handshake", &mut d.handshake),
        ("request_head", &mut d.request_head),
        ("idle", &mut d.idle),
        ("backend_connect", &mut d.backend_connect),
        ("backend_response", &mut d.backend_response),
        ("request_body", &mut d.request_body),
        ("send", &mut d.send),
    ];
    for (key, slot) in slots {
        if let Some(f) = t.take(key) {
            *slot = f.positive_duration()?;
        }
    }
    Ok(d)
}

fn pool(field: Field) -> Result<PoolSettings, Problem> {
    let mut t = field.table(&["max_idle_per_backend", "idle_timeout"])?;
    let mut p = PoolSettings::default();
    if let Some(f) = t.take("max_idle_per_backend") {
        let n = f.integer()?;
        if n < 0 {
            return Err(f.problem(format!("{n}: must not be negative (0 turns pooling off)")));
        }
        p.max_idle_per_backend = f.to_usize(n)?;
    }
    if let Some(f) = t.take("idle_timeout") {
        p.idle_timeout = f.positive_duration()?;
    }
    Ok(p)
}

/// `[paths]`: the request-path normalisation choices (`http::path`).
fn paths(field: Field) -> Result<PathOptions, Problem> {
    let mut t = field.table(&["escaped_slashes", "merge_slashes"])?;
    let mut p = PathOptions::default();
    if let Some(f) = t.take("escaped_slashes") {
        p.escaped_slashes = match f.choice(&["reject", "keep", "decode"])? {
            "keep" => EscapedSlashes::Keep,
            "decode" => EscapedSlashes::Decode,
            _ => EscapedSlashes::Reject,
        };
    }
    if let Some(f) = t.take("merge_slashes") {
        p.merge_slashes = f.boolean()?;
    }
    Ok(p)
}

/// Far past any useful size (about 100 MB of cache per core): catches a stray digit.
const MAX_CHAIN_CACHE: i64 = 1 << 20;

/// Below this a CRL server would be polled in a loop.
const MIN_CRL_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// `[tls]`: settings for every site.
fn tls(field: Field) -> Result<TlsSettings, Problem> {
    let mut t = field.table(&["verified_chain_cache", "warn_expiry", "crl_refresh"])?;
    let mut s = TlsSettings::default();
    if let Some(f) = t.take("verified_chain_cache") {
        let n = f.integer()?;
        if !(0..=MAX_CHAIN_CACHE).contains(&n) {
            return Err(f.problem(format!(
                "{n}: must be between 0 (off) and {MAX_CHAIN_CACHE} entries per worker"
            )));
        }
        s.verified_chain_cache = f.to_usize(n)?;
    }
    if let Some(f) = t.take("warn_expiry") {
        // Zero is meaningful: warn only about certificates already expired.
        s.warn_expiry = f.duration()?;
    }
    if let Some(f) = t.take("crl_refresh") {
        let d = f.duration()?;
        if d < MIN_CRL_REFRESH {
            return Err(f.problem(format!(
                "{d:?}: at least 1s (each fetch of every crl_urls CRL)"
            )));
        }
        s.crl_refresh = d;
    }
    Ok(s)
}

/// `[http2]`: each value bounded so that a typo cannot hand one client the
/// gateway's memory (windows and buffers multiply by the streams).
fn http2(field: Field) -> Result<Http2Settings, Problem> {
    let mut t = field.table(&[
        "max_concurrent_streams",
        "stream_window",
        "connection_window",
        "max_send_buffer",
        "max_pending_reset_streams",
        "max_local_error_resets",
    ])?;
    let mut h = Http2Settings::default();
    // RFC 9113 section 6.9.2: a window is at least the protocol's initial
    // 65535 and at most 2^31-1; we cap it lower (16 MiB).
    const MIN_WINDOW: u64 = 65_535;
    const MAX_WINDOW: u64 = 16 * 1024 * 1024;
    if let Some(f) = t.take("max_concurrent_streams") {
        let n = f.integer()?;
        if !(1..=1000).contains(&n) {
            return Err(f.problem(format!("{n}: must be between 1 and 1000")));
        }
        h.max_concurrent_streams = n as u32;
    }
    let window = |f: &Field| -> Result<u32, Problem> {
        let bytes = f.size()?;
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&bytes) {
            return Err(f.problem(format!(
                "{bytes} bytes: must be between 65535 bytes and 16MiB"
            )));
        }
        Ok(bytes as u32)
    };
    if let Some(f) = t.take("stream_window") {
        h.stream_window = window(&f)?;
        // Unless told otherwise, the connection holds at least one full stream.
        h.connection_window = h.connection_window.max(h.stream_window);
    }
    if let Some(f) = t.take("connection_window") {
        h.connection_window = window(&f)?;
        if h.connection_window < h.stream_window {
            return Err(f.problem(format!(
                "{} bytes is less than stream_window ({} bytes): one stream could not use its window",
                h.connection_window, h.stream_window
            )));
        }
    }
    if let Some(f) = t.take("max_send_buffer") {
        let bytes = f.size()?;
        if !(16 * 1024..=16 * 1024 * 1024).contains(&bytes) {
            return Err(f.problem(format!("{bytes} bytes: must be between 16KiB and 16MiB")));
        }
        h.max_send_buffer = f.to_usize(bytes)?;
    }
    for (key, slot, max) in [
        (
            "max_pending_reset_streams",
            &mut h.max_pending_reset_streams,
            1000,
        ),
        (
            "max_local_error_resets",
            &mut h.max_local_error_resets,
            100_000,
        ),
    ] {
        if let Some(f) = t.take(key) {
            let n = f.integer()?;
            if !(1..=max).contains(&n) {
                return Err(f.problem(format!("{n}: must be between 1 and {max}")));
            }
            *slot = f.to_usize(n)?;
        }
    }
    Ok(h)
}
