//! The access log: one line per request, written off the request path.
//!
//! A request hands its [`Entry`] to a bounded channel with `try_send`; a
//! dedicated thread wakes every 10 ms, formats and writes what is queued
//! through a 64 KiB buffer, and flushes once per batch. When the channel is full the line is dropped and
//! counted (`rgate_access_log_dropped_total`): a slow disk never makes a
//! request wait. `SIGUSR1` makes the writer reopen its file, for logrotate.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};
use serde::Serialize;
use tracing::warn;

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

/// What one request leaves in the log.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub request_id: Option<HeaderValue>,
    pub trace_id: Option<[u8; 32]>,
    pub client_ip: IpAddr,
    pub method: Method,
    pub host: Option<HeaderValue>,
    pub path: Box<str>,
    pub status: Option<u16>,
    /// The declared request and response body sizes (`Content-Length`).
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub duration: Duration,
    pub endpoint: Option<SocketAddr>,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub attempts: u32,
    pub error: Option<&'static str>,
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
            format: settings.format,
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
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>),
}

impl Output {
    fn open(target: &Target) -> io::Result<Self> {
        Ok(match target {
            Target::Stdout => Output::Stdout(BufWriter::with_capacity(WRITE_BUFFER, io::stdout())),
            Target::File(path) => Output::File(BufWriter::with_capacity(
                WRITE_BUFFER,
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File(out) => out,
        }
    }
}

struct Writer {
    receiver: Receiver<Entry>,
    output: Output,
    target: Target,
    format: Format,
    reopen: Arc<AtomicBool>,
}

/// How often the writer wakes to drain the channel. Waking per line would
/// cost every request a wake-up and, on a busy core, a context switch.
const TICK: Duration = Duration::from_millis(10);
const WRITE_BUFFER: usize = 64 * 1024;

impl Writer {
    fn run(mut self) {
        let mut line = Vec::with_capacity(512);
        loop {
            thread::sleep(TICK);
            if self.reopen.swap(false, Ordering::AcqRel) {
                let _ = self.output.writer().flush();
                match Output::open(&self.target) {
                    Ok(output) => self.output = output,
                    Err(error) => {
                        warn!(%error, "access log: cannot reopen; writing to the old file")
                    }
                }
            }
            let mut wrote = false;
            loop {
                match self.receiver.try_recv() {
                    Ok(entry) => {
                        line.clear();
                        format(&entry, self.format, &mut line);
                        if let Err(error) = self.output.writer().write_all(&line) {
                            warn!(%error, "access log: write failed");
                        }
                        wrote = true;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let _ = self.output.writer().flush();
                        return;
                    }
                }
            }
            // One write per batch (or per full buffer), not per line.
            if wrote {
                let _ = self.output.writer().flush();
            }
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: &'a str,
    request_id: Option<&'a str>,
    trace_id: Option<&'a str>,
    client_ip: IpAddr,
    method: &'a str,
    host: Option<&'a str>,
    path: &'a str,
    status: Option<u16>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    duration_ms: f64,
    upstream: Option<SocketAddr>,
    route: Option<&'a str>,
    backend: Option<&'a str>,
    attempts: u32,
    error: Option<&'a str>,
}

fn format(entry: &Entry, format: Format, out: &mut Vec<u8>) {
    match format {
        Format::Json => {
            let mut time = [0u8; 24];
            let line = JsonLine {
                time: rfc3339(entry.time, &mut time),
                request_id: text(entry.request_id.as_ref()),
                trace_id: entry
                    .trace_id
                    .as_ref()
                    .and_then(|id| std::str::from_utf8(id).ok()),
                client_ip: entry.client_ip,
                method: entry.method.as_str(),
                host: text(entry.host.as_ref()),
                path: &entry.path,
                status: entry.status,
                bytes_in: entry.bytes_in,
                bytes_out: entry.bytes_out,
                duration_ms: entry.duration.as_secs_f64() * 1000.0,
                upstream: entry.endpoint,
                route: entry.route.as_deref(),
                backend: entry.backend.as_deref(),
                attempts: entry.attempts,
                error: entry.error,
            };
            let _ = serde_json::to_writer(&mut *out, &line);
        }
        Format::Common => {
            let _ = write!(
                out,
                "{} - - [{}] \"{} {} HTTP/1.1\" ",
                entry.client_ip,
                common_time(entry.time),
                entry.method,
                entry.path.escape_default(),
            );
            match entry.status {
                Some(status) => {
                    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes())
                }
                None => out.push(b'-'),
            }
            out.push(b' ');
            match entry.bytes_out {
                Some(bytes) => out.extend_from_slice(itoa::Buffer::new().format(bytes).as_bytes()),
                None => out.push(b'-'),
            }
        }
    }
    out.push(b'\n');
}

fn text(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok())
}

/// `2023-11-14T22:13:20.123Z`, written into `buf`.
fn rfc3339(time: SystemTime, buf: &mut [u8; 24]) -> &str {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil(secs / 86_400);
    let rest = secs % 86_400;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(
        cursor,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    );
    std::str::from_utf8(&buf[..]).unwrap_or("")
}

/// `14/Nov/2023:22:13:20 +0000`, the Common Log Format's time.
fn common_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (year, month, day) = civil(secs / 86_400);
    let rest = secs % 86_400;
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Year, month (1–12) and day of a day count since 1970-01-01 (Howard
/// Hinnant's civil-from-days).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            request_id: Some(HeaderValue::from_static("id-1")),
            trace_id: Some(*b"4bf92f3577b34da6a3ce929d0e0e4736"),
            client_ip: "192.0.2.7".parse().unwrap(),
            method: Method::POST,
            host: Some(HeaderValue::from_static("shop.example.com")),
            path: "/api/orders?x=\"1\"".into(),
            status: Some(201),
            bytes_in: Some(12),
            bytes_out: None,
            duration: Duration::from_micros(1500),
            endpoint: Some("127.0.0.1:9001".parse().unwrap()),
            route: Some("orders".into()),
            backend: Some("orders".into()),
            attempts: 2,
            error: None,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut out = Vec::new();
        format(&entry(), Format::Json, &mut out);
        assert!(out.ends_with(b"\n"));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(line["request_id"], "id-1");
        assert_eq!(line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(line["client_ip"], "192.0.2.7");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/api/orders?x=\"1\"");
        assert_eq!(line["status"], 201);
        assert_eq!(line["bytes_in"], 12);
        assert_eq!(line["bytes_out"], serde_json::Value::Null);
        assert_eq!(line["duration_ms"], 1.5);
        assert_eq!(line["upstream"], "127.0.0.1:9001");
        assert_eq!(line["route"], "orders");
        assert_eq!(line["attempts"], 2);
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_723), (2024, 1, 1));
        assert_eq!(civil(19_782), (2024, 2, 29));
        let leap = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(leap, &mut [0; 24]), "2024-02-29T12:34:56.789Z");
        assert_eq!(common_time(leap), "29/Feb/2024:12:34:56 +0000");
    }

    #[test]
    fn common_lines_escape_the_path() {
        let mut out = Vec::new();
        format(&entry(), Format::Common, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "192.0.2.7 - - [14/Nov/2023:22:13:20 +0000] \"POST /api/orders?x=\\\"1\\\" HTTP/1.1\" 201 -\n"
        );
    }
}
