//! Several Docker hosts as one discovery source, with two real daemons on
//! this machine: the usual one, and a second `dockerd` this test starts with
//! its own socket, data root, exec root and pid file (and stops, by PID). A
//! backend spread over both takes traffic from both; the second daemon
//! stopped under load costs no request (its containers leave rotation and
//! retries go to the other host); restarted, its container is back.
//!
//! Needs Docker and root: `#[ignore]`d for a plain `cargo test`;
//! `scripts/test.sh` runs it with `RGATE_DOCKER_TESTS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only part of the Docker harness is needed here.
#[allow(dead_code)]
#[path = "support/docker.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{
    config_yaml, free_port, unique_id, wait_until, BackendSpec, DockerRun, Gateway, Load, IMAGE,
};

/// A second Docker daemon, stopped (SIGTERM, then SIGKILL) on drop.
struct SecondDaemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SecondDaemon {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn start(dir: tempfile::TempDir) -> Self {
        let mut daemon = Self { dir, child: None };
        daemon.run();
        daemon
    }

    fn run(&mut self) {
        let root = self.dir.path();
        let log = std::fs::File::create(root.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a second dockerd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the second dockerd did not answer: {}",
                std::fs::read_to_string(root.join("dockerd.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM to the daemon (it stops its containers), and waits for it.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.wait();
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("--host")
            .arg(self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker --host {} {}: {}",
            self.host(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for SecondDaemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        // dockerd leaves mounts under its exec root (the default network
        // namespace); unmounted, deepest first, so the directory can go.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .filter(|point| point.starts_with(&root))
            .collect();
        points.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in points {
            let _ = Command::new("umount").arg(point).status();
        }
    }
}

/// Copies the stub upstream's image into the second daemon.
fn load_image(daemon: &SecondDaemon) {
    let mut save = Command::new("docker")
        .args(["save", IMAGE])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("docker")
        .arg("--host")
        .arg(daemon.host())
        .arg("load")
        .stdin(save.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(save.wait().unwrap().success(), "docker save {IMAGE} failed");
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
}

fn who(addr: std::net::SocketAddr) -> Result<String, String> {
    support::upstream_name(addr, "/spread/x")
}

#[test]
#[ignore = "needs Docker and root: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn a_backend_spread_over_two_daemons_survives_one_going_away() {
    let Some(run) = DockerRun::new() else { return };
    // The daemon's files live in a directory of the test's own (removed at the end).
    let dir = tempfile::Builder::new()
        .prefix("rgate-dockerd-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut second = SecondDaemon::start(dir);
    load_image(&second);

    let app = run.unique("spread");
    let label = format!("rgate.test=hosts-{}", unique_id());
    let local = run.container("local").production(&app).start();
    let port = free_port();
    let remote_name = format!("{}-remote", local.name);
    second.docker_ok(&[
        "run",
        "-d",
        "--network",
        "host",
        // Back by itself when its daemon is.
        "--restart",
        "always",
        "--name",
        &remote_name,
        "--label",
        &label,
        "--label",
        &format!("app_name={app}"),
        "--label",
        "env=production",
        "--label",
        &format!("rgate.port={port}"),
        IMAGE,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--name",
        &remote_name,
    ]);

    let docker = format!(
        "docker:\n  endpoints:\n    - unix:///var/run/docker.sock\n    - \"{}\"\n",
        second.host()
    );
    let prod = vec![format!("app_name={app}"), "env=production".to_owned()];
    let gw = Gateway::start(&config_yaml(&[BackendSpec::new("spread", &prod)], &docker));
    let both = |gw: &Gateway| {
        let seen: std::collections::BTreeSet<String> =
            (0..30).filter_map(|_| who(gw.addr).ok()).collect();
        seen.contains(&local.name) && seen.contains(&remote_name)
    };
    wait_until(
        Duration::from_secs(20),
        "both hosts' containers routed",
        || both(&gw),
    );

    // /backends says which host each endpoint runs on.
    let backends = gw.admin_json("/backends");
    let hosts: BTreeMap<String, String> = backends["backends"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["host"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        hosts.get(&local.name).map(String::as_str),
        Some("unix:///var/run/docker.sock")
    );
    assert_eq!(hosts.get(&remote_name), Some(&second.host()));

    // The second daemon stopped under a bounded load: no request fails.
    let load = Load::start(gw.addr, "/spread/x");
    thread::sleep(Duration::from_millis(300));
    second.stop();
    let stopped_at = load.len();
    wait_until(
        Duration::from_secs(10),
        "traffic on the first host alone",
        || {
            let recent = load.since(stopped_at);
            recent.len() > 200
                && recent[recent.len() - 100..]
                    .iter()
                    .all(|r| r.as_deref() == Ok(local.name.as_str()))
        },
    );

    // Back: the daemon restarts its container, and rgate its connection.
    second.run();
    let restarted_at = load.len();
    wait_until(
        Duration::from_secs(60),
        "the second host's container back",
        || {
            load.since(restarted_at)
                .iter()
                .any(|r| r.as_deref() == Ok(remote_name.as_str()))
        },
    );
    let results = load.finish();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!(
        "two daemons: {} requests, {} errors",
        results.len(),
        errors.len()
    );
    assert!(errors.is_empty(), "client errors: {errors:?}");
    // Each host has its own discovery counters.
    let resyncs = gw.admin_metric(&format!(
        "rgate_docker_resyncs_total{{host=\"{}\"}}",
        second.host()
    ));
    assert!(
        resyncs >= 2.0,
        "the second host was listed at start and after its return"
    );
    drop(local);
}
