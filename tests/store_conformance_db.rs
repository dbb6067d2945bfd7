//! The conformance suite (tests/suite/conformance.rs) on the stores that
//! live in another server: PostgreSQL and MariaDB (the machine's services),
//! each check on a table of its own.

#![recursion_limit = "256"]

mod common;

include!("suite/conformance.rs");

use sessiongate::config::SqlDialect;
use sessiongate::store::sql::SqlStore;

async fn sql_suite(dialect: SqlDialect, url: &str) {
    let mut tables = Vec::new();
    whole_suite(
        || {
            let table = common::db::table("conf");
            tables.push(table.clone());
            let cfg = common::db::config(dialect, url, &table);
            async move { SqlStore::open(&cfg).await.unwrap() }
        },
        false,
    )
    .await;
    // The suite ran against the database: its tables hold what it left.
    assert!(common::db::rows(dialect, &tables[0]) > 0);
    let table = common::db::table("across");
    let cfg = common::db::config(dialect, url, &table);
    concurrent_merges_across(
        SqlStore::open(&cfg).await.unwrap(),
        SqlStore::open(&cfg).await.unwrap(),
        200,
    )
    .await;
    tables.push(table);
    common::db::drop_tables(dialect, &tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn postgres_conformance() {
    if !common::db::available(SqlDialect::Postgres, "postgres_conformance") {
        return;
    }
    sql_suite(SqlDialect::Postgres, common::db::POSTGRES_URL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_mariadb),
    ignore = "needs MariaDB (apt-get install mariadb-server)"
)]
async fn mysql_conformance() {
    if !common::db::available(SqlDialect::Mysql, "mysql_conformance") {
        return;
    }
    sql_suite(SqlDialect::Mysql, common::db::MYSQL_URL).await;
}

fn memcached_config(servers: Vec<String>, prefix: String) -> sessiongate::config::MemcachedConfig {
    sessiongate::config::MemcachedConfig {
        servers,
        key_prefix: prefix,
        timeout: std::time::Duration::from_secs(5),
        pool_size: 8,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_memcached),
    ignore = "needs memcached (apt-get install memcached)"
)]
async fn memcached_conformance() {
    use sessiongate::store::memcached::MemcachedStore;
    if !common::memcached::available("memcached_conformance") {
        return;
    }
    // Two servers: the sessions spread over both.
    let (a, b) = (
        common::memcached::Memcached::start(),
        common::memcached::Memcached::start(),
    );
    let servers = vec![a.addr(), b.addr()];
    let mut n = 0;
    whole_suite(
        || {
            n += 1;
            let cfg = memcached_config(servers.clone(), format!("conf{n}:"));
            async move { MemcachedStore::new(&cfg) }
        },
        true,
    )
    .await;
    assert!(
        a.items() > 0 && b.items() > 0,
        "the sessions spread over both"
    );
    let cfg = memcached_config(servers.clone(), "across:".into());
    concurrent_merges_across(MemcachedStore::new(&cfg), MemcachedStore::new(&cfg), 200).await;
}
