//! The listening sockets of a takeover: the ones received from the old
//! process mapped onto this process's workers and listeners
//! (`upgrade::wire::plan_sockets` decides, this applies it), and the
//! duplicates this process offers to the next one.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::config::Config;
use crate::runtime::{self, Driver};
use crate::upgrade::wire::{plan_sockets, Source};
use crate::upgrade::{Offer, Received};

/// Per worker, (listener index, socket) pairs built from the passed
/// sockets; plus the passed admin socket.
pub(super) type Adopted = (Vec<Vec<(usize, TcpListener)>>, Option<TcpListener>);

pub(super) fn adopt(
    config: &Config,
    workers: usize,
    driver: Driver,
    received: Received,
) -> Result<Adopted, String> {
    // O_NONBLOCK belongs to the socket both processes share: io_uring wants
    // it off, epoll on, and flipping it under the old process's accept loop
    // would stall it (epoll) or make it spin (io_uring). Same driver only.
    for (configured, socket) in &received.listeners {
        let nonblocking = socket2::SockRef::from(socket).nonblocking().map_err(|e| {
            format!("takeover: cannot read the flags of the socket for {configured}: {e}")
        })?;
        let theirs = if nonblocking {
            Driver::Epoll
        } else {
            Driver::IoUring
        };
        if theirs != driver {
            return Err(format!(
                "takeover: the running gateway uses the {} driver and this one would use {}; a takeover needs the same driver (set server.driver or PORTCULLIS_DRIVER alike, or restart)",
                theirs.name(),
                driver.name()
            ));
        }
    }
    let configured: Vec<SocketAddr> = received.listeners.iter().map(|(c, _)| *c).collect();
    let wanted: Vec<SocketAddr> = config.listeners.iter().map(|l| l.address).collect();
    let plan = plan_sockets(&configured, &wanted, workers);
    let mut passed: Vec<Option<TcpListener>> = received
        .listeners
        .into_iter()
        .map(|(_, s)| Some(s))
        .collect();
    for &i in &plan.unused {
        warn!(
            address = %configured[i],
            "takeover: the new config has no listener at this address; its socket is closed (connections queued on it are reset)"
        );
    }
    // The address each listener's passed sockets are bound to (port 0 in
    // the config resolved by the old process), for joining their group.
    let mut bound_of: Vec<Option<SocketAddr>> = vec![None; wanted.len()];
    let mut fresh: Vec<Option<Vec<TcpListener>>> = (0..wanted.len()).map(|_| None).collect();
    let mut out: Vec<Vec<(usize, TcpListener)>> =
        (0..plan.per_worker.len()).map(|_| Vec::new()).collect();
    for (w, sources) in plan.per_worker.iter().enumerate() {
        for &(l, source) in sources {
            let socket = match source {
                Source::Passed(i) => {
                    let s = passed[i]
                        .take()
                        .ok_or_else(|| format!("takeover: socket {i} planned twice"))?;
                    bound_of[l] = Some(s.local_addr().map_err(|e| e.to_string())?);
                    s
                }
                Source::Join => {
                    let addr = bound_of[l]
                        .ok_or_else(|| format!("takeover: no passed socket for {}", wanted[l]))?;
                    join_group(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?
                }
                Source::Fresh => {
                    let pool = match &mut fresh[l] {
                        Some(p) => p,
                        slot @ None => {
                            info!(address = %wanted[l], "takeover: a listener the old process did not have; bound anew");
                            let mut sockets = runtime::bind_reuseport(wanted[l], workers)
                                .map_err(|e| format!("cannot listen on {}: {e}", wanted[l]))?;
                            sockets.reverse();
                            slot.insert(sockets)
                        }
                    };
                    pool.pop()
                        .ok_or_else(|| format!("cannot listen on {}: too few sockets", wanted[l]))?
                }
            };
            out[w].push((l, socket));
        }
    }
    let taken = configured.len() - plan.unused.len();
    info!(
        sockets = taken,
        old_workers_per_listener = if wanted.is_empty() {
            0
        } else {
            taken / wanted.len().max(1)
        },
        workers,
        "takeover: received the listening sockets"
    );
    Ok((out, received.admin))
}

/// One more SO_REUSEPORT socket in the group already bound at `addr`
/// (this process has more workers than the old one had sockets).
fn join_group(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Duplicates of every worker's socket of every listener, with the address
/// the config named, for the process that takes over next.
pub(super) fn offer(
    config: &Config,
    listeners: &[Vec<(usize, TcpListener)>],
) -> Result<Offer, String> {
    let mut out = Vec::new();
    for worker in listeners {
        for (l, socket) in worker {
            let configured = config
                .listeners
                .get(*l)
                .map(|c| c.address)
                .ok_or_else(|| format!("listener {l} is not configured"))?;
            let dup = socket
                .try_clone()
                .map_err(|e| format!("cannot duplicate a listening socket: {e}"))?;
            out.push((configured, dup));
        }
    }
    Ok(Offer {
        listeners: out,
        admin: None,
    })
}

/// The passed admin socket serves the configured admin address (a
/// configured port 0 accepts any port on the same IP).
pub(super) fn same_address(socket: &TcpListener, configured: SocketAddr) -> bool {
    match socket.local_addr() {
        Ok(local) if configured.port() == 0 => local.ip() == configured.ip(),
        Ok(local) => local == configured,
        Err(_) => false,
    }
}
