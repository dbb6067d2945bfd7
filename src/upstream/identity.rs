//! What the upstream learns of the session: a signed JWT (HS256 or EdDSA) or
//! ASCII-only JSON, optionally limited to an allow-list of keys.

use crate::config::{ForwardConfig, ForwardMode, SigningConfig, SigningKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot load signing key {path}: {source}")]
    Key {
        path: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("cannot sign session token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The session data an upstream may see: all of it, or the allowed keys.
pub struct SessionView<'a> {
    pub data: &'a Map<String, Value>,
    pub keys: Option<&'a [String]>,
}

impl Serialize for SessionView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.keys {
            None => self.data.serialize(s),
            Some(keys) => {
                let mut m = s.serialize_map(None)?;
                for k in keys {
                    if let Some(v) = self.data.get(k) {
                        m.serialize_entry(k, v)?;
                    }
                }
                m.end()
            }
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    session: &'a SessionView<'a>,
}

pub struct TokenSigner {
    header: Header,
    key: EncodingKey,
    issuer: String,
    audience: String,
    ttl_s: u64,
}

impl TokenSigner {
    pub fn new(cfg: &SigningConfig) -> Result<Self, IdentityError> {
        let (header, key) = match &cfg.key {
            SigningKey::Hs256(secret) => (
                Header::new(Algorithm::HS256),
                EncodingKey::from_secret(secret.expose()),
            ),
            SigningKey::EdDsa { signing, .. } => {
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(signing.jwk.kid.clone());
                (header, EncodingKey::from_ed_der(&signing.pkcs8))
            }
        };
        Ok(TokenSigner {
            header,
            key,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl_s: cfg.token_ttl.as_secs(),
        })
    }

    pub fn sign(
        &self,
        view: &SessionView<'_>,
        sid: Option<&str>,
        now_s: u64,
    ) -> Result<String, IdentityError> {
        let claims = Claims {
            iss: &self.issuer,
            aud: &self.audience,
            iat: now_s,
            exp: now_s + self.ttl_s,
            sid,
            session: view,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(IdentityError::Sign)
    }
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
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            // DEL is ASCII but not allowed in a header value; serde_json leaves it raw.
            if ch.is_ascii() && ch != '\x7f' {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

pub fn to_ascii_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
    value
        .serialize(&mut ser)
        .expect("serializing JSON values cannot fail");
    String::from_utf8(out).expect("ASCII output")
}

/// A session value as a plain header: strings as they are, anything else as compact JSON.
pub fn plain_header_value(v: &Value) -> Option<http::HeaderValue> {
    match v {
        Value::String(s) => http::HeaderValue::from_str(s).ok(),
        other => http::HeaderValue::try_from(to_ascii_json(other)).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn view_filters_keys() {
        let data = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        let keys = vec!["b".to_string(), "missing".to_string()];
        let view = SessionView {
            data: &data,
            keys: Some(&keys),
        };
        assert_eq!(to_ascii_json(&view), r#"{"b":2}"#);
    }
}
