//! The certificate-lifecycle settings: `[tls] warn_expiry` and
//! `crl_refresh`, `[reload] watch_files`, `[state] dir` and a site's
//! `crl_urls`; defaults, and errors that name line and field.

use super::sites::SITES;
use super::*;

#[test]
fn lifecycle_defaults() {
    let fx = Fixture::new();
    let c = fx.parse(MINIMAL).unwrap();
    assert_eq!(c.tls.warn_expiry, Duration::from_secs(21 * 86_400));
    assert_eq!(c.tls.crl_refresh, Duration::from_secs(3600));
    assert!(c.reload.watch_files, "watching is on unless turned off");
    assert_eq!(c.state_dir, None);
    assert!(c.sites[0].crl_urls.is_empty());
}

#[test]
fn lifecycle_values() {
    let fx = Fixture::new();
    let text = format!(
        "{MINIMAL}\n[tls]\nwarn_expiry = \"30d\"\ncrl_refresh = \"90s\"\n\n[reload]\nwatch_files = false\n\n[state]\ndir = \"state\"\n"
    );
    let c = fx.parse(&text).unwrap();
    assert_eq!(c.tls.warn_expiry, Duration::from_secs(30 * 86_400));
    assert_eq!(c.tls.crl_refresh, Duration::from_secs(90));
    assert!(!c.reload.watch_files);
    assert_eq!(c.state_dir, Some(fx.dir.join("state")));
    let zero = format!("{MINIMAL}\n[tls]\nwarn_expiry = \"0s\"\n");
    assert_eq!(fx.parse(&zero).unwrap().tls.warn_expiry, Duration::ZERO);
}

#[test]
fn lifecycle_errors_name_line_and_field() {
    let fx = Fixture::new();
    let text = format!("{MINIMAL}\n[tls]\nwarn_expiry = \"three weeks\"\n");
    let (line, field, problem) = fx.error(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "warn_expiry"), "tls.warn_expiry")
    );
    assert!(problem.contains("is not a duration"), "{problem}");
    let text = format!("{MINIMAL}\n[tls]\ncrl_refresh = \"500ms\"\n");
    let (_, field, problem) = fx.error(&text);
    assert_eq!(field, "tls.crl_refresh");
    assert!(problem.contains("at least 1s"), "{problem}");
    let text = format!("{MINIMAL}\n[reload]\nwatch_files = \"yes\"\n");
    assert_eq!(fx.error(&text).1, "reload.watch_files");
    let text = format!("{MINIMAL}\n[state]\ndir = \"\"\n");
    assert_eq!(fx.error(&text).1, "state.dir");
}

#[test]
fn crl_urls_are_http_urls_and_need_a_state_dir() {
    let fx = Fixture::new();
    let with = |urls: &str, state: bool| {
        let mut text = SITES.replace(
            "crl = [\"certs/ca.pem\"]",
            &format!("crl = [\"certs/ca.pem\"]\ncrl_urls = {urls}"),
        );
        if state {
            text.push_str("\n[state]\ndir = \"/var/lib/portcullis\"\n");
        }
        text
    };
    let c = fx
        .parse(&with("[\"http://127.0.0.1:8080/ca.crl\"]", true))
        .unwrap();
    let url = &c.sites[0].crl_urls[0];
    assert_eq!(
        (url.host.as_str(), url.port, url.path.as_str()),
        ("127.0.0.1", 8080, "/ca.crl")
    );
    assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/portcullis")));

    let text = with("[\"http://127.0.0.1/ca.crl\"]", false);
    let (line, field, problem) = fx.error(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "crl_urls"), "site[0].crl_urls")
    );
    assert!(problem.contains("needs [state] dir"), "{problem}");

    let text = with("[\"http://a/x\", \"https://a/y\"]", true);
    let (_, field, problem) = fx.error(&text);
    assert_eq!(field, "site[0].crl_urls[1]");
    assert!(problem.contains("only http://"), "{problem}");
    let (_, field, problem) = fx.error(&with("[\"http://a/x\", \"http://a/x\"]", true));
    assert_eq!(field, "site[0].crl_urls[1]");
    assert!(problem.contains("listed twice"), "{problem}");
    let (_, field, _) = fx.error(&with("[]", true));
    assert_eq!(field, "site[0].crl_urls");
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}
