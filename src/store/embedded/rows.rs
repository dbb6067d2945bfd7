//! A session's rows in a write transaction: the record under its id, and
//! its deadline in the expiry table. The writer and the index both change
//! sessions through these, so the two rows never disagree.

use super::{backend, decode, encode, expiry_key, readable};
use crate::record::{SessionId, SessionRecord};
use crate::store::StoreError;
use redb::{ReadableTable, Table};

pub(super) type Sessions<'t> = Table<'t, &'static [u8], &'static [u8]>;
pub(super) type Expiry<'t> = Table<'t, &'static [u8], ()>;

pub(super) fn put(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    id: &SessionId,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    sessions
        .insert(id.as_bytes().as_slice(), encode(record).as_slice())
        .map_err(backend)?;
    expiry
        .insert(expiry_key(record.expires_ms, id).as_slice(), ())
        .map_err(backend)?;
    Ok(())
}

pub(super) fn remove(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    id: &SessionId,
) -> Result<Option<SessionRecord>, StoreError> {
    let old = match sessions.remove(id.as_bytes().as_slice()).map_err(backend)? {
        Some(v) => readable(decode(v.value())),
        None => None,
    };
    if let Some(r) = &old {
        expiry
            .remove(expiry_key(r.expires_ms, id).as_slice())
            .map_err(backend)?;
    }
    Ok(old)
}

/// The record under `id`, unchanged; an unreadable one is none.
pub(super) fn get(
    sessions: &Sessions<'_>,
    id: &SessionId,
) -> Result<Option<SessionRecord>, StoreError> {
    Ok(
        match sessions.get(id.as_bytes().as_slice()).map_err(backend)? {
            Some(v) => readable(decode(v.value())),
            None => None,
        },
    )
}

/// Writes `record` over the one under `id` whose deadline was
/// `old_expires_ms`, moving the deadline's row with it.
pub(super) fn overwrite(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    id: &SessionId,
    old_expires_ms: u64,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    if record.expires_ms != old_expires_ms {
        expiry
            .remove(expiry_key(old_expires_ms, id).as_slice())
            .map_err(backend)?;
    }
    put(sessions, expiry, id, record)
}

/// Deletes the rows of the session under `id` whose deadline is `expires_ms`.
pub(super) fn delete(
    sessions: &mut Sessions<'_>,
    expiry: &mut Expiry<'_>,
    id: &SessionId,
    expires_ms: u64,
) -> Result<(), StoreError> {
    sessions.remove(id.as_bytes().as_slice()).map_err(backend)?;
    expiry
        .remove(expiry_key(expires_ms, id).as_slice())
        .map_err(backend)?;
    Ok(())
}
