//! Property-based fuzzing of the parts that read untrusted text: the path
//! normaliser, routing on normalised paths, and config parsing. Case counts
//! are bounded so the whole file runs in seconds with the normal test suite.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;
use proptest::sample::select;
use rgate::path::normalize;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn normalised(raw: &str) -> String {
    normalize::path(raw).unwrap_or_else(|| raw.to_owned())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

/// The bytes of `text` with every valid `%XX` escape decoded, once.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// Path fragments that stress the normaliser: separators, dot segments in
/// every spelling, escapes of every kind (valid, reserved, truncated, not
/// hex, of '%' itself), and non-ASCII.
const FRAGMENTS: &[&str] = &[
    "/", "//", ".", "..", "a", "stats", "%", "%%", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%5c",
    "%4", "%zz", "%41", "%7e", "%73", "%25", "%252e", "%32", "%65", "%C3%A9", "é", "~", "?", "\\",
];

fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => select(FRAGMENTS).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn normalising_is_idempotent_and_leaves_one_spelling(raw in path_strategy()) {
        let once = normalised(&raw);
        prop_assert_eq!(normalize::path(&once), None, "normalising {:?} again changes {:?}", raw, once);
        prop_assert!(once.starts_with('/'), "{:?} → {:?}", raw, once);
        prop_assert!(!once.contains("//"), "{:?} → {:?}", raw, once);
        for segment in once.split('/') {
            prop_assert!(segment != "." && segment != "..", "{:?} → {:?}", raw, once);
        }
        prop_assert!(!once.contains("%2e") && !once.contains("%2E"), "{:?} → {:?}", raw, once);
        // Every '%' starts a two-digit escape of a reserved byte: none is
        // left for a later decoder to combine with what follows.
        let bytes = once.as_bytes();
        for (at, _) in once.match_indices('%') {
            let escape = bytes.get(at + 1).copied().and_then(hex).zip(bytes.get(at + 2).copied().and_then(hex));
            let Some((high, low)) = escape else {
                return Err(TestCaseError::fail(format!("{raw:?} → {once:?}: a '%' that is not an escape")));
            };
            prop_assert!(!is_unreserved(high << 4 | low), "{:?} → {:?}: escaped unreserved byte", raw, once);
        }
    }

    #[test]
    fn the_normaliser_never_panics_on_any_text(raw in any::<String>()) {
        let _ = normalize::path(&raw);
        let _ = normalize::path(&format!("/{raw}"));
    }
}

fn router_config() -> rgate::config::Config {
    rgate::config::parse(
        "routes:\n  - {path_prefix: /api/payment, backend: payment}\n  - {path_prefix: /api/orders, backend: orders}\n\
         backends:\n  - {name: payment, servers: [\"127.0.0.1:1\"]}\n  - {name: orders, servers: [\"127.0.0.1:2\"]}\n",
        Path::new("fuzz.yml"),
    )
    .unwrap()
}

/// The path as an upstream resolves it: each segment percent-decoded once,
/// then dot segments applied (RFC 3986 §5.2.4). `%2F` stays inside its
/// segment, as rgate documents.
fn upstream_view(path: &str) -> String {
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split('/').skip(1) {
        match String::from_utf8_lossy(&percent_decode(segment)).as_ref() {
            "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other.to_owned()),
        }
    }
    format!("/{}", segments.join("/"))
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn a_normalised_path_cannot_escape_its_route(
        segments in prop::collection::vec(
            select(&["api", "payment", "orders", "..", ".", "%2e%2e", "%2E", "", "x", "stats", "%73tats", "%%32%65"][..]),
            0..10,
        )
    ) {
        let config = router_config();
        let router = &config.snapshot.router;
        let raw = format!("/{}", segments.join("/"));
        let path = normalised(&raw);
        // Decoded once, as the upstream will, no segment is a dot segment
        // that rgate did not resolve before routing.
        for segment in path.split('/') {
            let decoded = percent_decode(segment);
            prop_assert!(decoded != b"." && decoded != b"..", "{:?} → {:?}", raw, path);
        }
        if let Some(route) = router.find_path(&path) {
            prop_assert!(path.starts_with(&*route.prefix), "{:?} → {:?} on {}", raw, path, route.prefix);
            prop_assert!(upstream_view(&path).starts_with(&*route.prefix),
                "{:?} → {:?} on {}, but the upstream resolves {:?}", raw, path, route.prefix, upstream_view(&path));
        }
        if path == "/stats" || path.starts_with("/stats/") {
            prop_assert!(router.find_path(&path).is_none(), "{:?} → {:?} routed", raw, path);
        }
    }

    #[test]
    fn no_route_may_claim_stats(
        // Slash and dot-segment spellings; config validation refuses those
        // that are not normalised.
        segments in prop::collection::vec(select(&["stats", "..", ".", "", "x"][..]), 1..5)
    ) {
        let prefix = format!("/{}", segments.join("/"));
        let yaml = format!("routes:\n  - {{path_prefix: \"{prefix}\", backend: b}}\nbackends:\n  - {{name: b, servers: [\"127.0.0.1:1\"]}}\n");
        if let Ok(config) = rgate::config::parse(&yaml, Path::new("fuzz.yml")) {
            for route in config.snapshot.router.routes() {
                // Accepted prefixes are normalised, so this is every spelling.
                prop_assert_eq!(normalize::path(&route.prefix), None);
                prop_assert!(&*route.prefix != "/stats" && !route.prefix.starts_with("/stats/"), "route {:?} accepted", route.prefix);
            }
        }
    }
}

const EXAMPLES: &[&str] = &[
    include_str!("../config/examples/contract.yml"),
    include_str!("../config/examples/full.yml"),
    include_str!("../config/examples/static.yml"),
];

/// A config parse that must not panic, and must explain every refusal.
fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let file = Path::new("fuzz.yml");
    if let Err(errors) = rgate::config::parse(text, file) {
        prop_assert!(!errors.0.is_empty(), "refused without a reason:\n{}", text);
        for error in &errors.0 {
            prop_assert_eq!(&error.file, file, "{}", error);
            prop_assert!(error.to_string().starts_with("fuzz.yml: "), "{}", error);
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    ReplaceChar(usize, char),
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for mutation in mutations {
        if lines.is_empty() {
            break;
        }
        match *mutation {
            Mutation::DeleteLine(at) => {
                lines.remove(at % lines.len());
            }
            Mutation::DuplicateLine(at) => {
                let line = lines[at % lines.len()].clone();
                lines.insert(at % lines.len(), line);
            }
            Mutation::ReplaceChar(at, with) => {
                let count = lines.len();
                let line = &mut lines[at % count];
                let chars: Vec<char> = line.chars().collect();
                if !chars.is_empty() {
                    let position = (at / 7) % chars.len();
                    *line = chars[..position]
                        .iter()
                        .chain(std::iter::once(&with))
                        .chain(&chars[position + 1..])
                        .collect();
                }
            }
        }
    }
    lines.join("\n")
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let replacement = prop_oneof![
        select(
            &[
                ':', '-', ' ', '#', '[', ']', '{', '}', '"', '\'', '&', '*', '!', '|', '>', '\t',
                '0', 'x', '/'
            ][..]
        ),
        any::<char>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        (any::<usize>(), replacement).prop_map(|(at, with)| Mutation::ReplaceChar(at, with)),
    ]
}

/// Lines in YAML shapes with rgate's keys and values, good and bad.
fn yaml_ish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        select(
            &[
                "routes:",
                "backends:",
                "default_response:",
                "limits:",
                "docker:",
                "tls:",
                "  - path_prefix: /a",
                "  - path_prefix: a",
                "  - path_prefix: /stats",
                "    backend: b",
                "  - name: b",
                "    servers: [\"127.0.0.1:1\"]",
                "    servers: [nope]",
                "    match_labels: [a=b, a=c]",
                "  body: hi",
                "  status_code: 999",
                "  status_code: -1",
                "  max_header_size: 1",
                "  max_header_size: 64KiB",
                "    timeout: 30",
                "    timeout: 1s",
                "    timeout: 99999999999h",
                "    balance: hash",
                "    hash_on: header:",
                "    retries: {attempts: 0, budget: 2.5}",
                "    outlier: {consecutive_errors: 0}",
                "  endpoint: ftp://x",
                "  cert: /nonexistent.pem",
                "&a [*a]",
                "*a",
                "!!binary x",
                "? [a]",
                "--- ",
                "...",
                "- - -",
                "{",
                "]",
                "'",
                "\"",
                "",
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~]{0,30}",
        any::<String>(),
    ];
    prop::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn mutated_examples_parse_or_are_refused_with_reasons(
        example in select(EXAMPLES),
        mutations in prop::collection::vec(mutation_strategy(), 1..4),
    ) {
        check_parse(&mutate(example, &mutations))?;
    }

    #[test]
    fn yaml_ish_text_parses_or_is_refused_with_reasons(text in yaml_ish()) {
        check_parse(&text)?;
    }
}

#[test]
fn the_examples_themselves_parse() {
    for example in EXAMPLES {
        rgate::config::parse(example, Path::new("fuzz.yml")).unwrap();
    }
}
