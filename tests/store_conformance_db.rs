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
    common::db::drop_tables(dialect, &tables);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    if !common::db::available(SqlDialect::Postgres, "postgres_conformance") {
        return;
    }
    sql_suite(SqlDialect::Postgres, common::db::POSTGRES_URL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_conformance() {
    if !common::db::available(SqlDialect::Mysql, "mysql_conformance") {
        return;
    }
    sql_suite(SqlDialect::Mysql, common::db::MYSQL_URL).await;
}
