//! The per-core generation cache: each worker keeps its own `Rc` copy of
//! the current config generation (TLS configs, routes) and rebuilds it only
//! when a reload bumps the version, so a request never takes a lock or
//! touches an atomic refcount shared with other cores.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use tracing::{debug, warn};

use crate::generation::{Current, WorkerGeneration};

/// This core's copy of the current generation, rebuilt when a reload bumps
/// the version.
pub(super) struct WorkerGenerations {
    pub(super) current: Arc<Current>,
    pub(super) cached: RefCell<(u64, Rc<WorkerGeneration>)>,
    pub(super) index: usize,
}

impl WorkerGenerations {
    pub(super) fn get(&self) -> Rc<WorkerGeneration> {
        let version = self.current.version();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != version {
            match self.current.get().for_worker() {
                Ok(built) => {
                    debug!(
                        worker = self.index,
                        generation = version,
                        "worker switched to a reloaded config"
                    );
                    *cached = (version, Rc::new(built));
                }
                // Cannot happen for a generation that loaded (every config was
                // built once already); keep serving the old one if it does.
                Err(e) => {
                    warn!(worker = self.index, error = %e, "cannot build TLS configs for the reloaded config; keeping the previous one");
                    cached.0 = version;
                }
            }
        }
        cached.1.clone()
    }
}
