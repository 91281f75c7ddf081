//! Shared pieces of the fuzz targets in `src/bin/` (one file per target):
//! deterministic split points drawn from the input, the prefix sampling the
//! head parsers are checked with, and a comparable summary of a parsed head.
//!
//! Every target fuzzes a pure function of Portcullis (bytes in, verdict out;
//! no sockets, no clock), so a failing input replays exactly. Properties are
//! checked with `assert!`: a panic is how libFuzzer learns about a finding, and
//! the message says which property broke.

use portcullis::http::{BodyFraming, HttpError, Parsed};

/// Piece lengths for feeding a streaming decoder, from a seed the fuzzer
/// controls (so it can search over splits as well as bytes). Mostly small
/// pieces, where state-machine edges live, with some larger ones.
pub struct Pieces(u64);

impl Pieces {
    pub fn new(seed: u8) -> Self {
        // Never zero: xorshift would stay at zero forever.
        Pieces((0x9e37_79b9_7f4a_7c15 ^ u64::from(seed).wrapping_mul(0x1000_0000_01b3)) | 1)
    }

    /// A length in `1..=max.max(1)`.
    pub fn next(&mut self, max: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        let bound = match x % 4 {
            0 => 1,
            1 => 8,
            2 => 64,
            _ => max,
        };
        1 + (x >> 8) as usize % bound.clamp(1, max.max(1))
    }
}

/// Prefix lengths of a `len`-byte buffer worth re-parsing: all of them for
/// short inputs, otherwise both ends and an even spread (a head parser is
/// called again on every read, so each prefix is a state it really sees).
/// Checking every prefix of a long input would make one run quadratic.
pub fn prefixes(len: usize) -> Vec<usize> {
    if len <= 96 {
        return (0..len).collect();
    }
    let mut ks: Vec<usize> = (0..16).chain(len - 16..len).collect();
    ks.extend((1..32).map(|i| len * i / 32));
    ks.sort_unstable();
    ks.dedup();
    ks
}

/// What a head parser said, in a form that can be compared and printed.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<T> {
    Complete(T),
    Partial,
    Error(HttpError),
}

impl<T> Verdict<T> {
    pub fn from_result<U>(r: Result<Parsed<U>, HttpError>, f: impl FnOnce(U) -> T) -> Self {
        match r {
            Ok(Parsed::Complete(head)) => Verdict::Complete(f(head)),
            Ok(Parsed::Partial) => Verdict::Partial,
            Err(e) => Verdict::Error(e),
        }
    }

    pub fn is_complete(&self) -> bool {
        matches!(self, Verdict::Complete(_))
    }
}

/// The fields of a parsed request or response head that the proxy acts on.
#[derive(Debug, PartialEq, Eq)]
pub struct HeadSummary {
    pub start_line: Vec<String>,
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    pub head_len: usize,
    pub host: Option<String>,
    pub framing: BodyFraming,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

pub fn header_list(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}
