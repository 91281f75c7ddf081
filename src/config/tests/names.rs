//! Paths and hosts in the config: the normal forms requests are compared in.

use super::sites::SITES;
use super::*;

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
