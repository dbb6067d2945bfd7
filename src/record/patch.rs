//! JSON Merge Patch (RFC 7396) on session data, and the rules an update
//! must meet.

use serde_json::{Map, Value};

/// The longest lifetime a session may be given (ten years): far past any
/// browser's cap on Max-Age, and small enough for every store's clock arithmetic.
pub const MAX_LIFETIME_S: u64 = 10 * 365 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("session update is not valid JSON")]
    InvalidJson(#[source] serde_json::Error),
    #[error("session update is not a JSON object")]
    NotObject,
    #[error("unknown session action {0:?}")]
    UnknownAction(String),
    #[error("malformed expiry action: expected expiry=<seconds>, at most ten years")]
    BadExpiry,
    #[error("session would be {size} bytes, over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("this route's upstream may not write the key {0:?} (forward.writable_keys)")]
    NotWritable(String),
    #[error("this route's upstream may not take the action {0} (forward.actions)")]
    ActionNotAllowed(&'static str),
}

pub fn parse_update(raw: &[u8]) -> Result<Map<String, Value>, UpdateError> {
    match serde_json::from_slice::<Value>(raw).map_err(UpdateError::InvalidJson)? {
        Value::Object(map) => Ok(map),
        _ => Err(UpdateError::NotObject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Found by the merge_patch fuzz target: without serde_json's exact
    /// float parsing, a number could come back a digit off from what the
    /// upstream wrote (and differ from the Redis store, which keeps the text).
    #[test]
    fn numbers_survive_a_write_exactly() {
        for number in [
            "7.291108112844777e-304",
            "1.7976931348623157e308",
            "5e-324",
            "0.1",
        ] {
            let exact: f64 = number.parse().unwrap();
            let map = parse_update(format!(r#"{{"q":{number}}}"#).as_bytes()).unwrap();
            assert_eq!(
                map["q"].as_f64().unwrap().to_bits(),
                exact.to_bits(),
                "{number}"
            );
            let written = serde_json::to_string(&map).unwrap();
            let back: f64 = written[5..written.len() - 1].parse().unwrap();
            assert_eq!(back.to_bits(), exact.to_bits(), "{written}");
        }
    }

    /// Found by the merge fuzz targets: serde_json reads an object with
    /// this one key as a raw value, so an update holding it is refused
    /// (on every store, since updates are parsed before any store sees them).
    #[test]
    fn the_raw_value_key_is_refused() {
        let update = br#"{"b":{"$serde_json::private::RawValue":{}}}"#;
        assert!(parse_update(update).is_err());
    }

    fn merged(doc: &Value, patches: &[Value]) -> super::super::SessionData {
        let patches: Vec<Map<String, Value>> = patches.iter().cloned().map(obj).collect();
        super::super::SessionData::from_map(doc.as_object().unwrap()).merged(&patches)
    }

    #[test]
    fn merge_follows_rfc7396() {
        let out = merged(
            &json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}),
            &[json!({"a": null, "b": {"c": null, "x": 9}, "e": [3], "n": {"deep": {"k": null}}})],
        );
        assert_eq!(
            out.as_str(),
            r#"{"b":{"d":3,"x":9},"e":[3],"n":{"deep":{}}}"#
        );
    }

    /// The merge on text against the `json-patch` crate, patch after patch:
    /// the same JSON, written compact with sorted keys.
    #[test]
    fn merge_agrees_with_reference_implementation() {
        let cases = [
            (json!({"a": "b"}), vec![json!({"a": "c"})]),
            (json!({"a": "b"}), vec![json!({"b": "c"})]),
            (json!({"a": "b"}), vec![json!({"a": null})]),
            (json!({"a": "b", "b": "c"}), vec![json!({"a": null})]),
            (json!({"a": ["b"]}), vec![json!({"a": "c"})]),
            (json!({"a": "c"}), vec![json!({"a": ["b"]})]),
            (
                json!({"a": {"b": "c"}}),
                vec![json!({"a": {"b": "d", "c": null}})],
            ),
            (json!({"a": [{"b": "c"}]}), vec![json!({"a": [1]})]),
            (json!({"e": null}), vec![json!({"a": 1})]),
            (json!({}), vec![json!({"a": {"bb": {"ccc": null}}})]),
            (
                json!({"a": 1}),
                vec![json!({"a": {"b": {"c": null, "d": {}}}})],
            ),
            (
                json!({"a": {"b": 1}}),
                vec![
                    json!({"a": {"c": 2}}),
                    json!({"a": {"b": null}}),
                    json!({"a": 3}),
                    json!({"a": {"z": {"y": 1}}}),
                ],
            ),
            (
                json!({"a\"b": 1, "\u{1}": 2}),
                vec![json!({"a\"b": null, "\u{2}": {"\n": 3}})],
            ),
            (json!({"k": 1}), vec![json!({"k": null})]),
        ];
        for (doc, patches) in cases {
            let mut reference = doc.clone();
            for p in &patches {
                json_patch::merge(&mut reference, p);
            }
            assert_eq!(
                merged(&doc, &patches).as_str(),
                serde_json::to_string(&reference).unwrap(),
                "{doc} {patches:?}"
            );
        }
    }
}
