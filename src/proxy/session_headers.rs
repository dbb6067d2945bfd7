//! The build phase's session headers: the signed token or the JSON of the
//! session (with its sid, and on routes with `csrf:` the masked token),
//! and the plain headers copied from its keys.

use super::{Proxy, Route};
use crate::session::Loaded;
use crate::upstream::forward;
use crate::upstream::identity::{Forwarding, SessionView, plain_header_value, to_ascii_json};
use http::HeaderValue;

impl Proxy {
    /// The session's headers for the upstream. Their names were cleared from
    /// the client's headers with the internal prefix and `session_filled`.
    pub(super) fn session_headers(
        &self,
        route: &Route,
        loaded: &Loaded,
        csrf: Option<&str>,
        h: &mut forward::Added,
        now: u64,
    ) {
        let cfg = &route.cfg.forward;
        let data = loaded.data();
        let sid = loaded.record.as_ref().map(|r| r.sid.as_str());
        let view = SessionView {
            data,
            keys: cfg.keys.as_deref(),
        };
        match (&route.forwarding, &cfg.header) {
            (Forwarding::Signed(signer), Some(name)) => {
                h.set(
                    name.clone(),
                    signer.header_value(&view, sid, csrf, now / 1000),
                );
            }
            (Forwarding::Json, Some(name)) => {
                h.set(
                    name.clone(),
                    HeaderValue::try_from(to_ascii_json(&view)).expect("ASCII JSON"),
                );
                // A sid read from a shared store is not trusted to be header-safe.
                if let Some(sid) = sid.and_then(|s| HeaderValue::from_str(s).ok()) {
                    h.set(self.headers.sid.clone(), sid);
                }
                if let Some(token) = csrf {
                    h.set(
                        self.headers.csrf.clone(),
                        HeaderValue::from_str(token).expect("a token is letters and digits"),
                    );
                }
            }
            _ => {}
        }
        let fields = (!cfg.headers.is_empty()).then(|| data.fields());
        for (name, key) in &cfg.headers {
            if let Some(value) = fields.as_ref().and_then(|f| f.get(key)) {
                match plain_header_value(value) {
                    Some(v) => h.set(name.clone(), v),
                    None => {
                        crate::limited!(crate::logging::LogClass::upstream, warn, header = %name, "session value cannot be sent as a header (control characters); skipped")
                    }
                }
            }
        }
    }
}
