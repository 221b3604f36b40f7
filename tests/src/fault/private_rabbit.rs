//! A RabbitMQ node of the fault run's own (`deploy/rabbitmq-cluster.sh up
//! --nodes 1`), so that the run may close every connection and stop and
//! start the application without touching the shared broker other tests
//! use. Taken down (and its state deleted) on drop, even when the run panics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The node's prefix: the node is `idv-fault-1@localhost`.
const PREFIX: &str = "idv-fault";

/// A running one-node broker.
#[derive(Debug)]
pub struct PrivateRabbit {
    /// The cluster script's state root (`IDV_CLUSTER_STATE`).
    state: PathBuf,
    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub url: String,
    down: bool,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq-cluster.sh")
}

impl PrivateRabbit {
    /// Starts the node with its AMQP listener on `port`, its state under `state`.
    pub fn start(state: &Path, port: u16) -> Self {
        // The guard exists first: a start that fails halfway is taken down too.
        let mut rabbit = Self {
            state: state.to_owned(),
            url: String::new(),
            down: false,
        };
        let output = rabbit.script(&[
            "up",
            "--nodes",
            "1",
            "--prefix",
            PREFIX,
            "--base-port",
            &port.to_string(),
        ]);
        assert!(
            output.status.success(),
            "deploy/rabbitmq-cluster.sh up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        rabbit.url = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            rabbit.url.starts_with("amqp://"),
            "the script printed the node's AMQP URL: {:?}",
            rabbit.url
        );
        rabbit
    }

    fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(script())
            .args(args)
            .env("IDV_CLUSTER_STATE", &self.state)
            .output()
            .expect("bash runs deploy/rabbitmq-cluster.sh")
    }

    /// `rabbitmqctl -n idv-fault-1@localhost args…` (with the node's cookie).
    pub fn ctl(&self, args: &[&str]) {
        let server_scripts = Path::new("/usr/lib/rabbitmq/bin/rabbitmqctl");
        let program = if server_scripts.exists() {
            server_scripts.to_owned()
        } else {
            PathBuf::from("rabbitmqctl")
        };
        let output = Command::new(program)
            .args(["-q", "-n", &format!("{PREFIX}-1@localhost")])
            .args(args)
            // The script keeps the node's Erlang cookie in its state dir.
            .env("HOME", self.state.join(PREFIX))
            .output()
            .expect("rabbitmqctl runs");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Every client connection closed by the broker.
    pub fn close_all_connections(&self) {
        self.ctl(&[
            "close_all_connections",
            "fault run: every connection closed",
        ]);
    }

    /// The RabbitMQ application stopped (the node stays up, refusing AMQP).
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.ctl(&["await_startup", "--timeout", "120"]);
    }

    fn teardown(&mut self) {
        if self.down {
            return;
        }
        self.down = true;
        let output = self.script(&["down", "--prefix", PREFIX]);
        if !output.status.success() {
            eprintln!(
                "could not take the private RabbitMQ down: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        // The script deletes its prefix's directory; the root is ours.
        let _ = std::fs::remove_dir_all(&self.state);
    }

    /// Stops the node and deletes its state.
    pub fn stop(mut self) {
        self.teardown();
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        self.teardown();
    }
}
