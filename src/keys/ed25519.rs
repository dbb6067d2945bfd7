//! Ed25519 keys for EdDSA-signed session headers: loading PEM files, the
//! JWKS that upstreams verify with, and `keygen --ed25519`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde::Serialize;
use std::path::Path;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A public key as a JWK (RFC 8037), with its RFC 7638 thumbprint as `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
}

impl Jwk {
    fn from_public(public: &[u8]) -> Jwk {
        let x = URL_SAFE_NO_PAD.encode(public);
        // RFC 7638: the required members, lexicographic order, no spaces.
        let canonical = format!("{{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"{x}\"}}");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        Jwk {
            kty: "OKP",
            crv: "Ed25519",
            x,
            kid: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            alg: "EdDSA",
            use_: "sig",
        }
    }
}

/// The signing key: PKCS#8 DER and its JWK.
#[derive(Clone)]
pub struct SigningKeyPair {
    pub pkcs8: Vec<u8>,
    pub jwk: Jwk,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKeyPair(kid={}, <private key redacted>)",
            self.jwk.kid
        )
    }
}

/// Loads an Ed25519 private key (PKCS#8 PEM).
pub fn load_private(path: &Path) -> Result<SigningKeyPair, String> {
    let der = match PrivateKeyDer::from_pem_file(path) {
        Ok(PrivateKeyDer::Pkcs8(der)) => der.secret_pkcs8_der().to_vec(),
        Ok(_) => {
            return Err(format!(
                "{} is not a PKCS#8 Ed25519 private key",
                path.display()
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let pair = Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| format!("{} is not an Ed25519 private key: {e}", path.display()))?;
    Ok(SigningKeyPair {
        jwk: Jwk::from_public(pair.public_key().as_ref()),
        pkcs8: der,
    })
}

/// The public key of a file holding either an Ed25519 private key or public key.
pub fn load_public(path: &Path) -> Result<Jwk, String> {
    if let Ok(pair) = load_private(path) {
        return Ok(pair.jwk);
    }
    let spki = SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|e| {
        format!(
            "{} holds no Ed25519 private or public key: {e}",
            path.display()
        )
    })?;
    match spki.as_ref().strip_prefix(&SPKI_PREFIX[..]) {
        Some(key) if key.len() == 32 => Ok(Jwk::from_public(key)),
        _ => Err(format!("{} is not an Ed25519 public key", path.display())),
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A new key pair as (private PKCS#8 PEM, public SPKI PEM, kid).
pub fn generate() -> (String, String, String) {
    let pair =
        Ed25519KeyPair::generate().expect("the operating system's random number generator failed");
    let pkcs8 = pair.to_pkcs8v1().expect("an Ed25519 key serializes");
    let mut spki = SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    let kid = Jwk::from_public(pair.public_key().as_ref()).kid;
    (
        pem("PRIVATE KEY", pkcs8.as_ref()),
        pem("PUBLIC KEY", &spki),
        kid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_match() {
        let dir = std::env::temp_dir().join(format!("sg-ed25519-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public, kid) = generate();
        std::fs::write(dir.join("k.pem"), private).unwrap();
        std::fs::write(dir.join("k.pub.pem"), public).unwrap();
        let pair = load_private(&dir.join("k.pem")).unwrap();
        assert_eq!(pair.jwk.kid, kid);
        assert_eq!(load_public(&dir.join("k.pub.pem")).unwrap(), pair.jwk);
        assert_eq!(load_public(&dir.join("k.pem")).unwrap(), pair.jwk);
        assert!(!format!("{pair:?}").contains(&URL_SAFE_NO_PAD.encode(&pair.pkcs8)));
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 appendix A.3: the thumbprint of the example public key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            Jwk::from_public(&x).kid,
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
}
