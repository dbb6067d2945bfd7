//! The connections of each Redis topology: a standalone server (sessiongate's
//! own connection over plain TCP, redis-rs's connection manager over TLS or
//! a Unix socket), a Cluster, or the master named by Sentinel.

use super::connection::{Direct, Target};
use crate::config::{RedisConfig, RedisTopology};
use crate::store::{OpenError, StoreError};
use ::redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Reconnection attempts of the connection manager before a command fails;
/// it keeps trying in the background afterwards.
const RECONNECT_RETRIES: usize = 2;

pub(super) fn backend(e: RedisError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// With `replicas_ack`, waits (Redis `WAIT`, on this connection, so
/// covering the write just made) until that many replicas hold the
/// write, within the timeout; fewer is an error, and the client is told
/// the write failed although the master has it (a failover may keep it
/// or lose it). On Cluster, `WAIT` goes to the master of `key`'s slot.
pub(super) async fn replicated(
    c: &mut Conn,
    key: &str,
    replicas: u32,
    timeout: Duration,
) -> Result<(), RedisError> {
    if replicas == 0 {
        return Ok(());
    }
    let mut wait = ::redis::cmd("WAIT");
    wait.arg(replicas)
        // Half the timeout: a shortfall is then reported as one, before
        // the operation's own timeout ends the wait.
        .arg((timeout / 2).as_millis().max(1) as u64);
    let acked: i64 = match c {
        // To the key's master only (the client would ask every master
        // and report the least, failing every write while any shard has
        // no replica, as right after a failover).
        Conn::Cluster(cluster) => {
            use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
            let route = Route::with_key(key, SlotAddr::Master);
            let reply = cluster
                .route_command(
                    wait,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                )
                .await?;
            ::redis::from_redis_value(reply)?
        }
        other => wait.query_async(other).await?,
    };
    if acked < i64::from(replicas) {
        return Err(RedisError::from((
            ::redis::ErrorKind::Io,
            "fewer replicas than replicas_ack hold the write",
            format!("{acked} of {}", replicas),
        )));
    }
    Ok(())
}

/// Sentinel: the master's address is asked of the sentinels, and asked again
/// after a connection error, so a failover is followed without a restart.
pub(super) struct SentinelConn {
    client: Mutex<::redis::sentinel::SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
}

impl SentinelConn {
    async fn get(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        // Boxed: redis-rs's connect future is many layers deep, and inlined it
        // sat in every operation's future (and past rustc's layout depth).
        let conn = {
            let mut client = self.client.lock().await;
            Box::pin(client.get_async_connection()).await?
        };
        *current = Some(conn.clone());
        Ok(conn)
    }

    pub(super) async fn invalidate(&self) {
        *self.current.lock().await = None;
    }
}

pub(super) enum Topology {
    /// A standalone server over plain TCP.
    Direct(Direct),
    /// A standalone server over TLS or a Unix socket.
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// One handle for a command, whatever the topology.
#[derive(Clone)]
pub(super) enum Conn {
    Direct(Direct),
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Multiplexed(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        p: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Direct(c) => c.req_packed_commands(p, offset, count),
            Conn::Single(c) => c.req_packed_commands(p, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(p, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(p, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Direct(c) => c.get_db(),
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
        }
    }
}

fn tls_certs(ca_pem: &Option<Vec<u8>>) -> Option<::redis::TlsCertificates> {
    ca_pem.as_ref().map(|pem| ::redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.clone()),
    })
}

fn open_err(what: &str) -> impl FnOnce(RedisError) -> OpenError + '_ {
    move |e| OpenError::Backend(what.to_string(), Box::new(e))
}

impl Topology {
    /// After an operation failed: perhaps a failover, so Sentinel is asked
    /// for the master again next time.
    pub(super) async fn failed(&self) {
        if let Topology::Sentinel(s) = self {
            s.invalidate().await;
        }
    }

    /// The connections `cfg` names; only Cluster connects before returning
    /// (to learn the slots).
    pub(super) async fn open(cfg: &RedisConfig) -> Result<Topology, OpenError> {
        let certs = tls_certs(&cfg.ca_pem);
        Ok(match &cfg.topology {
            RedisTopology::Standalone { url } => {
                let client = match &certs {
                    Some(c) => ::redis::Client::build_with_tls(url.as_str(), c.clone()),
                    None => ::redis::Client::open(url.as_str()),
                }
                .map_err(open_err("redis"))?;
                if let Some(target) = Target::of(client.get_connection_info()) {
                    Topology::Direct(Direct::new(target, cfg.timeout))
                } else {
                    // No response timeout of the client's own: `run` bounds every
                    // operation with the same timeout, armed first and so always
                    // first to fire; a second timer per command only cost time.
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(cfg.timeout))
                        .set_response_timeout(None)
                        .set_number_of_retries(RECONNECT_RETRIES)
                        .set_max_delay(Duration::from_secs(1));
                    let manager = ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(open_err("redis"))?;
                    Topology::Single(manager)
                }
            }
            RedisTopology::Cluster { nodes } => {
                let mut b =
                    ::redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .connection_timeout(cfg.timeout)
                        .response_timeout(cfg.timeout)
                        .retries(2);
                if let Some(c) = &certs {
                    b = b.certs(c.clone());
                }
                let client = b.build().map_err(open_err("redis cluster"))?;
                let conn =
                    tokio::time::timeout(cfg.timeout * 2, Box::pin(client.get_async_connection()))
                        .await
                        .map_err(|_| {
                            OpenError::Backend(
                                "redis cluster".into(),
                                "no cluster node answered in time".into(),
                            )
                        })?
                        .map_err(open_err("redis cluster"))?;
                Topology::Cluster(conn)
            }
            RedisTopology::Sentinel {
                master,
                nodes,
                username,
                password,
                db,
            } => {
                let mut login = ::redis::RedisConnectionInfo::default().set_db(*db);
                if let Some(u) = username {
                    login = login.set_username(u);
                }
                if let Some(p) = password {
                    let p = std::str::from_utf8(p.expose()).map_err(|_| {
                        OpenError::Backend(
                            "redis sentinel".into(),
                            "the master's password is not UTF-8".into(),
                        )
                    })?;
                    login = login.set_password(p);
                }
                let mut info = ::redis::sentinel::SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(login);
                if nodes.iter().any(|n| n.starts_with("rediss://")) {
                    info = info.set_tls_mode(::redis::TlsMode::Secure);
                }
                let client = ::redis::sentinel::SentinelClient::build(
                    nodes.iter().map(String::as_str).collect(),
                    master.clone(),
                    Some(info),
                    ::redis::sentinel::SentinelServerType::Master,
                )
                .map_err(open_err("redis sentinel"))?;
                Topology::Sentinel(Arc::new(SentinelConn {
                    client: Mutex::new(client),
                    current: Mutex::new(None),
                }))
            }
        })
    }

    /// A handle for one operation; on Sentinel, the master is asked for
    /// first when not known (within `timeout`).
    pub(super) async fn conn(&self, timeout: Duration) -> Result<Conn, StoreError> {
        match self {
            Topology::Direct(c) => Ok(Conn::Direct(c.clone())),
            Topology::Single(c) => Ok(Conn::Single(c.clone())),
            Topology::Cluster(c) => Ok(Conn::Cluster(c.clone())),
            Topology::Sentinel(s) => match tokio::time::timeout(timeout, s.get()).await {
                Ok(Ok(c)) => Ok(Conn::Multiplexed(c)),
                Ok(Err(e)) => Err(backend(e)),
                Err(_) => Err(StoreError::Timeout),
            },
        }
    }
}
