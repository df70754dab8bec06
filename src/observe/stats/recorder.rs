//! The recorder: a background thread that adds what the counters gained to
//! the stats store every `flush_interval`, and answers `?window=` questions
//! from it, so no worker ever waits on the file.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::document::Breakdown;
use super::store::{Kind, Settings, Store, StoreError, Target};
use super::{Stats, StatsError};
use crate::observe::metrics::RouteMetrics;
use crate::observe::tally::{Tally, COARSE};
use crate::snapshot::SnapshotHandle;

/// Window questions waiting for the recorder; more are refused (503), not queued.
const INBOX: usize = 64;
/// Longest a `?window=` question waits for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// A window question first writes what is pending, unless a write happened
/// this recently: answers are current, and a flood of questions costs at
/// most ten writes a second.
const FRESH_ENOUGH: Duration = Duration::from_millis(100);

enum Message {
    Window {
        minutes: u64,
        reply: oneshot::Sender<Option<Breakdown>>,
    },
    Stop,
}

/// The way to the recorder, kept by [`Stats`].
#[derive(Debug, Clone)]
pub struct RecorderHandle {
    inbox: SyncSender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Message::Window { .. } => "Window",
            Message::Stop => "Stop",
        })
    }
}

impl RecorderHandle {
    /// The rollups of the last `minutes` minutes, the current one included.
    pub(super) async fn window(&self, minutes: u64) -> Result<Breakdown, StatsError> {
        let (reply, answer) = oneshot::channel();
        self.inbox
            .try_send(Message::Window { minutes, reply })
            .map_err(|_| StatsError::Unavailable)?;
        match tokio::time::timeout(ANSWER_WITHIN, answer).await {
            Ok(Ok(Some(breakdown))) => Ok(breakdown),
            _ => Err(StatsError::Unavailable),
        }
    }
}

/// Opens the store `settings` name. A file that cannot be used (damaged,
/// locked, not writable) is logged once and the stats are kept in memory:
/// stats are never a reason not to serve.
pub fn open(settings: &Settings) -> (Option<Store>, Breakdown) {
    if let Target::File(path) = &settings.target {
        match Store::open(path).and_then(|store| Ok((store.lifetime()?, store))) {
            Ok((lifetime, store)) => return (Some(store), lifetime),
            Err(error) => warn!(
                path = %path.display(),
                %error,
                "the stats store cannot be used; stats are kept in memory for this run"
            ),
        }
    }
    match Store::memory() {
        Ok(store) => (Some(store), Breakdown::default()),
        Err(error) => {
            warn!(%error, "no stats store; /stats?window= is unavailable");
            (None, Breakdown::default())
        }
    }
}

/// A route whose counters are being followed.
struct Followed {
    metrics: Arc<RouteMetrics>,
    name: Arc<str>,
    backend: Arc<str>,
    /// The reading last written to the store.
    written: Tally,
}

/// The recorder thread's state.
pub struct Recorder {
    store: Option<Store>,
    settings: Settings,
    stats: Stats,
    snapshot: Arc<SnapshotHandle>,
    /// By route id, as the routes of the current snapshot.
    routes: HashMap<Arc<str>, Followed>,
    /// Routes gone from the config (or replaced) whose last counts are still to write.
    retired: Vec<Followed>,
    written_all: Tally,
    /// The minute rollups were last pruned in.
    pruned: i64,
    /// A write failed and the next success is to be logged.
    failing: bool,
    last_flush: Instant,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("settings", &self.settings)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

/// The running recorder thread.
#[derive(Debug)]
pub struct RecorderThread {
    handle: RecorderHandle,
    thread: thread::JoinHandle<()>,
}

impl RecorderThread {
    /// Writes what is left and stops (after the workers have stopped).
    pub fn stop(self) {
        // A blocking send: the recorder drains its inbox, so this returns.
        let _ = self.handle.inbox.send(Message::Stop);
        let _ = self.thread.join();
    }
}

/// The channel between [`Stats`] and the recorder, made before either.
pub fn channel() -> (RecorderHandle, Inbox) {
    let (inbox, messages) = sync_channel(INBOX);
    (RecorderHandle { inbox }, Inbox(messages))
}

/// The recorder's end of [`channel`].
#[derive(Debug)]
pub struct Inbox(Receiver<Message>);

impl Recorder {
    pub fn spawn(
        store: Option<Store>,
        settings: Settings,
        stats: Stats,
        snapshot: Arc<SnapshotHandle>,
        inbox: Inbox,
        handle: RecorderHandle,
    ) -> std::io::Result<RecorderThread> {
        let written_all = stats.counted();
        let mut recorder = Recorder {
            store,
            settings,
            stats,
            snapshot,
            routes: HashMap::new(),
            retired: Vec::new(),
            written_all,
            pruned: i64::MIN,
            failing: false,
            last_flush: Instant::now(),
        };
        let thread = thread::Builder::new()
            .name("rgate-stats".into())
            .spawn(move || recorder.run(&inbox.0))?;
        Ok(RecorderThread { handle, thread })
    }

    fn run(&mut self, inbox: &Receiver<Message>) {
        let interval = self.settings.flush_interval;
        let mut next = Instant::now() + interval;
        loop {
            match inbox.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(Message::Window { minutes, reply }) => {
                    if self.last_flush.elapsed() >= FRESH_ENOUGH {
                        self.flush();
                    }
                    let since = window_start(minutes);
                    let answer = self.store.as_ref().and_then(|store| {
                        store
                            .window(since)
                            .inspect_err(|error| warn!(%error, "cannot read the stats store"))
                            .ok()
                    });
                    let _ = reply.send(answer);
                }
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush();
                    next = Instant::now() + interval;
                }
            }
        }
    }

    /// Adds what every counter gained since the last write to the store.
    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if self.store.is_none() {
            return;
        }
        self.follow_routes();
        let all = self.stats.counted();
        let all_delta = all.since(&self.written_all);
        let mut routes: BTreeMap<Arc<str>, Tally> = BTreeMap::new();
        let mut backends: BTreeMap<Arc<str>, Tally> = BTreeMap::new();
        let readings: Vec<Tally> = self
            .routes
            .values()
            .chain(&self.retired)
            .map(|followed| {
                let reading = followed.metrics.tally();
                let delta = reading.since(&followed.written);
                if delta.count() > 0 {
                    for (map, name) in [
                        (&mut routes, &followed.name),
                        (&mut backends, &followed.backend),
                    ] {
                        map.entry(name.clone())
                            .or_insert_with(|| Tally::new(COARSE))
                            .add(&delta);
                    }
                }
                reading
            })
            .collect();
        let mut deltas: Vec<(Kind, &str, &Tally)> = Vec::new();
        if all_delta.count() > 0 {
            deltas.push((Kind::All, "", &all_delta));
        }
        deltas.extend(
            routes
                .iter()
                .map(|(name, tally)| (Kind::Route, &**name, tally)),
        );
        deltas.extend(
            backends
                .iter()
                .map(|(name, tally)| (Kind::Backend, &**name, tally)),
        );
        let minute = minute_now();
        let retention = i64::try_from(self.settings.retention.as_secs() / 60).unwrap_or(i64::MAX);
        let prune = (minute != self.pruned).then(|| minute.saturating_sub(retention));
        if deltas.is_empty() && prune.is_none() {
            return;
        }
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.add(minute, &deltas, prune) {
            Ok(()) => {
                if std::mem::take(&mut self.failing) {
                    info!("the stats store is written again");
                }
                self.written_all = all;
                for (followed, reading) in self
                    .routes
                    .values_mut()
                    .chain(&mut self.retired)
                    .zip(readings)
                {
                    followed.written = reading;
                }
                self.retired.clear();
                self.pruned = minute;
            }
            Err(error) => self.failed(&error),
        }
    }

    /// Follows the current snapshot's routes; routes that left it (or whose
    /// counters were replaced) are retired, to write their last counts once.
    fn follow_routes(&mut self) {
        let snapshot = self.snapshot.load();
        let mut current = HashMap::with_capacity(snapshot.router.routes().len());
        for route in snapshot.router.routes() {
            let backend = snapshot.backends[route.backend].name.clone();
            let followed = match self.routes.remove(&route.id) {
                Some(mut followed) if Arc::ptr_eq(&followed.metrics, &route.metrics) => {
                    followed.name = route.name.clone();
                    followed.backend = backend;
                    followed
                }
                other => {
                    self.retired.extend(other);
                    Followed {
                        metrics: route.metrics.clone(),
                        name: route.name.clone(),
                        backend,
                        written: Tally::new(COARSE),
                    }
                }
            };
            current.insert(route.id.clone(), followed);
        }
        self.retired
            .extend(std::mem::replace(&mut self.routes, current).into_values());
    }

    fn failed(&mut self, error: &StoreError) {
        // What was not written stays in the deltas of the next flush.
        if !std::mem::replace(&mut self.failing, true) {
            warn!(%error, "cannot write the stats store; retrying every flush");
        }
    }
}

/// The first rollup minute of a window of `minutes`: that many whole
/// minutes before the current one, so a window always spans at least its
/// length (`1m` just after a minute turned still holds the previous one).
pub(super) fn window_start(minutes: u64) -> i64 {
    minute_now().saturating_sub(i64::try_from(minutes).unwrap_or(i64::MAX))
}

/// Minutes since the Unix epoch.
pub(super) fn minute_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    i64::try_from(secs / 60).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_spans_whole_minutes_before_the_current_one() {
        let before = minute_now();
        let start = window_start(5);
        let after = minute_now();
        // Five whole minutes before the current one: at least five minutes of data.
        assert!((before - 5..=after - 5).contains(&start), "{start}");
        // A window longer than time itself takes every rollup, without overflow.
        assert!(window_start(u64::MAX) < 0);
    }
}
