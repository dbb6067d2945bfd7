//! Host and path -> route. The path is read as `paths:` says (see `path`),
//! the host checked (see `host`); routes are tried in file order and the
//! first match wins.

pub mod host;
pub mod path;

use crate::config::{PathPolicy, RouteConfig};
use std::borrow::Cow;

pub use host::HostError;
pub use path::PathError;

/// What the router needs of one route.
struct Matcher {
    /// Lower-case, without port.
    host: Option<String>,
    /// Upper-cased when matching is case-insensitive.
    prefix: String,
}

pub struct Router {
    routes: Vec<Matcher>,
    policy: PathPolicy,
}

/// Case folding for `case_insensitive`. Upper case, as NTFS compares names
/// through its upcase table: `ı` and `ſ` fold to `I` and `S` there too.
fn fold(s: &str) -> String {
    s.to_uppercase()
}

impl Router {
    pub fn new(routes: &[RouteConfig], policy: PathPolicy) -> Self {
        Router {
            routes: routes
                .iter()
                .map(|r| Matcher {
                    host: r.host.clone(),
                    prefix: if policy.case_insensitive {
                        fold(&r.path_prefix)
                    } else {
                        r.path_prefix.clone()
                    },
                })
                .collect(),
            policy,
        }
    }

    /// The path routes are matched against; see [`path::read`].
    pub fn read_path<'a>(&self, raw: &'a str) -> Result<Cow<'a, str>, PathError> {
        path::read(raw, &self.policy)
    }

    /// The first route for a checked host (`Host` value) and a read path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(host::name);
        let folded;
        let path = if self.policy.case_insensitive {
            folded = fold(path);
            folded.as_str()
        } else {
            path
        };
        self.routes.iter().position(|r| {
            path.starts_with(&r.prefix)
                && match (&r.host, host) {
                    (None, _) => true,
                    (Some(want), Some(have)) => have.eq_ignore_ascii_case(want),
                    (Some(_), None) => false,
                }
        })
    }

    /// The path the upstream sees when route `index` strips its prefix
    /// from the read path; always starts with `/`.
    pub fn strip(&self, index: usize, path: &str) -> String {
        let prefix = &self.routes[index].prefix;
        let rest = if self.policy.case_insensitive {
            // The prefix matched the folded path; find where it ends in
            // the path itself (folding may change lengths).
            let mut folded = String::new();
            let mut end = path.len();
            for (i, c) in path.char_indices() {
                if folded.len() >= prefix.len() {
                    end = i;
                    break;
                }
                folded.extend(c.to_uppercase());
            }
            &path[end.min(path.len())..]
        } else {
            path.strip_prefix(prefix.as_str()).unwrap_or(path)
        };
        let rest = if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        };
        path::encode(&rest, &self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str) -> RouteConfig {
        let yaml = format!(
            "secrets: [\"{}\"]\nupstreams: {{app: {{url: \"http://127.0.0.1:1\"}}}}\nroutes: [{{match: {{path_prefix: \"{prefix}\"{}}}, upstream: app, forward: {{mode: none}}}}]",
            "s".repeat(32),
            host.map(|h| format!(", host: {h}")).unwrap_or_default(),
        );
        crate::config::from_yaml(&yaml).unwrap().routes.remove(0)
    }

    fn router(policy: PathPolicy) -> Router {
        Router::new(
            &[
                route(None, "/api/"),
                route(Some("admin.example.com"), "/"),
                route(None, "/"),
            ],
            policy,
        )
    }

    #[test]
    fn first_match_wins_on_host_and_prefix() {
        let r = router(PathPolicy::default());
        assert_eq!(r.find(Some("x"), "/api/users"), Some(0));
        assert_eq!(r.find(Some("Admin.Example.com:8080"), "/x"), Some(1));
        assert_eq!(r.find(Some("admin.example.com."), "/x"), Some(1));
        assert_eq!(r.find(None, "/x"), Some(2));
        assert_eq!(r.find(Some("x"), "/API/users"), Some(2));
    }

    #[test]
    fn case_insensitive_prefixes_match_any_case() {
        let r = router(PathPolicy {
            case_insensitive: true,
            ..PathPolicy::default()
        });
        assert_eq!(r.find(Some("x"), "/API/users"), Some(0));
        assert_eq!(r.find(Some("x"), "/ApI/users"), Some(0));
        assert_eq!(r.strip(0, "/ApI/users"), "/users");
        // Dotless i folds to I, as on NTFS.
        assert_eq!(r.find(Some("x"), "/apı/users"), Some(0));
    }

    #[test]
    fn strip_keeps_a_leading_slash() {
        let r = Router::new(
            &[route(None, "/api/"), route(None, "/api")],
            PathPolicy::default(),
        );
        assert_eq!(r.strip(0, "/api/users"), "/users");
        assert_eq!(r.strip(1, "/api/users"), "/users");
        assert_eq!(r.strip(0, "/api/"), "/");
        assert_eq!(r.strip(0, "/api/a b"), "/a%20b");
    }
}
