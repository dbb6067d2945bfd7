//! The listeners and their accept loops, which a reload restarts with the
//! new settings (TLS certificates, PROXY protocol, header limits), adds or
//! removes. A listener kept by a reload keeps its socket: connections in
//! its queue wait for the new loop, and the ones already accepted are served
//! to their end.

use super::live::Live;
use super::{ADMIN_CONNECTIONS, RunError};
use crate::admin::Admin;
use crate::config::Config;
use crate::proxy::Proxy;
use crate::server::{self, Serving, tls};
use hyper_util::server::graceful::GracefulShutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

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

/// One accept loop, under the address the config gave it (a test's
/// `127.0.0.1:0` stays that, whatever port it got).
struct Loop {
    addr: SocketAddr,
    retire: watch::Sender<bool>,
    task: JoinHandle<TcpListener>,
}

impl Loop {
    /// Ends the loop; its listener, unless the loop panicked.
    async fn stop(self) -> Option<(SocketAddr, TcpListener)> {
        let _ = self.retire.send(true);
        self.task.await.ok().map(|l| (self.addr, l))
    }
}

/// The sockets bound for a reload before anything changed, so that a
/// failed bind leaves the running config whole.
pub(super) struct Bound(Vec<(SocketAddr, TcpListener)>);

/// The accept loops being run, and what they share.
pub(super) struct Running {
    proxy: Vec<Loop>,
    admin: Option<Loop>,
    connections: Arc<Semaphore>,
    admin_connections: Arc<Semaphore>,
    graceful: Arc<GracefulShutdown>,
    stop: watch::Receiver<bool>,
    proxy_handler: Arc<Live<Proxy>>,
    admin_handler: Arc<Live<Admin>>,
}

impl Running {
    pub(super) fn new(
        config: &Config,
        graceful: Arc<GracefulShutdown>,
        stop: watch::Receiver<bool>,
        proxy_handler: Arc<Live<Proxy>>,
        admin_handler: Arc<Live<Admin>>,
    ) -> Self {
        Running {
            proxy: Vec::new(),
            admin: None,
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            admin_connections: Arc::new(Semaphore::new(ADMIN_CONNECTIONS)),
            graceful,
            stop,
            proxy_handler,
            admin_handler,
        }
    }

    /// Starts the loops of `config` on its listeners, bound in its order.
    pub(super) fn start(&mut self, config: &Config, listeners: Listeners) {
        let mut bound: Vec<_> = config
            .listen
            .iter()
            .map(|l| l.addr)
            .zip(listeners.proxy)
            .collect();
        if let (Some(a), Some(l)) = (&config.admin, listeners.admin) {
            bound.push((a.addr, l));
        }
        let fresh: Vec<_> = bound.iter().map(|(a, _)| *a).collect();
        self.spawn_all(config, bound, &fresh, &mut Vec::new());
    }

    fn running_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.proxy.iter().chain(&self.admin).map(|l| l.addr)
    }

    /// Binds the addresses `config` has and the running loops do not.
    pub(super) fn bind_new(&self, config: &Config) -> Result<Bound, RunError> {
        let wanted = config
            .listen
            .iter()
            .map(|l| l.addr)
            .chain(config.admin.as_ref().map(|a| a.addr));
        let mut bound = Vec::new();
        for addr in wanted {
            if !self.running_addrs().any(|a| a == addr) && !bound.iter().any(|(a, _)| *a == addr) {
                bound.push((addr, bind(addr, config.limits.listen_backlog)?));
            }
        }
        Ok(Bound(bound))
    }

    /// Restarts every loop with the settings of `config`, on the sockets it
    /// keeps and the ones `bound` for it; closes the sockets it dropped.
    pub(super) async fn restart(&mut self, config: &Config, bound: Bound) {
        let mut sockets = bound.0;
        let fresh: Vec<_> = sockets.iter().map(|(a, _)| *a).collect();
        let old: Vec<_> = self.proxy.drain(..).chain(self.admin.take()).collect();
        let mut kept = Vec::with_capacity(old.len());
        for l in old {
            kept.extend(l.stop().await);
        }
        sockets.extend(kept);
        let mut dropped = Vec::new();
        self.spawn_all(config, sockets, &fresh, &mut dropped);
        for addr in dropped {
            tracing::info!(addr = %addr, "listener closed: no longer in the config");
        }
    }

    /// Spawns a loop for each listener of `config` on its socket in `sockets`
    /// (announcing the `fresh` ones); the addresses of sockets left over go
    /// to `dropped`.
    fn spawn_all(
        &mut self,
        config: &Config,
        mut sockets: Vec<(SocketAddr, TcpListener)>,
        fresh: &[SocketAddr],
        dropped: &mut Vec<SocketAddr>,
    ) {
        let serving = Serving::new(
            &config.limits,
            self.connections.clone(),
            self.graceful.clone(),
            self.stop.clone(),
        );
        let mut take = |addr: SocketAddr| {
            let i = sockets.iter().position(|(a, _)| *a == addr)?;
            Some(sockets.swap_remove(i).1)
        };
        for l in &config.listen {
            let Some(listener) = take(l.addr) else {
                continue;
            };
            let accept = server::Accept {
                tls: l
                    .tls
                    .clone()
                    .map(|store| tokio_rustls::TlsAcceptor::from(tls::server_config(store))),
                proxy_protocol: l.proxy_protocol,
            };
            if fresh.contains(&l.addr) {
                tracing::info!(
                    addr = %Shown(listener.local_addr().ok()),
                    tls = accept.tls.is_some(),
                    proxy_protocol = accept.proxy_protocol,
                    "proxy listening"
                );
            }
            let (retire, retired) = watch::channel(false);
            let task = tokio::spawn(server::accept_loop(
                listener,
                accept,
                self.proxy_handler.clone(),
                serving.clone(),
                retired,
            ));
            self.proxy.push(Loop {
                addr: l.addr,
                retire,
                task,
            });
        }
        if let Some(a) = &config.admin
            && let Some(listener) = take(a.addr)
        {
            if fresh.contains(&a.addr) {
                tracing::info!(addr = %Shown(listener.local_addr().ok()), "admin listening");
            }
            let admin_serving = Serving {
                connections: self.admin_connections.clone(),
                ..serving.clone()
            };
            let (retire, retired) = watch::channel(false);
            let task = tokio::spawn(server::accept_loop(
                listener,
                server::Accept {
                    tls: None,
                    proxy_protocol: false,
                },
                self.admin_handler.clone(),
                admin_serving,
                retired,
            ));
            self.admin = Some(Loop {
                addr: a.addr,
                retire,
                task,
            });
        }
        dropped.extend(sockets.into_iter().map(|(a, _)| a));
    }

    /// Waits for every loop to end (after the stop signal), and lets go of
    /// what they shared, so that shutdown can wait for the connections.
    pub(super) async fn join(self) {
        for l in self.proxy.into_iter().chain(self.admin) {
            let _ = l.task.await;
        }
    }
}

/// An address as a person reads it, `-` when unknown.
struct Shown(Option<SocketAddr>);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("-"),
        }
    }
}
