//! Live binary upgrade: a new Portcullis process takes over the running
//! one's listening sockets, the old one stops accepting and drains.
//!
//! The old process serves its listener descriptors on a Unix socket
//! (`server.upgrade_socket`, SCM_RIGHTS, as HAProxy's `-x` does); the new
//! one (`portcullis run --takeover SOCKET`) receives every per-core
//! SO_REUSEPORT socket and the admin socket, starts accepting on them, and
//! only then says `accepting`; the old process then stops accepting and
//! drains. The sockets are the same kernel objects, so connections queued
//! in an accept queue during the switch are accepted by the new process,
//! never reset. SIGUSR2 makes the old process start the new binary itself
//! (nginx's upgrade signal), which keeps the new process inside the
//! service's cgroup under systemd; `notify` then names it the service's
//! main process. Protocol and socket plan: `wire` (pure); descriptors and
//! the Unix socket: `fds`.

pub mod fds;
pub mod notify;
pub mod wire;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use socket2::Socket;
use tracing::{info, warn};

use wire::{Message, VERSION};

/// How long either side waits for the other's next message. The new
/// process has loaded its config before it connects, so what remains
/// (starting its workers) takes milliseconds.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// What the old process hands over: a duplicate of each listening socket.
pub struct Offer {
    /// (the address the config named, the socket), every worker's socket
    /// of every listener.
    pub listeners: Vec<(SocketAddr, TcpListener)>,
    pub admin: Option<TcpListener>,
}

/// Serves `offer` on the upgrade socket at `path` until one new process
/// has taken it over, then calls `on_handover` (which stops accepting and
/// starts the drain) with the new process's id. A failed attempt (a peer of
/// another user, a wrong version, a new process that dies before it
/// accepts) is logged and the old process goes on serving.
pub fn serve<F>(path: PathBuf, offer: Offer, on_handover: F) -> Result<(), String>
where
    F: FnOnce(u32) + Send + 'static,
{
    let listener = fds::listen(&path).map_err(|e| {
        format!(
            "{}: cannot listen on the upgrade socket: {e}",
            path.display()
        )
    })?;
    info!(socket = %path.display(), "upgrade socket: a new process may take over the listening sockets (portcullis run --takeover)");
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || loop {
            let conn = match listener.accept() {
                Ok((conn, _)) => conn,
                Err(e) => {
                    warn!(socket = %path.display(), error = %e, "upgrade socket: accept failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            match hand_over(&conn, &offer) {
                Ok(pid) => {
                    on_handover(pid);
                    // Said after the drain started: "draining" is then true.
                    let _ = fds::send(&conn, &Message::Draining, None);
                    // One takeover per process; the new one serves the path now.
                    return;
                }
                Err(why) => {
                    let _ = fds::send(&conn, &Message::Refused(why.clone()), None);
                    warn!(socket = %path.display(), "takeover attempt failed: {why}; this process goes on serving");
                }
            }
        })
        .map_err(|e| format!("cannot start the upgrade thread: {e}"))?;
    Ok(())
}

fn hand_over(conn: &Socket, offer: &Offer) -> Result<u32, String> {
    let io = |e: io::Error| format!("upgrade connection: {e}");
    conn.set_read_timeout(Some(STEP_TIMEOUT)).map_err(io)?;
    conn.set_write_timeout(Some(STEP_TIMEOUT)).map_err(io)?;
    let uid = fds::peer_uid(conn).map_err(io)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid != me && uid != 0 {
        return Err(format!(
            "a process of user {uid} asked for the sockets (only user {me} or root may)"
        ));
    }
    let pid = match fds::recv(conn).map_err(io)? {
        (Message::Takeover { version, pid }, None) if version == VERSION => pid,
        (Message::Takeover { version, .. }, None) => {
            return Err(format!(
                "the new process speaks takeover version {version}, this one {VERSION}"
            ))
        }
        (other, _) => return Err(format!("expected a takeover request, got {other:?}")),
    };
    info!(
        new_pid = pid,
        "takeover requested: handing over the listening sockets"
    );
    let count = offer.listeners.len() + usize::from(offer.admin.is_some());
    fds::send(
        conn,
        &Message::Sockets {
            version: VERSION,
            pid: std::process::id(),
            count,
        },
        None,
    )
    .map_err(io)?;
    for (configured, socket) in &offer.listeners {
        let bound = socket.local_addr().map_err(io)?;
        let msg = Message::Listener {
            configured: *configured,
            bound,
        };
        fds::send(conn, &msg, Some(socket.as_fd())).map_err(io)?;
    }
    if let Some(admin) = &offer.admin {
        let bound = admin.local_addr().map_err(io)?;
        fds::send(conn, &Message::Admin { bound }, Some(admin.as_fd())).map_err(io)?;
    }
    match fds::recv(conn) {
        Ok((Message::Accepting, None)) => Ok(pid),
        Ok((other, _)) => Err(format!("new process {pid}: expected \"accepting\", got {other:?}")),
        Err(e) => Err(format!(
            "new process {pid} did not start accepting ({e}); it keeps nothing, this process keeps serving"
        )),
    }
}

/// The sockets a new process received.
pub struct Received {
    pub from_pid: u32,
    /// (the address the old config named, the socket), in the old order.
    pub listeners: Vec<(SocketAddr, TcpListener)>,
    pub admin: Option<TcpListener>,
}

/// The open upgrade connection, to say `accepting` once workers accept.
pub struct Pending {
    conn: Socket,
    pub from_pid: u32,
}

/// Connects to the old process's upgrade socket and receives its sockets.
pub fn take(path: &Path) -> Result<(Received, Pending), String> {
    let ctx = |e: String| {
        format!(
            "cannot take over from {}: {e} (is the old gateway running with server.upgrade_socket = \"{}\"?)",
            path.display(),
            path.display()
        )
    };
    let conn = fds::connect(path, STEP_TIMEOUT).map_err(|e| ctx(e.to_string()))?;
    fds::send(
        &conn,
        &Message::Takeover {
            version: VERSION,
            pid: std::process::id(),
        },
        None,
    )
    .map_err(|e| ctx(e.to_string()))?;
    let (from_pid, count) = match fds::recv(&conn).map_err(|e| ctx(e.to_string()))? {
        (
            Message::Sockets {
                version,
                pid,
                count,
            },
            None,
        ) if version == VERSION => (pid, count),
        (Message::Refused(why), _) => return Err(ctx(format!("the old process refused: {why}"))),
        (other, _) => return Err(ctx(format!("unexpected answer {other:?}"))),
    };
    let mut received = Received {
        from_pid,
        listeners: Vec::new(),
        admin: None,
    };
    for _ in 0..count {
        let (msg, fd) = fds::recv(&conn).map_err(|e| ctx(e.to_string()))?;
        let Some(fd) = fd else {
            return Err(ctx(format!("{msg:?} came without its socket")));
        };
        let socket = Socket::from(fd);
        let bound = match msg {
            Message::Listener { bound, .. } | Message::Admin { bound } => bound,
            other => return Err(ctx(format!("unexpected message {other:?}"))),
        };
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        if local != Some(bound) || !socket.is_listener().unwrap_or(false) {
            return Err(ctx(format!(
                "the socket passed for {bound} is not a TCP socket listening there"
            )));
        }
        let listener = TcpListener::from(socket);
        match msg {
            Message::Listener { configured, .. } => received.listeners.push((configured, listener)),
            _ => received.admin = Some(listener),
        }
    }
    Ok((received, Pending { conn, from_pid }))
}

impl Pending {
    /// Tells the old process this one accepts on every socket, and waits for
    /// its word that it stopped accepting.
    pub fn confirm(self) -> Result<(), String> {
        let pid = self.from_pid;
        fds::send(&self.conn, &Message::Accepting, None)
            .map_err(|e| format!("cannot tell process {pid} to drain: {e}"))?;
        match fds::recv(&self.conn) {
            Ok((Message::Draining, _)) => Ok(()),
            Ok((other, _)) => Err(format!(
                "process {pid} answered {other:?} instead of draining"
            )),
            Err(e) => Err(format!("process {pid} did not confirm its drain: {e}")),
        }
    }
}

/// Starts the binary at `exe` as `run --config CONFIG --takeover SOCKET`
/// (SIGUSR2), and logs how it ends if it ends while this process lives: a
/// successor that failed to take over leaves this one serving.
pub fn spawn_successor(exe: &Path, config: &Path, socket: &Path) -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new(exe);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--takeover")
        .arg(socket)
        .stdin(std::process::Stdio::null());
    // The child must inherit no descriptor but stdio: it gets its sockets
    // over the upgrade socket. io_uring's accept gives client sockets
    // without O_CLOEXEC, and a client socket the child inherited stays open
    // after this process closes it, so that client would hang instead of
    // seeing the close (seen as a request timing out during the upgrade).
    // Marked close-on-exec rather than closed, so std's own exec-error pipe
    // keeps working.
    // SAFETY: close_range and fcntl are async-signal-safe and touch only
    // this child's descriptor table, between fork and exec.
    unsafe {
        command.pre_exec(|| {
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                // Before Linux 5.11.
                for fd in 3..65_536 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let pid = child.id();
    let _ = std::thread::Builder::new()
        .name("successor".into())
        .spawn(move || match child.wait() {
            Ok(status) if status.success() => info!(pid, "the new process exited"),
            Ok(status) => warn!(pid, %status, "the new process exited before taking over (see its log above); this process goes on serving"),
            Err(e) => warn!(pid, error = %e, "cannot wait for the new process"),
        });
    Ok(pid)
}
