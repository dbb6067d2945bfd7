//! sessiongate: Django-style server-side sessions at a reverse proxy, in
//! front of any backend. See README.md for the user's guide and SPEC.md for
//! the contract.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod logging;
pub mod mac;
pub mod metrics;
pub mod proxy;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod upstream;

pub use config::Config;
pub use server::{Listeners, RunError, run};

/// `now + after` on tokio's clock, saturating: a configured timeout may be
/// as large as a `u64` of seconds, which `Instant` addition would panic on.
pub(crate) fn deadline_after(after: std::time::Duration) -> tokio::time::Instant {
    /// What "never" is taken to mean (tokio's own far future is 30 years).
    const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);
    let now = tokio::time::Instant::now();
    now.checked_add(after.min(FAR_FUTURE)).unwrap_or(now)
}

/// Installs the process-wide rustls crypto provider (aws-lc-rs) once; rustls
/// refuses to pick one by itself when more than one is compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_deadline_of_any_timeout_is_in_the_future() {
        let now = tokio::time::Instant::now();
        assert!(super::deadline_after(std::time::Duration::MAX) > now);
        let soon = super::deadline_after(std::time::Duration::from_secs(5));
        assert!(soon >= now + std::time::Duration::from_secs(5));
    }
}
