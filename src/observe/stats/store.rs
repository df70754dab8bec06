//! The SQLite file that keeps `/stats` across restarts: lifetime totals and
//! per-minute rollups, by route, by backend and for the whole gateway.
//!
//! Every write adds a delta inside one `IMMEDIATE` transaction (read the row,
//! add, write it back), so two processes on one file (a handover) both count.
//! WAL journaling lets `rgate stats` read while a gateway writes, and a killed
//! process loses only what it had not flushed yet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use rusqlite::types::ToSql;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::document::Breakdown;
use crate::observe::tally::{Tally, COARSE, PRECISE};

/// Where the stats are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    /// `stats.store: none`: per process, gone at exit.
    Memory,
}

/// `stats`: the store, how often it is written, how long rollups are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    pub flush_interval: Duration,
    pub retention: Duration,
}

pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Settings {
    /// The defaults, keeping the stats in `target`.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            retention: DEFAULT_RETENTION,
        }
    }
}

/// The layout this rgate writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS totals (
    kind TEXT NOT NULL, name TEXT NOT NULL,
    success INTEGER NOT NULL, error INTEGER NOT NULL, total_us INTEGER NOT NULL,
    latency BLOB NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollups (
    minute INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
    success INTEGER NOT NULL, error INTEGER NOT NULL, total_us INTEGER NOT NULL,
    latency BLOB NOT NULL,
    PRIMARY KEY (minute, kind, name)
) WITHOUT ROWID;
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored latency histogram cannot be read: {0}")]
    Histogram(String),
    #[error("the file is read-only")]
    ReadOnly,
    #[error("it was written by a newer rgate (layout {0}, this one knows {SCHEMA_VERSION})")]
    Layout(i64),
}

/// What a tally counts: the whole gateway, one route, one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    All,
    Route,
    Backend,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::All => "all",
            Kind::Route => "route",
            Kind::Backend => "backend",
        }
    }
}

/// An open stats store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if need be) the file at `path` and checks that it is
    /// a stats store this rgate can use.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(StoreError::ReadOnly);
        }
        // Another process's write transaction is short; waiting longer would
        // only hold the recorder.
        conn.busy_timeout(Duration::from_millis(500))?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn)
    }

    /// A store that lives as long as the process.
    pub fn memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    /// Opens an existing file for reading only (`rgate stats`).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(500))?;
        let store = Self { conn };
        store.check_layout()?;
        Ok(store)
    }

    fn check_layout(&self) -> Result<i64, StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Layout(version));
        }
        Ok(version)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        let store = Self { conn };
        if store.check_layout()? < SCHEMA_VERSION {
            store.conn.execute_batch(SCHEMA)?;
            store
                .conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        Ok(store)
    }

    /// The lifetime totals.
    pub fn lifetime(&self) -> Result<Breakdown, StoreError> {
        self.read(
            "SELECT kind, name, success, error, total_us, latency FROM totals",
            &[],
        )
    }

    /// The sums of the rollups from minute `since` (minutes since the epoch) on.
    pub fn window(&self, since: i64) -> Result<Breakdown, StoreError> {
        self.read(
            "SELECT kind, name, success, error, total_us, latency FROM rollups WHERE minute >= ?1",
            &[&since],
        )
    }

    fn read(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Breakdown, StoreError> {
        let mut statement = self.conn.prepare_cached(sql)?;
        let mut rows = statement.query(params)?;
        let mut breakdown = Breakdown::default();
        while let Some(row) = rows.next()? {
            let kind: String = row.get(0)?;
            let name: String = row.get(1)?;
            let tally = tally_from(
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                &row.get::<_, Vec<u8>>(5)?,
            )?;
            match kind.as_str() {
                "all" => breakdown.all.add(&tally),
                "route" => super::document::add(&mut breakdown.routes, &name, &tally),
                "backend" => super::document::add(&mut breakdown.backends, &name, &tally),
                // A kind from a later rgate: not this one's to show.
                _ => {}
            }
        }
        Ok(breakdown)
    }

    /// Adds `deltas` to the lifetime totals and to the rollup of `minute`,
    /// and drops rollups older than `prune_before`, all or nothing.
    pub fn add(
        &mut self,
        minute: i64,
        deltas: &[(Kind, &str, &Tally)],
        prune_before: Option<i64>,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (kind, name, delta) in deltas {
            let kind = kind.as_str();
            let precision = if kind == "all" { PRECISE } else { COARSE };
            merge(
                &tx,
                "SELECT success, error, total_us, latency FROM totals WHERE kind = ?1 AND name = ?2",
                "INSERT OR REPLACE INTO totals VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[&kind, name],
                delta,
                precision,
            )?;
            merge(
                &tx,
                "SELECT success, error, total_us, latency FROM rollups \
                 WHERE minute = ?1 AND kind = ?2 AND name = ?3",
                "INSERT OR REPLACE INTO rollups VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &[&minute, &kind, name],
                delta,
                COARSE,
            )?;
        }
        if let Some(before) = prune_before {
            tx.execute("DELETE FROM rollups WHERE minute < ?1", [before])?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Adds `delta` to the row at `key` (the first parameters of both statements).
fn merge(
    tx: &rusqlite::Transaction<'_>,
    select: &str,
    upsert: &str,
    key: &[&dyn ToSql],
    delta: &Tally,
    precision: u8,
) -> Result<(), StoreError> {
    let mut sum = Tally::new(precision);
    let stored = tx
        .prepare_cached(select)?
        .query_row(key, |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })
        .optional()?;
    if let Some((success, error, total_us, latency)) = stored {
        sum.add(&tally_from(success, error, total_us, &latency)?);
    }
    sum.add(delta);
    let mut latency = Vec::new();
    V2Serializer::new()
        .serialize(&sum.latency, &mut latency)
        .map_err(|error| StoreError::Histogram(format!("{error:?}")))?;
    let (success, error, total_us) = (
        stored_int(sum.success),
        stored_int(sum.error),
        stored_int(sum.total_micros),
    );
    let mut values: Vec<&dyn ToSql> = key.to_vec();
    values.extend([&success as &dyn ToSql, &error, &total_us, &latency]);
    tx.prepare_cached(upsert)?.execute(values.as_slice())?;
    Ok(())
}

/// SQLite integers are signed; a count past `i64::MAX` stays there.
fn stored_int(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn tally_from(
    success: i64,
    error: i64,
    total_us: i64,
    latency: &[u8],
) -> Result<Tally, StoreError> {
    let latency = Deserializer::new()
        .deserialize(&mut &latency[..])
        .map_err(|error| StoreError::Histogram(format!("{error:?}")))?;
    Ok(Tally {
        success: success.max(0).unsigned_abs(),
        error: error.max(0).unsigned_abs(),
        total_micros: total_us.max(0).unsigned_abs(),
        latency,
    })
}
