//! The built-in echo backend: answers every method and path with JSON of the
//! request, and can be steered (status, size, chunking, delay) by request
//! headers. Plain HTTP/1.1 with keep-alive, thread-per-core like the gateway,
//! fast enough to sit behind it in benchmarks.
//!
//! Steering headers: `x-echo-status: N`, `x-echo-bytes: N` (N bytes, byte i =
//! i % 251, instead of JSON), `x-echo-chunked: 1`, `x-echo-delay-ms: N`.
//! A HEAD gets the head a GET would get and no body (RFC 9110 section 9.3.2).

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_lc_rs::digest;
use rustls::ServerConfig;
use tracing::{debug, info};

use crate::http::chunked::{write_chunk_header, ChunkedDecoder, LAST_CHUNK};
use crate::http::request::parse_request;
use crate::http::response::{reason_phrase, write_error_response};
use crate::http::{BodyFraming, Limits, Parsed};
use crate::identity::ClientCert;
use crate::io::{write_all, Transport};
use crate::runtime::{self, Driver};
use crate::tls::{HandshakeReads, TlsStream};

/// Longest delay a request may ask for, so a stray header cannot park a connection forever.
const MAX_DELAY_MS: u64 = 120_000;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Binds `addrs` on `workers` cores and serves until the process exits.
/// Returns the bound addresses and the worker threads.
/// With `tls`, every connection is TLS (and mTLS when the config verifies
/// clients): a test backend for the gateway's upstream TLS.
pub fn start(
    addrs: &[SocketAddr],
    workers: usize,
    driver: Driver,
    tls: Option<Arc<ServerConfig>>,
) -> Result<(Vec<SocketAddr>, Vec<std::thread::JoinHandle<()>>), String> {
    let mut per_worker: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for addr in addrs {
        let sockets = runtime::bind_reuseport(*addr, workers)
            .map_err(|e| format!("echo: cannot listen on {addr}: {e}"))?;
        if let Some(s) = sockets.first() {
            bound.push(s.local_addr().map_err(|e| e.to_string())?);
        }
        for (w, s) in sockets.into_iter().enumerate() {
            per_worker[w].push(s);
        }
    }
    let tls_on = tls.is_some();
    let slots = Arc::new(Mutex::new(
        per_worker.into_iter().map(Some).collect::<Vec<_>>(),
    ));
    let handles = runtime::spawn_workers("echo", driver, workers, move |index| {
        let sockets = slots
            .lock()
            .ok()
            .and_then(|mut s| s.get_mut(index).and_then(Option::take))
            .unwrap_or_default();
        let tls = tls.clone();
        async move {
            for socket in sockets {
                match runtime::adopt_listener(socket, driver) {
                    Ok(l) => {
                        monoio::spawn(accept_loop(l, tls.clone()));
                    }
                    Err(e) => tracing::error!(error = %e, "echo: cannot adopt listener"),
                }
            }
            runtime::shutdown_requested().await;
        }
    })
    .map_err(|e| format!("echo: cannot start workers: {e}"))?;
    let mode = if tls_on {
        "HTTP/1.1 over TLS"
    } else {
        "plain HTTP/1.1"
    };
    for addr in &bound {
        info!(address = %addr, workers, mode, "echo backend listening");
    }
    Ok((bound, handles))
}

async fn accept_loop(listener: monoio::net::TcpListener, tls: Option<Arc<ServerConfig>>) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
                match &tls {
                    None => {
                        monoio::spawn(serve(tcp, id, None));
                    }
                    Some(config) => {
                        let config = config.clone();
                        monoio::spawn(async move {
                            match TlsStream::accept(
                                tcp,
                                move |_| Some(config),
                                HandshakeReads::Available,
                            )
                            .await
                            {
                                Ok((stream, _)) => {
                                    let subject =
                                        ClientCert::from_chain(stream.peer_certificates())
                                            .map(|c| c.subject);
                                    serve(stream, id, Some(subject)).await;
                                }
                                Err((e, _)) => debug!(error = ?e, "echo: TLS handshake failed"),
                            }
                        });
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, "echo: accept failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// What the request asked of us, copied out of its head.
#[derive(Default)]
struct Steering {
    status: u16,
    bytes: Option<u64>,
    chunked: bool,
    delay_ms: u64,
    /// A HEAD request: the response is the head alone. A body after it would
    /// be read as the start of the next response on this connection.
    head: bool,
}

/// `tls`: None for plain HTTP; Some(client certificate subject) over TLS.
async fn serve<S: Transport>(mut tcp: S, connection_id: u64, tls: Option<Option<String>>) {
    let limits = Limits {
        max_header_bytes: 64 * 1024,
        max_headers: 256,
    };
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    let mut json = String::with_capacity(1024);
    let mut requests = 0u64;
    loop {
        // Head: parse what we have, read more while partial.
        let (framing, keep_alive, steer) = loop {
            if !rbuf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; 256];
                match parse_request(&rbuf, &mut headers, &limits) {
                    Ok(Parsed::Complete(req)) => {
                        let steer = describe(&req, &mut json);
                        let parsed = (req.framing, req.keep_alive, steer);
                        let len = req.head_len;
                        rbuf.drain(..len);
                        break parsed;
                    }
                    Ok(Parsed::Partial) => {}
                    Err(e) => {
                        out.clear();
                        write_error_response(
                            e.status(),
                            e.code(),
                            e.message(),
                            true,
                            &[],
                            &mut out,
                        );
                        let _ = write_all(&mut tcp, std::mem::take(&mut out)).await;
                        tcp.close().await;
                        return;
                    }
                }
            }
            let (res, buf) = tcp.read_append(std::mem::take(&mut rbuf)).await;
            rbuf = buf;
            match res {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        };
        requests += 1;

        // Body: read it whole (streamed through the digest, never stored).
        let mut hasher = digest::Context::new(&digest::SHA256);
        let mut body_bytes: u64 = 0;
        match framing {
            BodyFraming::ContentLength(mut remaining) => {
                while remaining > 0 {
                    if rbuf.is_empty() {
                        let (res, buf) = tcp.read_append(std::mem::take(&mut rbuf)).await;
                        rbuf = buf;
                        if !matches!(res, Ok(n) if n > 0) {
                            return;
                        }
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(rbuf.len());
                    hasher.update(&rbuf[..take]);
                    rbuf.drain(..take);
                    body_bytes += take as u64;
                    remaining -= take as u64;
                }
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                loop {
                    let mut pos = 0;
                    while pos < rbuf.len() && !decoder.is_done() {
                        let d = match decoder.decode(&rbuf[pos..]) {
                            Ok(d) => d,
                            Err(_) => return,
                        };
                        let data = &rbuf[pos..][d.data.clone()];
                        hasher.update(data);
                        body_bytes += data.len() as u64;
                        pos += d.consumed;
                        if d.consumed == 0 {
                            break;
                        }
                    }
                    rbuf.drain(..pos);
                    if decoder.is_done() {
                        break;
                    }
                    let (res, buf) = tcp.read_append(std::mem::take(&mut rbuf)).await;
                    rbuf = buf;
                    if !matches!(res, Ok(n) if n > 0) {
                        return;
                    }
                }
            }
            BodyFraming::None | BodyFraming::UntilClose => {}
        }
        let digest = hasher.finish();
        let _ = write!(json, ",\"body_bytes\":{body_bytes},\"body_sha256\":\"");
        for b in digest.as_ref() {
            let _ = write!(json, "{b:02x}");
        }
        let _ = write!(
            json,
            "\",\"connection\":{{\"id\":{connection_id},\"requests\":{requests}}}"
        );
        if let Some(subject) = &tls {
            json.push_str(",\"tls\":{\"client_subject\":");
            push_json_opt(&mut json, subject.as_deref());
            json.push('}');
        }
        json.push('}');

        if steer.delay_ms > 0 {
            monoio::time::sleep(Duration::from_millis(steer.delay_ms.min(MAX_DELAY_MS))).await;
        }
        if write_response(&mut tcp, &mut out, &json, &steer, keep_alive)
            .await
            .is_err()
            || !keep_alive
        {
            tcp.close().await;
            return;
        }
    }
}

async fn write_response<S: Transport>(
    tcp: &mut S,
    out: &mut Vec<u8>,
    json: &str,
    steer: &Steering,
    keep_alive: bool,
) -> std::io::Result<()> {
    out.clear();
    let status = if (100..1000).contains(&steer.status) {
        steer.status
    } else {
        200
    };
    let content_type = if steer.bytes.is_some() {
        "application/octet-stream"
    } else {
        "application/json"
    };
    let body_len = steer.bytes.unwrap_or(json.len() as u64);
    let _ = write!(
        Vec8(out),
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n",
        reason_phrase(status)
    );
    if steer.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else {
        let _ = write!(Vec8(out), "Content-Length: {body_len}\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if steer.head {
        return flush(tcp, out).await;
    }
    match steer.bytes {
        None => {
            if steer.chunked {
                write_chunk_header(json.len(), out);
                out.extend_from_slice(json.as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(LAST_CHUNK);
            } else {
                out.extend_from_slice(json.as_bytes());
            }
            flush(tcp, out).await
        }
        Some(total) => {
            flush(tcp, out).await?;
            let pattern = pattern();
            let mut sent = 0u64;
            while sent < total {
                let n = usize::try_from(total - sent)
                    .unwrap_or(usize::MAX)
                    .min(pattern.len());
                if steer.chunked {
                    out.clear();
                    write_chunk_header(n, out);
                    flush(tcp, out).await?;
                }
                // The pattern buffer is lent to the write (owned-buffer I/O) and
                // returned, so large responses copy nothing.
                let (res, buf) = tcp.write_range(take_pattern(), 0..n).await;
                PATTERN_BUF.with(|p| *p.borrow_mut() = Some(buf));
                res?;
                if steer.chunked {
                    out.clear();
                    out.extend_from_slice(b"\r\n");
                    flush(tcp, out).await?;
                }
                sent += n as u64;
            }
            if steer.chunked {
                out.clear();
                out.extend_from_slice(LAST_CHUNK);
                flush(tcp, out).await?;
            }
            Ok(())
        }
    }
}

async fn flush<S: Transport>(tcp: &mut S, out: &mut Vec<u8>) -> std::io::Result<()> {
    let (res, buf) = write_all(tcp, std::mem::take(out)).await;
    *out = buf;
    res
}

thread_local! {
    static PATTERN_BUF: std::cell::RefCell<Option<Vec<u8>>> = const { std::cell::RefCell::new(None) };
}

/// This thread's owned copy of [`pattern`] (made on first use).
fn take_pattern() -> Vec<u8> {
    PATTERN_BUF
        .with(|p| p.borrow_mut().take())
        .filter(|b| b.len() == pattern().len())
        .unwrap_or_else(|| pattern().to_vec())
}

/// 251 * 256 bytes of i % 251: a whole number of periods, so consecutive
/// slices continue the pattern.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| (0..251 * 256).map(|i| (i % 251) as u8).collect())
}

/// Writes the request's JSON (without the closing brace and body fields)
/// into `json` and reads the steering headers.
fn describe(req: &crate::http::request::Request<'_, '_>, json: &mut String) -> Steering {
    json.clear();
    json.push_str("{\"method\":");
    push_json_str(json, req.method);
    json.push_str(",\"path\":");
    push_json_str(json, req.path());
    json.push_str(",\"query\":");
    push_json_opt(json, req.query());
    json.push_str(",\"host\":");
    push_json_opt(json, req.host);
    json.push_str(",\"headers\":{");
    let mut steer = Steering {
        head: req.method == "HEAD",
        ..Steering::default()
    };
    let mut first = true;
    for (i, h) in req.headers.iter().enumerate() {
        let name = h.name;
        // Duplicates are joined onto the first occurrence.
        if req.headers[..i]
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        if !first {
            json.push(',');
        }
        first = false;
        push_json_str(json, &name.to_ascii_lowercase());
        json.push(':');
        let mut value = String::new();
        for (j, d) in req.headers.iter().enumerate().skip(i) {
            if d.name.eq_ignore_ascii_case(name) {
                if j != i {
                    value.push_str(", ");
                }
                value.push_str(&String::from_utf8_lossy(d.value));
            }
        }
        push_json_str(json, &value);
        let v = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "x-echo-status" => steer.status = v.parse().unwrap_or(0),
            "x-echo-bytes" => steer.bytes = v.parse().ok(),
            "x-echo-chunked" => steer.chunked = v == "1" || v.eq_ignore_ascii_case("true"),
            "x-echo-delay-ms" => steer.delay_ms = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    json.push('}');
    steer
}

fn push_json_opt(json: &mut String, v: Option<&str>) {
    match v {
        Some(s) => push_json_str(json, s),
        None => json.push_str("null"),
    }
}

fn push_json_str(json: &mut String, s: &str) {
    json.push('"');
    for ch in s.chars() {
        match ch {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", c as u32);
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

/// `fmt::Write` onto a byte vector, for `write!` of ASCII heads.
struct Vec8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Vec8<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
