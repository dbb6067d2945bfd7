//! The SQL stores beyond the conformance suite: TLS to the database with a
//! private CA, and `clear-sessions` against a shared database.

mod common;

use sessiongate::config::SqlDialect;
use sessiongate::record::{SessionData, SessionId, SessionRecord};
use sessiongate::store::ServerStore;
use sessiongate::store::sql::SqlStore;

fn record(data: serde_json::Value, now: u64, expires: u64) -> SessionRecord {
    let mut r = SessionRecord::new(format!("sid-{now}-{expires}"), now);
    r.data = SessionData::from_map(data.as_object().unwrap());
    r.expires_ms = expires;
    r
}

/// With `ca`, TLS is required and the server's certificate checked against
/// that CA: a server with a certificate from another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn postgres_over_tls_with_a_private_ca() {
    if !common::db::can_run_postgres("postgres_over_tls_with_a_private_ca") {
        return;
    }
    let ca = common::tls::TestCa::new();
    let (pg, ca_file) =
        tokio::task::spawn_blocking(move || common::db::OwnPostgres::start_tls(&ca))
            .await
            .unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    let store = over_tls(SqlDialect::Postgres, &url, ca_file).await;
    // The connection really is TLS (the server says so).
    let ssl: bool = sqlx::query_scalar::<sqlx::Any, bool>(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(ssl, "the connection is not TLS");
}

/// Opens the store with `ca` (TLS required, the name checked), keeps a
/// session through it; with another CA's certificate instead, refused.
async fn over_tls(dialect: SqlDialect, url: &str, ca: std::path::PathBuf) -> SqlStore {
    let mut cfg = common::db::config(dialect, url, "sg_tls");
    cfg.ca = Some(ca);
    let store = SqlStore::open(&cfg).await.unwrap();
    let now = sessiongate::record::now_ms();
    let id = SessionId::generate();
    let r = record(serde_json::json!({"over": "tls"}), now, now + 60_000);
    store.create(&id, &r).await.unwrap();
    assert!(store.load(&id, now + 1).await.unwrap().is_some());
    let dir = std::env::temp_dir();
    let other =
        common::tls::TestCa::new().leaf(&["127.0.0.1"], &dir, &SessionId::generate().encode());
    cfg.ca = Some(other.ca);
    assert!(
        SqlStore::open(&cfg).await.is_err(),
        "an untrusted certificate"
    );
    store
}

/// `clear-sessions` deletes the expired rows of a shared table and says
/// how many; live ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_postgres),
    ignore = "needs PostgreSQL (apt-get install postgresql)"
)]
async fn clear_sessions_on_postgres() {
    let Some(t) = common::db::Table::on(SqlDialect::Postgres, "clear") else {
        return;
    };
    let (table, cfg) = (&t.name, t.config());
    let store = SqlStore::open(&cfg).await.unwrap();
    let now = sessiongate::record::now_ms();
    for i in 0..3 {
        let r = record(serde_json::json!({ "i": i }), now - 100_000, now - 1_000);
        store.create(&SessionId::generate(), &r).await.unwrap();
    }
    let live = SessionId::generate();
    store
        .create(
            &live,
            &record(serde_json::json!({"live": true}), now, now + 600_000),
        )
        .await
        .unwrap();
    let dir = common::process::temp_dir("clear-pg");
    let config = dir.join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "secrets: [\"{}\"]\nsession: {{store: {{kind: postgres, url: \"{}\", table: {table}}}}}\nupstreams: {{app: {{url: \"http://127.0.0.1:1\"}}}}\nroutes: [{{upstream: app, forward: {{mode: none}}}}]\n",
            common::SECRET,
            common::db::POSTGRES_URL
        ),
    )
    .unwrap();
    let out = common::process::succeeded(&mut common::process::sessiongate(&[
        "clear-sessions",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    assert_eq!(common::db::rows(SqlDialect::Postgres, table), 1);
    assert!(store.load(&live, now).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tool_mariadb),
    ignore = "needs MariaDB (apt-get install mariadb-server)"
)]
async fn mariadb_over_tls_with_a_private_ca() {
    if !common::db::can_run_mariadb("mariadb_over_tls_with_a_private_ca") {
        return;
    }
    let ca = common::tls::TestCa::new();
    let (db, ca_file) = tokio::task::spawn_blocking(move || common::db::OwnMariadb::start_tls(&ca))
        .await
        .unwrap();
    let store = over_tls(SqlDialect::Mysql, &db.url(), ca_file).await;
    let cipher: String = sqlx::query_scalar::<sqlx::Any, String>(
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(!cipher.is_empty(), "the connection is not TLS");
}
