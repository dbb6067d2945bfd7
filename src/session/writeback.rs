//! What an upstream asks of the session in its response headers: JSON Merge
//! Patches in update headers, and actions (`flush`, `cycle`, `expiry=N`).

use crate::config::WriteScope;
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
    /// `revoke-others`: every other session of this session's subject is revoked.
    pub revoke_others: bool,
}

impl Writeback {
    /// Nothing was asked: the response does not count as a save.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
            && !self.flush
            && !self.cycle
            && self.expiry.is_none()
            && !self.revoke_others
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

    /// Checks everything asked against what the route's upstream may
    /// write: a top-level key outside `writable_keys` (set, removed, or
    /// changed inside) or an action outside `actions` refuses it all.
    pub fn check(&self, scope: &WriteScope) -> Result<(), UpdateError> {
        if let Some(allowed) = &scope.keys {
            for patch in &self.patches {
                if let Some(key) = patch.keys().find(|k| !allowed.contains(k)) {
                    return Err(UpdateError::NotWritable(key.chars().take(64).collect()));
                }
            }
        }
        for (asked, allowed, name) in [
            (self.flush, scope.flush, "flush"),
            (self.cycle, scope.cycle, "cycle"),
            (self.expiry.is_some(), scope.expiry, "expiry"),
            (self.revoke_others, scope.revoke_others, "revoke-others"),
        ] {
            if asked && !allowed {
                return Err(UpdateError::ActionNotAllowed(name));
            }
        }
        Ok(())
    }

    fn add_actions(&mut self, raw: &[u8]) -> Result<(), UpdateError> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| UpdateError::UnknownAction("<not UTF-8>".into()))?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let lower = token.to_ascii_lowercase();
            match lower.as_str() {
                "flush" => self.flush = true,
                "cycle" => self.cycle = true,
                "revoke-others" => self.revoke_others = true,
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

/// The session a response leaves the client with, where a write-back
/// changed it (CSRF tokens are bound to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    Unchanged,
    Ended,
    /// A session was created, cycled or saved: its sid.
    Now(String),
}

/// What a write-back sends: `Set-Cookie` headers, and the session it leaves.
#[derive(Debug)]
pub struct Written {
    pub cookies: Vec<HeaderValue>,
    pub after: After,
}

impl Written {
    pub(super) fn unchanged() -> Self {
        Written {
            cookies: Vec::new(),
            after: After::Unchanged,
        }
    }

    pub(super) fn ended(cookies: Vec<HeaderValue>) -> Self {
        Written {
            cookies,
            after: After::Ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_refuses_keys_and_actions_outside_it() {
        let scope = WriteScope {
            keys: Some(vec!["cart".into(), "prefs".into()]),
            flush: false,
            ..WriteScope::default()
        };
        let wb = |update: &'static str, action: &'static str| {
            let u = HeaderValue::from_static(update);
            let a = HeaderValue::from_static(action);
            let actions = if action.is_empty() { vec![] } else { vec![&a] };
            Writeback::parse([&u], actions).unwrap()
        };
        assert!(
            wb(r#"{"cart":[1],"prefs":{"x":null}}"#, "")
                .check(&scope)
                .is_ok()
        );
        assert!(
            wb(r#"{"cart":[1]}"#, "cycle, expiry=60")
                .check(&scope)
                .is_ok()
        );
        assert!(matches!(
            wb(r#"{"cart":[1],"user_id":1}"#, "").check(&scope),
            Err(UpdateError::NotWritable(k)) if k == "user_id"
        ));
        assert!(matches!(
            wb(r#"{"user_id":null}"#, "").check(&scope),
            Err(UpdateError::NotWritable(_))
        ));
        assert!(matches!(
            wb(r#"{}"#, "flush").check(&scope),
            Err(UpdateError::ActionNotAllowed("flush"))
        ));
        assert!(
            wb(r#"{"user_id":1}"#, "flush")
                .check(&WriteScope::default())
                .is_ok()
        );
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
