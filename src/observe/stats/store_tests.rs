use std::time::Duration;

use super::store::{Kind, Store, StoreError};
use crate::observe::tally::{Tally, COARSE, PRECISE};

fn tally(precision: u8, success: u64, error: u64, latency_us: u64) -> Tally {
    let mut tally = Tally::new(precision);
    tally.success = success;
    tally.error = error;
    tally.total_micros = latency_us * (success + error);
    tally.latency.record_n(latency_us, success + error).unwrap();
    tally
}

#[test]
fn deltas_add_up_in_totals_and_rollups() {
    let mut store = Store::memory().unwrap();
    let all = tally(PRECISE, 3, 1, 800);
    let route = tally(COARSE, 3, 0, 800);
    store
        .add(
            100,
            &[
                (Kind::All, "", &all),
                (Kind::Route, "api", &route),
                (Kind::Backend, "pay", &route),
            ],
            None,
        )
        .unwrap();
    store.add(101, &[(Kind::All, "", &all)], None).unwrap();

    let lifetime = store.lifetime().unwrap();
    assert_eq!((lifetime.all.success, lifetime.all.error), (6, 2));
    assert_eq!(lifetime.all.latency.len(), 8);
    assert_eq!(lifetime.routes["api"].success, 3);
    assert_eq!(lifetime.backends["pay"].success, 3);
    let summary = lifetime.all.summary();
    assert!((summary.latency_ms.p99 - 0.8).abs() < 0.01, "{summary:?}");

    // The window from minute 101 on holds only the second write.
    let window = store.window(101).unwrap();
    assert_eq!(window.all.count(), 4);
    assert!(window.routes.is_empty());
    assert_eq!(store.window(100).unwrap().all.count(), 8);
}

#[test]
fn rollups_before_the_retention_are_pruned_and_totals_kept() {
    let mut store = Store::memory().unwrap();
    let one = tally(PRECISE, 1, 0, 100);
    store.add(10, &[(Kind::All, "", &one)], None).unwrap();
    store.add(20, &[(Kind::All, "", &one)], Some(15)).unwrap();
    assert_eq!(store.window(0).unwrap().all.count(), 1);
    assert_eq!(store.lifetime().unwrap().all.count(), 2);
}

#[test]
fn two_processes_writing_one_file_both_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.db");
    let mut first = Store::open(&path).unwrap();
    let mut second = Store::open(&path).unwrap();
    let one = tally(COARSE, 1, 0, 250);
    for _ in 0..5 {
        first.add(7, &[(Kind::Route, "r", &one)], None).unwrap();
        second.add(7, &[(Kind::Route, "r", &one)], None).unwrap();
    }
    let reader = Store::open_read_only(&path).unwrap();
    assert_eq!(reader.lifetime().unwrap().routes["r"].success, 10);
    assert_eq!(reader.window(7).unwrap().routes["r"].latency.len(), 10);
}

#[test]
fn a_file_that_is_not_a_store_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let error = Store::open(&path).unwrap_err();
    assert!(error.to_string().contains("not a database"), "{error}");
    // A directory where the file should be, and a missing parent directory.
    assert!(Store::open(dir.path()).is_err());
    assert!(Store::open(&dir.path().join("missing/stats.db")).is_err());
}

#[test]
fn a_store_from_a_newer_layout_is_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 9).unwrap();
    drop(conn);
    assert!(matches!(Store::open(&path), Err(StoreError::Layout(9))));
}

#[test]
fn a_locked_file_is_reported_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.db");
    drop(Store::open(&path).unwrap());
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = std::time::Instant::now();
    let mut store = Store::open(&path);
    if let Ok(store) = store.as_mut() {
        // WAL readers may open; the write is what the lock refuses.
        let one = tally(COARSE, 1, 0, 1);
        assert!(store.add(1, &[(Kind::All, "", &one)], None).is_err());
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}
