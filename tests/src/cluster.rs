//! A RabbitMQ cluster of this machine's own server for one test, through
//! `deploy/rabbitmq-cluster.sh` (the script people run): up on creation,
//! nodes stopped and started on request, and always down when the value
//! is dropped, a panicking test included.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// A cluster that is up; `down` runs when it is dropped.
#[derive(Debug)]
pub struct TestCluster {
    /// `--prefix`: node K is `<prefix>-K@localhost`.
    pub prefix: String,
    /// Node count.
    pub nodes: usize,
    /// Each node's AMQP URL, node 1 first.
    pub urls: Vec<String>,
    script: PathBuf,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq-cluster.sh")
}

/// Runs the script with `args`, returning its output; panics with its
/// stderr when it fails.
fn run(script: &PathBuf, args: &[&str]) -> Output {
    let output = Command::new(script)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("run {}: {error}", script.display()));
    assert!(
        output.status.success(),
        "rabbitmq-cluster.sh {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl TestCluster {
    /// Starts `nodes` nodes from AMQP port `base_port`, named after this
    /// run's tag (`idvt-<tag>-<label>`), and waits until they form one
    /// cluster. A cluster of the same name left by a killed run is taken
    /// down first.
    pub async fn up(label: &str, nodes: usize, base_port: u16) -> Self {
        let prefix = format!("idvt-{}-{label}", crate::run_tag());
        let script = script();
        let nodes_arg = nodes.to_string();
        let port_arg = base_port.to_string();
        let up_script = script.clone();
        let up_prefix = prefix.clone();
        let output = tokio::task::spawn_blocking(move || {
            run(&up_script, &["down", "--prefix", &up_prefix]);
            run(
                &up_script,
                &[
                    "up",
                    "--nodes",
                    &nodes_arg,
                    "--prefix",
                    &up_prefix,
                    "--base-port",
                    &port_arg,
                ],
            )
        })
        .await
        .expect("the script's thread");
        let line = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let urls: Vec<String> = line.split(',').map(str::to_owned).collect();
        assert_eq!(urls.len(), nodes, "one URL per node: {line}");
        Self {
            prefix,
            nodes,
            urls,
            script,
        }
    }

    /// `AMQP_URL` listing every node, starting at node `first` (1-based)
    /// and going round: how each process is pointed at its own node first.
    pub fn amqp_url_from(&self, first: usize) -> String {
        let start = first - 1;
        (0..self.nodes)
            .map(|i| self.urls[(start + i) % self.nodes].as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `k`'s Erlang node name.
    pub fn node_name(&self, k: usize) -> String {
        format!("{}-{k}@localhost", self.prefix)
    }

    /// The node number of `node_name`, if it is one of this cluster's.
    pub fn node_number(&self, node_name: &str) -> Option<usize> {
        (1..=self.nodes).find(|&k| self.node_name(k) == node_name)
    }

    async fn script(&self, args: Vec<String>) -> Output {
        let script = self.script.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&script, &args)
        })
        .await
        .expect("the script's thread")
    }

    /// Shuts node `k` down (its VM exits, as when its machine is lost).
    pub async fn stop_node(&self, k: usize) {
        self.script(vec![
            "stop-node".into(),
            k.to_string(),
            "--prefix".into(),
            self.prefix.clone(),
        ])
        .await;
    }

    /// SIGKILLs node `k`'s Erlang VM (`stop-node K --kill`): an abrupt
    /// death, no clean shutdown of its queues' replicas or connections.
    pub async fn kill_node(&self, k: usize) {
        self.script(vec![
            "stop-node".into(),
            k.to_string(),
            "--kill".into(),
            "--prefix".into(),
            self.prefix.clone(),
        ])
        .await;
    }

    /// Starts node `k` again and waits until it serves (its queue
    /// replicas may still be catching up: see [`Self::online_replicas`]).
    pub async fn start_node(&self, k: usize) {
        self.script(vec![
            "start-node".into(),
            k.to_string(),
            "--prefix".into(),
            self.prefix.clone(),
        ])
        .await;
    }

    /// `rabbitmqctl` (`tool` = "ctl") or `rabbitmq-queues` ("queues")
    /// `args` against node `k`, with `--formatter json`, parsed; `None`
    /// when the tool fails (a node starting, an election under way), for
    /// callers that wait.
    pub async fn tool_json(&self, tool: &str, k: usize, args: &[&str]) -> Option<Value> {
        let mut all = vec![
            tool.to_owned(),
            k.to_string(),
            "--prefix".into(),
            self.prefix.clone(),
            "--".into(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all.extend(["--formatter".into(), "json".into()]);
        let script = self.script.clone();
        let output = tokio::task::spawn_blocking(move || Command::new(script).args(all).output())
            .await
            .expect("the script's thread")
            .ok()?;
        if !output.status.success() {
            eprintln!(
                "{tool} {args:?} on node {k} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// The node number of `queue`'s leader and its members' node
    /// numbers, as node `k` sees them (`list_queues name leader members`),
    /// or `None` while it cannot tell (no leader elected yet).
    pub async fn leader_and_members(&self, k: usize, queue: &str) -> Option<(usize, Vec<usize>)> {
        let queues = self
            .tool_json("ctl", k, &["list_queues", "name", "leader", "members"])
            .await?;
        let entry = queues
            .as_array()?
            .iter()
            .find(|q| q["name"].as_str() == Some(queue))?;
        let leader = self.node_number(entry["leader"].as_str()?)?;
        let members = entry["members"]
            .as_array()?
            .iter()
            .filter_map(|m| self.node_number(m.as_str()?))
            .collect();
        Some((leader, members))
    }

    /// The node numbers of `queue`'s replicas that are online (`list_queues
    /// name online`), as node `k` sees them, sorted; `None` while node `k`
    /// cannot tell.
    pub async fn online_replicas(&self, k: usize, queue: &str) -> Option<Vec<usize>> {
        let queues = self
            .tool_json("ctl", k, &["list_queues", "name", "online"])
            .await?;
        let entry = queues
            .as_array()?
            .iter()
            .find(|q| q["name"].as_str() == Some(queue))?;
        let mut online: Vec<usize> = entry["online"]
            .as_array()?
            .iter()
            .filter_map(|m| self.node_number(m.as_str()?))
            .collect();
        online.sort_unstable();
        Some(online)
    }

    /// `rabbitmq-queues quorum_status QUEUE` on node `k`: one entry per
    /// replica (its node and Raft state).
    pub async fn quorum_status(&self, k: usize, queue: &str) -> Option<Value> {
        self.tool_json("queues", k, &["quorum_status", queue]).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let output = Command::new(&self.script)
            .args(["down", "--prefix", &self.prefix])
            .output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "rabbitmq-cluster.sh down --prefix {} failed: {}",
                self.prefix,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => eprintln!("could not run rabbitmq-cluster.sh down: {error}"),
        }
    }
}
