//! `session.store`: one function per kind, each reporting under the path
//! it is given (a `cached` store's durable store sits one level down).

use super::*;
use crate::config::raw::*;
use serde_json::Value;

pub(super) fn store(raw: RawStore, at: &str, issues: &mut Issues) -> StoreConfig {
    match raw {
        RawStore::Memory { max_sessions } => {
            let max_sessions = max_sessions.map_or(DEFAULT_MAX_SESSIONS, |m| m as usize);
            if max_sessions == 0 {
                issues.push(format!("{at}.max_sessions"), "must be at least 1");
            }
            StoreConfig::Memory { max_sessions }
        }
        RawStore::Embedded { path, max_sessions } => {
            let max_sessions = max_sessions.map_or(DEFAULT_EMBEDDED_MAX_SESSIONS, |m| m as usize);
            if max_sessions == 0 {
                issues.push(format!("{at}.max_sessions"), "must be at least 1");
            }
            StoreConfig::Embedded {
                path: PathBuf::from(path.unwrap_or_else(|| DEFAULT_EMBEDDED_PATH.to_string())),
                max_sessions,
            }
        }
        RawStore::Redis {
            url,
            cluster,
            sentinel,
            key_prefix,
            timeout,
            ca,
            replicas_ack,
        } => {
            let redis_url = |u: &str, path: &str, issues: &mut Issues| {
                if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                    issues.push(
                        path,
                        format!(
                            "invalid Redis URL {:?}: expected redis:// or rediss://",
                            redact_url(u)
                        ),
                    );
                }
            };
            let topology = match (url, cluster, sentinel) {
                (Some(url), None, None) => {
                    redis_url(&url, &format!("{at}.url"), issues);
                    RedisTopology::Standalone { url }
                }
                (None, Some(nodes), None) => {
                    if nodes.is_empty() {
                        issues.push(format!("{at}.cluster"), "needs at least one node");
                    }
                    for (i, n) in nodes.iter().enumerate() {
                        redis_url(n, &format!("{at}.cluster[{i}]"), issues);
                    }
                    RedisTopology::Cluster { nodes }
                }
                (None, None, Some(s)) => {
                    if s.nodes.is_empty() {
                        issues.push(
                            format!("{at}.sentinel.nodes"),
                            "needs at least one sentinel",
                        );
                    }
                    for (i, n) in s.nodes.iter().enumerate() {
                        redis_url(n, &format!("{at}.sentinel.nodes[{i}]"), issues);
                    }
                    let password = s.password.as_ref().and_then(|p| {
                        let Value::String(spec) = p else {
                            issues.push(
                                format!("{at}.sentinel.password"),
                                "must be a string: a literal, env:NAME or file:PATH",
                            );
                            return None;
                        };
                        secret::resolve(spec)
                            .map_err(|e| issues.push(format!("{at}.sentinel.password"), e))
                            .ok()
                    });
                    RedisTopology::Sentinel {
                        master: s.master,
                        nodes: s.nodes,
                        username: s.username,
                        password,
                        db: s.db.unwrap_or(0),
                    }
                }
                (None, None, None) => {
                    issues.push(
                        at,
                        "a redis store needs one of `url`, `cluster` or `sentinel`",
                    );
                    RedisTopology::Standalone { url: String::new() }
                }
                _ => {
                    issues.push(at, "give only one of `url`, `cluster` or `sentinel`");
                    RedisTopology::Standalone { url: String::new() }
                }
            };
            let key_prefix = key_prefix.unwrap_or_else(|| DEFAULT_REDIS_KEY_PREFIX.to_string());
            if key_prefix.contains(['{', '}']) {
                issues.push(
                    format!("{at}.key_prefix"),
                    "must not contain { or }: they would change the Cluster hash slot",
                );
            }
            let ca_pem = ca.as_ref().and_then(|path| match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    issues.push(format!("{at}.ca"), format!("cannot read {path}: {e}"));
                    None
                }
            });
            let replicas_ack = replicas_ack.unwrap_or(0);
            if replicas_ack > MAX_REPLICAS_ACK {
                issues.push(
                    format!("{at}.replicas_ack"),
                    format!("at most {MAX_REPLICAS_ACK}"),
                );
            }
            StoreConfig::Redis(RedisConfig {
                topology,
                key_prefix,
                ca_pem,
                replicas_ack: replicas_ack.min(MAX_REPLICAS_ACK) as u32,
                timeout: duration(
                    &timeout,
                    &format!("{at}.timeout"),
                    Duration::from_secs(DEFAULT_REDIS_TIMEOUT_SECS),
                    issues,
                ),
            })
        }
        RawStore::Cookie {} => StoreConfig::Cookie,
        RawStore::Postgres(raw) => sql(raw, SqlDialect::Postgres, at, issues),
        RawStore::Mysql(raw) => sql(raw, SqlDialect::Mysql, at, issues),
        RawStore::Memcached(raw) => memcached(raw, at, issues),
        RawStore::Cached(raw) => cached(raw, at, issues),
    }
}

/// A URL as an error message may show it: the scheme and the host, never
/// the credentials or the query (which may carry a password).
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => ("", url),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_string(),
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

/// A SQL identifier sessiongate creates and names in statements unquoted.
fn table_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn sql(raw: RawSql, dialect: SqlDialect, at: &str, issues: &mut Issues) -> StoreConfig {
    let schemes: &[&str] = match dialect {
        SqlDialect::Postgres => &["postgres://", "postgresql://"],
        SqlDialect::Mysql => &["mysql://", "mariadb://"],
    };
    let url = match &raw.url {
        None => {
            issues.push(
                format!("{at}.url"),
                format!("required, e.g. {}user@host/db", schemes[0]),
            );
            None
        }
        Some(Value::String(spec)) => match secret::resolve(spec) {
            Ok(url) => Some(url),
            Err(e) => {
                issues.push(format!("{at}.url"), e);
                None
            }
        },
        Some(_) => {
            issues.push(
                format!("{at}.url"),
                "must be a string: a URL, env:NAME or file:PATH",
            );
            None
        }
    };
    let url = url.map(|u| {
        let text = String::from_utf8_lossy(u.expose());
        // MariaDB's scheme is MySQL's on the wire.
        let text = text.replacen("mariadb://", "mysql://", 1);
        if !schemes.iter().any(|s| text.starts_with(s)) {
            issues.push(
                format!("{at}.url"),
                format!(
                    "invalid URL {:?}: expected {}",
                    redact_url(&text),
                    schemes.join(" or ")
                ),
            );
        }
        Secret::new(text.into_bytes())
    });
    let table = raw.table.unwrap_or_else(|| DEFAULT_SQL_TABLE.to_string());
    if !table_name(&table) {
        issues.push(
            format!("{at}.table"),
            format!("invalid table name {table:?}: letters, digits and _, at most 48"),
        );
    }
    let (pool_size, pool_timeout) = pool(&raw.pool, DEFAULT_SQL_POOL_SIZE, at, issues);
    let ca = raw.ca.map(PathBuf::from);
    if let Some(path) = &ca
        && let Err(e) = std::fs::metadata(path)
    {
        issues.push(
            format!("{at}.ca"),
            format!("cannot read {}: {e}", path.display()),
        );
    }
    StoreConfig::Sql(SqlConfig {
        dialect,
        url: url.unwrap_or_else(|| Secret::new(Vec::new())),
        table,
        pool_size,
        pool_timeout,
        timeout: duration(
            &raw.timeout,
            &format!("{at}.timeout"),
            Duration::from_secs(DEFAULT_STORE_TIMEOUT_SECS),
            issues,
        ),
        ca,
    })
}

/// `pool: {size, timeout}`.
fn pool(raw: &Option<RawPool>, size: u32, at: &str, issues: &mut Issues) -> (u32, Duration) {
    let default_timeout = Duration::from_secs(DEFAULT_STORE_TIMEOUT_SECS);
    let Some(raw) = raw else {
        return (size, default_timeout);
    };
    let size = match raw.size {
        None => size,
        Some(n @ 1..=1024) => n as u32,
        Some(_) => {
            issues.push(format!("{at}.pool.size"), "must be between 1 and 1024");
            size
        }
    };
    let timeout = duration(
        &raw.timeout,
        &format!("{at}.pool.timeout"),
        default_timeout,
        issues,
    );
    (size, timeout)
}

fn memcached(raw: RawMemcached, at: &str, issues: &mut Issues) -> StoreConfig {
    let servers = raw.servers.unwrap_or_default();
    if servers.is_empty() {
        issues.push(
            format!("{at}.servers"),
            "needs at least one server, e.g. [127.0.0.1:11211]",
        );
    }
    for (i, s) in servers.iter().enumerate() {
        let port = s.rsplit_once(':').and_then(|(h, p)| {
            (!h.is_empty() && !p.is_empty())
                .then(|| p.parse::<u16>().ok())
                .flatten()
        });
        if port.is_none() {
            issues.push(
                format!("{at}.servers[{i}]"),
                format!("invalid server {s:?}: expected host:port"),
            );
        }
    }
    let key_prefix = raw
        .key_prefix
        .unwrap_or_else(|| DEFAULT_MEMCACHED_KEY_PREFIX.to_string());
    if key_prefix.len() > 64 || key_prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
        issues.push(
            format!("{at}.key_prefix"),
            "at most 64 bytes, no spaces or control characters (memcached keys)",
        );
    }
    let (pool_size, _) = pool(&raw.pool, DEFAULT_MEMCACHED_POOL_SIZE, at, issues);
    StoreConfig::Memcached(MemcachedConfig {
        servers,
        key_prefix,
        pool_size,
        timeout: duration(
            &raw.timeout,
            &format!("{at}.timeout"),
            Duration::from_secs(DEFAULT_STORE_TIMEOUT_SECS),
            issues,
        ),
    })
}

fn cached(raw: RawCached, at: &str, issues: &mut Issues) -> StoreConfig {
    let max_sessions = match raw.cache {
        None => DEFAULT_CACHED_MAX_SESSIONS,
        Some(RawCache::Memory { max_sessions }) => {
            let n = max_sessions.map_or(DEFAULT_CACHED_MAX_SESSIONS, |m| m as usize);
            if n == 0 {
                issues.push(format!("{at}.cache.max_sessions"), "must be at least 1");
            }
            n
        }
    };
    let durable_at = format!("{at}.durable");
    let durable = store(*raw.durable, &durable_at, issues);
    match &durable {
        StoreConfig::Sql(SqlConfig {
            dialect: SqlDialect::Mysql,
            ..
        }) => issues.push(
            format!("{durable_at}.kind"),
            "MySQL sends no change notifications, so other instances' caches could serve \
             stale sessions: use postgres or redis as the durable store, or mysql directly",
        ),
        StoreConfig::Redis(RedisConfig {
            topology: RedisTopology::Standalone { .. },
            ..
        })
        | StoreConfig::Sql(_)
        | StoreConfig::Embedded { .. } => {}
        StoreConfig::Redis(_) => issues.push(
            durable_at.clone(),
            "over Redis, a cached store needs a standalone `url` (its invalidations come \
             from one server)",
        ),
        other => issues.push(
            format!("{durable_at}.kind"),
            format!(
                "a {} store cannot be the durable store: use postgres, mysql, redis or embedded",
                other.kind()
            ),
        ),
    }
    StoreConfig::Cached(CachedConfig {
        max_sessions,
        durable: Box::new(durable),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, StoreConfig, from_yaml};

    fn with_store(store: &str) -> Result<crate::config::Config, ConfigError> {
        from_yaml(&format!(
            "secrets: [\"store-test-secret-0123456789abcdef-012345\"]\n\
             session: {{store: {store}}}\n\
             upstreams: {{app: {{url: \"http://127.0.0.1:1\"}}}}\n\
             routes: [{{upstream: app, forward: {{mode: none}}}}]\n"
        ))
    }

    fn issues(store: &str) -> String {
        match with_store(store) {
            Ok(_) => panic!("accepted: {store}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_database_url_is_a_secret_and_never_echoed() {
        let text = issues("{kind: postgres, url: \"mysql://u:hunter4-pass@db/x\", table: \"a b\"}");
        assert!(text.contains("session.store.url"), "{text}");
        assert!(text.contains("session.store.table"), "{text}");
        assert!(!text.contains("hunter4"), "{text}");
        let text = issues("{kind: mysql, url: [1, 2]}");
        assert!(
            text.contains("session.store.url: must be a string"),
            "{text}"
        );
        let text = issues("{kind: postgres, url: env:SESSIONGATE_NO_SUCH_VARIABLE}");
        assert!(text.contains("SESSIONGATE_NO_SUCH_VARIABLE"), "{text}");
    }

    #[test]
    fn sql_stores_take_their_defaults_and_mariadb_urls() {
        let c = with_store("{kind: mysql, url: \"mariadb://root@127.0.0.1/test\"}").unwrap();
        let StoreConfig::Sql(sql) = &c.session.store else {
            panic!("{:?}", c.session.store)
        };
        assert_eq!(sql.url.expose(), b"mysql://root@127.0.0.1/test");
        assert_eq!(sql.table, crate::config::DEFAULT_SQL_TABLE);
        assert_eq!(sql.pool_size, crate::config::DEFAULT_SQL_POOL_SIZE);
        assert_eq!(c.session.store.kind(), "mysql");
        let text = issues("{kind: postgres, url: \"postgres://h/db\", pool: {size: 0}}");
        assert!(text.contains("session.store.pool.size"), "{text}");
    }

    #[test]
    fn urls_in_messages_lose_credentials_and_queries() {
        assert_eq!(super::redact_url("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(super::redact_url("user:pw@db/x"), "***@db/x");
        assert_eq!(
            super::redact_url("postgres://h/db?password=pw&x=1"),
            "postgres://h/db"
        );
        assert_eq!(super::redact_url("ftp://host"), "ftp://host");
    }

    #[test]
    fn memcached_servers_are_host_and_port() {
        let text = issues("{kind: memcached, servers: [\"10.0.0.1:11211\", \"10.0.0.2\"]}");
        assert!(text.contains("session.store.servers[1]"), "{text}");
        assert!(!text.contains("servers[0]"), "{text}");
        let text = issues("{kind: memcached}");
        assert!(text.contains("session.store.servers"), "{text}");
        let text = issues("{kind: memcached, servers: [\"h:1\"], key_prefix: \"a b\"}");
        assert!(text.contains("session.store.key_prefix"), "{text}");
    }

    #[test]
    fn a_cached_store_reports_its_durable_store_one_level_down() {
        let text = issues("{kind: cached, durable: {kind: mysql, url: \"mysql://h/db\"}}");
        assert!(text.contains("session.store.durable.kind: MySQL"), "{text}");
        let text = issues("{kind: cached, durable: {kind: redis, cluster: [\"redis://h:1\"]}}");
        assert!(text.contains("session.store.durable: over Redis"), "{text}");
        let text = issues("{kind: cached, durable: {kind: memory}}");
        assert!(text.contains("session.store.durable.kind"), "{text}");
        let text = issues("{kind: cached, durable: {kind: postgres, url: \"ftp://x\"}}");
        assert!(text.contains("session.store.durable.url"), "{text}");
        let text = issues(
            "{kind: cached, cache: {kind: memory, max_sessions: 0}, durable: {kind: embedded}}",
        );
        assert!(text.contains("session.store.cache.max_sessions"), "{text}");
        let c = with_store("{kind: cached, durable: {kind: embedded, path: x.db}}").unwrap();
        assert_eq!(c.session.store.kind(), "cached");
    }
}
