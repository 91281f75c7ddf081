//! Unit tests of the command line: durations, URLs, identities, HTTP/2 options.
use super::*;
use std::path::Path;

#[test]
fn durations() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    assert!(parse_duration("3x").is_err());
}

#[test]
fn urls() {
    let t = parse_url("https://127.0.0.1:8443/a/b?c=1").unwrap();
    assert_eq!(
        (t.host.as_str(), t.addr.port(), t.path.as_str()),
        ("127.0.0.1", 8443, "/a/b?c=1")
    );
    assert_eq!(t.authority, "127.0.0.1:8443");
    let t = parse_url("http://[::1]:8080").unwrap();
    assert_eq!(
        (t.host.as_str(), t.addr.port(), t.path.as_str()),
        ("::1", 8080, "/")
    );
    assert_eq!(t.authority, "[::1]:8080");
    let t = parse_url("https://127.0.0.1?x").unwrap();
    assert_eq!(
        (t.addr.port(), t.path.as_str(), t.authority.as_str()),
        (443, "/?x", "127.0.0.1")
    );
}

fn argv(rest: &[&str]) -> Vec<String> {
    std::iter::once("pcl-load")
        .chain(rest.iter().copied())
        .map(String::from)
        .collect()
}

#[test]
fn client_certs_dir_instead_of_one_certificate() {
    let run = |rest: &[&str]| match parse(&argv(rest)) {
        Ok(Parsed::Run(a)) => Ok(a.identity),
        Ok(Parsed::Help) => Err("help".to_string()),
        Err(e) => Err(e),
    };
    let url = "https://127.0.0.1:8443/";
    assert!(matches!(
        run(&["--insecure", "--client-certs", "clients", url]),
        Ok(Identity::Dir(d)) if d == Path::new("clients")
    ));
    let both = run(&["--insecure", "--client-certs", "d", "--cert", "c.pem", url]);
    assert!(both.unwrap_err().contains("give one"));
    let key = run(&["--insecure", "--client-certs", "d", "--key", "k", url]);
    assert!(key.unwrap_err().contains("--key is not used"));
}

#[test]
fn http2_options() {
    let url = "https://127.0.0.1:8443/";
    let run = |rest: &[&str]| match parse(&argv(rest)) {
        Ok(Parsed::Run(a)) => Ok(a),
        Ok(Parsed::Help) => Err("help".to_string()),
        Err(e) => Err(e),
    };
    let a = run(&["--insecure", "--http2", "-c", "8", "--streams", "32", url]).unwrap();
    assert!(a.http2);
    assert_eq!((a.connections, a.streams, a.h2_window), (8, 32, 4 << 20));
    let a = run(&["--insecure", url]).unwrap();
    assert!(!a.http2);
    assert_eq!(a.streams, 1);
    let e = run(&["--insecure", "--streams", "4", url]).unwrap_err();
    assert!(e.contains("need --http2"), "{e}");
    let e = run(&["--insecure", "--http2", "--new-conn", url]).unwrap_err();
    assert!(e.contains("--new-conn"), "{e}");
    let e = run(&["--insecure", "--http2", "--streams", "0", url]).unwrap_err();
    assert!(e.contains("at least 1"), "{e}");
    let e = run(&["--insecure", "--http2", "--h2-window", "100", url]).unwrap_err();
    assert!(e.contains("65535"), "{e}");
    let e = run(&["--insecure", "--http2", "-H", "Connection: close", url]).unwrap_err();
    assert!(e.contains("connection-specific"), "{e}");
    let e = run(&["--plain", "--http2", "http://127.0.0.1:8080/"]).unwrap_err();
    assert!(e.contains("h2c"), "{e}");
}

#[test]
fn p12_password() {
    assert_eq!(
        split_cert_password("a.p12:pw"),
        ("a.p12".into(), "pw".into())
    );
    assert_eq!(
        split_cert_password("a.p12:p:w"),
        ("a.p12".into(), "p:w".into())
    );
    assert_eq!(
        split_cert_password("c\\:x.p12:pw"),
        ("c:x.p12".into(), "pw".into())
    );
    assert_eq!(split_cert_password("a.p12"), ("a.p12".into(), "".into()));
}

#[test]
fn retry_reused_only_for_keep_alive_get_or_head() {
    let url = "https://127.0.0.1:8443/";
    let run = |rest: &[&str]| match parse(&argv(rest)) {
        Ok(Parsed::Run(a)) => Ok(a),
        Ok(Parsed::Help) => Err("help".to_string()),
        Err(e) => Err(e),
    };
    assert!(
        run(&["--insecure", "--retry-reused", url])
            .unwrap()
            .retry_reused
    );
    assert!(
        run(&["--insecure", "-m", "HEAD", "--retry-reused", url])
            .unwrap()
            .retry_reused
    );
    assert!(!run(&["--insecure", url]).unwrap().retry_reused);
    for refused in [
        &["--insecure", "--retry-reused", "-m", "POST", url][..],
        &["--insecure", "--retry-reused", "--new-conn", url],
        &["--insecure", "--retry-reused", "--http2", url],
    ] {
        let e = run(refused).unwrap_err();
        assert!(e.contains("GET or HEAD"), "{refused:?}: {e}");
    }
}
