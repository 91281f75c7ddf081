//! End-to-end tests of `parse`/`load`: whole files in, `Config` or a located
//! error out.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

// Listener trust (trusted_proxies, proxy_protocol) and header-rule spellings.
mod trust;

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
                tls_versions: TlsVersions {
                    tls12: false,
                    tls13: true
                },
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
                tls_versions: TlsVersions::default(),
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
fn paths_table_and_route_path_normal_form() {
    let fx = Fixture::new();
    let with = |table: &str| format!("{table}\n{MINIMAL}");
    let c = fx
        .parse(&with(
            "[paths]\nescaped_slashes = \"decode\"\nmerge_slashes = false",
        ))
        .unwrap();
    assert_eq!(
        c.paths,
        PathOptions {
            escaped_slashes: EscapedSlashes::Decode,
            merge_slashes: false
        }
    );
    let c = fx
        .parse(&with("[paths]\nescaped_slashes = \"keep\""))
        .unwrap();
    assert_eq!(c.paths.escaped_slashes, EscapedSlashes::Keep);
    assert!(c.paths.merge_slashes);
    let (line, field, problem) = fx.error(&with("[paths]\nescaped_slashes = \"allow\""));
    assert_eq!((line, field.as_str()), (2, "paths.escaped_slashes"));
    assert!(problem.contains("reject"), "{problem}");
    let (line, field, _) = fx.error(&with("[paths]\nmerge_slashes = \"yes\""));
    assert_eq!((line, field.as_str()), (2, "paths.merge_slashes"));
    let (_, field, _) = fx.error(&with("[paths]\nnormalize = true"));
    assert_eq!(field, "paths.normalize");

    // Route paths and rewrite prefixes are compared with normalised request
    // paths, so they must be written in normal form.
    let route = |lines: &str| {
        format!(
            "{}[[route]]\n{lines}\nbackends = [\"127.0.0.1:9000\"]\n",
            &MINIMAL[..MINIMAL.find("[[route]]").unwrap()]
        )
    };
    for (lines, field, needle) in [
        ("path = \"/api/../x\"", "route[0].path", "write \"/x\""),
        ("path = \"/api//v1\"", "route[0].path", "write \"/api/v1\""),
        ("path = \"/%61pi\"", "route[0].path", "write \"/api\""),
        ("path = \"/api;v=1\"", "route[0].path", "letters, digits"),
        ("path = \"/a b\"", "route[0].path", "invalid character"),
        ("path = \"/a?b\"", "route[0].path", "invalid character"),
        ("path = \"/..\"", "route[0].path", "climbs above the root"),
        (
            "path = \"/api/\"\nrewrite_path_prefix = \"/v1/../x\"",
            "route[0].rewrite_path_prefix",
            "normal form",
        ),
        (
            "path = \"/api/\"\nrewrite_path_prefix = \"v1\"",
            "route[0].rewrite_path_prefix",
            "must start with",
        ),
    ] {
        let text = route(lines);
        let (line, got, problem) = fx.error(&text);
        assert_eq!(got, field, "{lines}: {problem}");
        assert!(problem.contains(needle), "{lines}: {problem}");
        let want_line = text
            .lines()
            .position(|l| l.starts_with(field.rsplit('.').next().unwrap()))
            .unwrap()
            + 1;
        assert_eq!(line, want_line, "{lines}");
    }
    let c = fx
        .parse(&route(
            "path = \"/caf%C3%A9/\"\nrewrite_path_prefix = \"/v2\"",
        ))
        .unwrap();
    assert_eq!(c.routes[0].path, "/caf%C3%A9/");
    assert_eq!(c.routes[0].rewrite_prefix.as_deref(), Some("/v2"));
}

#[test]
fn host_values_are_stored_in_the_normal_form_requests_use() {
    let fx = Fixture::new();
    let text = SITES
        .replacen(
            "[\"a.example\", \"*.a.example\"]",
            "[\"A.Example.\", \"*.A.example.\", \"[0:0::1]\"]",
            1,
        )
        .replacen("site = \"b\"\n", "site = \"b\"\nhost = \"B.EXAMPLE.\"\n", 1);
    let c = fx.parse(&text).unwrap();
    assert_eq!(
        c.sites[0].server_names,
        vec![
            HostMatch::Exact("a.example".into()),
            HostMatch::WildcardSuffix(".a.example".into()),
            HostMatch::Exact("[::1]".into()),
        ]
    );
    assert_eq!(c.routes[1].host, Some(HostMatch::Exact("b.example".into())));
    let text = SITES.replacen(
        "tls = true\n",
        "tls = true\nserver_name = \"App.Internal.\"\n",
        1,
    );
    let c = fx.parse(&text).unwrap();
    let tls = c.upstreams[0].tls.as_ref().unwrap();
    assert_eq!(tls.server_name, "app.internal");
    let text = SITES.replacen(
        "tls = true\n",
        "tls = true\nserver_name = \"*.internal\"\n",
        1,
    );
    let (_, field, problem) = fx.error(&text);
    assert_eq!(field, "upstream[0].server_name");
    assert!(problem.contains("wildcard"), "{problem}");
    // Two spellings of one name are one name.
    let dup = SITES
        .replacen("[\"b.example\"]", "[\"B.example.\"]", 1)
        .replacen(
            "[\"a.example\", \"*.a.example\"]",
            "[\"a.example\", \"b.example\"]",
            1,
        );
    let (_, field, problem) = fx.error(&dup);
    assert_eq!(field, "site[1].server_names[0]");
    assert!(problem.contains("already a server name"), "{problem}");
    for bad in ["a..example", "*.10.0.0.1", "[::1]:443", "010.0.0.1"] {
        let text = SITES.replacen("\"*.a.example\"", &format!("\"{bad}\""), 1);
        let (_, field, _) = fx.error(&text);
        assert_eq!(field, "site[0].server_names[1]", "{bad}");
    }
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
fn bad_socket_addresses() {
    let fx = Fixture::new();
    let ca = fx.dir.join("certs/ca.pem");
    let cert = fx.dir.join("certs/server.pem");
    let key = fx.dir.join("certs/server.key");
    // Absolute paths, so the relative source name below needs no directory.
    let text = format!(
        r#"[[listener]]
address = "127.0.0.1:8443"
certificate = "{}"
private_key = "{}"
client_ca = ["{}"]

[[route]]
path = "/a"
backends = ["127.0.0.1:9000"]

[[route]]
path = "/b"
backends = [
  "127.0.0.1:99999",
]
"#,
        cert.display(),
        key.display(),
        ca.display()
    );
    let err = parse(Path::new("portcullis.toml"), &text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "portcullis.toml:14: route[1].backends[0]: \"127.0.0.1:99999\" is not a socket address (port out of range)"
    );

    let (line, field, problem) = fx.error(&MINIMAL.replace("127.0.0.1:8443", "::1:8443"));
    assert_eq!((line, field.as_str()), (2, "listener[0].address"));
    assert!(problem.contains("brackets"), "{problem}");

    let (_, field, problem) = fx.error(&MINIMAL.replace("127.0.0.1:8443", "localhost:8443"));
    assert_eq!(field, "listener[0].address");
    assert!(problem.contains("IP address"), "{problem}");

    let (line, field, problem) = fx.error(&MINIMAL.replace("\"127.0.0.1:9000\"", "\"127.0.0.1\""));
    assert_eq!((line, field.as_str()), (9, "route[0].backends[0]"));
    assert!(problem.contains("missing port"), "{problem}");

    let twice = format!("{MINIMAL}[[listener]]\naddress = \"127.0.0.1:8443\"\n");
    let (line, field, problem) = fx.error(&twice);
    assert_eq!((line, field.as_str()), (11, "listener[1].address"));
    assert!(problem.contains("already used"), "{problem}");
}

#[test]
fn workers_must_be_positive() {
    let fx = Fixture::new();
    let (line, field, problem) = fx.error(&format!("[server]\nworkers = 0\n{MINIMAL}"));
    assert_eq!((line, field.as_str()), (2, "server.workers"));
    assert!(problem.contains("at least 1"), "{problem}");

    let (_, _, problem) = fx.error(&format!("[server]\nworkers = \"many\"\n{MINIMAL}"));
    assert!(
        problem.contains("expected \"auto\" or an integer"),
        "{problem}"
    );
    assert!(problem.contains("\"many\""), "{problem}");

    let config = fx
        .parse(&format!("[server]\nworkers = \"auto\"\n{MINIMAL}"))
        .unwrap();
    assert_eq!(config.server.workers, Workers::Auto);
}

#[test]
fn type_and_range_errors() {
    let fx = Fixture::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "[server]\naccess_log = \"yes\"\n",
            "server.access_log",
            "expected true or false, found a string",
        ),
        (
            "[server]\ndriver = \"kqueue\"\n",
            "server.driver",
            "\"kqueue\" is not one of \"auto\", \"io_uring\", \"epoll\"",
        ),
        (
            "[server]\nlog_format = 1\n",
            "server.log_format",
            "found an integer",
        ),
        (
            "[server]\nlog_level = \"foo=loud\"\n",
            "server.log_level",
            "is not a log filter",
        ),
        (
            "[server]\nlog_level = \" \"\n",
            "server.log_level",
            "must not be empty",
        ),
        (
            "[limits]\nmax_header_bytes = 100\n",
            "limits.max_header_bytes",
            "between 1KiB and 1MiB",
        ),
        (
            "[limits]\nmax_header_bytes = \"2MiB\"\n",
            "limits.max_header_bytes",
            "between 1KiB and 1MiB",
        ),
        (
            "[limits]\nmax_headers = 0\n",
            "limits.max_headers",
            "between 1 and 512",
        ),
        (
            "[limits]\nmax_body_bytes = \"10MB\"\n",
            "limits.max_body_bytes",
            "ambiguous",
        ),
        (
            "[limits]\nmax_body_bytes = -1\n",
            "limits.max_body_bytes",
            "negative",
        ),
        (
            "[timeouts]\nhandshake = \"0s\"\n",
            "timeouts.handshake",
            "greater than zero",
        ),
        (
            "[pool]\nidle_timeout = true\n",
            "pool.idle_timeout",
            "found a boolean",
        ),
        (
            "[pool]\nmax_idle_per_backend = -1\n",
            "pool.max_idle_per_backend",
            "negative",
        ),
        (
            "limits = 5\n",
            "limits",
            "expected a table, found an integer",
        ),
        (
            "[limits]\nmin_body_rate = 0\n",
            "limits.min_body_rate",
            "must be at least 1",
        ),
        (
            "[timeouts]\nsend = \"0s\"\n",
            "timeouts.send",
            "greater than zero",
        ),
        (
            "[server]\nmax_connections = 0\n",
            "server.max_connections",
            "expected \"auto\" or an integer >= 1",
        ),
        (
            "[server]\nmax_handshakes = 0\n",
            "server.max_handshakes",
            "must be at least 1",
        ),
    ];
    for (prefix, want_field, want_problem) in cases {
        let (line, field, problem) = fx.error(&format!("{prefix}{MINIMAL}"));
        assert_eq!(field, *want_field, "{prefix}");
        assert_eq!(line, prefix.lines().count(), "{prefix}");
        assert!(problem.contains(want_problem), "{prefix}: {problem}");
    }
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

const SITES: &str = r#"[[listener]]
address = "127.0.0.1:8443"

[[site]]
name = "a"
server_names = ["a.example", "*.a.example"]
certificate = "certs/server.pem"
private_key = "certs/server.key"
client_ca = ["certs/ca.pem"]
crl = ["certs/ca.pem"]
default = true

[[site]]
name = "b"
server_names = ["b.example"]
pkcs12 = "certs/server.pem"
pkcs12_password_env = "B_PASS"
mtls = "off"

[[upstream]]
name = "app"
addresses = ["localhost:9443"]
tls = true
ca = ["certs/ca.pem"]
pkcs12 = "certs/server.pem"
pkcs12_password = "secret"

[[route]]
site = "a"
path = "/api/"
upstream = "app"
require_client_cert = true
allow_san_uri = ["spiffe://example.org/*"]
forward_client_cert = ["xfcc", "rfc9440"]
client_cert_headers = { xfcc = "X-Client-Identity" }
set_headers = { Host = "api-mtls.virtual.example", "X-A" = "1" }
add_headers = { "X-B" = "2" }
remove_headers = ["X-Debug"]
strip_path_prefix = true

[[route]]
site = "b"
path = "/"
backends = ["127.0.0.1:9000"]
"#;

#[test]
fn sites_upstreams_and_route_policies() {
    let fx = Fixture::new();
    let c = fx.parse(SITES).unwrap();
    let certs = fx.dir.join("certs");
    assert_eq!(c.listeners[0].sites, vec![0, 1]);
    assert_eq!(c.listeners[0].default_site, Some(0));
    assert_eq!(c.sites[0].crls, vec![certs.join("ca.pem")]);
    assert_eq!(c.sites[1].mtls, MtlsMode::Off);
    assert!(c.sites[1].client_ca.is_empty());
    assert_eq!(
        c.sites[1].identity,
        IdentitySource::Pkcs12 {
            path: certs.join("server.pem"),
            password: PasswordSource::Env("B_PASS".into())
        }
    );
    let app = &c.upstreams[0];
    let tls = app.tls.as_ref().unwrap();
    assert_eq!(
        tls.server_name, "localhost",
        "defaults to the host written in addresses"
    );
    assert!(tls.verify_hostname);
    let api = &c.routes[0];
    assert_eq!((api.site, api.upstream), (Some(0), 0));
    assert_eq!(api.set_host.as_deref(), Some("api-mtls.virtual.example"));
    assert_eq!(api.headers.set, vec![("X-A".to_string(), "1".to_string())]);
    assert_eq!(api.headers.add, vec![("X-B".to_string(), "2".to_string())]);
    assert_eq!(api.headers.remove, vec!["x-debug".to_string()]);
    assert_eq!(api.rewrite_prefix.as_deref(), Some(""));
    assert!(api.client_policy.needs_certificate());
    assert_eq!(
        api.forward_identity.xfcc.as_deref(),
        Some("X-Client-Identity")
    );
    assert_eq!(
        api.forward_identity.client_cert.as_deref(),
        Some("Client-Cert")
    );
    // Renamed and default names are all stripped.
    assert!(c
        .identity_headers
        .contains(&"x-client-identity".to_string()));
    assert!(c
        .identity_headers
        .contains(&"x-forwarded-client-cert".to_string()));
    assert_eq!(c.upstreams[1].name, "route[1]");
}

#[test]
fn site_and_route_mistakes_name_line_and_field() {
    let fx = Fixture::new();
    let cases: [(&str, &str, &str, &str); 10] = [
        (
            "default = true\n\n[[site]]\nname = \"b\"",
            "default = true\n\n[[site]]\nname = \"b\"\ndefault = true",
            "site[1].default",
            "only one site",
        ),
        (
            "name = \"b\"",
            "name = \"a\"",
            "site[1].name",
            "already named",
        ),
        (
            "server_names = [\"b.example\"]",
            "server_names = [\"a.example\"]",
            "site[1].server_names[0]",
            "already a server name",
        ),
        (
            "pkcs12_password_env = \"B_PASS\"",
            "pkcs12_password_env = \"B_PASS\"\npkcs12_password = \"x\"",
            "site[1].pkcs12_password_env",
            "only one",
        ),
        (
            "site = \"b\"",
            "site = \"c\"",
            "route[1].site",
            "no site is named \"c\"",
        ),
        (
            "upstream = \"app\"",
            "upstream = \"nope\"",
            "route[0].upstream",
            "no [[upstream]]",
        ),
        (
            "remove_headers = [\"X-Debug\"]",
            "remove_headers = [\"Content-Length\"]",
            "route[0].remove_headers[0]",
            "managed by the gateway",
        ),
        (
            "path = \"/\"\nbackends",
            "path = \"/\"\nrequire_client_cert = true\nbackends",
            "route[1].require_client_cert",
            "mtls = \"off\"",
        ),
        (
            "strip_path_prefix = true",
            "strip_path_prefix = true\nrewrite_path_prefix = \"/v2\"",
            "route[0].rewrite_path_prefix",
            "either",
        ),
        (
            "client_cert_headers = { xfcc",
            "client_cert_headers = { subject",
            "route[0].client_cert_headers.subject",
            "does not send",
        ),
    ];
    for (from, to, field, needle) in cases {
        assert!(SITES.contains(from), "fixture lacks {from:?}");
        let text = SITES.replacen(from, to, 1);
        let (line, got_field, problem) = fx.error(&text);
        assert_eq!(got_field, field, "{to:?}: {problem}");
        assert!(problem.contains(needle), "{to:?}: {problem}");
        assert!(line > 1, "{to:?}: line {line}");
    }
    // A listener without its own certificate needs [[site]] tables.
    let no_sites = "[[listener]]\naddress = \"127.0.0.1:8443\"\n\n[[route]]\npath = \"/\"\nbackends = [\"127.0.0.1:9000\"]\n";
    let (_, field, problem) = fx.error(no_sites);
    assert_eq!(field, "listener[0].certificate");
    assert!(problem.contains("[[site]]"), "{problem}");
}

#[test]
fn body_deadlines_and_connection_caps() {
    let fx = Fixture::new();
    let text = format!(
        "[server]\nmax_connections = 300\nmax_handshakes = 20\n[limits]\nmin_body_rate = \"4KiB\"\n[timeouts]\nrequest_body = \"10s\"\n{MINIMAL}\n[[route]]\npath = \"/upload/\"\nbackends = [\"127.0.0.1:9000\"]\nrequest_body_timeout = \"10m\"\nmin_body_rate = 100\n"
    );
    let config = fx.parse(&text).unwrap();
    assert_eq!(config.server.max_connections, Some(300));
    assert_eq!(config.server.max_handshakes, 20);
    let inherited = crate::config::BodyDeadline {
        base: Duration::from_secs(10),
        min_rate: 4096,
    };
    assert_eq!(config.routes[0].body_deadline, inherited);
    let own = crate::config::BodyDeadline {
        base: Duration::from_secs(600),
        min_rate: 100,
    };
    assert_eq!(config.routes[1].body_deadline, own);
    let auto = fx
        .parse(&format!("[server]\nmax_connections = \"auto\"\n{MINIMAL}"))
        .unwrap();
    assert_eq!(auto.server.max_connections, None);
    let (line, field, problem) = fx.error(&format!(
        "{MINIMAL}\n[[route]]\npath = \"/x/\"\nbackends = [\"127.0.0.1:9000\"]\nmin_body_rate = 0\n"
    ));
    assert_eq!(field, "route[1].min_body_rate");
    assert_eq!(line, MINIMAL.lines().count() + 5);
    assert!(problem.contains("at least 1"), "{problem}");
}
