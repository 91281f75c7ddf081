//! A backend's chunked response that turns out broken: while nothing of it
//! has reached the client, the client gets 502 PCS.5022 (a coded error,
//! then a clean close); once its head has been sent, the only honest signal
//! left is an aborted connection. Found by bench/soak: a bad chunk size in
//! the backend's first segment (arriving with the head) got the client a
//! bare reset and no response at all.
//!
//! Real gateway, real TLS client, a scripted backend on a real socket.

mod common;

use std::time::Duration;

use common::*;

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

fn stack(name: &str, backend: &MiniBackend) -> Stack {
    Stack::start(name, |c, _| {
        let mut c = c.workers(1);
        c.routes = vec![RouteCfg::new("/", &[&backend.addr()])];
        c
    })
}

#[test]
fn a_chunked_response_broken_in_its_first_segment_is_a_502() {
    // Head and broken body in one write: the gateway reads them together.
    let backend = MiniBackend::start(|head| {
        let body: &[u8] = if head.contains("/at-once") {
            b"zz\r\n"
        } else {
            b"5\r\nhello\r\nzz\r\n"
        };
        Behaviour::Script(vec![(Duration::ZERO, [HEAD, body].concat())])
    });
    let st = stack("chunked-broken-early", &backend);
    for path in ["/at-once", "/after-a-good-chunk"] {
        let mut conn = st.gw.tls();
        conn.set_read_timeout(Duration::from_secs(10));
        let r = conn
            .get(path, &[])
            .unwrap_or_else(|e| panic!("{path}: no response at all ({e})"));
        r.assert_error(502, "PCS.5022");
        assert!(r.connection_close(), "{path}: {r:?}");
        conn.assert_closed(path);
    }
}

#[test]
fn a_chunked_response_broken_after_its_head_was_sent_is_aborted() {
    // The head and a good chunk first; the bad chunk size later.
    let backend = MiniBackend::start(|_| {
        Behaviour::Script(vec![
            (Duration::ZERO, [HEAD, b"5\r\nhello\r\n"].concat()),
            (Duration::from_millis(300), b"zz\r\n".to_vec()),
        ])
    });
    let st = stack("chunked-broken-late", &backend);
    let mut conn = st.gw.tls();
    conn.send(&get_req("/late", &[])).unwrap();
    let (bytes, closed) = conn.read_until_close(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "the gateway ended the connection");
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    assert!(text.contains("hello"), "{text:?}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut-off body must not end like a complete one: {text:?}"
    );
}
