//! PostgreSQL and MySQL/MariaDB: Django's `db` engine. One table, created
//! when missing, shared by any number of sessiongate instances.
//!
//! A merge is one transaction that locks the session's row
//! (`SELECT ... FOR UPDATE`), applies the change with the same `apply` as
//! every other store, and writes the result: concurrent merges queue on the
//! row, a flush that deletes the row makes a later save find nothing, and
//! the result keeps the upstream's JSON byte for byte (the column is text,
//! not `jsonb`, which would reorder keys). The subject of a session is a
//! column written in the same transaction as its data, so the index of
//! subjects can never miss a session; expired rows are deleted in batches by
//! the sweeper through an index on the deadline.
//!
//! Both databases go through sqlx's `Any` driver: one implementation, the
//! statements differing only in their placeholders and DDL.

mod schema;

use super::{OpenError, Revoked, SaveOp, SaveOutcome, ServerStore, StoreError};
use crate::config::{SqlConfig, SqlDialect};
use crate::record::{Applied, IndexEntry, Listed, SessionData, SessionId, SessionRecord};
use crate::record::{UnixMillis, apply, subject_of};
use schema::Statements;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};
use std::sync::{Arc, Once};
use std::time::Duration;

/// Serializes the DDL of instances starting together (PostgreSQL).
const DDL_LOCK: &str = "SELECT pg_advisory_xact_lock(7261536974)";

/// Rows deleted per statement of a sweep: short transactions, so that a
/// sweep of a million expired sessions never holds locks for long.
const SWEEP_BATCH: i64 = 1000;

pub struct SqlStore {
    pool: AnyPool,
    q: Statements,
    timeout: Duration,
    kind: &'static str,
    table: String,
    writes: super::stripes::Stripes,
}

fn backend(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        e => StoreError::Backend(Box::new(e)),
    }
}

/// A pooled connection the server dropped (restarted, idle timeout): its
/// first statement fails with an I/O error before anything ran, so the
/// statement is tried again (the pool drops the broken connection).
fn stale(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(_))
}

/// Tries a pooled connection this many times before an I/O error stands:
/// after a server restart every idle connection is dead.
const STALE_RETRIES: usize = 4;

/// The subject column holds a digest: fixed length, compared byte for byte
/// by every database (MySQL's collations would pad or fold a string), and
/// any subject fits. The data decides; the column only finds candidates.
fn digest(subject: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(subject.as_bytes()).to_vec()
}

/// `f`, tried again while it fails on a connection the server dropped.
async fn retry_stale<T, Fut>(f: impl Fn() -> Fut) -> Result<T, sqlx::Error>
where
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 1;
    loop {
        match f().await {
            Err(e) if stale(&e) && tries < STALE_RETRIES => tries += 1,
            r => return r,
        }
    }
}

fn ms(v: UnixMillis) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The connection URL with TLS required and checked against `ca`.
pub(crate) fn url_with_ca(cfg: &SqlConfig) -> Result<String, OpenError> {
    let text = String::from_utf8_lossy(cfg.url.expose()).into_owned();
    let Some(ca) = &cfg.ca else {
        return Ok(text);
    };
    let mut url = url::Url::parse(&text)
        .map_err(|e| OpenError::Backend("the database URL".into(), Box::new(e)))?;
    let ca = ca.to_string_lossy();
    match cfg.dialect {
        SqlDialect::Postgres => url
            .query_pairs_mut()
            .append_pair("sslmode", "verify-full")
            .append_pair("sslrootcert", &ca),
        SqlDialect::Mysql => url
            .query_pairs_mut()
            .append_pair("ssl-mode", "VERIFY_IDENTITY")
            .append_pair("ssl-ca", &ca),
    };
    Ok(url.into())
}

impl SqlStore {
    /// Connects, and creates the table and its indexes when missing.
    pub async fn open(cfg: &SqlConfig) -> Result<SqlStore, OpenError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let what = || format!("the {} store", schema::name(cfg.dialect));
        let mysql = cfg.dialect == SqlDialect::Mysql;
        let pool = AnyPoolOptions::new()
            .max_connections(cfg.pool_size)
            .acquire_timeout(cfg.pool_timeout)
            // No ping before each use (a round trip per operation, doubling
            // a read's): a connection the server dropped fails its first
            // statement instead, which is then retried (see `stale`).
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if mysql {
                        // Row locks only: REPEATABLE READ's gap locks make
                        // a locking read of a missing id deadlock with inserts.
                        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(&url_with_ca(cfg)?)
            .map_err(|e| OpenError::Backend(what(), Box::new(e)))?;
        let store = SqlStore {
            pool,
            q: Statements::new(cfg.dialect, &cfg.table),
            timeout: cfg.timeout,
            kind: schema::name(cfg.dialect),
            table: cfg.table.clone(),
            writes: Default::default(),
        };
        store
            .create_table()
            .await
            .map_err(|e| OpenError::Backend(what(), Box::new(e)))?;
        Ok(store)
    }

    async fn create_table(&self) -> Result<(), StoreError> {
        // Two instances starting together may both try: a second attempt
        // finds the table made by the other.
        let mut last = None;
        for _ in 0..3 {
            match self.run(async |s| s.try_create_table().await).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried"))
    }

    async fn try_create_table(&self) -> Result<(), sqlx::Error> {
        // PostgreSQL's DDL is transactional: under one advisory lock, two
        // instances starting together do not race on its catalogs (MySQL's
        // is one statement).
        let mut tx = self.begin().await?;
        if self.kind == "postgres" {
            sqlx::query(DDL_LOCK).execute(&mut *tx).await?;
        }
        for ddl in self.q.create.iter() {
            sqlx::query(AssertSqlSafe(ddl.clone()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Runs one operation under the store's deadline.
    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(&Self) -> Result<T, sqlx::Error>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f(self)).await {
            Ok(r) => r.map_err(backend),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// `run` for a statement that changes nothing (or the opening of a
    /// transaction), tried again on a connection the server dropped.
    async fn read<'a, T, F, Fut>(&'a self, f: F) -> Result<T, StoreError>
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'a,
    {
        self.run(async |_| retry_stale(|| f(self)).await).await
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        retry_stale(|| self.pool.begin()).await
    }

    fn q(sql: &Arc<str>) -> sqlx::query::Query<'static, Any, sqlx::any::AnyArguments> {
        sqlx::query(AssertSqlSafe(sql.clone()))
    }

    /// The row under `id`, locked until the transaction ends.
    async fn locked(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &SessionId,
    ) -> Result<Option<(SessionRecord, Option<Vec<u8>>)>, sqlx::Error> {
        let row = Self::q(&self.q.lock)
            .bind(&id.as_bytes()[..])
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| Ok((decode(&r)?, r.try_get::<Option<Vec<u8>>, _>(5)?)))
            .transpose()
    }

    async fn delete_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &SessionId,
    ) -> Result<bool, sqlx::Error> {
        let done = Self::q(&self.q.delete)
            .bind(&id.as_bytes()[..])
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert<'e, E>(
        &self,
        conn: E,
        id: &SessionId,
        r: &SessionRecord,
        subject: Option<&[u8]>,
    ) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        Self::q(&self.q.insert)
            .bind(&id.as_bytes()[..])
            .bind(r.sid.as_str())
            .bind(r.data.as_str())
            .bind(ms(r.created_ms))
            .bind(ms(r.expires_ms))
            .bind(r.expiry_s.map(ms))
            .bind(subject)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// The save, in one transaction; `subject` sets the subject column (the
    /// pipeline's `save_indexed`), otherwise it stays as it was.
    async fn save_with(
        &self,
        id: &SessionId,
        op: &SaveOp<'_>,
        subject: Option<&str>,
    ) -> Result<SaveOutcome, sqlx::Error> {
        let _queued = self.writes.lock(id).await;
        let mut tx = self.begin().await?;
        let Some((current, column)) = self.locked(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(SaveOutcome::Gone);
        };
        if !current.is_live(op.now_ms) {
            self.delete_in(&mut tx, id).await?;
            tx.commit().await?;
            return Ok(SaveOutcome::Gone);
        }
        let mut record = match apply(current, &op.change, &op.policy, op.now_ms) {
            Ok(Applied::Saved(r)) => r,
            Ok(Applied::Emptied) => {
                self.delete_in(&mut tx, id).await?;
                tx.commit().await?;
                return Ok(SaveOutcome::Emptied);
            }
            Err(e) => {
                // Released now, not when the connection is next used.
                tx.rollback().await?;
                return Ok(SaveOutcome::Refused(e));
            }
        };
        if let Some(actual) = op.unexpected(&record) {
            tx.rollback().await?;
            return Ok(SaveOutcome::Reindex(actual));
        }
        let subject = subject.map(digest).or(column);
        let id = match &op.cycle_to {
            None => {
                Self::q(&self.q.update)
                    .bind(record.data.as_str())
                    .bind(ms(record.expires_ms))
                    .bind(record.expiry_s.map(ms))
                    .bind(subject.as_deref())
                    .bind(&id.as_bytes()[..])
                    .execute(&mut *tx)
                    .await?;
                *id
            }
            Some((new_id, new_sid)) => {
                self.delete_in(&mut tx, id).await?;
                record.sid = new_sid.clone();
                self.insert(&mut *tx, new_id, &record, subject.as_deref())
                    .await?;
                *new_id
            }
        };
        tx.commit().await?;
        Ok(SaveOutcome::Saved {
            id,
            record: Arc::new(record),
        })
    }

    async fn count_subject(&self, subject: &str, now_ms: UnixMillis) -> Result<u64, sqlx::Error> {
        let n: i64 = Self::q(&self.q.count_subject)
            .bind(digest(subject))
            .bind(ms(now_ms))
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(n.max(0) as u64)
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// PostgreSQL: from now on every update or delete of a row, by any
    /// writer of the table (a plain `kind: postgres` instance included),
    /// notifies `channel` with the session's id, when it commits. A trigger
    /// made once, under the same advisory lock as the table.
    pub async fn notify_changes(&self, channel: &str) -> Result<(), StoreError> {
        let t = &self.table;
        let function = format!(
            "CREATE OR REPLACE FUNCTION {t}_notify() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN PERFORM pg_notify('{channel}', \
             rtrim(translate(encode(OLD.id, 'base64'), '+/', '-_'), '=')); \
             RETURN NULL; END $$"
        );
        let trigger = format!(
            "CREATE TRIGGER {t}_changed AFTER UPDATE OR DELETE ON {t} \
             FOR EACH ROW EXECUTE FUNCTION {t}_notify()"
        );
        self.run(async |s| {
            let mut tx = s.begin().await?;
            sqlx::query(DDL_LOCK).execute(&mut *tx).await?;
            sqlx::query(AssertSqlSafe(function.clone()))
                .execute(&mut *tx)
                .await?;
            let exists = sqlx::query("SELECT 1 FROM pg_trigger WHERE tgname = $1")
                .bind(format!("{t}_changed"))
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                sqlx::query(AssertSqlSafe(trigger.clone()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
        .await
    }

    /// The pool, for the tests that watch it.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// A row's `sid, data, created, expires, expiry_s`.
fn decode(row: &AnyRow) -> Result<SessionRecord, sqlx::Error> {
    let data: String = row.try_get(1)?;
    Ok(SessionRecord {
        sid: row.try_get(0)?,
        data: SessionData::from_text(data).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_ms: row.try_get::<i64, _>(2)?.max(0) as u64,
        expires_ms: row.try_get::<i64, _>(3)?.max(0) as u64,
        expiry_s: row.try_get::<Option<i64>, _>(4)?.map(|v| v.max(0) as u64),
    })
}

fn id_of(row: &AnyRow, at: usize) -> Result<SessionId, sqlx::Error> {
    let bytes: Vec<u8> = row.try_get(at)?;
    let bytes: [u8; crate::record::ID_BYTES] = bytes
        .try_into()
        .map_err(|_| sqlx::Error::Decode("a session id of the wrong length".into()))?;
    Ok(SessionId::from_bytes(bytes))
}

impl ServerStore for SqlStore {
    async fn load(
        &self,
        id: &SessionId,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let row = self
            .read(|s| async move {
                Self::q(&s.q.load)
                    .bind(&id.as_bytes()[..])
                    .bind(ms(now_ms))
                    .fetch_optional(&s.pool)
                    .await
            })
            .await?;
        match row {
            None => Ok(None),
            Some(row) => match decode(&row) {
                Ok(r) => Ok(Some(Arc::new(r))),
                Err(sqlx::Error::Decode(e)) => Err(StoreError::Backend(e)),
                Err(e) => Err(backend(e)),
            },
        }
    }

    async fn create(&self, id: &SessionId, record: &SessionRecord) -> Result<(), StoreError> {
        self.run(async |s| s.insert(&s.pool, id, record, None).await)
            .await
    }

    async fn save(&self, id: &SessionId, op: &SaveOp<'_>) -> Result<SaveOutcome, StoreError> {
        self.run(async |s| s.save_with(id, op, None).await).await
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.run(async |s| {
            let done = Self::q(&s.q.delete)
                .bind(&id.as_bytes()[..])
                .execute(&s.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn clear_expired(&self, now_ms: UnixMillis) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let n = self
                .run(async |s| {
                    Ok(Self::q(&s.q.sweep)
                        .bind(ms(now_ms))
                        .bind(SWEEP_BATCH)
                        .execute(&s.pool)
                        .await?
                        .rows_affected())
                })
                .await?;
            removed += n;
            if n < SWEEP_BATCH as u64 {
                return Ok(removed);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|s| async move {
            sqlx::query("SELECT 1").execute(&s.pool).await?;
            Ok(())
        })
        .await
    }

    async fn index(
        &self,
        subject: &str,
        entry: &IndexEntry,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        self.run(async |s| {
            Self::q(&s.q.set_subject)
                .bind(digest(subject))
                .bind(&entry.id.as_bytes()[..])
                .execute(&s.pool)
                .await?;
            s.count_subject(subject, now_ms).await
        })
        .await
    }

    async fn create_indexed(
        &self,
        subject: &str,
        entry: &IndexEntry,
        record: &SessionRecord,
        now_ms: UnixMillis,
    ) -> Result<u64, StoreError> {
        self.run(async |s| {
            s.insert(&s.pool, &entry.id, record, Some(&digest(subject)))
                .await?;
            s.count_subject(subject, now_ms).await
        })
        .await
    }

    async fn save_indexed(
        &self,
        subject: &str,
        _entry: &IndexEntry,
        id: &SessionId,
        op: &SaveOp<'_>,
    ) -> Result<(u64, SaveOutcome), StoreError> {
        self.run(async |s| {
            let out = s.save_with(id, op, Some(subject)).await?;
            Ok((s.count_subject(subject, op.now_ms).await?, out))
        })
        .await
    }

    async fn indexed(
        &self,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        let rows = self
            .read(|s| async move {
                Self::q(&s.q.by_subject)
                    .bind(digest(subject))
                    .bind(ms(now_ms))
                    .fetch_all(&s.pool)
                    .await
            })
            .await?;
        let mut listed = Vec::with_capacity(rows.len());
        for row in rows {
            let (id, record) = match (id_of(&row, 5), decode(&row)) {
                (Ok(id), Ok(r)) => (id, r),
                (Err(e), _) | (_, Err(e)) => return Err(backend(e)),
            };
            // The column is written with the data; the data decides.
            if subject_of(&record.data, key).as_deref() == Some(subject) {
                listed.push(Listed {
                    id,
                    sid: record.sid,
                    created_ms: record.created_ms,
                    expires_ms: record.expires_ms,
                });
            }
        }
        Ok(listed)
    }

    async fn find_sid(
        &self,
        sid: &str,
        now_ms: UnixMillis,
    ) -> Result<Option<SessionId>, StoreError> {
        let row = self
            .read(|s| async move {
                Self::q(&s.q.find_sid)
                    .bind(sid)
                    .bind(ms(now_ms))
                    .fetch_optional(&s.pool)
                    .await
            })
            .await?;
        row.map(|r| id_of(&r, 0)).transpose().map_err(backend)
    }

    async fn revoke(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now_ms: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        self.run(async |s| {
            let mut tx = s.begin().await?;
            let found = s.locked(&mut tx, id).await?;
            let standing = match &found {
                None => Some(Revoked::Gone),
                Some((r, _)) if !r.is_live(now_ms) => Some(Revoked::Gone),
                Some((r, _)) if subject_of(&r.data, key).as_deref() != Some(subject) => {
                    Some(Revoked::Other)
                }
                Some(_) => None,
            };
            if let Some(r) = standing {
                tx.rollback().await?;
                return Ok(r);
            }
            s.delete_in(&mut tx, id).await?;
            tx.commit().await?;
            Ok(Revoked::Deleted)
        })
        .await
    }

    /// Counting rows is a scan: not done.
    fn live_sessions(&self) -> Option<u64> {
        None
    }
}
