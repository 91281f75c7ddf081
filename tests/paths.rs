//! Request paths and hosts, end to end: the gateway routes, checks policy on
//! and forwards one normalised path (RFC 3986 §6, dot segments, escapes,
//! repeated slashes), matches route prefixes on segment boundaries, refuses
//! paths that are ambiguous for a backend, and reads Host and SNI through one
//! host normaliser. Real binary, real TLS (rustls client and curl), real echo
//! backend, which reports the path and query exactly as it received them.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// Certs, an echo backend and a gateway started from hand-written TOML (the
/// shared `Config` renderer knows no policies, rewrites or `[paths]`).
struct PathStack {
    /// Kept for its drop: the scratch directory and the echo process.
    _td: TempDir,
    _echo: Echo,
    certs: CertDir,
    gw: Gateway,
    /// A client certificate with CN "admin" (on the `/admin/` allowlists).
    admin: (PathBuf, PathBuf),
}

impl PathStack {
    /// `tail(echo_addr)` is appended to the rendered base config (listener,
    /// limits, timeouts): `[[route]]` tables and any `[paths]` table.
    fn start(name: &str, access_log: bool, tail: impl FnOnce(&str) -> String) -> PathStack {
        let td = TempDir::new(name);
        let certs = certs_init(&td.join("certs"), &[]);
        let admin = certs_issue(&certs.dir, &td.join("admin"), "admin", "admin", &[]);
        let echo = Echo::start(&td);
        let mut cfg = Config::new(&certs);
        cfg.access_log = access_log;
        let text = format!("{}\n{}", cfg.render(), tail(&echo.addr()));
        let gw = start_text(&td, &certs, cfg, &text);
        PathStack {
            _td: td,
            _echo: echo,
            certs,
            gw,
            admin,
        }
    }

    /// One request on a fresh connection with the default client certificate
    /// (CN portcullis-dev-client, on no allowlist).
    fn raw(&self, request: &[u8]) -> Response {
        let mut c = self.gw.tls();
        c.request(request).unwrap_or_else(|e| {
            self.gw.fail(&format!(
                "no response to {:?}: {e}",
                String::from_utf8_lossy(request)
            ))
        })
    }

    fn get(&self, target: &str) -> Response {
        self.raw(&get_req(target, &[]))
    }

    /// GET with the "admin" client certificate.
    fn get_as_admin(&self, target: &str) -> Response {
        let cfg = client_config(
            &self.certs,
            ClientAuth::Pem(self.admin.0.clone(), self.admin.1.clone()),
            &[],
        );
        let s = self
            .gw
            .tls_with(cfg)
            .unwrap_or_else(|e| self.gw.fail(&format!("TLS connect as admin: {e}")));
        let mut c = HttpConn::new(s);
        c.get(target, &[])
            .unwrap_or_else(|e| self.gw.fail(&format!("no response to {target}: {e}")))
    }

    /// A 400 with `code`, `Connection: close`, and the connection closed.
    fn expect_400(&self, target: &str, code: &str) {
        let mut c = self.gw.tls();
        let r = c
            .get(target, &[])
            .unwrap_or_else(|e| self.gw.fail(&format!("{target}: no response: {e}")));
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        assert_error_json(&r.body, 400, code);
        assert!(r.connection_close(), "{target}: 400 must close");
        c.assert_closed(target);
    }
}

/// Writes `text` as the config and starts the gateway on `cfg`'s listener.
fn start_text(td: &TempDir, certs: &CertDir, cfg: Config, text: &str) -> Gateway {
    let config_path = config_file(td);
    std::fs::write(&config_path, text).expect("write config");
    let mut cmd = portcullis();
    cmd.arg("run").arg("--config").arg(&config_path);
    let mut proc = ChildGuard::spawn("gateway", cmd, td.path());
    wait_accept(cfg.listeners[0].socket_addr(), &mut proc);
    let want = cfg.expected_workers();
    let ok = wait_until(Duration::from_secs(10), || {
        proc.count_log_lines(&["worker started"]) >= want || proc.try_exit().is_some()
    });
    if !ok || proc.try_exit().is_some() {
        proc.fail(&format!(
            "gateway did not log {want} `worker started` lines"
        ));
    }
    Gateway {
        proc,
        cfg,
        config_path,
        certs: certs.clone(),
        work: td.path().to_path_buf(),
    }
}

/// `/` open to every client, `/admin/` only for CN "admin". `set_host` tells
/// which route served a request (the echo backend reports the Host it got).
fn open_and_admin(echo: &str) -> String {
    format!(
        r#"
[[route]]
path = "/"
backends = ["{echo}"]
set_host = "open"

[[route]]
path = "/admin/"
allow_subject_cn = ["admin"]
backends = ["{echo}"]
set_host = "admin"
"#
    )
}

fn served_by(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["host"].as_str().unwrap_or("").to_string()
}

#[test]
fn bypass_targets_reach_the_allowlisted_route() {
    let st = PathStack::start("paths_bypass", false, open_and_admin);
    // Every spelling of /admin/u that a normalising backend would serve as
    // /admin/u is judged by the /admin/ route: this client is not on its list.
    for target in [
        "/admin/u",
        "/x/../admin/u",
        "/x/%2e%2e/admin/u",
        "/x/%2E%2e/admin/u",
        "/x/./../admin/u",
        "//admin/u",
        "/%61dmin/u",
        "/%61%64%6D%69%6e/u",
        "/admin//u",
        "/./admin/u",
        "/admin/x/../u",
        "/admin",
        "/admin/",
    ] {
        let r = st.get(target);
        assert_eq!(r.status, 403, "{target} must reach /admin/: {}", r.text());
        r.assert_error(403, "PCS.4030");
    }
    // curl with --path-as-is sends the dot segments as written.
    let r = st.gw.curl("/x/../admin/u", &["--path-as-is"]);
    assert_eq!(r.code, 403, "{}", r.describe());
    assert_error_json(&r.body, 403, "PCS.4030");

    // The allowed client reaches it, and the backend sees the normalised
    // path with the query exactly as sent.
    let r = st.get_as_admin("/x/%2e%2e/admin/u?q=%2e%2e/1&b=/../x");
    assert_eq!(served_by(&r), "admin");
    let v = r.json();
    assert_eq!(v["path"], "/admin/u", "{v}");
    assert_eq!(v["query"], "q=%2e%2e/1&b=/../x", "{v}");

    // The open route forwards the normal form too: unreserved escapes
    // decoded, other escapes upper-cased, repeated slashes merged.
    let r = st.get("/pub/./a//b/%7euser/%c3%A9?x=%7e");
    assert_eq!(served_by(&r), "open");
    let v = r.json();
    assert_eq!(v["path"], "/pub/a/b/~user/%C3%A9", "{v}");
    assert_eq!(v["query"], "x=%7e", "{v}");
}

#[test]
fn paths_that_climb_or_hide_separators_are_refused() {
    let st = PathStack::start("paths_refused", false, open_and_admin);
    st.expect_400("/../../etc/passwd", "PCS.4005");
    st.expect_400("/a/../..", "PCS.4005");
    st.expect_400("/%2e%2e/etc/passwd", "PCS.4005");
    st.expect_400("/x/..%2Fadmin/u", "PCS.4006");
    st.expect_400("/admin%2fu", "PCS.4006");
    st.expect_400("/x/..%5Cadmin/u", "PCS.4007");
    st.expect_400("/x/..\\admin/u", "PCS.4007");
    st.expect_400("/admin/u%00.json", "PCS.4008");
    // `;` parameters: servlet containers drop them before routing, so a
    // path whose route depends on that is refused rather than guessed.
    st.expect_400("/x/..;/admin/u", "PCS.4009");
    st.expect_400("/admin;jsessionid=1/u", "PCS.4009");
    for bad in ["/a%zz", "/a%2", "/a%", "/%c0%ae%c0%ae/admin/u"] {
        st.expect_400(bad, "PCS.4000");
    }
    // A parameter that leaves the route the same is forwarded untouched.
    let r = st.get("/shop/cart;jsessionid=ABC?x=1");
    assert_eq!(served_by(&r), "open");
    assert_eq!(r.json()["path"], "/shop/cart;jsessionid=ABC");

    // OPTIONS * is not a path: it goes to the host's `/` route as is.
    let r = st.raw(b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(served_by(&r), "open");
    assert_eq!(r.json()["method"], "OPTIONS");
    assert_eq!(r.json()["path"], "*");
}

#[test]
fn route_prefixes_match_whole_segments() {
    let st = PathStack::start("paths_segments", false, |echo| {
        format!(
            r#"
[[route]]
path = "/"
backends = ["{echo}"]
set_host = "root"

[[route]]
path = "/api"
backends = ["{echo}"]
set_host = "api"

[[route]]
path = "/v1/"
backends = ["{echo}"]
set_host = "v1"
"#
        )
    });
    for (target, want) in [
        ("/api", "api"),
        ("/api/", "api"),
        ("/api/x", "api"),
        ("/api-internal/x", "root"),
        ("/apix", "root"),
        ("/api.json", "root"),
        ("/v1", "v1"),
        ("/v1/", "v1"),
        ("/v1/users", "v1"),
        ("/v10/users", "root"),
    ] {
        let r = st.get(target);
        assert_eq!(served_by(&r), want, "{target}");
        assert_eq!(r.json()["path"], target);
    }

    // Without a `/` route, the look-alike prefix is simply not found.
    let st = PathStack::start("paths_segments_404", false, |echo| {
        format!("[[route]]\npath = \"/api\"\nbackends = [\"{echo}\"]\n")
    });
    st.get("/api-internal/x").assert_error(404, "PCS.4040");
    assert_eq!(st.get("/api/x").status, 200);
}

#[test]
fn rewrites_apply_to_the_normalised_path_and_cannot_climb() {
    let st = PathStack::start("paths_rewrite", true, |echo| {
        format!(
            r#"
[[route]]
path = "/"
backends = ["{echo}"]
set_host = "root"

[[route]]
path = "/api/"
rewrite_path_prefix = "/v1/"
backends = ["{echo}"]
set_host = "api"

[[route]]
path = "/strip/"
strip_path_prefix = true
backends = ["{echo}"]
set_host = "strip"
"#
        )
    });
    for (target, want_route, want_path, want_query) in [
        // Climbing out of the prefix leaves the route: it is another path.
        ("/api/../internal", "root", "/internal", None),
        ("/api/%2e%2e/internal?a=1", "root", "/internal", Some("a=1")),
        ("/api/x/../y?z=/../1", "api", "/v1/y", Some("z=/../1")),
        ("/api/", "api", "/v1/", None),
        ("/api", "api", "/v1", None),
        ("/api//a/./b", "api", "/v1/a/b", None),
        ("/strip/a/b?q", "strip", "/a/b", Some("q")),
        ("/strip/", "strip", "/", None),
        ("/strip", "strip", "/", None),
        ("/strip/../strip/c", "strip", "/c", None),
    ] {
        let r = st.get(target);
        assert_eq!(served_by(&r), want_route, "{target}");
        let v = r.json();
        assert_eq!(v["path"], want_path, "{target}: {v}");
        match want_query {
            Some(q) => assert_eq!(v["query"], q, "{target}: {v}"),
            None => assert!(v["query"].is_null(), "{target}: {v}"),
        }
    }
    st.expect_400("/api/%2e%2e/%2e%2e/etc", "PCS.4005");
    // The access log names what was forwarded, and the raw target when it differs.
    let line = st
        .gw
        .proc
        .wait_log_line(
            &["portcullis::access", "raw_target=/api/x/../y?z=/../1"],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| st.gw.fail("no access-log line with the raw target"));
    assert!(line.contains("target=/v1/y?z=/../1"), "{line}");
    assert!(line.contains("protocol=\"http/1.1\""), "{line}");
    let line = st
        .gw
        .proc
        .wait_log_line(
            &["portcullis::access", "target=/v1/ "],
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| st.gw.fail("no access-log line for /api/"));
    assert!(line.contains("raw_target=/api/ "), "{line}");
}

#[test]
fn escaped_slash_policies() {
    let routes = |echo: &str| {
        format!(
            r#"
[[route]]
path = "/files/"
backends = ["{echo}"]
set_host = "files"

[[route]]
path = "/files/a/"
backends = ["{echo}"]
set_host = "files-a"
"#
        )
    };
    // Default: refused.
    let st = PathStack::start("paths_slash_reject", false, routes);
    st.expect_400("/files/a%2Fb", "PCS.4006");

    // keep: forwarded encoded (hex upper-cased), never a separator for routing
    // or dot segments; logged at start as the unsafe choice it is.
    let st = PathStack::start("paths_slash_keep", false, |echo| {
        format!("[paths]\nescaped_slashes = \"keep\"\n{}", routes(echo))
    });
    let r = st.get("/files/a%2fb?x=%2F");
    assert_eq!(served_by(&r), "files");
    assert_eq!(r.json()["path"], "/files/a%2Fb");
    assert_eq!(r.json()["query"], "x=%2F");
    let r = st.get("/files/x/..%2F..%2Fa/b");
    assert_eq!(served_by(&r), "files");
    assert_eq!(r.json()["path"], "/files/x/..%2F..%2Fa/b");
    assert!(
        st.gw
            .proc
            .wait_log_line(&["escaped_slashes", "keep"], Duration::from_secs(2))
            .is_some(),
        "keep must be logged at start:\n{}",
        st.gw.proc.output()
    );

    // decode: %2F is a separator like `/`, and the backend gets `/`.
    let st = PathStack::start("paths_slash_decode", false, |echo| {
        format!("[paths]\nescaped_slashes = \"decode\"\n{}", routes(echo))
    });
    let r = st.get("/files/a%2Fb");
    assert_eq!(served_by(&r), "files-a");
    assert_eq!(r.json()["path"], "/files/a/b");
    let r = st.get("/files/a%2F..%2Fc");
    assert_eq!(served_by(&r), "files");
    assert_eq!(r.json()["path"], "/files/c");
    st.expect_400("/files/%2F..%2F..%2F..", "PCS.4005");

    // merge_slashes = false keeps empty segments (and is logged).
    let st = PathStack::start("paths_no_merge", false, |echo| {
        format!("[paths]\nmerge_slashes = false\n{}", routes(echo))
    });
    let r = st.get("/files//a/b");
    assert_eq!(served_by(&r), "files");
    assert_eq!(r.json()["path"], "/files//a/b");
    assert!(
        st.gw
            .proc
            .wait_log_line(&["merge_slashes"], Duration::from_secs(2))
            .is_some(),
        "merge_slashes = false must be logged at start:\n{}",
        st.gw.proc.output()
    );
}

#[test]
fn route_paths_not_in_normal_form_are_config_errors() {
    let td = TempDir::new("paths_config");
    let certs = certs_init(&td.join("certs"), &[]);
    for (path, needle) in [
        ("/api/../x", "normal form"),
        ("/api//x", "normal form"),
        ("/%61pi", "normal form"),
        ("/api;v=1", "letters, digits"),
        ("/a%2Fb", "%2F"),
    ] {
        let cfg = Config::new(&certs);
        let text = format!(
            "{}\n[[route]]\npath = {}\nbackends = [\"127.0.0.1:9\"]\n",
            cfg.render(),
            q(path)
        );
        let file = config_file(&td);
        std::fs::write(&file, &text).unwrap();
        let out = run_cmd(
            portcullis().arg("check").arg("--config").arg(&file),
            None,
            Duration::from_secs(20),
        );
        assert!(!out.status.success(), "{path} accepted: {}", out.describe());
        let want = format!(
            "{}:{}: route[0].path:",
            file.display(),
            line_of(&text, "path = ")
        );
        let all = out.describe();
        assert!(all.contains(&want), "{path}: want {want:?} in {all}");
        assert!(all.contains(needle), "{path}: want {needle:?} in {all}");
    }
}

// ------------------------------------------------------------------ hosts

#[test]
fn host_spellings_select_the_same_site_and_routes() {
    let td = TempDir::new("paths_hosts");
    let certs = certs_init(&td.join("certs"), &[]);
    let echo = Echo::start(&td);
    let base = Config::new(&certs);
    let port = base.listeners[0].socket_addr().port();
    let cert = |p: PathBuf| q(&p.to_string_lossy());
    let site = |name: &str, names: &str| {
        format!(
            "[[site]]\nname = \"{name}\"\nserver_names = {names}\ncertificate = {}\n\
             private_key = {}\nclient_ca = [{}]\n\n",
            cert(certs.server_cert()),
            cert(certs.server_key()),
            cert(certs.ca()),
        )
    };
    let e = echo.addr();
    // Config values written with capitals, a trailing dot and a long IPv6
    // form compare equal to what clients send.
    let text = format!(
        "[server]\nworkers = 2\n\n[[listener]]\naddress = \"127.0.0.1:{port}\"\n\n{}{}\
         [[route]]\nsite = \"local\"\nhost = \"LocalHost.\"\npath = \"/\"\nbackends = [\"{e}\"]\nset_host = \"r-local\"\n\n\
         [[route]]\nsite = \"local\"\nhost = \"[0:0:0:0:0:0:0:1]\"\npath = \"/\"\nbackends = [\"{e}\"]\nset_host = \"r-v6\"\n\n\
         [[route]]\nsite = \"other\"\npath = \"/\"\nbackends = [\"{e}\"]\nset_host = \"r-other\"\n",
        site("local", r#"["LOCALHOST.", "[::1]"]"#),
        site("other", r#"["other.example"]"#),
    );
    let gw = start_text(&td, &certs, base, &text);
    let ask = |host: &str| {
        let mut c = gw.tls();
        c.request(format!("GET /h HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap_or_else(|e| gw.fail(&format!("Host {host}: {e}")))
    };
    for (host, want) in [
        ("localhost", "r-local"),
        ("LOCALHOST.", "r-local"),
        ("localhost:8443", "r-local"),
        ("LocalHost.:443", "r-local"),
        ("localhost:", "r-local"),
        ("[::1]:8443", "r-v6"),
        ("[::1]", "r-v6"),
        ("[0:0:0:0:0:0:0:1]:8443", "r-v6"),
    ] {
        let r = ask(host);
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
        assert_eq!(r.json()["host"], want, "Host {host}");
    }
    // HTTP/1.0 without Host: the SNI (normalised the same way) stands in.
    let mut c = gw.tls();
    let r = c
        .request(b"GET /h HTTP/1.0\r\n\r\n")
        .unwrap_or_else(|e| gw.fail(&format!("HTTP/1.0 without Host: {e}")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["host"], "r-local");
    // Another site's name is still misdirected, whatever its spelling.
    ask("OTHER.example.").assert_error(421, "PCS.4210");
    for bad in [
        "",
        "local..host",
        ".localhost",
        "[::1",
        "::1",
        "[fe80::1%25eth0]",
        "localhost:99999",
        "localhost:8x",
        "exa$mple.com",
        "1.2.3.999",
    ] {
        let mut c = gw.tls();
        let r = c
            .request(format!("GET /h HTTP/1.1\r\nHost: {bad}\r\n\r\n").as_bytes())
            .unwrap_or_else(|e| gw.fail(&format!("Host {bad}: {e}")));
        r.assert_error(400, "PCS.4000");
    }
    // The SNI goes through the same normaliser: a client naming the site with
    // capitals lands on it (curl sends SNI and Host "LOCALHOST").
    let out = run_cmd(
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(certs.ca())
            .arg("--cert")
            .arg(certs.client_cert())
            .arg("--key")
            .arg(certs.client_key())
            .arg("--resolve")
            .arg(format!("LOCALHOST:{port}:127.0.0.1"))
            .arg(format!("https://LOCALHOST:{port}/sni")),
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.describe());
    let v = parse_json(out.stdout.as_slice());
    assert_eq!(v["host"], "r-local", "{v}");
}
