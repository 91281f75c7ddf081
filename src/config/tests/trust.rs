//! Config tests for who the gateway believes about the client
//! (`trusted_proxies`, `proxy_protocol`) and for header rules that would
//! touch what the gateway writes, in any spelling a backend folds together.

use super::sites::SITES;
use super::{Fixture, MINIMAL};

#[test]
fn trusted_proxies_and_proxy_protocol() {
    let fx = Fixture::new();
    let listener = |extra: &str| {
        MINIMAL.replace(
            "client_ca = [\"certs/ca.pem\"]\n",
            &format!("client_ca = [\"certs/ca.pem\"]\n{extra}"),
        )
    };
    let c = fx
        .parse(&listener(
            "trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\nproxy_protocol = true\n",
        ))
        .unwrap();
    let l = &c.listeners[0];
    assert!(l.proxy_protocol);
    let nets: Vec<String> = l
        .trusted_proxies
        .networks()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
    // The default: nobody is trusted, no PROXY header.
    let c = fx.parse(MINIMAL).unwrap();
    assert!(c.listeners[0].trusted_proxies.is_empty() && !c.listeners[0].proxy_protocol);

    let cases = [
        (
            "trusted_proxies = [\"10.0.0.1/8\"]\n",
            "listener[0].trusted_proxies[0]",
            "write \"10.0.0.0/8\"",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\", \"proxy.internal\"]\n",
            "listener[0].trusted_proxies[1]",
            "not an IP network",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/33\"]\n",
            "listener[0].trusted_proxies[0]",
            "from 0 to 32",
        ),
        (
            "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n",
            "listener[0].trusted_proxies[1]",
            "listed twice",
        ),
        (
            "trusted_proxies = []\n",
            "listener[0].trusted_proxies",
            "empty",
        ),
        (
            "trusted_proxies = \"10.0.0.0/8\"\n",
            "listener[0].trusted_proxies",
            "found a string",
        ),
        (
            "proxy_protocol = true\n",
            "listener[0].proxy_protocol",
            "needs trusted_proxies",
        ),
        (
            "proxy_protocol = \"yes\"\n",
            "listener[0].proxy_protocol",
            "true or false",
        ),
    ];
    for (extra, want_field, want) in cases {
        let text = listener(extra);
        let (line, field, problem) = fx.error(&text);
        assert_eq!(field, want_field, "{extra:?}: {problem}");
        assert_eq!(line, 6, "{extra:?}");
        assert!(problem.contains(want), "{extra:?}: {problem}");
    }

    // A listener serving [[site]] tables takes them too (they are not TLS identity).
    let sites = SITES.replacen(
        "[[listener]]\naddress = \"127.0.0.1:8443\"\n",
        "[[listener]]\naddress = \"127.0.0.1:8443\"\ntrusted_proxies = [\"127.0.0.1\"]\nproxy_protocol = true\n",
        1,
    );
    assert_ne!(sites, SITES, "fixture layout changed");
    let c = fx.parse(&sites).unwrap();
    assert!(c.listeners[0].proxy_protocol);
}

#[test]
fn rules_cannot_touch_what_the_gateway_writes_in_any_spelling() {
    let fx = Fixture::new();
    let route = |body: &str| {
        format!(
            "{}[[route]]\npath = \"/\"\nbackends = [\"127.0.0.1:9000\"]\n{body}",
            &MINIMAL[..MINIMAL.find("[[route]]").unwrap()]
        )
    };
    for (rule, field, why) in [
        (
            "set_headers = { \"X-Real-IP\" = \"1.2.3.4\" }",
            "route[0].set_headers.X-Real-IP",
            "managed by the gateway",
        ),
        (
            "set_headers = { \"X_Forwarded_For\" = \"1.2.3.4\" }",
            "route[0].set_headers.X_Forwarded_For",
            "managed by the gateway",
        ),
        (
            "add_headers = { \"x-forwarded-host\" = \"a\" }",
            "route[0].add_headers.x-forwarded-host",
            "managed by the gateway",
        ),
        (
            "remove_headers = [\"Transfer_Encoding\"]",
            "route[0].remove_headers[0]",
            "managed by the gateway",
        ),
        (
            "set_headers = { \"X-SSL-Client-Subject\" = \"CN=admin\" }",
            "route[0].set_headers.X-SSL-Client-Subject",
            "identity header",
        ),
        (
            "add_headers = { \"x_forwarded_client_cert\" = \"Hash=00\" }",
            "route[0].add_headers.x_forwarded_client_cert",
            "identity header",
        ),
        (
            "methods = [\"GET\", \"connect\"]",
            "route[0].methods[1]",
            "CONNECT",
        ),
    ] {
        let (_, got, problem) = fx.error(&route(rule));
        assert_eq!(got, field, "{rule}: {problem}");
        assert!(problem.contains(why), "{rule}: {problem}");
    }
    // What the gateway only strips from clients, an operator may still set.
    let c = fx
        .parse(&route(
            "set_headers = { \"X-Forwarded-Prefix\" = \"/api\", \"Forwarded\" = \"by=gw\" }\nmethods = [\"GET\", \"TRACE\"]",
        ))
        .unwrap();
    assert_eq!(c.routes[0].headers.set.len(), 2);
    // Renaming an identity header onto one the gateway writes is refused;
    // onto an identity name it is not.
    let (_, got, problem) = fx.error(&route(
        "forward_client_cert = [\"subject\"]\nclient_cert_headers = { subject = \"X-Real-IP\" }",
    ));
    assert_eq!(got, "route[0].client_cert_headers.subject", "{problem}");
    let c = fx
        .parse(&route(
            "forward_client_cert = [\"xfcc\"]\nclient_cert_headers = { xfcc = \"X-Forwarded-Client-Cert\" }",
        ))
        .unwrap();
    assert_eq!(
        c.routes[0].forward_identity.xfcc.as_deref(),
        Some("X-Forwarded-Client-Cert")
    );
}
