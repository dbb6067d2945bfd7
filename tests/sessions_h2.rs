//! The session suite again, every request over HTTP/2 (h2c, prior knowledge):
//! sessions, write-back and enforcement behave exactly as on HTTP/1.1.

mod common;

const HTTP2: bool = true;

include!("suite/sessions.rs");
include!("suite/lifecycle.rs");
