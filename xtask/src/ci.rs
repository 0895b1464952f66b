//! `cargo xtask ci`: what CI runs on a fresh clone, as root.

use anyhow::Result;

use crate::{setup, shell};

/// Set-up, then formatting, import cycles, lints, build, every test, a short fuzzing run,
/// and the VM lane: the ci suite on every kernel of the matrix, in an
/// initramfs guest and a systemd guest each.
pub fn run() -> Result<()> {
    shell::require_root("the integration tests")?;
    setup::run()?;
    setup::vm()?;
    shell::run("cargo", &["fmt", "--all", "--check"])?;
    // Each crate's modules in layers: a cycle fails here.
    for src in [
        "runtime/src",
        "layout/src",
        "exporter/src",
        "ebpf/loader/src",
        "xtask/src",
    ] {
        crate::imports::run(&[src.to_owned()])?;
    }
    shell::run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The integration tests run the lucid binary built here.
    shell::run("cargo", &["build", "--workspace", "--bins"])?;
    shell::run("cargo", &["test", "--workspace", "--no-fail-fast"])?;
    // A short run of every fuzz target (docs/fuzzing.md has a long one's figures).
    crate::fuzz::run(&[])?;
    // The hosts lucid's users run: pure cgroup v2, Debian's kernels, systemd.
    crate::vm::run(&[])?;
    eprintln!("ci: all checks passed");
    Ok(())
}
