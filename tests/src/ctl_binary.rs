//! The real `idvctl` binary (and the services' binaries), for tests that
//! run them as an operator would.
//!
//! A binary of another package has no `CARGO_BIN_EXE_…` here, and this
//! library is not an integration test (which alone gets that variable); so
//! the tests crate builds the same `main` as its own binary,
//! `idvctl-under-test` (see `Cargo.toml`), which `cargo test` builds before
//! it runs any integration test, next to the `deps/` folder the running
//! test executable is in (what `assert_cmd` does too). It is built from
//! the code under test, never a stale copy, and costs no build of its own.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

/// How long one `idvctl` run may take before the test gives up on it.
pub const RUN_DEADLINE: Duration = Duration::from_secs(90);

/// The path of `idvctl-under-test`, beside the running test's `deps/`.
pub fn idvctl_path() -> PathBuf {
    binary_under_test("idvctl-under-test")
}

/// The path of the tests crate's binary `name` (`idvctl-under-test`,
/// `idv-ingest-under-test`, `idv-worker-under-test`: see `Cargo.toml`),
/// beside the running test's `deps/`.
pub fn binary_under_test(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable is in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} exists (cargo test builds it with the tests crate)",
        path.display()
    );
    path
}

/// `idvctl args…` with nothing of the test's environment but `vars`.
pub async fn idvctl(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(idvctl_path());
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
