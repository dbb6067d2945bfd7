//! Micro-benchmarks of what every proxied request does: split the Cookie
//! header, verify the session cookie, build the session header (HS256 or
//! EdDSA JWT, or JSON), and apply a merge patch. `cargo bench --bench hot_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value, json};
use sessiongate::config::{CookieConfig, SameSite, Secret, SigningConfig, SigningKey};
use sessiongate::record::SessionData;
use sessiongate::record::SessionId;
use sessiongate::session::cookie::{CookieCodec, split_request_cookies};
use sessiongate::upstream::identity::{SessionView, TokenSigner, to_ascii_json};
use std::hint::black_box;
use std::time::Duration;

fn session() -> Map<String, Value> {
    json!({
        "user_id": 12345,
        "email": "ann@example.com",
        "roles": ["admin", "editor"],
        "prefs": {"theme": "dark", "lang": "fr", "tz": "Europe/Paris"},
        "cart": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}]
    })
    .as_object()
    .unwrap()
    .clone()
}

fn signer(key: SigningKey) -> TokenSigner {
    TokenSigner::new(&SigningConfig {
        key,
        issuer: "sessiongate".into(),
        token_ttl: Duration::from_secs(60),
        audience: "app".into(),
    })
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let codec = CookieCodec::new(
        CookieConfig {
            name: "sessionid".into(),
            domain: None,
            path: "/".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        },
        &[Secret::new("bench-secret-0123456789abcdef-0123456789")],
    );
    let id = SessionId::generate();
    let value = codec.encode(&id);
    c.bench_function("cookie_verify", |b| {
        b.iter(|| codec.decode(black_box(&value)))
    });

    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::try_from(format!(
            "_ga=GA1.2.3456; theme=dark; sessionid={value}; csrftoken=abcdef0123456789"
        ))
        .unwrap(),
    );
    c.bench_function("cookie_header_split", |b| {
        b.iter(|| {
            split_request_cookies(black_box(&headers), "sessionid")
                .session_values
                .len()
        })
    });

    let data = SessionData::from_map(&session());
    let view = SessionView {
        data: &data,
        keys: None,
    };
    let hs256 = signer(SigningKey::Hs256(Secret::new(
        "upstream-secret-0123456789abcdef-012345",
    )));
    c.bench_function("jwt_sign_hs256", |b| {
        b.iter(|| hs256.sign(black_box(&view), Some("sid"), 1_700_000_000))
    });

    let dir = std::env::temp_dir().join(format!("sg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, _, _) = sessiongate::keys::ed25519::generate();
    std::fs::write(dir.join("k.pem"), private).unwrap();
    let pair = sessiongate::keys::ed25519::load_private(&dir.join("k.pem")).unwrap();
    let eddsa = signer(SigningKey::EdDsa {
        published: vec![pair.jwk.clone()],
        signing: pair,
    });
    c.bench_function("jwt_sign_eddsa", |b| {
        b.iter(|| eddsa.sign(black_box(&view), Some("sid"), 1_700_000_000))
    });

    c.bench_function("session_header_json", |b| {
        b.iter(|| to_ascii_json(black_box(&view)))
    });

    let patch =
        json!({"prefs": {"lang": null, "tz": "UTC"}, "cart": [], "last_seen": 1_700_000_000})
            .as_object()
            .unwrap()
            .clone();
    // What a write costs around the merge: the stored text parsed, patched
    // and written back.
    let patches = [patch];
    c.bench_function("stored_data_patch", |b| {
        b.iter(|| black_box(&data).merged(black_box(&patches)))
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
