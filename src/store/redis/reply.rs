//! Reading the Redis store's replies: a session's fields, and the
//! outcomes of the write scripts.

use crate::record::{SessionData, SessionRecord};
use crate::store::StoreError;

/// A write script's reply that is not one of its outcomes. `late` means
/// Redis ran the write past its deadline by its own clock yet answered
/// before the timeout by sessiongate's: the two clocks disagree.
pub(super) fn unexpected(script: &str, reply: &[String]) -> StoreError {
    match (reply.first().map(String::as_str), reply.get(1)) {
        (Some("late"), Some(redis_ms)) => StoreError::Backend(
            format!(
                "Redis refused a {script} past its deadline by its own clock ({redis_ms} ms \
                 since the epoch, sessiongate's is {}): the clocks disagree",
                crate::record::now_ms()
            )
            .into(),
        ),
        _ => StoreError::Backend(
            format!("unexpected reply from the {script} script: {reply:?}").into(),
        ),
    }
}

fn field(fields: &[Option<String>], i: usize) -> Result<&str, StoreError> {
    fields
        .get(i)
        .and_then(|f| f.as_deref())
        .ok_or_else(lacks_field)
}

fn lacks_field() -> StoreError {
    StoreError::Backend("stored session lacks a field".into())
}

fn number(text: &str) -> Result<u64, StoreError> {
    text.parse().map_err(|_| {
        StoreError::Backend(format!("stored session has a bad number {text:?}").into())
    })
}

/// The subject a value's raw JSON text gives a session.
pub(super) fn subject_of_text(raw: &str) -> Option<String> {
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str(raw).ok(),
        b'-' | b'0'..=b'9' => Some(raw.to_string()),
        _ => None,
    }
}

/// A record from the fields `d, sid, c, e, x`.
pub(super) fn record(mut fields: Vec<Option<String>>) -> Result<SessionRecord, StoreError> {
    let text = fields
        .get_mut(0)
        .and_then(Option::take)
        .ok_or_else(lacks_field)?;
    let data = SessionData::from_text(text).map_err(StoreError::Corrupt)?;
    with_data(data, &fields)
}

/// A record of `data` and the fields `sid, c, e, x` (at 1 to 4 in `fields`).
pub(super) fn with_data(
    data: SessionData,
    fields: &[Option<String>],
) -> Result<SessionRecord, StoreError> {
    let expiry_s = match fields.get(4).and_then(|f| f.as_deref()) {
        None | Some("") => None,
        Some(x) => Some(number(x)?),
    };
    Ok(SessionRecord {
        data,
        sid: field(fields, 1)?.to_string(),
        created_ms: number(field(fields, 2)?)?,
        expires_ms: number(field(fields, 3)?)?,
        expiry_s,
    })
}
