//! Per-thread counters and histograms, merged at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histograms hold (µs); larger values saturate.
const MAX_MICROS: u64 = 3_600_000_000;

pub const ERROR_KINDS: [&str; 8] = [
    "connect",
    "tls_handshake",
    "read",
    "write",
    "timeout",
    "http_parse",
    "status_non_2xx",
    // --http2: GOAWAY, RST_STREAM from the server, a protocol error.
    "http2",
];

pub struct Stats {
    /// Request latency in µs: from the send (closed loop) or the scheduled
    /// send time (open loop) to the last byte of the response; with
    /// --new-conn it includes connect and handshake.
    pub latency: Histogram<u64>,
    /// TCP connect + TLS handshake, µs.
    pub handshake: Histogram<u64>,
    /// Responses completed before the deadline.
    pub requests: u64,
    /// Responses completed in the grace period after the deadline.
    pub requests_in_grace: u64,
    /// Index = status / 100 (0 for anything outside 100..599).
    pub status: [u64; 6],
    pub errors: BTreeMap<&'static str, u64>,
    /// "kind: first words of the error text" → count.
    pub error_details: BTreeMap<String, u64>,
    /// HTTP bytes (plaintext), before the deadline and after.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections established (TCP, and TLS handshake when TLS).
    pub connections: u64,
    /// Of those, opened to replace a connection that broke.
    pub reconnects: u64,
    /// Keep-alive connections the server ended (Connection: close).
    pub server_closes: u64,
    /// --retry-reused: requests sent once more after their reused
    /// connection closed before any byte of the response.
    pub retried_reused: u64,
    /// TLS handshakes completed before the deadline, and how many resumed.
    pub handshakes: u64,
    pub resumed: u64,
    /// Full handshakes that needed a HelloRetryRequest (key share mismatch).
    pub hello_retries: u64,
    /// Open loop: sends that woke more than 5 ms after their slot.
    pub lagged_sends: u64,
    /// Keep-alive: time spent opening the connections before the clock
    /// started (longest thread).
    pub warmup: Duration,
    pub tls_version: Option<String>,
    pub tls_suite: Option<String>,
    pub alpn: Option<String>,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(MAX_MICROS as u128) as u64
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latency: new_histogram(),
            handshake: new_histogram(),
            requests: 0,
            requests_in_grace: 0,
            status: [0; 6],
            errors: BTreeMap::new(),
            error_details: BTreeMap::new(),
            bytes_in: 0,
            bytes_out: 0,
            connections: 0,
            reconnects: 0,
            server_closes: 0,
            retried_reused: 0,
            handshakes: 0,
            resumed: 0,
            hello_retries: 0,
            lagged_sends: 0,
            warmup: Duration::ZERO,
            tls_version: None,
            tls_suite: None,
            alpn: None,
        }
    }
}

impl Stats {
    pub fn error(&mut self, kind: &'static str, detail: &str) {
        *self.errors.entry(kind).or_default() += 1;
        if !detail.is_empty() {
            *self
                .error_details
                .entry(format!("{kind}: {detail}"))
                .or_default() += 1;
        }
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: Stats) {
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.handshake
            .add(&other.handshake)
            .expect("same histogram bounds");
        self.requests += other.requests;
        self.requests_in_grace += other.requests_in_grace;
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.error_details {
            *self.error_details.entry(k).or_default() += v;
        }
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.connections += other.connections;
        self.reconnects += other.reconnects;
        self.server_closes += other.server_closes;
        self.retried_reused += other.retried_reused;
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
        self.hello_retries += other.hello_retries;
        self.lagged_sends += other.lagged_sends;
        self.warmup = self.warmup.max(other.warmup);
        self.tls_version = self.tls_version.take().or(other.tls_version);
        self.tls_suite = self.tls_suite.take().or(other.tls_suite);
        self.alpn = self.alpn.take().or(other.alpn);
    }
}
