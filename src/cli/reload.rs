//! `portcullis reload`: validate a config, then signal the running gateway
//! (its pid file) to reload it.

use super::check::load_and_validate;
use super::*;

pub(super) fn cmd_reload(args: &[String]) -> Result<(), Failure> {
    let flags = Flags::parse(args, &[], &["--config", "--pid"])?;
    let path = flags.required("--config")?;
    // Refuse here, where the operator is looking, what the gateway would refuse.
    let cfg = load_and_validate(Path::new(path))?;
    let pid = running_pid(&flags, &cfg)?;
    // SAFETY: kill(2) with a positive pid and a valid signal number has no
    // memory effects; failure is reported through errno.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc != 0 {
        return Err(Failure::Runtime(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    println!("{path}: valid; asked process {pid} to reload it (its log says \"config reloaded\")");
    Ok(())
}

/// The running gateway's process id: `--pid`, else `server.pid_file`.
pub(super) fn running_pid(flags: &Flags, cfg: &Config) -> Result<i32, Failure> {
    let pid: i32 = match (flags.one("--pid"), &cfg.server.pid_file) {
        (Some(p), _) => p
            .parse()
            .map_err(|_| Failure::Usage(format!("--pid {p:?} is not a process id")))?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Failure::Runtime(format!(
                    "{}: cannot read the pid file ({e}); is the gateway running?",
                    file.display()
                ))
            })?;
            text.trim().parse().map_err(|_| {
                Failure::Runtime(format!("{}: does not hold a process id", file.display()))
            })?
        }
        (None, None) => {
            return Err(Failure::Usage(
                "the config has no server.pid_file: give --pid".into(),
            ))
        }
    };
    if pid <= 0 {
        return Err(Failure::Usage(format!("{pid} is not a process id")));
    }
    Ok(pid)
}
