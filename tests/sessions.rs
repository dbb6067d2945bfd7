//! The session suite over HTTP/1.1.

mod common;

const HTTP2: bool = false;

include!("suite/sessions.rs");
include!("suite/lifecycle.rs");
