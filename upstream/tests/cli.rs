//! Runs the `rgate-upstream` binary: listening line, serving, SIGTERM drain and exit code, CLI validation.

// Test helpers outside #[test] fns are not covered by clippy's allow-unwrap-in-tests.
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rgate-upstream");

/// The running binary; killed on drop if a test failed before it exited.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
}

/// Starts the binary on an OS-chosen port and reads its address from stderr.
fn start(args: &[&str]) -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let proc = Proc(child);
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("rgate-upstream listening addr=")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (proc, addr)
}

/// Sends one request with `connection: close`, returns the raw response.
fn request(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    raw
}

fn sigterm(proc: &Proc) {
    let status = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to five seconds for the process to exit, returns its exit code.
fn wait_exit(proc: &mut Proc) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serves_and_exits_zero_on_sigterm() {
    let (mut proc, addr) = start(&["--name", "bin", "--fixed-body-size", "64"]);
    let raw = request(addr, "/api/x");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("x-upstream-name: bin\r\n"), "{raw}");
    assert_eq!(raw.split_once("\r\n\r\n").unwrap().1.len(), 64);
    assert!(request(addr, "/health").ends_with("\r\n\r\nok"));

    sigterm(&proc);
    assert_eq!(wait_exit(&mut proc), Some(0));
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let (mut proc, addr) = start(&["--threads", "2"]);
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"GET /slow/300 HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .unwrap();
    // Signal only once the slow request is in flight (it and this /__stats).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !request(addr, "/__stats").contains(r#""requests":2"#) {
        assert!(Instant::now() < deadline, "slow request never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    sigterm(&proc);
    let mut raw = String::new();
    slow.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert_eq!(wait_exit(&mut proc), Some(0));
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn rejects_invalid_arguments() {
    for args in [
        &["--listen", "127.0.0.1:0", "--error-rate", "1.5"][..],
        &["--listen", "127.0.0.1:0", "--threads", "0"],
        &["--listen", "127.0.0.1:0", "--error-status", "42"],
        &["--listen", "nowhere"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
    }
}
