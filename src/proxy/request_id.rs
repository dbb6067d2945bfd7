//! `X-Request-Id`: the client's when it is sane, else a new one.

use crate::upstream::forward::{self, X_REQUEST_ID};
use http::{HeaderMap, HeaderValue};

/// Longest `X-Request-Id` accepted from a client; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 200;

/// The client's `X-Request-Id` when it is sane, or a new one: 32 hex digits
/// from a per-thread generator (an id needs to be unique, not secret, and a
/// syscall per request for it would be waste).
pub(super) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if forward::holds(headers, &X_REQUEST_ID)
        && let Some(v) = headers.get(&X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_LEN
        && v.as_bytes().iter().all(u8::is_ascii_graphic)
    {
        return v.clone();
    }
    let n = next_id();
    let mut out = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(n.to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 15)];
    }
    HeaderValue::from_bytes(&out).expect("hex digits")
}

thread_local! {
    static ID_STATE: std::cell::Cell<(u64, u64)> = std::cell::Cell::new({
        let mut seed = [0u8; 16];
        getrandom::fill(&mut seed).expect("the operating system's random number generator failed");
        (u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) | 1, u64::from_le_bytes(seed[8..].try_into().expect("8 bytes")))
    });
}

/// xorshift128+ twice: 128 bits, seeded per thread from the OS.
/// Whether a request falls in a sampled `share` (0 to 1), drawn from the
/// same per-thread generator.
pub(super) fn sampled(share: f64) -> bool {
    let draw = (next_id() >> 75) as f64 / (1u64 << 53) as f64;
    draw < share
}

fn next_id() -> u128 {
    ID_STATE.with(|state| {
        let (mut a, mut b) = state.get();
        let mut step = || {
            let mut x = a;
            let y = b;
            a = y;
            x ^= x << 23;
            x ^= x >> 17;
            x ^= y ^ (y >> 26);
            b = x;
            x.wrapping_add(y)
        };
        let id = ((step() as u128) << 64) | step() as u128;
        state.set((a, b));
        id
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_lowercase_hex() {
        let ids: Vec<HeaderValue> = (0..64).map(|_| request_id(&HeaderMap::new())).collect();
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            );
        }
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[test]
    fn a_printable_client_request_id_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
