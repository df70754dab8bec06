//! The `rgate` binary's lifecycle under load: SIGTERM draining in-flight
//! requests, a busy port refused, and restarts that hand the listening
//! sockets from one process to the next. Every client here talks to
//! 127.0.0.1 only, and every load loop is bounded in requests and time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;

use process::{write_config, RGATE};
const POLL: Duration = Duration::from_millis(5);

/// A running rgate process, killed on drop so a failing test leaves nothing behind.
struct Rgate {
    child: Child,
    addr: SocketAddr,
    /// Every stderr line so far; complete once `stderr_done` has fired.
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_done: mpsc::Receiver<()>,
}

impl Rgate {
    /// Starts rgate and returns once it logs that it listens, or `Err` with
    /// its stderr if it exits first (e.g. the port was taken).
    fn start(config: &std::path::Path, port: u16, drain_timeout: &str) -> Result<Self, String> {
        Self::start_with(config, port, drain_timeout, &[])
    }

    /// As [`Rgate::start`], with more flags (e.g. `--handover-socket`).
    fn start_with(
        config: &std::path::Path,
        port: u16,
        drain_timeout: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Result<Self, String> {
        let mut child = Command::new(RGATE)
            .args([
                "--bind",
                "127.0.0.1",
                "--workers",
                "2",
                "--log-level",
                "info",
            ])
            .args([
                "--port",
                &port.to_string(),
                "--drain-timeout",
                drain_timeout,
                "--admin",
                "off",
            ])
            .args(extra)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening) = mpsc::channel();
        let (done_tx, stderr_done) = mpsc::channel();
        let collected = lines.clone();
        // Keeps reading to EOF, so rgate never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("rgate listening") {
                    let addr = line.split("addr=").nth(1).and_then(|rest| {
                        rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
                    });
                    let _ = listening_tx.send(addr);
                }
                collected.lock().unwrap().push(line);
            }
            let _ = done_tx.send(());
        });
        let mut rgate = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr: lines,
            stderr_done,
        };
        match listening.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(addr)) => {
                rgate.addr = addr;
                Ok(rgate)
            }
            Ok(None) => panic!("unparsable listening line: {:?}", rgate.stderr_text()),
            Err(_) => {
                let _ = rgate.child.kill();
                let _ = rgate.child.wait();
                let _ = rgate.stderr_done.recv_timeout(Duration::from_secs(5));
                Err(rgate.stderr_text())
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}", self.pid());
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit, then for its last stderr line.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "rgate (pid {}) still running after {within:?}; stderr:\n{}",
                self.pid(),
                self.stderr_text()
            );
            thread::sleep(POLL);
        };
        self.stderr_done
            .recv_timeout(Duration::from_secs(5))
            .expect("stderr closes when rgate exits");
        status
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Rgate {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A runtime hosting the in-process stub upstream.
fn upstream() -> (tokio::runtime::Runtime, rgate_upstream::Upstream) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream = runtime
        .block_on(rgate_upstream::Upstream::spawn(
            rgate_upstream::Config::default(),
        ))
        .unwrap();
    (runtime, upstream)
}

/// Polls `condition` until it holds, failing the test after `within`.
fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(POLL);
    }
}

/// Reads one HTTP/1.1 response from `stream`: status and body, the body read
/// to exactly its `content-length`, or to EOF without one.
fn read_response(stream: &mut TcpStream) -> io::Result<(u16, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line: {head}")))?;
    let length: Option<usize> = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse().ok())
    });
    let mut body = buffer.split_off(head_end);
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
            if body.len() != length {
                return Err(io::Error::other("body longer than content-length"));
            }
        }
        None => {
            stream.read_to_end(&mut body)?;
        }
    }
    Ok((status, body))
}

/// One GET on a fresh connection that closes after the answer.
fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )?;
    read_response(&mut stream)
}

#[test]
fn sigterm_drains_200_slow_requests_refuses_new_connections_and_exits_zero() {
    const SLOW: usize = 200;
    let (_runtime, upstream) = upstream();
    let file = write_config(&format!(
        "routes:\n  - {{path_prefix: /, backend: app}}\nbackends:\n  - {{name: app, servers: [\"{}\"]}}\n",
        upstream.addr()
    ));
    let drain_timeout = Duration::from_secs(10);
    let mut rgate = Rgate::start(file.path(), 0, "10s").unwrap();
    let addr = rgate.addr;

    // An idle keep-alive connection: one request answered, then nothing.
    let mut idle = TcpStream::connect(addr).unwrap();
    write!(idle, "GET /idle HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (status, _) = read_response(&mut idle).unwrap();
    assert_eq!(status, 200);

    // 200 slow requests in flight, each on its own connection.
    let seen_before = upstream.requests();
    let clients: Vec<_> = (0..SLOW)
        .map(|_| {
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || get(addr, "/slow/1500"))
                .unwrap()
        })
        .collect();
    wait_until(
        Duration::from_secs(10),
        "the upstream to see all slow requests",
        || upstream.requests() - seen_before >= SLOW as u64,
    );

    // Connected before SIGTERM, but its request is only sent once the drain
    // has begun: a client that connected in time must still be answered.
    let mut late = TcpStream::connect(addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    let signalled = Instant::now();
    rgate.sigterm();

    // Idle keep-alive connections are closed as the drain starts, not at exit.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        idle.read(&mut byte).unwrap(),
        0,
        "EOF on the idle connection"
    );
    assert!(
        rgate.is_running(),
        "the idle connection was closed during the drain, while the slow requests still run"
    );

    // The listeners close at once: new connections are refused.
    wait_until(
        Duration::from_secs(1),
        "new connections to be refused",
        || match TcpStream::connect(addr) {
            // Accepted just before the listener closed: hang up, so this probe holds nothing open.
            Ok(_) => false,
            // Reset: the handshake was under way as the listener closed, so the
            // kernel answered its last step with a reset. Never established either.
            Err(error) => {
                assert!(
                    matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ),
                    "{error}"
                );
                true
            }
        },
    );
    let refused_after = signalled.elapsed();
    assert!(rgate.is_running(), "refusing while still draining");

    write!(
        late,
        "GET /late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (status, body) = read_response(&mut late).expect("the late request is answered");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("/late"));

    let status = rgate.wait_exit(drain_timeout);
    let exited_after = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", rgate.stderr_text());

    for client in clients {
        let (status, body) = client.join().unwrap().expect("slow request answered");
        assert_eq!(status, 200);
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("the whole JSON body");
        assert_eq!(echo["path"], "/slow/1500");
    }
    let stderr = rgate.stderr_text();
    let stopped = stderr
        .lines()
        .find(|line| line.contains("rgate stopped"))
        .unwrap_or_else(|| panic!("no \"rgate stopped\" line:\n{stderr}"));
    assert!(
        stopped.contains(&format!("drained={SLOW} aborted=0")),
        "{stopped}"
    );
    eprintln!("refused after {refused_after:?}, exited after {exited_after:?}: {stopped}");
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Bounded client load: `clients` threads, each sending GETs on fresh
/// connections until stopped, `max_requests` are sent, or `max_time` passes.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// Each answer's body ("A" or "B") and when its request started.
    answers: Arc<Mutex<Vec<(Instant, String)>>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize, max_requests: u64, max_time: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + max_time;
        let threads = (0..clients)
            .map(|_| {
                let (stop, sent) = (stop.clone(), sent.clone());
                let (answers, errors) = (answers.clone(), errors.clone());
                thread::spawn(move || {
                    while !stop.load(Relaxed)
                        && Instant::now() < deadline
                        && sent.fetch_add(1, Relaxed) < max_requests
                    {
                        let started = Instant::now();
                        match get(addr, "/who") {
                            Ok((200, body)) => answers
                                .lock()
                                .unwrap()
                                .push((started, String::from_utf8_lossy(&body).into_owned())),
                            Ok((status, _)) => errors.lock().unwrap().push(format!("{status}")),
                            Err(error) => errors.lock().unwrap().push(error.to_string()),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            answers,
            errors,
            threads,
        }
    }

    fn answered(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    fn count(&self, body: &str) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, b)| b == body)
            .count()
    }

    fn finish(mut self) -> (Vec<(Instant, String)>, Vec<String>) {
        self.stop.store(true, Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (answers, errors)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Starts rgate on a port found free, retrying if something takes it meanwhile.
fn start_on_free_port(config: &std::path::Path, extra: &[&std::ffi::OsStr]) -> Rgate {
    let mut attempts = 0;
    loop {
        attempts += 1;
        match Rgate::start_with(config, free_port(), "10s", extra) {
            Ok(rgate) => break rgate,
            Err(stderr) if attempts < 5 => eprintln!("retrying on another port: {stderr}"),
            Err(stderr) => panic!("rgate did not start: {stderr}"),
        }
    }
}

#[test]
fn a_second_rgate_on_a_busy_port_is_refused_and_the_first_keeps_it() {
    let config = write_config("routes: []\ndefault_response: {body: \"A\", status_code: 200}\n");
    let a = start_on_free_port(config.path(), &[]);
    let port = a.addr.port();
    let stderr = match Rgate::start(config.path(), port, "10s") {
        Ok(mut b) => panic!(
            "a second rgate started on the busy port {port}: {:?} ({:?})",
            b.stderr_text(),
            b.wait_exit(Duration::from_secs(1))
        ),
        Err(stderr) => stderr,
    };
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("the port is in use"), "{stderr}");
    assert!(stderr.contains("--take-over"), "{stderr}");
    // Every connection still reaches the first.
    for _ in 0..50 {
        assert_eq!(get(a.addr, "/").unwrap(), (200, b"A".to_vec()));
    }
}

#[test]
fn a_handover_under_load_loses_no_request_and_the_old_process_drains_out() {
    // Each process names itself in its answers, so the test sees who served what.
    let config = |name: &str| {
        write_config(&format!(
            "routes: []\ndefault_response: {{body: \"{name}\", status_code: 200}}\n"
        ))
    };
    let (config_a, config_b, config_c) = (config("A"), config("B"), config("C"));
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let handover = [
        std::ffi::OsStr::new("--handover-socket"),
        socket.as_os_str(),
    ];
    let take_over = [
        handover[0],
        handover[1],
        std::ffi::OsStr::new("--take-over"),
    ];

    let mut a = start_on_free_port(config_a.path(), &handover);
    let port = a.addr.port();
    let load = Load::start(a.addr, 4, 6000, Duration::from_secs(20));
    wait_until(Duration::from_secs(5), "A to serve some requests", || {
        load.count("A") >= 100
    });

    // B takes A's sockets; A drains and exits on its own, no signal needed.
    let mut b =
        Rgate::start_with(config_b.path(), port, "10s", &take_over).expect("B takes over A's port");
    assert_eq!(b.addr.port(), port);
    let status = a.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", a.stderr_text());
    let a_exited = Instant::now();
    let a_log = a.stderr_text();
    assert!(
        a_log.contains("listeners handed over to a new rgate"),
        "{a_log}"
    );
    assert!(a_log.contains("rgate stopped"), "{a_log}");
    let answered_when_a_exited = load.answered();
    wait_until(Duration::from_secs(5), "B to serve requests alone", || {
        load.answered() >= answered_when_a_exited + 300
    });

    // And B hands over again, to C, on the same socket path.
    let c =
        Rgate::start_with(config_c.path(), port, "10s", &take_over).expect("C takes over B's port");
    let status = b.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", b.stderr_text());
    let b_exited = Instant::now();
    wait_until(Duration::from_secs(5), "C to serve requests", || {
        load.count("C") >= 100
    });
    let sent = load.sent.load(Relaxed);
    let (answers, errors) = load.finish();

    let served_by = |name: &str| answers.iter().filter(|(_, b)| b == name).count();
    let (by_a, by_b, by_c) = (served_by("A"), served_by("B"), served_by("C"));
    eprintln!(
        "handovers: {} answered ({by_a} by A, {by_b} by B, {by_c} by C), {} errors, {} attempted",
        answers.len(),
        errors.len(),
        sent.min(6000)
    );
    // No refused connection, no reset, no error status through both handovers.
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert_eq!(by_a + by_b + by_c, answers.len(), "only A, B and C answer");
    let only_after = |when: Instant, names: &[&str]| {
        answers
            .iter()
            .filter(|(started, _)| *started > when)
            .all(|(_, b)| names.contains(&b.as_str()))
    };
    assert!(
        only_after(a_exited, &["B", "C"]),
        "A answered after it exited"
    );
    assert!(only_after(b_exited, &["C"]), "B answered after it exited");
    drop(c);
}
