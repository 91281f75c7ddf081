//! One worker thread: its own monoio runtime, a task per connection, its own
//! statistics (no sharing between threads until the end).

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use monoio::time::{sleep_until, timeout_at, TimeDriver};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind};

use crate::args::Args;
use crate::conn::{Conn, Failure, TlsInfo};
use crate::http::{Parser, Progress, Response};
use crate::stats::{micros, Stats};
use crate::tls::TlsSetup;

/// In-flight requests may finish this long after the deadline; then every
/// loop has stopped, whatever the server does.
pub const GRACE: Duration = Duration::from_secs(2);
/// Longest the keep-alive warm-up (opening connections before the clock
/// starts) may take; slots not connected by then connect in their loop.
pub const WARMUP_MAX: Duration = Duration::from_secs(2);
/// Pause after a failed TCP connect before the next attempt, so a refused
/// port does not turn into a busy loop through the ephemeral port range.
pub(crate) const CONNECT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait for close_notify to be written at the end.
pub(crate) const CLOSE_WAIT: Duration = Duration::from_millis(100);
/// Open loop: a send that wakes this much after its slot means the client
/// itself is too busy to hold the rate (reported, since it skews results).
pub(crate) const TIMER_LAG_WARN: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Epoll,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Epoll => "epoll",
        }
    }
}

pub struct ThreadPlan {
    pub index: usize,
    /// Global indices of this thread's connections.
    pub slots: Range<usize>,
    pub core: Option<usize>,
}

struct Shared {
    args: Arc<Args>,
    request: Rc<[u8]>,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    head_request: bool,
    start: Instant,
    deadline: Instant,
    hard_deadline: Instant,
    stats: RefCell<Stats>,
}

/// Runs one worker thread to completion and returns its statistics.
pub fn run_thread(
    plan: ThreadPlan,
    args: Arc<Args>,
    tls: Option<TlsSetup>,
    request: Arc<[u8]>,
    driver: Driver,
    barrier: Arc<Barrier>,
    abort: Arc<AtomicBool>,
) -> io::Result<Stats> {
    if let Some(core) = plan.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            eprintln!(
                "pcl-load: thread {}: could not pin to core {core}",
                plan.index
            );
        }
    }
    let conns = plan.slots.len();
    let tls = tls.map(|t| (t.thread_config(conns), t.server_name.clone()));
    let entries = (conns * 4).next_power_of_two().clamp(256, 32768) as u32;
    // Build the runtime before the first barrier, and reach it even if that
    // failed (raising `abort`), so no thread is ever left waiting.
    let runtime = build_runtime(driver, entries);
    if runtime.is_err() {
        abort.store(true, Ordering::SeqCst);
    }
    barrier.wait();
    let runtime = runtime?;
    if abort.load(Ordering::SeqCst) {
        return Ok(Stats::default());
    }
    if args.http2 {
        let tls = tls.ok_or_else(|| io::Error::other("--http2 needs TLS"))?;
        let run = crate::http2::run(plan.slots, args, tls, barrier);
        return Ok(match runtime {
            Runtime::IoUring(mut rt) => rt.block_on(run),
            Runtime::Epoll(mut rt) => rt.block_on(run),
        });
    }
    let run = async move {
        let mut stats = Stats::default();
        // Keep-alive runs measure the steady state: connections are opened,
        // and each carries one request the server has fully answered (so
        // its side of the handshake is done too), before the clock starts;
        // bounded by
        // --timeout and WARMUP_MAX. A slot whose warm-up failed connects in
        // its loop.
        let mut initial: Vec<Option<Conn>> = (0..conns).map(|_| None).collect();
        if !args.new_conn {
            let t0 = Instant::now();
            let until = t0 + args.timeout.min(WARMUP_MAX);
            let head_request = args.method.eq_ignore_ascii_case("HEAD");
            let opens: Vec<_> = (0..conns)
                .map(|_| {
                    let tls = tls.clone();
                    let addr = args.target.addr;
                    let request = request.clone();
                    monoio::spawn(async move {
                        let tls = tls.as_ref().map(|(c, n)| (c, n));
                        warm_up(addr, tls, &request, head_request, until).await
                    })
                })
                .collect();
            for (slot, open) in opens.into_iter().enumerate() {
                match open.await {
                    Ok(Some((c, t, done))) => {
                        record_open(&mut stats, &c, t, done, true);
                        initial[slot] = Some(c);
                    }
                    Ok(None) => {}
                    Err((kind, detail)) => stats.error(kind, &detail),
                }
            }
            stats.warmup = Instant::now() - t0;
        }
        // Everyone starts the clock together.
        barrier.wait();
        let start = Instant::now();
        let deadline = start + args.duration;
        let shared = Rc::new(Shared {
            request: Rc::from(&request[..]),
            head_request: args.method.eq_ignore_ascii_case("HEAD"),
            tls,
            start,
            deadline,
            hard_deadline: deadline + GRACE,
            stats: RefCell::new(stats),
            args,
        });
        let tasks: Vec<_> = plan
            .slots
            .zip(initial)
            .map(|(g, c)| monoio::spawn(connection_loop(shared.clone(), g, c)))
            .collect();
        for t in tasks {
            t.await;
        }
        let shared = Rc::try_unwrap(shared).ok().expect("all tasks finished");
        shared.stats.into_inner()
    };
    Ok(match runtime {
        Runtime::IoUring(mut rt) => rt.block_on(run),
        Runtime::Epoll(mut rt) => rt.block_on(run),
    })
}

enum Runtime {
    IoUring(monoio::Runtime<TimeDriver<monoio::IoUringDriver>>),
    Epoll(monoio::Runtime<TimeDriver<monoio::LegacyDriver>>),
}

fn build_runtime(driver: Driver, entries: u32) -> io::Result<Runtime> {
    Ok(match driver {
        Driver::IoUring => {
            // COOP_TASKRUN: completions are delivered when this thread next
            // enters the kernel instead of by interrupting it; a quarter
            // more requests per second on loopback here. Kernels before 5.19
            // refuse the flag: build without it then.
            let mut coop = io_uring::IoUring::builder();
            coop.setup_coop_taskrun();
            let build = |urb: io_uring::Builder| {
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .uring_builder(urb)
                    .enable_timer()
                    .with_entries(entries)
                    .build()
            };
            match build(coop) {
                Ok(rt) => Runtime::IoUring(rt),
                Err(_) => Runtime::IoUring(build(io_uring::IoUring::builder())?),
            }
        }
        Driver::Epoll => Runtime::Epoll(
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?,
        ),
    })
}

pub(crate) fn mono(t: Instant) -> monoio::time::Instant {
    monoio::time::Instant::from_std(t)
}

/// Open loop: the first send of request slot `index` of `slots`, and the
/// interval between its sends (slots together send at evenly spaced
/// instants). None in closed loop.
pub(crate) fn schedule(
    args: &Args,
    start: Instant,
    index: usize,
    slots: usize,
) -> (Option<Instant>, Duration) {
    match args.rate {
        Some(rate) => (
            Some(start + Duration::from_secs_f64(index as f64 / rate)),
            Duration::from_secs_f64(slots as f64 / rate),
        ),
        None => (None, Duration::ZERO),
    }
}

/// When the next request of a slot starts, for its latency: now (closed
/// loop), or per the open-loop schedule `next_send` (advanced by
/// `interval`). None when the run is over for this slot.
pub(crate) async fn next_start(
    next_send: &mut Option<Instant>,
    interval: Duration,
    deadline: Instant,
    stats: &RefCell<Stats>,
) -> Option<Instant> {
    let now = Instant::now();
    if now >= deadline {
        return None;
    }
    let Some(t) = next_send.as_mut() else {
        return Some(now);
    };
    let scheduled = *t;
    *t += interval;
    if scheduled >= deadline {
        return None;
    }
    if scheduled > now {
        // Idle until our slot: nothing the server did delays this
        // request, so it is timed from the actual send. The runtime's
        // timer has 1 ms granularity, and its lateness is ours, not the
        // server's.
        sleep_until(mono(scheduled)).await;
        let woke = Instant::now();
        if woke > scheduled + TIMER_LAG_WARN {
            stats.borrow_mut().lagged_sends += 1;
        }
        Some(woke)
    } else {
        // Behind schedule because earlier responses came late: the wait is
        // part of this request's latency (coordinated-omission correction,
        // as wrk2).
        Some(scheduled)
    }
}

/// One connection slot: sends requests until the deadline, reopening the
/// connection whenever it breaks (or after every request with --new-conn).
async fn connection_loop(sh: Rc<Shared>, global_index: usize, initial: Option<Conn>) {
    let args = &sh.args;
    let (mut next_send, interval) = schedule(args, sh.start, global_index, args.connections);
    let mut conn: Option<Conn> = initial;
    let mut parser = Parser::new(sh.head_request);
    let mut broke = false;

    'requests: loop {
        let Some(started) = next_start(&mut next_send, interval, sh.deadline, &sh.stats).await
        else {
            break;
        };
        let request_deadline = (Instant::now() + args.timeout).min(sh.hard_deadline);
        // A request on a kept-alive connection may meet the server's close
        // of that connection (idle timeout, a drain): with --retry-reused it
        // goes once more on a new one, as browsers and curl do.
        let mut retry_allowed = args.retry_reused;
        let (res, bytes_in) = loop {
            let reused = conn.is_some();
            if conn.is_none() {
                let t0 = Instant::now();
                let tls = sh.tls.as_ref().map(|(c, n)| (c, n));
                match timeout_at(mono(request_deadline), Conn::open(args.target.addr, tls)).await {
                    Ok(Ok(c)) => {
                        let done = Instant::now();
                        let mut st = sh.stats.borrow_mut();
                        if broke {
                            st.reconnects += 1;
                            broke = false;
                        }
                        record_open(&mut st, &c, t0, done, done <= sh.deadline);
                        conn = Some(c);
                    }
                    Ok(Err(f)) => {
                        sh.stats.borrow_mut().error(f.kind(), f.detail());
                        broke = true;
                        if matches!(f, Failure::Connect(_)) {
                            let until = (Instant::now() + CONNECT_BACKOFF).min(sh.deadline);
                            sleep_until(mono(until)).await;
                        }
                        continue 'requests;
                    }
                    Err(_) => {
                        sh.stats
                            .borrow_mut()
                            .error("timeout", "connect + handshake");
                        broke = true;
                        continue 'requests;
                    }
                }
            }

            let c = conn.as_mut().expect("connected");
            let mut bytes_in = 0u64;
            let res = timeout_at(
                mono(request_deadline),
                exchange(c, &mut parser, &sh.request, &mut bytes_in),
            )
            .await;
            let closed_before_response =
                matches!(res, Ok(Err(Failure::Read(_) | Failure::Write(_)))) && bytes_in == 0;
            if retry_allowed && reused && closed_before_response {
                retry_allowed = false;
                sh.stats.borrow_mut().retried_reused += 1;
                if let Some(c) = conn.take() {
                    c.abort();
                }
                continue;
            }
            break (res, bytes_in);
        };
        let done = Instant::now();
        if record_outcome(&sh, res, started, done, bytes_in, &mut broke) {
            // Finished with this connection: --new-conn, or the server
            // closes it; say goodbye politely (bounded), then reopen.
            let mut c = conn.take().expect("connected");
            if !broke {
                let until = (Instant::now() + CLOSE_WAIT).min(sh.hard_deadline);
                let _ = timeout_at(mono(until), c.close()).await;
            }
            c.abort();
        }
    }

    if let Some(mut c) = conn.take() {
        let until = (Instant::now() + CLOSE_WAIT).min(sh.hard_deadline);
        let _ = timeout_at(mono(until), c.close()).await;
        c.abort();
    }
}

/// Opens a connection and makes one unrecorded exchange on it.
async fn warm_up(
    addr: std::net::SocketAddr,
    tls: Option<(&Arc<ClientConfig>, &ServerName<'static>)>,
    request: &[u8],
    head_request: bool,
    until: Instant,
) -> Result<Option<(Conn, Instant, Instant)>, (&'static str, String)> {
    let t0 = Instant::now();
    let mut conn = match timeout_at(mono(until), Conn::open(addr, tls)).await {
        Ok(Ok(c)) => c,
        Ok(Err(f)) => return Err((f.kind(), f.detail().to_string())),
        Err(_) => return Err(("timeout", "connect + handshake (warm-up)".into())),
    };
    let opened = Instant::now();
    let mut parser = Parser::new(head_request);
    let mut bytes = 0;
    let res = timeout_at(
        mono(until),
        exchange(&mut conn, &mut parser, request, &mut bytes),
    )
    .await;
    match res {
        Ok(Ok(resp)) if resp.keep_alive => Ok(Some((conn, t0, opened))),
        Ok(Ok(_)) => {
            // The server ends connections after a response (Connection:
            // close): nothing to keep; the slot connects in its loop.
            conn.abort();
            Ok(None)
        }
        Ok(Err(f)) => {
            conn.abort();
            Err((f.kind(), format!("{} (warm-up)", f.detail())))
        }
        Err(_) => {
            conn.abort();
            Err(("timeout", "no response to the warm-up request".into()))
        }
    }
}

/// Counts an established connection; `count_handshake` when it completed
/// inside the measured window (or during the warm-up).
fn record_open(st: &mut Stats, c: &Conn, t0: Instant, done: Instant, count_handshake: bool) {
    record_tls(st, c.tls_info(), t0, done, count_handshake);
}

/// `record_open` from the TLS parameters (HTTP/2 takes them before the
/// connection becomes a readiness-mode stream).
pub(crate) fn record_tls(
    st: &mut Stats,
    info: Option<TlsInfo>,
    t0: Instant,
    done: Instant,
    count_handshake: bool,
) {
    st.connections += 1;
    let _ = st.handshake.record(micros(done - t0).max(1));
    if let Some(info) = info {
        if count_handshake {
            st.handshakes += 1;
            match info.kind {
                Some(HandshakeKind::Resumed) => st.resumed += 1,
                Some(HandshakeKind::FullWithHelloRetryRequest) => st.hello_retries += 1,
                _ => {}
            }
        }
        if st.tls_version.is_none() {
            st.tls_version = Some(info.version);
            st.tls_suite = Some(info.suite);
            st.alpn = info.alpn;
        }
    }
}

/// Counts one exchange. True when the connection must be closed: it broke
/// (`broke` is then set), the server ends it, or --new-conn.
fn record_outcome(
    sh: &Shared,
    res: Result<Result<Response, Failure>, monoio::time::error::Elapsed>,
    started: Instant,
    done: Instant,
    bytes_in: u64,
    broke: &mut bool,
) -> bool {
    let mut st = sh.stats.borrow_mut();
    st.bytes_in += bytes_in;
    match res {
        Ok(Ok(resp)) => {
            st.bytes_out += sh.request.len() as u64;
            record_response(&mut st, resp.status, started, done, sh.deadline);
            if !resp.keep_alive && !sh.args.new_conn {
                st.server_closes += 1;
            }
            sh.args.new_conn || !resp.keep_alive
        }
        Ok(Err(f)) => {
            st.error(f.kind(), f.detail());
            *broke = true;
            true
        }
        Err(_) => {
            let what = if done >= sh.hard_deadline {
                "no response by the end of the grace period"
            } else {
                "no response within --timeout"
            };
            st.error("timeout", what);
            *broke = true;
            true
        }
    }
}

/// Counts one complete response: its latency, whether it came before the
/// deadline, its status class; anything but 2xx is an error.
pub(crate) fn record_response(
    st: &mut Stats,
    status: u16,
    started: Instant,
    done: Instant,
    deadline: Instant,
) {
    let _ = st.latency.record(micros(done - started).max(1));
    if done <= deadline {
        st.requests += 1;
    } else {
        st.requests_in_grace += 1;
    }
    let class = (status / 100) as usize;
    st.status[if (1..=5).contains(&class) { class } else { 0 }] += 1;
    if class != 2 {
        st.error("status_non_2xx", &status.to_string());
    }
}

/// Sends the request and reads the whole response (body discarded).
async fn exchange(
    conn: &mut Conn,
    parser: &mut Parser,
    request: &[u8],
    bytes_in: &mut u64,
) -> Result<Response, Failure> {
    conn.send(request).await?;
    parser.reset();
    loop {
        if !conn.pending().is_empty() {
            let (used, progress) = parser.feed(conn.pending()).map_err(Failure::HttpParse)?;
            conn.consume(used);
            if let Progress::Done(resp) = progress {
                return Ok(resp);
            }
        }
        let n = conn.read_more().await?;
        if n == 0 {
            return parser.eof().map_err(Failure::Read);
        }
        *bytes_in += n as u64;
    }
}
