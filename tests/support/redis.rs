//! Redis for the shared rate-limit tests: the instance `scripts/test.sh`
//! started (`RGATE_REDIS_URL`), or one of the test's own that it can stop
//! and start again. With `RGATE_REDIS_TESTS=1` a missing Redis is a failure,
//! never a silent pass.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn required() -> bool {
    std::env::var("RGATE_REDIS_TESTS").is_ok_and(|v| v == "1")
}

/// The shared test Redis, or `None` (skipped) when not required.
pub fn shared_url() -> Option<String> {
    match std::env::var("RGATE_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !required(),
                "RGATE_REDIS_TESTS=1 but RGATE_REDIS_URL is not set (scripts/test.sh starts one)"
            );
            eprintln!(
                "skipped: no RGATE_REDIS_URL; set RGATE_REDIS_TESTS=1 to make this a failure"
            );
            None
        }
    }
}

/// A redis-server of this test's own on 127.0.0.1, stopped (by PID) on drop.
pub struct OwnRedis {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    /// `None` (skipped) when redis-server is missing and not required.
    pub fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        match redis.spawn() {
            Ok(()) => Some(redis),
            Err(why) => {
                assert!(
                    !required(),
                    "RGATE_REDIS_TESTS=1 but redis-server cannot run: {why}"
                );
                eprintln!("skipped: {why}; set RGATE_REDIS_TESTS=1 to make this a failure");
                None
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .command("PING")
                .is_some_and(|reply| reply.starts_with("+PONG"))
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("redis-server did not answer on {}", self.addr))
    }

    /// Stops the server (SIGKILL, by PID): an outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.spawn().unwrap();
    }

    /// One inline command; the raw reply, or `None` if it does not answer.
    pub fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = [0; 512];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A route name no other test (or earlier run) uses: keys are namespaced by it.
pub fn unique_route(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u64(..))
}
