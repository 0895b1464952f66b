//! `cargo xtask ci`: what CI runs on a fresh clone, as root.

use anyhow::Result;

use crate::{setup, shell};

/// Set-up, then formatting, lints, build, every test, and a short fuzzing run.
pub fn run() -> Result<()> {
    shell::require_root("the integration tests")?;
    setup::run()?;
    shell::run("cargo", &["fmt", "--all", "--check"])?;
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
    eprintln!("ci: all checks passed");
    Ok(())
}
