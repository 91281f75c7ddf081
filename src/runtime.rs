//! Thread-per-core: one pinned thread per worker, each with its own monoio
//! runtime and its own SO_REUSEPORT listener sockets, so the kernel spreads
//! connections across cores and no accept lock or shared queue exists.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::config::DriverChoice;

/// The I/O driver every worker of this process uses, decided once.
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

/// `PORTCULLIS_DRIVER` (io_uring | epoll | auto) overrides the config, so CI
/// can run the same suite on both drivers.
pub fn driver_choice_from_env(configured: DriverChoice) -> Result<DriverChoice, String> {
    match std::env::var("PORTCULLIS_DRIVER") {
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "io_uring" | "iouring" | "uring" => Ok(DriverChoice::IoUring),
            "epoll" | "legacy" => Ok(DriverChoice::Epoll),
            "auto" | "" => Ok(DriverChoice::Auto),
            other => Err(format!(
                "PORTCULLIS_DRIVER={other:?}: expected io_uring, epoll or auto"
            )),
        },
        Err(_) => Ok(configured),
    }
}

/// Probes io_uring once for the whole process and says so once in the log.
pub fn select_driver(choice: DriverChoice) -> Result<Driver, String> {
    let uring = monoio::utils::detect_uring();
    match (choice, uring) {
        (DriverChoice::Epoll, _) => Ok(Driver::Epoll),
        (_, true) => Ok(Driver::IoUring),
        (DriverChoice::IoUring, false) => Err(
            "driver = \"io_uring\" but io_uring is not usable here (kernel too old, disabled by \
             sysctl kernel.io_uring_disabled, or blocked by seccomp); use driver = \"auto\" or \"epoll\""
                .into(),
        ),
        (_, false) => {
            warn!("io_uring is not usable on this host (kernel, sysctl or seccomp): falling back to the epoll driver");
            Ok(Driver::Epoll)
        }
    }
}

/// Number of workers for "auto": the cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Binds `count` listening sockets to `addr` with SO_REUSEPORT. Port 0 is
/// resolved by the first socket and the rest bind the port it got.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let us silently share the port with another
        // process (an old instance, another gateway) and split its traffic.
        // A plain bind fails if anyone holds it; then refuse to start.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        // SO_REUSEADDR: TIME_WAIT leftovers must not count, only live listeners.
        probe.set_reuse_address(true)?;
        if addr.is_ipv6() {
            probe.set_only_v6(true)?;
        }
        if let Err(e) = probe.bind(&addr.into()) {
            if e.kind() == io::ErrorKind::AddrInUse {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "address already in use (another process listens there)",
                ));
            }
            return Err(e);
        }
    }
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        if addr.is_ipv6() {
            // Separate v4 and v6 listeners, each configured explicitly.
            socket.set_only_v6(true)?;
        }
        socket.set_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: TcpListener = socket.into();
        if addr.port() == 0 {
            addr = listener.local_addr()?;
        }
        out.push(listener);
    }
    Ok(out)
}

/// Starts one pinned thread per worker. `make` builds the worker's future on
/// its own thread, so the future itself need not be Send.
pub fn spawn_workers<F, Fut>(
    name: &str,
    driver: Driver,
    workers: usize,
    make: F,
) -> io::Result<Vec<JoinHandle<()>>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let make = Arc::new(make);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let make = make.clone();
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let handle = std::thread::Builder::new().name(format!("{name}-{index}")).spawn(move || {
            if let Some(core) = core {
                core_affinity::set_for_current(core);
            }
            let fut = make(index);
            if let Err(e) = block_on(driver, fut) {
                tracing::error!(worker = index, driver = %driver.name(), error = %e, "cannot start the worker's runtime");
            }
        })?;
        handles.push(handle);
    }
    Ok(handles)
}

fn block_on<Fut: Future<Output = ()>>(driver: Driver, fut: Fut) -> io::Result<()> {
    match driver {
        Driver::IoUring => {
            let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .with_entries(4096)
                .build()?;
            rt.block_on(fut);
        }
        Driver::Epoll => {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?;
            rt.block_on(fut);
        }
    }
    Ok(())
}

/// Turns a std listener into the worker runtime's listener.
pub fn adopt_listener(
    listener: TcpListener,
    driver: Driver,
) -> io::Result<monoio::net::TcpListener> {
    // epoll needs non-blocking sockets; io_uring accepts complete in the kernel
    // and wants them blocking (an O_NONBLOCK accept would just return EAGAIN).
    listener.set_nonblocking(driver == Driver::Epoll)?;
    monoio::net::TcpListener::from_std(listener)
}

/// Process-wide shutdown request, set by the signal thread, polled by workers.
pub static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Set (before [`SHUTDOWN`]) when a new process has taken the listening
/// sockets over: the drain then serves requests arriving on open
/// connections (with `Connection: close`) instead of refusing them, closes
/// idle keep-alive connections, and waits for every open connection.
pub static HANDOVER: AtomicBool = AtomicBool::new(false);

/// Stops accepting and drains because a new process accepts now.
pub fn request_handover_drain() {
    HANDOVER.store(true, Ordering::SeqCst);
    SHUTDOWN.store(true, Ordering::SeqCst);
}

/// Moves signal handling onto a thread: SIGTERM/SIGINT set [`SHUTDOWN`],
/// SIGHUP calls `on_reload` (there, not on a worker: reloading reads files),
/// SIGUSR2 calls `on_upgrade` (start the new binary, which takes over).
pub fn install_signal_handlers<R, U>(on_reload: R, on_upgrade: U) -> io::Result<()>
where
    R: Fn() + Send + 'static,
    U: Fn() + Send + 'static,
{
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    on_reload();
                    continue;
                }
                if sig == SIGUSR2 {
                    on_upgrade();
                    continue;
                }
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                info!(
                    signal = name,
                    "shutdown requested: no new connections, draining in-flight requests"
                );
                SHUTDOWN.store(true, Ordering::SeqCst);
                break;
            }
        })?;
    Ok(())
}

/// Resolves when the process has been asked to shut down. Polls a flag:
/// once per 50 ms per worker, off the request path.
pub async fn shutdown_requested() {
    while !SHUTDOWN.load(Ordering::Relaxed) {
        monoio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Raises this process's open-file soft limit to its hard limit (as nginx's
/// `worker_rlimit_nofile` and Go's runtime do): every client and backend
/// connection is a descriptor, and the soft limit is often a tenth of the
/// hard one. Returns the soft limit now in force.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(r.rlim_cur)
}

/// Per-worker connection cap derived from the open-file limit: descriptors
/// are kept back for listeners, the admin listener, logs and pipes, and each
/// client connection is budgeted two (its own and a backend's).
pub fn default_max_connections(nofile: u64, workers: usize) -> usize {
    const RESERVED: u64 = 256;
    let workers = workers.max(1) as u64;
    let per_worker = nofile.saturating_sub(RESERVED) / workers / 2;
    usize::try_from(per_worker.max(16)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_and_never_reaches_zero() {
        assert_eq!(default_max_connections(20_000, 2), 4_936);
        assert_eq!(default_max_connections(1_048_576, 2), 262_080);
        assert_eq!(default_max_connections(1_024, 2), 192);
        assert_eq!(default_max_connections(100, 8), 16);
        assert_eq!(default_max_connections(0, 0), 16);
    }

    #[test]
    fn raising_the_limit_never_lowers_it() {
        let before = {
            let mut r = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into the struct we own.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
            r.rlim_cur
        };
        let now = raise_nofile_limit().expect("getrlimit");
        assert!(now >= before);
    }
}
