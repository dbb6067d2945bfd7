//! sessiongate: Django-style server-side sessions at a reverse proxy, in
//! front of any backend. See README.md for the user's guide and SPEC.md for
//! the contract.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod keys;
pub mod logging;
pub mod mac;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod upstream;

pub use app::{Listeners, RunError, run};
pub use config::Config;

/// Installs the process-wide rustls crypto provider (aws-lc-rs) once; rustls
/// refuses to pick one by itself when more than one is compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
