//! Request path normalisation, done once before routing and forwarding.
//!
//! Rules (RFC 3986 §6.2.2 and §5.2.4, plus the usual proxy hardening):
//! - escapes of unreserved characters are decoded (`%41` → `A`, `%2e` → `.`,
//!   `%7E` → `~`), and the hex digits of every other escape are upper-cased
//!   (`%2f` → `%2F`), so one resource has one spelling: `/%73tats` is `/stats`;
//! - repeated slashes collapse: `//a///b` → `/a/b`;
//! - `.` segments vanish and `..` removes the previous segment, never climbing
//!   above the root: `/api/payment/../admin` → `/api/admin`. Encoded dots
//!   count, since they are decoded first: `/a/%2e%2e/b` → `/b`;
//! - a trailing slash is kept, and a path ending in a dot segment keeps one
//!   (`/a/b/..` → `/a/`);
//! - reserved escapes stay encoded: `%2F` is not a separator and `%5C` not a
//!   backslash. A raw backslash is refused before this runs (see `validate`);
//! - a `%` that starts no valid escape becomes `%25`, so no later decoder can
//!   join it with what follows: `/%%32%65` is `/%252e`, not `/%2e` (a dot).
//!
//! The normalised path is what the router matches and what the upstream receives,
//! so a route can never be escaped by spelling the path differently.

/// Returns the normalised path, or `None` when `path` is already normal (the
/// common case, which allocates nothing).
pub fn path(path: &str) -> Option<String> {
    if !needs_work(path) {
        return None;
    }
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut normalised = String::with_capacity(decoded.len());
    for segment in &segments {
        normalised.push('/');
        normalised.push_str(segment);
    }
    if trailing_slash || normalised.is_empty() {
        normalised.push('/');
    }
    (normalised != path).then_some(normalised)
}

/// Cheap pre-scan: only `//`, `/.` and escapes can make a path change.
fn needs_work(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.contains(&b'%') || bytes.windows(2).any(|w| w == b"//" || w == b"/.")
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Decodes escapes of unreserved characters and upper-cases the others.
/// A `%` not followed by two hex digits becomes `%25`.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some((hex_value(bytes[i + 1])?, hex_value(bytes[i + 2])?)))
            .flatten();
        match escape {
            Some((high, low)) => {
                let byte = high << 4 | low;
                if is_unreserved(byte) {
                    out.push(char::from(byte));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
            }
            // A '%' that starts no escape is itself escaped: left bare, a
            // later decoder could read it with what follows (`%%32%65` would
            // become `%2e` here and `.` upstream).
            None if bytes[i] == b'%' => {
                out.push_str("%25");
                i += 1;
            }
            None => {
                // Copy up to the next '%' in one go. Searching bytes keeps the
                // cut on a char boundary: '%' is ASCII and `i` is one already.
                let next = bytes[i..]
                    .iter()
                    .position(|&b| b == b'%')
                    .map_or(bytes.len(), |at| i + at);
                out.push_str(&path[i..next]);
                i = next;
            }
        }
    }
    out
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
        assert_eq!(norm("/a/%2e%2e%2e"), "/a/...");
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

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(norm("/%73tats"), "/stats");
        assert_eq!(norm("/%41%7e%5F"), "/A~_");
        assert_eq!(norm("/a%2fb"), "/a%2Fb");
        assert_eq!(norm("/a%5cb"), "/a%5Cb");
        assert_eq!(path("/a%2Fb%20c"), None, "already normal");
        // Not an escape: the '%' itself is escaped.
        assert_eq!(norm("/a%zz/%4"), "/a%25zz/%254");
        assert_eq!(norm("/caf%C3%A9/é"), "/caf%C3%A9/é");
    }

    #[test]
    fn a_bare_percent_cannot_become_an_escape_after_decoding() {
        // Decoding %32 and %65 must not spell out %2e (a dot) for the upstream.
        assert_eq!(
            norm("/api/payment/%%32%65%%32%65/orders"),
            "/api/payment/%252e%252e/orders"
        );
        assert_eq!(norm("/%"), "/%25");
        assert_eq!(norm("/%%"), "/%25%25");
    }

    #[test]
    fn non_ascii_after_an_escape_is_copied_whole() {
        // Found by tests/fuzz.rs: this used to slice inside 'é' and panic.
        assert_eq!(norm("/%41é%41"), "/AéA");
        assert_eq!(norm("/%41🕴/%"), "/A🕴/%25");
    }
}
