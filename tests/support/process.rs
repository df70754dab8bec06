//! The `rgate` binary run as users run it, for tests that need a real
//! process (signals, `kill -9`, subcommands). Clients talk to 127.0.0.1 only.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const RGATE: &str = env!("CARGO_BIN_EXE_rgate");

/// A config file in a directory of its own, so whatever rgate keeps beside
/// it (the stats store) goes when the test ends.
pub struct ConfigFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

pub fn write_config(text: &str) -> ConfigFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgate.yml");
    std::fs::write(&path, text).unwrap();
    ConfigFile { dir, path }
}

/// A running rgate process, killed on drop.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin plane's address, when `--admin` gave one.
    pub admin: Option<SocketAddr>,
    /// Every stderr line so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts rgate on a free port with two workers and the admin plane off.
    pub fn start(config: &Path) -> Self {
        Self::start_with(config, &["--admin", "off"])
    }

    /// Starts rgate with `args` (e.g. `--admin 127.0.0.1:0`) and returns
    /// once it listens (and its admin plane does, when on).
    pub fn start_with(config: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(RGATE)
            .args(["--port", "0", "--bind", "127.0.0.1", "--workers", "2"])
            .args(args)
            .arg("--config")
            .arg(config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wants_admin = args.windows(2).any(|w| w[0] == "--admin" && w[1] != "off");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || (wants_admin && admin.is_none()) {
            let line = lines
                .next()
                .expect("rgate exited before listening")
                .unwrap();
            let value = || -> SocketAddr {
                let rest = line.split("addr=").nth(1).unwrap();
                rest.split_whitespace().next().unwrap().parse().unwrap()
            };
            if line.contains("rgate listening") {
                addr = Some(value());
            } else if line.contains("admin plane listening") {
                admin = Some(value());
            }
            seen.lock().unwrap().push(line);
        }
        // Keep draining stderr so rgate never blocks on a full pipe.
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            addr: addr.unwrap(),
            admin,
            stderr: seen,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "rgate did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET on its own connection; the whole response as text.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The JSON body of a GET.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let response = http_get(addr, path);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}
