//! Request path normalisation, done once before routing and forwarding.
//!
//! Rules (RFC 3986 §5.2.4 plus the usual proxy hardening):
//! - repeated slashes collapse: `//a///b` → `/a/b`;
//! - `.` segments vanish and `..` removes the previous segment, never climbing
//!   above the root: `/api/payment/../admin` → `/api/admin`;
//! - percent-encoded dots count as dots (`%2e`, `%2E`), so `/a/%2e%2e/b` → `/b`;
//! - a trailing slash is kept, and a path ending in a dot segment keeps one
//!   (`/a/b/..` → `/a/`);
//! - everything else (other escapes, `%2F`, the query) passes unchanged.
//!
//! The normalised path is what the router matches and what the upstream receives,
//! so a route can never be escaped by spelling the path differently.

/// Returns the normalised path, or `None` when `path` is already normal (the
/// common case, which allocates nothing).
pub fn path(path: &str) -> Option<String> {
    if !needs_work(path) {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/') {
        trailing_slash = false;
        match dot_kind(segment) {
            Dots::None if segment.is_empty() => trailing_slash = true,
            Dots::None => segments.push(segment),
            Dots::One => trailing_slash = true,
            Dots::Two => {
                segments.pop();
                trailing_slash = true;
            }
        }
    }
    let mut normalised = String::with_capacity(path.len());
    for segment in &segments {
        normalised.push('/');
        normalised.push_str(segment);
    }
    if trailing_slash || normalised.is_empty() {
        normalised.push('/');
    }
    (normalised != path).then_some(normalised)
}

/// Cheap pre-scan: only `//`, `/.` and `%2e` can make a path change.
fn needs_work(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.windows(2).any(|w| w == b"//" || w == b"/.")
        || bytes
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'e')
}

#[derive(Debug, PartialEq, Eq)]
enum Dots {
    None,
    One,
    Two,
}

fn dot_kind(segment: &str) -> Dots {
    // Count dots, literal or percent-encoded; anything else makes it a normal segment.
    let bytes = segment.as_bytes();
    let mut dots = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            i += 1;
        } else if bytes.len() - i >= 3
            && bytes[i] == b'%'
            && bytes[i + 1] == b'2'
            && (bytes[i + 2] | 0x20) == b'e'
        {
            i += 3;
        } else {
            return Dots::None;
        }
        dots += 1;
    }
    match dots {
        1 => Dots::One,
        2 => Dots::Two,
        _ => Dots::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        path(p).unwrap_or_else(|| p.to_owned())
    }

    #[test]
    fn normal_paths_are_left_alone_without_allocating() {
        for p in [
            "/",
            "/api/payment",
            "/api/payment/",
            "/a.b/c..d/.hidden-not",
            "/a%20b",
        ] {
            assert_eq!(path(p), None, "{p}");
        }
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(norm("/api/payment/../admin"), "/api/admin");
        assert_eq!(norm("/api/./payment"), "/api/payment");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/../../etc/passwd"), "/etc/passwd");
        assert_eq!(norm("/.."), "/");
    }

    #[test]
    fn encoded_dots_are_dots() {
        assert_eq!(norm("/api/payment/%2e%2e/orders"), "/api/orders");
        assert_eq!(norm("/api/payment/%2E%2E/orders"), "/api/orders");
        assert_eq!(norm("/api/payment/.%2e/orders"), "/api/orders");
        assert_eq!(norm("/a/%2e/b"), "/a/b");
        // Three dots is an ordinary segment name.
        assert_eq!(norm("/a/.../b"), "/a/.../b");
        assert_eq!(norm("/a/%2e%2e%2e"), "/a/%2e%2e%2e");
    }

    #[test]
    fn repeated_slashes_collapse() {
        assert_eq!(norm("//api///payment"), "/api/payment");
        assert_eq!(norm("/api/payment//"), "/api/payment/");
        assert_eq!(norm("//"), "/");
    }

    #[test]
    fn dot_prefixed_names_are_not_dot_segments() {
        assert_eq!(norm("/a/.well-known/x"), "/a/.well-known/x");
        assert_eq!(norm("/a/..b/c"), "/a/..b/c");
    }
}
