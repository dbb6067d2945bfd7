//! What outlives a config reload: the open store, and whether it faulted.
//! Each reload builds new `Sessions` (cookie settings, lifetimes, policy)
//! around the same backend, so that requests in flight keep the ones they
//! started with while the store stays open.

use super::Sessions;
use crate::metrics::StoreOp;
use crate::store::{Store, StoreError};
use futures_util::FutureExt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// Every store operation goes through here: timed for the metrics, in a
/// span for the exporter, and a panic inside it made an error.
impl Sessions {
    pub(super) async fn timed<T>(
        &self,
        op: StoreOp,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        // A panic inside a store (redb's on a corrupt page) fails this one
        // operation; unwinding further would reset the client's connection
        // without an answer.
        let guarded = std::panic::AssertUnwindSafe(fut).catch_unwind();
        // A span for the exporter (`tracing:`); disabled, and not entered,
        // when nothing takes debug spans.
        let span = tracing::debug_span!(target: "sessiongate::store", "store", op = ?op);
        let outcome = if span.is_disabled() {
            guarded.await
        } else {
            tracing::Instrument::instrument(guarded, span).await
        };
        let result = match outcome {
            Ok(result) => result,
            Err(payload) => Err(self.panicked(StoreError::panicked(payload))),
        };
        self.metrics.store_op(op, start.elapsed(), result.is_ok());
        result
    }

    fn panicked(&self, e: StoreError) -> StoreError {
        tracing::error!(error = %e, "session store operation panicked; readiness now fails");
        self.backend.set_fault(e.to_string());
        e
    }

    /// The panic that made the store untrustworthy, if any.
    pub fn fault(&self) -> Option<String> {
        self.backend.fault()
    }
}
