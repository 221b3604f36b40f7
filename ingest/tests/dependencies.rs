//! The dependency tree holds what the README's "Dependencies" section says:
//! rustls on the `ring` provider only, without aws-lc (C code built with
//! CMake) and without rustls-platform-verifier, both of which lapin's
//! `rustls` feature turns on.
#![allow(clippy::expect_used)] // test code: a failed step should stop the test loudly

/// The names of every package in the workspace's `Cargo.lock`.
fn locked_packages() -> Vec<String> {
    let lock = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    let text = std::fs::read_to_string(lock).expect("the workspace has a Cargo.lock");
    text.lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_tls_stack_is_rustls_on_ring_without_aws_lc() {
    let packages = locked_packages();
    for present in ["rustls", "ring"] {
        assert!(
            packages.iter().any(|name| name == present),
            "{present} is in Cargo.lock"
        );
    }
    for absent in [
        "aws-lc-rs",
        "aws-lc-sys",
        "cmake",
        "rustls-platform-verifier",
    ] {
        assert!(
            !packages.iter().any(|name| name == absent),
            "{absent} is in Cargo.lock: check lapin's features in the workspace Cargo.toml \
             (its `rustls` feature brings aws-lc-rs and rustls-platform-verifier)"
        );
    }
}
