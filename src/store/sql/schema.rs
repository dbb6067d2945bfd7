//! The table and the statements, per dialect. The table name is checked to
//! be a plain identifier by the config, so it goes into the text unquoted;
//! every value is a bound parameter.

use crate::config::SqlDialect;
use std::sync::Arc;

pub fn name(dialect: SqlDialect) -> &'static str {
    match dialect {
        SqlDialect::Postgres => "postgres",
        SqlDialect::Mysql => "mysql",
    }
}

pub struct Statements {
    /// DDL run at open, each `IF NOT EXISTS`.
    pub create: Vec<Arc<str>>,
    pub load: Arc<str>,
    pub lock: Arc<str>,
    pub insert: Arc<str>,
    pub update: Arc<str>,
    pub delete: Arc<str>,
    pub sweep: Arc<str>,
    pub set_subject: Arc<str>,
    pub count_subject: Arc<str>,
    pub by_subject: Arc<str>,
    pub find_sid: Arc<str>,
}

/// `?` placeholders as the dialect writes them (PostgreSQL numbers them).
fn placeholders(dialect: SqlDialect, sql: &str) -> Arc<str> {
    match dialect {
        SqlDialect::Mysql => sql.into(),
        SqlDialect::Postgres => {
            let mut out = String::with_capacity(sql.len() + 8);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(c);
                }
            }
            out.into()
        }
    }
}

impl Statements {
    pub fn new(dialect: SqlDialect, t: &str) -> Statements {
        let create: Vec<String> = match dialect {
            SqlDialect::Postgres => vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (\
                     id BYTEA PRIMARY KEY, sid TEXT NOT NULL, data TEXT NOT NULL, \
                     created BIGINT NOT NULL, expires BIGINT NOT NULL, expiry_s BIGINT, \
                     subject BYTEA)"
                ),
                format!("CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires)"),
                format!(
                    "CREATE INDEX IF NOT EXISTS {t}_subject ON {t} (subject) \
                     WHERE subject IS NOT NULL"
                ),
                format!("CREATE INDEX IF NOT EXISTS {t}_sid ON {t} (sid)"),
            ],
            // Binary collation: sids compare byte for byte, as everywhere
            // else (the default collations ignore case). Subjects are digests.
            SqlDialect::Mysql => vec![format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                 id VARBINARY(16) NOT NULL PRIMARY KEY, sid VARCHAR(128) NOT NULL, \
                 data LONGTEXT NOT NULL, created BIGINT NOT NULL, expires BIGINT NOT NULL, \
                 expiry_s BIGINT NULL, subject VARBINARY(32) NULL, \
                 INDEX {t}_expires (expires), INDEX {t}_subject (subject), \
                 INDEX {t}_sid (sid)) \
                 ENGINE=InnoDB CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )],
        };
        let p = |sql: String| placeholders(dialect, &sql);
        let cols = "sid, data, created, expires, expiry_s";
        Statements {
            create: create.into_iter().map(Arc::from).collect(),
            load: p(format!(
                "SELECT {cols} FROM {t} WHERE id = ? AND expires > ?"
            )),
            lock: p(format!(
                "SELECT {cols}, subject FROM {t} WHERE id = ? FOR UPDATE"
            )),
            insert: p(format!(
                "INSERT INTO {t} (id, {cols}, subject) VALUES (?, ?, ?, ?, ?, ?, ?)"
            )),
            update: p(format!(
                "UPDATE {t} SET data = ?, expires = ?, expiry_s = ?, subject = ? WHERE id = ?"
            )),
            delete: p(format!("DELETE FROM {t} WHERE id = ?")),
            sweep: p(match dialect {
                SqlDialect::Postgres => format!(
                    "DELETE FROM {t} WHERE id IN \
                     (SELECT id FROM {t} WHERE expires <= ? LIMIT ?)"
                ),
                SqlDialect::Mysql => format!("DELETE FROM {t} WHERE expires <= ? LIMIT ?"),
            }),
            set_subject: p(format!("UPDATE {t} SET subject = ? WHERE id = ?")),
            count_subject: p(format!(
                "SELECT COUNT(*) FROM {t} WHERE subject = ? AND expires > ?"
            )),
            by_subject: p(format!(
                "SELECT {cols}, id FROM {t} WHERE subject = ? AND expires > ?"
            )),
            find_sid: p(format!(
                "SELECT id FROM {t} WHERE sid = ? AND expires > ? AND subject IS NOT NULL"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_numbers_its_placeholders() {
        let q = Statements::new(SqlDialect::Postgres, "s");
        assert_eq!(
            &*q.update,
            "UPDATE s SET data = $1, expires = $2, expiry_s = $3, subject = $4 WHERE id = $5"
        );
        let q = Statements::new(SqlDialect::Mysql, "s");
        assert_eq!(&*q.delete, "DELETE FROM s WHERE id = ?");
    }
}
