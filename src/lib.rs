//! sessiongate: Django-style server-side sessions at a reverse proxy, in
//! front of any backend. See README.md for the user's guide and SPEC.md for
//! the contract.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod upstream;

pub use config::Config;
pub use server::{Listeners, RunError, run};
