//! How a `cached` store hears of other instances' writes, one task per
//! store. Each starts with the cache off, turns it on (empty) once the
//! channel is up, and turns it off and empties it whenever the channel is
//! lost: invalidations sent meanwhile are lost with it.

use super::barrier::OpenOnExit;
use super::{Barrier, LocalCache};
use crate::config::{RedisConfig, RedisTopology, SqlConfig};
use crate::record::SessionId;
use crate::store::OpenError;
use ::redis::{AsyncConnectionConfig, PushKind, Value};
use sqlx::Executor;
use sqlx::postgres::PgListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long to wait before trying a lost channel again.
const RECONNECT_AFTER: Duration = Duration::from_millis(250);
/// How often the Redis channel is checked: a peer that vanished without
/// closing the connection is noticed within this (plus the timeout).
const PING_EVERY: Duration = Duration::from_secs(1);

/// The PostgreSQL channel a table's writes notify.
pub fn channel(table: &str) -> String {
    format!("{table}_changed")
}

pub async fn postgres(
    cfg: &SqlConfig,
    channel: String,
    cache: Arc<LocalCache>,
    barrier: Arc<Barrier>,
) -> Result<JoinHandle<()>, OpenError> {
    let url = crate::store::sql::url_with_ca(cfg)?;
    let timeout = cfg.timeout;
    Ok(tokio::spawn(async move {
        let _exit = OpenOnExit {
            cache: cache.clone(),
            barrier: barrier.clone(),
        };
        let mut logged = false;
        loop {
            match PgListener::connect(&url).await {
                Ok(mut l) => match l.listen(&channel).await {
                    Ok(()) => {
                        barrier.close();
                        cache.reset(true);
                        if logged {
                            tracing::info!("cached store: PostgreSQL notifications back, cache on");
                            logged = false;
                        }
                        listen_postgres(&mut l, &cache, &barrier, timeout).await;
                        cache.reset(false);
                        barrier.release();
                    }
                    Err(e) => off(&cache, &mut logged, &e),
                },
                Err(e) => off(&cache, &mut logged, &e),
            }
            cache.reset(false);
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }))
}

/// Applies notifications, and makes the barrier's round trips, until the
/// connection is lost, or does not answer within `timeout` (checked every
/// second: a peer gone without closing the connection is noticed).
async fn listen_postgres(
    l: &mut PgListener,
    cache: &LocalCache,
    barrier: &Barrier,
    timeout: Duration,
) {
    let apply = |n: sqlx::postgres::PgNotification| match SessionId::decode(n.payload()) {
        Some(id) => cache.invalidate(&id),
        None => cache.reset(true),
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        let upto = tokio::select! {
            n = l.try_recv() => match n {
                Ok(Some(n)) => {
                    apply(n);
                    continue;
                }
                Ok(None) | Err(_) => return,
            },
            _ = ping.tick() => None,
            upto = barrier.asked() => Some(upto),
        };
        // Notifications that arrive during the query are buffered.
        if !matches!(
            tokio::time::timeout(timeout, l.execute("SELECT 1")).await,
            Ok(Ok(_))
        ) {
            return;
        }
        while let Some(n) = l.next_buffered() {
            apply(n);
        }
        if let Some(upto) = upto {
            barrier.passed(upto);
        }
    }
}

fn off(cache: &LocalCache, logged: &mut bool, e: &(dyn std::error::Error + 'static)) {
    cache.reset(false);
    if !*logged {
        tracing::warn!(
            error = %crate::logging::Chain(e),
            "cached store: the invalidation channel is down; the cache is off until it is back"
        );
        *logged = true;
    }
}

/// The URL with RESP3, which carries invalidations as push messages.
fn resp3(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}protocol=resp3")
}

pub async fn redis(
    cfg: &RedisConfig,
    cache: Arc<LocalCache>,
    barrier: Arc<Barrier>,
) -> Result<JoinHandle<()>, OpenError> {
    let RedisTopology::Standalone { url } = &cfg.topology else {
        return Err(OpenError::Backend(
            "cached store".into(),
            "over Redis, only a standalone `url` is supported".into(),
        ));
    };
    let url = resp3(url);
    let client = match &cfg.ca_pem {
        Some(pem) => ::redis::Client::build_with_tls(
            url.as_str(),
            ::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => ::redis::Client::open(url.as_str()),
    }
    .map_err(|e| OpenError::Backend("cached store (redis)".into(), Box::new(e)))?;
    // Session keys are `{prefix}{<id>}`.
    let prefix = format!("{}{{", cfg.key_prefix);
    let timeout = cfg.timeout;
    Ok(tokio::spawn(async move {
        let _exit = OpenOnExit {
            cache: cache.clone(),
            barrier: barrier.clone(),
        };
        let mut logged = false;
        loop {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let config = AsyncConnectionConfig::new()
                .set_push_sender(tx)
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(mut conn) => {
                    let on = ::redis::cmd("CLIENT")
                        .arg("TRACKING")
                        .arg("ON")
                        .arg("BCAST")
                        .arg("PREFIX")
                        .arg(&prefix)
                        .query_async::<()>(&mut conn)
                        .await;
                    match on {
                        Ok(()) => {
                            barrier.close();
                            cache.reset(true);
                            if logged {
                                tracing::info!("cached store: Redis invalidations back, cache on");
                                logged = false;
                            }
                            track(&mut conn, &mut rx, &cache, &barrier, &prefix).await;
                            cache.reset(false);
                            barrier.release();
                        }
                        Err(e) => off(&cache, &mut logged, &e),
                    }
                }
                Err(e) => off(&cache, &mut logged, &e),
            }
            cache.reset(false);
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }))
}

/// Applies invalidations until the connection is lost.
async fn track(
    conn: &mut ::redis::aio::MultiplexedConnection,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<::redis::PushInfo>,
    cache: &LocalCache,
    barrier: &Barrier,
    prefix: &str,
) {
    // Whether the channel is still up after a push.
    let apply = |push: &::redis::PushInfo| match push.kind {
        PushKind::Invalidate => {
            invalidate(&push.data, cache, prefix);
            true
        }
        PushKind::Disconnection => false,
        _ => true,
    };
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        let upto = tokio::select! {
            push = rx.recv() => match push {
                Some(push) if apply(&push) => continue,
                _ => return,
            },
            _ = ping.tick() => None,
            upto = barrier.asked() => Some(upto),
        };
        // The connection's response timeout bounds this PING.
        if ::redis::cmd("PING").query_async::<()>(conn).await.is_err() {
            return;
        }
        // The pushes sent before the answer are in the channel now.
        while let Ok(push) = rx.try_recv() {
            if !apply(&push) {
                return;
            }
        }
        if let Some(upto) = upto {
            barrier.passed(upto);
        }
    }
}

/// An invalidation names keys, or none when the whole database was flushed.
fn invalidate(data: &[Value], cache: &LocalCache, prefix: &str) {
    match data.first() {
        Some(Value::Array(keys)) => {
            for key in keys {
                let Value::BulkString(key) = key else {
                    continue;
                };
                let id = std::str::from_utf8(key)
                    .ok()
                    .and_then(|k| k.strip_prefix(prefix))
                    .and_then(|k| k.strip_suffix('}'))
                    .and_then(SessionId::decode);
                if let Some(id) = id {
                    cache.invalidate(&id);
                }
            }
        }
        _ => cache.reset(true),
    }
}
