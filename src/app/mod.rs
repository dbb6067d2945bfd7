//! The running gateway: the store opened, the proxy and the admin handlers
//! built from the config and served on their listeners, the background
//! work (sweeping expired sessions, reloading the config on SIGHUP), and
//! the shutdown: stop accepting, let in-flight requests finish (up to the
//! drain timeout), close the store.

mod listeners;
mod live;
mod reload;

pub use listeners::Listeners;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, SetupError};
use crate::record::now_ms;
use crate::server;
use crate::session::Backend;
use crate::store::{self, Store};
use hyper_util::server::graceful::GracefulShutdown;
use listeners::Running;
use live::Live;
use reload::{Generation, Reloader};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often expired sessions are swept from stores without native expiry.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutdown waits for finished connections to release the store.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How often idle upstream connections past their timeout are closed.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Admin connections served at once.
const ADMIN_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {0}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot open the session store")]
    Store(#[from] store::OpenError),
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// Serves the config on already-bound listeners until `shutdown` completes;
/// SIGHUP reloads the config from its file (see `reload`).
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let mut hangup = server::install_sighup();
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let backend = Backend::new(store::open(&config.session, &config.secrets).await?);
    let mut metrics = Metrics::new();
    if backend.store.live_sessions().is_some() {
        metrics.count_sessions();
    }
    if backend.store.cache_hits().is_some() {
        metrics.count_cache_hits();
    }
    let metrics = Arc::new(metrics);
    metrics.config_loaded(None, now_ms());
    let generation = Generation::build(config, backend.clone(), &metrics)?;
    let proxy = Live::new(generation.proxy.clone());
    let admin = Live::new(generation.admin.clone());
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = Running::new(
        &generation.config,
        graceful.clone(),
        stop_rx,
        proxy.clone(),
        admin.clone(),
    );
    running.start(&generation.config, listeners);
    let sweeper = tokio::spawn(sweep_loop(proxy.clone()));
    let idle_closer = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let closed = proxy
                    .current()
                    .upstreams()
                    .close_idle(std::time::Instant::now());
                if closed > 0 {
                    tracing::debug!(closed, "idle upstream connections closed");
                }
            }
        })
    };
    let summaries = tokio::spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(crate::logging::WINDOW_S));
        loop {
            tick.tick().await;
            crate::logging::flush_summaries();
        }
    });
    let mut reloader = Reloader {
        current: generation,
        backend,
        metrics,
        proxy,
        admin,
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = server::hangup(&mut hangup) => reloader.reload(&mut running).await,
        }
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    running.join().await;
    sweeper.abort();
    summaries.abort();
    idle_closer.abort();
    let _ = summaries.await;
    let _ = idle_closer.await;
    let _ = sweeper.await;
    let graceful =
        Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("every accept loop has ended"));
    let drain_timeout = reloader.current.config.limits.drain_timeout;
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(timeout = ?drain_timeout, "drain timeout passed; closing remaining connections")
        }
    }
    let store = reloader.backend.store.clone();
    drop(reloader);
    close_store(store).await;
    Ok(())
}

/// Waits for the last request task to let go of the store, then closes it
/// (flushing and unlocking an embedded file) off the async runtime.
async fn close_store(mut store: Arc<Store>) {
    let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => {
                let _ = tokio::task::spawn_blocking(move || drop(s)).await;
                return;
            }
            Err(shared) if tokio::time::Instant::now() < deadline => {
                store = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!("connections still hold the session store; it closes when they end");
                return;
            }
        }
    }
}

async fn sweep_loop(proxy: Arc<Live<Proxy>>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let sessions = proxy.current().sessions.clone();
        match sessions.sweep(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired sessions swept"),
            Err(e) => {
                tracing::warn!(error = %crate::logging::Chain(&e), "sweeping expired sessions failed")
            }
        }
    }
}
