//! Headless Chromium (Debian's `chromium`) looking at a page on 127.0.0.1,
//! as a person would: the DOM once the page's scripts have run, and a
//! screenshot. Each run has its own empty profile and ends by itself; a run
//! past its bound is killed by PID.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a page's timers and fetches may run (virtual time) before the
/// DOM is taken: the dashboard refreshes every 2 s.
const VIRTUAL_TIME_MS: &str = "6000";
const BOUND: Duration = Duration::from_secs(60);

/// `None` when Chromium is absent and `RGATE_BROWSER_TESTS` is not `1` (the
/// test then returns early, saying so); panics when it is `1`.
pub fn chromium() -> Option<PathBuf> {
    let required = std::env::var("RGATE_BROWSER_TESTS").is_ok_and(|v| v == "1");
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            !required,
            "RGATE_BROWSER_TESTS=1 but chromium is not installed"
        );
        eprintln!(
            "skipped: chromium is not installed; set RGATE_BROWSER_TESTS=1 to make this a failure"
        );
    }
    found
}

fn run(chromium: &Path, url: &str, args: &[&str]) -> Output {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            // Without these Chromium keeps trying to reach Google's hosts.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within {BOUND:?} on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The page's DOM after its scripts ran.
pub fn dom(chromium: &Path, url: &str) -> String {
    let output = run(chromium, url, &["--dump-dom"]);
    assert!(output.status.success(), "chromium: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Saves a screenshot of the page at `path` (PNG).
pub fn screenshot(chromium: &Path, url: &str, path: &Path) {
    let output = run(
        chromium,
        url,
        &[
            "--window-size=1280,1000",
            &format!("--screenshot={}", path.display()),
        ],
    );
    assert!(output.status.success(), "chromium: {output:?}");
}

/// The `<tr>` whose attribute `attr` is `value`, as markup.
pub fn row<'a>(dom: &'a str, attr: &str, value: &str) -> Option<&'a str> {
    let start = dom.find(&format!("{attr}=\"{value}\""))?;
    let end = dom[start..].find("</tr>")? + start;
    Some(&dom[start..end])
}
