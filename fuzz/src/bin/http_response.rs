//! Fuzz target: `http::response::parse_response` on arbitrary bytes (a
//! backend is trusted less than it seems), then the head relayed to the client.
//!
//! Properties, beyond "never panics":
//! - the same prefix rules as requests: every prefix of a complete head is
//!   `Partial`, the head alone parses as the head plus body, and a `Partial`
//!   buffer has only `Partial` prefixes;
//! - a response to HEAD differs from the same bytes answering GET only in
//!   having no body: same verdict, same head length (framing headers are
//!   validated either way, so a broken backend is never pooled);
//! - the head relayed to the client (`write_client_response_head`) parses
//!   back to the same status and to the framing and keep-alive the gateway
//!   chose for the client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::http::response::{parse_response, write_client_response_head, Response};
use portcullis::http::{BodyFraming, Limits, Parsed};
use portcullis_fuzz::{header_list, prefixes, HeadSummary, Verdict};

const LIMITS: Limits = Limits {
    max_header_bytes: 16 * 1024,
    max_headers: 100,
};

fn summary(r: Response<'_, '_>) -> HeadSummary {
    HeadSummary {
        start_line: vec![r.status.to_string(), r.reason.to_string()],
        minor_version: r.minor_version,
        headers: header_list(r.headers),
        head_len: r.head_len,
        host: None,
        framing: r.framing,
        keep_alive: r.keep_alive,
        expect_continue: false,
    }
}

fn parse(buf: &[u8], limits: &Limits, head: bool) -> Verdict<HeadSummary> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    Verdict::from_result(parse_response(buf, &mut headers, limits, head), summary)
}

fuzz_target!(|data: &[u8]| {
    for request_was_head in [false, true] {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let full = parse_response(data, &mut headers, &LIMITS, request_was_head);
        let head_len = match &full {
            Ok(Parsed::Complete(resp)) => {
                check_response(resp, request_was_head);
                check_relayed(resp, request_was_head);
                Some(resp.head_len)
            }
            _ => None,
        };
        let full = Verdict::from_result(full, summary);
        if let Some(n) = head_len {
            let alone = parse(&data[..n], &LIMITS, request_was_head);
            assert_eq!(alone, full, "the head alone parses differently");
        }
        for k in prefixes(data.len()) {
            let prefix = parse(&data[..k], &LIMITS, request_was_head);
            match head_len {
                Some(n) if k >= n => assert_eq!(prefix, full, "prefix {k} past the head"),
                _ if matches!(full, Verdict::Error(_)) => {
                    assert!(!prefix.is_complete(), "prefix {k} complete, whole an error")
                }
                _ => assert_eq!(prefix, Verdict::Partial, "prefix {k} of an unfinished head"),
            }
        }
    }

    // HEAD changes the body, nothing else.
    let get = parse(data, &LIMITS, false);
    let head = parse(data, &LIMITS, true);
    match (get, head) {
        (Verdict::Complete(mut g), Verdict::Complete(h)) => {
            assert_eq!(
                h.framing,
                BodyFraming::None,
                "a response to HEAD has a body"
            );
            g.framing = h.framing;
            g.keep_alive = h.keep_alive;
            assert_eq!(g, h, "HEAD and GET read the head differently");
        }
        (g, h) => assert_eq!(g, h, "HEAD and GET disagree on the verdict"),
    }
});

fn check_response(resp: &Response<'_, '_>, request_was_head: bool) {
    assert!(resp.head_len <= LIMITS.max_header_bytes);
    assert!((100..=999).contains(&resp.status), "status {}", resp.status);
    assert!(resp.minor_version <= 1);
    let bodiless =
        request_was_head || resp.status < 200 || resp.status == 204 || resp.status == 304;
    if bodiless {
        assert_eq!(resp.framing, BodyFraming::None);
    } else {
        assert_ne!(
            resp.framing,
            BodyFraming::None,
            "a response with a body but no framing"
        );
    }
    if resp.framing == BodyFraming::UntilClose {
        assert!(
            !resp.keep_alive,
            "close-delimited body on a pooled connection"
        );
    }
}

/// The proxy relays a close-delimited body to a 1.1 client as chunked.
fn check_relayed(resp: &Response<'_, '_>, request_was_head: bool) {
    let client_framing = match resp.framing {
        BodyFraming::UntilClose => BodyFraming::Chunked,
        f => f,
    };
    for client_keep_alive in [true, false] {
        let mut out = Vec::new();
        write_client_response_head(resp, client_framing, client_keep_alive, &mut out);
        let roomy = Limits {
            max_header_bytes: out.len() + 1,
            max_headers: 128,
        };
        let again = match parse(&out, &roomy, request_was_head) {
            Verdict::Complete(h) => h,
            other => panic!(
                "relayed head does not parse: {other:?}\n{}",
                String::from_utf8_lossy(&out)
            ),
        };
        assert_eq!(again.head_len, out.len(), "relayed head has trailing bytes");
        assert_eq!(
            again.start_line[0],
            resp.status.to_string(),
            "status changed"
        );
        assert_eq!(again.start_line[1], resp.reason, "reason changed");
        assert_eq!(
            again.framing, client_framing,
            "client would frame the body differently"
        );
        assert_eq!(
            again.keep_alive, client_keep_alive,
            "client would disagree on keep-alive"
        );
    }
}
