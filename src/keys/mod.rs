//! Keys and certificates, read from their files by one module that both
//! `check` and the running proxy call: TLS listeners' certificates, the CA
//! roots of https upstreams, and the Ed25519 keys that sign session headers.
//! The config's validation loads them once; the runtime uses what it loaded.

mod ca;
mod certs;
pub mod ed25519;

pub use ca::{CaError, root_store};
pub use certs::{CertStore, TlsError, TlsFiles};
