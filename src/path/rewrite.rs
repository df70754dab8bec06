//! `strip_prefix` and `rewrite_prefix`: the path the upstream sees.
//!
//! The matched prefix is replaced (by nothing, or by the new prefix) once,
//! on the normalised path, before the first try; the query is kept. The
//! result always starts with `/` and never gains a `//` at the seam:
//!
//! | prefix  | path             | strip      | rewrite `/v2` |
//! |---------|------------------|------------|---------------|
//! | `/api`  | `/api/x?q=1`     | `/x?q=1`   | `/v2/x?q=1`   |
//! | `/api`  | `/api`           | `/`        | `/v2`         |
//! | `/api/` | `/api/x`         | `/x`       | `/v2/x`       |
//! | `/api`  | `/apix` (literal prefix match) | `/x` | `/v2/x` |

/// What replaces a route's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrefixRewrite {
    Strip,
    /// A normalised absolute path.
    Replace(Box<str>),
}

impl PrefixRewrite {
    /// Appends the upstream's path for `path` (normalised, matched by
    /// `prefix`) to `out`. With literal prefix matching a prefix can end
    /// inside a segment (`/api` matching `/apix`); what follows it is then a
    /// segment of its own (`/x`), as Traefik's StripPrefix does.
    pub fn write(&self, prefix: &str, path: &str, out: &mut String) {
        // A prefix ending in `/` leaves that slash to the rest.
        let cut = if prefix.ends_with('/') {
            prefix.len() - 1
        } else {
            prefix.len()
        };
        let rest = path.get(cut..).unwrap_or_default();
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let base = match self {
            PrefixRewrite::Strip => "",
            PrefixRewrite::Replace(new) => new.strip_suffix('/').unwrap_or(new),
        };
        out.push_str(base);
        if !rest.is_empty() || base.is_empty() || path.ends_with('/') && path.len() > cut {
            out.push('/');
        }
        out.push_str(rest);
    }

    /// The prefix as the client saw it, for `X-Forwarded-Prefix`.
    pub fn forwarded_prefix(prefix: &str) -> &str {
        match prefix.strip_suffix('/') {
            Some("") | None => prefix,
            Some(trimmed) => trimmed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(rewrite: &PrefixRewrite, prefix: &str, path: &str) -> String {
        let mut out = String::new();
        rewrite.write(prefix, path, &mut out);
        out
    }

    fn strip(prefix: &str, path: &str) -> String {
        apply(&PrefixRewrite::Strip, prefix, path)
    }

    fn replace(new: &str, prefix: &str, path: &str) -> String {
        apply(&PrefixRewrite::Replace(new.into()), prefix, path)
    }

    #[test]
    fn strip_leaves_the_rest_as_an_absolute_path() {
        assert_eq!(strip("/api/payment", "/api/payment/x"), "/x");
        assert_eq!(strip("/api/payment", "/api/payment"), "/");
        assert_eq!(strip("/api/payment", "/api/payment/"), "/");
        assert_eq!(strip("/api/payment", "/api/payment/a/b/"), "/a/b/");
        assert_eq!(strip("/api/", "/api/x"), "/x");
        assert_eq!(strip("/api/", "/api/"), "/");
        assert_eq!(strip("/", "/x/y"), "/x/y");
        // A literal prefix ending inside a segment.
        assert_eq!(strip("/api", "/apix"), "/x");
    }

    #[test]
    fn replace_swaps_the_prefix_without_a_double_slash() {
        assert_eq!(replace("/v2", "/api/payment", "/api/payment/x"), "/v2/x");
        assert_eq!(replace("/v2", "/api/payment", "/api/payment"), "/v2");
        assert_eq!(replace("/v2", "/api/payment", "/api/payment/"), "/v2/");
        assert_eq!(replace("/v2/", "/api/", "/api/x"), "/v2/x");
        assert_eq!(replace("/", "/api", "/api/x"), "/x");
        assert_eq!(replace("/", "/api", "/api"), "/");
        assert_eq!(replace("/v2", "/", "/x"), "/v2/x");
    }

    #[test]
    fn the_forwarded_prefix_has_no_trailing_slash() {
        assert_eq!(PrefixRewrite::forwarded_prefix("/api/"), "/api");
        assert_eq!(PrefixRewrite::forwarded_prefix("/api"), "/api");
        assert_eq!(PrefixRewrite::forwarded_prefix("/"), "/");
    }
}
