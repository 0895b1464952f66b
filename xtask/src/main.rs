//! `cargo xtask`: the project's own commands.
//!
//! - `setup`: install what building and testing need (apt packages, rustup
//!   components, the eBPF toolchain), skipping what is there.
//! - `ci`: setup, then formatting, clippy, build, every test (as root) and a
//!   short run of every fuzz target.
//! - `demo`: setup, build, run a busybox container and show what lucid shows.
//! - `bench [core|ebpf|exporter|telemetry|exe|soak]`: benchmarks (the core one
//!   beside runc and crun; `exe` prices each binary protection at start-up;
//!   `soak` checks that nothing leaks over many cycles).
//! - `fuzz [--seconds N] [--target NAME]`: every cargo-fuzz target for a bounded time.
//! - `imports [SRC_DIR]`: the import cycles among a crate's top-level modules
//!   (`runtime/src` by default); fails when there is one.
//! - `vm [--kernel LIST] [--guest LIST] [--suite ci|full|bench] [--jobs N] [--keep-run-dir]`:
//!   the tests in qemu guests that look like production hosts (Debian's
//!   kernels, pure cgroup v2, with and without systemd).

mod bench;
mod bundle;
mod ci;
mod demo;
mod fuzz;
mod imports;
mod setup;
mod shell;
mod vm;

use anyhow::{bail, Result};

const USAGE: &str = "usage: cargo xtask <setup|ci|demo|bench [core|ebpf|exporter|telemetry|exe] [--rounds N]|bench soak [--cycles N]|fuzz [--seconds N] [--target NAME]|imports [SRC_DIR]|vm [--kernel 5.10,6.1,6.12,newest] [--guest initramfs,systemd] [--suite ci|full|bench] [--jobs N] [--keep-run-dir]>";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        bail!("{USAGE}");
    };
    let rest = &args[1..];
    match command.as_str() {
        "setup" => setup::run(),
        "ci" => ci::run(),
        "demo" => demo::run(),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "imports" => imports::run(rest),
        "vm" => vm::run(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}
