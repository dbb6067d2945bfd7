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

/// The fields `d, sid, c, e, x` of the save script's `saved` reply, whose
/// second element packs `sid, c, e, x, d` separated by NULs (`d` is empty
/// when the script stored the merge it was sent).
pub(super) fn saved_fields(reply: &[String]) -> Result<Vec<Option<String>>, StoreError> {
    let mut parts = reply
        .get(1)
        .ok_or_else(|| unexpected("save", reply))?
        .splitn(5, '\0')
        .map(|p| Some(p.to_string()));
    let head: Vec<Option<String>> = parts.by_ref().take(4).collect();
    let data = parts.next().ok_or_else(|| unexpected("save", reply))?;
    Ok(std::iter::once(data).chain(head).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(parts: &[&str]) -> Vec<String> {
        vec!["saved".into(), parts.join("\0")]
    }

    #[test]
    fn a_saved_reply_unpacks_into_the_record_fields() {
        let data = "{\"a\":\"x\\u0000y\"}";
        let fields = saved_fields(&reply(&["sid-1", "100", "200", "", data])).unwrap();
        let record = record(fields).unwrap();
        assert_eq!(record.sid, "sid-1");
        assert_eq!((record.created_ms, record.expires_ms), (100, 200));
        assert_eq!(record.expiry_s, None);
        assert_eq!(record.data.as_str(), data);

        let fields = saved_fields(&reply(&["sid-1", "100", "200", "7", ""])).unwrap();
        assert_eq!(fields[0].as_deref(), Some(""), "not echoed");
        assert_eq!(fields[4].as_deref(), Some("7"));
    }

    #[test]
    fn a_saved_reply_missing_a_field_is_an_error() {
        assert!(saved_fields(&reply(&["sid-1", "100", "200", ""])).is_err());
        assert!(saved_fields(&["saved".to_string()]).is_err());
    }
}
