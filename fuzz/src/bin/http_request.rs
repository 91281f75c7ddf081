//! Fuzz target: `http::request::parse_request` on arbitrary bytes, then the
//! head the gateway would forward to a backend, parsed again.
//!
//! Properties, beyond "never panics":
//! - the proxy re-parses a growing buffer on every read, so every prefix of a
//!   complete head is `Partial`, the head alone parses exactly as the head
//!   followed by body bytes, and a `Partial` buffer has only `Partial` prefixes
//!   (an error must not depend on where a read happened to end);
//! - a head accepted under small limits is accepted the same under large ones;
//! - the forwarded head (`write_backend_request_head`) parses back to the
//!   same method, target, Host and framing: the backend must see the message
//!   boundaries the gateway saw (request smuggling is a disagreement there).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::http::request::{
    is_gateway_owned, parse_request, write_backend_request_head, ForwardContext, Request,
};
use portcullis::http::{BodyFraming, Limits};
use portcullis_fuzz::{header_list, prefixes, HeadSummary, Verdict};

/// The config defaults (`[limits]`).
const LIMITS: Limits = Limits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
};
const SMALL: Limits = Limits {
    max_header_bytes: 256,
    max_headers: 4,
};

fn summary(r: Request<'_, '_>) -> HeadSummary {
    HeadSummary {
        start_line: vec![r.method.to_string(), r.target.to_string()],
        minor_version: r.minor_version,
        headers: header_list(r.headers),
        head_len: r.head_len,
        host: r.host.map(str::to_string),
        framing: r.framing,
        keep_alive: r.keep_alive,
        expect_continue: r.expect_continue,
    }
}

fn parse(buf: &[u8], limits: &Limits) -> Verdict<HeadSummary> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    Verdict::from_result(parse_request(buf, &mut headers, limits), summary)
}

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let full = parse_request(data, &mut headers, &LIMITS);
    let head_len = match &full {
        Ok(portcullis::http::Parsed::Complete(req)) => {
            check_request(req);
            check_forwarded(req);
            Some(req.head_len)
        }
        _ => None,
    };
    let full = Verdict::from_result(full, summary);

    if let Some(n) = head_len {
        assert_eq!(
            parse(&data[..n], &LIMITS),
            full,
            "the head alone parses differently"
        );
    }
    for k in prefixes(data.len()) {
        let prefix = parse(&data[..k], &LIMITS);
        match head_len {
            Some(n) if k >= n => assert_eq!(prefix, full, "prefix {k} past the head"),
            _ if matches!(full, Verdict::Error(_)) => {
                assert!(
                    !prefix.is_complete(),
                    "prefix {k} complete, whole buffer an error"
                )
            }
            _ => assert_eq!(prefix, Verdict::Partial, "prefix {k} of an unfinished head"),
        }
    }

    let small = parse(data, &SMALL);
    if let (Verdict::Complete(s), Verdict::Complete(f)) = (&small, &full) {
        assert_eq!(s, f, "small and large limits disagree");
    } else if small.is_complete() {
        panic!("complete under small limits only: {full:?}");
    }
});

/// Facts the rest of the gateway relies on without checking again.
fn check_request(req: &Request<'_, '_>) {
    assert!(req.head_len <= LIMITS.max_header_bytes);
    assert!(req.minor_version <= 1);
    assert!(req.target.starts_with('/') || (req.target == "*" && req.method == "OPTIONS"));
    assert!(req.target.is_ascii() && !req.target.contains('#'));
    if req.minor_version == 1 {
        assert!(req.host.is_some(), "1.1 request without Host accepted");
    }
    if req.framing == BodyFraming::Chunked {
        assert_eq!(req.minor_version, 1, "chunked 1.0 request accepted");
    }
    assert_ne!(
        req.framing,
        BodyFraming::UntilClose,
        "a request cannot be close-delimited"
    );
}

/// The head sent to the backend says what the gateway understood.
fn check_forwarded(req: &Request<'_, '_>) {
    let ctx = ForwardContext {
        // Only printed into X-Forwarded-For / X-Real-IP; nothing is sent
        // anywhere. A trusted peer, so the client's X-Forwarded-For values
        // are carried into ours (the path with client bytes in it).
        peer_ip: std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
        client_ip: std::net::Ipv4Addr::new(198, 51, 100, 7).into(),
        keep_forwarded_for: true,
        proto: "https",
        set_host: None,
        framing: req.framing,
        target: None,
        strip: &[],
        strip_set: &[],
        extra_headers: b"",
    };
    let mut out = Vec::new();
    write_backend_request_head(req, &ctx, &mut out);
    let roomy = Limits {
        max_header_bytes: out.len() + 1,
        max_headers: 128,
    };
    let again = match parse(&out, &roomy) {
        Verdict::Complete(h) => h,
        other => panic!(
            "forwarded head does not parse: {other:?}\n{}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(
        again.head_len,
        out.len(),
        "forwarded head has trailing bytes"
    );
    assert_eq!(
        again.start_line,
        [req.method, req.target],
        "method or target changed"
    );
    assert_eq!(again.minor_version, 1);
    assert_eq!(
        again.framing, req.framing,
        "backend would frame the body differently"
    );
    assert_eq!(
        again.host.as_deref(),
        Some(req.host.unwrap_or("")),
        "Host changed"
    );
    assert!(again.keep_alive && !again.expect_continue);
    // What the backend trusts is the gateway's alone: every gateway-owned
    // name (in any spelling a CGI backend folds together) appears only as
    // the one line the gateway wrote.
    let ours = ["Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-IP"];
    let optional = ["X-Forwarded-Host", "Content-Length", "Transfer-Encoding"];
    for (name, _) in &again.headers {
        if is_gateway_owned(name) {
            assert!(
                ours.contains(&name.as_str()) || optional.contains(&name.as_str()),
                "client header {name:?} forwarded"
            );
        }
    }
    for name in ours {
        let n = again.headers.iter().filter(|(h, _)| h == name).count();
        assert_eq!(n, 1, "{name} written {n} times");
    }
}
