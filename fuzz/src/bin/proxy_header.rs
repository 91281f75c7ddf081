//! Fuzz target: `proxy_protocol::parse`, the PROXY v1/v2 header in front of
//! a `proxy_protocol` listener's TLS.
//!
//! Input: the wire bytes a balancer (or anyone it lets through) sends first.
//! The parser is driven the way the reader drives it (`FIRST_READ` bytes,
//! then exactly as many as it asks for) and must reach the same verdict as
//! parsing the whole input at once; it must never ask for a byte past a
//! header it then completes (those bytes are the first TLS record, which the
//! record-exact handshake must find intact), never ask for less than it has,
//! and never accept more than the spec's lengths (107 bytes for v1, 16 +
//! 4096 for v2). A complete header parses the same on its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy_protocol::{parse, Invalid, Parsed, FIRST_READ, V1_MAX_LEN, V2_MAX_PAYLOAD};

/// The verdict on `wire` as the reader would reach it: a header, an error, or
/// the number of bytes it was still waiting for when the input ran out.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Header(portcullis::proxy_protocol::Header),
    Refused(Invalid),
    Waiting(usize),
}

fn as_reader(wire: &[u8]) -> Verdict {
    let mut have = FIRST_READ;
    loop {
        if have > wire.len() {
            return Verdict::Waiting(have);
        }
        match parse(&wire[..have]) {
            Ok(Parsed::Complete(h)) => {
                assert_eq!(h.len, have, "complete at a length it did not ask for");
                return Verdict::Header(h);
            }
            Ok(Parsed::NeedAtLeast(n)) => {
                assert!(n > have, "asked for {n} bytes with {have} in hand");
                have = n;
            }
            Err(e) => return Verdict::Refused(e),
        }
    }
}

fuzz_target!(|wire: &[u8]| {
    let whole = parse(wire);
    let reader = as_reader(wire);
    match (&whole, &reader) {
        (Ok(Parsed::Complete(a)), Verdict::Header(b)) => {
            assert_eq!(a, b);
            let limit = if a.version == 1 {
                V1_MAX_LEN
            } else {
                16 + V2_MAX_PAYLOAD
            };
            assert!(a.len <= limit && a.len <= wire.len(), "{a:?}");
            assert_eq!(parse(&wire[..a.len]), Ok(Parsed::Complete(*a)));
        }
        (Err(a), Verdict::Refused(b)) => assert_eq!(a, b),
        // The whole input is shorter than the header: both wait for more.
        (Ok(Parsed::NeedAtLeast(n)), Verdict::Waiting(m)) => {
            assert!(*n > wire.len() && *m > wire.len(), "{n} {m} {}", wire.len());
        }
        // Shorter than the first read: the reader has not looked yet.
        (Err(_), Verdict::Waiting(_)) if wire.len() < FIRST_READ => {}
        other => panic!("reader and whole-buffer parse disagree: {other:?}"),
    }
});
