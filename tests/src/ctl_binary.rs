//! The real `idvctl` binary, for tests that run it as an operator would.
//!
//! A binary of another package has no `CARGO_BIN_EXE_…` here, and one
//! found lying in `target/` may be older than the code under test; so the
//! first test to ask builds it (`cargo build -p idv-worker --bin idvctl`,
//! quick when it is up to date) and reads its path from cargo's own
//! report. Cargo holds no lock while tests run, so this does not wait on
//! the `cargo test` that started the tests.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::process::Command;

/// How long one `idvctl` run may take before the test gives up on it.
pub const RUN_DEADLINE: Duration = Duration::from_secs(90);

static IDVCTL: OnceLock<PathBuf> = OnceLock::new();

/// The path of an up-to-date `idvctl`, built on first use.
pub async fn idvctl_path() -> PathBuf {
    tokio::task::spawn_blocking(|| IDVCTL.get_or_init(build_idvctl).clone())
        .await
        .expect("building idvctl does not panic")
}

fn build_idvctl() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "build",
            "--locked",
            "-p",
            "idv-worker",
            "--bin",
            "idvctl",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo build of idvctl failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == "idvctl")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports idvctl's executable")
}

/// `idvctl args…` with nothing of the test's environment but `vars`.
pub async fn idvctl(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(idvctl_path().await);
    command
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::time::timeout(RUN_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("idvctl {args:?} ends within {RUN_DEADLINE:?}"))
        .expect("idvctl runs")
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit code (`-1` when a signal ended it).
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}
