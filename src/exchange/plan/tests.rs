//! The plan step fed request bytes, with no socket: a real config and real
//! certificates (made on disk by `certs::init`), a real config generation,
//! and what the backend head says.

use std::cell::OnceCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::*;
use crate::generation::Generation;
use crate::http::request::parse_request;
use crate::http::{Limits, Parsed};
use crate::metrics::Published;

struct Fixture {
    dir: PathBuf,
    generation: WorkerGeneration,
    client_chain: Vec<CertificateDer<'static>>,
}

impl Fixture {
    fn new(routes: &str) -> Fixture {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-plan-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        crate::certs::init(&crate::certs::InitOptions::new(dir.join("pki"))).expect("dev PKI");
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:8443\"\ncertificate = \"pki/server.pem\"\nprivate_key = \"pki/server.key\"\nclient_ca = [\"pki/ca.pem\"]\n\n{routes}"
        );
        let config = crate::config::parse(&dir.join("portcullis.toml"), &text).expect("config");
        let published = Published::new(1);
        let generation = Arc::new(Generation::load(&config, 1, &published).expect("generation"))
            .for_worker()
            .expect("worker generation");
        let client_chain = CertificateDer::pem_file_iter(dir.join("pki/client.pem"))
            .expect("client.pem")
            .map(|c| c.expect("PEM"))
            .collect();
        Fixture {
            dir,
            generation,
            client_chain,
        }
    }

    /// Plans `request` (whole head bytes); with the dev client's certificate
    /// when `with_cert`. Returns the decision and the backend head.
    fn plan(
        &self,
        request: &[u8],
        with_cert: bool,
        draining: bool,
    ) -> (Result<Decision, Error>, String, Hop) {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let limits = Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
        };
        let req = match parse_request(request, &mut headers, &limits) {
            Ok(Parsed::Complete(r)) => r,
            _ => panic!(
                "test request does not parse: {:?}",
                String::from_utf8_lossy(request)
            ),
        };
        self.plan_request(&req, ClientProtocol::Http11, with_cert, draining)
    }

    fn plan_request(
        &self,
        req: &Request<'_, '_>,
        protocol: ClientProtocol,
        with_cert: bool,
        draining: bool,
    ) -> (Result<Decision, Error>, String, Hop) {
        let cert = OnceCell::new();
        let no_chain: Vec<CertificateDer<'static>> = Vec::new();
        let conn = Connection {
            generation: &self.generation,
            listener: 0,
            site: Some(0),
            sni: Some("localhost"),
            peer: "192.0.2.7:50000".parse::<SocketAddr>().expect("addr"),
            chain: if with_cert {
                &self.client_chain
            } else {
                &no_chain
            },
            cert: &cert,
            draining,
        };
        let mut scratch = Scratch::default();
        let mut head = Vec::new();
        let mut hop = Hop::direct(conn.peer.ip());
        let decision = plan(
            req,
            &conn,
            protocol,
            &mut scratch,
            &mut head,
            &mut hop,
            Instant::now(),
        );
        (decision, String::from_utf8_lossy(&head).into_owned(), hop)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ROUTES: &str = r#"
[[route]]
path = "/"
backends = ["127.0.0.1:9000"]

[[route]]
path = "/admin/"
allow_subject_cn = ["alice"]
backends = ["127.0.0.1:9001"]

[[route]]
path = "/api/"
max_body_bytes = 10
rewrite_path_prefix = "/v1/"
forward_client_cert = ["subject"]
backends = ["127.0.0.1:9002"]
"#;

fn rejected(d: Result<Decision, Error>) -> (String, bool) {
    match d {
        Ok(Decision::Reject(r)) => (r.error.code().to_string(), r.close),
        Ok(Decision::Forward(p)) => panic!("forwarded to {}", p.backend),
        Err(e) => (e.code().to_string(), true),
    }
}

fn forwarded(d: Result<Decision, Error>) -> RequestPlan {
    match d {
        Ok(Decision::Forward(p)) => p,
        Ok(Decision::Reject(r)) => panic!("rejected: {}", r.error),
        Err(e) => panic!("bad request: {e}"),
    }
}

#[test]
fn path_tricks_reach_the_allowlisted_route_not_the_open_one() {
    let fx = Fixture::new(ROUTES);
    for target in [
        "/x/../admin/u",
        "/x/%2e%2e/admin/u",
        "//admin/u",
        "/%61dmin/u",
        "/admin",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        // The dev client's CN is not "alice": the allowlist refuses it.
        let (code, close) = rejected(fx.plan(req.as_bytes(), true, false).0);
        assert_eq!(code, "PCS.4030", "{target}");
        assert!(!close, "a policy refusal keeps the connection");
        let (code, _) = rejected(fx.plan(req.as_bytes(), false, false).0);
        assert_eq!(code, "PCS.4010", "{target} without a certificate");
    }
    let (code, close) = rejected(
        fx.plan(
            b"GET /../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n",
            true,
            false,
        )
        .0,
    );
    assert_eq!((code.as_str(), close), ("PCS.4005", true));
}

#[test]
fn the_backend_head_carries_the_normal_target_and_only_the_gateways_own_headers() {
    let fx = Fixture::new(ROUTES);
    let req = b"GET /api/./x/../users?q=/../1 HTTP/1.1\r\nHost: LOCALHOST.\r\nX_SSL_Client_Subject: CN=admin\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\n";
    let (d, head, hop) = fx.plan(req, true, false);
    let plan = forwarded(d);
    assert_eq!(plan.backend.port(), 9002);
    assert!(
        head.starts_with("GET /v1/users?q=/../1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("Accept: */*\r\n"));
    assert!(head.contains("X-Forwarded-For: 192.0.2.7\r\n"), "{head}");
    assert!(head.contains("X-Real-IP: 192.0.2.7\r\n"));
    assert!(
        !head.contains("6.6.6.6") && !head.contains("Forwarded: for"),
        "{head}"
    );
    assert!(
        !head.contains("CN=admin"),
        "a forged identity never passes: {head}"
    );
    assert!(
        head.contains("X-SSL-Client-Subject: CN=portcullis-dev-client"),
        "{head}"
    );
    assert_eq!(hop.client.to_string(), "192.0.2.7");
    assert!(plan.facts.idempotent && !plan.facts.is_head);
    assert_eq!(plan.backend_head_len, head.len());
}

#[test]
fn refusals_the_gateway_answers_itself() {
    let fx = Fixture::new(ROUTES);
    // (421 for another site's Host needs sites: tests/sites.rs; a Host that
    // is not a host name is the parser's refusal: http/request.)
    let cases: [(&[u8], &str, bool); 3] = [
        (
            b"TRACE / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "PCS.4051",
            false,
        ),
        (
            b"CONNECT /x HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "PCS.4051",
            false,
        ),
        (
            b"POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11\r\n\r\n",
            "PCS.4130",
            true,
        ),
    ];
    for (req, code, close) in cases {
        let (got, got_close) = rejected(fx.plan(req, true, false).0);
        assert_eq!(
            (got.as_str(), got_close),
            (code, close),
            "{}",
            String::from_utf8_lossy(req)
        );
    }
    let (code, close) = rejected(
        fx.plan(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", true, true)
            .0,
    );
    assert_eq!((code.as_str(), close), ("PCS.5030", true), "draining");
}

#[test]
fn the_facts_the_exchange_runs_on() {
    let fx = Fixture::new(ROUTES);
    let post = forwarded(
        fx.plan(b"POST /x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n", true, false)
            .0,
    );
    assert!(!post.facts.idempotent && post.facts.expect_continue);
    assert!(matches!(post.facts.body_in, Input::Chunked));
    assert_eq!(post.facts.body_out, Output::Chunked);
    let head = forwarded(
        fx.plan(b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n", true, false)
            .0,
    );
    assert!(head.facts.is_head && head.facts.idempotent);
    let old = forwarded(fx.plan(b"GET / HTTP/1.0\r\n\r\n", true, false).0);
    assert!(!old.facts.keep_alive, "HTTP/1.0 without keep-alive");
}

#[test]
fn an_http2_stream_gets_the_same_plan_with_frames_for_its_body() {
    let fx = Fixture::new(ROUTES);
    let hs = [httparse::Header {
        name: "x_ssl_client_subject",
        value: b"CN=forged",
    }];
    let req = Request::from_parts("POST", "/api/a/../b", Some("localhost"), &hs, false).unwrap();
    let (d, head, _) = fx.plan_request(&req, ClientProtocol::Http2, true, false);
    let p = forwarded(d);
    assert!(matches!(p.facts.body_in, Input::Frames(None)));
    assert_eq!(
        (p.facts.body_out, p.facts.protocol),
        (Output::Chunked, ClientProtocol::Http2)
    );
    assert!(head.starts_with("POST /v1/b HTTP/1.1\r\n"), "{head}");
    assert!(!head.contains("forged"), "{head}");
    assert!(
        head.ends_with("Transfer-Encoding: chunked\r\n\r\n"),
        "{head}"
    );
    let cl = [httparse::Header {
        name: "content-length",
        value: b"3",
    }];
    let req = Request::from_parts("PUT", "/x", Some("localhost"), &cl, false).unwrap();
    let p = forwarded(fx.plan_request(&req, ClientProtocol::Http2, true, false).0);
    assert!(matches!(p.facts.body_in, Input::Frames(Some(3))));
    assert_eq!(p.facts.body_out, Output::Raw);
    // The allowlisted route refuses a stream without a certificate, as HTTP/1.1.
    let req = Request::from_parts("GET", "/admin/", Some("localhost"), &[], true).unwrap();
    let (code, _) = rejected(fx.plan_request(&req, ClientProtocol::Http2, false, false).0);
    assert_eq!(code, "PCS.4010");
}
