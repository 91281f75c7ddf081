//! pcl-load: an HTTP/1.1 and HTTP/2 load generator that presents TLS client
//! certificates, for benchmarking Portcullis (wrk and h2load cannot do mTLS).
//!
//! Thread-per-core like the gateway: each worker thread runs its own monoio
//! runtime with one task per connection and keeps its own statistics, merged
//! when the run ends.

mod args;
mod conn;
mod http;
mod http2;
mod report;
mod stats;
mod tls;
mod worker;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use mimalloc::MiMalloc;

use args::{DriverChoice, Parsed};
use stats::Stats;
use worker::{Driver, ThreadPlan};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let args = match args::parse(&argv) {
        Ok(Parsed::Run(a)) => Arc::new(*a),
        Ok(Parsed::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pcl-load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&argv, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pcl-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(argv: &[String], args: Arc<args::Args>) -> Result<ExitCode, String> {
    let tls = if args.plain {
        None
    } else {
        Some(tls::TlsSetup::from_args(&args)?)
    };
    if args.insecure {
        eprintln!("pcl-load: WARNING: --insecure: the server certificate is NOT verified");
    }
    let driver = match (args.driver, monoio::utils::detect_uring()) {
        (DriverChoice::Epoll, _) => Driver::Epoll,
        (_, true) => Driver::IoUring,
        (DriverChoice::IoUring, false) => {
            return Err("--driver io_uring: io_uring is not usable on this host".into())
        }
        (DriverChoice::Auto, false) => Driver::Epoll,
    };
    let request: Arc<[u8]> = Arc::from(http::build_request(&args));
    if args.http2 {
        // The HTTP/2 form of the request: refused here, before any thread.
        http2::request::Template::from_args(&args)?;
    }

    report::print_banner(&args, driver, tls.as_ref());

    // Connections spread over threads as evenly as possible.
    let threads = args.threads;
    let per = args.connections / threads;
    let extra = args.connections % threads;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let abort = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(threads);
    let mut first = 0;
    for index in 0..threads {
        let n = per + usize::from(index < extra);
        let plan = ThreadPlan {
            index,
            slots: first..first + n,
            core: (!args.pin.is_empty()).then(|| args.pin[index % args.pin.len()]),
        };
        first += n;
        let (args, tls, request, barrier, abort) = (
            args.clone(),
            tls.clone(),
            request.clone(),
            barrier.clone(),
            abort.clone(),
        );
        let handle = std::thread::Builder::new()
            .name(format!("pcl-load-{index}"))
            .spawn(move || worker::run_thread(plan, args, tls, request, driver, barrier, abort))
            .map_err(|e| format!("spawning a worker thread: {e}"))?;
        handles.push(handle);
    }
    // First barrier: every runtime is built (or one failed: `abort`).
    // Second: every connection is open (keep-alive), the clock starts.
    barrier.wait();
    if !abort.load(Ordering::SeqCst) {
        barrier.wait();
    }
    let started = Instant::now();
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => total.merge(s),
            Ok(Err(e)) => failures.push(format!("worker runtime: {e}")),
            Err(_) => failures.push("a worker thread panicked".into()),
        }
    }
    let elapsed = started.elapsed();
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }

    let summary = report::Summary::new(&args, driver, tls.as_ref(), &total, elapsed);
    report::print_human(&summary, &total);
    if let Some(path) = &args.json {
        let json = report::json(&summary, &total, argv);
        let text = serde_json::to_string_pretty(&json).expect("JSON serialises");
        std::fs::write(path, text + "\n").map_err(|e| format!("--json {}: {e}", path.display()))?;
    }
    Ok(if total.requests + total.requests_in_grace == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
