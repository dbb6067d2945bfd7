//! The index of subjects kept in process, for the memory store: from each
//! subject to the sessions indexed under it, and from each indexed sid to
//! its id. Entries are written before their sessions and judged when read
//! (`super::standing`), as in every store.

use crate::record::{IndexEntry, SessionId, UnixMillis};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// An entry as kept: the sid, and when it was written.
type Kept = (String, UnixMillis);

#[derive(Default)]
struct Inner {
    by_subject: HashMap<String, HashMap<SessionId, Kept>>,
    by_sid: HashMap<String, SessionId>,
}

#[derive(Default)]
pub struct SubjectIndex {
    inner: Mutex<Inner>,
}

impl SubjectIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below is one map operation: a panic cannot leave half of one.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or refreshes) an entry; says how many the subject has.
    pub fn add(&self, subject: &str, entry: &IndexEntry, now_ms: UnixMillis) -> u64 {
        let mut g = self.lock();
        g.by_sid.insert(entry.sid.clone(), entry.id);
        let entries = g.by_subject.entry(subject.to_string()).or_default();
        entries.insert(entry.id, (entry.sid.clone(), now_ms));
        entries.len() as u64
    }

    /// Runs `f` on the subject's entries (id, sid, written at) with the
    /// index locked: no entry can be added meanwhile.
    pub fn with_entries<R>(
        &self,
        subject: &str,
        f: impl FnOnce(&[(SessionId, String, UnixMillis)]) -> R,
    ) -> R {
        let g = self.lock();
        let entries: Vec<_> = g
            .by_subject
            .get(subject)
            .map(|m| {
                m.iter()
                    .map(|(id, (sid, at))| (*id, sid.clone(), *at))
                    .collect()
            })
            .unwrap_or_default();
        f(&entries)
    }

    /// Drops entries of the subject, unless rewritten since `before_ms`.
    pub fn drop_entries(
        &self,
        subject: &str,
        stale: &[(SessionId, String, bool)],
        before_ms: UnixMillis,
    ) {
        let mut g = self.lock();
        let Some(entries) = g.by_subject.get_mut(subject) else {
            return;
        };
        let mut dropped = Vec::new();
        for (id, sid, gone) in stale {
            if entries.get(id).is_some_and(|(_, at)| *at < before_ms) {
                entries.remove(id);
                if *gone {
                    dropped.push(sid);
                }
            }
        }
        if entries.is_empty() {
            g.by_subject.remove(subject);
        }
        for sid in dropped {
            g.by_sid.remove(sid);
        }
    }
    /// The id an indexed sid names.
    pub fn sid(&self, sid: &str) -> Option<SessionId> {
        self.lock().by_sid.get(sid).copied()
    }

    /// Every subject that has entries (for a sweep of the whole index).
    pub fn subjects(&self) -> Vec<String> {
        self.lock().by_subject.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_rewritten_after_it_was_judged_is_kept() {
        let index = SubjectIndex::default();
        let id = SessionId::generate();
        let entry = IndexEntry {
            id,
            sid: "s1".into(),
            created_ms: 0,
        };
        assert_eq!(index.add("alice", &entry, 10), 1);
        assert_eq!(index.sid("s1"), Some(id));
        // Judged stale at 20, rewritten at 30: the drop of the judgement at 20 keeps it.
        index.add("alice", &entry, 30);
        index.drop_entries("alice", &[(id, "s1".into(), true)], 20);
        assert_eq!(index.with_entries("alice", <[_]>::len), 1);
        index.drop_entries("alice", &[(id, "s1".into(), true)], 31);
        assert_eq!(index.with_entries("alice", <[_]>::len), 0);
        assert_eq!(index.sid("s1"), None);
        assert!(index.subjects().is_empty());
    }
}
