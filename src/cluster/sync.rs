//! One std thread per node that keeps the served config equal to what etcd
//! holds under the prefix, APISIX's way: read the whole prefix (with its
//! revision), then watch from the next revision; on a change read the whole
//! prefix again at that revision and build a new generation from it, off
//! the request path, swapping it in exactly as a SIGHUP reload does. A
//! revision that does not validate is refused (key and reason logged,
//! `portcullis_config_update_failures_total`); the last good one stays.
//! etcd gone: keep serving, retry with capped backoff, re-read on return
//! (which also covers a compacted revision).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::etcd::{Client, EtcdError, WatchEvent};
use super::store::{self, Tree};
use super::wire::WatchMessage;
use crate::config::{Config, NodeBootstrap};
use crate::generation::{Current, Generation};
use crate::metrics::Published;

/// Where the first generation came from.
pub struct Start {
    /// The node's config, built (its files are in `built`'s directory
    /// until it is dropped: `gateway::prepare` must load it first).
    pub built: store::Built,
    pub revision: i64,
    pub tree: Tree,
    pub from_snapshot: bool,
}

/// At start: the prefix from etcd if it answers and validates, else the
/// local snapshot. Neither: the node cannot start.
pub fn start(bootstrap: &NodeBootstrap, client: &mut Client) -> Result<Start, String> {
    let prefix = &bootstrap.cluster.prefix;
    let etcd_problem = match client.range(prefix, None) {
        Ok(r) => {
            let tree = Tree::from_kvs(prefix, &r.kvs);
            match validate(&tree, bootstrap) {
                Ok(built) => {
                    if let Err(e) = store::write_snapshot(
                        &bootstrap.cluster.snapshot,
                        prefix,
                        r.revision,
                        &tree,
                    ) {
                        warn!(error = %e, "cannot write the cluster snapshot");
                    }
                    info!(
                        revision = r.revision,
                        keys = tree.entries.len(),
                        "cluster config read from etcd"
                    );
                    return Ok(Start {
                        built,
                        revision: r.revision,
                        tree,
                        from_snapshot: false,
                    });
                }
                Err(e) => format!("etcd revision {} refused: {e}", r.revision),
            }
        }
        Err(e) => e.to_string(),
    };
    let snapshot = &bootstrap.cluster.snapshot;
    let (revision, tree) = store::read_snapshot(snapshot, prefix)
        .map_err(|e| format!("no config to serve: {etcd_problem}; and the local snapshot: {e}"))?;
    let built = validate(&tree, bootstrap).map_err(|e| {
        format!(
            "no config to serve: {etcd_problem}; and the local snapshot (revision {revision}): {e}"
        )
    })?;
    warn!(
        revision,
        snapshot = %snapshot.display(),
        reason = %etcd_problem,
        "starting from the local snapshot of the cluster config; will follow etcd when it answers"
    );
    Ok(Start {
        built,
        revision,
        tree,
        from_snapshot: true,
    })
}

/// Builds and loads a revision without serving it: what `check` does.
fn validate(tree: &Tree, bootstrap: &NodeBootstrap) -> Result<store::Built, String> {
    let built = store::build(tree, bootstrap)?;
    let published = Published::new(1);
    Generation::load(&built.config, 0, &published)
        .map_err(|e| store::name_keys(&built, &bootstrap.cluster.prefix, &e))?;
    Ok(built)
}

/// The sync thread's state.
pub struct Syncer {
    pub bootstrap: NodeBootstrap,
    pub client: Client,
    pub current: Arc<Current>,
    pub published: Arc<Published>,
    /// The config the process started with: listeners and workers cannot change.
    pub started_with: Config,
    /// The last revision seen (served, or refused: not retried).
    pub revision: i64,
    /// The revision served.
    pub served: i64,
    pub tree: Tree,
    pub next_id: u64,
}

impl Syncer {
    /// Runs for the life of the process.
    pub fn run(mut self) {
        let prefix = self.bootstrap.cluster.prefix.clone();
        let retry_max = self.bootstrap.cluster.retry_max;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow(&prefix) {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    warn!(
                        error = %e,
                        revision = self.served,
                        retry_in_ms = backoff.as_millis() as u64,
                        "cluster: lost etcd; still serving the last good config"
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(retry_max);
                }
            }
        }
    }

    /// Re-reads the prefix, then watches from the next revision until the
    /// stream breaks. Ok = the watch was canceled and a re-read is due now.
    fn follow(&mut self, prefix: &str) -> Result<(), EtcdError> {
        let r = self.client.range(prefix, None)?;
        if r.revision != self.revision {
            self.apply(r.revision, Tree::from_kvs(prefix, &r.kvs));
        }
        let mut watch = self.client.watch(prefix, r.revision + 1)?;
        info!(from_revision = r.revision + 1, "cluster: watching etcd");
        let mut seen = r.revision;
        loop {
            match watch.next_event()? {
                WatchEvent::Message(WatchMessage::Changed { revision }) if revision > seen => {
                    seen = revision;
                    let t0 = Instant::now();
                    let tree = match self.client.range(prefix, Some(revision)) {
                        Ok(r) => Tree::from_kvs(prefix, &r.kvs),
                        // Compacted between the event and the read: a newer one will come.
                        Err(EtcdError::Compacted(_)) => return Ok(()),
                        Err(e) => return Err(e),
                    };
                    self.apply(revision, tree);
                    debug!(
                        revision,
                        ms = t0.elapsed().as_millis() as u64,
                        "cluster: change handled"
                    );
                }
                WatchEvent::Message(WatchMessage::Changed { .. }) => {}
                WatchEvent::Message(WatchMessage::Compacted { compact_revision }) => {
                    warn!(
                        compact_revision,
                        "cluster: watch revision compacted; re-reading the whole prefix"
                    );
                    return Ok(());
                }
                WatchEvent::Message(WatchMessage::Canceled { reason }) => {
                    warn!(reason = %reason, "cluster: etcd canceled the watch; re-reading");
                    return Ok(());
                }
                WatchEvent::Message(WatchMessage::Error(e)) => {
                    return Err(EtcdError::Server(e));
                }
                WatchEvent::Message(
                    WatchMessage::Created { .. } | WatchMessage::Progress { .. },
                ) => {}
                WatchEvent::Quiet => {
                    // A quiet watch and a vanished etcd look alike: ask.
                    self.client.range(&format!("{prefix}\u{0}health"), None)?;
                }
            }
        }
    }

    /// Builds `tree` at `revision` into a new generation and swaps it in, or
    /// refuses it (logged with its key, counted) and keeps the last good.
    fn apply(&mut self, revision: i64, tree: Tree) {
        let prefix = &self.bootstrap.cluster.prefix;
        if tree == self.tree {
            // Same content (a push of what is served): nothing to rebuild.
            self.revision = revision;
            self.served = revision;
            self.published.config.applied(revision.max(0) as u64);
            if let Err(e) =
                store::write_snapshot(&self.bootstrap.cluster.snapshot, prefix, revision, &tree)
            {
                warn!(error = %e, "cannot write the cluster snapshot");
            }
            info!(revision, "cluster config unchanged at this revision");
            return;
        }
        let served = self.served;
        self.revision = revision;
        let refused = |why: String| {
            error!(
                revision,
                serving_revision = served,
                "cluster config refused: {why}; still serving the previous config"
            );
        };
        let built = match store::build(&tree, &self.bootstrap) {
            Ok(b) => b,
            Err(e) => {
                self.published.config.failed();
                return refused(e);
            }
        };
        if let Some(why) = crate::gateway::restart_only_changes(&self.started_with, &built.config) {
            self.published.config.failed();
            return refused(format!("{why} (that needs a restart)"));
        }
        let id = self.next_id;
        match Generation::load(&built.config, id, &self.published) {
            Ok(generation) => {
                self.next_id += 1;
                let (sites, routes) = (generation.sites.len(), generation.settings.routes.len());
                self.current.replace(generation);
                self.served = revision;
                self.published.config.applied(revision.max(0) as u64);
                if let Err(e) =
                    store::write_snapshot(&self.bootstrap.cluster.snapshot, prefix, revision, &tree)
                {
                    warn!(error = %e, "cannot write the cluster snapshot");
                }
                self.tree = tree;
                info!(
                    revision,
                    generation = id,
                    sites,
                    routes,
                    "cluster config applied: new connections use it; open connections finish on the one they started with"
                );
            }
            Err(e) => {
                self.published.config.failed();
                refused(store::name_keys(&built, prefix, &e));
            }
        }
    }
}
