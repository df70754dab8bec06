//! From YAML text to the file types, reporting every problem rather than the
//! first: a type error in one key must not hide the rest of the file.
//!
//! serde stops at the first error, so each failing key is recorded, taken out
//! of the document and the document read again, until it reads cleanly.
//! Routes and backends are read one by one, so a route that cannot be read
//! at all (a required key missing) keeps its index in key paths and does not
//! stop the others. An unknown key is named with the nearest known one.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml_ng::Value;

use super::file::{BackendFile, ConfigFile, JwtFile, RouteFile};

/// Enough rounds for every key of a large section to be wrong.
const MAX_ROUNDS: usize = 256;

/// One problem: the key path and what is wrong.
pub(super) type Problem = (String, String);

/// The file, with each route and backend that could be read, by index.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) file: ConfigFile,
    pub(super) routes: Vec<(usize, RouteFile)>,
    pub(super) backends: Vec<(usize, BackendFile)>,
    /// Every backend name the file declares, read or not: a route naming a
    /// backend refused for its own problems is not reported again.
    pub(super) backend_names: HashSet<String>,
    pub(super) jwt: Vec<(usize, JwtFile)>,
    /// Every provider name the file declares, read or not.
    pub(super) jwt_names: HashSet<String>,
}

/// Reads the document; `Err` only when the YAML does not parse at all or the
/// top level cannot be read. Other problems come back beside what was read.
pub(super) fn parse(text: &str) -> Result<(Parsed, Vec<Problem>), Vec<Problem>> {
    let value: Value =
        serde_yaml_ng::from_str(text).map_err(|err| vec![(String::new(), err.to_string())])?;
    let mut problems = Vec::new();
    let Some(mut file) = lenient::<ConfigFile>(value, "", &mut problems) else {
        return Err(problems);
    };
    let routes = std::mem::take(&mut file.routes)
        .into_iter()
        .enumerate()
        .filter_map(|(i, route)| {
            lenient::<RouteFile>(route, &format!("routes[{i}]"), &mut problems).map(|r| (i, r))
        })
        .collect();
    let mut backend_names = HashSet::new();
    let backends = std::mem::take(&mut file.backends)
        .into_iter()
        .enumerate()
        .filter_map(|(i, backend)| {
            if let Some(name) = backend.get("name").and_then(Value::as_str) {
                backend_names.insert(name.to_owned());
            }
            lenient::<BackendFile>(backend, &format!("backends[{i}]"), &mut problems)
                .map(|b| (i, b))
        })
        .collect();
    let mut jwt_names = HashSet::new();
    let jwt = std::mem::take(&mut file.jwt)
        .into_iter()
        .enumerate()
        .filter_map(|(i, provider)| {
            if let Some(name) = provider.get("name").and_then(Value::as_str) {
                jwt_names.insert(name.to_owned());
            }
            lenient::<JwtFile>(provider, &format!("jwt[{i}]"), &mut problems).map(|p| (i, p))
        })
        .collect();
    Ok((
        Parsed {
            file,
            routes,
            backends,
            backend_names,
            jwt,
            jwt_names,
        },
        problems,
    ))
}

/// Deserializes `value`, recording each error under `prefix` and dropping
/// the key at fault until what is left reads; `None` when the error cannot
/// be pinned on a key (a required key is missing, or the whole value is of
/// the wrong type).
fn lenient<T: DeserializeOwned>(
    mut value: Value,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut removed: HashSet<String> = HashSet::new();
    for _ in 0..MAX_ROUNDS {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(read) => return Some(read),
            Err(err) => err,
        };
        let segments: Vec<Segment> = err.path().iter().cloned().collect();
        let relative = err.path().to_string();
        let key = match (prefix.is_empty(), relative.as_str()) {
            (_, ".") => prefix.to_owned(),
            (true, _) => relative,
            (false, rest) if rest.starts_with('[') => format!("{prefix}{rest}"),
            (false, rest) => format!("{prefix}.{rest}"),
        };
        let message = err.into_inner().to_string();
        // A key already reported and taken out is not reported again as missing.
        let echo = missing_field(&message).is_some_and(|field| {
            let full = if key.is_empty() {
                field.to_owned()
            } else {
                format!("{key}.{field}")
            };
            removed.contains(&full)
        });
        if !echo {
            problems.push((key.clone(), describe(&key, message)));
        }
        if segments.is_empty() || !remove(&mut value, &segments) {
            return None;
        }
        removed.insert(key);
    }
    None
}

/// Takes out the value at `path`; false if there is none.
fn remove(value: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        let next = match (segment, node) {
            (Segment::Seq { index }, Value::Sequence(seq)) => seq.get_mut(*index),
            (Segment::Map { key }, Value::Mapping(map)) => map.get_mut(key.as_str()),
            (Segment::Enum { .. }, Value::Tagged(tagged)) => Some(&mut tagged.value),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match (last, node) {
        (Segment::Seq { index }, Value::Sequence(seq)) if *index < seq.len() => {
            seq.remove(*index);
            true
        }
        (Segment::Map { key }, Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
        _ => false,
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// The problem as users read it: the YAML error's repeat of the key path
/// dropped, and an unknown key named with the nearest known one.
fn describe(key: &str, message: String) -> String {
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && key.ends_with(prefix) => rest.to_owned(),
        _ => message,
    };
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match nearest(unknown, &known) {
        Some(near) => format!("unknown field `{unknown}`; did you mean `{near}`?"),
        None => message,
    }
}

/// The known name closest to `unknown` by edit distance, if close enough to
/// be a typo.
fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (unknown.len() / 3).max(2);
    known
        .iter()
        .map(|candidate| (edit_distance(unknown, candidate), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over bytes, case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(!ca.eq_ignore_ascii_case(&cb));
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_nearest_key() {
        let known = ["name", "balance", "backend_circuit_breaker", "port"];
        assert_eq!(nearest("balanse", &known), Some("balance"));
        assert_eq!(nearest("nmae", &known), Some("name"));
        assert_eq!(nearest("zzzzzzzz", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
