//! Whose a session is (`session.subject_key`), and what the index of a
//! subject's sessions holds.
//!
//! A subject is the value of one top-level key, as a string: strings as they
//! are, numbers as their JSON text. Any other value (an object, an array, a
//! boolean, `null`) gives the session no subject. Because a merge patch
//! replaces strings and numbers whole and turns anything it merges into an
//! object, the subject a write leaves is known from the patches alone when
//! they name the key (`patched`), without reading the stored session.

use super::{SessionData, SessionId, UnixMillis};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// One entry of a subject's index: a session that has, or had, the
/// subject. Entries are written before the session they name, so the index
/// never misses a session; an entry whose session has gone or changed hands
/// is stale, and dropped when the index is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub id: SessionId,
    pub sid: String,
    pub created_ms: UnixMillis,
}

/// A live session of a subject, as the management endpoints list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: SessionId,
    pub sid: String,
    pub created_ms: UnixMillis,
    pub expires_ms: UnixMillis,
}

/// The subject a value gives a session.
fn of_value(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'-' | b'0'..=b'9' => Some(text.to_string()),
        _ => None,
    }
}

/// The session's subject under `key`.
pub fn subject_of(data: &SessionData, key: &str) -> Option<String> {
    data.fields().get(key).and_then(of_value)
}

/// What the patches, applied in order, leave under `key`: `None` when no
/// patch names it (the subject is unchanged), `Some(None)` when it is
/// removed or becomes something that is no subject.
pub fn patched(patches: &[Map<String, Value>], key: &str) -> Option<Option<String>> {
    patches.iter().rev().find_map(|p| {
        p.get(key).map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    })
}

/// The JSON texts a stored value may have when the session's subject is
/// `subject`: the string, and the number when the subject reads as one.
/// Stores that compare raw JSON on the server (Redis) use these.
pub fn value_texts(subject: &str) -> Vec<String> {
    let mut texts = vec![serde_json::to_string(subject).expect("a string always serializes")];
    if serde_json::from_str::<serde_json::Number>(subject).is_ok_and(|n| n.to_string() == subject) {
        texts.push(subject.to_string());
    }
    texts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> SessionData {
        SessionData::from_map(v.as_object().unwrap())
    }

    #[test]
    fn strings_and_numbers_are_subjects_and_nothing_else() {
        assert_eq!(
            subject_of(&data(json!({"u": "alice"})), "u").as_deref(),
            Some("alice")
        );
        assert_eq!(
            subject_of(&data(json!({"u": 7})), "u").as_deref(),
            Some("7")
        );
        assert_eq!(
            subject_of(&data(json!({"u": "a\"b\u{e9}"})), "u").as_deref(),
            Some("a\"b\u{e9}")
        );
        for none in [
            json!({"u": {"a": 1}}),
            json!({"u": [1]}),
            json!({"u": true}),
            json!({}),
        ] {
            assert_eq!(subject_of(&data(none), "u"), None);
        }
    }

    #[test]
    fn the_last_patch_naming_the_key_decides() {
        let p = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(patched(&[p(json!({"x": 1}))], "u"), None);
        assert_eq!(
            patched(&[p(json!({"u": 7})), p(json!({"x": 1}))], "u"),
            Some(Some("7".into()))
        );
        assert_eq!(
            patched(&[p(json!({"u": "a"})), p(json!({"u": null}))], "u"),
            Some(None)
        );
        assert_eq!(patched(&[p(json!({"u": {"k": 1}}))], "u"), Some(None));
    }

    #[test]
    fn a_patched_subject_is_the_one_the_merged_data_has() {
        for v in [
            json!("bob"),
            json!(12),
            json!(-1.5),
            json!("1e3"),
            json!({"a": 1}),
        ] {
            let patch = json!({ "u": v }).as_object().unwrap().clone();
            let mut merged = json!({"u": "old", "k": 1});
            json_patch::merge(&mut merged, &Value::Object(patch.clone()));
            let merged = merged.as_object().unwrap().clone();
            let expected = patched(std::slice::from_ref(&patch), "u").unwrap();
            assert_eq!(subject_of(&SessionData::from_map(&merged), "u"), expected);
            if let Some(s) = &expected {
                let text = merged["u"].to_string();
                assert!(value_texts(s).contains(&text), "{text} for {s}");
            }
        }
    }
}
