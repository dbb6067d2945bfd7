//! Secrets: resolved from literal values, `env:NAME` or `file:PATH`, and held
//! in a newtype whose `Debug` never prints the value.

use std::fmt;

/// The least number of bytes a secret must have (SPEC section 2).
pub const MIN_SECRET_BYTES: usize = 32;

/// A resolved secret. Its bytes are the UTF-8 bytes of the configured value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted, {} bytes>)", self.0.len())
    }
}

/// Where a secret comes from; the error messages name the source, never the value.
#[derive(Debug, PartialEq, Eq)]
enum Source<'a> {
    Literal(&'a str),
    Env(&'a str),
    File(&'a str),
}

fn source(spec: &str) -> Source<'_> {
    if let Some(name) = spec.strip_prefix("env:") {
        Source::Env(name)
    } else if let Some(path) = spec.strip_prefix("file:") {
        Source::File(path)
    } else {
        Source::Literal(spec)
    }
}

/// Resolves a secret specification. The error never contains the secret.
pub fn resolve(spec: &str) -> Result<Secret, String> {
    match source(spec) {
        Source::Literal(value) => Ok(Secret::new(value.as_bytes())),
        Source::Env(name) => {
            if name.is_empty() {
                return Err("`env:` needs a variable name".into());
            }
            match std::env::var(name) {
                Ok(value) => Ok(Secret::new(value.into_bytes())),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("environment variable {name} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {name} is not valid UTF-8"))
                }
            }
        }
        Source::File(path) => match read_bounded(path) {
            Ok(mut bytes) => {
                // Files written by `echo` or editors end in a newline that is not part of the secret.
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                Ok(Secret::new(bytes))
            }
            Err(e) => Err(format!("cannot read secret file {path}: {e}")),
        },
    }
}

/// A new random secret: 32 bytes from the OS CSPRNG as unpadded base64url (43 characters).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator failed");
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Longest secret file read: a key is tens of bytes, and a path such as
/// `/dev/zero` must not hang `check` or the start.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

fn read_bounded(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_SECRET_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// Resolves a secret and checks its length, for every place a secret is configured.
pub fn resolve_checked(spec: &str) -> Result<Secret, String> {
    let secret = resolve(spec)?;
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "secret is {} bytes long; at least {MIN_SECRET_BYTES} bytes are required (`sessiongate keygen` makes one)",
            secret.len()
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("super-secret-value-that-is-long-enough");
        let shown = format!("{s:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn short_secret_error_does_not_echo_it() {
        let err = resolve_checked("hunter2").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("7 bytes"));
    }

    #[test]
    fn file_secret_drops_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("sg-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        let s = resolve_checked(&format!("file:{}", path.display())).unwrap();
        assert_eq!(s.expose(), b"0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn an_endless_secret_file_is_refused_not_read_forever() {
        let err = resolve("file:/dev/zero").unwrap_err();
        assert!(
            err.contains("/dev/zero") && err.contains("larger than"),
            "{err}"
        );
    }

    #[test]
    fn missing_env_is_named() {
        let err = resolve("env:SESSIONGATE_TEST_SURELY_UNSET").unwrap_err();
        assert!(err.contains("SESSIONGATE_TEST_SURELY_UNSET"));
    }
}
