//! Writes to one session from one process queue here, in the process,
//! rather than at the shared server: concurrent merges of one session
//! otherwise hold a pooled connection each while they wait for the row
//! lock (SQL), or retry their compare-and-swap against each other
//! (memcached). Writes from other instances still meet at the server, which
//! keeps them atomic; this only takes the local contention off it.
//!
//! Measured with 64 concurrent writers of one session (bench/run.py write
//! workload): see bench/results/stores.md.

use crate::record::SessionId;
use tokio::sync::{Mutex, MutexGuard};

/// Enough stripes that writes to different sessions rarely share one.
const STRIPES: usize = 1024;

pub struct Stripes(Box<[Mutex<()>]>);

impl Default for Stripes {
    fn default() -> Self {
        Stripes((0..STRIPES).map(|_| Mutex::new(())).collect())
    }
}

impl Stripes {
    pub async fn lock(&self, id: &SessionId) -> MutexGuard<'_, ()> {
        self.0[id.spread() % STRIPES].lock().await
    }
}
