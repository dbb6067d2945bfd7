//! Opening the configured store, and what can go wrong doing it.

use super::{Store, cached, cookie, embedded, memcached, memory, sql};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{0} is in use by another process (a running sessiongate sweeps expired sessions itself)"
    )]
    Locked(String),
    #[error(
        "the session store file is corrupt: {0} (restore it from a backup, or move it away to start empty)"
    )]
    Corrupt(String),
    #[error("{0} is not a session store file: {1} (move it away, or point store.path elsewhere)")]
    NotAStore(String, &'static str),
    #[error("cannot open {0}")]
    Io(String, #[source] std::io::Error),
    #[error("cannot open {0}")]
    Backend(String, #[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Opens the embedded store's file; opening may recover it after a crash,
/// blocking work kept off the runtime.
pub async fn open_embedded(
    path: &std::path::Path,
    max_sessions: usize,
) -> Result<embedded::EmbeddedStore, OpenError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open_bounded(&path, max_sessions))
        .await
        .map_err(|e| OpenError::Backend("embedded store".into(), Box::new(e)))?
}

/// Opens the configured store.
pub async fn open(
    cfg: &crate::config::SessionConfig,
    secrets: &[crate::config::Secret],
) -> Result<Store, OpenError> {
    use crate::config::StoreConfig;
    let store = match &cfg.store {
        StoreConfig::Memory { max_sessions } => {
            Store::Memory(memory::MemoryStore::new(*max_sessions))
        }
        StoreConfig::Embedded { path, max_sessions } => {
            Store::Embedded(open_embedded(path, *max_sessions).await?)
        }
        StoreConfig::Redis(r) => Store::Redis(Box::new(super::redis::RedisStore::open(r).await?)),
        StoreConfig::Sql(c) => Store::Sql(Box::new(sql::SqlStore::open(c).await?)),
        StoreConfig::Memcached(c) => Store::Memcached(Box::new(memcached::MemcachedStore::new(c))),
        StoreConfig::Cached(c) => Store::Cached(Box::new(cached::CachedStore::open(c).await?)),
        StoreConfig::Cookie => Store::Cookie(cookie::CookieStore::new(secrets, &cfg.cookie.name)),
    };
    Ok(store)
}
