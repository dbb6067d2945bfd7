//! CSRF tokens as Django makes them: a secret of 32 letters and digits,
//! handed out masked (a fresh 32-character mask, then the secret shifted by
//! it, 64 characters) so that no two responses carry the same bytes
//! (BREACH). A session's secret is derived from its sid with a key of the
//! server's, so a token from one session never validates in another and a
//! cycled session gets a new one; a visitor without a session gets a random
//! secret in the cookie (Django's anonymous CSRF cookie), and no session.
//!
//! Hand-written rather than a crate: no maintained crate implements
//! Django's token format, which apps moving from Django already embed;
//! `masking_matches_djangos_algorithm` checks it against Django's own
//! published vectors.

use crate::config::Secret;
use crate::mac::HmacKey;
use hmac::Mac;

pub const SECRET_LEN: usize = 32;
pub const TOKEN_LEN: usize = 2 * SECRET_LEN;
/// Django's `CSRF_ALLOWED_CHARS`: `string.ascii_letters + string.digits`.
const CHARS: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
/// Django's `CSRF_COOKIE_AGE`: 52 weeks.
pub const COOKIE_AGE_S: u64 = 60 * 60 * 24 * 7 * 52;
const KEY_CONTEXT: &[u8] = b"sessiongate csrf v1";

/// A CSRF secret: 32 of `CHARS`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CsrfSecret([u8; SECRET_LEN]);

impl std::fmt::Debug for CsrfSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfSecret(<redacted>)")
    }
}

fn index(c: u8) -> Option<usize> {
    match c {
        b'a'..=b'z' => Some((c - b'a') as usize),
        b'A'..=b'Z' => Some((c - b'A') as usize + 26),
        b'0'..=b'9' => Some((c - b'0') as usize + 52),
        _ => None,
    }
}

impl CsrfSecret {
    /// A new random secret (a visitor without a session).
    pub fn random() -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        getrandom::fill(&mut bytes).expect("the OS random source");
        // 248 = 4 * 62: no bias, redrawing the rare bytes above it.
        for b in bytes.iter_mut() {
            while *b >= 248 {
                let mut one = [0u8; 1];
                getrandom::fill(&mut one).expect("the OS random source");
                *b = one[0];
            }
            *b = CHARS[(*b % 62) as usize];
        }
        CsrfSecret(bytes)
    }

    /// A secret as a cookie holds it: exactly 32 allowed characters.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let bytes: [u8; SECRET_LEN] = text.try_into().ok()?;
        bytes
            .iter()
            .all(|&c| index(c).is_some())
            .then_some(CsrfSecret(bytes))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("CHARS are ASCII")
    }

    /// The secret masked with a fresh random mask: what a page embeds.
    pub fn masked(&self) -> String {
        self.masked_with(&CsrfSecret::random())
    }

    fn masked_with(&self, mask: &CsrfSecret) -> String {
        let mut out = Vec::with_capacity(TOKEN_LEN);
        out.extend_from_slice(&mask.0);
        for (s, m) in self.0.iter().zip(&mask.0) {
            let (s, m) = (index(*s).expect("valid"), index(*m).expect("valid"));
            out.push(CHARS[(s + m) % 62]);
        }
        String::from_utf8(out).expect("CHARS are ASCII")
    }

    /// Compares in constant time.
    pub fn matches(&self, other: &CsrfSecret) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Why a token a request carries is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    Length,
    Characters,
}

/// The secret a request's token (masked, or the bare secret as the cookie
/// holds it) stands for.
pub fn read_token(token: &[u8]) -> Result<CsrfSecret, TokenFormat> {
    if token.len() != TOKEN_LEN && token.len() != SECRET_LEN {
        return Err(TokenFormat::Length);
    }
    if token.iter().any(|&c| index(c).is_none()) {
        return Err(TokenFormat::Characters);
    }
    if token.len() == SECRET_LEN {
        return Ok(CsrfSecret(token.try_into().expect("length checked")));
    }
    let (mask, cipher) = token.split_at(SECRET_LEN);
    let mut secret = [0u8; SECRET_LEN];
    for (i, (c, m)) in cipher.iter().zip(mask).enumerate() {
        let (c, m) = (index(*c).expect("checked"), index(*m).expect("checked"));
        secret[i] = CHARS[(c + 62 - m) % 62];
    }
    Ok(CsrfSecret(secret))
}

/// The keys sessions' secrets are derived with: the first derives, every
/// one is accepted (secret rotation).
pub struct CsrfKeys(Vec<HmacKey>);

impl CsrfKeys {
    pub fn new(secrets: &[Secret]) -> Self {
        CsrfKeys(
            secrets
                .iter()
                .map(|s| crate::session::cookie::derive_key(s, KEY_CONTEXT))
                .collect(),
        )
    }

    fn derive(key: &HmacKey, sid: &str) -> CsrfSecret {
        let digest = key
            .clone()
            .chain_update(sid.as_bytes())
            .finalize()
            .into_bytes();
        let mut out = [0u8; SECRET_LEN];
        for (o, d) in out.iter_mut().zip(digest.iter()) {
            *o = CHARS[(*d % 62) as usize];
        }
        CsrfSecret(out)
    }

    /// The secret of the session with this sid.
    pub fn for_session(&self, sid: &str) -> CsrfSecret {
        Self::derive(&self.0[0], sid)
    }

    /// Whether `secret` is the session's under any key.
    pub fn is_sessions(&self, sid: &str, secret: &CsrfSecret) -> bool {
        self.0
            .iter()
            .fold(false, |ok, key| ok | Self::derive(key, sid).matches(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_matches_djangos_algorithm() {
        // Django's tests/csrf_tests/tests.py, test_unmask_cipher_token:
        // (secret, masked token).
        let test_secret = "lcccccccX2kcccccccY2jcccccccssIC";
        let cases = [
            (
                test_secret,
                "1bcdefghij2bcdefghij3bcdefghij4bcdefghij5bcdefghij6bcdefghijABCD".to_string(),
            ),
            (
                test_secret,
                "2JgchWvM1tpxT2lfz9aydoXW9yT1DN3NdLiejYxOOlzzV4nhBbYqmqZYbAV3V5Bf".to_string(),
            ),
            (
                &"a".repeat(32),
                "vFioG3XOLyGyGsPRFyB9iYUs341ufzIE".repeat(2),
            ),
            (&"a".repeat(32), "a".repeat(64)),
            (&"a".repeat(32), "b".repeat(64)),
            (&"b".repeat(32), "a".repeat(32) + &"b".repeat(32)),
            (&"b".repeat(32), "b".repeat(32) + &"c".repeat(32)),
            (&"c".repeat(32), "a".repeat(32) + &"c".repeat(32)),
        ];
        for (secret, masked) in &cases {
            let s = CsrfSecret::parse(secret.as_bytes()).unwrap();
            assert_eq!(read_token(masked.as_bytes()).unwrap(), s, "{masked}");
            let mask = CsrfSecret::parse(&masked.as_bytes()[..SECRET_LEN]).unwrap();
            assert_eq!(
                &s.masked_with(&mask),
                masked,
                "masking is unmasking's inverse"
            );
        }
        // test_check_token_format_invalid.
        assert_eq!(
            read_token("*".repeat(64).as_bytes()),
            Err(TokenFormat::Characters)
        );
        assert_eq!(
            read_token("a".repeat(16).as_bytes()),
            Err(TokenFormat::Length)
        );
    }

    #[test]
    fn every_mask_unmasks_to_the_secret() {
        let s = CsrfSecret::random();
        let a = s.masked();
        let b = s.masked();
        assert_ne!(a, b, "a fresh mask per token");
        assert_eq!(read_token(a.as_bytes()).unwrap(), s);
        assert_eq!(read_token(s.as_str().as_bytes()).unwrap(), s);
        assert_eq!(read_token(b"short"), Err(TokenFormat::Length));
        let bad = format!("{}!", &a[..63]);
        assert_eq!(read_token(bad.as_bytes()), Err(TokenFormat::Characters));
    }

    #[test]
    fn session_secrets_are_bound_to_the_sid_and_every_key() {
        let old = Secret::new("old-secret-0123456789abcdef-0123456789");
        let new = Secret::new("new-secret-0123456789abcdef-0123456789");
        let keys = CsrfKeys::new(std::slice::from_ref(&old));
        let a = keys.for_session("sid-a");
        assert_ne!(a, keys.for_session("sid-b"));
        assert!(keys.is_sessions("sid-a", &a));
        assert!(!keys.is_sessions("sid-b", &a));
        let rotated = CsrfKeys::new(&[new, old]);
        assert!(
            rotated.is_sessions("sid-a", &a),
            "the old key still verifies"
        );
        assert_ne!(rotated.for_session("sid-a"), a, "the new key derives");
    }
}
