//! The embedded store's index of subjects: two tables in the same file,
//! written by the same writer, so an entry is durable before the session
//! it names is acknowledged, and survives restarts with it.

use super::rows::{Expiry, Sessions, remove};
use super::{Written, backend, decode, readable};
use crate::record::{ID_BYTES, IndexEntry, SessionId, SessionRecord, UnixMillis, subject_of};
use crate::store::{INDEX_GRACE_MS, Revoked, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

/// subject, 0xFF, id -> written at (8 bytes, big-endian), sid. 0xFF never
/// occurs in UTF-8, so one subject's entries are one contiguous range.
pub(super) const SUBJECTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("subjects");
/// sid -> id, for the sessions that have a subject.
pub(super) const SIDS: TableDefinition<&str, &[u8]> = TableDefinition::new("sids");

/// An index operation, applied by the writer in a batch's transaction.
pub(in crate::store::embedded) enum IndexOp {
    /// Says how many entries the subject has.
    Add {
        subject: String,
        entry: IndexEntry,
        now_ms: UnixMillis,
    },
    /// Drops these entries unless written again at or after `before_ms`.
    Drop {
        subject: String,
        /// (id, sid, whether its session is gone: then its sid goes too)
        stale: Vec<(SessionId, String, bool)>,
        before_ms: UnixMillis,
    },
    /// Deletes the session if its subject is still this one: 0 deleted, 1
    /// gone, 2 another subject's.
    Revoke {
        id: SessionId,
        key: String,
        subject: String,
        now_ms: UnixMillis,
    },
}

impl IndexOp {
    /// The session whose cached copy the operation may change.
    pub(super) fn touches(&self) -> Option<SessionId> {
        match self {
            IndexOp::Revoke { id, .. } => Some(*id),
            IndexOp::Add { .. } | IndexOp::Drop { .. } => None,
        }
    }
}

pub(super) const REVOKED_DELETED: u64 = 0;
pub(super) const REVOKED_GONE: u64 = 1;
pub(super) const REVOKED_OTHER: u64 = 2;

pub(super) fn revoked(code: u64) -> Revoked {
    match code {
        REVOKED_DELETED => Revoked::Deleted,
        REVOKED_GONE => Revoked::Gone,
        _ => Revoked::Other,
    }
}

fn prefix(subject: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(subject.len() + 1 + ID_BYTES);
    k.extend_from_slice(subject.as_bytes());
    k.push(0xFF);
    k
}

fn entry_key(subject: &str, id: &SessionId) -> Vec<u8> {
    let mut k = prefix(subject);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The last key the subject's range can hold: every key is the prefix and
/// 16 bytes of id. (An id may start with 0xFF: a bound of prefix + 0xFF,
/// exclusive, would leave one session in 256 out of its subject's index.)
fn range_end(subject: &str) -> Vec<u8> {
    let mut k = prefix(subject);
    k.extend_from_slice(&[0xFF; ID_BYTES]);
    k
}

/// An entry's value: (written at, sid).
fn parse_value(v: &[u8]) -> Option<(UnixMillis, String)> {
    let at = UnixMillis::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let sid = std::str::from_utf8(v.get(8..)?).ok()?;
    Some((at, sid.to_string()))
}

/// Applies an index operation in the writer's transaction.
pub(super) fn apply(
    txn: &WriteTransaction,
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    op: IndexOp,
    written: &mut Vec<Written>,
) -> Result<u64, StoreError> {
    match op {
        IndexOp::Add {
            subject,
            entry,
            now_ms,
        } => {
            let mut subjects = txn.open_table(SUBJECTS).map_err(backend)?;
            let key = entry_key(&subject, &entry.id);
            // An entry written less than half the grace period ago cannot
            // have been judged stale by a listing still under way (stale
            // means older than the whole grace period): a login that sets
            // the same subject again rewrites nothing. An older one gets a
            // fresh time, so that such a listing's drop leaves it alone.
            let known = subjects
                .get(key.as_slice())
                .map_err(backend)?
                .and_then(|v| parse_value(v.value()))
                .is_some_and(|(at, sid)| {
                    sid == entry.sid && now_ms.saturating_sub(at) < INDEX_GRACE_MS / 2
                });
            if !known {
                let mut value = now_ms.to_be_bytes().to_vec();
                value.extend_from_slice(entry.sid.as_bytes());
                subjects
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(backend)?;
            }
            let count = subjects
                .range::<&[u8]>(prefix(&subject).as_slice()..=range_end(&subject).as_slice())
                .map_err(backend)?
                .count() as u64;
            if !known {
                let mut sids = txn.open_table(SIDS).map_err(backend)?;
                sids.insert(entry.sid.as_str(), entry.id.as_bytes().as_slice())
                    .map_err(backend)?;
            }
            Ok(count)
        }
        IndexOp::Drop {
            subject,
            stale,
            before_ms,
        } => {
            let mut subjects = txn.open_table(SUBJECTS).map_err(backend)?;
            let mut sids = txn.open_table(SIDS).map_err(backend)?;
            let mut dropped = 0;
            for (id, sid, gone) in stale {
                let key = entry_key(&subject, &id);
                let old = subjects
                    .get(key.as_slice())
                    .map_err(backend)?
                    .and_then(|v| parse_value(v.value()));
                if old.is_some_and(|(at, _)| at < before_ms) {
                    subjects.remove(key.as_slice()).map_err(backend)?;
                    if gone {
                        sids.remove(sid.as_str()).map_err(backend)?;
                    }
                    dropped += 1;
                }
            }
            Ok(dropped)
        }
        IndexOp::Revoke {
            id,
            key,
            subject,
            now_ms,
        } => {
            let current = sessions
                .get(id.as_bytes().as_slice())
                .map_err(backend)?
                .and_then(|v| readable(decode(v.value())));
            match current {
                Some(r) if r.is_live(now_ms) => {
                    if subject_of(&r.data, &key).as_deref() != Some(subject.as_str()) {
                        return Ok(REVOKED_OTHER);
                    }
                    remove(sessions, expiry, &id)?;
                    written.push((id, None));
                    Ok(REVOKED_DELETED)
                }
                _ => Ok(REVOKED_GONE),
            }
        }
    }
}

/// An index entry (id, sid, written at) and the session under its id.
pub(super) type Judged = (SessionId, String, UnixMillis, Option<SessionRecord>);

/// The subject's entries and their sessions, read in one transaction: one
/// instant's view, in which a session the writer moved to a new id (in
/// one transaction too) is found under one of them.
pub(super) fn entries(db: &Database, subject: &str) -> Result<Vec<Judged>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let sessions = txn.open_table(super::SESSIONS).map_err(backend)?;
    let subjects = match txn.open_table(SUBJECTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(backend(e)),
    };
    let mut out = Vec::new();
    let start = prefix(subject);
    for item in subjects
        .range::<&[u8]>(start.as_slice()..=range_end(subject).as_slice())
        .map_err(backend)?
    {
        let (k, v) = item.map_err(backend)?;
        let id = k
            .value()
            .get(start.len()..)
            .and_then(|b| <[u8; ID_BYTES]>::try_from(b).ok());
        if let (Some(id), Some((at, sid))) = (id, parse_value(v.value())) {
            let record = sessions
                .get(id.as_slice())
                .map_err(backend)?
                .and_then(|r| readable(decode(r.value())));
            out.push((SessionId::from_bytes(id), sid, at, record));
        }
    }
    Ok(out)
}

/// The id an indexed sid names.
pub(super) fn sid(db: &Database, sid: &str) -> Result<Option<SessionId>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let sids = match txn.open_table(SIDS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(backend(e)),
    };
    Ok(sids
        .get(sid)
        .map_err(backend)?
        .and_then(|v| <[u8; ID_BYTES]>::try_from(v.value()).ok())
        .map(SessionId::from_bytes))
}
