//! Listeners and accept loops, for any [`Handler`]: each connection is
//! served by the HTTP/1 loop (`crate::http1`) or, for HTTP/2 (ALPN `h2`,
//! or the h2c preface), by hyper's HTTP/2 server. On the stop signal the
//! loops stop accepting; a connection still being served holds a watcher
//! of the [`GracefulShutdown`] until it ends, so that shutdown can wait for
//! it.

mod signals;
pub mod tls;

pub use signals::{Hangup, hangup, install_sighup, shutdown_signal};

pub mod proxy_protocol;
use crate::config::Limits;
use crate::http1::{self, ConnInfo, Handler, HeadLimits, RequestBody, Served};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long accepting backs off after a failed accept (EMFILE and friends).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the connections of a listener are served.
#[derive(Clone)]
pub struct Serving {
    pub conn: PerConnection,
    /// Bounds the connections served at once (shared by listeners).
    pub connections: Arc<Semaphore>,
    pub graceful: Arc<GracefulShutdown>,
}

/// What each connection's task holds.
#[derive(Clone)]
pub struct PerConnection {
    pub head: HeadLimits,
    /// hyper's HTTP/2 server, set up once.
    pub h2: Arc<hyper::server::conn::http2::Builder<TokioExecutor>>,
    pub stop: watch::Receiver<bool>,
}

impl Serving {
    pub fn new(
        limits: &Limits,
        connections: Arc<Semaphore>,
        graceful: Arc<GracefulShutdown>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // HTTP/2 counts every cookie as its own header: the cookie store's
        // five chunks must fit. Pings find dead peers.
        h2.timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
            .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
            .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
        Serving {
            conn: PerConnection {
                head: HeadLimits {
                    read_timeout: limits.header_read_timeout,
                    max_bytes: limits.max_header_bytes,
                    max_headers: limits.max_headers,
                },
                h2: Arc::new(h2),
                stop,
            },
            connections,
            graceful,
        }
    }
}

/// What a listener does with a connection before HTTP.
pub struct Accept {
    /// TLS, when set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// A PROXY protocol header first (before TLS), naming the client.
    pub proxy_protocol: bool,
}

/// Accepts connections on `listener` and serves them with `handler` until
/// the stop signal, or until `retire` changes (a reload that restarts the
/// loop with new settings, or removes the listener). It gives the listener
/// back: connections waiting in its queue are not lost, and the ones it
/// accepted go on being served.
pub async fn accept_loop<H: Handler>(
    listener: TcpListener,
    accept: Accept,
    handler: Arc<H>,
    serving: Serving,
    mut retire: watch::Receiver<bool>,
) -> TcpListener {
    let Accept {
        tls,
        proxy_protocol,
    } = accept;
    let mut stop = serving.conn.stop.clone();
    let proto = if tls.is_some() { "https" } else { "http" };
    loop {
        let permit = tokio::select! {
            p = serving.connections.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = stop.changed() => return listener,
            _ = retire.changed() => return listener,
        };
        let (mut stream, remote): (TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    crate::limited!(crate::logging::LogClass::accept, warn, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => return listener,
            _ = retire.changed() => return listener,
        };
        let _ = stream.set_nodelay(true);
        // A connection still in its TLS handshake holds a watcher too, so
        // shutdown waits for it like for any other.
        let watcher = serving.graceful.watcher();
        let handler = handler.clone();
        let serving = serving.conn.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut stop = serving.stop.clone();
            let remote = if proxy_protocol {
                let header = tokio::select! {
                    r = tokio::time::timeout(serving.head.read_timeout, proxy_protocol::read_header(&mut stream)) => r,
                    _ = stop.changed() => return,
                };
                match header {
                    Ok(Ok(source)) => source.unwrap_or(remote),
                    Ok(Err(e)) => {
                        crate::limited!(crate::logging::LogClass::refused, info, peer = %remote.ip(), error = %e, "connection closed: no valid PROXY protocol header");
                        return;
                    }
                    Err(_) => {
                        crate::limited!(crate::logging::LogClass::refused, info, peer = %remote.ip(), "connection closed: no PROXY protocol header in time");
                        return;
                    }
                }
            } else {
                remote
            };
            let conn = ConnInfo::new(remote, proto);
            let result = match tls {
                None => {
                    serve(
                        stream, &handler, &conn, &serving, watcher, &mut stop, permit,
                    )
                    .await
                }
                // Boxed, as every path but plain HTTP/1: a task is as large as
                // its largest state, and the TLS handshake and hyper's HTTP/2
                // connection made it 13.7 KB against 1.6 KB for the plain
                // path, held by every connection of a busy listener.
                Some(acceptor) => Box::pin(async move {
                    let handshake = tokio::select! {
                        r = tokio::time::timeout(serving.head.read_timeout, acceptor.accept(stream)) => r,
                        _ = stop.changed() => return Ok(()),
                    };
                    match handshake {
                        Ok(Ok(tls_stream)) => {
                            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            if h2 {
                                serve_h2(tls_stream, &handler, conn, &serving, watcher).await
                            } else {
                                let stop = &mut stop;
                                serve(tls_stream, &handler, &conn, &serving, watcher, stop, permit)
                                    .await
                            }
                        }
                        Ok(Err(e)) => {
                            crate::limited!(
                                crate::logging::LogClass::tls_handshake,
                                warn,
                                client = %conn.client_ip.to_str().unwrap_or("-"),
                                error = %e,
                                "TLS handshake failed"
                            );
                            Ok(())
                        }
                        Err(_) => {
                            crate::limited!(
                                crate::logging::LogClass::tls_handshake,
                                warn,
                                client = %conn.client_ip.to_str().unwrap_or("-"),
                                "TLS handshake timed out"
                            );
                            Ok(())
                        }
                    }
                })
                .await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP/1 connection, which may turn out to be h2c with prior knowledge.
async fn serve<T, H>(
    io: T,
    handler: &Arc<H>,
    conn: &ConnInfo,
    serving: &PerConnection,
    watcher: hyper_util::server::graceful::Watcher,
    stop: &mut watch::Receiver<bool>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), BoxError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Handler,
{
    match http1::serve(io, handler, conn, serving.head, stop).await {
        Served::Done => {
            drop(watcher);
            Ok(())
        }
        // Boxed for the reason the TLS path is (see `accept_loop`).
        Served::Http2(io) => Box::pin(serve_h2(io, handler, conn.clone(), serving, watcher)).await,
        Served::Tunnel(tunnel) => {
            // A tunnel counts against the bound of tunnels, not of connections.
            drop(permit);
            Box::pin(tunnel.run()).await;
            drop(watcher);
            Ok(())
        }
    }
}

/// An HTTP/2 connection, served by hyper.
async fn serve_h2<T, H>(
    io: T,
    handler: &Arc<H>,
    conn: ConnInfo,
    serving: &PerConnection,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), BoxError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Handler,
{
    let client = conn.client_ip.clone();
    let handler = handler.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let handled = {
            let handler = handler.clone();
            let conn = conn.clone();
            async move {
                let req = Box::new(req.map(RequestBody::Http2));
                handler.call(req, &conn).await
            }
        };
        async move { Ok::<_, Infallible>(*handled.await) }
    });
    let connection = serving.h2.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection).await {
        crate::limited!(
            crate::logging::LogClass::http2,
            warn,
            client = %client.to_str().unwrap_or("-"),
            error = %e,
            "HTTP/2 connection ended with an error"
        );
    }
    Ok(())
}
