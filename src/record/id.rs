//! Session ids: 128 bits from the operating system's CSPRNG.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt;

pub const ID_BYTES: usize = 16;
/// Length of an id in unpadded base64url.
pub const ID_B64_LEN: usize = 22;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_BYTES]);

impl SessionId {
    /// A fresh id from the OS CSPRNG. Failure of the OS RNG is not recoverable:
    /// continuing with a weak id would be worse than stopping.
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
        SessionId(bytes)
    }

    pub fn from_bytes(bytes: [u8; ID_BYTES]) -> Self {
        SessionId(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.0
    }

    /// The id as unpadded base64url: how it appears in cookies and store keys.
    /// The id's first eight bytes as a number: ids are random, so this
    /// spreads them evenly over shards or stripes.
    pub fn spread(&self) -> usize {
        u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")) as usize
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Appends the text of `encode` to `out`, without a string of its own.
    pub fn encode_into(&self, out: &mut String) {
        URL_SAFE_NO_PAD.encode_string(self.0, out);
    }

    pub fn decode(text: &str) -> Option<Self> {
        if text.len() != ID_B64_LEN {
            return None;
        }
        let mut bytes = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(ID_BYTES) => Some(SessionId(bytes)),
            _ => None,
        }
    }
}

/// The id is a bearer credential: it is never printed.
impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_round_trip() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_eq!(SessionId::decode(&a.encode()), Some(a));
        assert_eq!(a.encode().len(), ID_B64_LEN);
        let mut appended = String::from("prefix{");
        a.encode_into(&mut appended);
        assert_eq!(appended, format!("prefix{{{}", a.encode()));
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert_eq!(SessionId::decode(""), None);
        assert_eq!(SessionId::decode("not base64 at all!!!!!"), None);
        assert_eq!(SessionId::decode(&"A".repeat(23)), None);
    }

    #[test]
    fn debug_hides_the_id() {
        assert_eq!(
            format!("{:?}", SessionId::generate()),
            "SessionId(<redacted>)"
        );
    }
}
