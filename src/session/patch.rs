//! What an upstream asks of the session: JSON Merge Patches (RFC 7396) in
//! update headers, and actions (`flush`, `cycle`, `expiry=N`).

use http::HeaderValue;
use serde_json::{Map, Value};

/// The longest lifetime a session may be given (ten years): far past any
/// browser's cap on Max-Age, and small enough for every store's clock arithmetic.
pub const MAX_LIFETIME_S: u64 = 10 * 365 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("session update is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    #[error("session update is not a JSON object")]
    NotObject,
    #[error("unknown session action {0:?}")]
    UnknownAction(String),
    #[error("malformed expiry action: expected expiry=<seconds>, at most ten years")]
    BadExpiry,
    #[error("session would be {size} bytes, over the limit of {max}")]
    TooLarge { size: usize, max: usize },
}

/// Everything one upstream response asks for, parsed and checked before any of it is applied.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Writeback {
    pub patches: Vec<Map<String, Value>>,
    pub flush: bool,
    pub cycle: bool,
    /// Django's `set_expiry`: 0 = browser session, otherwise seconds.
    pub expiry: Option<u64>,
}

impl Writeback {
    /// Nothing was asked: the response does not count as a save.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty() && !self.flush && !self.cycle && self.expiry.is_none()
    }

    /// Parses the update and action header values, in the order they came.
    /// One bad value refuses the whole write-back.
    pub fn parse<'a>(
        updates: impl IntoIterator<Item = &'a HeaderValue>,
        actions: impl IntoIterator<Item = &'a HeaderValue>,
    ) -> Result<Self, UpdateError> {
        let mut wb = Writeback::default();
        for value in updates {
            wb.patches.push(parse_update(value.as_bytes())?);
        }
        for value in actions {
            wb.add_actions(value.as_bytes())?;
        }
        Ok(wb)
    }

    fn add_actions(&mut self, raw: &[u8]) -> Result<(), UpdateError> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| UpdateError::UnknownAction("<not UTF-8>".into()))?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let lower = token.to_ascii_lowercase();
            match lower.as_str() {
                "flush" => self.flush = true,
                "cycle" => self.cycle = true,
                other => match other.strip_prefix("expiry=") {
                    Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                        let secs: u64 = n.parse().map_err(|_| UpdateError::BadExpiry)?;
                        if secs > MAX_LIFETIME_S {
                            return Err(UpdateError::BadExpiry);
                        }
                        self.expiry = Some(secs);
                    }
                    Some(_) => return Err(UpdateError::BadExpiry),
                    None if other.starts_with("expiry") => return Err(UpdateError::BadExpiry),
                    None => {
                        return Err(UpdateError::UnknownAction(token.chars().take(40).collect()));
                    }
                },
            }
        }
        Ok(())
    }
}

pub fn parse_update(raw: &[u8]) -> Result<Map<String, Value>, UpdateError> {
    match serde_json::from_slice::<Value>(raw).map_err(UpdateError::InvalidJson)? {
        Value::Object(map) => Ok(map),
        _ => Err(UpdateError::NotObject),
    }
}

/// RFC 7396 applied to an object: `null` removes, objects merge recursively,
/// anything else replaces.
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key.clone()).or_insert(Value::Null);
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(t) = slot {
                    merge(t, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
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

    #[test]
    fn merge_follows_rfc7396() {
        let mut target = obj(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]}));
        merge(
            &mut target,
            &obj(
                json!({"a": null, "b": {"c": null, "x": 9}, "e": [3], "n": {"deep": {"k": null}}}),
            ),
        );
        assert_eq!(
            Value::Object(target),
            json!({"b": {"d": 3, "x": 9}, "e": [3], "n": {"deep": {}}})
        );
    }

    #[test]
    fn merge_agrees_with_reference_implementation() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"})),
            (json!({"a": "b"}), json!({"a": null})),
            (json!({"a": ["b"]}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
            ),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]})),
            (json!({"e": null}), json!({"a": 1})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}})),
        ];
        for (doc, patch) in cases {
            let mut ours = obj(doc.clone());
            merge(&mut ours, &obj(patch.clone()));
            let mut reference = doc;
            json_patch::merge(&mut reference, &patch);
            assert_eq!(Value::Object(ours), reference);
        }
    }

    #[test]
    fn actions_parse() {
        let a = HeaderValue::from_static("cycle, expiry=3600");
        let wb = Writeback::parse([], [&a]).unwrap();
        assert!(wb.cycle && !wb.flush);
        assert_eq!(wb.expiry, Some(3600));
        let f = HeaderValue::from_static("FLUSH");
        assert!(Writeback::parse([], [&f]).unwrap().flush);
    }

    #[test]
    fn bad_actions_are_refused() {
        for bad in [
            "logout",
            "expiry=",
            "expiry=-1",
            "expiry=abc",
            "expiry",
            "cycle,nope",
        ] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(Writeback::parse([], [&v]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn updates_must_be_objects() {
        for bad in ["[1]", "\"x\"", "null", "{", "42"] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(Writeback::parse([&v], []).is_err(), "{bad} accepted");
        }
        let ok = HeaderValue::from_static(r#"{"a":1}"#);
        assert_eq!(Writeback::parse([&ok], []).unwrap().patches.len(), 1);
    }
}
