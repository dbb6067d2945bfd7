//! The session record model, at the bottom of the layers: ids, data, the
//! stored record, its deadlines, and the one function that changes it. The
//! stores, the session pipeline and the config all build on it; it depends
//! on none of them. Every store applies changes through `apply`, so expiry
//! and size rules are the same everywhere.

mod data;
mod id;
mod patch;
mod subject;

pub use data::{Fields, SessionData};
pub use id::{ID_B64_LEN, ID_BYTES, SessionId};
pub use patch::{MAX_LIFETIME_S, UpdateError, parse_update};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
pub use subject::{IndexEntry, Listed, patched, subject_of, value_texts};

/// Milliseconds since the Unix epoch. Functions that depend on time take it as
/// an argument so that tests control the clock.
pub type UnixMillis = u64;

pub fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub data: SessionData,
    /// Stable, non-secret handle of the session, derived by HMAC from its id at creation.
    pub sid: String,
    pub created_ms: UnixMillis,
    /// Server-side deadline: past it the session does not exist.
    pub expires_ms: UnixMillis,
    /// The last `expiry=N`, which outlives later saves (Django's `set_expiry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_s: Option<u64>,
}

/// The lifetime and size rules of sessions, from the `session` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub ttl_s: u64,
    pub absolute_ttl_s: Option<u64>,
    pub expire_at_browser_close: bool,
    pub max_bytes: usize,
}

impl Policy {
    /// The deadline of a session saved at `now`.
    fn deadline(&self, record: &SessionRecord, now: UnixMillis) -> UnixMillis {
        let lifetime_s = match record.expiry_s {
            Some(n) if n > 0 => n,
            // `expiry=0` is a browser-session cookie; the store still keeps it for `ttl`.
            _ => self.ttl_s,
        };
        let rolling = now.saturating_add(lifetime_s.saturating_mul(1000));
        match self.absolute_ttl_s {
            Some(abs) => rolling.min(record.created_ms.saturating_add(abs.saturating_mul(1000))),
            None => rolling,
        }
    }
}

impl SessionRecord {
    /// An empty, not yet saved session.
    pub fn new(sid: String, now: UnixMillis) -> Self {
        SessionRecord {
            data: SessionData::empty().clone(),
            sid,
            created_ms: now,
            expires_ms: now,
            expiry_s: None,
        }
    }

    pub fn is_live(&self, now: UnixMillis) -> bool {
        now < self.expires_ms
    }

    /// Whether the cookie should be a browser-session cookie (no Max-Age/Expires).
    pub fn browser_session(&self, policy: &Policy) -> bool {
        match self.expiry_s {
            Some(0) => true,
            Some(_) => false,
            None => policy.expire_at_browser_close,
        }
    }

    /// Whole seconds left, rounded down: the cookie's Max-Age.
    pub fn seconds_left(&self, now: UnixMillis) -> u64 {
        self.expires_ms.saturating_sub(now) / 1000
    }
}

/// What an upstream's response changes, as the store applies it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Change<'a> {
    pub patches: &'a [Map<String, Value>],
    pub expiry_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Saved(SessionRecord),
    /// The data became empty: the session is deleted (Django does this).
    Emptied,
}

/// Applies a change to a session, renewing its deadline. A save always renews
/// the expiry, even when the data comes out identical.
pub fn apply(
    mut record: SessionRecord,
    change: &Change<'_>,
    policy: &Policy,
    now: UnixMillis,
) -> Result<Applied, UpdateError> {
    if !change.patches.is_empty() {
        record.data = record.data.merged(change.patches);
    }
    renew(record, change, policy, now)
}

/// `apply` to a session the caller keeps: its data is read for the merge,
/// not copied first.
pub fn apply_to(
    read: &SessionRecord,
    change: &Change<'_>,
    policy: &Policy,
    now: UnixMillis,
) -> Result<Applied, UpdateError> {
    let data = if change.patches.is_empty() {
        read.data.clone()
    } else {
        read.data.merged(change.patches)
    };
    let record = SessionRecord {
        data,
        sid: read.sid.clone(),
        ..*read
    };
    renew(record, change, policy, now)
}

/// The rest of `apply` once the patches are merged.
fn renew(
    mut record: SessionRecord,
    change: &Change<'_>,
    policy: &Policy,
    now: UnixMillis,
) -> Result<Applied, UpdateError> {
    if let Some(e) = change.expiry_s {
        record.expiry_s = Some(e);
    }
    if record.data.is_empty() {
        return Ok(Applied::Emptied);
    }
    let size = record.data.len();
    if size > policy.max_bytes {
        return Err(UpdateError::TooLarge {
            size,
            max: policy.max_bytes,
        });
    }
    record.expires_ms = policy.deadline(&record, now);
    Ok(Applied::Saved(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const POLICY: Policy = Policy {
        ttl_s: 100,
        absolute_ttl_s: None,
        expire_at_browser_close: false,
        max_bytes: 1000,
    };

    fn patch(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn saved(a: Applied) -> SessionRecord {
        match a {
            Applied::Saved(r) => r,
            Applied::Emptied => panic!("emptied"),
        }
    }

    #[test]
    fn apply_to_a_kept_session_agrees_with_apply() {
        let read = saved(
            apply(
                SessionRecord::new("s".into(), 0),
                &Change {
                    patches: &[patch(json!({"a": 1, "o": {"x": 1}}))],
                    expiry_s: Some(500),
                },
                &POLICY,
                1_000,
            )
            .unwrap(),
        );
        let big = "x".repeat(2_000);
        let changes = [
            (vec![], None),
            (vec![], Some(0)),
            (vec![patch(json!({"b": 2, "o": {"x": null}}))], None),
            (vec![patch(json!({"a": null, "o": null}))], None),
            (vec![patch(json!({"big": big}))], Some(7)),
        ];
        for (patches, expiry_s) in &changes {
            let change = Change {
                patches,
                expiry_s: *expiry_s,
            };
            // UpdateError has no PartialEq: outcomes compare as printed.
            assert_eq!(
                format!("{:?}", apply_to(&read, &change, &POLICY, 9_000)),
                format!("{:?}", apply(read.clone(), &change, &POLICY, 9_000)),
                "{patches:?} {expiry_s:?}"
            );
        }
    }

    #[test]
    fn save_renews_deadline_by_ttl() {
        let p = [patch(json!({"a": 1}))];
        let r = saved(
            apply(
                SessionRecord::new("s".into(), 0),
                &Change {
                    patches: &p,
                    expiry_s: None,
                },
                &POLICY,
                5_000,
            )
            .unwrap(),
        );
        assert_eq!(r.expires_ms, 105_000);
        assert_eq!(r.seconds_left(5_500), 99);
    }

    #[test]
    fn absolute_ttl_caps_the_deadline() {
        let policy = Policy {
            absolute_ttl_s: Some(150),
            ..POLICY
        };
        let p = [patch(json!({"a": 1}))];
        let r = saved(
            apply(
                SessionRecord::new("s".into(), 0),
                &Change {
                    patches: &p,
                    expiry_s: None,
                },
                &policy,
                100_000,
            )
            .unwrap(),
        );
        assert_eq!(r.expires_ms, 150_000);
    }

    #[test]
    fn expiry_persists_across_saves() {
        let p = [patch(json!({"a": 1}))];
        let r = saved(
            apply(
                SessionRecord::new("s".into(), 0),
                &Change {
                    patches: &p,
                    expiry_s: Some(10),
                },
                &POLICY,
                0,
            )
            .unwrap(),
        );
        assert_eq!(r.expires_ms, 10_000);
        let r = saved(apply(r, &Change::default(), &POLICY, 5_000).unwrap());
        assert_eq!(r.expires_ms, 15_000);
        let r = saved(
            apply(
                r,
                &Change {
                    patches: &[],
                    expiry_s: Some(0),
                },
                &POLICY,
                5_000,
            )
            .unwrap(),
        );
        assert!(r.browser_session(&POLICY));
        assert_eq!(
            r.expires_ms, 105_000,
            "a browser-session cookie is kept for ttl in the store"
        );
    }

    #[test]
    fn emptied_session_is_reported() {
        let p = [patch(json!({"a": 1}))];
        let r = saved(
            apply(
                SessionRecord::new("s".into(), 0),
                &Change {
                    patches: &p,
                    expiry_s: None,
                },
                &POLICY,
                0,
            )
            .unwrap(),
        );
        let rm = [patch(json!({"a": null}))];
        assert_eq!(
            apply(
                r,
                &Change {
                    patches: &rm,
                    expiry_s: None
                },
                &POLICY,
                0
            )
            .unwrap(),
            Applied::Emptied
        );
    }

    #[test]
    fn oversized_session_is_refused() {
        let p = [patch(json!({"a": "x".repeat(2000)}))];
        let err = apply(
            SessionRecord::new("s".into(), 0),
            &Change {
                patches: &p,
                expiry_s: None,
            },
            &POLICY,
            0,
        )
        .unwrap_err();
        assert!(matches!(err, UpdateError::TooLarge { max: 1000, .. }));
    }
}
