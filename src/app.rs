//! The running gateway: the store opened, the proxy and the admin handlers
//! built from the config and served on their listeners, the background
//! work (sweeping expired sessions, reloading certificates on SIGHUP), and
//! the shutdown: stop accepting, let in-flight requests finish (up to the
//! drain timeout), close the store.

use crate::admin::Admin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, SetupError};
use crate::record::now_ms;
use crate::server::{self, Hangup, Serving, tls};
use crate::session::Sessions;
use crate::store;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

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

/// The sockets `run` serves, bound beforehand so that tests can bind port 0.
pub struct Listeners {
    pub proxy: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

/// Binds `addr` with a listen queue of `backlog` connections (the kernel
/// caps it at `net.core.somaxconn`); tokio's own bind asks for 1024.
fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, RunError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| RunError::Bind(addr, e))?;
    #[cfg(unix)]
    socket
        .set_reuseaddr(true)
        .map_err(|e| RunError::Bind(addr, e))?;
    socket.bind(addr).map_err(|e| RunError::Bind(addr, e))?;
    socket.listen(backlog).map_err(|e| RunError::Bind(addr, e))
}

impl Listeners {
    /// Binds every listener of the config.
    pub async fn bind(config: &Config) -> Result<Self, RunError> {
        let backlog = config.limits.listen_backlog;
        let proxy = config
            .listen
            .iter()
            .map(|l| bind(l.addr, backlog))
            .collect::<Result<_, _>>()?;
        let admin = match &config.admin {
            Some(a) => Some(bind(a.addr, backlog)?),
            None => None,
        };
        Ok(Listeners { proxy, admin })
    }
}

/// Serves the config on already-bound listeners until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let hangup = server::install_sighup();
    let cert_stores: Vec<_> = config.listen.iter().filter_map(|l| l.tls.clone()).collect();
    let acceptors: Vec<_> = config
        .listen
        .iter()
        .map(|l| {
            l.tls
                .clone()
                .map(|store| tokio_rustls::TlsAcceptor::from(tls::server_config(store)))
        })
        .collect();
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let backend = store::open(&config.session, &config.secrets).await?;
    let mut metrics = Metrics::new();
    if backend.live_sessions().is_some() {
        metrics.count_sessions();
    }
    let metrics = Arc::new(metrics);
    let proxy = Arc::new(Proxy::new(&config, backend, metrics.clone())?);
    let sessions = proxy.sessions.clone();
    let admin = Arc::new(Admin::new(
        sessions.clone(),
        metrics,
        crate::admin::jwks(&config),
        config.admin.as_ref().and_then(|a| a.token.clone()),
    ));
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
    let serving = Serving::new(
        &config.limits,
        connections,
        graceful.clone(),
        stop_rx.clone(),
    );
    let mut loops = JoinSet::new();
    let proxy_protocol = config.listen.iter().map(|l| l.proxy_protocol);
    for ((listener, acceptor), proxy_protocol) in listeners
        .proxy
        .into_iter()
        .zip(acceptors)
        .zip(proxy_protocol)
    {
        tracing::info!(addr = ?listener.local_addr().ok(), tls = acceptor.is_some(), proxy_protocol, "proxy listening");
        loops.spawn(server::accept_loop(
            listener,
            server::Accept {
                tls: acceptor,
                proxy_protocol,
            },
            proxy.clone(),
            serving.clone(),
        ));
    }
    if let Some(listener) = listeners.admin {
        tracing::info!(addr = ?listener.local_addr().ok(), "admin listening");
        let admin_serving = Serving {
            connections: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
            ..serving.clone()
        };
        loops.spawn(server::accept_loop(
            listener,
            server::Accept {
                tls: None,
                proxy_protocol: false,
            },
            admin.clone(),
            admin_serving,
        ));
    }
    drop(serving);
    let sweeper = tokio::spawn(sweep_loop(sessions.clone()));
    let idle_closer = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let closed = proxy.upstreams().close_idle(std::time::Instant::now());
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
    let reloader = tokio::spawn(reload_on_sighup(hangup, cert_stores));

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    sweeper.abort();
    reloader.abort();
    summaries.abort();
    idle_closer.abort();
    let _ = summaries.await;
    let _ = idle_closer.await;
    let _ = sweeper.await;
    let _ = reloader.await;
    let graceful =
        Arc::try_unwrap(graceful).unwrap_or_else(|_| unreachable!("every accept loop has ended"));
    match tokio::time::timeout(config.limits.drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(timeout = ?config.limits.drain_timeout, "drain timeout passed; closing remaining connections")
        }
    }
    drop(admin);
    drop(proxy);
    close_store(sessions).await;
    Ok(())
}

/// Waits for the last request task to let go of the sessions, then closes
/// the store (flushing and unlocking an embedded file) off the async runtime.
async fn close_store(mut sessions: Arc<Sessions>) {
    let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(sessions) {
            Ok(s) => {
                let _ = tokio::task::spawn_blocking(move || drop(s)).await;
                return;
            }
            Err(shared) if tokio::time::Instant::now() < deadline => {
                sessions = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!("connections still hold the session store; it closes when they end");
                return;
            }
        }
    }
}

/// SIGHUP re-reads every TLS certificate; established connections keep theirs.
#[cfg_attr(not(unix), allow(unused_variables))]
async fn reload_on_sighup(hup: Hangup, stores: Vec<Arc<crate::keys::CertStore>>) {
    #[cfg(unix)]
    {
        let Some(mut hup) = hup else { return };
        while hup.recv().await.is_some() {
            if stores.is_empty() {
                tracing::info!("SIGHUP: no TLS certificates to reload");
            }
            for store in &stores {
                match store.reload() {
                    Ok(()) => tracing::info!("TLS certificates reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificates not reloaded; the previous ones stay in use")
                    }
                }
            }
        }
    }
}

async fn sweep_loop(sessions: Arc<Sessions>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        match sessions.sweep(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired sessions swept"),
            Err(e) => {
                tracing::warn!(error = %crate::logging::Chain(&e), "sweeping expired sessions failed")
            }
        }
    }
}
