//! The session cookie: its value (the id plus a MAC), reading it from request
//! `Cookie` headers, and building `Set-Cookie`.

use crate::config::{CookieConfig, SameSite, Secret};
use crate::mac::{HmacKey, hmac_key};
use crate::record::{ID_B64_LEN, SessionId};
use crate::record::{Policy, SessionRecord, UnixMillis};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use http::{HeaderMap, HeaderValue, header};

/// Bytes of MAC kept in the cookie (HMAC-SHA256 truncated to 128 bits).
const MAC_BYTES: usize = 16;
const MAC_B64_LEN: usize = 22;
const COOKIE_MAC_CONTEXT: &[u8] = b"sessiongate/v1/cookie-mac";
const SID_CONTEXT: &[u8] = b"sessiongate/v1/sid";

/// Derives a purpose-specific key from a configured secret, once at start.
pub fn derive_key(secret: &Secret, context: &[u8]) -> HmacKey {
    let sub = hmac_key(secret.expose())
        .chain_update(context)
        .finalize()
        .into_bytes();
    hmac_key(&sub)
}

/// The length of a cookie value, `<id>.<mac>`.
const VALUE_LEN: usize = ID_B64_LEN + 1 + MAC_B64_LEN;

/// A cookie value's MAC, and the value as sent: base64url without padding
/// decodes only from its canonical text (no stray trailing bits), so a
/// value whose MAC verified under the signing secret is, byte for byte,
/// the one `encode` gives, and a save renews it without encoding again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieMac {
    mac: [u8; MAC_BYTES],
    value: [u8; VALUE_LEN],
}

/// Never printed: with the id, it is the cookie.
impl std::fmt::Debug for CookieMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieMac(..)")
    }
}

pub struct CookieCodec {
    cfg: CookieConfig,
    /// The first key signs; all of them verify.
    mac_keys: Vec<HmacKey>,
    sid_key: HmacKey,
    /// What follows `name=value` in every `Set-Cookie`, up to `Max-Age`:
    /// with `HttpOnly` as configured, and without it (cookies scripts read).
    attributes: [String; 2],
}

impl CookieCodec {
    pub fn new(cfg: CookieConfig, secrets: &[Secret]) -> Self {
        assert!(!secrets.is_empty(), "config validation guarantees a secret");
        CookieCodec {
            mac_keys: secrets
                .iter()
                .map(|s| derive_key(s, COOKIE_MAC_CONTEXT))
                .collect(),
            sid_key: derive_key(&secrets[0], SID_CONTEXT),
            attributes: [
                Self::attributes(&cfg, cfg.http_only),
                Self::attributes(&cfg, false),
            ],
            cfg,
        }
    }

    /// Written once by the cookie crate, so that its rules (the attributes'
    /// order, `Secure` with `SameSite=None`, a domain's leading dot) hold.
    fn attributes(cfg: &CookieConfig, http_only: bool) -> String {
        Self::builder(cfg, "x", "", http_only).build().to_string()["x=".len()..].to_string()
    }

    /// The cookie crate's builder with the configured attributes.
    fn builder<'c>(
        cfg: &'c CookieConfig,
        name: &'c str,
        value: &'c str,
        http_only: bool,
    ) -> cookie::CookieBuilder<'c> {
        let c = cookie::Cookie::build((name, value))
            .path(cfg.path.as_str())
            .secure(cfg.secure)
            .http_only(http_only)
            .same_site(match cfg.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        match &cfg.domain {
            Some(domain) => c.domain(domain.as_str()),
            None => c,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The name of numbered cookie `i`: `NAME`, then `NAME.1`, `NAME.2`, ...
    pub fn chunk_name(&self, i: usize) -> String {
        if i == 0 {
            self.cfg.name.clone()
        } else {
            format!("{}.{i}", self.cfg.name)
        }
    }

    fn mac(&self, key: &HmacKey, id: &SessionId) -> [u8; 32] {
        // The cookie name is bound in, so a value cannot be replayed under another cookie.
        key.clone()
            .chain_update(self.cfg.name.as_bytes())
            .chain_update([0])
            .chain_update(id.as_bytes())
            .finalize()
            .into_bytes()
            .into()
    }

    /// The cookie value for an id: `<id>.<mac>`, both unpadded base64url.
    pub fn encode(&self, id: &SessionId) -> String {
        let tag = self.mac(&self.mac_keys[0], id);
        Self::value(id, &tag[..MAC_BYTES])
    }

    /// The value `encode` gives for the id of a cookie whose MAC `signed`
    /// verified under the signing secret: the value the request came with,
    /// which a save renews without computing or encoding its MAC again.
    pub fn encode_signed(signed: &CookieMac) -> &str {
        std::str::from_utf8(&signed.value).expect("a parsed value is base64url and a dot")
    }

    fn value(id: &SessionId, mac: &[u8]) -> String {
        let mut out = String::with_capacity(VALUE_LEN);
        id.encode_into(&mut out);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(mac, &mut out);
        out
    }

    /// The id in a cookie value, if its MAC verifies under any configured secret.
    pub fn decode(&self, value: &str) -> Option<SessionId> {
        let (id, mac) = Self::parse(value)?;
        self.verify(&id, &mac).then_some(id)
    }

    /// The id and MAC of a well-formed value, not yet checked: nothing may
    /// be done with the id but start fetching its session (see `verify`).
    pub fn parse(value: &str) -> Option<(SessionId, CookieMac)> {
        let sent: [u8; VALUE_LEN] = value.as_bytes().try_into().ok()?;
        let (id_text, mac_text) = value.split_once('.')?;
        if mac_text.len() != MAC_B64_LEN {
            return None;
        }
        let id = SessionId::decode(id_text)?;
        let mut mac = [0u8; MAC_BYTES];
        if URL_SAFE_NO_PAD.decode_slice(mac_text, &mut mac).ok()? != MAC_BYTES {
            return None;
        }
        Some((id, CookieMac { mac, value: sent }))
    }

    /// Whether the MAC is this id's under one of the configured secrets.
    pub fn verify(&self, id: &SessionId, mac: &CookieMac) -> bool {
        self.verifying_secret(id, mac).is_some()
    }

    /// Which configured secret the MAC is this id's under: 0 is the one
    /// that signs.
    pub fn verifying_secret(&self, id: &SessionId, mac: &CookieMac) -> Option<usize> {
        self.mac_keys
            .iter()
            .position(|k| constant_time_eq(&self.mac(k, id)[..MAC_BYTES], &mac.mac))
    }

    /// The stable, non-secret handle of a session id, sent to upstreams as `sid`.
    pub fn sid(&self, id: &SessionId) -> String {
        let tag = self
            .sid_key
            .clone()
            .chain_update(id.as_bytes())
            .finalize()
            .into_bytes();
        URL_SAFE_NO_PAD.encode(&tag[..16])
    }

    /// `Set-Cookie` for a saved session.
    pub fn set_cookie(
        &self,
        value: &str,
        record: &SessionRecord,
        policy: &Policy,
        now: UnixMillis,
    ) -> HeaderValue {
        self.set_cookie_named(&self.cfg.name, value, record, policy, now)
    }

    /// `Set-Cookie` under another name with the session cookie's attributes
    /// (the cookie store's numbered chunks).
    pub fn set_cookie_named(
        &self,
        name: &str,
        value: &str,
        record: &SessionRecord,
        policy: &Policy,
        now: UnixMillis,
    ) -> HeaderValue {
        let lifetime = (!record.browser_session(policy)).then(|| record.seconds_left(now));
        self.build(name, value, lifetime, now)
    }

    /// `Set-Cookie` that makes the browser drop the cookie.
    pub fn removal(&self) -> HeaderValue {
        self.removal_named(&self.cfg.name)
    }

    pub fn removal_named(&self, name: &str) -> HeaderValue {
        self.build(name, "", Some(0), 0)
    }

    fn build(
        &self,
        name: &str,
        value: &str,
        max_age_s: Option<u64>,
        now: UnixMillis,
    ) -> HeaderValue {
        self.build_with(name, value, max_age_s, now, self.cfg.http_only)
    }

    /// `Set-Cookie` for a cookie the page's JavaScript reads (the CSRF
    /// token, as Django's `CSRF_COOKIE_HTTPONLY = False`), with the session
    /// cookie's path, domain, `Secure` and `SameSite`.
    pub fn script_readable(
        &self,
        name: &str,
        value: &str,
        max_age_s: u64,
        now: UnixMillis,
    ) -> HeaderValue {
        self.build_with(name, value, Some(max_age_s), now, false)
    }

    fn build_with(
        &self,
        name: &str,
        value: &str,
        max_age_s: Option<u64>,
        now: UnixMillis,
        http_only: bool,
    ) -> HeaderValue {
        // The attributes are written once at start, and the date by
        // httpdate: built through the cookie crate each time, a Set-Cookie
        // cost 4,900 instructions (its date format is interpreted), a sixth
        // of what a write adds to a read; this way, 1,400 (callgrind).
        // `set_cookie_matches_the_cookie_crate` checks the two agree.
        let attributes = &self.attributes[usize::from(!http_only)];
        let mut out = String::with_capacity(name.len() + value.len() + attributes.len() + 64);
        out.push_str(name);
        out.push('=');
        out.push_str(value);
        out.push_str(attributes);
        if let Some(secs) = max_age_s {
            let expires_s = if secs == 0 {
                0
            } else {
                (now / 1000).saturating_add(secs)
            };
            // The cookie crate's bounds: Max-Age as an i64, Expires at most
            // the last second of 9999 (httpdate refuses later ones).
            let max_age = secs.min(i64::MAX as u64);
            let expires = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(expires_s.min(253_402_300_799));
            use std::fmt::Write;
            let _ = write!(
                out,
                "; Max-Age={max_age}; Expires={}",
                httpdate::HttpDate::from(expires)
            );
        }
        HeaderValue::try_from(out).expect("cookie attributes were validated at startup")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie values a request carries (most specific first, as
/// browsers send them), and the `Cookie` header to forward without them.
pub struct RequestCookies<'a> {
    pub session_values: Vec<&'a str>,
    /// The numbered chunks `NAME.N` (the cookie store's), as `(N, value)`.
    pub chunks: Vec<(usize, &'a str)>,
    /// `None`: forward the original headers unchanged.
    pub forwarded: Option<Option<HeaderValue>>,
}

fn trim_bytes(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b
        && first.is_ascii_whitespace()
    {
        b = rest;
    }
    while let [rest @ .., last] = b
        && last.is_ascii_whitespace()
    {
        b = rest;
    }
    b
}

/// Splits the request's cookies into the session cookie (and its numbered
/// chunks `NAME.N`, which are never forwarded) and the others, which are.
/// Works on bytes: browsers send raw UTF-8 in other cookies, and such a
/// header must still lose the session cookie.
pub fn split_request_cookies<'a>(headers: &'a HeaderMap, name: &str) -> RequestCookies<'a> {
    let mut session_values = Vec::new();
    let mut chunks = Vec::new();
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    let mut header_count = 0;
    let present = crate::http1::holds(headers, &header::COOKIE);
    for value in present
        .then(|| headers.get_all(header::COOKIE))
        .into_iter()
        .flatten()
    {
        header_count += 1;
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = trim_bytes(pair);
            if pair.is_empty() {
                continue;
            }
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (trim_bytes(&pair[..i]), trim_bytes(&pair[i + 1..])),
                None => (pair, &[][..]),
            };
            if k == name.as_bytes() {
                removed = true;
                let v = v
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v);
                session_values.extend(std::str::from_utf8(v).ok());
            } else if let Some(n) = std::str::from_utf8(k)
                .ok()
                .and_then(|k| chunk_number(k, name))
            {
                removed = true;
                if let Ok(v) = std::str::from_utf8(v) {
                    chunks.push((n, v));
                }
            } else {
                kept.push(pair);
            }
        }
    }
    let forwarded = (removed || header_count > 1).then(|| {
        (!kept.is_empty()).then(|| {
            HeaderValue::from_bytes(&kept.join(&b"; "[..])).expect("joined from valid header bytes")
        })
    });
    RequestCookies {
        session_values,
        chunks,
        forwarded,
    }
}

/// The value of the first cookie named `name` the request carries.
pub fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|value| {
        value.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = trim_bytes(pair);
            let i = pair.iter().position(|b| *b == b'=')?;
            (trim_bytes(&pair[..i]) == name.as_bytes()).then(|| trim_bytes(&pair[i + 1..]))
        })
    })
}

/// `NAME.1` .. `NAME.N`: the chunks of a session split across cookies.
pub fn is_chunk_name(candidate: &str, name: &str) -> bool {
    chunk_number(candidate, name).is_some()
}

fn chunk_number(candidate: &str, name: &str) -> Option<usize> {
    let n = candidate.strip_prefix(name)?.strip_prefix('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CookieConfig {
        CookieConfig {
            name: "sessionid".into(),
            domain: None,
            path: "/".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    fn secret(c: char) -> Secret {
        Secret::new(c.to_string().repeat(32))
    }

    /// Cookies issued before an upgrade must still verify: the MAC and the
    /// sid are pinned to values computed independently (Python's `hmac`).
    #[test]
    fn cookie_mac_and_sid_are_stable_hmac_sha256() {
        let codec = CookieCodec::new(
            cfg(),
            &[Secret::new("test-secret-0123456789abcdef-0123456789")],
        );
        let id = SessionId::from_bytes(std::array::from_fn(|i| i as u8));
        let value = "AAECAwQFBgcICQoLDA0ODw.UW7YNcxUD0bFFdwECRrAlA";
        assert_eq!(codec.encode(&id), value);
        assert_eq!(codec.decode(value), Some(id));
        assert_eq!(codec.sid(&id), "t2jNaNn6KzLaIeiLtDPNSA");
    }

    /// What `build_with` wrote before it kept its attributes: the cookie
    /// crate, every time, Max-Age and Expires included.
    fn built_by_the_cookie_crate(
        cfg: &CookieConfig,
        name: &str,
        value: &str,
        max_age_s: Option<u64>,
        now: UnixMillis,
        http_only: bool,
    ) -> String {
        let mut c = CookieCodec::builder(cfg, name, value, http_only);
        if let Some(secs) = max_age_s {
            let expires_s = if secs == 0 {
                0
            } else {
                (now / 1000).saturating_add(secs)
            };
            let expires =
                time::OffsetDateTime::from_unix_timestamp(expires_s.min(253_402_300_799) as i64)
                    .unwrap();
            c = c
                .max_age(time::Duration::seconds(secs.min(i64::MAX as u64) as i64))
                .expires(expires);
        }
        c.build().to_string()
    }

    #[test]
    fn set_cookie_matches_the_cookie_crate() {
        let mut checked = 0;
        for same_site in [SameSite::Strict, SameSite::Lax, SameSite::None] {
            for secure in [true, false] {
                for domain in [None, Some("example.com"), Some(".example.com")] {
                    for path in ["/", "/app"] {
                        let cfg = CookieConfig {
                            name: "sid".into(),
                            domain: domain.map(String::from),
                            path: path.into(),
                            secure,
                            http_only: true,
                            same_site,
                        };
                        let codec = CookieCodec::new(cfg.clone(), &[secret('a')]);
                        for max_age in [None, Some(0), Some(1), Some(1_209_600), Some(u64::MAX)] {
                            for now in [0, 1_764_979_200_123, u64::MAX / 2] {
                                for http_only in [true, false] {
                                    let ours =
                                        codec.build_with("sid", "v.x", max_age, now, http_only);
                                    let theirs = built_by_the_cookie_crate(
                                        &cfg, "sid", "v.x", max_age, now, http_only,
                                    );
                                    assert_eq!(ours.to_str().unwrap(), theirs);
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 2 * 3 * 2 * 5 * 3 * 2);
    }

    #[test]
    fn a_renewed_cookie_is_the_one_the_signing_secret_gives() {
        let codec = CookieCodec::new(cfg(), &[secret('a'), secret('b')]);
        let id = SessionId::generate();
        let (parsed, mac) = CookieCodec::parse(&codec.encode(&id)).unwrap();
        assert_eq!(codec.verifying_secret(&parsed, &mac), Some(0));
        assert_eq!(CookieCodec::encode_signed(&mac), codec.encode(&id));

        // A cookie the second secret made verifies, but is not the signing
        // secret's: a save re-signs it.
        let old = CookieCodec::new(cfg(), &[secret('b')]);
        let (parsed, mac) = CookieCodec::parse(&old.encode(&id)).unwrap();
        assert_eq!(codec.verifying_secret(&parsed, &mac), Some(1));
        assert_eq!(format!("{mac:?}"), "CookieMac(..)");
    }

    /// What makes `encode_signed` exact: a value whose base64 has stray
    /// trailing bits (another text for the same bytes) does not parse.
    #[test]
    fn only_the_canonical_text_of_a_value_parses() {
        let codec = CookieCodec::new(cfg(), &[secret('a')]);
        for _ in 0..200 {
            let value = codec.encode(&SessionId::generate());
            let (parsed, mac) = CookieCodec::parse(&value).unwrap();
            assert_eq!(CookieCodec::encode_signed(&mac), value);
            assert_eq!(codec.encode(&parsed), value);
            let (id, tag) = value.split_once('.').unwrap();
            // The last character of 22 carries 2 bits of data and 4 of padding.
            for (i, part) in [(0, id), (1, tag)] {
                let last = part.as_bytes()[21];
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let pos = alphabet.iter().position(|c| *c == last).unwrap();
                assert_eq!(pos & 0b1111, 0, "encode leaves the padding bits clear");
                let stray = alphabet[pos | 1] as char;
                let mut changed = [id.to_string(), tag.to_string()];
                changed[i].replace_range(21.., &stray.to_string());
                let text = changed.join(".");
                assert_eq!(CookieCodec::parse(&text), None, "{text}");
            }
        }
    }

    #[test]
    fn cookie_round_trips() {
        let codec = CookieCodec::new(cfg(), &[secret('a')]);
        let id = SessionId::generate();
        assert_eq!(codec.decode(&codec.encode(&id)), Some(id));
    }

    #[test]
    fn tampered_cookie_is_no_session() {
        let codec = CookieCodec::new(cfg(), &[secret('a')]);
        let value = codec.encode(&SessionId::generate());
        let mut bytes = value.clone().into_bytes();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(codec.decode(std::str::from_utf8(&bytes).unwrap()), None);
        let (id, _) = value.split_once('.').unwrap();
        assert_eq!(codec.decode(&format!("{id}.AAAAAAAAAAAAAAAAAAAAAA")), None);
        assert_eq!(codec.decode(id), None);
        assert_eq!(codec.decode(""), None);
        assert_eq!(codec.decode("...."), None);
    }

    #[test]
    fn a_forged_value_parses_but_does_not_verify() {
        let codec = CookieCodec::new(cfg(), &[secret('a')]);
        let other = CookieCodec::new(cfg(), &[secret('b')]);
        let id = SessionId::generate();
        let (parsed, mac) = CookieCodec::parse(&other.encode(&id)).unwrap();
        assert_eq!(parsed, id);
        assert!(!codec.verify(&parsed, &mac));
        let (_, mac) = CookieCodec::parse(&codec.encode(&id)).unwrap();
        assert!(codec.verify(&id, &mac));
        assert!(!codec.verify(&SessionId::generate(), &mac));
    }

    #[test]
    fn rotated_secret_still_verifies_and_new_cookies_use_the_first() {
        let old = CookieCodec::new(cfg(), &[secret('o')]);
        let rotated = CookieCodec::new(cfg(), &[secret('n'), secret('o')]);
        let only_new = CookieCodec::new(cfg(), &[secret('n')]);
        let id = SessionId::generate();
        assert_eq!(rotated.decode(&old.encode(&id)), Some(id));
        assert_eq!(only_new.decode(&rotated.encode(&id)), Some(id));
        assert_eq!(only_new.decode(&old.encode(&id)), None);
    }

    #[test]
    fn cookie_is_bound_to_its_name() {
        let a = CookieCodec::new(cfg(), &[secret('a')]);
        let b = CookieCodec::new(
            CookieConfig {
                name: "other".into(),
                ..cfg()
            },
            &[secret('a')],
        );
        let id = SessionId::generate();
        assert_eq!(b.decode(&a.encode(&id)), None);
    }

    #[test]
    fn session_cookies_are_split_from_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sessionid=xyz; sessionid.1=c1"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let rc = split_request_cookies(&h, "sessionid");
        assert_eq!(rc.session_values, vec!["xyz"]);
        assert_eq!(
            rc.forwarded,
            Some(Some(HeaderValue::from_static("a=1; b=2")))
        );
    }

    #[test]
    fn non_ascii_cookie_header_still_loses_the_session_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes("name=José; sessionid=abc.def".as_bytes()).unwrap(),
        );
        let rc = split_request_cookies(&h, "sessionid");
        assert_eq!(rc.session_values, vec!["abc.def"]);
        assert_eq!(
            rc.forwarded,
            Some(Some(
                HeaderValue::from_bytes("name=José".as_bytes()).unwrap()
            ))
        );
    }

    #[test]
    fn only_session_cookie_leaves_no_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("sessionid=xyz"));
        assert_eq!(split_request_cookies(&h, "sessionid").forwarded, Some(None));
        let mut untouched = HeaderMap::new();
        untouched.append(header::COOKIE, HeaderValue::from_static("a=1"));
        assert_eq!(
            split_request_cookies(&untouched, "sessionid").forwarded,
            None
        );
    }

    #[test]
    fn set_cookie_has_the_attributes() {
        let codec = CookieCodec::new(
            CookieConfig {
                domain: Some("example.com".into()),
                ..cfg()
            },
            &[secret('a')],
        );
        let policy = Policy {
            ttl_s: 60,
            absolute_ttl_s: None,
            expire_at_browser_close: false,
            max_bytes: 100,
        };
        let rec = SessionRecord {
            expires_ms: 61_500,
            ..SessionRecord::new("s".into(), 0)
        };
        let v = codec.set_cookie("v", &rec, &policy, 1_000);
        let s = v.to_str().unwrap();
        for part in [
            "sessionid=v",
            "Path=/",
            "Domain=example.com",
            "Secure",
            "HttpOnly",
            "SameSite=Lax",
            "Max-Age=60",
            "Expires=",
        ] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
        let browser = SessionRecord {
            expiry_s: Some(0),
            ..rec
        };
        let s = codec.set_cookie("v", &browser, &policy, 1_000);
        assert!(!s.to_str().unwrap().contains("Max-Age"));
        let gone = codec.removal();
        assert!(gone.to_str().unwrap().contains("Max-Age=0"));
    }
}
