//! What the upstream learns of the session: a signed JWT (HS256 or EdDSA) or
//! ASCII-only JSON, optionally limited to an allow-list of keys.

use super::recent_tokens::{
    DEFAULT_RECENT_TOKEN_MAX_CLAIMS_BYTES, DEFAULT_RECENT_TOKEN_SLOTS, RecentTokens,
};
use crate::config::{ForwardConfig, ForwardMode, SigningConfig, SigningKey};
use crate::mac::{HmacKey, hmac_key};
use crate::record::SessionData;
use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::Mac;
use http::HeaderValue;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use std::io;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the Ed25519 signing key (kid {kid}) is not usable: {reason}")]
    Key { kid: String, reason: String },
}

/// The session data an upstream may see: all of it, or the allowed keys.
pub struct SessionView<'a> {
    pub data: &'a SessionData,
    pub keys: Option<&'a [String]>,
}

impl Serialize for SessionView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.keys {
            // The stored text goes out as it is: no map is built or walked.
            None => self.data.serialize(s),
            Some(keys) => {
                let fields = self.data.fields();
                let mut m = s.serialize_map(None)?;
                for k in keys {
                    if let Some(v) = fields.get(k) {
                        m.serialize_entry(k, v)?;
                    }
                }
                m.end()
            }
        }
    }
}

/// The variable claims' names, punctuation and two timestamps of up to 20
/// digits: `"iat":,"exp":,"sid":"","session":}`.
const CLAIMS_TAIL_FRAME_BYTES: usize = 72;

/// The key a token is signed with, prepared once: signing then costs no
/// key parsing or HMAC key setup per request.
enum SignatureKey {
    /// The HMAC state after the key and the tokens' constant start.
    Hs256(Box<HmacKey>),
    EdDsa(Ed25519KeyPair),
}

/// Signs session tokens as JWS compact serialization (RFC 7515):
/// base64url(header) "." base64url(claims) "." base64url(signature).
pub struct TokenSigner {
    /// What every token starts with: the encoded protected header, the dot,
    /// and the encoded `{"iss":..,"aud":..,` (padded with JSON whitespace to
    /// whole base64 groups, so the rest of the claims encodes on its own).
    prefix: Vec<u8>,
    key: SignatureKey,
    ttl_s: u64,
    /// A request without a session gets a token that depends only on the
    /// second it is signed in, so every such request in that second shares
    /// one: anonymous traffic costs no signing.
    anonymous: Mutex<Option<(u64, HeaderValue)>>,
    /// A session's token in the second it was signed, for its next reads.
    recent: RecentTokens,
}

impl TokenSigner {
    pub fn new(cfg: &SigningConfig) -> Result<Self, IdentityError> {
        let header = match &cfg.key {
            SigningKey::Hs256(_) => serde_json::json!({"typ": "JWT", "alg": "HS256"}),
            SigningKey::EdDsa { signing, .. } => {
                serde_json::json!({"typ": "JWT", "alg": "EdDSA", "kid": signing.jwk.kid})
            }
        };
        let mut claims_start = format!(
            "{{\"iss\":{},\"aud\":{},",
            serde_json::Value::from(cfg.issuer.as_str()),
            serde_json::Value::from(cfg.audience.as_str())
        );
        while claims_start.len() % 3 != 0 {
            claims_start.push(' ');
        }
        let mut prefix = URL_SAFE_NO_PAD.encode(header.to_string()).into_bytes();
        prefix.push(b'.');
        push_base64(&mut prefix, claims_start.as_bytes());
        let key =
            match &cfg.key {
                SigningKey::Hs256(secret) => {
                    SignatureKey::Hs256(Box::new(hmac_key(secret.expose()).chain_update(&prefix)))
                }
                SigningKey::EdDsa { signing, .. } => SignatureKey::EdDsa(
                    Ed25519KeyPair::from_pkcs8(&signing.pkcs8).map_err(|e| IdentityError::Key {
                        kid: signing.jwk.kid.clone(),
                        reason: e.to_string(),
                    })?,
                ),
            };
        Ok(TokenSigner {
            prefix,
            key,
            ttl_s: cfg.token_ttl.as_secs(),
            anonymous: Mutex::new(None),
            recent: RecentTokens::new(
                DEFAULT_RECENT_TOKEN_SLOTS,
                DEFAULT_RECENT_TOKEN_MAX_CLAIMS_BYTES,
            ),
        })
    }

    /// The token as a header value; one per second for requests without a session.
    /// The token for the upstream; `csrf`, on routes with `csrf:`, is the
    /// masked CSRF token (claim `csrf`), fresh for every request.
    pub fn header_value(
        &self,
        view: &SessionView<'_>,
        sid: Option<&str>,
        csrf: Option<&str>,
        now_s: u64,
    ) -> HeaderValue {
        let anonymous = sid.is_none() && csrf.is_none() && view.data.is_empty();
        if anonymous
            && let Some((at, token)) = &*self.anonymous.lock().unwrap_or_else(|e| e.into_inner())
            && *at == now_s
        {
            return token.clone();
        }
        let claims = self.claims(view, sid, csrf, now_s);
        // A CSRF claim is new in every request: such a token is never reused.
        let kept_by = sid.filter(|_| csrf.is_none());
        if let Some(sid) = kept_by
            && let Some(token) = self.recent.get(sid, &claims)
        {
            return token;
        }
        let token = Bytes::from(self.sign_claims(&claims));
        // SAFETY: a token is base64url characters and dots, all of them
        // visible ASCII, which a header value may hold; the check would read
        // every byte of the token again. Debug builds check it.
        let token = unsafe { HeaderValue::from_maybe_shared_unchecked(token) };
        if anonymous {
            *self.anonymous.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((now_s, token.clone()));
        } else if let Some(sid) = kept_by {
            self.recent.put(sid, claims, token.clone());
        }
        token
    }

    pub fn sign(&self, view: &SessionView<'_>, sid: Option<&str>, now_s: u64) -> String {
        String::from_utf8(self.sign_claims(&self.claims(view, sid, None, now_s)))
            .expect("a JWT is base64url and dots")
    }

    /// The claims after the constant start, as JSON text.
    fn claims(
        &self,
        view: &SessionView<'_>,
        sid: Option<&str>,
        csrf: Option<&str>,
        now_s: u64,
    ) -> Vec<u8> {
        // Sized up front: grown from empty, the buffer was reallocated
        // several times per token.
        let mut json = Vec::with_capacity(
            CLAIMS_TAIL_FRAME_BYTES + sid.map_or(0, str::len) + view.data.as_str().len(),
        );
        json.extend_from_slice(b"\"iat\":");
        serde_json::to_writer(&mut json, &now_s).expect("writing to a Vec cannot fail");
        json.extend_from_slice(b",\"exp\":");
        serde_json::to_writer(&mut json, &(now_s + self.ttl_s))
            .expect("writing to a Vec cannot fail");
        if let Some(sid) = sid {
            json.extend_from_slice(b",\"sid\":");
            serde_json::to_writer(&mut json, sid).expect("writing to a Vec cannot fail");
        }
        if let Some(csrf) = csrf {
            json.extend_from_slice(b",\"csrf\":");
            serde_json::to_writer(&mut json, csrf).expect("writing to a Vec cannot fail");
        }
        json.extend_from_slice(b",\"session\":");
        serde_json::to_writer(&mut json, view).expect("serializing JSON values cannot fail");
        json.push(b'}');
        json
    }

    /// The token's bytes: built as bytes, a token is not checked as UTF-8
    /// piece by piece on its way into a header value.
    fn sign_claims(&self, json: &[u8]) -> Vec<u8> {
        // 64 bytes of signature are 86 characters of base64url.
        let mut token = Vec::with_capacity(self.prefix.len() + json.len() * 4 / 3 + 92);
        token.extend_from_slice(&self.prefix);
        push_base64(&mut token, json);
        match &self.key {
            SignatureKey::Hs256(started) => {
                let tag = started
                    .as_ref()
                    .clone()
                    .chain_update(&token[self.prefix.len()..])
                    .finalize();
                push_part(&mut token, &tag.into_bytes());
            }
            SignatureKey::EdDsa(pair) => {
                let signature = pair.sign(&token);
                push_part(&mut token, signature.as_ref());
            }
        }
        token
    }
}

fn push_part(token: &mut Vec<u8>, bytes: &[u8]) {
    token.push(b'.');
    push_base64(token, bytes);
}

fn push_base64(token: &mut Vec<u8>, bytes: &[u8]) {
    let start = token.len();
    let len = base64::encoded_len(bytes.len(), false).expect("a token is far below usize::MAX");
    token.resize(start + len, 0);
    URL_SAFE_NO_PAD
        .encode_slice(bytes, &mut token[start..])
        .expect("sized for the encoding");
}

/// How one route forwards the session.
pub enum Forwarding {
    Signed(Box<TokenSigner>),
    Json,
    None,
}

impl Forwarding {
    pub fn new(cfg: &ForwardConfig) -> Result<Self, IdentityError> {
        Ok(match &cfg.mode {
            ForwardMode::Signed(s) => Forwarding::Signed(Box::new(TokenSigner::new(s)?)),
            ForwardMode::Json => Forwarding::Json,
            ForwardMode::None => Forwarding::None,
        })
    }
}

/// serde_json's compact format, with every non-ASCII character escaped as
/// `\uXXXX` (surrogate pairs beyond the BMP) so the result is a valid header value.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_ascii(w, fragment)
    }

    /// Stored session data is written as it is; in valid JSON a non-ASCII
    /// character or DEL can only stand inside a string, where an escape means
    /// the same character.
    fn write_raw_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_ascii(w, fragment)
    }
}

fn write_ascii<W: ?Sized + io::Write>(w: &mut W, text: &str) -> io::Result<()> {
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        // DEL is ASCII but not allowed in a header value; serde_json leaves it raw.
        if ch.is_ascii() && ch != '\x7f' {
            continue;
        }
        w.write_all(&text.as_bytes()[start..i])?;
        let mut units = [0u16; 2];
        for unit in ch.encode_utf16(&mut units) {
            write!(w, "\\u{unit:04x}")?;
        }
        start = i + ch.len_utf8();
    }
    w.write_all(&text.as_bytes()[start..])
}

pub fn to_ascii_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing JSON values cannot fail");
    String::from_utf8(out).expect("ASCII output")
}

/// A session value as a plain header: strings as they are, anything else as its JSON.
pub fn plain_header_value(v: &RawValue) -> Option<http::HeaderValue> {
    if v.get().starts_with('"') {
        let s: String = serde_json::from_str(v.get()).ok()?;
        http::HeaderValue::from_str(&s).ok()
    } else {
        http::HeaderValue::try_from(to_ascii_json(v)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn json_is_ascii_and_round_trips() {
        let v = json!({"name": "Zoë 🦀", "n": [1, "x\"y"], "del": "a\u{7f}b"});
        let s = to_ascii_json(&v);
        assert!(s.is_ascii(), "{s}");
        assert!(
            s.contains("\\u00eb") && s.contains("\\ud83e\\udd80") && s.contains("\\u007f"),
            "{s}"
        );
        assert!(http::HeaderValue::try_from(s.clone()).is_ok());
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }

    fn signing_config(key: SigningKey) -> SigningConfig {
        SigningConfig {
            key,
            issuer: "sessiongate".into(),
            audience: "app".into(),
            token_ttl: std::time::Duration::from_secs(60),
        }
    }

    const HS256_SECRET: &str = "upstream-secret-0123456789abcdef-012345";

    fn hs256_signer() -> (&'static str, TokenSigner) {
        let key = SigningKey::Hs256(crate::config::Secret::new(HS256_SECRET));
        (
            HS256_SECRET,
            TokenSigner::new(&signing_config(key)).unwrap(),
        )
    }

    fn verify(token: &str, key: &jsonwebtoken::DecodingKey, alg: jsonwebtoken::Algorithm) -> Value {
        let mut v = jsonwebtoken::Validation::new(alg);
        v.set_audience(&["app"]);
        v.set_issuer(&["sessiongate"]);
        // The token is dated 2023: checked against its own clock below.
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(token, key, &v).expect("token verifies");
        assert_eq!(data.header.typ.as_deref(), Some("JWT"));
        data.claims
    }

    #[test]
    fn hs256_tokens_verify_with_a_jwt_library() {
        let (secret, signer) = hs256_signer();
        let data = SessionData::from_map(json!({"user": "Zoë", "n": 1}).as_object().unwrap());
        let view = SessionView {
            data: &data,
            keys: None,
        };
        let token = signer.sign(&view, Some("sid-1"), 1_700_000_000);
        let claims = verify(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            jsonwebtoken::Algorithm::HS256,
        );
        assert_eq!(
            claims,
            json!({"iss": "sessiongate", "aud": "app", "iat": 1_700_000_000u64,
                   "exp": 1_700_000_060u64, "sid": "sid-1", "session": {"user": "Zoë", "n": 1}})
        );
        let tampered = token.replacen('.', ".e", 1);
        assert!(
            jsonwebtoken::decode::<Value>(
                &tampered,
                &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
                &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256)
            )
            .is_err()
        );
    }

    #[test]
    fn tokens_verify_whatever_the_length_of_issuer_and_audience() {
        let secret = "upstream-secret-0123456789abcdef-012345";
        let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
        let data = SessionData::from_map(json!({"user": "Zoë"}).as_object().unwrap());
        let view = SessionView {
            data: &data,
            keys: None,
        };
        // Every residue of the claims' constant start modulo a base64 group,
        // escapes included, and a start longer than one SHA-256 block.
        for issuer in ["i", "is", "iss", "q\"uote", "é", &"long".repeat(40)] {
            for audience in ["a", "au", "aud"] {
                let signer = TokenSigner::new(&SigningConfig {
                    issuer: issuer.into(),
                    audience: audience.into(),
                    ..signing_config(SigningKey::Hs256(crate::config::Secret::new(secret)))
                })
                .unwrap();
                let token = signer.sign(&view, Some("sid-1"), 1_700_000_000);
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
                v.set_audience(&[audience]);
                v.set_issuer(&[issuer]);
                v.validate_exp = false;
                let claims = jsonwebtoken::decode::<Value>(&token, &key, &v)
                    .unwrap_or_else(|e| panic!("{issuer}/{audience}: {e}"))
                    .claims;
                assert_eq!(
                    claims,
                    json!({"iss": issuer, "aud": audience, "iat": 1_700_000_000u64,
                           "exp": 1_700_000_060u64, "sid": "sid-1", "session": {"user": "Zoë"}})
                );
            }
        }
    }

    #[test]
    fn requests_without_a_session_share_one_token_per_second() {
        let (secret, signer) = hs256_signer();
        let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
        let anonymous = SessionView {
            data: SessionData::empty(),
            keys: None,
        };
        let first = signer.header_value(&anonymous, None, None, 1_700_000_000);
        assert_eq!(
            signer.header_value(&anonymous, None, None, 1_700_000_000),
            first
        );
        let next = signer.header_value(&anonymous, None, None, 1_700_000_001);
        assert_ne!(next, first);
        let claims = verify(next.to_str().unwrap(), &key, jsonwebtoken::Algorithm::HS256);
        assert_eq!(claims["iat"], 1_700_000_001u64);
        assert_eq!(claims["session"], json!({}));
        assert!(claims.get("sid").is_none());

        // A session, even an empty one, is never served the shared token.
        let with_sid = signer.header_value(&anonymous, Some("sid-1"), None, 1_700_000_001);
        assert_ne!(with_sid, next);
        let claims = verify(
            with_sid.to_str().unwrap(),
            &key,
            jsonwebtoken::Algorithm::HS256,
        );
        assert_eq!(claims["sid"], "sid-1");
        let data = SessionData::from_map(json!({"user": "ann"}).as_object().unwrap());
        let view = SessionView {
            data: &data,
            keys: None,
        };
        let claims = verify(
            signer
                .header_value(&view, None, None, 1_700_000_001)
                .to_str()
                .unwrap(),
            &key,
            jsonwebtoken::Algorithm::HS256,
        );
        assert_eq!(claims["session"], json!({"user": "ann"}));
    }

    #[test]
    fn a_session_read_again_in_the_same_second_reuses_its_token_only_while_its_claims_match() {
        let (secret, signer) = hs256_signer();
        let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
        let claims_of = |token: &HeaderValue| {
            verify(
                token.to_str().unwrap(),
                &key,
                jsonwebtoken::Algorithm::HS256,
            )
        };
        let ann = SessionData::from_map(json!({"user": "ann", "n": 1}).as_object().unwrap());
        let all = SessionView {
            data: &ann,
            keys: None,
        };
        let first = signer.header_value(&all, Some("sid-1"), None, 1_700_000_000);
        let again = signer.header_value(&all, Some("sid-1"), None, 1_700_000_000);
        assert_eq!(again, first);
        assert_eq!(
            first.to_str().unwrap(),
            signer.sign(&all, Some("sid-1"), 1_700_000_000)
        );

        // Anything in the claims that differs is signed anew: the data, the
        // keys a route lets through, the session id, the second, a CSRF token.
        let changed = SessionData::from_map(json!({"user": "ann", "n": 2}).as_object().unwrap());
        let changed = signer.header_value(
            &SessionView {
                data: &changed,
                keys: None,
            },
            Some("sid-1"),
            None,
            1_700_000_000,
        );
        assert_eq!(
            claims_of(&changed)["session"],
            json!({"user": "ann", "n": 2})
        );
        let keys = vec!["user".to_string()];
        let narrowed = SessionView {
            data: &ann,
            keys: Some(&keys),
        };
        let narrowed = signer.header_value(&narrowed, Some("sid-1"), None, 1_700_000_000);
        assert_eq!(claims_of(&narrowed)["session"], json!({"user": "ann"}));
        let other = signer.header_value(&all, Some("sid-2"), None, 1_700_000_000);
        assert_eq!(claims_of(&other)["sid"], "sid-2");
        let later = signer.header_value(&all, Some("sid-1"), None, 1_700_000_001);
        assert_eq!(claims_of(&later)["iat"], 1_700_000_001u64);
        let with_csrf = signer.header_value(&all, Some("sid-1"), Some("c1"), 1_700_000_001);
        assert_eq!(claims_of(&with_csrf)["csrf"], "c1");
        let next_csrf = signer.header_value(&all, Some("sid-1"), Some("c2"), 1_700_000_001);
        assert_eq!(claims_of(&next_csrf)["csrf"], "c2");
        assert_eq!(
            claims_of(&signer.header_value(&all, Some("sid-1"), None, 1_700_000_001))["session"],
            json!({"user": "ann", "n": 1})
        );
    }

    #[test]
    fn eddsa_tokens_carry_the_kid_and_verify_with_the_public_key() {
        let dir = std::env::temp_dir().join(format!("sg-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public, kid) = crate::keys::ed25519::generate();
        std::fs::write(dir.join("k.pem"), private).unwrap();
        let pair = crate::keys::ed25519::load_private(&dir.join("k.pem")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let signer = TokenSigner::new(&signing_config(SigningKey::EdDsa {
            published: vec![pair.jwk.clone()],
            signing: pair,
        }))
        .unwrap();
        let data = SessionData::from_map(json!({"user": 7}).as_object().unwrap());
        let token = signer.sign(
            &SessionView {
                data: &data,
                keys: None,
            },
            None,
            1_700_000_000,
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
        let key = jsonwebtoken::DecodingKey::from_ed_pem(public.as_bytes()).unwrap();
        let claims = verify(&token, &key, jsonwebtoken::Algorithm::EdDSA);
        assert_eq!(claims["session"], json!({"user": 7}));
        assert!(claims.get("sid").is_none());
    }

    #[test]
    fn stored_data_goes_out_as_ascii_json() {
        let data = SessionData::from_text(
            "{\"name\":\"Zoë 🦀\",\"del\":\"a\x7fb\",\"raw\":\"\\u00e9\"}".into(),
        )
        .unwrap();
        let s = to_ascii_json(&SessionView {
            data: &data,
            keys: None,
        });
        assert!(s.is_ascii() && !s.contains('\x7f'), "{s}");
        assert!(http::HeaderValue::try_from(s.clone()).is_ok());
        assert_eq!(
            serde_json::from_str::<Value>(&s).unwrap(),
            json!({"name": "Zoë 🦀", "del": "a\u{7f}b", "raw": "é"})
        );
    }

    #[test]
    fn plain_header_values_are_strings_unquoted_and_json_otherwise() {
        let data =
            SessionData::from_text(r#"{"s":"ann","n":[1,"é"],"ctl":"a\nb"}"#.into()).unwrap();
        let f = data.fields();
        assert_eq!(plain_header_value(f.get("s").unwrap()).unwrap(), "ann");
        assert_eq!(
            plain_header_value(f.get("n").unwrap()).unwrap(),
            r#"[1,"\u00e9"]"#
        );
        assert!(plain_header_value(f.get("ctl").unwrap()).is_none());
    }

    #[test]
    fn view_filters_keys() {
        let data = SessionData::from_map(json!({"a": 1, "b": 2}).as_object().unwrap());
        let keys = vec!["b".to_string(), "missing".to_string()];
        let view = SessionView {
            data: &data,
            keys: Some(&keys),
        };
        assert_eq!(to_ascii_json(&view), r#"{"b":2}"#);
    }
}
