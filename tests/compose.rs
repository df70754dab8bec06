//! rgate in a container, run by compose as users run it: the repository's
//! `docker-compose.host.yml` with rgate's image (built by
//! `scripts/build-image.sh`) and two labelled services on the host network.
//! Traffic goes through rgate's container, one service stops and starts
//! under a bounded load with no client error, the image's health check
//! passes, rgate drains and exits 0 on SIGTERM as PID 1, and the project is
//! brought down, removing exactly what it created.
//!
//! Needs Docker and docker-compose: `#[ignore]`d for a plain `cargo test`;
//! `scripts/test.sh` runs it with `RGATE_DOCKER_TESTS=1`, which makes a
//! missing Docker or docker-compose a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Only part of the Docker harness is needed here.
#[allow(dead_code)]
#[path = "support/docker.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::Duration;

use support::{free_port, unique_id, wait_until, DockerRun, Load, RGATE_IMAGE};

/// A compose project of the test's own, brought down (volumes included) on drop.
struct Project {
    name: String,
    env: Vec<(String, String)>,
    _config: tempfile::TempDir,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .current_dir(support::repo_root())
            .args(["-p", &self.name, "-f", "docker-compose.host.yml"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .expect("spawn docker-compose")
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The project's containers (running or not), by compose's own label.
    fn containers(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.name))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        let id = self.compose_ok(&["ps", "-q", service]);
        let out = Command::new("docker")
            .args(["inspect", "--format", format, &id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes", "--timeout", "10"]);
    }
}

fn compose_available() -> bool {
    let found = Command::new("docker-compose")
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        let required = std::env::var("RGATE_DOCKER_TESTS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "RGATE_DOCKER_TESTS=1 but docker-compose is not installed"
        );
        eprintln!("skipped: docker-compose is not installed");
    }
    found
}

fn who(addr: SocketAddr) -> Result<String, String> {
    support::upstream_name(addr, "/api/payment/x")
}

#[test]
#[ignore = "needs Docker and docker-compose: run with RGATE_DOCKER_TESTS=1 --run-ignored all"]
fn compose_runs_rgate_in_front_of_labelled_services_through_a_restart() {
    let Some(_run) = DockerRun::new() else { return };
    if !compose_available() {
        return;
    }
    support::ensure_rgate_image();
    let id = unique_id();
    let app = format!("pay-{id}");
    let config = tempfile::tempdir().unwrap();
    let config_path = config.path().join("rgate.yml");
    std::fs::write(
        &config_path,
        format!(
            "routes:\n  - {{path_prefix: /api/payment, backend: payment}}\n\
             default_response: {{body: no route, status_code: 404}}\n\
             backends:\n  - {{name: payment, match_labels: [app_name={app}, env=production]}}\n\
             docker: {{host_address: 127.0.0.1}}\n\
             stats: {{store: /var/lib/rgate/stats.db}}\n"
        ),
    )
    .unwrap();
    let (port, admin) = (free_port(), free_port());
    let project = Project {
        name: format!("rgate-t-{}", id.replace('-', "")),
        env: [
            ("RGATE_IMAGE", RGATE_IMAGE.to_owned()),
            ("UPSTREAM_IMAGE", support::IMAGE.to_owned()),
            ("RGATE_CONFIG", config_path.display().to_string()),
            ("RGATE_PORT", port.to_string()),
            ("RGATE_ADMIN_PORT", admin.to_string()),
            ("PAYMENT_1_PORT", free_port().to_string()),
            ("PAYMENT_2_PORT", free_port().to_string()),
            ("APP_NAME", app),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        _config: config,
    };
    project.compose_ok(&["up", "-d"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // Both services behind rgate's container.
    wait_until(Duration::from_secs(20), "both services routed", || {
        let seen: std::collections::BTreeSet<String> =
            (0..20).filter_map(|_| who(addr).ok()).collect();
        seen.contains("payment-1") && seen.contains("payment-2")
    });
    // The image's HEALTHCHECK runs `rgate healthcheck` against the admin plane.
    wait_until(Duration::from_secs(20), "rgate's container healthy", || {
        project.inspect("rgate", "{{.State.Health.Status}}") == "healthy"
    });

    // One service stopped and started again under a bounded load.
    let load = Load::start(addr, "/api/payment/x");
    thread::sleep(Duration::from_millis(300));
    project.compose_ok(&["stop", "--timeout", "5", "payment-1"]);
    let stopped_at = load.len();
    wait_until(
        Duration::from_secs(10),
        "traffic on payment-2 alone",
        || load.len() > stopped_at + 100,
    );
    project.compose_ok(&["start", "payment-1"]);
    let started_at = load.len();
    wait_until(
        Duration::from_secs(20),
        "payment-1 back in rotation",
        || {
            load.since(started_at)
                .iter()
                .any(|r| r.as_deref() == Ok("payment-1"))
        },
    );
    let results = load.finish();
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(name) => *by.entry(name).or_default() += 1,
            Err(error) => errors.push(error),
        }
    }
    eprintln!("through the restart: {by:?}, {} errors", errors.len());
    assert!(errors.is_empty(), "client errors: {errors:?}");

    // SIGTERM to PID 1: rgate drains and exits 0.
    project.compose_ok(&["stop", "--timeout", "30", "rgate"]);
    assert_eq!(project.inspect("rgate", "{{.State.ExitCode}}"), "0");

    // Down removes exactly the project's containers (and its volume).
    assert_eq!(project.containers().len(), 3);
    project.compose_ok(&["down", "--volumes", "--timeout", "10"]);
    assert!(
        project.containers().is_empty(),
        "left behind: {:?}",
        project.containers()
    );
}
