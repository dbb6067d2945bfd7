//! HMAC-SHA256 keys, shared by the session cookie and the signed session header.

use hmac::Mac;

/// HMAC-SHA256 with its key already absorbed: each MAC clones this state
/// (two SHA-256 midstates, a couple of hundred bytes) instead of hashing the
/// key again. RustCrypto's rather than aws-lc's: for the short inputs of a
/// request (a cookie, a session id, a token) the FFI context copies cost more
/// than the hashing (110 ns against 197 ns for a 26-byte MAC, SHA-NI both).
pub type HmacKey = hmac::Hmac<sha2::Sha256>;

/// A key for HMAC-SHA256; any length is accepted (longer keys are hashed).
pub fn hmac_key(secret: &[u8]) -> HmacKey {
    HmacKey::new_from_slice(secret).expect("HMAC takes keys of any length")
}
