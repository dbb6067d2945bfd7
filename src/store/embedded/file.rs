//! The embedded store's file: opened with checks that tell an operator what
//! is wrong with it, reopened by the writer after an I/O error, and the
//! write path's health for `/readyz`.

use super::{EXPIRY, SESSIONS};
use crate::store::{OpenError, StoreError};
use redb::{Database, DatabaseError, StorageError, TransactionError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a reopen waits for readers to let go of the old handle (they
/// hold it for one point lookup).
const READERS_GONE_WAIT: Duration = Duration::from_secs(5);

pub(super) struct StoreFile {
    path: PathBuf,
    /// `None` while the writer reopens the file (or has failed to).
    db: RwLock<Option<Arc<Database>>>,
    /// Why the last write transaction failed, until one succeeds.
    write_error: Mutex<Option<String>>,
    /// What a panic of the writer said: the file is not trusted again until
    /// a restart.
    fault: Mutex<Option<String>>,
    /// Sessions evicted past `max_sessions`, since start.
    evicted: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens (or creates) the database, in words an operator can act on: a
/// locked, empty, foreign or corrupt file each says so.
fn open_database(path: &Path) -> Result<Database, OpenError> {
    let shown = || path.display().to_string();
    if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Err(OpenError::NotAStore(shown(), "the file is empty"));
    }
    // redb panics on some corrupt pages rather than returning an error.
    let opened = std::panic::catch_unwind(|| -> Result<Database, DatabaseError> {
        let db = Database::create(path)?;
        let txn = db.begin_write().map_err(|e| storage_of(e.into()))?;
        txn.open_table(SESSIONS).map_err(|e| storage_of(e.into()))?;
        txn.open_table(EXPIRY).map_err(|e| storage_of(e.into()))?;
        txn.commit().map_err(|e| storage_of(e.into()))?;
        Ok(db)
    });
    match opened {
        Ok(Ok(db)) => Ok(db),
        Err(_) => Err(OpenError::Corrupt(shown())),
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => Err(OpenError::Locked(shown())),
        Ok(Err(DatabaseError::Storage(StorageError::Corrupted(_)))) => {
            Err(OpenError::Corrupt(shown()))
        }
        Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(OpenError::NotAStore(
                shown(),
                "it is not a session store file",
            ))
        }
        Ok(Err(other)) => Err(OpenError::Backend(
            shown(),
            Box::new(redb::Error::from(other)),
        )),
    }
}

/// The storage error inside a transaction's error, as a database error.
fn storage_of(e: redb::Error) -> DatabaseError {
    match e {
        redb::Error::Corrupted(m) => DatabaseError::Storage(StorageError::Corrupted(m)),
        redb::Error::Io(e) => DatabaseError::Storage(StorageError::Io(e)),
        other => DatabaseError::Storage(StorageError::Io(std::io::Error::other(other.to_string()))),
    }
}

impl StoreFile {
    pub(super) fn open(path: &Path) -> Result<Self, OpenError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| OpenError::Io(dir.display().to_string(), e))?;
        }
        let db = open_database(path)?;
        Ok(StoreFile {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
            write_error: Mutex::new(None),
            fault: Mutex::new(None),
            evicted: AtomicU64::new(0),
        })
    }

    /// The open database, for a read or a write.
    pub(super) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Backend(
                    "the embedded store's file is being reopened after an I/O error".into(),
                )
            })
    }

    /// The database for the writer's next batch, reopened first if an
    /// earlier reopen failed.
    pub(super) fn for_writer(&self) -> Result<Arc<Database>, String> {
        if let Ok(db) = self.db() {
            return Ok(db);
        }
        self.reopen()?;
        self.db().map_err(|e| e.to_string())
    }

    /// After a failed batch: redb refuses every later transaction after an
    /// I/O error (`PreviousIo`) until the database is closed and opened
    /// again, which is what its documentation prescribes. Once the cause
    /// (a full disk) is gone, the reopened file takes writes again.
    pub(super) fn after_failure(&self) {
        let Ok(db) = self.db() else { return };
        let poisoned = matches!(
            db.begin_write(),
            Err(TransactionError::Storage(StorageError::PreviousIo))
        );
        drop(db);
        if poisoned && let Err(e) = self.reopen() {
            tracing::warn!(error = %e, "the embedded store could not reopen its file yet; writes fail until it can");
        }
    }

    /// Closes the file (once the readers holding it have let go) and opens
    /// it again; redb repairs it on open if it was left mid-write.
    fn reopen(&self) -> Result<(), String> {
        let old = self.db.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut old) = old {
            let deadline = Instant::now() + READERS_GONE_WAIT;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still_shared) => {
                        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(still_shared);
                        return Err("readers kept the old file open".into());
                    }
                }
            }
        }
        let db = open_database(&self.path).map_err(|e| crate::logging::Chain(&e).to_string())?;
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(db));
        tracing::info!("the embedded store reopened its file after an I/O error");
        Ok(())
    }

    /// Notes a write transaction's outcome.
    pub(super) fn record(&self, outcome: Result<(), &str>) {
        let mut last = lock(&self.write_error);
        match outcome {
            Ok(()) => *last = None,
            Err(e) => *last = Some(e.to_string()),
        }
    }

    pub(super) fn record_panic(&self, e: &StoreError) {
        tracing::error!(error = %e, "the embedded store's writer panicked; readiness now fails");
        *lock(&self.fault) = Some(e.to_string());
    }

    /// Whether writes are failing: a panic of the writer for good, or the
    /// last transaction's error until one succeeds.
    pub(super) fn health(&self) -> Result<(), StoreError> {
        if let Some(f) = lock(&self.fault).clone() {
            return Err(StoreError::Panicked(f));
        }
        match lock(&self.write_error).clone() {
            Some(e) => Err(StoreError::Backend(
                format!("writes are failing: {e}").into(),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn note_evicted(&self, n: u64) {
        self.evicted.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub(super) fn writes_failing(&self) -> bool {
        lock(&self.write_error).is_some()
    }
}
