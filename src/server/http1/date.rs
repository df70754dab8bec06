//! The `Date` of rgate's own responses (RFC 9110 §6.6.1): formatted once a
//! second per worker, so writing it costs a copy, not a clock read.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

/// Length of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
const LENGTH: usize = 29;

thread_local! {
    static DATE: RefCell<[u8; LENGTH]> = RefCell::new(format(SystemTime::now()));
}

fn format(now: SystemTime) -> [u8; LENGTH] {
    let mut date = [b' '; LENGTH];
    let text = httpdate::fmt_http_date(now);
    let length = text.len().min(LENGTH);
    date[..length].copy_from_slice(&text.as_bytes()[..length]);
    date
}

/// Appends the current date.
pub(super) fn append(out: &mut Vec<u8>) {
    DATE.with(|date| out.extend_from_slice(&date.borrow()[..]));
}

/// Runs on each worker for its lifetime, keeping its date current.
pub(crate) async fn keep_current() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = format(SystemTime::now());
        DATE.with(|date| *date.borrow_mut() = now);
    }
}
