//! Listeners, accept loops and graceful shutdown: on the shutdown signal the
//! loops stop accepting, in-flight requests finish (up to the drain timeout),
//! then `run` returns.

pub mod tls;

use crate::admin::Admin;
use crate::config::{Config, Limits};
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Proxy, RequestBody};
use crate::record::now_ms;
use crate::store;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How often expired sessions are swept from stores without native expiry.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long shutdown waits for finished connections to release the store.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The sockets `run` serves, bound beforehand so that tests can bind port 0.
pub struct Listeners {
    pub proxy: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener of the config.
    pub async fn bind(config: &Config) -> Result<Self, RunError> {
        let mut proxy = Vec::new();
        for l in &config.listen {
            proxy.push(
                TcpListener::bind(l.addr)
                    .await
                    .map_err(|e| RunError::Bind(l.addr, e))?,
            );
        }
        let admin = match &config.admin {
            Some(a) => Some(
                TcpListener::bind(a.addr)
                    .await
                    .map_err(|e| RunError::Bind(a.addr, e))?,
            ),
            None => None,
        };
        Ok(Listeners { proxy, admin })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot open the session store: {0}")]
    Store(#[from] store::OpenError),
    #[error("{0}")]
    Identity(#[from] crate::upstream::identity::IdentityError),
    #[error("{0}")]
    Upstream(#[from] crate::upstream::CaError),
    #[error("listen[{0}].tls: {1}")]
    Tls(usize, #[source] tls::TlsError),
}

/// The header count hyper enforces when none is configured.
const HYPER_MAX_HEADERS: usize = 100;

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    // hyper's own limit is the same 100 headers but parses into a stack array;
    // an explicit limit costs a heap-sized index initialised on every request.
    if limits.max_headers != HYPER_MAX_HEADERS {
        b.http1().max_headers(limits.max_headers);
    }
    // HTTP/2 counts every cookie as its own header: the cookie store's five
    // chunks must fit. Pings find dead peers.
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    b
}

/// Serves the config on already-bound listeners until `shutdown` completes.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let hangup = install_sighup();
    let mut cert_stores = Vec::new();
    let mut acceptors = Vec::new();
    for (i, l) in config.listen.iter().enumerate() {
        acceptors.push(match &l.tls {
            Some(files) => {
                let store =
                    Arc::new(tls::CertStore::load(files.clone()).map_err(|e| RunError::Tls(i, e))?);
                cert_stores.push(store.clone());
                Some(tokio_rustls::TlsAcceptor::from(tls::server_config(store)))
            }
            None => None,
        });
    }
    let metrics = Arc::new(Metrics::new());
    let backend = store::open(&config.session, &config.secrets).await?;
    let proxy = Arc::new(Proxy::new(&config, backend, metrics.clone())?);
    let admin = Arc::new(Admin::new(
        proxy.clone(),
        metrics,
        crate::admin::jwks(&config),
    ));
    let builder = Arc::new(http_builder(&config.limits));
    let graceful = Arc::new(GracefulShutdown::new());
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = JoinSet::new();
    let head_limits = crate::http1::server::HeadLimits {
        read_timeout: config.limits.header_read_timeout,
        max_bytes: config.limits.max_header_bytes,
        max_headers: config.limits.max_headers,
    };

    for (listener, acceptor) in listeners.proxy.into_iter().zip(acceptors) {
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, tls = acceptor.is_some(), "proxy listening");
        let proxy = proxy.clone();
        let proto = if acceptor.is_some() { "https" } else { "http" };
        let own_http1 = Some((proxy.clone(), head_limits, proto));
        loops.spawn(accept_loop(
            listener,
            acceptor,
            config.limits.header_read_timeout,
            builder.clone(),
            graceful.clone(),
            connections.clone(),
            stop_rx.clone(),
            own_http1,
            move |remote| {
                let proxy = proxy.clone();
                let conn = ConnInfo::new(remote, proto);
                service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handled = proxy
                        .clone()
                        .handle(Box::new(req.map(RequestBody::Hyper)), conn.clone());
                    async move { Ok::<_, Infallible>(*handled.await) }
                })
            },
        ));
    }
    if let Some(listener) = listeners.admin {
        tracing::info!(addr = ?listener.local_addr().ok(), "admin listening");
        let admin = admin.clone();
        loops.spawn(accept_loop(
            listener,
            None,
            config.limits.header_read_timeout,
            builder.clone(),
            graceful.clone(),
            Arc::new(Semaphore::new(64)),
            stop_rx.clone(),
            None,
            move |_| {
                let admin = admin.clone();
                service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req).await) }
                })
            },
        ));
    }
    let sweeper = tokio::spawn(sweep_loop(proxy.clone()));
    let reloader = tokio::spawn(reload_on_sighup(hangup, cert_stores));

    shutdown.await;
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    sweeper.abort();
    reloader.abort();
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
    if !proxy.drain_tunnels(config.limits.drain_timeout).await {
        tracing::warn!(timeout = ?config.limits.drain_timeout, "upgraded connections still open after the drain timeout; closing them");
    }
    drop(admin);
    close_store(proxy).await;
    Ok(())
}

/// Waits for the last request task to let go of the proxy, then closes the
/// store (flushing and unlocking an embedded file) off the async runtime.
async fn close_store(mut proxy: Arc<Proxy>) {
    let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(proxy) {
            Ok(p) => {
                let _ = tokio::task::spawn_blocking(move || drop(p)).await;
                return;
            }
            Err(shared) if tokio::time::Instant::now() < deadline => {
                proxy = shared;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {
                tracing::warn!("connections still hold the session store; it closes when they end");
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop<S, B, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    builder: Arc<auto::Builder<TokioExecutor>>,
    graceful: Arc<GracefulShutdown>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    own_http1: Option<(Arc<Proxy>, crate::http1::server::HeadLimits, &'static str)>,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.changed() => return,
        };
        let (stream, remote): (TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(remote);
        let builder = builder.clone();
        // A connection still in its TLS handshake holds a watcher too, so
        // shutdown waits for it like for any other.
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let mut shutting_down = stop.clone();
        let own_http1 = own_http1.clone();
        tokio::spawn(async move {
            let result = match tls {
                // Plain HTTP/1.1 is served by the server's own loop, which
                // hands anything else (HTTP/2 included) to hyper.
                None if let Some((proxy, limits, proto)) = own_http1 => {
                    let info = ConnInfo::new(remote, proto);
                    match crate::http1::server::serve(
                        stream,
                        &proxy,
                        &info,
                        limits,
                        &mut shutting_down,
                    )
                    .await
                    {
                        crate::http1::server::Served::Done => Ok(()),
                        crate::http1::server::Served::Handoff(io) => {
                            let conn =
                                builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                            watcher.watch(conn.into_owned()).await
                        }
                    }
                }
                None => {
                    // Before hyper knows the protocol no header timer runs: a
                    // client must send its first byte within the header timeout.
                    // A connection still silent at shutdown is simply closed.
                    let mut first = [0u8; 1];
                    let first_byte = tokio::select! {
                        r = tokio::time::timeout(handshake_timeout, stream.peek(&mut first)) => r,
                        _ = shutting_down.changed() => return,
                    };
                    match first_byte {
                        Ok(Ok(_)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("no request within the header timeout".into()),
                    }
                }
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        r = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => r,
                        _ = shutting_down.changed() => return,
                    };
                    match handshake {
                        // HTTP/1 over TLS takes the same loop as plain HTTP/1,
                        // so that every HTTP/1 head is judged by one parser.
                        Ok(Ok(tls_stream))
                            if let Some((proxy, limits, proto)) = own_http1
                                && tls_stream.get_ref().1.alpn_protocol() != Some(b"h2") =>
                        {
                            let info = ConnInfo::new(remote, proto);
                            match crate::http1::server::serve(
                                tls_stream,
                                &proxy,
                                &info,
                                limits,
                                &mut shutting_down,
                            )
                            .await
                            {
                                crate::http1::server::Served::Done => Ok(()),
                                crate::http1::server::Served::Handoff(io) => {
                                    let conn = builder
                                        .serve_connection_with_upgrades(TokioIo::new(io), service);
                                    watcher.watch(conn.into_owned()).await
                                }
                            }
                        }
                        Ok(Ok(tls_stream)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}").into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed at
/// once (before the store opens), and a second signal exits immediately
/// instead of waiting out the drain.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!(
                    "sessiongate: second signal, exiting without waiting for in-flight requests"
                );
                std::process::exit(1);
            });
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The SIGHUP handler, installed before anything slow so that a reload
/// signal never terminates the process (its default action).
#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

fn install_sighup() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!(error = %e, "cannot install a SIGHUP handler"))
            .ok()
    }
}

/// SIGHUP re-reads every TLS certificate; established connections keep theirs.
#[cfg_attr(not(unix), allow(unused_variables))]
async fn reload_on_sighup(hup: Hangup, stores: Vec<Arc<tls::CertStore>>) {
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

async fn sweep_loop(proxy: Arc<Proxy>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        match proxy.sessions.sweep(now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired sessions swept"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired sessions failed"),
        }
    }
}
