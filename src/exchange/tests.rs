//! The exchange machine, fed bytes and events with no socket: every decision
//! the shells take from it (framing, 100-continue, retry, keep-alive, reuse).

use super::*;
use crate::http::response::write_client_response_head;

const LIMITS: Limits = Limits {
    max_header_bytes: 64 * 1024,
    max_headers: 64,
};

fn facts(protocol: ClientProtocol, body_in: Input, body_out: Output) -> RequestFacts {
    RequestFacts {
        protocol,
        body_in,
        body_out,
        max_body: 1024,
        idempotent: true,
        is_head: false,
        expect_continue: false,
        keep_alive: true,
    }
}

fn get() -> RequestFacts {
    facts(ClientProtocol::Http11, Input::Length(0), Output::Raw)
}

/// Feeds a whole backend response in pieces of `step` bytes, as reads would
/// deliver them; returns (client bytes, exchange) once the response is done.
fn relay(x: &mut Exchange, response: &[u8], step: usize, draining: bool) -> Vec<u8> {
    let mut client = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed_to = 0;
    let mut head_done = false;
    loop {
        if fed_to < response.len() {
            let end = (fed_to + step).min(response.len());
            buf.extend_from_slice(&response[fed_to..end]);
            fed_to = end;
        }
        if !head_done {
            loop {
                let step = x
                    .response_head(&buf, &LIMITS, draining, |resp, c| {
                        write_client_response_head(resp, c.framing, c.keep_alive, &mut client)
                    })
                    .expect("valid head");
                match step {
                    HeadStep::Interim(n) => {
                        buf.drain(..n);
                    }
                    HeadStep::Head(n) => {
                        buf.drain(..n);
                        head_done = true;
                        break;
                    }
                    HeadStep::NeedMore => break,
                }
            }
        }
        if head_done {
            loop {
                let mut out = Vec::new();
                let fed = x.response_body(&buf, &mut out).expect("valid body");
                client.extend_from_slice(&buf[fed.pass.clone()]);
                client.extend_from_slice(&out);
                buf.drain(..fed.consumed);
                if fed.done || fed.consumed == 0 {
                    break;
                }
            }
            if x.response_done() {
                return client;
            }
        }
        if fed_to == response.len() {
            let mut out = Vec::new();
            x.backend_closed(true, &mut out).expect("clean close");
            client.extend_from_slice(&out);
            return client;
        }
    }
}

#[test]
fn a_content_length_response_is_relayed_the_same_whatever_the_reads() {
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
    for step in [1, 2, 7, response.len()] {
        let mut x = Exchange::new(get());
        x.head_written();
        let client = relay(&mut x, response, step, false);
        let text = String::from_utf8(client).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("X-A: b\r\n") && text.contains("Content-Length: 5\r\n"));
        assert!(text.ends_with("\r\n\r\nhello"), "step {step}: {text:?}");
        assert!(x.response_done());
        assert!(x.backend_reusable(false));
        assert!(
            !x.backend_reusable(true),
            "bytes after the response: never pooled"
        );
        assert!(x.client_keep_alive());
    }
}

#[test]
fn interim_responses_are_consumed_and_101_is_refused() {
    let mut x = Exchange::new(get());
    let client = relay(
        &mut x,
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        3,
        false,
    );
    let text = String::from_utf8(client).unwrap();
    assert!(text.starts_with("HTTP/1.1 204"), "{text}");
    assert!(!text.contains("Early"));
    let mut x = Exchange::new(get());
    let err = x
        .response_head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            &LIMITS,
            false,
            |_, _| {},
        )
        .unwrap_err();
    assert_eq!(err.code(), "PCS.5022");
}

#[test]
fn a_chunked_response_is_re_chunked_for_http11_unwrapped_for_http10_and_http2() {
    let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n";
    for step in [1, 5, response.len()] {
        let mut x = Exchange::new(get());
        let text = String::from_utf8(relay(&mut x, response, step, false)).unwrap();
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
        assert!(!text.contains("x=y") && !text.contains("T: 1"), "{text:?}");
        assert!(text.ends_with("0\r\n\r\n"));
        assert!(x.client_keep_alive() && x.backend_reusable(false));

        let mut x = Exchange::new(facts(ClientProtocol::Http10, Input::Length(0), Output::Raw));
        let text = String::from_utf8(relay(&mut x, response, step, false)).unwrap();
        assert!(
            !text.to_ascii_lowercase().contains("transfer-encoding"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nabcde"), "{text:?}");
        assert!(
            !x.client_keep_alive(),
            "an HTTP/1.0 client reads to the close"
        );
        assert!(
            x.backend_reusable(false),
            "the backend's framing was intact"
        );

        let mut x = Exchange::new(facts(
            ClientProtocol::Http2,
            Input::Frames(None),
            Output::Chunked,
        ));
        let mut out = Vec::new();
        x.request_body_end(&mut out).unwrap();
        let body = relay(&mut x, response, step, false);
        assert!(body.ends_with(b"abcde"));
    }
}

#[test]
fn a_head_response_ends_at_its_head() {
    let mut f = get();
    f.is_head = true;
    let mut x = Exchange::new(f);
    let mut client = Vec::new();
    let step = x
        .response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n",
            &LIMITS,
            false,
            |r, c| write_client_response_head(r, c.framing, c.keep_alive, &mut client),
        )
        .unwrap();
    assert!(matches!(step, HeadStep::Head(_)));
    let mut out = Vec::new();
    let fed = x.response_body(b"", &mut out).unwrap();
    assert!(fed.done);
    assert!(x.backend_reusable(false));
}

#[test]
fn a_close_delimited_response_ends_the_backend_connection_and_needs_a_clean_close() {
    let response = b"HTTP/1.1 200 OK\r\n\r\nstream of bytes";
    let mut x = Exchange::new(get());
    let text = String::from_utf8(relay(&mut x, response, 4, false)).unwrap();
    assert!(text.contains("Connection: close\r\n") && text.ends_with("stream of bytes"));
    assert!(!x.backend_reusable(false) && !x.client_keep_alive());

    // A TLS backend that ends it without close_notify: a truncation.
    let mut x = Exchange::new(get());
    x.response_head(response, &LIMITS, false, |_, _| {})
        .unwrap();
    let mut out = Vec::new();
    x.response_body(b"stream", &mut out).unwrap();
    let err = x.backend_closed(false, &mut out).unwrap_err();
    assert_eq!(err.code(), "PCS.5021");
    assert!(err.to_string().contains("close_notify"));
}

#[test]
fn a_content_length_response_cut_short_is_an_error() {
    let mut x = Exchange::new(get());
    x.response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        &LIMITS,
        false,
        |_, _| {},
    )
    .unwrap();
    let mut out = Vec::new();
    x.response_body(b"12345", &mut out).unwrap();
    assert!(x.backend_closed(true, &mut out).is_err());
    assert!(!x.backend_reusable(false));
}

#[test]
fn draining_closes_the_client_after_the_response() {
    let mut x = Exchange::new(get());
    relay(
        &mut x,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        64,
        true,
    );
    assert!(!x.client_keep_alive());
    assert!(
        x.backend_reusable(false),
        "the backend connection is still clean"
    );
}

#[test]
fn request_bodies_pass_or_are_re_chunked_and_their_limit_holds() {
    // Content-Length: passed through unchanged, nothing past it taken.
    let mut x = Exchange::new(facts(ClientProtocol::Http11, Input::Length(4), Output::Raw));
    assert!(x.has_request_body());
    let mut out = Vec::new();
    let fed = x.request_body(b"bodyGET / HTTP/1.1", &mut out).unwrap();
    assert_eq!((fed.consumed, fed.pass, fed.done), (4, 0..4, true));
    assert!(out.is_empty() && x.request_done());

    // Chunked: re-encoded canonically.
    let mut x = Exchange::new(facts(
        ClientProtocol::Http11,
        Input::Chunked,
        Output::Chunked,
    ));
    let mut wire: &[u8] = b"4;ext\r\nbody\r\n0\r\n\r\n";
    let mut sent = Vec::new();
    while !x.request_done() {
        let fed = x.request_body(wire, &mut sent).unwrap();
        wire = &wire[fed.consumed..];
    }
    assert_eq!(sent, b"4\r\nbody\r\n0\r\n\r\n");

    // An HTTP/2 body of unknown length: chunked to the backend.
    let mut x = Exchange::new(facts(
        ClientProtocol::Http2,
        Input::Frames(None),
        Output::Chunked,
    ));
    let mut sent = Vec::new();
    x.request_body(b"ab", &mut sent).unwrap();
    x.request_body_end(&mut sent).unwrap();
    assert_eq!(sent, b"2\r\nab\r\n0\r\n\r\n");

    // The route's limit, counted on payload as it arrives.
    let mut f = facts(ClientProtocol::Http11, Input::Chunked, Output::Chunked);
    f.max_body = 3;
    let mut x = Exchange::new(f);
    let err = x
        .request_body(b"4\r\nbody\r\n", &mut Vec::new())
        .unwrap_err();
    assert_eq!(err.code(), "PCS.4130");
    let err = Exchange::new(facts(
        ClientProtocol::Http11,
        Input::Chunked,
        Output::Chunked,
    ))
    .request_body(b"zz\r\n", &mut Vec::new())
    .unwrap_err();
    assert_eq!(err.code(), "PCS.4003");
}

#[test]
fn continue_is_sent_once_and_only_when_it_is_owed() {
    let mut f = facts(ClientProtocol::Http11, Input::Length(10), Output::Raw);
    f.expect_continue = true;
    let mut x = Exchange::new(f.clone());
    assert!(
        !x.wants_continue(true),
        "the client already sent body bytes"
    );
    assert!(x.wants_continue(false));
    assert!(!x.wants_continue(false), "once");
    x.restart();
    assert!(!x.wants_continue(false), "not again on a retry");
    let mut none = f.clone();
    none.body_in = Input::Length(0);
    assert!(
        !Exchange::new(none).wants_continue(false),
        "no body, no 100"
    );
    let mut old = f;
    old.protocol = ClientProtocol::Http10;
    assert!(
        !Exchange::new(old).wants_continue(false),
        "RFC 9110: not to HTTP/1.0"
    );
}

#[test]
fn a_broken_backend_connection_may_be_retried_only_when_nothing_could_have_happened() {
    let broke = |x: &Exchange| x.backend_broke(Kind::BackendReset, Cause::Text("closed"));
    // POST, the head never written: provably never received.
    let mut post = facts(ClientProtocol::Http11, Input::Length(0), Output::Raw);
    post.idempotent = false;
    let x = Exchange::new(post.clone());
    assert!(broke(&x).retry_safe(true));
    assert!(
        !broke(&x).retry_safe(false),
        "a fresh connection's failure is the answer"
    );
    // POST, head written: it may have reached the backend.
    let mut x = Exchange::new(post);
    x.head_written();
    assert!(!broke(&x).retry_safe(true));
    // GET, head written: idempotent.
    let mut x = Exchange::new(get());
    x.head_written();
    assert!(broke(&x).retry_safe(true));
    // PUT with a body started: the body cannot be sent again.
    let mut put = facts(ClientProtocol::Http11, Input::Length(4), Output::Raw);
    put.idempotent = true;
    let mut x = Exchange::new(put);
    x.head_written();
    x.request_body(b"ab", &mut Vec::new()).unwrap();
    assert!(!broke(&x).retry_safe(true));
    // Any byte of a response: never.
    let mut x = Exchange::new(get());
    x.head_written();
    let _ = x.response_head(b"HTTP/1.1 2", &LIMITS, false, |_, _| {});
    assert!(!broke(&x).retry_safe(true));
    // A backend that closed before any response byte: the same rule.
    let mut x = Exchange::new(get());
    x.head_written();
    let err = x.backend_closed(true, &mut Vec::new()).unwrap_err();
    assert!(err.retry_safe(true) && err.code() == "PCS.5021");
}

#[test]
fn a_backend_connection_is_not_pooled_before_the_request_body_was_sent_whole() {
    let mut x = Exchange::new(facts(
        ClientProtocol::Http11,
        Input::Length(10),
        Output::Raw,
    ));
    x.head_written();
    x.request_body(b"12345", &mut Vec::new()).unwrap();
    x.response_head(
        b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n",
        &LIMITS,
        false,
        |_, _| {},
    )
    .unwrap();
    x.response_body(b"", &mut Vec::new()).unwrap();
    assert!(x.response_done());
    assert!(
        !x.backend_reusable(false),
        "the backend still expects 5 body bytes"
    );
}

#[test]
fn spliced_bytes_count_on_both_sides() {
    let mut x = Exchange::new(facts(
        ClientProtocol::Http11,
        Input::Length(1000),
        Output::Raw,
    ));
    x.head_written();
    x.request_body_spliced(1000);
    assert!(x.request_done() && x.body_started());
    x.response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n",
        &LIMITS,
        false,
        |_, _| {},
    )
    .unwrap();
    x.response_body(&[0u8; 1000], &mut Vec::new()).unwrap();
    assert_eq!(x.response_remaining(), Some(69_000));
    x.response_body_spliced(69_000);
    assert!(x.response_done() && x.backend_reusable(false));
}
