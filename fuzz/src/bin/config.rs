//! Fuzz target: the config loader, `config::parse(source_name, text)`.
//!
//! Any text must give `Ok` or a `ConfigError` that names the file and a line
//! of it (`portcullis.toml:14: field: problem`), never a panic. An `Ok` config
//! must keep the promises the rest of the gateway relies on without checking
//! again (non-empty lists, indices in range, limits in their documented
//! bounds), and parsing the same text twice gives the same config.
//!
//! The loader checks that certificate, CA and CRL files are readable, so the
//! file is "read" from `fuzz/config-root/portcullis.toml`, beside placeholder
//! files with the names the example configs use. Inputs naming a path outside
//! that directory (absolute, or with a `..` component) are skipped: the
//! fuzzer must not open device files or whatever else lives on the machine.
//! Host names in backend addresses are never looked up in a fuzzing build
//! (`cfg(fuzzing)` in `config/addr.rs`): no DNS traffic leaves the process.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::{parse, Config, ConfigError, MtlsMode};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn source() -> &'static Path {
    static SOURCE: OnceLock<PathBuf> = OnceLock::new();
    SOURCE.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("config-root/portcullis.toml"))
}

fuzz_target!(|data: &[u8]| {
    // `config::load` refuses a file that is not UTF-8 before `parse` runs.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if names_outside_root(text) {
        return;
    }
    match parse(source(), text) {
        Ok(cfg) => {
            check_config(&cfg);
            let again = parse(source(), text).expect("the same text parsed twice");
            assert_eq!(again, cfg, "parsing is not deterministic");
        }
        Err(e) => check_error(&e, text),
    }
});

/// Whether any string in the TOML could become a path outside config-root.
/// Text that is not TOML is kept: the loader rejects it before any path is used.
fn names_outside_root(text: &str) -> bool {
    fn walk(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => {
                s.starts_with('/') || s.split(['/', '\\']).any(|part| part == "..")
            }
            toml::Value::Array(items) => items.iter().any(walk),
            toml::Value::Table(t) => t.values().any(walk),
            _ => false,
        }
    }
    text.parse::<toml::Table>()
        .is_ok_and(|t| t.values().any(walk))
}

fn check_error(e: &ConfigError, text: &str) {
    let ConfigError::Invalid {
        line,
        field,
        problem,
        ..
    } = e
    else {
        panic!("parse gave a read error: {e}");
    };
    let lines = text.lines().count().max(1);
    assert!(
        (1..=lines + 1).contains(line),
        "line {line} of {lines}: {e}"
    );
    assert!(!problem.is_empty(), "no problem stated: {e}");
    let shown = e.to_string();
    let expected = format!("{}:{line}: ", source().display());
    assert!(
        shown.starts_with(&expected),
        "{shown:?} does not start with file:line"
    );
    let _ = field;
}

fn check_config(cfg: &Config) {
    let sites = cfg.sites.len();
    assert!(!cfg.listeners.is_empty(), "no listener");
    for l in &cfg.listeners {
        assert!(!l.sites.is_empty(), "a listener with no site");
        assert!(l.sites.iter().all(|&s| s < sites));
        assert!(l.default_site.is_none_or(|s| s < sites));
    }
    for s in &cfg.sites {
        assert!(s.tls_versions.tls12 || s.tls_versions.tls13);
        assert!(
            s.mtls == MtlsMode::Off || !s.client_ca.is_empty(),
            "mTLS without a CA"
        );
    }
    for u in &cfg.upstreams {
        assert!(
            !u.addresses.is_empty(),
            "upstream {} has no address",
            u.name
        );
        if let Some(tls) = &u.tls {
            assert!(!tls.ca.is_empty());
        }
    }
    assert!(!cfg.routes.is_empty(), "no route");
    for r in &cfg.routes {
        assert!(r.upstream < cfg.upstreams.len());
        assert!(r.site.is_none_or(|s| s < sites));
        assert!(r.path.starts_with('/'), "route path {:?}", r.path);
        if let Some(methods) = &r.methods {
            assert!(methods.iter().all(|m| !m.is_empty()));
        }
    }
    let limits = &cfg.limits;
    assert!((1024..=1024 * 1024).contains(&limits.max_header_bytes));
    assert!((1..=512).contains(&limits.max_headers));
    let t = &cfg.timeouts;
    for d in [
        t.handshake,
        t.request_head,
        t.idle,
        t.backend_connect,
        t.backend_response,
    ] {
        assert!(!d.is_zero(), "a zero timeout");
    }
    assert!(!cfg.pool.idle_timeout.is_zero());
    if let portcullis::config::Workers::Count(n) = cfg.server.workers {
        assert!(n >= 1);
    }
}
