//! The cookie store: the session itself lives in the browser, sealed with
//! AES-256-GCM-SIV under keys derived from `secrets` by HKDF-SHA256.
//!
//! A sealed value is base64url(version byte || 12-byte random nonce ||
//! ciphertext || tag). The associated data binds the version and the cookie
//! name, so a value cannot be replayed under another cookie. GCM-SIV keeps a
//! repeated random nonce from being catastrophic. The first secret seals;
//! every one opens (rotation). The payload is the session record, deadlines
//! included, so expiry is enforced here as in every store.
//!
//! What a server-side store gives and this one cannot: a copy of an old
//! cookie stays valid until its own sealed deadline (a flush or cycle cannot
//! revoke it), and concurrent writes are last-writer-wins.

use super::{Carries, Created, SaveOp, SaveOutcome, SessionStore, StoreError, Ticket};
use crate::config::Secret;
use crate::record::{Applied, SessionId, SessionRecord, UnixMillis, UpdateError, apply};
use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::sync::Arc;

const VERSION: u8 = 1;
const HKDF_SALT: &[u8] = b"sessiongate/v1/cookie-store";
/// The most cookies one session may be split into: `NAME`, `NAME.1` .. `NAME.4`.
pub const MAX_CHUNKS: usize = 5;
/// Browsers keep a cookie whose name and value together are at most this long.
pub const MAX_COOKIE_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error(
    "the sealed session needs {needed} bytes of cookies; {available} fit in {MAX_CHUNKS} cookies"
)]
pub struct TooLargeForCookies {
    pub needed: usize,
    pub available: usize,
}

pub struct CookieStore {
    name: String,
    keys: Vec<LessSafeKey>,
}

impl CookieStore {
    pub fn new(secrets: &[Secret], cookie_name: &str) -> Self {
        assert!(!secrets.is_empty(), "config validation guarantees a secret");
        let keys = secrets
            .iter()
            .map(|s| {
                let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(s.expose());
                let info: [&[u8]; 1] = [cookie_name.as_bytes()];
                let okm = prk
                    .expand(&info, &AES_256_GCM_SIV)
                    .expect("32 bytes is a valid HKDF length");
                LessSafeKey::new(UnboundKey::from(okm))
            })
            .collect();
        CookieStore {
            name: cookie_name.to_string(),
            keys,
        }
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.name.len() + 1);
        aad.push(VERSION);
        aad.extend_from_slice(self.name.as_bytes());
        aad
    }

    /// The sealed value of a record.
    pub fn seal(&self, record: &SessionRecord) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random number generator failed");
        let mut buf = serde_json::to_vec(record).expect("a session record always serializes");
        self.keys[0]
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad()),
                &mut buf,
            )
            .expect("sealing cannot fail for in-memory buffers");
        let mut raw = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        raw.push(VERSION);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The live record in a sealed value, or `None` for anything forged,
    /// tampered, sealed under no configured secret, malformed, or expired.
    pub fn open(&self, sealed: &str, now: UnixMillis) -> Option<SessionRecord> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (&version, rest) = raw.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let aad = self.aad();
        let plain = self.keys.iter().find_map(|key| {
            let mut buf = ciphertext.to_vec();
            key.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut buf,
            )
            .ok()
            .map(|p| p.to_vec())
        })?;
        let record: SessionRecord = serde_json::from_slice(&plain).ok()?;
        record.is_live(now).then_some(record)
    }

    /// The cookie name of chunk `i`: `NAME`, then `NAME.1`, `NAME.2`, ...
    pub fn chunk_name(&self, i: usize) -> String {
        if i == 0 {
            self.name.clone()
        } else {
            format!("{}.{i}", self.name)
        }
    }

    /// Splits a sealed value into cookie values, each fitting with its name in
    /// one cookie. The main cookie starts with the number of cookies (one
    /// digit), so chunks left behind by an earlier, larger write are ignored.
    pub fn split(&self, sealed: &str) -> Result<Vec<String>, TooLargeForCookies> {
        let room = |i: usize| MAX_COOKIE_BYTES - self.chunk_name(i).len() - 1 - usize::from(i == 0);
        let available: usize = (0..MAX_CHUNKS).map(room).sum();
        if sealed.len() > available {
            return Err(TooLargeForCookies {
                needed: sealed.len(),
                available,
            });
        }
        let mut chunks = Vec::new();
        let mut rest = sealed;
        while !rest.is_empty() {
            // base64url is ASCII, so any byte index is a char boundary.
            let (head, tail) = rest.split_at(rest.len().min(room(chunks.len())));
            chunks.push(head.to_string());
            rest = tail;
        }
        let count = chunks.len();
        chunks[0].insert(0, char::from(b'0' + count as u8));
        Ok(chunks)
    }

    /// Rejoins the main cookie and exactly the chunks it counts; `None` when
    /// one is missing or the whole is larger than the cookies can hold.
    pub fn join(main: &str, chunks: &[(usize, &str)]) -> Option<String> {
        let count = match main.as_bytes().first() {
            Some(d @ b'1'..=b'5') => usize::from(d - b'0'),
            _ => return None,
        };
        let mut out = String::with_capacity(count * MAX_COOKIE_BYTES);
        out.push_str(&main[1..]);
        for n in 1..count {
            let (_, v) = chunks.iter().find(|(i, _)| *i == n)?;
            out.push_str(v);
        }
        (out.len() <= MAX_CHUNKS * MAX_COOKIE_BYTES).then_some(out)
    }
}

impl CookieStore {
    /// The record a ticket's cookies hold, if they open.
    fn opened(&self, ticket: &Ticket, now: UnixMillis) -> Option<SessionRecord> {
        let Ticket::Sealed(values) = ticket else {
            return None;
        };
        let main = values.first()?;
        let chunks: Vec<(usize, &str)> = values
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, v)| (i, v.as_str()))
            .collect();
        self.open(&CookieStore::join(main, &chunks)?, now)
    }

    /// A record sealed into the values of its cookies.
    fn ticket(&self, record: &SessionRecord) -> Result<Ticket, UpdateError> {
        self.split(&self.seal(record))
            .map(Ticket::Sealed)
            .map_err(|e| UpdateError::TooLarge {
                size: e.needed,
                max: e.available,
            })
    }
}

/// The cookie store holds nothing: every operation works on what the
/// client sent. Writes are last-writer-wins, and a deleted session's old
/// cookie stays valid until its sealed deadline (`revocable` is false).
impl SessionStore for CookieStore {
    fn carries(&self) -> Carries {
        Carries::Session
    }

    fn revocable(&self) -> bool {
        false
    }

    async fn load(
        &self,
        ticket: &Ticket,
        now_ms: UnixMillis,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        Ok(self.opened(ticket, now_ms).map(Arc::new))
    }

    async fn create(&self, _id: &SessionId, record: &SessionRecord) -> Result<Created, StoreError> {
        Ok(match self.ticket(record) {
            Ok(ticket) => Created::Stored(ticket),
            Err(e) => Created::Refused(e),
        })
    }

    async fn save(
        &self,
        ticket: &Ticket,
        op: &SaveOp<'_>,
    ) -> Result<SaveOutcome<Ticket>, StoreError> {
        let Some(current) = self.opened(ticket, op.now_ms) else {
            return Ok(SaveOutcome::Gone);
        };
        let mut record = match apply(current, &op.change, &op.policy, op.now_ms) {
            Ok(Applied::Saved(r)) => r,
            Ok(Applied::Emptied) => return Ok(SaveOutcome::Emptied),
            Err(e) => return Ok(SaveOutcome::Refused(e)),
        };
        if let Some((_, new_sid)) = &op.cycle_to {
            record.sid = new_sid.clone();
        }
        Ok(match self.ticket(&record) {
            Ok(ticket) => SaveOutcome::Saved {
                id: ticket,
                record: Arc::new(record),
            },
            Err(e) => SaveOutcome::Refused(e),
        })
    }

    /// Nothing to delete on the server: the pipeline expires the cookie.
    async fn delete(&self, ticket: &Ticket) -> Result<bool, StoreError> {
        Ok(matches!(ticket, Ticket::Sealed(_)))
    }

    async fn clear_expired(&self, _now_ms: UnixMillis) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SessionData;

    fn record(now: UnixMillis) -> SessionRecord {
        let mut r = SessionRecord::new("sid".into(), now);
        r.data = SessionData::from_map(serde_json::json!({"user_id": 7}).as_object().unwrap());
        r.expires_ms = now + 60_000;
        r
    }

    fn secret(c: char) -> Secret {
        Secret::new(c.to_string().repeat(32))
    }

    #[test]
    fn sealed_record_opens_and_expires() {
        let s = CookieStore::new(&[secret('a')], "sessionid");
        let sealed = s.seal(&record(1000));
        assert_eq!(s.open(&sealed, 2000), Some(record(1000)));
        assert_eq!(
            s.open(&sealed, 61_000),
            None,
            "expiry is sealed in and enforced"
        );
        assert_ne!(sealed, s.seal(&record(1000)), "a fresh nonce every time");
    }

    #[test]
    fn tampered_or_foreign_values_do_not_open() {
        let s = CookieStore::new(&[secret('a')], "sessionid");
        let sealed = s.seal(&record(0));
        let mut bytes = sealed.clone().into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open(std::str::from_utf8(&bytes).unwrap(), 1), None);
        assert_eq!(
            CookieStore::new(&[secret('b')], "sessionid").open(&sealed, 1),
            None
        );
        assert_eq!(
            CookieStore::new(&[secret('a')], "other").open(&sealed, 1),
            None,
            "bound to the cookie name"
        );
        assert_eq!(s.open("", 1), None);
        assert_eq!(s.open("AQ", 1), None);
        assert_eq!(s.open(&sealed[..sealed.len() - 4], 1), None);
    }

    #[test]
    fn rotation_opens_old_values() {
        let old = CookieStore::new(&[secret('o')], "sessionid");
        let rotated = CookieStore::new(&[secret('n'), secret('o')], "sessionid");
        assert_eq!(rotated.open(&old.seal(&record(0)), 1), Some(record(0)));
        assert_eq!(
            old.open(&rotated.seal(&record(0)), 1),
            None,
            "new values are sealed with the first secret"
        );
    }

    #[test]
    fn large_values_split_into_numbered_chunks_and_rejoin() {
        let s = CookieStore::new(&[secret('a')], "sessionid");
        let mut r = record(0);
        r.data = SessionData::from_map(
            serde_json::json!({"blob": "x".repeat(9000)})
                .as_object()
                .unwrap(),
        );
        let sealed = s.seal(&r);
        let chunks = s.split(&sealed).unwrap();
        assert_eq!(chunks.len(), 3, "{} bytes sealed", sealed.len());
        for (i, c) in chunks.iter().enumerate() {
            assert!(s.chunk_name(i).len() + 1 + c.len() <= MAX_COOKIE_BYTES);
        }
        let numbered: Vec<(usize, &str)> = chunks[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| (i + 1, c.as_str()))
            .rev()
            .collect();
        assert_eq!(
            s.open(&CookieStore::join(&chunks[0], &numbered).unwrap(), 1),
            Some(r)
        );
        assert_eq!(
            CookieStore::join(&chunks[0], &numbered[1..]),
            None,
            "a missing chunk"
        );
        // A smaller session written later counts one cookie: stale chunks are ignored.
        let small = s.split(&s.seal(&record(0))).unwrap();
        assert_eq!(small.len(), 1);
        assert_eq!(
            s.open(&CookieStore::join(&small[0], &numbered).unwrap(), 1),
            Some(record(0))
        );
        let huge = "x".repeat(MAX_CHUNKS * MAX_COOKIE_BYTES);
        assert!(s.split(&huge).is_err());
    }
}
