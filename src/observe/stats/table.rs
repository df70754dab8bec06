//! `rgate stats`: the store's figures as a table, without a running gateway.

use std::fmt::Write as _;

use super::document::Breakdown;
use super::recorder::window_start;
use super::store::{Settings, Store, Target};
use crate::observe::tally::Tally;

/// Reads the store `settings` name and renders its lifetime totals, or the
/// rollups of the last `window` (e.g. `1h`).
pub fn command(settings: &Settings, window: Option<&str>) -> Result<String, String> {
    let Target::File(path) = &settings.target else {
        return Err("stats.store is `none`: this config keeps no stats".into());
    };
    if !path.exists() {
        return Err(format!(
            "{}: no stats yet (the gateway has not written any)",
            path.display()
        ));
    }
    let store =
        Store::open_read_only(path).map_err(|error| format!("{}: {error}", path.display()))?;
    let (breakdown, title) = match window {
        None => (store.lifetime(), "lifetime".to_owned()),
        Some(window) => {
            let minutes = super::window_minutes(window).ok_or_else(|| {
                format!("--window {window}: expected a duration such as 5m, 1h or 24h")
            })?;
            let since = window_start(minutes);
            (store.window(since), format!("last {window}"))
        }
    };
    let breakdown = breakdown.map_err(|error| format!("{}: {error}", path.display()))?;
    Ok(render(&breakdown, &title))
}

/// One line per scope: the whole gateway, each route, each backend.
fn render(breakdown: &Breakdown, title: &str) -> String {
    let mut out = format!(
        "{title}\n{:<8} {:<24} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}\n",
        "SCOPE", "NAME", "REQUESTS", "SUCCESS", "ERROR", "AVG_MS", "P95_MS", "P99_MS"
    );
    let rows = std::iter::once(("all", "-", &breakdown.all))
        .chain(
            breakdown
                .routes
                .iter()
                .map(|(name, tally)| ("route", &**name, tally)),
        )
        .chain(
            breakdown
                .backends
                .iter()
                .map(|(name, tally)| ("backend", &**name, tally)),
        );
    for (scope, name, tally) in rows {
        row(&mut out, scope, name, tally);
    }
    out
}

fn row(out: &mut String, scope: &str, name: &str, tally: &Tally) {
    let summary = tally.summary();
    let _ = writeln!(
        out,
        "{scope:<8} {name:<24} {:>10} {:>10} {:>10} {:>9.3} {:>9.3} {:>9.3}",
        tally.count(),
        summary.requests_count.success,
        summary.requests_count.error,
        summary.latency_ms.average,
        summary.latency_ms.p95,
        summary.latency_ms.p99,
    );
}
