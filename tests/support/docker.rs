//! Support for the Docker end-to-end tests (`tests/docker.rs`).
//!
//! rgate is a black box here: the `rgate` binary is spawned with
//! `--port 0 --bind 127.0.0.1 --config <temp file>` and learns its address
//! from the `rgate listening addr=` line on stderr. Upstreams are containers
//! of the local image `rgate-test-upstream:latest` (built from the
//! `rgate-upstream` binary by `scripts/build-test-image.sh`), on the host
//! network, bound to 127.0.0.1.
//!
//! Isolation: every container of a test carries `rgate.test=<run id>` and is
//! removed by that label when the test ends (a drop guard, so also on
//! panic); `app_name` values carry the run id too, so tests running in
//! parallel never match each other's containers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The image every test container runs.
pub(crate) const IMAGE: &str = "rgate-test-upstream:latest";

/// How long a container may take to answer its own `/health` after `docker run`.
const CONTAINER_READY: Duration = Duration::from_secs(15);
/// How long rgate may take to log its listening address.
const GATEWAY_READY: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Docker availability, the image
// ---------------------------------------------------------------------------

/// The repository's root, for scripts and files the tests use as users would.
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `docker ARGS`, with its output; panics only if the CLI cannot be spawned.
fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")))
}

/// `docker ARGS` that must succeed; returns its trimmed stdout.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether Docker answers. With `RGATE_DOCKER_TESTS=1` a missing Docker is
/// a failure (panic), never a silent pass; without it the test is skipped.
fn docker_required() -> bool {
    let required = std::env::var("RGATE_DOCKER_TESTS").is_ok_and(|v| v == "1");
    let answer = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    match answer {
        Ok(out) if out.status.success() => true,
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                !required,
                "RGATE_DOCKER_TESTS=1 but Docker does not answer: {why}"
            );
            eprintln!("skipped: Docker does not answer ({why}); set RGATE_DOCKER_TESTS=1 to make this a failure");
            false
        }
    }
}

/// The `rgate-upstream` binary of the profile this test was built with:
/// `target/<profile>/rgate-upstream`, next to `target/<profile>/deps/<this test>`.
/// Cargo builds it with the workspace (`--workspace`); when only this
/// package was built it is built here.
fn upstream_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    let binary = profile_dir.join("rgate-upstream");
    if binary.is_file() {
        return binary;
    }
    let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(repo_root())
        .args([
            "build",
            "-p",
            "rgate-upstream",
            "--bin",
            "rgate-upstream",
            "--target-dir",
        ])
        .arg(target_dir)
        .stdin(Stdio::null());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("spawn cargo build -p rgate-upstream");
    assert!(
        out.status.success() && binary.is_file(),
        "building rgate-upstream failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

/// Builds [`IMAGE`] from the current `rgate-upstream` binary unless it was
/// already built from that very binary. The script holds a file lock, so
/// parallel test processes build it once.
fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let binary = upstream_binary();
        run_script(&[
            "scripts/build-test-image.sh".as_ref(),
            "--if-changed".as_ref(),
            binary.as_os_str(),
            IMAGE.as_ref(),
        ]);
    });
}

/// rgate's own image, as `scripts/build-image.sh` builds it for users, from
/// the binary of this test build (rebuilt only when the binary changed).
/// Used by tests/compose.rs.
#[allow(dead_code)]
pub(crate) const RGATE_IMAGE: &str = "rgate-test:latest";

#[allow(dead_code)]
pub(crate) fn ensure_rgate_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        run_script(&[
            "scripts/build-image.sh".as_ref(),
            "--if-changed".as_ref(),
            "--binary".as_ref(),
            env!("CARGO_BIN_EXE_rgate").as_ref(),
            RGATE_IMAGE.as_ref(),
        ]);
    });
}

/// `bash SCRIPT ARGS…` from the repository's root, which must succeed.
fn run_script(args: &[&std::ffi::OsStr]) {
    let out = Command::new("bash")
        .current_dir(repo_root())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An id unique across parallel test processes and threads.
pub(crate) fn unique_id() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{:x}-{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on, below Linux's ephemeral
/// range (32768+), so no outgoing connection takes it before a container binds it.
pub(crate) fn free_port() -> u16 {
    for _ in 0..500 {
        let port = fastrand::u16(20_000..32_000);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in 20000..32000");
}

// ---------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------

/// The containers of one test: all labelled `rgate.test=<id>`, all removed on drop.
#[derive(Debug)]
pub(crate) struct DockerRun {
    id: String,
}

impl DockerRun {
    /// `None` when Docker is absent and `RGATE_DOCKER_TESTS` is not `1`
    /// (the test then returns early); panics when it is `1`.
    pub(crate) fn new() -> Option<DockerRun> {
        if !docker_required() {
            return None;
        }
        ensure_image();
        Some(DockerRun { id: unique_id() })
    }

    /// A label value unique to this run, e.g. for `app_name`.
    pub(crate) fn unique(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    /// A container named `<name>` (made unique) to configure and start.
    pub(crate) fn container(&self, name: &str) -> ContainerBuilder<'_> {
        ContainerBuilder {
            run: self,
            name: format!("rgate-t-{}-{name}", self.id),
            labels: Vec::new(),
            docker_args: Vec::new(),
            port: None,
            port_label: true,
        }
    }

    fn label(&self) -> String {
        format!("rgate.test={}", self.id)
    }
}

impl Drop for DockerRun {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label());
        let out = docker(&["ps", "-aq", "--filter", &filter]);
        let ids = String::from_utf8_lossy(&out.stdout);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = docker(&args);
        }
    }
}

/// Options of a container before `docker run`.
#[derive(Debug)]
pub(crate) struct ContainerBuilder<'a> {
    run: &'a DockerRun,
    name: String,
    labels: Vec<String>,
    docker_args: Vec<String>,
    port: Option<u16>,
    port_label: bool,
}

impl ContainerBuilder<'_> {
    /// Adds the Docker label `key=value`.
    pub(crate) fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push(format!("{key}={value}"));
        self
    }

    /// Adds `app_name=<app>` and `env=production`: a member of `prod(app)` backends.
    pub(crate) fn production(self, app: &str) -> Self {
        self.label("app_name", app).label("env", "production")
    }

    /// Listens on `port` instead of a free port picked at random.
    pub(crate) fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Leaves out the `rgate.port` label that containers carry by default.
    pub(crate) fn without_port_label(mut self) -> Self {
        self.port_label = false;
        self
    }

    /// Extra `docker run` options (e.g. `--health-cmd`), placed before the image.
    pub(crate) fn docker_args(mut self, args: &[&str]) -> Self {
        self.docker_args.extend(args.iter().map(|&a| a.to_owned()));
        self
    }

    /// `docker run -d`, then waits until the stub answers its own `/health`
    /// on 127.0.0.1 (retrying on another port if the picked one was taken).
    pub(crate) fn start(self) -> Container {
        let attempts = if self.port.is_some() { 1 } else { 3 };
        let mut last_error = String::new();
        for attempt in 0..attempts {
            let port = self.port.unwrap_or_else(free_port);
            let name = if attempt == 0 {
                self.name.clone()
            } else {
                format!("{}-r{attempt}", self.name)
            };
            let listen = format!("127.0.0.1:{port}");
            let run_label = self.run.label();
            let port_label = format!("rgate.port={port}");
            let mut args: Vec<&str> = vec!["run", "-d", "--network", "host", "--name", &name];
            args.extend(["--label", &run_label]);
            if self.port_label {
                args.extend(["--label", &port_label]);
            }
            for label in &self.labels {
                args.extend(["--label", label]);
            }
            args.extend(self.docker_args.iter().map(String::as_str));
            args.extend([IMAGE, "--listen", &listen, "--name", &name]);
            let id = docker_ok(&args);
            let started_at = Instant::now();
            let container = Container {
                name,
                id,
                port,
                started_at,
            };
            match container.wait_answers(CONTAINER_READY) {
                Ok(()) => return container,
                Err(e) => {
                    last_error = format!("{e}; logs: {}", container.logs());
                    let _ = docker(&["rm", "-f", &container.id]);
                }
            }
        }
        panic!("container {} never answered: {last_error}", self.name);
    }
}

/// A running test container.
#[derive(Debug)]
pub(crate) struct Container {
    /// Docker name, also the stub's `--name`: the `x-upstream-name` it answers with.
    pub(crate) name: String,
    pub(crate) id: String,
    /// The port it listens on, at 127.0.0.1.
    pub(crate) port: u16,
    /// When `docker run` returned.
    pub(crate) started_at: Instant,
}

impl Container {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Polls the stub's own `/health` until 200, or until `within` passes.
    fn wait_answers(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            match get(self.addr(), "/health") {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => {
                    if Instant::now() > deadline {
                        return Err(format!("/health answered {}", r.status));
                    }
                }
                Err(e) => {
                    if Instant::now() > deadline {
                        return Err(format!("/health: {e}"));
                    }
                    if self.state() == "exited" {
                        return Err("the container exited".to_owned());
                    }
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `docker logs` (stdout and stderr), for failure messages.
    pub(crate) fn logs(&self) -> String {
        let out = docker(&["logs", &self.id]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `State.Status`: created, running, exited...
    pub(crate) fn state(&self) -> String {
        let out = docker(&["inspect", "--format", "{{.State.Status}}", &self.id]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `State.Health.Status`: starting, healthy, unhealthy.
    pub(crate) fn health(&self) -> String {
        docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", &self.id])
    }

    /// Polls until the Docker health status is `want`, at most `within`.
    pub(crate) fn wait_health(&self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let health = self.health();
            if health == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {} stayed {health}, not {want}, for {within:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `docker stop -t 10`: SIGTERM, which the stub handles by draining.
    pub(crate) fn stop(&self) {
        docker_ok(&["stop", "-t", "10", &self.id]);
    }

    /// `docker kill` (SIGKILL): the container dies at once, mid-request.
    pub(crate) fn kill(&self) {
        docker_ok(&["kill", &self.id]);
    }

    /// `docker start`, then waits until it answers again; returns when
    /// `docker start` returned.
    pub(crate) fn start_again(&self) -> Instant {
        docker_ok(&["start", &self.id]);
        let started = Instant::now();
        self.wait_answers(CONTAINER_READY)
            .unwrap_or_else(|e| panic!("{} after docker start: {e}", self.name));
        started
    }

    /// `docker restart -t 10`, then waits until it answers again; returns
    /// when `docker restart` returned.
    pub(crate) fn restart(&self) -> Instant {
        docker_ok(&["restart", "-t", "10", &self.id]);
        let started = Instant::now();
        self.wait_answers(CONTAINER_READY)
            .unwrap_or_else(|e| panic!("{} after docker restart: {e}", self.name));
        started
    }

    /// `docker exec <container> ARGS` that must succeed.
    pub(crate) fn exec(&self, args: &[&str]) {
        let mut all = vec!["exec", self.id.as_str()];
        all.extend(args);
        docker_ok(&all);
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// One backend of a generated config, routed from `path_prefix`.
#[derive(Debug)]
pub(crate) struct BackendSpec {
    pub(crate) name: String,
    pub(crate) path_prefix: String,
    pub(crate) match_labels: Vec<String>,
    pub(crate) port: Option<u16>,
    pub(crate) balance: Option<String>,
}

impl BackendSpec {
    /// A Docker backend named `name` at `/<name>`, matching `labels` (`key=value`).
    pub(crate) fn new(name: &str, labels: &[String]) -> BackendSpec {
        BackendSpec {
            name: name.to_owned(),
            path_prefix: format!("/{name}"),
            match_labels: labels.to_vec(),
            port: None,
            balance: None,
        }
    }

    /// Sets the backend's `balance:` policy.
    pub(crate) fn with_balance(mut self, balance: &str) -> BackendSpec {
        self.balance = Some(balance.to_owned());
        self
    }

    /// Sets the backend's `port:` key.
    pub(crate) fn with_port(mut self, port: u16) -> BackendSpec {
        self.port = Some(port);
        self
    }
}

/// The status and body of the generated configs' `default_response`.
pub(crate) const DEFAULT_STATUS: u16 = 403;
pub(crate) const DEFAULT_BODY: &str = "This is not reachable";

/// A config in the contract's shape for `backends`, plus raw YAML `extra`
/// (e.g. a `docker:` section) appended at the top level.
pub(crate) fn config_yaml(backends: &[BackendSpec], extra: &str) -> String {
    let mut y = String::from("routes:\n");
    for b in backends {
        let _ = writeln!(
            y,
            "  - path_prefix: {}\n    backend: {}",
            b.path_prefix, b.name
        );
    }
    let _ = writeln!(
        y,
        "default_response:\n  body: \"{DEFAULT_BODY}\"\n  status_code: {DEFAULT_STATUS}"
    );
    y.push_str("backends:\n");
    for b in backends {
        let _ = writeln!(y, "  - name: {}\n    match_labels:", b.name);
        for l in &b.match_labels {
            let _ = writeln!(y, "      - {l}");
        }
        if let Some(port) = b.port {
            let _ = writeln!(y, "    port: {port}");
        }
        if let Some(balance) = &b.balance {
            let _ = writeln!(y, "    balance: {balance}");
        }
    }
    y.push_str(extra);
    y
}

// ---------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------

/// A running `rgate` process; killed (by PID) on drop, its stderr printed
/// if the test is panicking.
#[derive(Debug)]
pub(crate) struct Gateway {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The admin plane, on a loopback port picked at start.
    pub(crate) admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Writes `yaml` to a temp file and starts
    /// `rgate --port 0 --bind 127.0.0.1 --config <file>`, waiting (bounded)
    /// for its `rgate listening addr=` line.
    pub(crate) fn start(yaml: &str) -> Gateway {
        // A directory of its own: the stats store is kept beside the config.
        let dir = tempfile::Builder::new()
            .prefix("rgate-docker-test-")
            .tempdir()
            .expect("temp config dir");
        let config = dir.path().join("rgate.yml");
        std::fs::write(&config, yaml).expect("write config");

        // A free port for the admin plane (bound, then released).
        let admin = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free admin port");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rgate"))
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--log-level",
                "info",
                "--admin",
            ])
            .arg(admin.to_string())
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rgate");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // Reads stderr to the end, so rgate never blocks on a full pipe.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line) {
                    let _ = tx.send(addr);
                }
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let addr = match rx.recv_timeout(GATEWAY_READY) {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                // Give the reader a moment to collect the last lines.
                thread::sleep(Duration::from_millis(100));
                let lines = log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .join("\n");
                panic!(
                    "rgate did not log `rgate listening addr=` ({e:?}; exit: {status}); config:\n{yaml}\nstderr:\n{lines}"
                );
            }
        };
        Gateway {
            child,
            addr,
            admin,
            log,
            config,
            _dir: dir,
        }
    }

    /// Replaces the config file's text; rgate watches it and reloads. Waits
    /// (bounded) until rgate logs the reload.
    pub(crate) fn rewrite_config(&self, yaml: &str) {
        let before = self.log_text().matches("config reloaded").count();
        std::fs::write(&self.config, yaml).expect("rewrite config");
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log_text().matches("config reloaded").count() == before {
            assert!(
                Instant::now() < deadline,
                "rgate did not reload:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// One request on a new connection (`Connection: close`).
    pub(crate) fn try_get(&self, path: &str) -> io::Result<Response> {
        get(self.addr, path)
    }

    /// One request that must get an answer (any status); panics with rgate's log otherwise.
    pub(crate) fn get(&self, path: &str) -> Response {
        self.try_get(path).unwrap_or_else(|e| {
            panic!(
                "GET {path} on rgate at {}: {e}\n{}",
                self.addr,
                self.log_text()
            )
        })
    }

    /// A text document from the admin plane (such as `/metrics`).
    pub(crate) fn admin_text(&self, path: &str) -> String {
        let response = get(self.admin, path)
            .unwrap_or_else(|e| panic!("GET {path} on the admin plane: {e}\n{}", self.log_text()));
        String::from_utf8_lossy(&response.body).into_owned()
    }

    /// The value of the first `/metrics` sample whose line starts with `prefix`.
    pub(crate) fn admin_metric(&self, prefix: &str) -> f64 {
        let metrics = self.admin_text("/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
            .parse()
            .expect("a number")
    }

    /// A JSON document from the admin plane.
    pub(crate) fn admin_json(&self, path: &str) -> serde_json::Value {
        let response = get(self.admin, path)
            .unwrap_or_else(|e| panic!("GET {path} on the admin plane: {e}\n{}", self.log_text()));
        serde_json::from_slice(&response.body).expect("admin JSON")
    }

    /// True while the process has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// rgate's stderr so far.
    pub(crate) fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Sends GETs to `path` until one is answered 200 by `upstream`, at most
    /// `within` after `since`; returns how long after `since` that was.
    pub(crate) fn wait_routed_to(
        &self,
        path: &str,
        upstream: &str,
        since: Instant,
        within: Duration,
    ) -> Duration {
        loop {
            let last = match self.try_get(path) {
                Ok(r) if r.status == 200 && r.upstream() == Some(upstream) => {
                    return since.elapsed();
                }
                Ok(r) => r.summary(),
                Err(e) => e.to_string(),
            };
            assert!(
                since.elapsed() < within,
                "GET {path}: no 200 from {upstream} within {within:?}; last answer: {last}\nrgate log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends GETs to `path` until one is a 503 whose JSON `error` is
    /// `no_endpoints` for `backend`, at most `within` after `since`.
    pub(crate) fn wait_no_endpoints(
        &self,
        path: &str,
        backend: &str,
        since: Instant,
        within: Duration,
    ) -> Response {
        loop {
            let last = match self.try_get(path) {
                Ok(r)
                    if r.status == 503
                        && r.json_error()
                            == Some(("no_endpoints".to_owned(), backend.to_owned())) =>
                {
                    return r;
                }
                Ok(r) => r.summary(),
                Err(e) => e.to_string(),
            };
            assert!(
                since.elapsed() < within,
                "GET {path}: no 503 no_endpoints for {backend} within {within:?}; last answer: {last}\nrgate log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends GETs to `path` until `n` in a row are answered 200 by
    /// `upstream`, at most `within` after `since`; returns how long after
    /// `since` the run of `n` started.
    pub(crate) fn wait_only_routed_to(
        &self,
        path: &str,
        upstream: &str,
        n: usize,
        since: Instant,
        within: Duration,
    ) -> Duration {
        let mut in_a_row = 0;
        let mut run_started = since.elapsed();
        let mut last_other = String::from("none");
        loop {
            match self.try_get(path) {
                Ok(r) if r.status == 200 && r.upstream() == Some(upstream) => {
                    if in_a_row == 0 {
                        run_started = since.elapsed();
                    }
                    in_a_row += 1;
                    if in_a_row >= n {
                        return run_started;
                    }
                }
                Ok(r) => {
                    in_a_row = 0;
                    last_other = r.summary();
                }
                Err(e) => {
                    in_a_row = 0;
                    last_other = e.to_string();
                }
            }
            assert!(
                since.elapsed() < within,
                "GET {path}: not {n} answers in a row from {upstream} within {within:?}; last other answer: {last_other}\nrgate log:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `n` GETs to `path`; counts answers by `x-upstream-name`
    /// (`<status NNN>` for answers without it). Panics on I/O errors.
    pub(crate) fn tally(&self, path: &str, n: usize) -> BTreeMap<String, usize> {
        let mut client = Client::new(self.addr);
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let r = client.get(path).unwrap_or_else(|e| {
                panic!("request {i} of {n} to {path}: {e}\n{}", self.log_text())
            });
            let key = match (r.status, r.upstream()) {
                (200, Some(name)) => name.to_owned(),
                _ => format!("<{}>", r.summary()),
            };
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- rgate stderr ----\n{}\n----", self.log_text());
        }
    }
}

/// The address in a `... rgate listening addr=127.0.0.1:PORT ...` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("rgate listening addr=")? + "rgate listening addr=".len()..];
    let token: String = rest
        .trim_start_matches(['"', '\''])
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    token.parse().ok()
}

// ---------------------------------------------------------------------------
// A minimal blocking HTTP/1.1 client
// ---------------------------------------------------------------------------

/// One HTTP response, fully read.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// From sending the request to the end of the body.
    pub(crate) elapsed: Duration,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `x-upstream-name` header: which container answered.
    pub(crate) fn upstream(&self) -> Option<&str> {
        self.header("x-upstream-name")
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.summary()))
    }

    /// `(error, backend)` of a JSON error body, if it is one.
    pub(crate) fn json_error(&self) -> Option<(String, String)> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let error = v.get("error")?.as_str()?.to_owned();
        let backend = v.get("backend")?.as_str()?.to_owned();
        Some((error, backend))
    }

    /// `STATUS [upstream] body` for messages.
    pub(crate) fn summary(&self) -> String {
        let text = self.text();
        let mut body: String = text.chars().take(200).collect();
        if body.len() < text.len() {
            body.push('…');
        }
        match self.upstream() {
            Some(u) => format!("{} from {u}: {body}", self.status),
            None => format!("{} {body}", self.status),
        }
    }
}

/// `GET path` on a new connection with `Connection: close`.
pub(crate) fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let stream = connect(addr)?;
    let mut reader = BufReader::new(stream);
    let start = Instant::now();
    write_request(reader.get_mut(), path, false)?;
    let (mut r, _) = read_response(&mut reader)?;
    r.elapsed = start.elapsed();
    Ok(r)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn write_request(stream: &mut TcpStream, path: &str, keep_alive: bool) -> io::Result<()> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: rgate-docker-test\r\nConnection: {connection}\r\n\r\n"
    );
    stream.write_all(req.as_bytes())
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one response; the bool tells whether the server closes the connection after it.
fn read_response(reader: &mut BufReader<TcpStream>) -> io::Result<(Response, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad("connection closed inside the headers".to_owned()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {l:?}")))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let mut closes =
        version == "HTTP/1.0" || find("connection").is_some_and(|v| v.contains("close"));
    let mut body = Vec::new();
    if (100..200).contains(&status) || status == 204 || status == 304 {
        // no body
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size_hex = line.trim_end().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_hex.trim(), 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            line.clear();
            reader.read_line(&mut line)?; // CRLF after the chunk
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
        closes = true;
    }
    Ok((
        Response {
            status,
            headers,
            body,
            elapsed: Duration::ZERO,
        },
        closes,
    ))
}

/// A keep-alive client: reuses its connection while the server keeps it open.
#[derive(Debug)]
pub(crate) struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    pub(crate) fn get(&mut self, path: &str) -> io::Result<Response> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => BufReader::new(connect(self.addr)?),
        };
        let start = Instant::now();
        write_request(conn.get_mut(), path, true)?;
        let (mut r, closes) = read_response(&mut conn)?;
        r.elapsed = start.elapsed();
        if !closes {
            self.conn = Some(conn);
        }
        Ok(r)
    }
}

// ---------------------------------------------------------------------------
// Bounded load through a gateway (tests/compose.rs, tests/docker_hosts.rs)
// ---------------------------------------------------------------------------

/// The upstream's name (`x-upstream-name`) of a GET of `path`, or the failure.
#[allow(dead_code)]
pub(crate) fn upstream_name(addr: SocketAddr, path: &str) -> Result<String, String> {
    let response = get(addr, path).map_err(|e| e.to_string())?;
    match (response.status, response.upstream()) {
        (200, Some(name)) => Ok(name.to_owned()),
        _ => Err(response.summary()),
    }
}

/// Waits (bounded) until `done`, polling every 50 ms.
#[allow(dead_code)]
pub(crate) fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Two clients sending GETs of `path` (one connection each, 2 ms apart)
/// until stopped, 20 000 each are sent or a minute passes; every answer's
/// upstream name or failure is kept in order.
#[allow(dead_code)]
pub(crate) struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    results: Arc<Mutex<Vec<Result<String, String>>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

#[allow(dead_code)]
impl Load {
    pub(crate) fn start(addr: SocketAddr, path: &'static str) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|_| {
                let (stop, results) = (stop.clone(), results.clone());
                thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        let answer = upstream_name(addr, path);
                        results
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(answer);
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Self {
            stop,
            results,
            threads,
        }
    }

    /// Answers so far.
    pub(crate) fn len(&self) -> usize {
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The answers from the `from`-th on.
    pub(crate) fn since(&self, from: usize) -> Vec<Result<String, String>> {
        self.results.lock().unwrap_or_else(PoisonError::into_inner)[from..].to_vec()
    }

    /// Stops the clients; every answer.
    pub(crate) fn finish(mut self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        std::mem::take(&mut *self.results.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
