//! Keep-alive HTTP/1.1 connections to one upstream, driven by the request
//! that uses them.
//!
//! A pooled connection has no task of its own: the request's task polls it
//! while waiting for the response head, and the response body polls it while
//! the body streams. When the exchange is complete the connection goes back
//! to the pool. A proxied request therefore costs no task switch and no
//! channel hop on the upstream side, which a connection task would add.
//! An idle connection is not watched; one the upstream closed meanwhile is
//! noticed (and dropped) when it is next taken, and a request that a reused
//! connection could not send is retried once on a new connection.

use super::stream::UpstreamStream;
use crate::config::UpstreamConfig;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How long an idle connection to an upstream is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream; more are closed when they come back.
pub const DEFAULT_MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Bound on the TCP connect (and TLS handshake) to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Io = TokioIo<UpstreamStream>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("TLS handshake with {addr} failed")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP/1.1 exchange with the upstream failed")]
    Http(#[source] hyper::Error),
}

struct Conn {
    sender: http1::SendRequest<Incoming>,
    driver: http1::Connection<Io, Incoming>,
    idle_since: Instant,
}

impl Conn {
    /// Polls the connection once without a task to wake, and says whether it
    /// can take a new request: a connection the upstream closed, or one
    /// still busy with an exchange, cannot.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.driver).poll(&mut cx).is_pending() && self.sender.is_ready()
    }
}

struct Connector {
    /// Host for DNS and the TLS server name (IPv6 literals without brackets).
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Connector {
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    async fn connect(&self) -> Result<Io, UpstreamError> {
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let handshake = async {
            let tcp = connect.await.map_err(|source| UpstreamError::Connect {
                addr: self.addr(),
                source,
            })?;
            // Requests are small writes that must leave at once.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(UpstreamStream::Plain(tcp)),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|s| UpstreamStream::Tls(Box::new(s)))
                    .map_err(|source| UpstreamError::Tls {
                        addr: self.addr(),
                        source,
                    }),
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
            Ok(stream) => Ok(TokioIo::new(stream?)),
            Err(_) => Err(UpstreamError::ConnectTimeout(self.addr())),
        }
    }
}

pub struct Pool {
    /// Oldest first: taken from the back, expired from the front. Boxed
    /// because a connection moves between the pool, the request and its
    /// response body on every request: a pointer, not the whole connection.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Conn>>>,
    max_idle: usize,
    connector: Connector,
}

impl Pool {
    pub fn new(u: &UpstreamConfig, tls: Option<Arc<rustls::ClientConfig>>) -> Pool {
        let https = u.scheme == http::uri::Scheme::HTTPS;
        let host = u
            .authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u
            .authority
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, tls) {
            (true, Some(config)) => ServerName::try_from(host.clone())
                .ok()
                .map(|name| (tokio_rustls::TlsConnector::from(config), name)),
            _ => None,
        };
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle: DEFAULT_MAX_IDLE_PER_UPSTREAM,
            connector: Connector { host, port, tls },
        }
    }

    /// An idle connection that can take a request, if one is left.
    fn checkout(&self, now: Instant) -> Option<Box<Conn>> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let expired = idle
                .iter()
                .take_while(|c| now.duration_since(c.idle_since) > POOL_IDLE_TIMEOUT)
                .count();
            stale.extend(idle.drain(..expired));
            loop {
                match idle.pop() {
                    None => break None,
                    Some(mut conn) => {
                        if conn.reusable() {
                            break Some(conn);
                        }
                        stale.push(conn);
                    }
                }
            }
        };
        // Closing sockets happens outside the lock.
        drop(stale);
        found
    }

    fn put_back(&self, mut conn: Box<Conn>) {
        if !conn.reusable() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    async fn open(&self) -> Result<Box<Conn>, UpstreamError> {
        let io = self.connector.connect().await?;
        let (sender, driver) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(UpstreamError::Http)?;
        Ok(Box::new(Conn {
            sender,
            driver,
            idle_since: Instant::now(),
        }))
    }

    /// Sends a request (origin-form URI, Host set) and returns the response
    /// once its head has arrived. An upgrade request gets a connection of its
    /// own, driven by a task until the upgrade hands its socket over.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let mut reused = true;
        loop {
            let mut conn = match self.checkout(Instant::now()) {
                Some(conn) => conn,
                None => {
                    reused = false;
                    self.open().await?
                }
            };
            if upgrade {
                let response = conn.sender.send_request(req);
                let Conn { sender, driver, .. } = *conn;
                tokio::spawn(async move {
                    if let Err(e) = driver.with_upgrades().await {
                        tracing::debug!(error = %e, "upstream connection for an upgrade failed");
                    }
                    drop(sender);
                });
                let resp = response.await.map_err(UpstreamError::Http)?;
                return Ok(resp.map(|body| UpstreamBody {
                    body,
                    conn: None,
                    pool: self.clone(),
                }));
            }
            let mut response = std::pin::pin!(conn.sender.try_send_request(req));
            let mut closed = false;
            let outcome = poll_fn(|cx| {
                if let Poll::Ready(r) = response.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                if !closed {
                    if let Poll::Ready(end) = Pin::new(&mut conn.driver).poll(cx) {
                        closed = true;
                        if let Err(e) = end {
                            tracing::debug!(error = %e, "upstream connection failed");
                        }
                    }
                    // The poll above may have read the whole response.
                    return response.as_mut().poll(cx);
                }
                Poll::Pending
            })
            .await;
            match outcome {
                Ok(resp) => {
                    let conn = (!closed).then_some(conn);
                    return Ok(resp.map(|body| UpstreamBody {
                        body,
                        conn,
                        pool: self.clone(),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: an idle connection the upstream closed
                    // just as it was taken. Safe to send again, once.
                    Some(again) if reused => {
                        tracing::debug!(error = %e.error(), "reused upstream connection was closed; retrying on a new one");
                        req = again;
                        reused = false;
                    }
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }
}

/// An upstream response body. While it streams it also drives its
/// connection, and it returns the connection to the pool when the exchange
/// is complete (or it is dropped with the exchange complete).
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
}

impl UpstreamBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(conn) = &mut this.conn
            && let Poll::Ready(end) = Pin::new(&mut conn.driver).poll(cx)
        {
            if let Err(e) = end {
                tracing::debug!(error = %e, "upstream connection failed during the body");
            }
            this.conn = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.release();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        self.release();
    }
}
