//! A session's rows in a write transaction: the record under its id, and
//! its deadline in the expiry table. The writer and the index both change
//! sessions through these, so the two rows never disagree.

use super::{backend, decode, encode, expiry_key, readable};
use crate::record::{SessionId, SessionRecord};
use crate::store::StoreError;
use redb::Table;

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
