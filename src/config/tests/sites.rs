//! `[[site]]`, `[[upstream]]`, route policies, body deadlines and connection caps.

use super::*;

pub(in crate::config::tests) const SITES: &str = r#"[[listener]]
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

#[test]
fn ocsp_stapling_is_off_unless_asked_and_its_options_are_checked() {
    let fx = Fixture::new();
    let c = fx.parse(SITES).unwrap();
    assert_eq!(c.sites[0].ocsp, None, "off by default");
    let on = SITES.replacen(
        "default = true",
        "default = true\nocsp_stapling = \"on\"\nocsp_url = \"http://127.0.0.1:2560/ocsp\"\nocsp_refresh = \"10m\"",
        1,
    );
    let c = fx.parse(&on).unwrap();
    let want = c.sites[0].ocsp.as_ref().unwrap();
    assert_eq!(want.refresh, std::time::Duration::from_secs(600));
    let url = want.url.as_ref().unwrap();
    assert_eq!(
        (url.host.as_str(), url.port, url.path.as_str()),
        ("127.0.0.1", 2560, "/ocsp")
    );
    // On without a URL: the certificate's AIA (checked when it loads), 1 h.
    let c = fx
        .parse(&SITES.replacen(
            "default = true",
            "default = true\nocsp_stapling = \"on\"",
            1,
        ))
        .unwrap();
    assert_eq!(
        c.sites[0].ocsp,
        Some(crate::ocsp::Want {
            url: None,
            refresh: super::super::sites::DEFAULT_OCSP_REFRESH
        })
    );
    // A listener with its own certificate takes the same fields.
    let c = fx
        .parse(&MINIMAL.replacen("client_ca", "ocsp_stapling = \"on\"\nclient_ca", 1))
        .unwrap();
    assert!(c.sites[0].ocsp.is_some());

    for (add, field, problem) in [
        (
            "ocsp_stapling = \"yes\"",
            "site[0].ocsp_stapling",
            "is not one of",
        ),
        (
            "ocsp_url = \"http://127.0.0.1/\"",
            "site[0].ocsp_url",
            "only with ocsp_stapling",
        ),
        (
            "ocsp_refresh = \"1h\"",
            "site[0].ocsp_refresh",
            "only with ocsp_stapling",
        ),
        (
            "ocsp_stapling = \"on\"\nocsp_url = \"https://ocsp.example/\"",
            "site[0].ocsp_url",
            "not an http:// URL",
        ),
        (
            "ocsp_stapling = \"on\"\nocsp_refresh = \"500ms\"",
            "site[0].ocsp_refresh",
            "at least 1s",
        ),
    ] {
        let text = SITES.replacen("default = true", &format!("default = true\n{add}"), 1);
        let (line, f, p) = fx.error(&text);
        let key = format!("{} =", field.rsplit('.').next().unwrap());
        let at = text.lines().position(|l| l.starts_with(&key)).unwrap() + 1;
        assert_eq!(line, at, "{add}");
        assert_eq!(f, field, "{add}");
        assert!(p.contains(problem), "{add}: {p}");
    }
    // A listener that serves [[site]] tables has no certificate to staple.
    let text = SITES.replacen(
        "address = \"127.0.0.1:8443\"",
        "address = \"127.0.0.1:8443\"\nocsp_stapling = \"on\"",
        1,
    );
    let (_, f, p) = fx.error(&text);
    assert_eq!(f, "listener[0].ocsp_stapling");
    assert!(
        p.contains("only with the listener's own certificate"),
        "{p}"
    );
}
