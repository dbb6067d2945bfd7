//! Session management (SPEC section 8.2): the index of subjects kept with
//! every write, and listing and revoking a subject's sessions, for the admin
//! endpoints, `revoke-others` and `max_per_subject`.
//!
//! The index never misses a session: an entry is written before the
//! session it names (and a cycle's new id is checked against the subject it
//! was indexed under, by the store, in the save itself). A revocation lists
//! the subject's sessions and deletes each one whose subject, checked by
//! the store in the same atomic step, is still the one named. A session
//! that a concurrent cycle moved meanwhile is found under its new id by the
//! next pass, since its entry was written before the move; a request in
//! flight on a revoked session writes nothing (a save finds it gone).

use super::Sessions;
use crate::metrics::{SessionEvent, StoreOp};
use crate::record::{Listed, SessionId, UnixMillis};
use crate::store::{INDEX_PRUNE_AT, Revoked, SessionStore, StoreError, Ticket};

/// Passes a revocation makes while sessions of the subject keep moving to
/// new ids under it (each pass follows the cycles that the last one saw).
const MAX_REVOKE_PASSES: usize = 8;
/// Cycles a revocation follows, one after the other, within one pass.
const MAX_FOLLOWED_MOVES: usize = 16;

/// `session.subject_key` and `session.max_per_subject`.
#[derive(Debug, Clone, Default)]
pub struct Subjects {
    pub key: Option<String>,
    pub max_per_subject: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error(
        "the cookie store keeps sessions in the browser: there is nothing on the server to list or revoke"
    )]
    CookieStore,
    #[error("session.subject_key is not set: no session has a subject")]
    NoSubjectKey,
    #[error("session store unavailable")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        ManageError::Store(e)
    }
}

impl Sessions {
    /// The subject key, where sessions have subjects on the server.
    pub fn subject_key(&self) -> Result<&str, ManageError> {
        if !self.backend.store.manages() {
            return Err(ManageError::CookieStore);
        }
        self.subjects
            .key
            .as_deref()
            .ok_or(ManageError::NoSubjectKey)
    }

    /// The key to index writes under, when there is one.
    pub(super) fn indexing(&self) -> Option<&str> {
        self.subject_key().ok()
    }

    /// After a write gave `subject` the session under `id`: past
    /// `max_per_subject` its oldest sessions are revoked; past
    /// `INDEX_PRUNE_AT` entries its index is pruned.
    pub(super) async fn indexed_one(
        &self,
        subject: &str,
        entries: u64,
        id: &SessionId,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let Ok(key) = self.subject_key() else {
            return Ok(());
        };
        match self.subjects.max_per_subject {
            Some(max) if entries > max as u64 => {
                let mut live = self.listed(key, subject, now).await?;
                if live.len() <= max {
                    return Ok(());
                }
                newest_first(&mut live);
                // The session just written stays whatever its age.
                let keep = live.iter().position(|l| l.id == *id);
                let mut kept = usize::from(keep.is_some());
                let mut revoked = 0;
                for (i, l) in live.iter().enumerate() {
                    if Some(i) == keep {
                        continue;
                    }
                    if kept < max {
                        kept += 1;
                        continue;
                    }
                    if self.revoke_one(&l.id, key, subject, now).await? == Revoked::Deleted {
                        revoked += 1;
                    }
                }
                if revoked > 0 {
                    tracing::info!(
                        revoked,
                        max,
                        "oldest sessions of a subject revoked past max_per_subject"
                    );
                }
                Ok(())
            }
            // At powers of two past the bound: a subject with many live
            // sessions is listed O(log n) times as it grows, not at every login.
            _ if entries > INDEX_PRUNE_AT && entries.is_power_of_two() => {
                self.listed(key, subject, now).await.map(drop)
            }
            _ => Ok(()),
        }
    }

    /// `indexed_one` after a write that has committed: its failure is
    /// logged, never turned into a failure of the write (whose cookie the
    /// client must get).
    pub(super) async fn after_indexed(
        &self,
        subject: &str,
        entries: u64,
        id: &SessionId,
        now: UnixMillis,
    ) {
        if let Err(e) = self.indexed_one(subject, entries, id, now).await {
            crate::limited!(
                crate::logging::LogClass::store,
                warn,
                error = %crate::logging::Chain(&e),
                "pruning a subject's index or enforcing max_per_subject failed; the write stands"
            );
        }
    }

    async fn listed(
        &self,
        key: &str,
        subject: &str,
        now: UnixMillis,
    ) -> Result<Vec<Listed>, StoreError> {
        self.timed(
            StoreOp::index,
            self.backend.store.indexed(key, subject, now),
        )
        .await
    }

    /// Revokes the session under `id`, following it to the new id of a
    /// cycle that moved it meanwhile.
    async fn revoke_one(
        &self,
        id: &SessionId,
        key: &str,
        subject: &str,
        now: UnixMillis,
    ) -> Result<Revoked, StoreError> {
        let mut id = *id;
        for _ in 0..MAX_FOLLOWED_MOVES {
            let r = self
                .timed(
                    StoreOp::revoke,
                    self.backend.store.revoke(&id, key, subject, now),
                )
                .await?;
            match r {
                Revoked::Moved(next) => id = next,
                Revoked::Deleted => {
                    self.metrics.event(SessionEvent::revoked);
                    return Ok(r);
                }
                Revoked::Gone | Revoked::Other => return Ok(r),
            }
        }
        // Still moving: the caller's next pass lists it where it is.
        Ok(Revoked::Gone)
    }

    /// The live sessions of a subject, newest first.
    pub async fn list_subject(
        &self,
        subject: &str,
        now: UnixMillis,
    ) -> Result<Vec<Listed>, ManageError> {
        let key = self.subject_key()?;
        let mut live = self.listed(key, subject, now).await?;
        newest_first(&mut live);
        Ok(live)
    }

    /// Revokes every session of a subject but `keep`; says how many.
    pub async fn revoke_subject(
        &self,
        subject: &str,
        keep: Option<&SessionId>,
        now: UnixMillis,
    ) -> Result<u64, ManageError> {
        let key = self.subject_key()?;
        let mut revoked = 0;
        for _ in 0..MAX_REVOKE_PASSES {
            let live = self.listed(key, subject, now).await?;
            let mut moved = false;
            for l in live.iter().filter(|l| Some(&l.id) != keep) {
                match self.revoke_one(&l.id, key, subject, now).await? {
                    Revoked::Deleted => revoked += 1,
                    // Listed live a moment ago: flushed, or cycled to a new
                    // id, which the next pass finds.
                    Revoked::Gone | Revoked::Moved(_) => moved = true,
                    Revoked::Other => {}
                }
            }
            if !moved {
                return Ok(revoked);
            }
        }
        Err(ManageError::Store(StoreError::Backend(
            format!(
                "sessions of the subject kept moving to new ids through {MAX_REVOKE_PASSES} \
                 revocation passes; {revoked} revoked so far"
            )
            .into(),
        )))
    }

    /// Revokes the session whose sid this is; `false` when no live session has it.
    pub async fn revoke_sid(&self, sid: &str, now: UnixMillis) -> Result<bool, ManageError> {
        self.subject_key()?;
        let found = self
            .timed(StoreOp::index, self.backend.store.find_sid(sid, now))
            .await?;
        let Some(id) = found else {
            return Ok(false);
        };
        let deleted = self
            .timed(StoreOp::revoke, self.backend.store.delete(&Ticket::Id(id)))
            .await?;
        if deleted {
            self.metrics.event(SessionEvent::revoked);
        }
        Ok(deleted)
    }
}

/// Newest first, by creation; the sid breaks ties so the order is stable.
fn newest_first(live: &mut [Listed]) {
    live.sort_by(|a, b| {
        b.created_ms
            .cmp(&a.created_ms)
            .then_with(|| a.sid.cmp(&b.sid))
    });
}
