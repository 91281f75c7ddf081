//! SIGHUP: re-read the config, build a whole new generation off the worker
//! cores, and swap it in only if every part of it loaded; and the pid file
//! `portcullis reload` signals.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::info;

use crate::config::{Config, KtlsMode};
use crate::generation::{Current, Generation};
use crate::metrics::Published;

/// Re-reads the config file on SIGHUP. Runs on the signal thread, never on a
/// worker: loading certificates and building TLS configs is slow next to a
/// request.
pub(super) struct Reloader {
    pub(super) started_with: Config,
    pub(super) current: Arc<Current>,
    pub(super) published: Arc<Published>,
    pub(super) next_id: std::sync::atomic::AtomicU64,
}

impl Reloader {
    pub(super) fn reload(&self) {
        let path = &self.started_with.source;
        info!(config = %path.display(), "SIGHUP: reloading the config");
        let serving = self.current.version();
        let refused = |why: String| {
            self.published.config.failed();
            tracing::error!(
                config = %path.display(),
                generation = serving,
                "reload refused: {why}; still serving the previous config"
            );
        };
        let next = match crate::config::load(path) {
            Ok(c) => c,
            Err(e) => return refused(e.to_string()),
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
                self.current.replace(generation);
                self.published.config.applied(0);
                info!(
                    config = %path.display(),
                    generation = id,
                    sites,
                    routes,
                    "config reloaded: new connections use it; open connections finish on the one they started with"
                );
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
            let _ = std::fs::remove_file(p);
        }
    }
}
