//! The access log: one line per request, written off the request path.
//!
//! A request hands its [`Entry`] to a bounded channel with `try_send`; a
//! dedicated thread wakes every 10 ms, formats what is queued into a buffer
//! and writes it once per batch (or per 64 KiB). When the channel is full
//! the line is dropped and counted (`rgate_access_log_dropped_total`): a slow disk never makes a
//! request wait. `SIGUSR1` makes the writer reopen its file, for logrotate.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

pub use entry::{Entry, Texts};
use line::LineWriter;

mod entry;
mod line;

/// Lines waiting for the writer by default.
pub const DEFAULT_BUFFER: usize = 8192;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

/// The line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// The Common Log Format (`host - - [time] "METHOD path HTTP" status bytes`).
    Common,
}

/// The `access_log` section, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    pub format: Format,
    pub buffer: usize,
}

/// The request path's handle on the log.
#[derive(Debug)]
pub struct AccessLog {
    sender: SyncSender<Entry>,
    dropped: AtomicU64,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub fn start(settings: &Settings) -> io::Result<Arc<Self>> {
        let output = Output::open(&settings.target)?;
        let (sender, receiver) = sync_channel(settings.buffer.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            receiver,
            output,
            target: settings.target.clone(),
            lines: LineWriter::new(settings.format),
            buffer: Vec::with_capacity(WRITE_BUFFER + 1024),
            failing: false,
            reopen: reopen.clone(),
        };
        thread::Builder::new()
            .name("rgate-access-log".into())
            .spawn(move || writer.run())?;
        Ok(Arc::new(Self {
            sender,
            dropped: AtomicU64::new(0),
            reopen,
        }))
    }

    /// Queues a line; drops and counts it when the writer is behind.
    pub fn log(&self, entry: Entry) {
        match self.sender.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen its file (on `SIGUSR1`).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }
}

enum Output {
    Stdout(io::Stdout),
    File(File),
}

impl Output {
    fn open(target: &Target) -> io::Result<Self> {
        Ok(match target {
            Target::Stdout => Output::Stdout(io::stdout()),
            Target::File(path) => {
                Output::File(OpenOptions::new().create(true).append(true).open(path)?)
            }
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Output::Stdout(out) => {
                let mut out = out.lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Output::File(out) => out.write_all(bytes),
        }
    }
}

/// A wall-clock reading and the monotonic instant it was taken at, read
/// once per batch: an entry's time is this reading moved by the distance
/// between the instants.
struct WallClock {
    system: SystemTime,
    instant: Instant,
}

impl WallClock {
    fn now() -> Self {
        Self {
            system: SystemTime::now(),
            instant: Instant::now(),
        }
    }

    fn at(&self, instant: Instant) -> SystemTime {
        match self.instant.checked_duration_since(instant) {
            Some(before) => self.system - before,
            None => self.system + instant.duration_since(self.instant),
        }
    }
}

struct Writer {
    receiver: Receiver<Entry>,
    output: Output,
    target: Target,
    lines: LineWriter,
    reopen: Arc<AtomicBool>,
    /// Lines formatted and not yet written.
    buffer: Vec<u8>,
    /// Whether the last write failed (its warning is given once, not per batch).
    failing: bool,
}

/// How often the writer wakes to drain the channel. Waking per line would
/// cost every request a wake-up and, on a busy core, a context switch.
const TICK: Duration = Duration::from_millis(10);
/// Lines are formatted straight into a buffer written out when it holds
/// this much, and at the end of each batch.
const WRITE_BUFFER: usize = 64 * 1024;

impl Writer {
    fn run(mut self) {
        loop {
            thread::sleep(TICK);
            if self.reopen.swap(false, Ordering::AcqRel) {
                match Output::open(&self.target) {
                    Ok(output) => self.output = output,
                    Err(error) => {
                        warn!(%error, "access log: cannot reopen; writing to the old file")
                    }
                }
            }
            let clock = WallClock::now();
            loop {
                match self.receiver.try_recv() {
                    Ok(entry) => {
                        let time = clock.at(entry.start);
                        self.lines.write(&entry, time, &mut self.buffer);
                        if self.buffer.len() >= WRITE_BUFFER {
                            self.write_out();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.write_out();
                        return;
                    }
                }
            }
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        match self.output.write_all(&self.buffer) {
            Ok(()) if self.failing => {
                self.failing = false;
                warn!("access log: writing again");
            }
            Ok(()) => {}
            Err(error) if !self.failing => {
                self.failing = true;
                warn!(%error, "access log: write failed; lines are lost until it works again");
            }
            Err(_) => {}
        }
        self.buffer.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_time_is_the_clock_reading_moved_by_the_instants_between() {
        let clock = WallClock::now();
        let earlier = clock.instant - Duration::from_millis(7);
        let later = clock.instant + Duration::from_millis(3);
        assert_eq!(clock.at(earlier), clock.system - Duration::from_millis(7));
        assert_eq!(clock.at(later), clock.system + Duration::from_millis(3));
        assert_eq!(clock.at(clock.instant), clock.system);
    }
}
