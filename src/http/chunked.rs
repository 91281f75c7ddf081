//! Streaming, strict decoder for `Transfer-Encoding: chunked` bodies.
//!
//! Where a chunked body ends is exactly what smuggling attacks fight over, so
//! every deviation a lenient parser might paper over (bare LF, junk after the
//! size, a missing CRLF after data, oversized sizes) is an error here. The
//! decoder is a byte-level state machine so it works on whatever the socket
//! delivered, never needs the whole body, and never allocates.

use super::HttpError;
use std::io::Write;
use std::ops::Range;

/// The terminating zero-size chunk with an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Result of one `ChunkedDecoder::decode` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of input used by this call.
    pub consumed: usize,
    /// Payload bytes inside `input[..consumed]` (may be empty).
    pub data: Range<usize>,
    /// The terminating chunk and trailers are complete.
    pub done: bool,
}

/// Streaming chunked-body decoder; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size {
                digits: 0,
                size: 0,
                line: 0,
            },
        }
    }

    /// Process `input` from its start; returns after at most one contiguous
    /// payload range. Loop: `let d = dec.decode(&buf[pos..])?; use
    /// &buf[pos..][d.data]; pos += d.consumed;` until `done` or `consumed == 0`
    /// (more input needed). Bytes after the end of the body are not consumed.
    /// After an error every later call fails too.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, HttpError> {
        let mut pos = 0;
        let mut data = 0..0;
        loop {
            match self.state {
                State::Done => break,
                State::Failed(why) => return Err(HttpError::InvalidChunk(why)),
                State::Data { remaining } => {
                    // A second payload range would need a second call.
                    if !data.is_empty() || pos == input.len() {
                        break;
                    }
                    let avail = input.len() - pos;
                    let n = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    data = pos..pos + n;
                    pos += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                state => {
                    let Some(&b) = input.get(pos) else { break };
                    match state.step(b) {
                        Ok(next) => {
                            self.state = next;
                            pos += 1;
                        }
                        // Hand out the payload we already have; the bad byte
                        // is still unconsumed and fails the next call.
                        Err(_) if !data.is_empty() => break,
                        Err(why) => {
                            self.state = State::Failed(why);
                            return Err(HttpError::InvalidChunk(why));
                        }
                    }
                }
            }
        }
        Ok(Decoded {
            consumed: pos,
            data,
            done: self.is_done(),
        })
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

/// Append the chunk-size line `"{len:x}\r\n"`. Payload then `"\r\n"` are the
/// caller's to write. Never call it with 0: that is `LAST_CHUNK`.
pub fn write_chunk_header(len: usize, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{len:x}\r\n");
}

/// 16 hex digits is every u64; more can only be padding or an overflow attempt.
const MAX_SIZE_DIGITS: u8 = 16;
/// Bound on a chunk-size line including extensions (CRLF not counted).
const MAX_SIZE_LINE: usize = 4 * 1024;
/// Bound on the whole trailer section including its CRLFs.
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading chunk-size hex digits; `line` counts bytes on the size line.
    Size {
        digits: u8,
        size: u64,
        line: usize,
    },
    /// Whitespace after the size (RFC 9112 BWS): only more of it or ';' may follow.
    SizeWs {
        size: u64,
        line: usize,
    },
    /// Skipping chunk extensions up to CR.
    Ext {
        size: u64,
        line: usize,
    },
    /// Saw CR ending the size line.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer field line or of the final empty line.
    TrailerStart {
        total: usize,
    },
    TrailerLine {
        total: usize,
    },
    /// Saw CR; `last` when it ends the empty line that ends the body.
    TrailerLf {
        total: usize,
        last: bool,
    },
    Done,
    Failed(&'static str),
}

impl State {
    /// One framing byte. Data, Done and Failed are handled by `decode`.
    fn step(self, b: u8) -> Result<State, &'static str> {
        const BARE_LF: &str = "bare LF in chunked framing";
        const BAD_SIZE: &str = "invalid chunk size";
        Ok(match self {
            State::Size { digits, size, line } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err("chunk size too large");
                    }
                    let d = match b {
                        b'0'..=b'9' => b - b'0',
                        _ => (b | 0x20) - b'a' + 10,
                    };
                    State::Size {
                        digits: digits + 1,
                        size: (size << 4) | u64::from(d),
                        line: line + 1,
                    }
                }
                _ if digits == 0 => return Err(BAD_SIZE),
                b';' => State::Ext {
                    size,
                    line: line + 1,
                },
                b' ' | b'\t' => State::SizeWs {
                    size,
                    line: line + 1,
                },
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(BARE_LF),
                _ => return Err(BAD_SIZE),
            },
            State::SizeWs { size, line } => match b {
                _ if line >= MAX_SIZE_LINE => return Err("chunk size line too long"),
                b' ' | b'\t' => State::SizeWs {
                    size,
                    line: line + 1,
                },
                b';' => State::Ext {
                    size,
                    line: line + 1,
                },
                _ => return Err(BAD_SIZE),
            },
            State::Ext { size, line } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(BARE_LF),
                _ if line >= MAX_SIZE_LINE => return Err("chunk size line too long"),
                _ if is_ctl(b) => return Err("invalid chunk extension"),
                _ => State::Ext {
                    size,
                    line: line + 1,
                },
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::TrailerStart { total: 0 },
                b'\n' => State::Data { remaining: size },
                _ => return Err("bare CR in chunked framing"),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err("missing CRLF after chunk data"),
            },
            State::DataLf => match b {
                b'\n' => State::Size {
                    digits: 0,
                    size: 0,
                    line: 0,
                },
                _ => return Err("missing CRLF after chunk data"),
            },
            State::TrailerStart { total }
            | State::TrailerLine { total }
            | State::TrailerLf { total, .. }
                if total >= MAX_TRAILERS =>
            {
                return Err("trailer section too large")
            }
            State::TrailerStart { total } => match b {
                b'\r' => State::TrailerLf {
                    total: total + 1,
                    last: true,
                },
                b'\n' => return Err(BARE_LF),
                _ if is_ctl(b) => return Err("invalid trailer field"),
                _ => State::TrailerLine { total: total + 1 },
            },
            State::TrailerLine { total } => match b {
                b'\r' => State::TrailerLf {
                    total: total + 1,
                    last: false,
                },
                b'\n' => return Err(BARE_LF),
                _ if is_ctl(b) => return Err("invalid trailer field"),
                _ => State::TrailerLine { total: total + 1 },
            },
            State::TrailerLf { total, last } => match b {
                b'\n' if last => State::Done,
                b'\n' => State::TrailerStart { total: total + 1 },
                _ => return Err("bare CR in chunked framing"),
            },
            // `decode` never steps these; failing closed keeps that a non-panic.
            State::Data { .. } | State::Done | State::Failed(_) => {
                return Err("internal decoder state")
            }
        })
    }
}

/// Control bytes other than HTAB (CR and LF are handled before this is asked).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `wire` `step` bytes at a time the way the proxy does, growing a
    /// buffer; returns the payload and how many wire bytes were consumed.
    fn run(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), HttpError> {
        let mut dec = ChunkedDecoder::new();
        let mut payload = Vec::new();
        let (mut pos, mut have) = (0, 0);
        while !dec.is_done() {
            if have == wire.len() {
                return Err(HttpError::InvalidChunk("test: ran out of input"));
            }
            have = (have + step).min(wire.len());
            loop {
                let d = dec.decode(&wire[pos..have])?;
                assert!(d.consumed > 0 || d.data.is_empty());
                assert!(d.data.end <= d.consumed);
                payload.extend_from_slice(&wire[pos..][d.data]);
                pos += d.consumed;
                if d.done || d.consumed == 0 {
                    break;
                }
            }
        }
        Ok((payload, pos))
    }

    fn err(wire: &[u8]) -> &'static str {
        match run(wire, wire.len()) {
            Err(HttpError::InvalidChunk(why)) => why,
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(wire)),
        }
    }

    const WIRE: &[u8] = b"5\r\nhello\r\n1A;name=\"v\";x\r\nabcdefghijklmnopqrstuvwxyz\r\n\
        3 ;ext\r\n\r\n\n\r\n0;last\r\nX-Trailer: 1\r\nY: 2\r\n\r\nGET /next";

    #[test]
    fn whole_equals_byte_by_byte() {
        let body = b"helloabcdefghijklmnopqrstuvwxyz\r\n\n";
        let end = WIRE.len() - b"GET /next".len();
        for step in [WIRE.len(), 1, 2, 3, 7] {
            assert_eq!(run(WIRE, step), Ok((body.to_vec(), end)), "step {step}");
        }
    }

    #[test]
    fn one_call_stops_after_one_range() {
        let mut dec = ChunkedDecoder::new();
        let input = b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n";
        let d = dec.decode(input).unwrap();
        assert_eq!((d.consumed, d.data.clone(), d.done), (10, 3..5, false));
        let d2 = dec.decode(&input[10..]).unwrap();
        assert_eq!(
            (&input[10..][d2.data], d2.done, 10 + d2.consumed),
            (&b"cd"[..], true, input.len())
        );
        assert_eq!(
            dec.decode(b"more").unwrap(),
            Decoded {
                consumed: 0,
                data: 0..0,
                done: true
            }
        );
        assert_eq!(LAST_CHUNK, b"0\r\n\r\n");
        assert_eq!(run(LAST_CHUNK, 1), Ok((vec![], 5)));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(err(b"fffffffffffffffff\r\n"), "chunk size too large");
        assert_eq!(err(b"00000000000000001\r\n"), "chunk size too large");
        for bad in [
            &b"-1\r\n"[..],
            b"1 2\r\n",
            b"0x5\r\n",
            b" 5\r\n",
            b"\r\n",
            b"+5\r\n",
            b"5 \r\n",
            b"g\r\n",
            b";x\r\n",
        ] {
            assert_eq!(
                err(bad),
                "invalid chunk size",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // The largest 16-digit size is accepted; the body is just long.
        let mut dec = ChunkedDecoder::new();
        let d = dec.decode(b"ffffffffffffffff\r\nxy").unwrap();
        assert_eq!((d.consumed, d.data), (20, 18..20));
    }

    #[test]
    fn strict_line_ends() {
        assert_eq!(err(b"5\nhello\r\n0\r\n\r\n"), "bare LF in chunked framing");
        assert_eq!(
            err(b"5\r\nhello\n0\r\n\r\n"),
            "missing CRLF after chunk data"
        );
        assert_eq!(
            err(b"5\r\nhelloX\r\n0\r\n\r\n"),
            "missing CRLF after chunk data"
        );
        assert_eq!(err(b"5\rhello"), "bare CR in chunked framing");
        assert_eq!(err(b"5;a\nhello"), "bare LF in chunked framing");
        assert_eq!(err(b"0\r\n\n"), "bare LF in chunked framing");
        assert_eq!(err(b"0\r\nX: 1\n\r\n"), "bare LF in chunked framing");
        assert_eq!(err(b"0\r\n\rX"), "bare CR in chunked framing");
        assert_eq!(err(b"1;a\0b\r\nx\r\n"), "invalid chunk extension");
    }

    #[test]
    fn bounds() {
        let mut ext = b"1;".to_vec();
        ext.resize(MAX_SIZE_LINE, b'a');
        ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(run(&ext, 1000).map(|r| r.0), Ok(b"x".to_vec()));
        ext.insert(3, b'a');
        assert_eq!(err(&ext), "chunk size line too long");

        // One long field line; the section (field, CRLF, final CRLF) is exactly the cap.
        let mut trailers = b"0\r\nX: ".to_vec();
        trailers.resize(3 + MAX_TRAILERS - 4, b'a');
        trailers.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&trailers, 4096).map(|r| r.1), Ok(trailers.len()));
        trailers.insert(7, b'a');
        assert_eq!(err(&trailers), "trailer section too large");
    }

    #[test]
    fn data_before_error_then_error_sticks() {
        let mut dec = ChunkedDecoder::new();
        let input = b"3\r\nabc\r\nzz";
        let d = dec.decode(input).unwrap();
        assert_eq!((d.data, d.consumed), (3..6, 8));
        assert_eq!(
            dec.decode(&input[8..]),
            Err(HttpError::InvalidChunk("invalid chunk size"))
        );
        assert_eq!(
            dec.decode(b"0\r\n\r\n"),
            Err(HttpError::InvalidChunk("invalid chunk size"))
        );
    }

    #[test]
    fn chunk_header() {
        let mut out = Vec::new();
        write_chunk_header(0x1a2b, &mut out);
        write_chunk_header(1, &mut out);
        assert_eq!(out, b"1a2b\r\n1\r\n");
    }
}
