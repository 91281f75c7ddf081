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
