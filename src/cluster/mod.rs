//! `[cluster] store = "etcd"`: every node serves the config pushed under one
//! etcd key prefix, and follows it live.
//!
//! `wire` is the etcd v3 HTTP/JSON gateway as bytes (pure), `etcd` a small
//! blocking client over it, `store` the key layout, the local snapshot and
//! the private directory a revision is loaded from, `sync` the one thread
//! per node that watches etcd and swaps generations in, and `push` what
//! `portcullis config push|get|diff` do. Nothing here runs on a worker: the
//! workers only see a new generation appear, as after a SIGHUP.

pub mod etcd;
pub mod push;
pub mod store;
pub mod sync;
pub mod wire;

use std::path::Path;

use tracing::info;

use crate::config::NodeBootstrap;
use crate::gateway;

/// `portcullis run` on a bootstrap file: the first generation from etcd (or
/// the snapshot), the gateway on it, and the sync thread beside it; with
/// `takeover`, the listening sockets come from the node process it replaces.
pub fn run_node(bootstrap: NodeBootstrap, takeover: Option<&Path>) -> Result<(), String> {
    let mut client = etcd::Client::new(&bootstrap.cluster)?;
    let start = sync::start(&bootstrap, &mut client)?;
    let config = start.built.config.clone();
    let prepared = gateway::prepare(config.clone(), takeover)?;
    // Every file is loaded: the private copies of the keys can go.
    drop(start.built);
    let (current, published) = prepared.handles();
    published.config.applied(start.revision.max(0) as u64);
    info!(
        revision = start.revision,
        from_snapshot = start.from_snapshot,
        endpoints = %bootstrap.cluster.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        prefix = %bootstrap.cluster.prefix,
        "cluster node: serving the shared config; following etcd"
    );
    let syncer = sync::Syncer {
        bootstrap,
        client,
        current,
        published,
        started_with: config,
        revision: start.revision,
        served: start.revision,
        tree: start.tree,
        next_id: 2,
    };
    std::thread::Builder::new()
        .name("portcullis-cluster".into())
        .spawn(move || syncer.run())
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    gateway::run(prepared.cluster_mode())
}
