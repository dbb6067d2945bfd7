//! What every store's index of subjects shares: how an entry is judged
//! against the session it names, and what a revocation found.

use crate::record::{Listed, SessionId, SessionRecord, UnixMillis, subject_of};

/// How long an index entry whose session is missing, or has another
/// subject, is kept before it counts as stale: an entry is written before
/// its session, so a young one may name a write still under way.
pub const INDEX_GRACE_MS: u64 = 10 * 60 * 1000;
/// Past this many entries, a subject's index is pruned after an addition.
pub const INDEX_PRUNE_AT: u64 = 64;

/// What an index entry names, judged against the session it names.
#[derive(Debug)]
pub enum Standing {
    Live(Listed),
    /// Not (yet) a session of the subject, but young: kept.
    Pending,
    /// Gone, expired, or someone else's since long enough: dropped. The
    /// sid's own entry (sid -> id) goes too only when the session is gone:
    /// a session that changed hands keeps being found by its sid.
    Stale {
        gone: bool,
    },
}

/// Judges an index entry (`id`, `sid`, written at `indexed_ms`) of
/// `subject` by the record now stored under its id.
pub fn standing(
    id: &SessionId,
    sid: &str,
    indexed_ms: UnixMillis,
    record: Option<&SessionRecord>,
    key: &str,
    subject: &str,
    now_ms: UnixMillis,
) -> Standing {
    if let Some(r) = record
        && r.is_live(now_ms)
        && r.sid == sid
        && subject_of(&r.data, key).as_deref() == Some(subject)
    {
        return Standing::Live(Listed {
            id: *id,
            sid: r.sid.clone(),
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
        });
    }
    if now_ms.saturating_sub(indexed_ms) < INDEX_GRACE_MS {
        Standing::Pending
    } else {
        Standing::Stale {
            gone: !record.is_some_and(|r| r.is_live(now_ms) && r.sid == sid),
        }
    }
}

/// What a revocation found under an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Deleted,
    /// No live session there (flushed, expired, or moved by a cycle).
    Gone,
    /// A live session with another subject: left alone.
    Other,
    /// Cycled to this id a moment ago (Redis leaves a tombstone that says
    /// so): the revocation follows it.
    Moved(SessionId),
}
