//! What outlives a config reload: the open store, and whether it faulted.
//! Each reload builds new `Sessions` (cookie settings, lifetimes, policy)
//! around the same backend, so that requests in flight keep the ones they
//! started with while the store stays open.

use crate::store::Store;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Backend {
    pub store: Arc<Store>,
    /// What the last store panic said, if one happened: readiness fails
    /// from then on (a reload does not clear it), since a store that
    /// panicked may not be trusted.
    fault: Arc<Mutex<Option<String>>>,
}

impl Backend {
    pub fn new(store: Store) -> Self {
        Backend {
            store: Arc::new(store),
            fault: Arc::default(),
        }
    }

    /// The same backend with another store: the cookie store, which holds
    /// nothing but the secrets and the cookie name, is rebuilt on reload.
    pub fn with_store(&self, store: Store) -> Self {
        Backend {
            store: Arc::new(store),
            fault: self.fault.clone(),
        }
    }

    pub(super) fn set_fault(&self, fault: String) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = Some(fault);
    }

    /// The panic that made the store untrustworthy, if any.
    pub fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
