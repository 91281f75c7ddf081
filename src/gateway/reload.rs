//! SIGHUP: re-read the config, build a whole new generation off the worker
//! cores, and swap it in only if every part of it loaded; the pid file
//! `portcullis reload` signals; and SIGUSR2, which starts the new binary.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tracing::info;

use crate::config::{Config, KtlsMode};
use crate::generation::{Current, Generation};
use crate::metrics::{Published, ReloadTrigger};

/// Builds and swaps in new generations. SIGHUP re-reads the config file;
/// the file watcher and the CRL fetcher rebuild from the config already
/// applied (a changed certificate is not a reason to apply a config file
/// edited but not yet reloaded). Runs on those threads, never on a worker:
/// loading certificates and building TLS configs is slow next to a request.
pub(super) struct Reloader {
    pub(super) started_with: Config,
    /// The config of the generation serving now. Its lock is held for a
    /// whole reload, so reloads from the three triggers never interleave.
    pub(super) applied: Mutex<Arc<Config>>,
    pub(super) current: Arc<Current>,
    pub(super) published: Arc<Published>,
    pub(super) next_id: std::sync::atomic::AtomicU64,
}

impl Reloader {
    pub(super) fn new(config: &Config, current: Arc<Current>, published: Arc<Published>) -> Self {
        Reloader {
            started_with: config.clone(),
            applied: Mutex::new(Arc::new(config.clone())),
            current,
            published,
            next_id: std::sync::atomic::AtomicU64::new(2),
        }
    }

    /// The config of the generation serving now.
    pub(super) fn applied(&self) -> Arc<Config> {
        match self.applied.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Builds a whole new generation and swaps it in, or logs why not and
    /// keeps serving the current one. True when swapped.
    pub(super) fn reload(&self, trigger: ReloadTrigger, why: &str) -> bool {
        let mut applied = match self.applied.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let path = &self.started_with.source;
        match trigger {
            ReloadTrigger::Signal => {
                info!(config = %path.display(), "SIGHUP: reloading the config")
            }
            _ => info!(
                config = %path.display(),
                trigger = trigger.label(),
                "{why}: reloading the certificates, keys and CRLs"
            ),
        }
        let serving = self.current.version();
        let refused = |why: String| {
            self.published.config.failed();
            tracing::error!(
                config = %path.display(),
                generation = serving,
                trigger = trigger.label(),
                "reload refused: {why}; still serving the previous config"
            );
            self.published.count_reload(trigger, false);
            false
        };
        let next = match trigger {
            ReloadTrigger::Signal => match crate::config::load(path) {
                Ok(c) => c,
                Err(e) => return refused(e.to_string()),
            },
            _ => (**applied).clone(),
        };
        if let Some(why) = restart_only_changes(&self.started_with, &next) {
            return refused(format!("{why} (that needs a restart)"));
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match Generation::load(&next, id, &self.published) {
            Ok(generation) => {
                let (sites, routes) = (generation.sites.len(), generation.settings.routes.len());
                let inventory = generation.inventory.clone();
                self.current.replace(generation);
                self.published.set_inventory(inventory.clone());
                self.published.count_reload(trigger, true);
                if let Err(e) = self.published.ocsp().start_if_needed() {
                    tracing::error!(
                        "cannot start the OCSP stapling thread: {e}; no site gets a staple"
                    );
                }
                self.published.config.applied(0);
                info!(
                    config = %path.display(),
                    generation = id,
                    trigger = trigger.label(),
                    sites,
                    routes,
                    "config reloaded: new connections use it; open connections finish on the one they started with"
                );
                crate::lifecycle::log_concerns(&inventory, next.tls.warn_expiry);
                *applied = Arc::new(next);
                true
            }
            Err(e) => refused(e),
        }
    }
}

/// What a reload cannot change in a running process: the sockets and threads.
pub(crate) fn restart_only_changes(old: &Config, new: &Config) -> Option<String> {
    let addrs = |c: &Config| -> Vec<(SocketAddr, KtlsMode)> {
        c.listeners.iter().map(|l| (l.address, l.ktls)).collect()
    };
    if addrs(old) != addrs(new) {
        return Some("the [[listener]] addresses or ktls modes changed".into());
    }
    if old.server.workers != new.server.workers || old.server.driver != new.server.driver {
        return Some("server.workers or server.driver changed".into());
    }
    if old.admin != new.admin {
        return Some("the admin address changed".into());
    }
    None
}

/// The process id in `server.pid_file` while running, for `portcullis reload`.
pub(super) struct PidFile(Option<std::path::PathBuf>);

impl PidFile {
    pub(super) fn write(path: Option<&std::path::Path>) -> Result<PidFile, String> {
        let Some(path) = path else {
            return Ok(PidFile(None));
        };
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("{}: cannot write the pid file: {e}", path.display()))?;
        Ok(PidFile(Some(path.to_path_buf())))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            // After a takeover the file names the new process: leave it.
            let ours = std::fs::read_to_string(p)
                .map(|t| t.trim() == std::process::id().to_string())
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// SIGUSR2: start the binary this process was started from (by then the
/// upgraded one at the same path) as `run --takeover`, nginx-style.
pub(super) struct Successor {
    /// Resolved at start, while the path still names this binary's file:
    /// later /proc/self/exe would name the replaced (deleted) one.
    exe: Option<std::path::PathBuf>,
    config: std::path::PathBuf,
    socket: Option<std::path::PathBuf>,
}

impl Successor {
    pub(super) fn new(config: &Config) -> Successor {
        Successor {
            exe: std::env::current_exe().ok(),
            config: config.source.clone(),
            socket: config.server.upgrade_socket.clone(),
        }
    }

    pub(super) fn start(&self) {
        let (Some(exe), Some(socket)) = (&self.exe, &self.socket) else {
            tracing::error!(
                "SIGUSR2: a binary upgrade needs server.upgrade_socket in the config (and a known binary path); nothing done"
            );
            return;
        };
        info!(binary = %exe.display(), config = %self.config.display(), "SIGUSR2: starting the new binary to take over the listening sockets");
        match crate::upgrade::spawn_successor(exe, &self.config, socket) {
            Ok(pid) => info!(
                new_pid = pid,
                "the new process started; this one serves until it accepts"
            ),
            Err(e) => tracing::error!("SIGUSR2: {e}; this process goes on serving"),
        }
    }
}
