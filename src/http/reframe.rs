//! Moves a message body from one framing to another, in pieces, without I/O.
//!
//! A proxy receives a body in the sender's framing (a Content-Length count,
//! chunked, until the connection closes, or HTTP/2 DATA payloads) and sends
//! it in the receiver's (the same bytes, chunked, or bare payload for an
//! HTTP/1.0 client or an HTTP/2 stream). One [`Reframer`] does every pair,
//! for requests and responses alike: payload that can go out unchanged is
//! handed back as a range of the input (no copy); payload that must be
//! re-encoded is written to the caller's buffer. Chunked input is always
//! re-encoded or unwrapped, never forwarded as received, so chunk extensions
//! and trailers never cross the gateway.

use std::ops::Range;

use super::chunked::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use super::HttpError;

/// How the body arrives.
#[derive(Debug, Clone)]
pub enum Input {
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
    /// Bare payload pieces with an explicit end (HTTP/2 DATA frames);
    /// `Some(n)` when a content-length announced the total.
    Frames(Option<u64>),
}

/// How the body leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The payload bytes as they are (a Content-Length body, a body ended by
    /// the connection's close, HTTP/2 DATA).
    Raw,
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What one [`Reframer::feed`] call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fed {
    /// Input bytes used.
    pub consumed: usize,
    /// Payload to send as it is: a range of the input (empty when the
    /// payload went to `out`, or there was none).
    pub pass: Range<usize>,
    /// The body is complete (its terminator, if any, is written to `out`).
    pub done: bool,
}

#[derive(Debug)]
pub struct Reframer {
    input: State,
    output: Output,
    /// Payload bytes seen so far.
    payload: u64,
    done: bool,
}

#[derive(Debug)]
enum State {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
    UntilClose,
    Frames { announced: Option<u64> },
}

impl Reframer {
    pub fn new(input: Input, output: Output) -> Reframer {
        let (state, done) = match input {
            Input::Length(0) => (State::Length { remaining: 0 }, output == Output::Raw),
            Input::Length(n) => (State::Length { remaining: n }, false),
            Input::Chunked => (State::Chunked(ChunkedDecoder::new()), false),
            Input::UntilClose => (State::UntilClose, false),
            Input::Frames(announced) => (State::Frames { announced }, false),
        };
        Reframer {
            input: state,
            output,
            payload: 0,
            done,
        }
    }

    /// Payload bytes seen so far (for body-size limits).
    pub fn payload_bytes(&self) -> u64 {
        self.payload
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// For a Content-Length body: the bytes still to come.
    pub fn remaining(&self) -> Option<u64> {
        match self.input {
            State::Length { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// Takes input from its start; returns after at most one payload piece.
    /// Call again with the rest while `consumed > 0` and not `done`. Bytes
    /// past the end of the body are never consumed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Fed, HttpError> {
        if self.done {
            return Ok(Fed {
                consumed: 0,
                pass: 0..0,
                done: true,
            });
        }
        let (consumed, payload, ended) = match &mut self.input {
            State::Length { remaining } => {
                let n = usize::try_from(*remaining).map_or(input.len(), |r| r.min(input.len()));
                *remaining -= n as u64;
                (n, 0..n, *remaining == 0)
            }
            State::Chunked(decoder) => {
                let d = decoder.decode(input)?;
                (d.consumed, d.data, d.done)
            }
            State::UntilClose => (input.len(), 0..input.len(), false),
            State::Frames { announced } => {
                let total = self.payload + input.len() as u64;
                if announced.is_some_and(|a| total > a) {
                    return Err(HttpError::InvalidContentLength);
                }
                (input.len(), 0..input.len(), false)
            }
        };
        self.payload += payload.len() as u64;
        let pass = match self.output {
            Output::Raw => payload,
            Output::Chunked => {
                if !payload.is_empty() {
                    write_chunk_header(payload.len(), out);
                    out.extend_from_slice(&input[payload]);
                    out.extend_from_slice(b"\r\n");
                }
                0..0
            }
        };
        if ended {
            self.finish(out);
        }
        Ok(Fed {
            consumed,
            pass,
            done: self.done,
        })
    }

    /// `n` bytes of a Content-Length body were moved some other way (spliced
    /// between sockets, never in user memory): counts them as sent.
    pub fn skipped(&mut self, n: u64) {
        if let State::Length { remaining } = &mut self.input {
            let n = n.min(*remaining);
            *remaining -= n;
            self.payload += n;
            if *remaining == 0 && !self.done {
                self.done = true;
            }
        }
    }

    /// The input ended: the connection closed (`UntilClose`, `clean` telling
    /// whether the close can be trusted as the body's end) or the last DATA
    /// frame came (`Frames`). Anything else ending here is a truncation.
    pub fn end_of_input(&mut self, clean: bool, out: &mut Vec<u8>) -> Result<(), HttpError> {
        if self.done {
            return Ok(());
        }
        match self.input {
            State::UntilClose if clean => {}
            State::Frames { announced } if announced.is_none_or(|a| a == self.payload) => {}
            State::Frames { .. } => return Err(HttpError::InvalidContentLength),
            _ => {
                return Err(HttpError::Malformed(
                    "the body ended before its framing said",
                ))
            }
        }
        self.finish(out);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.output == Output::Chunked {
            out.extend_from_slice(LAST_CHUNK);
        }
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes (the remainder kept like a
    /// socket buffer); returns (bytes to send, whether done, leftover input).
    fn run(input: Input, output: Output, wire: &[u8], step: usize) -> (Vec<u8>, bool, Vec<u8>) {
        let mut r = Reframer::new(input, output);
        let mut sent = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed_to = 0;
        loop {
            if fed_to < wire.len() {
                let end = (fed_to + step).min(wire.len());
                buf.extend_from_slice(&wire[fed_to..end]);
                fed_to = end;
            }
            loop {
                let mut out = Vec::new();
                let f = r.feed(&buf, &mut out).expect("valid body");
                sent.extend_from_slice(&buf[f.pass.clone()]);
                sent.extend_from_slice(&out);
                buf.drain(..f.consumed);
                if f.done || f.consumed == 0 {
                    break;
                }
            }
            if r.is_done() || fed_to == wire.len() {
                return (sent, r.is_done(), buf);
            }
        }
    }

    #[test]
    fn a_content_length_body_passes_unchanged_and_stops_at_its_end() {
        for step in [1, 3, 100] {
            let (sent, done, rest) = run(Input::Length(5), Output::Raw, b"hello NEXT", step);
            assert_eq!(sent, b"hello");
            assert!(done);
            assert!(
                b" NEXT".starts_with(&rest),
                "step {step}: nothing past the body is consumed"
            );
        }
    }

    #[test]
    fn chunked_is_re_encoded_canonically_or_unwrapped() {
        let wire = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for step in [1, 2, 7, 64] {
            let (sent, done, _) = run(Input::Chunked, Output::Chunked, wire, step);
            let text = String::from_utf8(sent).unwrap();
            assert!(done);
            // Re-chunked at whatever boundaries arrived, no extension, no trailer.
            assert!(text.ends_with("0\r\n\r\n"), "{text:?}");
            assert!(
                !text.contains("ext") && !text.contains("Trailer"),
                "{text:?}"
            );
            let (raw, done, _) = run(Input::Chunked, Output::Raw, wire, step);
            assert_eq!(raw, b"abcde", "step {step}");
            assert!(done);
        }
    }

    #[test]
    fn frames_are_chunked_or_counted_against_their_content_length() {
        let mut r = Reframer::new(Input::Frames(None), Output::Chunked);
        let mut out = Vec::new();
        let f = r.feed(b"hello", &mut out).unwrap();
        assert_eq!((f.consumed, f.pass, f.done), (5, 0..0, false));
        r.end_of_input(true, &mut out).unwrap();
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");

        let mut r = Reframer::new(Input::Frames(Some(4)), Output::Raw);
        let mut out = Vec::new();
        assert_eq!(r.feed(b"ab", &mut out).unwrap().pass, 0..2);
        assert!(
            r.end_of_input(true, &mut out).is_err(),
            "2 of 4 announced bytes"
        );
        let mut r = Reframer::new(Input::Frames(Some(4)), Output::Raw);
        assert!(r.feed(b"abcde", &mut out).is_err(), "more than announced");
    }

    #[test]
    fn a_close_ends_only_a_close_delimited_body_and_only_when_clean() {
        let mut out = Vec::new();
        let mut r = Reframer::new(Input::UntilClose, Output::Raw);
        assert_eq!(r.feed(b"abc", &mut out).unwrap().pass, 0..3);
        assert!(
            r.end_of_input(false, &mut out).is_err(),
            "a TLS close without close_notify"
        );
        let mut r = Reframer::new(Input::UntilClose, Output::Chunked);
        r.feed(b"abc", &mut out).unwrap();
        r.end_of_input(true, &mut out).unwrap();
        assert!(out.ends_with(b"0\r\n\r\n"));
        let mut r = Reframer::new(Input::Length(3), Output::Raw);
        r.feed(b"ab", &mut out).unwrap();
        assert!(
            r.end_of_input(true, &mut out).is_err(),
            "short Content-Length body"
        );
        let mut r = Reframer::new(Input::Chunked, Output::Raw);
        r.feed(b"2\r\nab", &mut out).unwrap();
        assert!(
            r.end_of_input(true, &mut out).is_err(),
            "chunked body without its last chunk"
        );
    }

    #[test]
    fn an_empty_body_is_done_at_once_except_when_it_must_be_chunked() {
        let r = Reframer::new(Input::Length(0), Output::Raw);
        assert!(r.is_done());
        let mut r = Reframer::new(Input::Length(0), Output::Chunked);
        let mut out = Vec::new();
        let f = r.feed(b"", &mut out).unwrap();
        assert!(f.done);
        assert_eq!(out, LAST_CHUNK);
    }

    #[test]
    fn spliced_bytes_count_against_a_content_length() {
        let mut r = Reframer::new(Input::Length(10), Output::Raw);
        r.skipped(4);
        assert_eq!(
            (r.remaining(), r.payload_bytes(), r.is_done()),
            (Some(6), 4, false)
        );
        r.skipped(100);
        assert_eq!(
            (r.remaining(), r.payload_bytes(), r.is_done()),
            (Some(0), 10, true)
        );
    }

    #[test]
    fn broken_chunks_fail_and_keep_failing() {
        let mut r = Reframer::new(Input::Chunked, Output::Chunked);
        let mut out = Vec::new();
        assert!(r.feed(b"zz\r\n", &mut out).is_err());
        assert!(r.feed(b"1\r\na\r\n", &mut out).is_err());
        assert_eq!(r.payload_bytes(), 0);
    }
}
