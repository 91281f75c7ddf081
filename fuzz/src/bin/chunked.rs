//! Fuzz target: `http::chunked::ChunkedDecoder`, a differential property.
//!
//! Input: one byte that seeds the split points, then the wire bytes of a
//! chunked body (and whatever follows it). The body is decoded three ways:
//! in one buffer, one byte at a time, and in pieces of fuzzer-chosen sizes
//! (the way the proxy sees it: a buffer that grows by whatever the socket
//! delivered). All three must give the same payload bytes, stop at the same
//! wire offset (bytes after the body belong to the next message) and reach
//! the same verdict (done, needs more, or the same error). A body that
//! decodes is then re-encoded with `write_chunk_header` and must decode back
//! to the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::http::chunked::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use portcullis::http::HttpError;
use portcullis_fuzz::Pieces;

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The last chunk and trailers are in; the body ended at this offset.
    Done(usize),
    /// Every byte was used and the body has not ended.
    NeedsMore,
    Failed(HttpError),
}

/// Decodes `wire` as it becomes available in pieces of the given sizes.
fn decode(wire: &[u8], mut next_piece: impl FnMut() -> usize) -> (Vec<u8>, End) {
    let mut dec = ChunkedDecoder::new();
    let mut payload = Vec::new();
    let (mut pos, mut have) = (0, 0);
    loop {
        if have == wire.len() {
            return (payload, End::NeedsMore);
        }
        have = (have + next_piece()).min(wire.len());
        loop {
            let input = &wire[pos..have];
            let d = match dec.decode(input) {
                Ok(d) => d,
                Err(e) => {
                    // Errors are sticky: a later call cannot resume the body.
                    assert_eq!(
                        dec.decode(b"0\r\n\r\n"),
                        Err(e.clone()),
                        "error did not stick"
                    );
                    assert!(!dec.is_done());
                    return (payload, End::Failed(e));
                }
            };
            assert!(d.consumed <= input.len(), "consumed more than given");
            assert!(
                d.data.start <= d.data.end && d.data.end <= d.consumed,
                "{d:?}"
            );
            assert!(
                d.consumed > 0 || d.data.is_empty(),
                "payload without progress"
            );
            assert_eq!(d.done, dec.is_done());
            payload.extend_from_slice(&input[d.data]);
            pos += d.consumed;
            if d.done {
                // Done is final and takes nothing more.
                let again = dec.decode(b"5\r\nhello\r\n").map(|d| (d.consumed, d.done));
                assert_eq!(again, Ok((0, true)), "decoder went on after the end");
                return (payload, End::Done(pos));
            }
            if d.consumed == 0 {
                // Only an empty input may make no progress.
                assert!(input.is_empty(), "stalled on {} bytes", input.len());
                break;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, wire)) = data.split_first() else {
        return;
    };
    let whole = decode(wire, || wire.len().max(1));
    let bytewise = decode(wire, || 1);
    let mut pieces = Pieces::new(seed);
    let split = decode(wire, || pieces.next(wire.len()));
    assert_eq!(whole, bytewise, "one buffer vs one byte at a time");
    assert_eq!(whole, split, "one buffer vs pieces (seed {seed})");

    if let (payload, End::Done(_)) = &whole {
        // Re-encode in chunks of seed-chosen sizes: the writer and the
        // decoder must agree on the format.
        let mut wire2 = Vec::new();
        let mut rest = &payload[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(pieces.next(rest.len()));
            write_chunk_header(chunk.len(), &mut wire2);
            wire2.extend_from_slice(chunk);
            wire2.extend_from_slice(b"\r\n");
            rest = tail;
        }
        wire2.extend_from_slice(LAST_CHUNK);
        let end = wire2.len();
        assert_eq!(
            decode(&wire2, || 7),
            (payload.clone(), End::Done(end)),
            "re-encoded body"
        );
    }
});
