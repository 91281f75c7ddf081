//! Values that are the wrong type or out of range, and addresses that do not
//! parse: each names its line and field.

use super::*;

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
            "[server]\nupgrade_socket = \"\"\n",
            "server.upgrade_socket",
            "empty file name",
        ),
        (
            &*Box::leak(
                format!("[server]\nupgrade_socket = \"/run/{}\"\n", "x".repeat(120))
                    .into_boxed_str(),
            ),
            "server.upgrade_socket",
            "longer than a Unix socket path may be",
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
        (
            "[http2]\nmax_concurrent_streams = 0\n",
            "http2.max_concurrent_streams",
            "between 1 and 1000",
        ),
        (
            "[http2]\nstream_window = 1000\n",
            "http2.stream_window",
            "between 65535 bytes and 16MiB",
        ),
        (
            "[http2]\nstream_window = \"1MiB\"\nconnection_window = \"512KiB\"\n",
            "http2.connection_window",
            "less than stream_window",
        ),
        (
            "[http2]\nmax_send_buffer = \"1GiB\"\n",
            "http2.max_send_buffer",
            "between 16KiB and 16MiB",
        ),
        (
            "[http2]\nmax_pending_reset_streams = 0\n",
            "http2.max_pending_reset_streams",
            "between 1 and 1000",
        ),
        ("[http2]\nmax_streams = 5\n", "http2.max_streams", "unknown"),
    ];
    for (prefix, want_field, want_problem) in cases {
        let (line, field, problem) = fx.error(&format!("{prefix}{MINIMAL}"));
        assert_eq!(field, *want_field, "{prefix}");
        assert_eq!(line, prefix.lines().count(), "{prefix}");
        assert!(problem.contains(want_problem), "{prefix}: {problem}");
    }
}

#[test]
fn tls_verified_chain_cache() {
    let fx = Fixture::new();
    let config = fx.parse(MINIMAL).unwrap();
    assert_eq!(config.tls.verified_chain_cache, 4096, "default");
    for n in [0, 1, 100_000] {
        let config = fx
            .parse(&format!("[tls]\nverified_chain_cache = {n}\n{MINIMAL}"))
            .unwrap();
        assert_eq!(config.tls.verified_chain_cache, n);
    }
    let (line, field, problem) =
        fx.error(&format!("{MINIMAL}\n[tls]\nverified_chain_cache = -1\n"));
    assert_eq!(
        (line, field.as_str()),
        (MINIMAL.lines().count() + 3, "tls.verified_chain_cache")
    );
    assert!(problem.contains("between 0 (off) and 1048576"), "{problem}");
    let (_, field, problem) =
        fx.error(&format!("[tls]\nverified_chain_cache = 2000000\n{MINIMAL}"));
    assert_eq!(field, "tls.verified_chain_cache");
    assert!(
        problem.contains("-1") || problem.contains("2000000"),
        "{problem}"
    );
    let (line, field, problem) =
        fx.error(&format!("[tls]\nverified_chain_cache = \"big\"\n{MINIMAL}"));
    assert_eq!((line, field.as_str()), (2, "tls.verified_chain_cache"));
    assert!(problem.contains("expected an integer"), "{problem}");
    let (line, field, problem) = fx.error(&format!("[tls]\nchain_cache = 1\n{MINIMAL}"));
    assert_eq!((line, field.as_str()), (2, "tls.chain_cache"));
    assert!(problem.contains("verified_chain_cache"), "{problem}");
}

#[test]
fn http2_settings_and_alpn() {
    let fx = Fixture::new();
    let c = fx
        .parse(&format!(
            "[http2]\nmax_concurrent_streams = 8\nstream_window = \"2MiB\"\nmax_send_buffer = \"64KiB\"\n{MINIMAL}"
        ))
        .expect("valid");
    assert_eq!(
        c.http2,
        Http2Settings {
            max_concurrent_streams: 8,
            stream_window: 2 * 1024 * 1024,
            connection_window: 2 * 1024 * 1024,
            max_send_buffer: 64 * 1024,
            ..Http2Settings::default()
        }
    );
    assert_eq!(c.sites[0].alpn, [AppProtocol::Http2, AppProtocol::Http11]);
    let only = MINIMAL.replace(
        "client_ca = [\"certs/ca.pem\"]\n",
        "client_ca = [\"certs/ca.pem\"]\nalpn = [\"http/1.1\"]\n",
    );
    assert_eq!(
        fx.parse(&only).expect("valid").sites[0].alpn,
        [AppProtocol::Http11]
    );
    for (alpn, want) in [
        ("[\"h3\"]", "\"h3\" is not one of \"h2\", \"http/1.1\""),
        ("[]", "a list of protocols"),
        ("[\"h2\", \"h2\"]", "\"h2\" is listed twice"),
    ] {
        let text = MINIMAL.replace(
            "client_ca = [\"certs/ca.pem\"]\n",
            &format!("client_ca = [\"certs/ca.pem\"]\nalpn = {alpn}\n"),
        );
        let (line, field, problem) = fx.error(&text);
        assert_eq!(line, 6, "{alpn}");
        assert!(field.starts_with("listener[0].alpn"), "{alpn}: {field}");
        assert!(problem.contains(want), "{alpn}: {problem}");
    }
}
