//! `--http2`: the load loops over HTTP/2 (ALPN h2), one worker thread's
//! share of the run, reporting into the same `Stats` as HTTP/1.1.
//!
//! Each of the thread's connections is a task that opens the connection
//! (TCP, the mTLS handshake of `conn::Conn`, then `h2`'s client preface over
//! `io::PollTls`), spawns `h2`'s connection driver, and runs `--streams`
//! stream slots on it, each a closed loop (or its share of the open-loop
//! rate): send the request, read the whole response, release the window,
//! count it. A stream-level failure (the server resets the stream, our
//! timeout cancels it) is counted and the slot goes on on the same
//! connection; a connection-level one (GOAWAY, I/O, a protocol error) ends
//! every slot of the connection, which then reconnects.
//!
//! Why `h2` and not a hand-written frame layer: it is the implementation
//! the gateway serves with (already in the tree, same version), and a
//! generator needs all of HPACK's decoder (Huffman, the dynamic table) to
//! read nginx's and HAProxy's responses honestly, plus flow control both
//! ways; a frame layer that did all that correctly would not be small, and
//! one that did less would measure something else.

pub mod io;
pub mod request;

use std::cell::RefCell;
use std::future::poll_fn;
use std::ops::Range;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::SendStream;
use monoio::task::JoinHandle;
use monoio::time::{sleep_until, timeout_at};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::args::Args;
use crate::conn::{Conn, Failure, TlsInfo};
use crate::stats::Stats;
use crate::worker::{
    mono, next_start, record_response, record_tls, schedule, CLOSE_WAIT, CONNECT_BACKOFF, GRACE,
    WARMUP_MAX,
};
use request::{classify, Scope, Template};

type Tls = (Arc<ClientConfig>, ServerName<'static>);

struct Shared {
    args: Arc<Args>,
    template: Template,
    tls: Tls,
    start: Instant,
    deadline: Instant,
    hard_deadline: Instant,
    stats: RefCell<Stats>,
}

/// An open HTTP/2 connection: the handle streams are opened with, and the
/// task that drives the connection (it ends when the connection does).
struct Live {
    send: SendRequest<Bytes>,
    driver: JoinHandle<()>,
}

/// Runs this thread's connections (`slots`, global indices) to the end of
/// the run; the second barrier wait starts the clock, as for HTTP/1.1.
pub async fn run(slots: Range<usize>, args: Arc<Args>, tls: Tls, barrier: Arc<Barrier>) -> Stats {
    // Validated in main before any thread started.
    let template = match Template::from_args(&args) {
        Ok(t) => t,
        Err(e) => {
            let mut stats = Stats::default();
            stats.error("http2", &e);
            barrier.wait();
            return stats;
        }
    };
    let mut stats = Stats::default();
    // Warm-up, as HTTP/1.1's: every connection opened and one unrecorded
    // request answered on it before the clock starts.
    let t0 = Instant::now();
    let until = t0 + args.timeout.min(WARMUP_MAX);
    // The connection drivers outlive the warm-up; this bounds them whatever
    // the server does (the clock starts within WARMUP_MAX of here).
    let driver_stop = t0 + 2 * WARMUP_MAX + args.duration + GRACE;
    let opens: Vec<_> = slots
        .clone()
        .map(|_| {
            let (args, tls) = (args.clone(), tls.clone());
            let req = template.build();
            let head = template.head_request;
            let body = template.body.clone();
            monoio::spawn(async move {
                let opened = timeout_at(mono(until), open(&args, &tls, driver_stop)).await;
                let (live, info, done) = match opened {
                    Ok(Ok(o)) => o,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(("timeout", "connect + handshake (warm-up)".into())),
                };
                let mut bytes = (0, 0);
                let first = exchange(live.send.clone(), req, body, head, &mut bytes);
                match timeout_at(mono(until), first).await {
                    Ok(Ok(_)) => Ok(Some((live, info, t0, done))),
                    Ok(Err(e)) => {
                        let (kind, detail, _) = classify(&e);
                        Err((kind, format!("{detail} (warm-up)")))
                    }
                    Err(_) => Err(("timeout", "no response to the warm-up request".into())),
                }
            })
        })
        .collect();
    let mut initial: Vec<Option<Live>> = Vec::with_capacity(opens.len());
    for open in opens {
        match open.await {
            Ok(Some((live, info, t0, done))) => {
                record_tls(&mut stats, Some(info), t0, done, true);
                initial.push(Some(live));
            }
            Ok(None) => initial.push(None),
            Err((kind, detail)) => {
                stats.error(kind, &detail);
                initial.push(None);
            }
        }
    }
    stats.warmup = Instant::now() - t0;
    barrier.wait();
    let start = Instant::now();
    let deadline = start + args.duration;
    let sh = Rc::new(Shared {
        args,
        template,
        tls,
        start,
        deadline,
        hard_deadline: deadline + GRACE,
        stats: RefCell::new(stats),
    });
    let tasks: Vec<_> = slots
        .zip(initial)
        .map(|(g, live)| monoio::spawn(connection_loop(sh.clone(), g, live)))
        .collect();
    for t in tasks {
        t.await;
    }
    match Rc::try_unwrap(sh) {
        Ok(sh) => sh.stats.into_inner(),
        // A task still holds it (cannot happen: all were awaited); its
        // figures are copied out rather than lost.
        Err(sh) => std::mem::take(&mut *sh.stats.borrow_mut()),
    }
}

/// TCP, the mTLS handshake (h2 must be chosen by ALPN), the client preface;
/// the connection's driver runs as its own task until the connection ends
/// or `driver_stop`.
async fn open(
    args: &Args,
    tls: &Tls,
    driver_stop: Instant,
) -> Result<(Live, TlsInfo, Instant), (&'static str, String)> {
    let conn = Conn::open(args.target.addr, Some((&tls.0, &tls.1)))
        .await
        .map_err(|f| (f.kind(), f.detail().to_string()))?;
    let done = Instant::now();
    let Some(info) = conn.tls_info() else {
        return Err(("tls_handshake", "no TLS connection".into()));
    };
    if info.alpn.as_deref() != Some("h2") {
        let chose = info.alpn.as_deref().unwrap_or("no protocol");
        let f = Failure::TlsHandshake(format!("server did not choose h2 by ALPN ({chose})"));
        return Err((f.kind(), f.detail().to_string()));
    }
    let (tcp, Some(client), plain) = conn.into_parts() else {
        return Err(("tls_handshake", "no TLS connection".into()));
    };
    let io = io::PollTls::new(tcp, client, plain)
        .map_err(|e| ("connect", format!("readiness mode: {e}")))?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(args.h2_window)
        .initial_connection_window_size(args.h2_window.saturating_mul(16).min(0x7fff_ffff))
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| {
            let (kind, detail, _) = classify(&e);
            (kind, format!("{detail} (client preface)"))
        })?;
    let driver = monoio::spawn(async move {
        // Its errors reach every stream in flight, which count them.
        monoio::select! {
            _ = connection => {},
            _ = sleep_until(mono(driver_stop)) => {},
        }
    });
    Ok((Live { send, driver }, info, done))
}

/// One connection slot: its stream slots until the deadline, reconnecting
/// when the connection breaks.
async fn connection_loop(sh: Rc<Shared>, g: usize, initial: Option<Live>) {
    let args = &sh.args;
    let m = args.streams;
    let total = args.connections * m;
    let mut schedules: Vec<(Option<Instant>, Duration)> = (0..m)
        .map(|s| schedule(args, sh.start, g * m + s, total))
        .collect();
    let mut live = initial;
    let mut broke = false;
    loop {
        let now = Instant::now();
        if now >= sh.deadline {
            break;
        }
        let l = match live.take() {
            Some(l) => l,
            None => {
                let until = (now + args.timeout).min(sh.hard_deadline);
                match timeout_at(mono(until), open(args, &sh.tls, sh.hard_deadline)).await {
                    Ok(Ok((l, info, done))) => {
                        let mut st = sh.stats.borrow_mut();
                        if broke {
                            st.reconnects += 1;
                        }
                        record_tls(&mut st, Some(info), now, done, done <= sh.deadline);
                        l
                    }
                    Ok(Err((kind, detail))) => {
                        sh.stats.borrow_mut().error(kind, &detail);
                        broke = true;
                        if kind == "connect" {
                            let until = (Instant::now() + CONNECT_BACKOFF).min(sh.deadline);
                            sleep_until(mono(until)).await;
                        }
                        continue;
                    }
                    Err(_) => {
                        sh.stats
                            .borrow_mut()
                            .error("timeout", "connect + handshake");
                        broke = true;
                        continue;
                    }
                }
            }
        };
        let Live { send, driver } = l;
        let tasks: Vec<_> = schedules
            .iter()
            .map(|&(next, interval)| {
                monoio::spawn(stream_loop(sh.clone(), send.clone(), next, interval))
            })
            .collect();
        // With the last handle gone h2 ends the connection (GOAWAY, then
        // close_notify) once its streams are done.
        drop(send);
        broke = false;
        for (slot, t) in tasks.into_iter().enumerate() {
            let (slot_broke, next) = t.await;
            broke |= slot_broke;
            schedules[slot].0 = next;
        }
        let until = (Instant::now() + CLOSE_WAIT).min(sh.hard_deadline);
        let _ = timeout_at(mono(until), driver).await;
        if !broke {
            break;
        }
    }
}

/// One stream slot on one connection: requests until the deadline, or
/// until the connection fails (true). Returns its open-loop schedule.
async fn stream_loop(
    sh: Rc<Shared>,
    send: SendRequest<Bytes>,
    mut next_send: Option<Instant>,
    interval: Duration,
) -> (bool, Option<Instant>) {
    let args = &sh.args;
    let t = &sh.template;
    while let Some(started) = next_start(&mut next_send, interval, sh.deadline, &sh.stats).await {
        let request_deadline = (Instant::now() + args.timeout).min(sh.hard_deadline);
        let mut bytes = (0u64, 0u64);
        // A timeout drops the exchange: h2 resets the stream (CANCEL).
        let ex = exchange(
            send.clone(),
            t.build(),
            t.body.clone(),
            t.head_request,
            &mut bytes,
        );
        let res = timeout_at(mono(request_deadline), ex).await;
        let done = Instant::now();
        let mut st = sh.stats.borrow_mut();
        st.bytes_in += bytes.0;
        st.bytes_out += bytes.1;
        match res {
            Ok(Ok(status)) => record_response(&mut st, status, started, done, sh.deadline),
            Ok(Err(e)) => {
                let (kind, detail, scope) = classify(&e);
                st.error(kind, &detail);
                if scope == Scope::Connection {
                    return (true, next_send);
                }
            }
            Err(_) => {
                let what = if done >= sh.hard_deadline {
                    "no response by the end of the grace period"
                } else {
                    "no response within --timeout"
                };
                st.error("timeout", what);
            }
        }
    }
    (false, next_send)
}

/// One request on its own stream, the whole response read (DATA discarded,
/// its window given back at once). The status, or the h2 error. `bytes` is
/// (DATA received, DATA sent).
async fn exchange(
    send: SendRequest<Bytes>,
    req: http::Request<()>,
    body: Bytes,
    head_request: bool,
    bytes: &mut (u64, u64),
) -> Result<u16, h2::Error> {
    let mut send = send.ready().await?;
    let (response, mut stream) = send.send_request(req, body.is_empty())?;
    if !body.is_empty() {
        bytes.1 += send_body(&mut stream, body).await?;
    }
    let response = response.await?;
    let status = response.status().as_u16();
    let mut recv = response.into_body();
    if head_request {
        return Ok(status);
    }
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        bytes.0 += chunk.len() as u64;
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

/// The request body, as the server's window allows.
async fn send_body(stream: &mut SendStream<Bytes>, mut body: Bytes) -> Result<u64, h2::Error> {
    let total = body.len() as u64;
    while !body.is_empty() {
        stream.reserve_capacity(body.len());
        let mut granted = stream.capacity();
        if granted == 0 {
            granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(r) => r?,
                None => return Err(h2::Error::from(h2::Reason::CANCEL)),
            };
        }
        if granted == 0 {
            continue;
        }
        let chunk = body.split_to(granted.min(body.len()));
        stream.send_data(chunk, body.is_empty())?;
    }
    Ok(total)
}
