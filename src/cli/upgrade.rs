//! `portcullis upgrade`: validate a config, then ask the running gateway to
//! start the binary now installed at its path (SIGUSR2), and wait until the
//! new process has taken the listening sockets over and the old one has
//! drained and exited. The package's upgrade path runs this.

use std::time::{Duration, Instant};

use super::check::load_and_validate;
use super::reload::running_pid;
use super::*;

pub(super) fn cmd_upgrade(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(args, &[], &["--config", "--pid", "--timeout"])?;
    let path = flags.required("--config")?;
    let cfg = load_and_validate(Path::new(path))?;
    if cfg.server.upgrade_socket.is_none() {
        return Err(Failure::Config(format!(
            "{path}: a binary upgrade needs server.upgrade_socket (the running gateway must have been started with it)"
        )));
    }
    let pid = running_pid(&flags, &cfg)?;
    let timeout =
        match flags.one("--timeout") {
            Some(t) => Duration::from_secs(t.parse().map_err(|_| {
                Failure::Usage(format!("--timeout {t:?} is not a number of seconds"))
            })?),
            // The old process drains for at most drain_timeout after the new one accepts.
            None => cfg.server.drain_timeout + Duration::from_secs(30),
        };
    // SAFETY: kill(2) with a positive pid and a valid signal number has no
    // memory effects; failure is reported through errno.
    if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
        return Err(Failure::Runtime(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    println!("{path}: valid; asked process {pid} to start the new binary (SIGUSR2)");
    let end = Instant::now() + timeout;
    let mut successor = None;
    while Instant::now() < end {
        if successor.is_none() {
            successor = cfg
                .server
                .pid_file
                .as_deref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .and_then(|t| t.trim().parse::<i32>().ok())
                .filter(|&p| p != pid && alive(p));
            if let Some(new) = successor {
                println!("process {new} took over the listening sockets; process {pid} drains");
            }
        }
        if !alive(pid) {
            return match successor {
                Some(new) => {
                    println!("upgraded: process {pid} exited after draining; process {new} serves");
                    Ok(())
                }
                None if cfg.server.pid_file.is_none() => {
                    println!("process {pid} exited after handing over (no server.pid_file names the new one)");
                    Ok(())
                }
                None => Err(Failure::Runtime(format!(
                    "process {pid} exited and no new process wrote the pid file: is the gateway running? (see its log)"
                ))),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Failure::Runtime(match successor {
        Some(new) => format!(
            "process {new} serves, but process {pid} had not exited after {} s (its drain may still be running)",
            timeout.as_secs()
        ),
        None => format!(
            "no new process took over within {} s; process {pid} goes on serving (its log says why)",
            timeout.as_secs()
        ),
    }))
}

/// The process exists and is not a zombie waiting for its parent.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}
