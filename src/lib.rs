//! sessiongate: Django-style server-side sessions at a reverse proxy, in
//! front of any backend. See README.md for the user's guide and SPEC.md for
//! the contract.

// The layers, top down: the app (run) wires the proxy and the admin
// handlers to the server; the proxy phases use the router, the session
// pipeline and the upstream client; sessions use the stores; everything
// builds on the record model, the config, the keys and the HTTP/1 codec.
mod admin;
mod app;
mod cli;
pub mod config;
mod deadline;
mod demo;
mod error;
mod future;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod keys;
mod logging;
mod mac;
mod metrics;
mod proxy;
pub mod record;
mod router;
pub mod server;
pub mod session;
pub mod store;
mod telemetry;
pub mod upstream;

pub use app::{Listeners, RunError, run};
pub use cli::main;
pub use config::Config;

/// Installs the process-wide rustls crypto provider (aws-lc-rs) once; rustls
/// refuses to pick one by itself when more than one is compiled in.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
