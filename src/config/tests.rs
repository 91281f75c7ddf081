//! End-to-end tests of `parse`/`load`: whole files in, `Config` or a located
//! error out.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

// Listener trust (trusted_proxies, proxy_protocol) and header-rule spellings.
mod names;
mod sites;
mod trust;
mod values;
// [tls] warn_expiry and crl_refresh, [reload], [state], crl_urls.
mod lifecycle;

/// A fresh directory holding placeholder PEM files (their contents are not
/// parsed by this module), removed on drop.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-config-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        for name in ["ca.pem", "other-ca.pem", "server.pem", "server.key"] {
            std::fs::write(dir.join("certs").join(name), "placeholder\n").unwrap();
        }
        Fixture { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("portcullis.toml")
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        parse(&self.config_path(), text)
    }

    /// The error's "{line}: {field}: {problem}", without the file part.
    fn error(&self, text: &str) -> (usize, String, String) {
        match self.parse(text) {
            Err(ConfigError::Invalid {
                path,
                line,
                field,
                problem,
            }) => {
                assert_eq!(path, self.config_path());
                (line, field, problem)
            }
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MINIMAL: &str = r#"[[listener]]
address = "127.0.0.1:8443"
certificate = "certs/server.pem"
private_key = "certs/server.key"
client_ca = ["certs/ca.pem"]

[[route]]
path = "/"
backends = ["127.0.0.1:9000"]
"#;

#[test]
fn full_config() {
    let fx = Fixture::new();
    let text = r#"
[server]
workers = 4
driver = "io_uring"
log_format = "json"
log_level = "portcullis=debug,info"
access_log = true
drain_timeout = "2s"
upgrade_socket = "upgrade.sock"

[[listener]]
address = "[::1]:8443"
certificate = "certs/server.pem"
private_key = "certs/server.key"
client_ca = ["certs/ca.pem", "certs/other-ca.pem"]
tls_versions = ["1.3"]

[[listener]]
address = "127.0.0.1:9443"
certificate = "certs/server.pem"
private_key = "certs/server.key"
client_ca = ["certs/ca.pem"]

[limits]
max_header_bytes = "32KiB"
max_headers = 64
max_body_bytes = 2048
min_body_rate = "2KiB"

[timeouts]
handshake = "5s"
request_head = "4s"
idle = "2m"
backend_connect = "250ms"
backend_response = "1m30s"
request_body = "45s"
send = "20s"

[pool]
max_idle_per_backend = 8
idle_timeout = "45s"

[[route]]
host = "API.example.com"
path = "/v1/"
methods = ["get", "POST"]
backends = ["127.0.0.1:9000", "[::1]:9001"]
set_host = "api-mtls.virtual.example"
max_body_bytes = "1MiB"

[[route]]
host = "*.example.com"
path = "/"
methods = ["ANY"]
backends = ["localhost:9002"]
"#;
    let config = fx.parse(text).unwrap();
    let certs = fx.dir.join("certs");
    assert_eq!(config.source, fx.config_path());
    assert_eq!(
        config.server,
        ServerSettings {
            workers: Workers::Count(4),
            driver: DriverChoice::IoUring,
            log_format: LogFormat::Json,
            log_level: "portcullis=debug,info".into(),
            access_log: true,
            drain_timeout: Duration::from_secs(2),
            pid_file: None,
            upgrade_socket: Some(fx.dir.join("upgrade.sock")),
            max_connections: None,
            max_handshakes: 512,
        }
    );
    assert_eq!(
        config.listeners,
        vec![
            ListenerConfig {
                address: "[::1]:8443".parse().unwrap(),
                sites: vec![0],
                default_site: Some(0),
                ktls: KtlsMode::Auto,
                trusted_proxies: TrustedProxies::default(),
                proxy_protocol: false,
            },
            ListenerConfig {
                address: "127.0.0.1:9443".parse().unwrap(),
                sites: vec![1],
                default_site: Some(1),
                ktls: KtlsMode::Auto,
                trusted_proxies: TrustedProxies::default(),
                proxy_protocol: false,
            },
        ]
    );
    // A listener with its own certificate is one implicit site that answers every name.
    assert_eq!(
        config.sites,
        vec![
            SiteConfig {
                name: "listener[0]".into(),
                server_names: Vec::new(),
                identity: IdentitySource::Pem {
                    certificate: certs.join("server.pem"),
                    private_key: certs.join("server.key"),
                },
                client_ca: vec![certs.join("ca.pem"), certs.join("other-ca.pem")],
                mtls: MtlsMode::Mandatory,
                crls: Vec::new(),
                crl_urls: Vec::new(),
                tls_versions: TlsVersions {
                    tls12: false,
                    tls13: true
                },
                alpn: AppProtocol::default_alpn(),
                ocsp: None,
            },
            SiteConfig {
                name: "listener[1]".into(),
                server_names: Vec::new(),
                identity: IdentitySource::Pem {
                    certificate: certs.join("server.pem"),
                    private_key: certs.join("server.key"),
                },
                client_ca: vec![certs.join("ca.pem")],
                mtls: MtlsMode::Mandatory,
                crls: Vec::new(),
                crl_urls: Vec::new(),
                tls_versions: TlsVersions::default(),
                alpn: AppProtocol::default_alpn(),
                ocsp: None,
            },
        ]
    );
    assert_eq!(
        config.limits,
        Limits {
            max_header_bytes: 32 * 1024,
            max_headers: 64,
            max_body_bytes: 2048,
            min_body_rate: 2048,
        }
    );
    assert_eq!(
        config.timeouts,
        Timeouts {
            handshake: Duration::from_secs(5),
            request_head: Duration::from_secs(4),
            idle: Duration::from_secs(120),
            backend_connect: Duration::from_millis(250),
            backend_response: Duration::from_secs(90),
            request_body: Duration::from_secs(45),
            send: Duration::from_secs(20),
        }
    );
    assert_eq!(
        config.pool,
        PoolSettings {
            max_idle_per_backend: 8,
            idle_timeout: Duration::from_secs(45)
        }
    );
    assert_eq!(config.routes.len(), 2);
    let api = &config.routes[0];
    assert_eq!(api.host, Some(HostMatch::Exact("api.example.com".into())));
    assert_eq!(api.path, "/v1/");
    assert_eq!(
        api.methods,
        Some(vec!["GET".to_string(), "POST".to_string()])
    );
    assert_eq!(
        config.upstreams[api.upstream].addresses,
        vec![
            "127.0.0.1:9000".parse::<SocketAddr>().unwrap(),
            "[::1]:9001".parse().unwrap()
        ]
    );
    assert_eq!(api.set_host.as_deref(), Some("api-mtls.virtual.example"));
    assert_eq!(api.max_body_bytes, 1024 * 1024);
    let wild = &config.routes[1];
    assert_eq!(
        wild.host,
        Some(HostMatch::WildcardSuffix(".example.com".into()))
    );
    assert_eq!(wild.methods, None);
    let wild_backends = &config.upstreams[wild.upstream].addresses;
    assert_eq!(wild_backends.len(), 1);
    assert!(wild_backends[0].ip().is_loopback());
    assert_eq!(config.upstreams[wild.upstream].name, "route[1]");
    assert_eq!(wild.set_host, None);
    // No route value: the [limits] default.
    assert_eq!(wild.max_body_bytes, 2048);
}

#[test]
fn defaults() {
    let fx = Fixture::new();
    let config = fx.parse(MINIMAL).unwrap();
    assert_eq!(config.server, ServerSettings::default());
    assert_eq!(config.server.workers, Workers::Auto);
    assert_eq!(config.server.log_level, "info");
    assert_eq!(config.server.drain_timeout, Duration::from_secs(10));
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.max_header_bytes, 16384);
    assert_eq!(config.limits.max_headers, 100);
    assert_eq!(config.limits.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.timeouts.idle, Duration::from_secs(60));
    assert_eq!(config.timeouts.backend_connect, Duration::from_secs(3));
    assert_eq!(config.pool, PoolSettings::default());
    assert_eq!(config.pool.max_idle_per_backend, 64);
    assert_eq!(
        config.sites[0].tls_versions,
        TlsVersions {
            tls12: true,
            tls13: true
        }
    );
    let route = &config.routes[0];
    assert_eq!(
        (
            route.host.clone(),
            route.methods.clone(),
            route.set_host.clone()
        ),
        (None, None, None)
    );
    assert_eq!(route.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(config.paths, PathOptions::default());
    assert_eq!(config.paths.escaped_slashes, EscapedSlashes::Reject);
    assert!(config.paths.merge_slashes);
}

#[test]
fn bad_duration_names_line_and_field() {
    let fx = Fixture::new();
    let text = format!("{MINIMAL}\n[timeouts]\nhandshake = \"5s\"\nidle = \"ten seconds\"\n");
    let line = text.lines().position(|l| l.starts_with("idle")).unwrap() + 1;
    let (got_line, field, problem) = fx.error(&text);
    assert_eq!((got_line, field.as_str()), (line, "timeouts.idle"));
    assert!(
        problem.contains("\"ten seconds\" is not a duration"),
        "{problem}"
    );

    // The example from the docs: a bad duration on line 7.
    let text = format!(
        "# Portcullis\n[timeouts]\nhandshake = \"5s\"\nrequest_head = \"5s\"\n\n# idle connections\nidle = 60\n{MINIMAL}"
    );
    let err = fx.parse(&text).unwrap_err().to_string();
    assert!(err.contains(":7: timeouts.idle: 60 has no unit"), "{err}");
}

#[test]
fn unknown_field_is_named() {
    let fx = Fixture::new();
    let text = MINIMAL.replace("private_key =", "privat_key =");
    let (line, field, problem) = fx.error(&text);
    assert_eq!((line, field.as_str()), (4, "listener[0].privat_key"));
    assert!(problem.starts_with("unknown field"), "{problem}");
    assert!(problem.contains("private_key"), "{problem}");

    let (line, field, _) = fx.error(&format!("{MINIMAL}[limits]\nmax_header = 1\n"));
    assert_eq!((line, field.as_str()), (11, "limits.max_header"));

    let (line, field, _) = fx.error(&format!("colour = \"red\"\n{MINIMAL}"));
    assert_eq!((line, field.as_str()), (1, "colour"));

    let (line, field, _) = fx.error(&format!("{MINIMAL}[[listeners]]\n"));
    assert_eq!((line, field.as_str()), (10, "listeners"));
}

#[test]
fn missing_field_reports_its_table_header() {
    let fx = Fixture::new();
    let text = format!("{MINIMAL}\n[[route]]\nmethods = [\"GET\"]\npath = \"/x\"\n");
    let (line, field, problem) = fx.error(&text);
    assert_eq!((line, field.as_str()), (11, "route[1].backends"));
    assert!(problem.contains("required"), "{problem}");

    let (line, field, _) = fx.error(&MINIMAL.replace("address = \"127.0.0.1:8443\"\n", ""));
    assert_eq!((line, field.as_str()), (1, "listener[0].address"));

    let no_routes = &MINIMAL[..MINIMAL.find("[[route]]").unwrap()];
    let (line, field, problem) = fx.error(no_routes);
    assert_eq!((line, field.as_str()), (1, "route"));
    assert!(problem.contains("[[route]]"), "{problem}");
}

#[test]
fn duplicate_key_uses_toml_line() {
    let fx = Fixture::new();
    let text = MINIMAL.replace("path = \"/\"\n", "path = \"/\"\npath = \"/again\"\n");
    let (line, field, problem) = fx.error(&text);
    assert_eq!((line, field.as_str()), (9, "route[0].path"));
    assert!(problem.contains("duplicate key"), "{problem}");

    let (line, field, _) = fx.error(&format!("[server]\nworkers = 1\n{MINIMAL}[server]\n"));
    assert_eq!((line, field.as_str()), (12, "server"));
}

#[test]
fn route_checks() {
    let fx = Fixture::new();
    let route = |body: &str| {
        format!(
            "{}[[route]]\n{body}",
            &MINIMAL[..MINIMAL.find("[[route]]").unwrap()]
        )
    };
    let backends = "backends = [\"127.0.0.1:9000\"]\n";

    let (line, field, problem) = fx.error(&route(&format!("path = \"v1\"\n{backends}")));
    assert_eq!((line, field.as_str()), (8, "route[0].path"));
    assert!(problem.contains("must start with \"/\""), "{problem}");

    let (line, field, problem) = fx.error(&route(&format!(
        "path = \"/\"\nmethods = [\"GET\", \"PO ST\"]\n{backends}"
    )));
    assert_eq!((line, field.as_str()), (9, "route[0].methods[1]"));
    assert!(problem.contains("not an HTTP method"), "{problem}");

    let (_, field, problem) = fx.error(&route(&format!(
        "path = \"/\"\nmethods = [\"GET\", \"ANY\"]\n{backends}"
    )));
    assert_eq!(field, "route[0].methods[1]");
    assert!(problem.contains("ANY"), "{problem}");

    let (_, field, problem) = fx.error(&route(&format!("path = \"/\"\nmethods = []\n{backends}")));
    assert_eq!(field, "route[0].methods");
    assert!(problem.contains("empty"), "{problem}");

    let (_, field, _) = fx.error(&route(&format!(
        "path = \"/\"\nhost = \"a.com:443\"\n{backends}"
    )));
    assert_eq!(field, "route[0].host");

    let (_, field, _) = fx.error(&route(&format!(
        "path = \"/\"\nset_host = \"a b\"\n{backends}"
    )));
    assert_eq!(field, "route[0].set_host");

    let (_, field, problem) = fx.error(&route("path = \"/\"\nbackends = []\n"));
    assert_eq!(field, "route[0].backends");
    assert!(problem.contains("empty"), "{problem}");

    let (_, field, problem) = fx.error(&route("path = \"/\"\nbackends = \"127.0.0.1:1\"\n"));
    assert_eq!(field, "route[0].backends");
    assert!(problem.contains("found a string"), "{problem}");

    let (line, field, problem) =
        fx.error(&format!("{MINIMAL}[route]\npath = \"/\"\n").replace("[[route]]", "[route_]"));
    assert_eq!((line, field.as_str()), (7, "route_"));
    assert!(problem.contains("unknown field"), "{problem}");

    let single = MINIMAL.replace("[[route]]", "[route]");
    let (_, field, problem) = fx.error(&single);
    assert_eq!(field, "route");
    assert!(problem.contains("[[route]]"), "{problem}");
}

#[test]
fn files_must_exist_and_are_relative_to_the_config() {
    let fx = Fixture::new();
    let config = fx.parse(MINIMAL).unwrap();
    assert_eq!(
        config.sites[0].identity,
        IdentitySource::Pem {
            certificate: fx.dir.join("certs/server.pem"),
            private_key: fx.dir.join("certs/server.key"),
        }
    );

    let text = MINIMAL.replace("certs/ca.pem", "certs/missing.pem");
    let (line, field, problem) = fx.error(&text);
    assert_eq!((line, field.as_str()), (5, "listener[0].client_ca[0]"));
    let missing = fx.dir.join("certs/missing.pem");
    assert!(
        problem.contains(&missing.display().to_string()),
        "{problem}"
    );
    assert!(problem.contains("No such file"), "{problem}");

    let (line, field, problem) = fx.error(&MINIMAL.replace("certs/server.key", "certs"));
    assert_eq!((line, field.as_str()), (4, "listener[0].private_key"));
    assert!(problem.contains("not a regular file"), "{problem}");

    let (_, field, problem) = fx.error(&MINIMAL.replace("[\"certs/ca.pem\"]", "[]"));
    assert_eq!(field, "listener[0].client_ca");
    assert!(problem.contains("empty"), "{problem}");
}

#[test]
fn dotted_keys_and_inline_tables_are_toml_too() {
    let fx = Fixture::new();
    let text = format!("server.workers = 2\ntimeouts = {{ idle = \"5s\" }}\n{MINIMAL}");
    let config = fx.parse(&text).unwrap();
    assert_eq!(config.server.workers, Workers::Count(2));
    assert_eq!(config.timeouts.idle, Duration::from_secs(5));

    let (line, field, _) = fx.error(&format!("server.threads = 2\n{MINIMAL}"));
    assert_eq!((line, field.as_str()), (1, "server.threads"));
}

#[test]
fn load_reads_the_file_and_reports_read_errors() {
    let fx = Fixture::new();
    std::fs::write(fx.config_path(), MINIMAL).unwrap();
    let config = load(&fx.config_path()).unwrap();
    assert_eq!(config.source, fx.config_path());

    let missing = fx.dir.join("nope.toml");
    let err = load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{text}"
    );
}

#[test]
fn error_display_format() {
    let err = ConfigError::Invalid {
        path: PathBuf::from("portcullis.toml"),
        line: 7,
        field: "timeouts.idle".into(),
        problem: "bad".into(),
    };
    assert_eq!(err.to_string(), "portcullis.toml:7: timeouts.idle: bad");
}

#[test]
fn host_matching() {
    let exact = HostMatch::Exact("api.example.com".into());
    assert!(exact.matches("api.example.com"));
    assert!(!exact.matches("www.api.example.com"));
    let wild = HostMatch::WildcardSuffix(".example.com".into());
    assert!(wild.matches("a.example.com"));
    assert!(wild.matches("a.b.example.com"));
    assert!(!wild.matches("example.com"));
    assert!(!wild.matches(".example.com"));
    assert!(!wild.matches("badexample.com"));
}
