//! Tokens signed in the current second, kept so that a session read again
//! in that second is not signed again.
//!
//! A token is a pure function of the signer and its claims, and the claims
//! hold the second they were signed in (`iat`). So an entry is looked up by
//! the whole claims text: equal claims give the same token, byte for byte,
//! and an entry from an earlier second can never match. A page that loads
//! with a dozen requests signs its session once instead of a dozen times
//! (callgrind: signing is a third of a session read's instructions).

use foldhash::fast::RandomState;
use http::HeaderValue;
use std::hash::BuildHasher;
use std::sync::Mutex;

/// How many sessions' tokens are kept; a session takes the slot its id
/// hashes to, so two sessions read in the same second may take turns.
pub const DEFAULT_RECENT_TOKEN_SLOTS: usize = 256;
/// Longer claims are signed every time: with this bound the cache holds at
/// most 256 x (2 KiB of claims + a 2.8 KiB token), about 1.2 MiB.
pub const DEFAULT_RECENT_TOKEN_MAX_CLAIMS_BYTES: usize = 2048;

struct Recent {
    claims: Vec<u8>,
    token: HeaderValue,
}

pub struct RecentTokens {
    slots: Box<[Mutex<Option<Recent>>]>,
    hasher: RandomState,
    max_claims_bytes: usize,
}

impl RecentTokens {
    pub fn new(slots: usize, max_claims_bytes: usize) -> Self {
        RecentTokens {
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            hasher: RandomState::default(),
            max_claims_bytes,
        }
    }

    fn slot(&self, sid: &str) -> &Mutex<Option<Recent>> {
        let i = self.hasher.hash_one(sid) as usize % self.slots.len();
        &self.slots[i]
    }

    /// The token these claims were last signed into, if the session's slot
    /// still holds it.
    pub fn get(&self, sid: &str, claims: &[u8]) -> Option<HeaderValue> {
        let slot = self.slot(sid).lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .filter(|recent| recent.claims == claims)
            .map(|recent| recent.token.clone())
    }

    /// Keeps `token` as the signature of `claims` in the session's slot.
    pub fn put(&self, sid: &str, claims: Vec<u8>, token: HeaderValue) {
        if claims.len() > self.max_claims_bytes {
            return;
        }
        let previous = self
            .slot(sid)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(Recent { claims, token });
        // Freed after the lock is released.
        drop(previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn only_the_same_claims_get_the_kept_token() {
        let recent = RecentTokens::new(4, 64);
        assert_eq!(recent.get("sid-1", b"claims"), None);
        recent.put("sid-1", b"claims".to_vec(), token("t1"));
        assert_eq!(recent.get("sid-1", b"claims"), Some(token("t1")));
        assert_eq!(recent.get("sid-1", b"claimz"), None);
        assert_eq!(recent.get("sid-1", b"claim"), None);
        recent.put("sid-1", b"claims2".to_vec(), token("t2"));
        assert_eq!(recent.get("sid-1", b"claims"), None);
        assert_eq!(recent.get("sid-1", b"claims2"), Some(token("t2")));
    }

    #[test]
    fn claims_over_the_bound_are_not_kept() {
        let recent = RecentTokens::new(4, 8);
        recent.put("sid-1", vec![b'x'; 9], token("t"));
        assert_eq!(recent.get("sid-1", &[b'x'; 9]), None);
        recent.put("sid-1", vec![b'x'; 8], token("t"));
        assert_eq!(recent.get("sid-1", &[b'x'; 8]), Some(token("t")));
    }

    #[test]
    fn one_slot_holds_the_last_session_put() {
        let recent = RecentTokens::new(1, 64);
        recent.put("a", b"ca".to_vec(), token("ta"));
        recent.put("b", b"cb".to_vec(), token("tb"));
        assert_eq!(recent.get("a", b"ca"), None);
        assert_eq!(recent.get("b", b"cb"), Some(token("tb")));
    }
}
