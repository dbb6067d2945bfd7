//! What an upstream asks of the session in its response headers: JSON Merge
//! Patches in update headers, and actions (`flush`, `cycle`, `expiry=N`).

use crate::record::{MAX_LIFETIME_S, UpdateError, parse_update};
use http::HeaderValue;
use serde_json::{Map, Value};

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

#[cfg(test)]
mod tests {
    use super::*;

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
